"""`cityops demo` as a child process, for the Python tests and bench/soak.py.

    demo = DemoProcess(binary, workdir, log_path, ['--devices', '2000'], log=print)
    demo.wait_ready(90)
    base = demo.field('http')
    ...
    demo.stop(60)   # SIGINT, as Ctrl-C; returns the exit code
    demo.kill()     # always, in a finally: ends the process if it still runs

Its stdout is read on a thread for the lines the demo prints ("http: ...", "dashboard: ...",
"tokens: ...", "ready"); its stderr, and a copy of its stdout, go to `log_path`. It runs
with `--port 0` and `--data-dir <workdir>/data`; `args` adds the rest.

`poll` is the one way these scripts wait for a condition.
"""
import re
import signal
import subprocess
import threading
import time


class Failure(Exception):
    """What a test or script reports as its failure, with what it saw."""


def poll(check, timeout, interval):
    """Calls check() until it returns a truthy value or `timeout` seconds have passed, waiting
    `interval` seconds between calls; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


class DemoProcess:
    def __init__(self, binary, workdir, log_path, args, log=None):
        self.lines = []
        self.ready = threading.Event()
        self.log_path = log_path
        self.log_file = open(log_path, 'w')
        cmd = [binary, 'demo', '--port', '0', '--data-dir', f'{workdir}/data'] + list(args)
        if log:
            log('starting: ' + ' '.join(cmd))
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def pid(self):
        return self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip('\n')
            self.lines.append(line)
            self.log_file.write(f'stdout: {line}\n')
            self.log_file.flush()
            if line.strip() == 'ready':
                self.ready.set()
        self.ready.set()  # EOF: the process ended

    def wait_ready(self, timeout):
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            raise Failure(f'cityops demo did not print "ready" within {timeout} s '
                          f'(exit code {self.proc.poll()}); stdout so far:\n  ' +
                          '\n  '.join(self.lines) + '\n' + self.log_tail())

    def field(self, name):
        """The rest of the first stdout line that starts with `name:`."""
        for line in self.lines:
            if line.startswith(name + ':'):
                return line.split(':', 1)[1].strip()
        raise Failure(f'cityops demo printed no "{name}:" line; stdout:\n  ' + '\n  '.join(self.lines))

    def token(self, role):
        """The API token of `role` (viewer, supervisor, admin) from the "tokens:" line."""
        found = re.search(rf'\b{role} ([0-9A-Za-z._-]+)', self.field('tokens'))
        if not found:
            raise Failure(f'cityops demo printed no {role} token: tokens: {self.field("tokens")}')
        return found.group(1)

    def stop(self, timeout):
        """SIGINT, as Ctrl-C; returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f'cityops demo did not exit within {timeout} s of SIGINT\n' + self.log_tail())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        self.log_file.close()

    def log_tail(self, n=25):
        try:
            with open(self.log_path) as f:
                lines = f.read().splitlines()[-n:]
        except OSError:
            return ''
        return f'last lines of {self.log_path}:\n  ' + '\n  '.join(lines)
