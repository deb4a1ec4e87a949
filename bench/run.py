#!/usr/bin/env python3
"""./run bench: mpxx against CPython's multiprocessing, in one run.

Each workload is measured by bench/mpxx_bench (C++) and bench/cpython_bench.py
(the python3 on PATH), and, where the machine has a limit worth knowing
(raw fork()+waitpid, a raw robust pthread mutex, memcpy), by the limit's own
measurement. Repetitions of the sides are interleaved, after one discarded
warm-up round, so that both see the same noise on a shared machine. The
table shows median, min and max per side and the ratio of medians, which is
always > 1 when mpxx is better. bench/results.json keeps everything.

    python3 bench/run.py --build-dir build/release [--reps N] [FILTER]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class Workload:
    def __init__(self, name, unit, better, mpxx, cpython=None, limit=None, target='',
                 check=None):
        self.name, self.unit, self.better = name, unit, better
        self.mpxx, self.cpython, self.limit = mpxx, cpython, limit
        self.target, self.check = target, check


def ratio(better, ours, theirs):
    """> 1 when `ours` is better than `theirs`."""
    if better == 'lower':
        return theirs / ours
    return ours / theirs


# Each check gets (mpxx median, cpython median or None, limit median or None).
WORKLOADS = [
    Workload('process start+join (fork)', 'us/process', 'lower', 'process_fork', 'process_fork',
             'raw_fork',
             'within 1.5x of raw fork()+waitpid, >= 10x CPython',
             lambda m, c, l: m <= 1.5 * l and c / m >= 10),
    Workload('process start+join (spawn)', 'us/process', 'lower', 'process_spawn', 'process_spawn',
             None, '>= 30x CPython', lambda m, c, l: c / m >= 30),
    Workload('process start+join (forkserver)', 'us/process', 'lower', 'process_forkserver',
             'process_forkserver', None, '', None),
    Workload('Lock acquire+release, uncontended', 'ns', 'lower', 'lock_uncontended',
             'lock_uncontended', None, '<= 50 ns', lambda m, c, l: m <= 50),
    Workload('2 processes: value += 1 under its lock', 'ns/increment', 'lower', 'value_contended',
             'value_contended', 'pthread_contended',
             'within 1.5x of a robust pthread mutex, >= 8x CPython',
             lambda m, c, l: m <= 1.5 * l and c / m >= 8),
    Workload('100 MiB into shared memory, read by a child', 'GB/s', 'higher', 'shm_100mib',
             'shm_100mib', 'memcpy_100mib', 'within 1.5x of memcpy',
             lambda m, c, l: l <= 1.5 * m),
    Workload('Pipe ping-pong round trip (both sides busy)', 'us', 'lower', 'pipe_pingpong',
             'pipe_pingpong', 'futex_pingpong', '<= 5 us', lambda m, c, l: m <= 5),
    Workload('100 MiB through a Pipe', 'GB/s', 'higher', 'pipe_100mib', 'pipe_100mib', None,
             '>= 3 GB/s', lambda m, c, l: m >= 3),
    Workload('Queue, 1 producer 1 consumer, small items', 'items/s', 'higher', 'queue_small',
             'queue_small', None, '>= 10 M/s and >= 50x CPython',
             lambda m, c, l: m >= 10e6 and m / c >= 50),
    Workload('Queue, 1 KiB items', 'GB/s', 'higher', 'queue_kib', 'queue_kib', None, '>= 2 GB/s',
             lambda m, c, l: m >= 2),
    Workload('100 MiB through a Queue', 'GB/s', 'higher', 'queue_100mib', 'queue_100mib', None,
             '>= 3 GB/s', lambda m, c, l: m >= 3),
]


def run_one(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith('{'):
            return float(json.loads(line)['value'])
    raise RuntimeError('no result from %s: %r' % (' '.join(cmd), out))


def summarize(values):
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
            'runs': values}


def fmt(x):
    if x >= 100:
        return '%.0f' % x
    if x >= 10:
        return '%.1f' % x
    return '%.2f' % x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build-dir', default='build/release')
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--python', default='python3')
    ap.add_argument('filter', nargs='?', default='')
    args = ap.parse_args()

    exe = os.path.join(args.build_dir, 'bench', 'mpxx_bench')
    if not os.path.exists(exe):
        sys.exit('bench: %s not found (build the release preset first)' % exe)
    pyscript = os.path.join(HERE, 'cpython_bench.py')
    version = subprocess.run([args.python, '--version'], capture_output=True,
                             text=True).stdout.strip()
    chosen = [w for w in WORKLOADS if re.search(args.filter, w.name) or args.filter in w.name]
    print('mpxx vs CPython multiprocessing (%s), %d reps after 1 warm-up, %d CPUs'
          % (version, args.reps, os.cpu_count()))

    results = []
    for w in chosen:
        sides = {'mpxx': [], 'cpython': [], 'limit': []}
        for rep in range(args.reps + 1):
            runs = [('mpxx', [exe, w.mpxx])]
            if w.cpython:
                runs.append(('cpython', [args.python, pyscript, w.cpython]))
            if w.limit:
                runs.append(('limit', [exe, w.limit]))
            if rep % 2:
                runs.reverse()  # alternate the order as well
            for side, cmd in runs:
                v = run_one(cmd)
                if rep > 0:
                    sides[side].append(v)
        r = {'workload': w.name, 'unit': w.unit, 'better': w.better,
             'mpxx': summarize(sides['mpxx'])}
        m = r['mpxx']['median']
        c = l = None
        if sides['cpython']:
            r['cpython'] = summarize(sides['cpython'])
            c = r['cpython']['median']
            r['ratio'] = ratio(w.better, m, c)
        if sides['limit']:
            r['limit'] = summarize(sides['limit'])
            l = r['limit']['median']
            r['vs_limit'] = ratio(w.better, m, l)
        r['target'] = w.target
        r['met'] = bool(w.check(m, c, l)) if w.check else None
        results.append(r)
        print_row(r)

    out = os.path.join(HERE, 'results.json')
    with open(out, 'w') as f:
        json.dump(results, f, indent=2)
    print('\nwrote %s' % os.path.relpath(out))
    missed = [r['workload'] for r in results if r['met'] is False]
    if missed:
        print('targets missed in this run: %s' % '; '.join(missed))


HEADER = False


def print_row(r):
    global HEADER
    if not HEADER:
        print('\n%-44s %-13s %-22s %-22s %8s  %-22s %8s  %s'
              % ('workload', 'unit', 'mpxx med [min-max]', 'CPython med [min-max]', 'ratio',
                 'limit med', 'vs limit', 'target'))
        HEADER = True

    def cell(s):
        if not s:
            return '-'
        return '%s [%s-%s]' % (fmt(s['median']), fmt(s['min']), fmt(s['max']))
    verdict = {True: 'met', False: 'MISSED', None: ''}[r['met']]
    print('%-44s %-13s %-22s %-22s %8s  %-22s %8s  %s %s'
          % (r['workload'], r['unit'], cell(r['mpxx']), cell(r.get('cpython')),
             ('%.1fx' % r['ratio']) if 'ratio' in r else '-', cell(r.get('limit')),
             ('%.2fx' % r['vs_limit']) if 'vs_limit' in r else '-', r['target'], verdict))
    sys.stdout.flush()


if __name__ == '__main__':
    main()
