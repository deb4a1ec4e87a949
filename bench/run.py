#!/usr/bin/env python3
"""./run bench: mpxx against CPython's multiprocessing, in one run.

    python3 bench/run.py --build-dir build/release [--reps N] [--list] [FILTER]

Each workload is measured by bench/mpxx_bench (C++, built with the library)
and bench/cpython_bench.py (run by the python3 on PATH) and, where the
machine has a limit worth knowing (raw fork()+waitpid, a raw robust pthread
mutex, memcpy, a futex ping-pong), by the limit's own measurement in C
inside bench/mpxx_bench. One measurement is one fresh process printing one
JSON line; the sides take turns within each repetition (and the order
alternates between repetitions) so that all of them share the machine's
noise, and a first warm-up round is discarded. FILTER (a regular
expression, or a plain substring when it is not a valid one) selects
workloads by name or key.

The table shows median [min-max] per side and the ratio of medians, which is
> 1 whenever mpxx is better (for lower-is-better units it is CPython/mpxx).
"vs limit" is the same ratio against the machine's limit. Targets are
checked on medians. bench/results.json keeps everything: a list of
  {"workload", "key", "unit", "better", "args",
   "mpxx": {"median", "min", "max", "runs"}, "cpython": {...} | null,
   "ratio": float | null, "limit": {"name", "median", ...} | null,
   "vs_limit": float | null, "target": str, "checks": [...],
   "met": true | false | null, "error": str (only when a run failed),
   "rss": {"mpxx": {"parent_kb", "children_kb"}, "cpython": {...}}}
The peak RSS (getrusage's ru_maxrss, medians) is measured for every row;
the table shows it for the map, Queue and Pipe rows (RSS_ROWS).

./run bench --curves [--quick] measures how costs grow instead (see
bench/curves.py): it writes bench/curves.json and the charts in bench/curves/.

Adding a workload: a function and one table line in mpxx_bench.cpp and in
cpython_bench.py, and one Workload(...) line below.

Exit status: 0 when every run produced a number (missed targets included),
1 when a run failed (crash, wrong result, timeout), 2 on bad usage.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------- numbers

def si(x):
    """3 significant digits; k, M, G from 100 000 up."""
    for div, suffix in ((1e9, 'G'), (1e6, 'M'), (1e5, 'k')):
        if abs(x) >= div:
            return num(x / (1e3 if suffix == 'k' else div)) + suffix
    return num(x)


def num(x):
    if abs(x) >= 100:
        return '%.0f' % x
    if abs(x) >= 10:
        return '%.1f' % x
    return '%.2f' % x


# ------------------------------------------------------------------ targets
# A target is a text and a test on one result row; a workload's verdict is
# met when all of its targets are. Each test returns (observed, ok).

class Target:
    def __init__(self, text, test):
        self.text, self.test = text, test


def vs_cpython(k):
    """mpxx at least k times better than CPython (ratio of medians)."""
    return Target('>= %gx CPython' % k, lambda r: ('%.1fx' % r['ratio'], r['ratio'] >= k))


def near_limit(k):
    """mpxx no more than k times worse than the machine's limit."""
    def test(r):
        worse = 1 / r['vs_limit']
        return '%.2fx the limit' % worse, worse <= k
    return Target('within %gx of {limit}' % k, test)


def at_most(v, unit):
    return Target('<= %s %s' % (si(v) if v >= 1e5 else '%g' % v, unit),
                  lambda r: ('%s' % si(r['mpxx']['median']), r['mpxx']['median'] <= v))


def at_least(v, unit):
    return Target('>= %s %s' % (si(v) if v >= 1e5 else '%g' % v, unit),
                  lambda r: ('%s' % si(r['mpxx']['median']), r['mpxx']['median'] >= v))


# ---------------------------------------------------------------- workloads

class Workload:
    """name: shown in the table; key: the workload's name in mpxx_bench and
    cpython_bench.py; cpython: False when CPython has no counterpart;
    args: integer parameters passed to both sides and to the limit (when
    empty each side uses its own defaults); limit: (key in mpxx_bench, what
    it is) of the machine's limit."""

    def __init__(self, name, unit, better, key, *, cpython=True, args=(), limit=None,
                 targets=()):
        assert better in ('lower', 'higher')
        self.name, self.unit, self.better, self.key = name, unit, better, key
        self.cpython, self.args, self.limit = cpython, [str(a) for a in args], limit
        self.targets = list(targets)

    def target_text(self):
        limit = self.limit[1] if self.limit else 'the limit'
        return ', '.join(t.text.format(limit=limit) for t in self.targets)


US = 'us per process'
RAW_FORK = ('raw_fork', 'raw fork()+waitpid')
FRESH_COPY = ('fresh_copy_100mib', 'one copy into fresh memory')
FRESH_COPY_16 = ('fresh_copy_16mib', 'one copy into fresh memory')

WORKLOADS = [
    # Process start+join: the mean over a batch of processes started and
    # joined one at a time (one untimed process first on each side).
    Workload('process start+join (fork)', US, 'lower', 'process_fork', args=[200],
             limit=RAW_FORK, targets=[near_limit(1.5), vs_cpython(10)]),
    Workload('process start+join (spawn)', US, 'lower', 'process_spawn', args=[30],
             targets=[vs_cpython(30)]),
    Workload('process start+join (forkserver)', US, 'lower', 'process_forkserver', args=[30]),

    # Seeds 002 §2.9.2, process pool against one process per task: 100
    # Processes running func(i), all started and then all joined, against
    # Pool(4) with 20 apply_async + close + join.
    Workload('seeds 2.9.2: 100 Processes, started then joined', 'ms', 'lower',
             'seed_processes', args=[100]),
    Workload('seeds 2.9.2: Pool(4), 20 apply_async + close + join', 'ms', 'lower',
             'seed_pool', args=[4, 20]),

    Workload('Lock acquire+release, uncontended', 'ns', 'lower', 'lock_uncontended',
             targets=[at_most(50, 'ns')]),
    Workload('2 processes: value += 1 under its lock', 'ns/increment', 'lower', 'value_contended',
             limit=('pthread_contended', 'a robust pthread mutex'),
             targets=[near_limit(1.5), vs_cpython(8)]),
    Workload('100 MiB into shared memory, read by a child', 'GB/s', 'higher', 'shm_100mib',
             limit=('memcpy_100mib', 'memcpy'), targets=[near_limit(1.5)]),
    Workload('Pipe ping-pong round trip (both sides busy)', 'us', 'lower', 'pipe_pingpong',
             limit=('futex_pingpong', 'a futex ping-pong'), targets=[at_most(5, 'us')]),
    # Whatever carries it, a 100 MiB value arrives in fresh memory: the
    # limit is one copy into a fresh (huge-page advised) mapping.
    Workload('100 MiB through a Pipe', 'GB/s', 'higher', 'pipe_100mib',
             limit=FRESH_COPY, targets=[at_least(3, 'GB/s')]),
    Workload('Queue, 1 producer 1 consumer, small items', 'items/s', 'higher', 'queue_small',
             targets=[at_least(10e6, 'items/s'), vs_cpython(50)]),
    Workload('Queue, 1 KiB items', 'GB/s', 'higher', 'queue_kib', targets=[at_least(2, 'GB/s')]),
    Workload('100 MiB through a Queue', 'GB/s', 'higher', 'queue_100mib',
             limit=FRESH_COPY, targets=[at_least(3, 'GB/s'), near_limit(1.25)]),
    Workload('16 MiB through a Queue', 'GB/s', 'higher', 'queue_16mib',
             limit=FRESH_COPY_16, targets=[near_limit(1.25)]),

    Workload('Pool(2).map over 1M ints, default chunksize', 'ms', 'lower', 'pool_map',
             args=[1000000], targets=[vs_cpython(20)]),
    Workload('Pool(2).map over 100k ints, chunksize=1', 'ms', 'lower', 'pool_map_chunk1',
             args=[100000], targets=[vs_cpython(20)]),
    Workload('Pool(2) apply_async(f, x).get() round trip', 'us', 'lower', 'pool_apply',
             args=[2000], targets=[at_most(10, 'us')]),
    Workload('Pool(2) create + one task + close/join', 'us', 'lower', 'pool_lifecycle',
             args=[20], limit=('raw_fork_pair', '2 raw fork()+waitpid'), targets=[near_limit(2)]),

    # A child sets and reads back one item of a managed dict: the time of
    # one operation (set or get), measured in the child.
    Workload('Manager dict set/get from a child', 'us per op', 'lower', 'manager_dict_op',
             args=[5000], targets=[at_most(10, 'us')]),
    Workload('Manager() + dict() + one item + shutdown', 'us', 'lower', 'manager_lifecycle',
             args=[20], targets=[vs_cpython(10)]),
]


# ------------------------------------------------------------------ running

class RunFailed(Exception):
    pass


def run_one(cmd, timeout):
    """Runs one measurement; its JSON line as a dict ("value" a float, the
    peak RSS in "rss_kb" and "children_rss_kb"), or RunFailed saying why
    not."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed('%s: no result within %gs' % (' '.join(cmd), timeout))
    record = None
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith('{'):
            try:
                rec = json.loads(line)
                rec['value'] = float(rec['value'])
                record = rec
            except (ValueError, KeyError, TypeError):
                pass
    if p.returncode != 0 or record is None:
        why = ('killed by signal %d' % -p.returncode if p.returncode < 0
               else 'exit status %d' % p.returncode)
        tail = (p.stderr.strip() or p.stdout.strip())[-600:]
        raise RunFailed('%s: %s%s' % (' '.join(cmd), why, ('\n' + tail) if tail else ''))
    return record


def summarize(values):
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
            'runs': values}


def ratio(better, ours, theirs):
    """> 1 when `ours` is better than `theirs`."""
    return theirs / ours if better == 'lower' else ours / theirs


def peak_rss(records):
    """The medians of a side's peak RSS: its parent's and its largest
    child's, in KiB."""
    return {'parent_kb': statistics.median(x.get('rss_kb', 0) for x in records),
            'children_kb': statistics.median(x.get('children_rss_kb', 0) for x in records)}


def measure(w, exe, python, pyscript, reps, timeout):
    sides = {'mpxx': [], 'cpython': [], 'limit': []}
    records = {'mpxx': [], 'cpython': [], 'limit': []}
    cmds = [('mpxx', [exe, w.key] + w.args)]
    if w.cpython:
        cmds.append(('cpython', [python, pyscript, w.key] + w.args))
    if w.limit:
        cmds.append(('limit', [exe, w.limit[0]] + w.args))
    r = {'workload': w.name, 'key': w.key, 'unit': w.unit, 'better': w.better,
         'args': [int(a) for a in w.args], 'mpxx': None, 'cpython': None, 'ratio': None,
         'limit': None, 'vs_limit': None, 'target': w.target_text(), 'checks': [],
         'met': None, 'rss': {}}
    try:
        for rep in range(reps + 1):  # round 0 is the warm-up
            for side, cmd in (cmds if rep % 2 == 0 else cmds[::-1]):
                rec = run_one(cmd, timeout)
                if rep > 0:
                    sides[side].append(rec['value'])
                    records[side].append(rec)
    except RunFailed as e:
        r['error'] = str(e)
        r['met'] = False if w.targets else None
        return r
    r['mpxx'] = summarize(sides['mpxx'])
    r['rss'] = {side: peak_rss(records[side]) for side in ('mpxx', 'cpython') if records[side]}
    m = r['mpxx']['median']
    if sides['cpython']:
        r['cpython'] = summarize(sides['cpython'])
        r['ratio'] = ratio(w.better, m, r['cpython']['median'])
    if sides['limit']:
        r['limit'] = dict(name=w.limit[1], **summarize(sides['limit']))
        r['vs_limit'] = ratio(w.better, m, r['limit']['median'])
    if w.targets:
        for t in w.targets:
            observed, ok = t.test(r)
            r['checks'].append({'target': t.text.format(limit=w.limit[1] if w.limit else ''),
                                'observed': observed, 'met': bool(ok)})
        r['met'] = all(c['met'] for c in r['checks'])
    return r


# ----------------------------------------------------------------- printing

def cell(s):
    return '-' if not s else '%s [%s-%s]' % (si(s['median']), si(s['min']), si(s['max']))


def verdict(r):
    if 'error' in r:
        return 'ERROR'
    return {True: 'met', False: 'MISSED', None: ''}[r['met']]


# The rows whose table line shows the peak RSS (every row's is in
# results.json): those that move data, where memory grows with the work.
RSS_ROWS = re.compile(r'^(pool_map|queue_|pipe_)')


def rss_cell(r, side):
    """The parent's / the largest child's peak RSS, MiB."""
    rss = r.get('rss', {}).get(side)
    if not rss or not RSS_ROWS.match(r['key']):
        return ''
    return '%.0f / %.0f MiB' % (rss['parent_kb'] / 1024, rss['children_kb'] / 1024)


def print_table(results):
    head = ('workload', 'unit', 'mpxx', 'CPython', 'ratio', 'limit', 'vs limit', 'target',
            'peak RSS mpxx', 'peak RSS CPython')
    rows = [(r['workload'], r['unit'], cell(r['mpxx']), cell(r['cpython']),
             '-' if r['ratio'] is None else '%.1fx' % r['ratio'], cell(r['limit']),
             '-' if r['vs_limit'] is None else '%.2fx' % r['vs_limit'], verdict(r),
             rss_cell(r, 'mpxx'), rss_cell(r, 'cpython'))
            for r in results]
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    right = {4, 6}  # ratios

    def line(cols):
        return '  '.join(c.rjust(wd) if i in right else c.ljust(wd)
                         for i, (c, wd) in enumerate(zip(cols, widths))).rstrip()
    print(line(head))
    print(line(['-' * wd for wd in widths]))
    for x in rows:
        print(line(x))
    print('\nmedian [min-max] of each side; ratio = how many times better mpxx is than '
          'CPython\n(> 1: mpxx better); peak RSS = the parent\'s / its largest child\'s '
          '(getrusage\nru_maxrss, median); vs limit = the ratio against the machine\'s limit:')
    for r in results:
        if r['limit']:
            print('  %s: %s' % (r['workload'], r['limit']['name']))
    print('\ntargets (on medians):')
    for r in results:
        if 'error' in r:
            print('  ERROR   %s: %s' % (r['workload'], r['error'].replace('\n', '\n          ')))
        elif r['checks']:
            print('  %-7s %s: %s' % (verdict(r), r['workload'],
                                     '; '.join('%s: %s %s' % (c['target'], c['observed'],
                                                              'ok' if c['met'] else 'MISSED')
                                               for c in r['checks'])))


# --------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--build-dir', default='build/release')
    ap.add_argument('--reps', type=int, help='measured repetitions (>= 1; default 5, '
                    'with --curves 3, with --quick 1)')
    ap.add_argument('--python', default='python3', help='the CPython to compare with')
    ap.add_argument('--timeout', type=float, default=300, help='seconds per run')
    ap.add_argument('--out', default=os.path.join(HERE, 'results.json'))
    ap.add_argument('--list', action='store_true', help='list the workloads and exit')
    ap.add_argument('--curves', action='store_true',
                    help='measure the cost curves instead (bench/curves.py)')
    ap.add_argument('--quick', action='store_true', help='with --curves: a small grid')
    ap.add_argument('--curves-out', default=os.path.join(HERE, 'curves.json'))
    ap.add_argument('--charts-dir', default=os.path.join(HERE, 'curves'))
    ap.add_argument('filter', nargs='?', default='')
    args = ap.parse_args()
    if args.reps is not None and args.reps < 1:
        ap.error('--reps must be >= 1')
    if args.quick and not args.curves:
        ap.error('--quick goes with --curves')
    if args.curves and args.filter:
        ap.error('--curves measures every curve (no FILTER)')
    args.reps_given, args.reps = args.reps, args.reps or 5

    try:
        pattern = re.compile(args.filter, re.I)
        match = lambda w: pattern.search(w.name) or pattern.search(w.key)
    except re.error:
        match = lambda w: args.filter.lower() in (w.name + ' ' + w.key).lower()
    chosen = [w for w in WORKLOADS if match(w)]
    if args.list:
        for w in chosen:
            print('%-20s %s' % (w.key, w.name))
        return 0
    if not chosen:
        print('bench: no workload matches %r (--list shows them)' % args.filter, file=sys.stderr)
        return 2

    exe = os.path.join(args.build_dir, 'bench', 'mpxx_bench')
    if not os.access(exe, os.X_OK):
        print('bench: %s not found (build with -DMPXX_BUILD_BENCH=ON first)' % exe,
              file=sys.stderr)
        return 2
    pyscript = os.path.join(HERE, 'cpython_bench.py')
    if args.curves:
        import curves
        return curves.main(args, exe, pyscript)
    version = subprocess.run([args.python, '--version'], capture_output=True,
                             text=True).stdout.strip()
    print('mpxx vs CPython multiprocessing (%s): %d reps after 1 warm-up, %d CPUs, '
          'Linux %s, load %.2f' % (version, args.reps, os.cpu_count(), platform.release(),
                                   os.getloadavg()[0]))

    results = []
    t_all = time.monotonic()
    for i, w in enumerate(chosen, 1):
        t0 = time.monotonic()
        print('[%d/%d] %s ...' % (i, len(chosen), w.name), end=' ', flush=True)
        r = measure(w, exe, args.python, pyscript, args.reps, args.timeout)
        print('%s %.1fs' % ('ERROR' if 'error' in r else 'done', time.monotonic() - t0),
              flush=True)
        results.append(r)
    print('(%.0fs)\n' % (time.monotonic() - t_all))
    print_table(results)

    with open(args.out, 'w') as f:
        json.dump(results, f, indent=2)
        f.write('\n')
    print('\nwrote %s' % os.path.relpath(args.out))
    missed = [r['workload'] for r in results if r['met'] is False and 'error' not in r]
    if missed:
        print('targets missed in this run: %s' % '; '.join(missed))
    failed = [r['workload'] for r in results if 'error' in r]
    if failed:
        print('runs failed: %s' % '; '.join(failed))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
