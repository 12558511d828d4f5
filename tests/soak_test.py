#!/usr/bin/env python3
"""bench/soak.py, briefly (see tests/CMakeLists.txt).

1. Its judgement on made-up runs: a flat one passes (exit 0); one whose memory, threads or
   open files keep rising after the settle point fails (exit 1) naming what grows; one
   with errors fails; one too short to judge is refused (exit 2).
2. A real run of two minutes over a small typhoon demo, sampled every 10 s: soak.csv has
   one row per sample with every column; the daemon's memory, threads and files are
   there; a supervisor's commands were sent and answered in every sample after the first,
   none with a 5xx or without an answer (a 4xx that says why, such as a case not opened
   yet, is an answer); the chart is an SVG with a line per series; the demo stopped cleanly.
   The judgement of so short a run is not this test's business (a real soak settles for
   ten minutes), so it runs with a wide memory tolerance and only checks that it printed one.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
SOAK = os.path.join(HERE, '..', 'bench', 'soak.py')
sys.path.insert(0, os.path.join(HERE, '..', 'bench'))
import soak  # noqa: E402


def fail(msg):
    print(f'FAILED: {msg}', flush=True)
    sys.exit(1)


def write_csv(path, rows):
    with open(path, 'w', newline='') as f:
        out = csv.writer(f)
        out.writerow(soak.COLUMNS)
        for r in rows:
            out.writerow([r.get(c, 0) for c in soak.COLUMNS])


def made_up(minutes, rss, threads=40, open_files=30, errors=0):
    return [{'minute': m, 'elapsed_s': m * 60, 'rss_mib': rss(m), 'threads': threads, 'open_files': open_files,
             'sst_files': 10 + m, 'readings_per_s': 1000, 'commands': 60, 'command_errors': errors,
             'command_p99_ms': 5} for m in range(1, minutes + 1)]


def judge(path, *extra):
    r = subprocess.run([sys.executable, SOAK, '--judge', path, '--settle-minutes', '10', *extra],
                       capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def check_judgement(tmp):
    cases = [
        ('flat', made_up(30, lambda m: 400 + min(m, 10) * 20 + (m % 3)), 0, 'PASSED'),
        ('memory rising', made_up(30, lambda m: 400 + m * 8), 1, 'rss_mib'),
        ('threads rising', [dict(r, threads=40 + r['minute']) for r in made_up(30, lambda m: 500)], 1,
         'threads'),
        ('files rising', [dict(r, open_files=30 + r['minute']) for r in made_up(30, lambda m: 500)], 1,
         'open_files'),
        ('errors', made_up(30, lambda m: 500, errors=1), 1, 'no answer or a 5xx'),
        ('too short', made_up(9, lambda m: 500), 2, 'only 0 samples after minute 10'),
    ]
    for name, rows, want_code, want_text in cases:
        path = os.path.join(tmp, f'{name.replace(" ", "-")}.csv')
        write_csv(path, rows)
        code, out = judge(path)
        if code != want_code or want_text not in out:
            fail(f'judging the made-up "{name}" run: exit {code} (want {want_code}), output should '
                 f'name "{want_text}":\n{out}')
        if want_text in ('rss_mib', 'threads', 'open_files') and not any(
                f'{want_text}:' in line and 'GROWS' in line for line in out.splitlines()):
            fail(f'"{name}": no verdict line saying {want_text} GROWS:\n{out}')
        if want_code != 2 and not os.path.exists(path[:-4] + '.svg'):
            fail(f'"{name}": --judge drew no chart next to the CSV')
        print(f'judgement of a made-up "{name}" run: exit {code} as expected', flush=True)


def check_real_run(cityops, tmp):
    out_dir = os.path.join(tmp, 'run')
    cmd = [sys.executable, SOAK, '--cityops', cityops, '--out', out_dir, '--workdir', tmp,
           '--minutes', '2', '--sample-seconds', '10', '--settle-minutes', '1', '--devices', '1500',
           '--acceleration', '120', '--rss-tolerance', '1000']
    print('running: ' + ' '.join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(r.stdout[-6000:] + r.stderr[-3000:], flush=True)
    if r.returncode == 2:
        fail('the soak run itself failed (output above)')
    if 'demo stopped cleanly' not in r.stdout:
        fail('the demo was not stopped cleanly')
    if not any(v in r.stdout for v in ('GROWS', 'flat')):
        fail('the soak printed no verdict')
    with open(os.path.join(out_dir, 'soak.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 12:
        fail(f'expected 12 samples (2 minutes every 10 s), found {len(rows)}')
    for i, row in enumerate(rows):
        missing = [c for c in soak.COLUMNS if row.get(c, '') == '']
        if missing:
            fail(f'sample {i + 1} lacks {missing}: {row}')
        if float(row['rss_mib']) <= 10 or int(row['threads']) < 2 or int(row['open_files']) < 3:
            fail(f'sample {i + 1}: implausible process figures {row}')
        if int(row['command_errors']) != 0:
            fail(f'sample {i + 1}: {row["command_errors"]} commands or reads without an answer or with a 5xx '
                 f'(see the output above)')
        if i > 0 and int(row['commands']) < 1:
            fail(f'sample {i + 1}: no command was answered in its interval: {row}')
    if int(rows[-1]['readings_total']) <= 0 or int(rows[-1]['log_events']) <= 0:
        fail(f'the daemon consumed nothing: {rows[-1]}')
    svg = ET.parse(os.path.join(out_dir, 'soak.svg')).getroot()
    lines = svg.findall('{http://www.w3.org/2000/svg}polyline')
    if len(lines) != len(soak.CHARTED):
        fail(f'the chart has {len(lines)} lines, expected one per series ({len(soak.CHARTED)})')
    print(f'real run: {len(rows)} samples, rss {rows[0]["rss_mib"]} -> {rows[-1]["rss_mib"]} MiB, '
          f'{sum(int(r["commands"]) for r in rows)} commands, chart with {len(lines)} series', flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cityops', required=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix='cityops-soak-test-') as tmp:
        check_judgement(tmp)
        check_real_run(os.path.abspath(args.cityops), tmp)
    print('PASSED', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
