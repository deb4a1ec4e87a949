"""Draws bench/curves.json (./run bench --curves) as PNG charts.

    /usr/bin/python3 bench/plot_curves.py bench/curves.json bench/curves/

Run by the Debian python3, which sees python3-matplotlib. Writes map.png
(time and peak RSS of Pool(2).map against N: the README's chart), queue.png
(producers x consumers) and workers.png (apply round trip and map throughput
against the pool's size), each captioned with the commit, machine and date
of the run that measured it.
"""
import json
import os
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

COLOR = {'mpxx': '#1f77b4', 'cpython': '#ff7f0e'}
MARKER = {'mpxx': 'o', 'cpython': 's'}
LABEL = {'mpxx': 'mpxx', 'cpython': 'CPython'}
SIDES = ('mpxx', 'cpython')


def caption(fig, meta):
    load = ' (load %.1f-%.1f)' % tuple(meta['load']) if 'load' in meta else ''
    fig.text(0.5, 0.005, 'mpxx %s vs %s multiprocessing, %s, %s%s; median of %d run%s a point'
             % (meta['commit'], meta['python'].replace('Python', 'CPython'), meta['machine'],
                meta['date'], load, meta['reps'], '' if meta['reps'] == 1 else 's'),
             ha='center', va='bottom', fontsize=7.5, color='#555555')


def series(curve, side, field='median'):
    pts = [p for p in curve['points'] if p.get(side)]
    return [p['x'] for p in pts], [p[side][field] for p in pts]


def skipped_note(ax, curve, meta, what):
    skipped = [p['x'] for p in curve['points'] if p.get('skipped')]
    if skipped:
        ax.annotate('CPython, %s: not run at %s = %s\n(one run over the %s s budget)'
                    % (what, curve['x'], ', '.join('%.0e' % x for x in skipped).replace('+0', ''),
                       '%g' % meta['cpython_budget_s']),
                    xy=(0.98, 0.03), xycoords='axes fraction', ha='right', va='bottom',
                    fontsize=7.5, color=COLOR['cpython'])


def plain(v, _pos=None):
    """1, 20, 500, 2k, 5M: a tick label."""
    for div, suffix in ((1e6, 'M'), (1e3, 'k')):
        if v >= div:
            return '%g%s' % (v / div, suffix)
    return '%g' % v


def log_axes(ax, xlabel, ylabel, title):
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which='major', alpha=0.3)
    # Plain numbers at 1, 2, 5 x 10^k: readable over the few decades a
    # panel spans.
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_sides(ax, curve, field, ls, label, scale=1.0, **style):
    """One line a side of `curve`'s `field` (median, parent_kb, ...)."""
    for side in SIDES:
        x, y = series(curve, side, field)
        if x:
            ax.plot(x, [v * scale for v in y], ls, marker=MARKER[side],
                    ms=4, color=COLOR[side], label=label % LABEL[side], **style)


def finish(fig, meta, path):
    caption(fig, meta)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_map(curves, meta, path):
    fig, (t_ax, m_ax) = plt.subplots(1, 2, figsize=(11, 4.3))
    for name, ls, what in (('map', '-', 'default chunksize'), ('map_chunk1', '--', 'chunksize=1')):
        c = curves.get(name)
        if c:
            plot_sides(t_ax, c, 'median', ls, '%s, ' + what)
            plot_sides(m_ax, c, 'parent_kb', ls, '%s parent, ' + what, 1 / 1024)
            skipped_note(t_ax, c, meta, what)
    if curves.get('map'):
        plot_sides(m_ax, curves['map'], 'children_kb', ':', '%s largest worker, default chunksize',
                   1 / 1024, alpha=0.7)
    log_axes(t_ax, 'N (ints mapped)', 'ms per map', 'Pool(2).map(f, range(N)): time')
    log_axes(m_ax, 'N (ints mapped)', 'peak RSS, MiB', 'Pool(2).map(f, range(N)): peak RSS')
    t_ax.legend(fontsize=7.5, loc='upper left', handlelength=3.5)
    m_ax.legend(fontsize=7, loc='upper left', handlelength=3.5)
    finish(fig, meta, path)


def plot_queue(c, meta, path):
    fig, (ax, r_ax) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={'width_ratios': [3, 2]})
    producers = sorted({p['x'][0] for p in c['points']})
    consumers = sorted({p['x'][1] for p in c['points']})
    shades = plt.get_cmap('viridis')
    for i, n_p in enumerate(producers):
        pts = [p for p in c['points'] if p['x'][0] == n_p]
        color = shades(i / max(1, len(producers) - 1) * 0.85)
        for side, ls in (('mpxx', '-'), ('cpython', '--')):
            xy = [(p['x'][1], p[side]['median']) for p in pts if p.get(side)]
            if xy:
                ax.plot(*zip(*xy), ls, marker=MARKER[side], ms=4, color=color,
                        label='%s, %d producer%s' % (LABEL[side], n_p, '' if n_p == 1 else 's'))
    log_axes(ax, 'consumer processes', 'items/s (log)', c['title'])
    ax.set_xscale('log', base=2)
    ax.set_xticks(consumers)
    ax.set_xticklabels([str(x) for x in consumers])
    ax.legend(fontsize=7, ncol=2, loc='center right')
    grid = [[None] * len(consumers) for _ in producers]
    for p in c['points']:
        if p.get('mpxx') and p.get('cpython'):
            grid[producers.index(p['x'][0])][consumers.index(p['x'][1])] = (
                p['mpxx']['median'] / p['cpython']['median'])
    vals = [[v if v is not None else float('nan') for v in row] for row in grid]
    r_ax.imshow(vals, cmap='Blues', origin='lower', aspect='auto')
    known = [v for row in grid for v in row if v is not None]
    middle = (min(known) + max(known)) / 2 if known else 0
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            r_ax.text(j, i, '-' if v is None else '%.0fx' % v, ha='center', va='center',
                      fontsize=9, color='white' if v is not None and v > middle else 'black')
    r_ax.set_xticks(range(len(consumers)))
    r_ax.set_xticklabels([str(x) for x in consumers])
    r_ax.set_yticks(range(len(producers)))
    r_ax.set_yticklabels([str(x) for x in producers])
    r_ax.set_xlabel('consumer processes')
    r_ax.set_ylabel('producer processes')
    r_ax.set_title('mpxx / CPython throughput', fontsize=10)
    finish(fig, meta, path)


def plot_workers(curves, meta, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, name in zip(axes, ('apply', 'map_workers')):
        c = curves.get(name)
        if not c:
            continue
        plot_sides(ax, c, 'median', '-', '%s')
        log_axes(ax, 'worker processes (W)', '%s (log)' % c['unit'], c['title'])
        ax.set_xscale('log', base=2)
        xs = [p['x'] for p in c['points']]
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.legend(fontsize=8)
    finish(fig, meta, path)


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: plot_curves.py CURVES_JSON OUT_DIR')
    with open(sys.argv[1]) as f:
        data = json.load(f)
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    curves = {c['name']: c for c in data['curves']}
    meta = data['meta']
    written = []
    if 'map' in curves or 'map_chunk1' in curves:
        written.append(os.path.join(out, 'map.png'))
        plot_map(curves, meta, written[-1])
    if 'queue' in curves:
        written.append(os.path.join(out, 'queue.png'))
        plot_queue(curves['queue'], meta, written[-1])
    if 'apply' in curves or 'map_workers' in curves:
        written.append(os.path.join(out, 'workers.png'))
        plot_workers(curves, meta, written[-1])
    for w in written:
        print('wrote %s (%.0f KB)' % (os.path.relpath(w), os.path.getsize(w) / 1024))


if __name__ == '__main__':
    main()
