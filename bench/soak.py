#!/usr/bin/env python3
"""Soak: `cityops demo` for a long run, sampled every minute; does anything keep growing?

Runs `cityops demo` (the typhoon over a simulated city, with its crew working the cases)
for --minutes, and meanwhile:
  * a person's command every --command-seconds: a supervisor urges an open case
    (POST /api/v1/cases/{id}/urge), timed from request to answer; and a read of the big
    screen's counters (GET /api/v1/statistics), timed the same way;
  * every --sample-seconds, one row of <out>/soak.csv:
      minute, elapsed_s       when the sample was taken
      rss_mib                 resident memory of the daemon (VmRSS)
      threads                 its threads
      open_files              its open file descriptors that are not RocksDB table files
      sst_files               its open RocksDB table files (*.sst): the log keeps every one
                              open, so they grow with the log by design
      readings_total          readings consumed (cityops_ingest_records_total)
      readings_per_s          over the last interval
      consumer_lag            records waiting in Kafka (cityops_consumer_lag)
      log_events              events in the log (cityops_log_events)
      commands                commands of the interval
      command_refused         of them refused with a 4xx that says why (a case the rules
                              stage has not opened yet, say): answered, and counted apart
      command_errors          commands and reads with no answer, or a 5xx
      command_p50_ms, command_p99_ms, command_max_ms
      read_p99_ms             the statistics read's p99 over the interval
Then it stops the demo with SIGINT (exit code 0 expected), draws <out>/soak.svg (one panel
per series) and judges: after --settle-minutes, resident memory, threads and open files
(without SST files) must not grow. A series grows when its least-squares slope over the
samples after the settle point, times their span, exceeds the tolerance (--rss-tolerance
percent of the value at the settle point, for memory; 2 for threads; 4 for open files).
It prints each verdict and exits 0 if nothing grew, 1 if something did, 2 if the run
itself failed.

  bench/soak.py --cityops build/app/cityops --out soak-out            # an hour
  bench/soak.py --judge soak-out/soak.csv                               # judge a CSV again

The rate: the demo's typhoon over --devices at --acceleration simulated seconds per wall
second; the defaults are the demo's own (10,000 devices, 120x). The readings_per_s and
consumer_lag columns show what that is against what the daemon sustains on the machine
(a lag that stays low: it keeps up); bench/README.md has the figures of a run.
"""
import argparse
import csv
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'testing'))
from demo_process import DemoProcess, Failure  # noqa: E402

COLUMNS = ['minute', 'elapsed_s', 'rss_mib', 'threads', 'open_files', 'sst_files', 'readings_total',
           'readings_per_s', 'consumer_lag', 'log_events', 'commands', 'command_refused', 'command_errors',
           'command_p50_ms', 'command_p99_ms', 'command_max_ms', 'read_p99_ms',
           # Where memory goes in the event log's RocksDB (cityops_log_memory_bytes).
           'log_memtables_mib', 'log_table_readers_mib', 'log_block_cache_mib']
# What the judgement covers, with the tolerance of each: (column, absolute, percent).
JUDGED = [('rss_mib', None, 'rss'), ('threads', 2, None), ('open_files', 4, None)]
CHARTED = [('rss_mib', 'resident memory (MiB)'), ('threads', 'threads'),
           ('open_files', 'open files, without SST'), ('sst_files', 'open SST files'),
           ('log_table_readers_mib', "the log's table readers (MiB)"),
           ('log_block_cache_mib', "the log's block cache (MiB)"),
           ('readings_per_s', 'readings/s'), ('command_p99_ms', 'command p99 (ms)')]

START = time.monotonic()


def log(msg):
    print(f'[{time.monotonic() - START:7.1f}s] {msg}', flush=True)


def percentile(values, q):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request(base, path, token, body=None, timeout=10):
    """(status, parsed JSON or text, seconds). A status of 0 means no answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip('/') + path, data=data,
                                 method='POST' if data is not None else 'GET')
    req.add_header('Authorization', f'Bearer {token}')
    if data is not None:
        req.add_header('Content-Type', 'application/json')
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(errors='replace'), e.code
    except (urllib.error.URLError, OSError) as e:
        text, status = str(e), 0
    elapsed = time.monotonic() - started
    try:
        return status, json.loads(text), elapsed
    except ValueError:
        return status, text, elapsed


def metric_sum(text, name):
    """The sum of every sample of metric `name` in a Prometheus text scrape."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in ' {'):
            total += float(line.rsplit(' ', 1)[1])
    return total


MIB = 1024 * 1024


def log_memory(text, part):
    """The sample of cityops_log_memory_bytes{part="<part>"} in a scrape; 0 if absent."""
    prefix = f'cityops_log_memory_bytes{{part="{part}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def process_sample(pid):
    with open(f'/proc/{pid}/status') as f:
        status = f.read()
    rss_kib = int(re.search(r'^VmRSS:\s+(\d+)', status, re.M).group(1))
    threads = int(re.search(r'^Threads:\s+(\d+)', status, re.M).group(1))
    sst = other = 0
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue  # closed meanwhile
        if target.endswith('.sst'):
            sst += 1
        else:
            other += 1
    return rss_kib / 1024.0, threads, other, sst


class Commands(threading.Thread):
    """A supervisor urging open cases, and a viewer reading the counters, timed."""

    def __init__(self, base, supervisor, viewer, interval):
        super().__init__(daemon=True)
        self.base, self.supervisor, self.viewer, self.interval = base, supervisor, viewer, interval
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.command_s, self.read_s, self.errors = [], [], []
        self.refused = 0
        self.sent = 0

    def take(self):
        """The interval's timings, refusals and errors, and resets them."""
        with self.lock:
            taken = (self.command_s, self.read_s, self.refused, self.errors)
            self.command_s, self.read_s, self.refused, self.errors = [], [], 0, []
        return taken

    def open_cases(self):
        status, body, _ = request(self.base, '/api/v1/cases?page_size=200', self.viewer)
        if status != 200:
            return []
        return [c['caseId'] for c in body.get('cases', []) if c.get('stage') != 'CASE_STAGE_CLOSED']

    def run(self):
        cases, refreshed = [], 0.0
        while not self.stopping.wait(self.interval):
            if not cases or time.monotonic() - refreshed > 30:
                cases, refreshed = self.open_cases(), time.monotonic()
            if cases:
                case_id = cases[self.sent % len(cases)]
                self.sent += 1
                status, body, took = request(self.base, f'/api/v1/cases/{case_id}/urge', self.supervisor,
                                             {'requestId': f'soak-{self.sent}', 'note': 'soak: still open?'})
                with self.lock:
                    self.command_s.append(took)
                    if status // 100 == 4:
                        self.refused += 1
                    elif status // 100 != 2:
                        self.errors.append(f'urge {case_id}: HTTP {status} {str(body)[:200]}')
            status, body, took = request(self.base, '/api/v1/statistics', self.viewer)
            with self.lock:
                self.read_s.append(took)
                if status != 200:
                    self.errors.append(f'statistics: HTTP {status} {str(body)[:200]}')


def run(args):
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix='cityops-soak-', dir=args.workdir)
    demo = DemoProcess(args.cityops, workdir, os.path.join(args.out, 'soak-demo.log'),
                       ['--devices', str(args.devices), '--acceleration', str(args.acceleration),
                        '--scenario', args.scenario, '--seed', str(args.seed)], log=log)
    commands = None
    rows = []
    try:
        demo.wait_ready(180)
        base = demo.field('http')
        commands = Commands(base, demo.token('supervisor'), demo.token('viewer'), args.command_seconds)
        commands.start()
        log(f'demo ready at {base}; sampling every {args.sample_seconds} s for {args.minutes} min '
            f'into {args.out}/soak.csv')
        started = time.monotonic()
        last_readings, last_t = 0.0, started
        with open(os.path.join(args.out, 'soak.csv'), 'w', newline='') as f:
            out = csv.writer(f)
            out.writerow(COLUMNS)
            sample = 0
            while True:
                sample += 1
                due = started + sample * args.sample_seconds
                if due - started > args.minutes * 60 + 1e-6:
                    break
                while time.monotonic() < due:
                    if demo.proc.poll() is not None:
                        raise Failure(f'cityops demo exited with {demo.proc.returncode} during the soak\n'
                                      + demo.log_tail())
                    time.sleep(min(1.0, max(0.0, due - time.monotonic())))
                now = time.monotonic()
                status, scrape, _ = request(base, '/metrics', demo.token('viewer'))
                if status != 200:
                    raise Failure(f'/metrics answered {status}: {str(scrape)[:300]}')
                rss, threads, other, sst = process_sample(demo.pid)
                readings = metric_sum(scrape, 'cityops_ingest_records_total')
                command_s, read_s, refused, errors = commands.take()
                for e in errors[:5]:
                    log('error: ' + e)
                row = {
                    'minute': round((now - started) / 60, 2), 'elapsed_s': round(now - started, 1),
                    'rss_mib': round(rss, 1), 'threads': threads, 'open_files': other, 'sst_files': sst,
                    'readings_total': int(readings),
                    'readings_per_s': round((readings - last_readings) / (now - last_t), 1),
                    'consumer_lag': int(metric_sum(scrape, 'cityops_consumer_lag')),
                    'log_events': int(metric_sum(scrape, 'cityops_log_events')),
                    'commands': len(command_s), 'command_refused': refused,
                    'command_errors': len(errors),
                    'command_p50_ms': round(percentile(command_s, 0.50) * 1000, 1),
                    'command_p99_ms': round(percentile(command_s, 0.99) * 1000, 1),
                    'command_max_ms': round(max(command_s, default=0) * 1000, 1),
                    'read_p99_ms': round(percentile(read_s, 0.99) * 1000, 1),
                    **{f'log_{part}_mib': round(log_memory(scrape, part) / MIB, 1)
                       for part in ('memtables', 'table_readers', 'block_cache')},
                }
                last_readings, last_t = readings, now
                out.writerow([row[c] for c in COLUMNS])
                f.flush()
                rows.append(row)
                log(' '.join(f'{c}={row[c]}' for c in COLUMNS[1:]))
        commands.stopping.set()
        commands.join(15)
        code = demo.stop(120)
        if code != 0:
            raise Failure(f'cityops demo exited with {code} after SIGINT, expected 0\n' + demo.log_tail())
        log('demo stopped cleanly (exit code 0)')
    finally:
        if commands is not None:
            commands.stopping.set()
        demo.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def read_csv(path):
    with open(path, newline='') as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def slope(points):
    """Least-squares slope of (x, y) points; 0 for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def judge(rows, settle_minutes, rss_tolerance_pct):
    """[(column, grew, text)] for each judged series."""
    after = [r for r in rows if float(r['minute']) >= settle_minutes]
    if len(after) < 2:
        raise Failure(f'only {len(after)} samples after minute {settle_minutes}: run longer than '
                      f'--settle-minutes, with at least two samples after it')
    span = float(after[-1]['minute']) - float(after[0]['minute'])
    verdicts = []
    for column, absolute, pct in JUDGED:
        base = float(after[0][column])
        tolerance = absolute if absolute is not None else base * rss_tolerance_pct / 100
        trend = slope([(float(r['minute']), float(r[column])) for r in after]) * span
        peak = max(float(r[column]) for r in after)
        grew = trend > tolerance
        verdicts.append((column, grew,
                         f'{column}: {base:g} at minute {float(after[0]["minute"]):g}, trend {trend:+.1f} '
                         f'over {span:g} min (tolerance {tolerance:.1f}), peak {peak:g}: '
                         + ('GROWS' if grew else 'flat')))
    return verdicts


def svg_chart(rows, path, settle_minutes):
    """One panel per charted series against minutes; the settle point as a dashed line."""
    width, panel_h, left, right, top = 900, 150, 70, 20, 30
    height = top + len(CHARTED) * (panel_h + 30)
    xs = [float(r['minute']) for r in rows]
    x_max = max(xs + [1.0])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="18" font-size="14">cityops soak: {len(rows)} samples over '
             f'{x_max:g} min (dashed: end of settling, minute {settle_minutes:g})</text>']
    for i, (column, title) in enumerate(CHARTED):
        y0 = top + i * (panel_h + 30) + 20
        ys = [float(r.get(column, 0)) for r in rows]  # 0: a CSV from before the column.
        y_max = max(ys + [1e-9]) * 1.1
        sx = lambda x: left + (width - left - right) * x / x_max  # noqa: E731
        sy = lambda y: y0 + panel_h - panel_h * y / y_max  # noqa: E731
        parts.append(f'<text x="{left}" y="{y0 - 5}">{title}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" height="{panel_h}" '
                     f'fill="none" stroke="#999"/>')
        for frac in (0, 0.5, 1):
            value = y_max * frac
            parts.append(f'<text x="{left - 6}" y="{sy(value) + 4:.1f}" text-anchor="end">{value:.4g}</text>')
        sx_settle = sx(settle_minutes)
        parts.append(f'<line x1="{sx_settle:.1f}" y1="{y0}" x2="{sx_settle:.1f}" y2="{y0 + panel_h}" '
                     f'stroke="#c33" stroke-dasharray="4 3"/>')
        points = ' '.join(f'{sx(x):.1f},{sy(y):.1f}' for x, y in zip(xs, ys))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#2266aa" stroke-width="1.5"/>')
        parts.append(f'<text x="{width - right}" y="{y0 + panel_h + 14}" text-anchor="end">minutes</text>')
    parts.append('</svg>')
    with open(path, 'w') as f:
        f.write('\n'.join(parts) + '\n')


def report(rows, args, chart_path):
    svg_chart(rows, chart_path, args.settle_minutes)
    log(f'chart: {chart_path}')
    verdicts = judge(rows, args.settle_minutes, args.rss_tolerance)
    for _, _, text in verdicts:
        log(text)
    after = [r for r in rows if float(r['minute']) >= args.settle_minutes]
    commands = sum(int(float(r['commands'])) for r in after)
    errors = sum(int(float(r['command_errors'])) for r in rows)
    worst = max((float(r['command_p99_ms']) for r in after), default=0)
    rate = sum(float(r['readings_per_s']) for r in after) / max(1, len(after))
    log(f'after minute {args.settle_minutes:g}: {commands} commands, worst minute p99 {worst:.1f} ms, '
        f'{errors} errors in the whole run; {rate:,.0f} readings/s on average')
    grew = [c for c, g, _ in verdicts if g]
    if errors:
        log(f'FAILED: {errors} commands or reads got no answer or a 5xx (see the lines above)')
        return 1
    if grew:
        log('FAILED: grows after settling: ' + ', '.join(grew))
        return 1
    log('PASSED: nothing grows after settling')
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--cityops', help='the cityops binary (build/app/cityops)')
    p.add_argument('--out', default='soak-out', help='directory for soak.csv, soak.svg and the demo log')
    p.add_argument('--workdir', default=None, help='where the demo keeps its data (default: $TMPDIR)')
    p.add_argument('--minutes', type=float, default=60)
    p.add_argument('--sample-seconds', type=float, default=60)
    p.add_argument('--settle-minutes', type=float, default=10)
    p.add_argument('--command-seconds', type=float, default=1.0)
    p.add_argument('--devices', type=int, default=10000)
    p.add_argument('--acceleration', type=float, default=120)
    p.add_argument('--scenario', default='typhoon')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--rss-tolerance', type=float, default=10.0,
                   help='percent of resident memory at the settle point that may be added')
    p.add_argument('--judge', metavar='CSV', help='judge an earlier run\'s CSV (and redraw its chart) only')
    args = p.parse_args()
    try:
        if args.judge:
            return report(read_csv(args.judge), args, os.path.splitext(args.judge)[0] + '.svg')
        if not args.cityops or not os.access(args.cityops, os.X_OK):
            p.error('--cityops must name the cityops binary (build/app/cityops)')
        rows = run(args)
        return report(rows, args, os.path.join(args.out, 'soak.svg'))
    except Failure as e:
        log(f'FAILED to run: {e}')
        return 2


if __name__ == '__main__':
    sys.exit(main())
