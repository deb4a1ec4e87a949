"""The CPython side of ./run bench: the same workloads with CPython's
multiprocessing. Usage: python3 cpython_bench.py WORKLOAD; prints one JSON
line {"workload": ..., "value": ...} in the workload's unit."""
import json
import multiprocessing as mp
import sys
import time
from multiprocessing import shared_memory

INCREMENTS = 100_000          # per process; CPython is slow, the unit is per op
SHM_BYTES = 100 << 20


def nothing():
    pass


def start_join_us(method, n):
    ctx = mp.get_context(method)
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
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
    c.recv()
    c.send_bytes(data)


def pipe_100mib_gbps():
    a, b = mp.Pipe()
    p = mp.Process(target=send_100mib, args=(b,))
    p.start()
    b.close()
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


def put_100mib(q, go):
    data = b'\x5a' * SHM_BYTES
    go.wait()
    q.put(data)


def queue_100mib_gbps():
    q = mp.Queue()
    go = mp.Event()
    p = mp.Process(target=put_100mib, args=(q, go))
    p.start()
    t0 = time.perf_counter()
    go.set()
    data = q.get()
    s = time.perf_counter() - t0
    p.join()
    assert len(data) == SHM_BYTES
    return SHM_BYTES / s / 1e9


WORKLOADS = {
    'process_fork': lambda: start_join_us('fork', 100),
    'process_spawn': lambda: start_join_us('spawn', 5),
    'process_forkserver': lambda: start_join_us('forkserver', 30),
    'lock_uncontended': lock_uncontended_ns,
    'value_contended': value_contended_ns,
    'shm_100mib': shm_gbps,
    'pipe_pingpong': pipe_pingpong_us,
    'pipe_100mib': pipe_100mib_gbps,
    'queue_small': queue_small_items_per_s,
    'queue_kib': queue_kib_gbps,
    'queue_100mib': queue_100mib_gbps,
}

if __name__ == '__main__':
    if len(sys.argv) != 2 or sys.argv[1] not in WORKLOADS:
        sys.exit('usage: cpython_bench.py WORKLOAD (%s)' % ', '.join(WORKLOADS))
    mp.set_start_method('fork')
    value = WORKLOADS[sys.argv[1]]()
    print(json.dumps({'workload': sys.argv[1], 'value': value}))
