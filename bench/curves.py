"""./run bench --curves: how cost grows, mpxx against CPython in one run.

    python3 bench/run.py --build-dir build/release --curves [--quick] [--reps N]

Each curve is one workload of bench/mpxx_bench and bench/cpython_bench.py
measured at a series of sizes (N, producers x consumers, workers), both sides
taking turns at every point. Every measurement is a fresh process, so its peak
RSS (the parent's and its largest child's, getrusage) belongs to that point.
A point's number is the median over the repetitions.

CPython's side of a curve over N stops where one run would take more than
CPYTHON_BUDGET seconds (its last run's time, scaled linearly with N); the
points it skips say so in curves.json and on the chart.

Writes bench/curves.json:
  {"meta": {"date", "commit", "machine", "python", "grid", "reps", "seconds",
            "load": [1-minute load average at the start, at the end]},
   "curves": [{"name", "title", "workload", "unit", "better", "x", "points": [
       {"x": number or [producers, consumers], "args": {"mpxx": [...], "cpython": [...]},
        "mpxx": {"median", "min", "max", "runs", "parent_kb", "children_kb"},
        "cpython": {...} | null, "skipped": str (only when CPython's side was not run),
        "error": str (only when mpxx's side failed; then both sides are null)}]}]}
Exit status 1 when a point failed on mpxx's side or the charts could not be
drawn (the numbers are written either way).
then draws the charts (bench/plot_curves.py, run by the Debian python3 that
sees python3-matplotlib) into bench/curves/.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from run import RunFailed, run_one

HERE = os.path.dirname(os.path.abspath(__file__))
CPYTHON_BUDGET = 60.0    # seconds one CPython run may take before its curve stops
PLOT_PYTHON = '/usr/bin/python3'

# The grids: the full one keeps the whole run within ~15 minutes on a 2-core
# machine; --quick is for trying the mode out (well under a minute).
FULL = {'map_n': [k * 10**e for e in range(3, 7) for k in (1, 3)] + [10**7], 'chunk1_n': [10**3, 10**4, 10**5, 10**6],
        'producers': [1, 2, 4, 8], 'consumers': [1, 2, 4, 8], 'workers': [1, 2, 4, 8, 16],
        'reps': 3}
QUICK = {'map_n': [10**3, 10**4, 10**5], 'chunk1_n': [10**3, 10**4], 'producers': [1, 2],
         'consumers': [1, 2], 'workers': [1, 2, 4], 'reps': 1}

# Items a queue_grid run moves: each side a count that takes it ~0.1-2 s
# (CPython's Queue is ~50x slower); divisible by every producer and
# consumer count. Throughput is per item, so the two compare.
QUEUE_ITEMS = {'mpxx': 800_000, 'cpython': 40_000}
APPLY_CALLS = 2000          # sequential apply_async().get() per run
WORKER_MAP_N = 20_000       # map(chunksize=1) size in the workers curve


class Curve:
    """points: (x, mpxx args, cpython args); per_item: the value is ms per
    map of args[0] items and the curve shows items/s instead."""

    def __init__(self, name, title, workload, unit, better, x, points, *, scales_with_x=False,
                 per_item=False):
        self.name, self.title, self.workload, self.unit = name, title, workload, unit
        self.better, self.x, self.points = better, x, points
        self.scales_with_x, self.per_item = scales_with_x, per_item


def plan(grid):
    same = lambda args: (args, args)
    return [
        Curve('map', 'Pool(2).map(f, range(N)), default chunksize', 'map_curve', 'ms', 'lower',
              'N', [(n,) + same([n, 2]) for n in grid['map_n']], scales_with_x=True),
        Curve('map_chunk1', 'Pool(2).map(f, range(N), chunksize=1)', 'map_curve_chunk1', 'ms',
              'lower', 'N', [(n,) + same([n, 2]) for n in grid['chunk1_n']], scales_with_x=True),
        Curve('queue', 'Queue of small ints: P producer x C consumer processes', 'queue_grid',
              'items/s', 'higher', 'producers x consumers',
              [([p, c], [p, c, QUEUE_ITEMS['mpxx']], [p, c, QUEUE_ITEMS['cpython']])
               for p in grid['producers'] for c in grid['consumers']]),
        Curve('apply', 'Pool(W): apply_async(f, x).get() round trip', 'pool_apply', 'us', 'lower',
              'workers', [(w,) + same([APPLY_CALLS, w]) for w in grid['workers']]),
        Curve('map_workers', 'Pool(W).map(f, range(%d), chunksize=1) throughput' % WORKER_MAP_N,
              'map_curve_chunk1', 'tasks/s', 'higher', 'workers',
              [(w,) + same([WORKER_MAP_N, w]) for w in grid['workers']], per_item=True),
    ]


def point_side(records, per_item, n):
    values = [r['value'] for r in records]
    if per_item:
        values = [n / (v / 1e3) for v in values]
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
            'runs': values,
            'parent_kb': statistics.median(r.get('rss_kb', 0) for r in records),
            'children_kb': statistics.median(r.get('children_rss_kb', 0) for r in records)}


def measure_curve(c, exe, python, pyscript, reps, timeout):
    """The curve's points; CPython's side stops where its runs grow past the
    budget (or fail)."""
    out = []
    last = None          # (x, seconds of CPython's slowest run at x)
    stopped = None       # why CPython's side stopped
    for x, margs, pargs in c.points:
        p = {'x': x, 'args': {'mpxx': margs, 'cpython': pargs}, 'mpxx': None, 'cpython': None}
        if stopped is None and c.scales_with_x and last is not None:
            predicted = last[1] * x / last[0]
            if predicted > CPYTHON_BUDGET:
                stopped = ('not run: one run would take ~%.0f s (%.1f s at %s = %d), over the '
                           '%.0f s budget' % (predicted, last[1], c.x, last[0], CPYTHON_BUDGET))
        if stopped is not None:
            p['skipped'] = stopped
        sides = [('mpxx', [exe, c.workload] + [str(a) for a in margs])]
        if stopped is None:
            sides.append(('cpython', [python, pyscript, c.workload] + [str(a) for a in pargs]))
        records = {'mpxx': [], 'cpython': []}
        slowest = 0.0
        for rep in range(reps):
            if 'error' in p:
                break
            for side, cmd in (sides if rep % 2 == 0 else sides[::-1]):
                t0 = time.monotonic()
                try:
                    records[side].append(run_one(cmd, timeout))
                except RunFailed as e:
                    if side == 'mpxx':
                        p['error'] = str(e)
                        print('  %s = %s: mpxx failed: %s' % (c.x, x, e), file=sys.stderr)
                        break
                    stopped = p['skipped'] = 'failed: %s' % e
                    sides = sides[:1]
                    break
                if side == 'cpython':
                    slowest = max(slowest, time.monotonic() - t0)
        n = margs[0]
        if 'error' in p:
            out.append(p)
            continue
        p['mpxx'] = point_side(records['mpxx'], c.per_item, n)
        if records['cpython'] and 'skipped' not in p:
            p['cpython'] = point_side(records['cpython'], c.per_item, n)
            last = (x, slowest)
        out.append(p)
        show = lambda s: '-' if not s else '%.4g %s (RSS %.0f / %.0f MiB)' % (
            s['median'], c.unit, s['parent_kb'] / 1024, s['children_kb'] / 1024)
        print('  %s = %s: mpxx %s, CPython %s' % (c.x, x, show(p['mpxx']),
                                                  show(p['cpython']) if p['cpython']
                                                  else p.get('skipped', '-')), flush=True)
    return out


def git_commit():
    def git(*a):
        return subprocess.run(['git', '-C', HERE] + list(a), capture_output=True,
                              text=True).stdout.strip()
    commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
    return commit + ('-dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def machine():
    model = ''
    try:
        with open('/proc/cpuinfo') as f:
            model = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')),
                         '')
        with open('/proc/meminfo') as f:
            mem_kb = int(next(ln for ln in f if ln.startswith('MemTotal')).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return '%d-CPU %s, %.0f GiB, Linux %s' % (os.cpu_count(), model or platform.machine(),
                                              mem_kb / 2**20, platform.release())


def plot(out_json, out_dir):
    """Draws the charts with the Debian python3 (python3-matplotlib); False
    when it cannot."""
    script = os.path.join(HERE, 'plot_curves.py')
    try:
        p = subprocess.run([PLOT_PYTHON, script, out_json, out_dir], capture_output=True,
                           text=True)
    except OSError as e:
        print('curves: no charts: %s' % e, file=sys.stderr)
        return False
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        print('curves: no charts (%s %s failed; `./run bench --curves` installs '
              'python3-matplotlib):\n%s' % (PLOT_PYTHON, script, p.stderr.strip()[-600:]),
              file=sys.stderr)
        return False
    return True


def main(args, exe, pyscript):
    grid = QUICK if args.quick else FULL
    reps = args.reps_given or grid['reps']
    version = subprocess.run([args.python, '--version'], capture_output=True,
                             text=True).stdout.strip()
    meta = {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'commit': git_commit(), 'machine': machine(), 'python': version,
            'grid': 'quick' if args.quick else 'full', 'reps': reps,
            'cpython_budget_s': CPYTHON_BUDGET}
    print('cost curves, mpxx %s vs CPython multiprocessing (%s), %s grid, %d rep(s) a point, '
          '%s, load %.2f' % (meta['commit'], version, meta['grid'], reps, meta['machine'],
                             os.getloadavg()[0]), flush=True)
    t_all = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 2)
    curves = []
    failed = 0
    for c in plan(grid):
        print('%s [%s]' % (c.title, c.unit), flush=True)
        t0 = time.monotonic()
        points = measure_curve(c, exe, args.python, pyscript, reps, args.timeout)
        failed += sum('error' in p for p in points)
        print('  (%.0f s)' % (time.monotonic() - t0), flush=True)
        curves.append({'name': c.name, 'title': c.title, 'workload': c.workload, 'unit': c.unit,
                       'better': c.better, 'x': c.x, 'points': points})
    meta['seconds'] = round(time.monotonic() - t_all)
    meta['load'] = [load_at_start, round(os.getloadavg()[0], 2)]
    out_json = args.curves_out
    with open(out_json, 'w') as f:
        json.dump({'meta': meta, 'curves': curves}, f, indent=1)
        f.write('\n')
    print('\n%d s in all; wrote %s' % (meta['seconds'], os.path.relpath(out_json)))
    if failed:
        print('curves: %d point(s) failed on mpxx\'s side ("error" in %s)'
              % (failed, os.path.relpath(out_json)), file=sys.stderr)
    return 0 if plot(out_json, args.charts_dir) and not failed else 1
