"""The CPython side of ./run bench: the same workloads with CPython's
multiprocessing.

    python3 cpython_bench.py WORKLOAD [N...]

prints one JSON line {"workload": ..., "value": ..., "args": [...],
"rss_kb": ..., "children_rss_kb": ...} in the workload's unit; the last two
are this process's peak RSS (VmHWM: ru_maxrss would count the launcher's
peak, which survives exec) and the largest peak of the children it waited
for (getrusage's ru_maxrss), in KiB, taken after the workload has joined
every process it started. The optional integers N are the workload's parameters, the
same that bench/run.py passes to bench/mpxx_bench (for the process workloads:
how many processes in the timed batch). A wrong result fails with an
exception (exit status 1), so run.py never records it.

Adding a workload: a function returning the value, and one line in WORKLOADS.
"""
import json
import multiprocessing as mp
import resource
import sys
import time
from multiprocessing import shared_memory

INCREMENTS = 100_000          # per process; CPython is slow, the unit is per op
SHM_BYTES = 100 << 20


def nothing():
    pass


def start_join_one(ctx):
    p = ctx.Process(target=nothing)
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError('child exit code %r' % p.exitcode)


def start_join_us(method, n):
    """Mean wall time of get_context(method).Process(target=nothing).start()
    + join(), one process at a time, over a batch of n. One untimed process
    first starts the forkserver (a one-time cost, as mpxx's side excludes
    too) and warms up the imports."""
    ctx = mp.get_context(method)
    start_join_one(ctx)
    t0 = time.perf_counter()
    for _ in range(n):
        start_join_one(ctx)
    return (time.perf_counter() - t0) * 1e6 / n


def lock_uncontended_ns():
    lock = mp.Lock()
    n = 1_000_000
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t0) * 1e9 / n


def add_to_value(v, n):
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            v.value += 1


def value_contended_ns():
    v = mp.Value('l', 0)
    t0 = time.perf_counter()
    ps = [mp.Process(target=add_to_value, args=(v, INCREMENTS)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    s = time.perf_counter() - t0
    assert v.value == 2 * INCREMENTS
    return s * 1e9 / (2 * INCREMENTS)


def read_all(name, out):
    shm = shared_memory.SharedMemory(name=name)
    t0 = time.perf_counter()
    data = bytes(shm.buf)
    out.value = time.perf_counter() - t0
    assert data[SHM_BYTES // 2] == 0x5a
    del data
    shm.close()


def shm_gbps():
    shm = shared_memory.SharedMemory(create=True, size=SHM_BYTES)
    try:
        shm.buf[:] = bytes(SHM_BYTES)          # fault in
        src = b'\x5a' * SHM_BYTES
        t0 = time.perf_counter()
        shm.buf[:] = src
        write_s = time.perf_counter() - t0
        read_s = mp.Value('d', 0.0)
        p = mp.Process(target=read_all, args=(shm.name, read_s))
        p.start()
        p.join()
        return 2 * SHM_BYTES / (write_s + read_s.value) / 1e9
    finally:
        shm.close()
        shm.unlink()


def echo_until_negative(c):
    while True:
        v = c.recv()
        c.send(v)
        if v < 0:
            return


def pipe_pingpong_us():
    a, b = mp.Pipe()
    p = mp.Process(target=echo_until_negative, args=(b,))
    p.start()
    b.close()
    for i in range(1000):
        a.send(i)
        a.recv()
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        a.send(i)
        a.recv()
    us = (time.perf_counter() - t0) * 1e6 / n
    a.send(-1)
    a.recv()
    p.join()
    return us


def send_100mib(c):
    data = b'\x5a' * SHM_BYTES
    c.send(0)   # ready: the value is built
    c.recv()
    c.send_bytes(data)


def pipe_100mib_gbps():
    a, b = mp.Pipe()
    p = mp.Process(target=send_100mib, args=(b,))
    p.start()
    b.close()
    a.recv()    # the child has built its value: time the transfer alone
    t0 = time.perf_counter()
    a.send(1)
    data = a.recv_bytes()
    s = time.perf_counter() - t0
    p.join()
    assert len(data) == SHM_BYTES
    return SHM_BYTES / s / 1e9


QUEUE_ITEMS = 100_000


def consume_n(q, n):
    for _ in range(n):
        q.get()


def queue_small_items_per_s():
    q = mp.Queue()
    c = mp.Process(target=consume_n, args=(q, QUEUE_ITEMS))
    c.start()
    t0 = time.perf_counter()
    for i in range(QUEUE_ITEMS):
        q.put(i)
    c.join()
    return QUEUE_ITEMS / (time.perf_counter() - t0)


def queue_kib_gbps():
    q = mp.Queue()
    item = 'k' * 1024
    c = mp.Process(target=consume_n, args=(q, QUEUE_ITEMS))
    c.start()
    t0 = time.perf_counter()
    for _ in range(QUEUE_ITEMS):
        q.put(item)
    c.join()
    return 1024 * QUEUE_ITEMS / (time.perf_counter() - t0) / 1e9


def put_large(q, ready, go, nbytes):
    data = b'\x5a' * nbytes
    ready.set()
    go.wait()
    q.put(data)


def queue_large_gbps(nbytes):
    q = mp.Queue()
    ready, go = mp.Event(), mp.Event()
    p = mp.Process(target=put_large, args=(q, ready, go, nbytes))
    p.start()
    ready.wait()   # the child has built its value: time the transfer alone
    t0 = time.perf_counter()
    go.set()
    data = q.get()
    s = time.perf_counter() - t0
    p.join()
    assert len(data) == nbytes
    return nbytes / s / 1e9


def produce_ints(q, go, n):
    go.wait()
    for i in range(n):
        q.put(i)


def queue_grid_items_per_s(producers, consumers, items):
    """As mpxx_bench's queue_grid: items/s from the start signal until every
    producer and consumer process has been joined."""
    assert items % producers == 0 and items % consumers == 0
    q = mp.Queue()
    go = mp.Event()
    ps = [mp.Process(target=consume_n, args=(q, items // consumers)) for _ in range(consumers)]
    ps += [mp.Process(target=produce_ints, args=(q, go, items // producers))
           for _ in range(producers)]
    for p in ps:
        p.start()
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
        assert p.exitcode == 0
    return items / (time.perf_counter() - t0)


def identity(x):
    return x


def seed_func(i):
    pass    # the seeds' func(i), without its print


def pool_map_ms(n, chunksize, workers):
    """The steady state of a program that maps repeatedly: two untimed maps
    of the same size first (as mpxx's side), then the mean of three. One
    result list alive at a time, as on mpxx's side (peak RSS)."""
    with mp.Pool(workers) as pool:
        for _ in range(2):
            pool.map(identity, range(n), chunksize)
        t0 = time.perf_counter()
        for _ in range(3):
            v = pool.map(identity, range(n), chunksize)
            assert len(v) == n and v[-1] == n - 1
            del v
        return (time.perf_counter() - t0) * 1e3 / 3


def pool_map_once_ms(n, chunksize, workers):
    """As mpxx_bench's map_curve: a Pool(workers) warmed by one map of 100
    items, then max(1, 10000 // n) maps of range(n): ms per map."""
    with mp.Pool(workers) as pool:
        pool.map(identity, range(100), chunksize)
        times = max(1, 10000 // n)
        t0 = time.perf_counter()
        for _ in range(times):
            v = pool.map(identity, range(n), chunksize)
            assert len(v) == n and v[-1] == n - 1
            del v
        return (time.perf_counter() - t0) * 1e3 / times


def pool_apply_us(n, workers):
    with mp.Pool(workers) as pool:
        for i in range(100):
            pool.apply_async(identity, (i,)).get()
        t0 = time.perf_counter()
        for i in range(n):
            assert pool.apply_async(identity, (i,)).get() == i
        return (time.perf_counter() - t0) * 1e6 / n


def pool_lifecycle_us(n):
    def once():
        pool = mp.Pool(2)
        assert pool.apply(identity, (7,)) == 7
        pool.close()
        pool.join()
    once()
    t0 = time.perf_counter()
    for _ in range(n):
        once()
    return (time.perf_counter() - t0) * 1e6 / n


def seed_processes_ms(n):
    t0 = time.perf_counter()
    ps = []
    for i in range(n):
        p = mp.Process(target=seed_func, args=(i,))
        ps.append(p)
        p.start()
    for p in ps:
        p.join()
    return (time.perf_counter() - t0) * 1e3


def seed_pool_ms(procs, tasks):
    t0 = time.perf_counter()
    p = mp.Pool(procs)
    for i in range(tasks):
        p.apply_async(seed_func, args=(i,))
    p.close()
    p.join()
    return (time.perf_counter() - t0) * 1e3

def dict_ops_child(d, n, conn):
    for i in range(100):
        d['k'] = i
        d['k']
    t0 = time.perf_counter()
    for i in range(n):
        d['k'] = i
        assert d['k'] == i
    conn.send((time.perf_counter() - t0) * 1e6 / (2 * n))


def manager_dict_op_us(n):
    with mp.Manager() as m:
        d = m.dict()
        a, b = mp.Pipe()
        p = mp.Process(target=dict_ops_child, args=(d, n, b))
        p.start()
        r = a.recv()
        p.join()
        return r


def manager_lifecycle_us(n):
    def once():
        with mp.Manager() as m:
            d = m.dict()
            d['k'] = 1
    once()
    t0 = time.perf_counter()
    for _ in range(n):
        once()
    return (time.perf_counter() - t0) * 1e6 / n


# name -> function(args): args are the optional integers after the name.
WORKLOADS = {
    'process_fork': lambda a: start_join_us('fork', arg(a, 0, 200)),
    'process_spawn': lambda a: start_join_us('spawn', arg(a, 0, 30)),
    'process_forkserver': lambda a: start_join_us('forkserver', arg(a, 0, 30)),
    'lock_uncontended': lambda a: lock_uncontended_ns(),
    'value_contended': lambda a: value_contended_ns(),
    'shm_100mib': lambda a: shm_gbps(),
    'pipe_pingpong': lambda a: pipe_pingpong_us(),
    'pipe_100mib': lambda a: pipe_100mib_gbps(),
    'queue_small': lambda a: queue_small_items_per_s(),
    'queue_kib': lambda a: queue_kib_gbps(),
    'queue_100mib': lambda a: queue_large_gbps(SHM_BYTES),
    'queue_16mib': lambda a: queue_large_gbps(16 << 20),
    'queue_grid': lambda a: queue_grid_items_per_s(arg(a, 0, 1), arg(a, 1, 1), arg(a, 2, 100_000)),
    'pool_map': lambda a: pool_map_ms(arg(a, 0, 1_000_000), None, arg(a, 1, 2)),
    'pool_map_chunk1': lambda a: pool_map_ms(arg(a, 0, 100_000), 1, arg(a, 1, 2)),
    'map_curve': lambda a: pool_map_once_ms(arg(a, 0, 1_000_000), None, arg(a, 1, 2)),
    'map_curve_chunk1': lambda a: pool_map_once_ms(arg(a, 0, 100_000), 1, arg(a, 1, 2)),
    'pool_apply': lambda a: pool_apply_us(arg(a, 0, 2000), arg(a, 1, 2)),
    'pool_lifecycle': lambda a: pool_lifecycle_us(arg(a, 0, 20)),
    'seed_processes': lambda a: seed_processes_ms(arg(a, 0, 100)),
    'seed_pool': lambda a: seed_pool_ms(arg(a, 0, 4), arg(a, 1, 20)),
    'manager_dict_op': lambda a: manager_dict_op_us(arg(a, 0, 5000)),
    'manager_lifecycle': lambda a: manager_lifecycle_us(arg(a, 0, 20)),
}


def peak_rss_kb():
    """This process's own peak RSS in KiB: VmHWM of /proc/self/status."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))


def arg(args, i, default):
    return args[i] if i < len(args) else default


def main():
    try:
        name = sys.argv[1]
        args = [int(x) for x in sys.argv[2:]]
        if name not in WORKLOADS or any(x <= 0 for x in args):
            raise ValueError
    except (IndexError, ValueError):
        sys.exit('usage: cpython_bench.py WORKLOAD [N...] (N > 0)\nworkloads: %s'
                 % ' '.join(WORKLOADS))
    mp.set_start_method('fork')
    value = WORKLOADS[name](args)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({'workload': name, 'value': value, 'args': args, 'rss_kb': peak_rss_kb(),
                      'children_rss_kb': children}))


if __name__ == '__main__':
    main()
