// The mpxx side of ./run bench, and the machine's limits.
//
//   mpxx_bench WORKLOAD [N...]
//
// runs one measurement of WORKLOAD and prints one JSON line
// {"workload": ..., "value": ..., "args": [...], "rss_kb": ..., "children_rss_kb": ...}
// in the workload's unit (see bench/run.py, which runs this and
// bench/cpython_bench.py interleaved and compares). rss_kb is this process's
// peak RSS (VmHWM: ru_maxrss would count the launcher's peak, which survives
// exec), children_rss_kb the largest peak of the children it waited for
// (getrusage's ru_maxrss), both in KiB, taken after the workload has joined
// every process it started. The optional integers N are the workload's parameters (for the
// process workloads: how many processes in the timed batch); without them
// each workload uses its default. A wrong result (a child that did not exit
// with 0, a wrong count) is reported on stderr with exit status 1, so that
// run.py never records a number it cannot trust.
//
// Adding a workload: a function returning the value, and one line in the
// table in main().
#include <pthread.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <ranges>
#include <string>
#include <vector>

#include "mpxx/mpxx.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double elapsed(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

[[noreturn]] void fail(const char* what, long detail) {
  std::fprintf(stderr, "mpxx_bench: %s (%ld)\n", what, detail);
  std::exit(1);
}

void nothing() {}

// ------------------------------------------------------- process start+join

void start_join_one(const mpxx::Context& ctx) {
  mpxx::Process p({.context = &ctx}, nothing);
  p.start();
  p.join();
  if (p.exitcode() != 0) fail("child exit code", p.exitcode().value_or(-1000));
}

// Mean wall time of Process(nothing).start() + join(), one process at a
// time, over a batch of n. One untimed process first: it starts the
// forkserver (a one-time cost, as CPython's side excludes too) and faults in
// the code paths.
double start_join_us(mpxx::StartMethod m, long n) {
  const mpxx::Context& ctx = mpxx::get_context(m);
  start_join_one(ctx);
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) start_join_one(ctx);
  return elapsed(t0) * 1e6 / n;
}

void raw_fork_one() {
  pid_t pid = ::fork();
  if (pid < 0) fail("fork failed, errno", errno);
  if (pid == 0) ::_exit(0);
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("raw child status", st);
}

// The machine's limit for start+join: fork() a child that _exit(0)s at once,
// waitpid() for it. Same binary, so the same address space to copy.
double raw_fork_us(long n) {
  raw_fork_one();
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) raw_fork_one();
  return elapsed(t0) * 1e6 / n;
}

// The limit for a Pool(2)'s lifecycle: two raw fork()+waitpid, one after
// the other. us per pair.
double raw_fork_pair_us(long n) {
  raw_fork_one();
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    raw_fork_one();
    raw_fork_one();
  }
  return elapsed(t0) * 1e6 / static_cast<double>(n);
}

// ------------------------------------------------------------------- locks

double lock_uncontended_ns() {
  mpxx::Lock l;
  constexpr int kN = 20'000'000;
  auto t0 = Clock::now();
  for (int i = 0; i < kN; ++i) {
    l.acquire();
    l.release();
  }
  return elapsed(t0) * 1e9 / kN;
}

constexpr int kIncrements = 1'000'000;

void add_to_value(mpxx::Value<long> v, int n) {
  auto& lock = v.get_lock();
  for (int i = 0; i < n; ++i) {
    std::scoped_lock g(lock);
    v.get_obj() += 1;
  }
}

// Two processes, each `value += 1` under the value's lock.
double value_contended_ns() {
  mpxx::Value<long> v(0);
  auto t0 = Clock::now();
  mpxx::Process a(add_to_value, v, kIncrements), b(add_to_value, v, kIncrements);
  a.start();
  b.start();
  a.join();
  b.join();
  double s = elapsed(t0);
  if (v.value() != 2L * kIncrements) std::fprintf(stderr, "wrong count %ld\n", v.value());
  return s * 1e9 / (2.0 * kIncrements);
}

// The same with a raw process-shared robust pthread mutex: the limit.
double pthread_contended_ns() {
  struct Shared {
    pthread_mutex_t m;
    long counter;
  };
  auto* sh = static_cast<Shared*>(
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  pthread_mutexattr_t at;
  pthread_mutexattr_init(&at);
  pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&sh->m, &at);
  sh->counter = 0;
  auto t0 = Clock::now();
  pid_t kids[2];
  for (pid_t& k : kids) {
    k = ::fork();
    if (k == 0) {
      for (int i = 0; i < kIncrements; ++i) {
        pthread_mutex_lock(&sh->m);
        sh->counter++;
        pthread_mutex_unlock(&sh->m);
      }
      ::_exit(0);
    }
  }
  for (pid_t k : kids) ::waitpid(k, nullptr, 0);
  double s = elapsed(t0);
  ::munmap(sh, sizeof(Shared));
  return s * 1e9 / (2.0 * kIncrements);
}

// ---------------------------------------------------------- shared memory

constexpr std::size_t kShmBytes = 100u << 20;

void read_all(mpxx::SharedMemory shm, mpxx::RawValue<double> seconds) {
  std::vector<unsigned char> out(kShmBytes);
  std::memset(out.data(), 1, out.size());  // fault the pages in before timing
  auto t0 = Clock::now();
  std::memcpy(out.data(), shm.buf().data(), kShmBytes);
  seconds.value() = elapsed(t0);
  if (out[kShmBytes / 2] != 0x5a) std::fprintf(stderr, "wrong data\n");
}

// 100 MiB written into shared memory by the parent and read by a child;
// GB/s of the two copies together (process start excluded).
double shm_gbps() {
  auto shm = mpxx::SharedMemory::create(kShmBytes);
  std::memset(shm.buf().data(), 0, kShmBytes);  // fault in, as CPython's side does
  std::vector<unsigned char> src(kShmBytes, 0x5a);
  auto t0 = Clock::now();
  std::memcpy(shm.buf().data(), src.data(), kShmBytes);
  double write_s = elapsed(t0);
  mpxx::RawValue<double> read_s(0);
  mpxx::Process p(read_all, shm, read_s);
  p.start();
  p.join();
  return 2.0 * kShmBytes / (write_s + read_s.value()) / 1e9;
}

// The limit: the same two 100 MiB copies within one process.
double memcpy_gbps() {
  std::vector<unsigned char> src(kShmBytes, 0x5a), mid(kShmBytes, 0), dst(kShmBytes, 1);
  auto t0 = Clock::now();
  std::memcpy(mid.data(), src.data(), kShmBytes);
  std::memcpy(dst.data(), mid.data(), kShmBytes);
  double s = elapsed(t0);
  if (dst[kShmBytes / 2] != 0x5a) std::fprintf(stderr, "wrong data\n");
  return 2.0 * kShmBytes / s / 1e9;
}

// The limit of any large receive (100 MiB, 16 MiB): the value received
// lives in fresh memory, which the kernel faults in and zeroes on first
// touch. One copy from a warm buffer into a fresh mapping advised to use
// huge pages (the best case a receiver can have).
double fresh_copy_gbps(std::size_t bytes) {
  std::vector<unsigned char> src(bytes, 0x5a);
  auto t0 = Clock::now();
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("mmap", 0);
  ::madvise(p, bytes, MADV_HUGEPAGE);
  std::memcpy(p, src.data(), bytes);
  double s = elapsed(t0);
  if (static_cast<unsigned char*>(p)[bytes / 2] != 0x5a) std::fprintf(stderr, "wrong data\n");
  ::munmap(p, bytes);
  return bytes / s / 1e9;
}

// ------------------------------------------------------------------ pipes

void echo_until_negative(mpxx::Connection c) {
  for (;;) {
    int v = c.recv<int>();
    c.send(v);
    if (v < 0) return;
  }
}

// Median-free mean round trip of a small value between two processes.
double pipe_pingpong_us() {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(echo_until_negative, b);
  p.start();
  b.close();
  for (int i = 0; i < 1000; ++i) {  // warm up: both sides running
    a.send(i);
    a.recv<int>();
  }
  constexpr int kN = 20000;
  auto t0 = Clock::now();
  for (int i = 0; i < kN; ++i) {
    a.send(i);
    a.recv<int>();
  }
  double us = elapsed(t0) * 1e6 / kN;
  a.send(-1);
  a.recv<int>();
  p.join();
  return us;
}

// The machine's limit for a ping-pong: two processes handing a turn back
// and forth through one shared futex word, spinning briefly before they
// sleep (as mpxx's waits do).
double futex_pingpong_us() {
  auto* word = static_cast<std::atomic<std::uint32_t>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (word) std::atomic<std::uint32_t>(0);
  constexpr int kN = 20000;
  auto wait_for = [word](std::uint32_t want) {
    for (int spin = 0; word->load(std::memory_order_acquire) != want; ++spin) {
      if (spin < 2000) {
        __builtin_ia32_pause();
        continue;
      }
      std::uint32_t cur = word->load(std::memory_order_acquire);
      if (cur != want) ::syscall(SYS_futex, word, FUTEX_WAIT, cur, nullptr, nullptr, 0);
    }
  };
  auto hand = [word](std::uint32_t v) {
    word->store(v, std::memory_order_release);
    ::syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  };
  pid_t pid = ::fork();
  if (pid == 0) {
    for (std::uint32_t i = 0; i < 2 * kN; i += 2) {
      wait_for(i + 1);
      hand(i + 2);
    }
    ::_exit(0);
  }
  auto t0 = Clock::now();
  for (std::uint32_t i = 0; i < 2 * kN; i += 2) {
    hand(i + 1);
    wait_for(i + 2);
  }
  double us = elapsed(t0) * 1e6 / kN;
  ::waitpid(pid, nullptr, 0);
  ::munmap(word, 4096);
  return us;
}

void send_100mib(mpxx::Connection c) {
  std::vector<unsigned char> v(kShmBytes, 0x5a);
  c.send(0);      // ready: the value is built
  c.recv<int>();  // go
  c.send(v);
}

// 100 MiB sent by a child and received by the parent, in GB/s.
double pipe_100mib_gbps() {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_100mib, b);
  p.start();
  b.close();
  a.recv<int>();  // the child has built its value: time the transfer alone
  auto t0 = Clock::now();
  a.send(1);
  auto v = a.recv<std::vector<unsigned char>>();
  double s = elapsed(t0);
  p.join();
  if (v.size() != kShmBytes || v[kShmBytes / 2] != 0x5a) std::fprintf(stderr, "wrong data\n");
  return kShmBytes / s / 1e9;
}

// ------------------------------------------------------------------ queues

constexpr int kQueueItems = 2'000'000;

void consume_ints(mpxx::Queue<int> q, int n) {
  long sum = 0;
  for (int i = 0; i < n; ++i) sum += q.get();
  if (sum < 0) std::fprintf(stderr, "impossible\n");
}

// One producer (this process), one consumer process, small items: items/s.
double queue_small_items_per_s() {
  mpxx::Queue<int> q;
  mpxx::Process c(consume_ints, q, kQueueItems);
  c.start();
  auto t0 = Clock::now();
  for (int i = 0; i < kQueueItems; ++i) q.put(i);
  c.join();
  return kQueueItems / elapsed(t0);
}

constexpr int kKiBItems = 200'000;

void consume_kib(mpxx::Queue<std::string> q, int n) {
  std::size_t total = 0;
  for (int i = 0; i < n; ++i) total += q.get().size();
  if (total != static_cast<std::size_t>(n) * 1024) std::fprintf(stderr, "wrong size\n");
}

// 1 KiB strings, one producer, one consumer process: GB/s.
double queue_kib_gbps() {
  mpxx::Queue<std::string> q;
  std::string item(1024, 'k');
  mpxx::Process c(consume_kib, q, kKiBItems);
  c.start();
  auto t0 = Clock::now();
  for (int i = 0; i < kKiBItems; ++i) q.put(item);
  c.join();
  return 1024.0 * kKiBItems / elapsed(t0) / 1e9;
}

void put_large(mpxx::Queue<std::vector<unsigned char>> q, mpxx::Event ready, mpxx::Event go,
               std::size_t bytes) {
  std::vector<unsigned char> v(bytes, 0x5a);
  ready.set();
  go.wait();
  q.put(v);
}

// A value of `bytes` (100 MiB, 16 MiB) put by a child and taken by the
// parent: GB/s.
double queue_large_gbps(std::size_t bytes) {
  mpxx::Queue<std::vector<unsigned char>> q;
  mpxx::Event ready, go;
  mpxx::Process p(put_large, q, ready, go, bytes);
  p.start();
  ready.wait();  // the child has built its value: time the transfer alone
  auto t0 = Clock::now();
  go.set();
  auto v = q.get();
  double s = elapsed(t0);
  p.join();
  if (v.size() != bytes || v[bytes / 2] != 0x5a) std::fprintf(stderr, "wrong data\n");
  return bytes / s / 1e9;
}

void produce_ints(mpxx::Queue<int> q, mpxx::Event go, long n) {
  go.wait();
  for (long i = 0; i < n; ++i) q.put(static_cast<int>(i));
}

void consume_count(mpxx::Queue<int> q, long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += q.get();
  if (sum < 0) fail("impossible sum", sum);
}

// `producers` processes put `items` small ints in all into one Queue,
// `consumers` processes take them (each its share): items/s from the start
// signal until every process has been joined. `items` must divide evenly.
double queue_grid_items_per_s(long producers, long consumers, long items) {
  if (items % producers != 0 || items % consumers != 0) fail("items not divisible", items);
  mpxx::Queue<int> q;
  mpxx::Event go;
  std::vector<mpxx::Process> ps;
  for (long i = 0; i < consumers; ++i) ps.emplace_back(consume_count, q, items / consumers);
  for (long i = 0; i < producers; ++i) ps.emplace_back(produce_ints, q, go, items / producers);
  for (auto& p : ps) p.start();
  auto t0 = Clock::now();
  go.set();
  for (auto& p : ps) {
    p.join();
    if (p.exitcode() != 0) fail("child exit code", p.exitcode().value_or(-1000));
  }
  return static_cast<double>(items) / elapsed(t0);
}

// ------------------------------------------------------------------- Pool

long identity(long x) { return x; }
void seed_func(long) {}  // the seeds' func(i), without its print

// map(identity, range(n)) on a warm Pool(workers): the steady state of a
// program that maps repeatedly. Two untimed maps of the same size first (on
// both sides), then the mean of three: ms per map.
double pool_map_ms(long n, long chunksize, long workers) {
  mpxx::Pool pool(static_cast<int>(workers));
  const mpxx::MapOptions opts{.chunksize = static_cast<std::size_t>(chunksize)};
  for (int i = 0; i < 2; ++i) pool.map(identity, std::views::iota(0L, n), opts);
  auto t0 = Clock::now();
  for (int i = 0; i < 3; ++i) {
    auto v = pool.map(identity, std::views::iota(0L, n), opts);
    if (static_cast<long>(v.size()) != n || v[static_cast<std::size_t>(n - 1)] != n - 1)
      fail("map result", static_cast<long>(v.size()));
  }
  return elapsed(t0) * 1e3 / 3;
}

// How one map's cost grows with n (./run bench --curves): a Pool(workers)
// warmed by one map of 100 items, then map(identity, range(n)) repeated
// max(1, 10000 / n) times: ms per map. The peak RSS is that of one map.
double pool_map_once_ms(long n, long chunksize, long workers) {
  mpxx::Pool pool(static_cast<int>(workers));
  const mpxx::MapOptions opts{.chunksize = static_cast<std::size_t>(chunksize)};
  pool.map(identity, std::views::iota(0L, 100L), opts);
  const long times = std::max(1L, 10000 / n);
  auto t0 = Clock::now();
  for (long i = 0; i < times; ++i) {
    auto v = pool.map(identity, std::views::iota(0L, n), opts);
    if (static_cast<long>(v.size()) != n || v[static_cast<std::size_t>(n - 1)] != n - 1)
      fail("map result", static_cast<long>(v.size()));
  }
  return elapsed(t0) * 1e3 / static_cast<double>(times);
}

// Sequential apply_async(identity, i).get(): mean round trip in us.
double pool_apply_us(long n, long workers) {
  mpxx::Pool pool(static_cast<int>(workers));
  for (long i = 0; i < 100; ++i) pool.apply_async(identity, i).get();
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i)
    if (pool.apply_async(identity, i).get() != i) fail("apply result", i);
  return elapsed(t0) * 1e6 / static_cast<double>(n);
}

// Pool(2) create + one task + close + join: mean us over n.
double pool_lifecycle_us(long n) {
  auto once = [] {
    mpxx::Pool pool(2);
    if (pool.apply(identity, 7L) != 7) fail("apply result", 0);
    pool.close();
    pool.join();
  };
  once();
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) once();
  return elapsed(t0) * 1e6 / static_cast<double>(n);
}

// Seeds 002 §2.9.2, first half: 100 Processes running func(i), all started,
// then all joined. ms.
double seed_processes_ms(long n) {
  auto t0 = Clock::now();
  std::vector<mpxx::Process> ps;
  for (long i = 0; i < n; ++i) {
    ps.emplace_back(seed_func, i);
    ps.back().start();
  }
  for (auto& p : ps) p.join();
  return elapsed(t0) * 1e3;
}

// ... second half: Pool(4), 20 apply_async(func, i), close, join. ms.
double seed_pool_ms(long procs, long tasks) {
  auto t0 = Clock::now();
  mpxx::Pool pool(static_cast<int>(procs));
  for (long i = 0; i < tasks; ++i) pool.apply_async(seed_func, i);
  pool.close();
  pool.join();
  return elapsed(t0) * 1e3;
}

// A child sets and reads back a managed dict's item n times: us per
// operation (a set or a get), measured in the child, sent back by Pipe.
void dict_ops_child(mpxx::DictProxy<std::string, long> d, long n, mpxx::Connection conn) {
  for (long i = 0; i < 100; ++i) {
    d["k"] = i;
    (void)d.at("k");
  }
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    d["k"] = i;
    if (d.at("k") != i) fail("dict value", i);
  }
  conn.send(elapsed(t0) * 1e6 / static_cast<double>(2 * n));
}

double manager_dict_op_us(long n) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, long>();
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(dict_ops_child, d, n, b);
  p.start();
  double r = a.recv<double>();
  p.join();
  return r;
}

// Manager() + dict() + one item + shutdown: mean us over n.
double manager_lifecycle_us(long n) {
  auto once = [] {
    auto m = mpxx::Manager();
    auto d = m.dict<std::string, long>();
    d["k"] = 1;
  };
  once();
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) once();
  return elapsed(t0) * 1e6 / static_cast<double>(n);
}

// This program's own peak RSS in KiB: VmHWM of /proc/self/status.
long peak_rss_kb() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) fail("open /proc/self/status, errno", errno);
  char line[256];
  long kb = -1;
  while (kb < 0 && std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, "VmHWM: %ld kB", &kb) != 1) kb = -1;
  std::fclose(f);
  if (kb < 0) fail("no VmHWM in /proc/self/status", 0);
  return kb;
}

using Args = std::vector<long>;

// args[i], or `def` when run.py passed fewer parameters.
long arg(const Args& a, std::size_t i, long def) { return i < a.size() ? a[i] : def; }

}  // namespace

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  using mpxx::StartMethod;
  // name -> measurement; parameters (argv[2...]) are optional.
  const std::map<std::string, std::function<double(const Args&)>> workloads = {
      {"process_fork", [](const Args& a) { return start_join_us(StartMethod::fork, arg(a, 0, 200)); }},
      {"process_spawn", [](const Args& a) { return start_join_us(StartMethod::spawn, arg(a, 0, 30)); }},
      {"process_forkserver",
       [](const Args& a) { return start_join_us(StartMethod::forkserver, arg(a, 0, 30)); }},
      {"raw_fork", [](const Args& a) { return raw_fork_us(arg(a, 0, 200)); }},
      {"raw_fork_pair", [](const Args& a) { return raw_fork_pair_us(arg(a, 0, 100)); }},
      {"lock_uncontended", [](const Args&) { return lock_uncontended_ns(); }},
      {"value_contended", [](const Args&) { return value_contended_ns(); }},
      {"pthread_contended", [](const Args&) { return pthread_contended_ns(); }},
      {"shm_100mib", [](const Args&) { return shm_gbps(); }},
      {"memcpy_100mib", [](const Args&) { return memcpy_gbps(); }},
      {"fresh_copy_100mib", [](const Args&) { return fresh_copy_gbps(kShmBytes); }},
      {"fresh_copy_16mib", [](const Args&) { return fresh_copy_gbps(std::size_t{16} << 20); }},
      {"pipe_pingpong", [](const Args&) { return pipe_pingpong_us(); }},
      {"futex_pingpong", [](const Args&) { return futex_pingpong_us(); }},
      {"pipe_100mib", [](const Args&) { return pipe_100mib_gbps(); }},
      {"queue_small", [](const Args&) { return queue_small_items_per_s(); }},
      {"queue_kib", [](const Args&) { return queue_kib_gbps(); }},
      {"queue_100mib", [](const Args&) { return queue_large_gbps(kShmBytes); }},
      {"queue_16mib", [](const Args&) { return queue_large_gbps(std::size_t{16} << 20); }},
      {"queue_grid",
       [](const Args& a) { return queue_grid_items_per_s(arg(a, 0, 1), arg(a, 1, 1), arg(a, 2, 1000000)); }},
      {"pool_map", [](const Args& a) { return pool_map_ms(arg(a, 0, 1000000), 0, arg(a, 1, 2)); }},
      {"pool_map_chunk1", [](const Args& a) { return pool_map_ms(arg(a, 0, 100000), 1, arg(a, 1, 2)); }},
      {"map_curve", [](const Args& a) { return pool_map_once_ms(arg(a, 0, 1000000), 0, arg(a, 1, 2)); }},
      {"map_curve_chunk1",
       [](const Args& a) { return pool_map_once_ms(arg(a, 0, 100000), 1, arg(a, 1, 2)); }},
      {"pool_apply", [](const Args& a) { return pool_apply_us(arg(a, 0, 2000), arg(a, 1, 2)); }},
      {"pool_lifecycle", [](const Args& a) { return pool_lifecycle_us(arg(a, 0, 20)); }},
      {"seed_processes", [](const Args& a) { return seed_processes_ms(arg(a, 0, 100)); }},
      {"seed_pool", [](const Args& a) { return seed_pool_ms(arg(a, 0, 4), arg(a, 1, 20)); }},
      {"manager_dict_op", [](const Args& a) { return manager_dict_op_us(arg(a, 0, 5000)); }},
      {"manager_lifecycle", [](const Args& a) { return manager_lifecycle_us(arg(a, 0, 20)); }},
  };
  Args args;
  bool ok = argc >= 2 && workloads.count(argv[1]);
  for (int i = 2; ok && i < argc; ++i) {
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(argv[i], &end, 10);
    ok = errno == 0 && end != argv[i] && *end == '\0' && v > 0;
    args.push_back(v);
  }
  if (!ok) {
    std::fprintf(stderr, "usage: mpxx_bench WORKLOAD [N...]   (N > 0)\nworkloads:");
    for (auto& [name, f] : workloads) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  double v = workloads.at(argv[1])(args);
  std::printf("{\"workload\": \"%s\", \"value\": %.6g, \"args\": [", argv[1], v);
  for (std::size_t i = 0; i < args.size(); ++i) std::printf("%s%ld", i ? ", " : "", args[i]);
  rusage children{};
  ::getrusage(RUSAGE_CHILDREN, &children);
  std::printf("], \"rss_kb\": %ld, \"children_rss_kb\": %ld}\n", peak_rss_kb(), children.ru_maxrss);
  return 0;
}
