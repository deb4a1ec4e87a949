// The mpxx side of ./run bench, and the machine's limits.
//
//   mpxx_bench WORKLOAD
//
// runs one measurement of WORKLOAD and prints one JSON line
// {"workload": ..., "value": ...} in the workload's unit (see bench/run.py,
// which runs this and bench/cpython_bench.py interleaved and compares).
#include <pthread.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "mpxx/mpxx.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double elapsed(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void nothing() {}

// ------------------------------------------------------- process start+join

double start_join_us(mpxx::StartMethod m, int n) {
  const mpxx::Context& ctx = mpxx::get_context(m);
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    mpxx::Process p({.context = &ctx}, nothing);
    p.start();
    p.join();
  }
  return elapsed(t0) * 1e6 / n;
}

double raw_fork_us(int n) {
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    int st;
    ::waitpid(pid, &st, 0);
  }
  return elapsed(t0) * 1e6 / n;
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
  c.recv<int>();  // go
  c.send(v);
}

// 100 MiB sent by a child and received by the parent, in GB/s.
double pipe_100mib_gbps() {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_100mib, b);
  p.start();
  b.close();
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

void put_100mib(mpxx::Queue<std::vector<unsigned char>> q, mpxx::Event go) {
  std::vector<unsigned char> v(kShmBytes, 0x5a);
  go.wait();
  q.put(v);
}

// 100 MiB put by a child and taken by the parent: GB/s.
double queue_100mib_gbps() {
  mpxx::Queue<std::vector<unsigned char>> q;
  mpxx::Event go;
  mpxx::Process p(put_100mib, q, go);
  p.start();
  auto t0 = Clock::now();
  go.set();
  auto v = q.get();
  double s = elapsed(t0);
  p.join();
  if (v.size() != kShmBytes) std::fprintf(stderr, "wrong data\n");
  return kShmBytes / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  const std::map<std::string, std::function<double()>> workloads = {
      {"process_fork", [] { return start_join_us(mpxx::StartMethod::fork, 300); }},
      {"process_spawn", [] { return start_join_us(mpxx::StartMethod::spawn, 40); }},
      {"process_forkserver", [] { return start_join_us(mpxx::StartMethod::forkserver, 100); }},
      {"raw_fork", [] { return raw_fork_us(300); }},
      {"lock_uncontended", lock_uncontended_ns},
      {"value_contended", value_contended_ns},
      {"pthread_contended", pthread_contended_ns},
      {"shm_100mib", shm_gbps},
      {"memcpy_100mib", memcpy_gbps},
      {"pipe_pingpong", pipe_pingpong_us},
      {"futex_pingpong", futex_pingpong_us},
      {"pipe_100mib", pipe_100mib_gbps},
      {"queue_small", queue_small_items_per_s},
      {"queue_kib", queue_kib_gbps},
      {"queue_100mib", queue_100mib_gbps},
  };
  if (argc != 2 || !workloads.count(argv[1])) {
    std::fprintf(stderr, "usage: mpxx_bench WORKLOAD\nworkloads:");
    for (auto& [name, f] : workloads) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  double v = workloads.at(argv[1])();
  std::printf("{\"workload\": \"%s\", \"value\": %.6g}\n", argv[1], v);
  return 0;
}
