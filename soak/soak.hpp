// soak/soak.hpp - what the soak's parts share: the seeded random source, the
// figures of the final table, the chaos thread's victim registry, the
// blocking-call timer and the message format every checked path carries.
//
// The soak runs several workloads at once for a given time while a chaos
// thread SIGKILLs and SIGSTOP/SIGCONTs the processes they registered as
// victims, then proves from ledgers that nothing was lost, duplicated or torn
// and that every resource came back (docs/reliability.md).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mpxx/mpxx.hpp"

namespace soak {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ------------------------------------------------------------------ figures

// Every counter of the table. One block of shared memory, made before any
// child exists, so forked children add to the same counters (atomically)
// and a killed child's increments so far stay counted.
enum Fig : int {
  // operations
  op_process, op_pipe_msg, op_queue_msg, op_jq_msg, op_sync, op_shm, op_pool_task, op_manager, op_remote,
  // faults
  fault_kill, fault_stop, fault_terminate,
  // checks
  checked_msgs, checked_tasks, tasks_ok, tasks_lost_worker, tasks_own_error,
  allowed_absent,  // messages absent because an endpoint holding them was killed
  // must be zero
  lost, duplicated, torn, wrong_result, callback_twice, task_vanished, wrong_exitcode, unexpected_error,
  overruns, hangs, invariant_broken,
  kFigCount
};

struct Figures {
  std::atomic<std::int64_t> v[kFigCount];
  std::atomic<std::int64_t> max_overrun_ns;
};
Figures& figs();  // valid in the parent and in every forked child
inline void add(Fig f, std::int64_t n = 1) { figs().v[f].fetch_add(n, std::memory_order_relaxed); }
inline std::int64_t get(Fig f) { return figs().v[f].load(); }
void init_figures();

// Prints what went wrong (from the parent or a child), for the reader of a
// failed run; `f` is the must-be-zero figure it counts in.
void fail(Fig f, const std::string& what);
// "workload seed S" of the round this thread (or this child's parent
// thread) runs: every failure names the round that replays it.
extern thread_local std::string current_round;

// ---------------------------------------------------------- randomness

// Each workload round gets its own generator, seeded from the run's seed and
// the round's number, so one seed replays the same choices (the timing of
// the chaos thread is the only source of variation).
struct Rng {
  std::mt19937_64 g;
  explicit Rng(std::uint64_t seed) : g(seed) {}
  std::uint64_t below(std::uint64_t n) { return n ? g() % n : 0; }
  std::int64_t between(std::int64_t lo, std::int64_t hi) { return lo + static_cast<std::int64_t>(below(hi - lo + 1)); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(g) < p; }
};

// ------------------------------------------------------------ the chaos

// Processes the chaos thread may signal. Only processes this soak started
// are registered, through a pidfd (a reused pid is never signalled), and a
// process is unregistered - continued first if stopped - before it is
// joined. Thread-safe; used by the parent only.
class Victims {
 public:
  // False (and nothing registered) if `pid` is not our child any more.
  bool add(pid_t pid, const char* kind);
  // Continues `pid` if the chaos stopped it; no signal reaches it after.
  void remove(pid_t pid);
  // Was it SIGKILLed by the chaos?
  bool killed(pid_t pid) const;
  void clear_killed(pid_t pid);
};
Victims& victims();

// Registers a started Process's pid; unregisters it (continuing it) when
// the guard ends, so that a join after it never waits on a stopped child.
class VictimGuard {
 public:
  VictimGuard() = default;
  VictimGuard(pid_t pid, const char* kind) : pid_(pid) { victims().add(pid, kind); }
  VictimGuard(VictimGuard&& o) noexcept : pid_(o.pid_) { o.pid_ = 0; }
  VictimGuard& operator=(VictimGuard&& o) noexcept;
  ~VictimGuard() { release(); }
  void release() {
    if (pid_) victims().remove(pid_);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
};

void start_chaos(std::uint64_t seed, std::chrono::milliseconds period);
void stop_chaos();  // joins the thread; every stopped victim is continued

// ------------------------------------------------------- blocking calls

// How late a blocking call with a timeout may return before it counts as
// an overrun: the machine is shared and busy, so scheduling delays of a
// few hundred ms are normal.
inline constexpr auto kSlack = 2s;

// Runs `call` (a blocking call given `timeout`) and records how far past
// the timeout it returned. Usable in children.
template <class F>
auto timed(const char* what, std::chrono::nanoseconds timeout, F&& call) {
  struct Measure {
    const char* what;
    std::chrono::nanoseconds timeout;
    Clock::time_point t0 = Clock::now();
    ~Measure() {
      auto over = Clock::now() - t0 - timeout;
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(over).count();
      auto& m = figs().max_overrun_ns;
      for (auto cur = m.load(); ns > cur && !m.compare_exchange_weak(cur, ns);) {
      }
      if (over > kSlack) fail(overruns, std::string(what) + " returned " + std::to_string(ns / 1000000) +
                                            " ms after its timeout");
    }
  } m{what, std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)};
  return call();
}

// --------------------------------------------------------------- messages

// What every checked path carries: who sent it, its number on that path,
// and a payload whose length and checksum travel with it, so a torn
// message (a mix of two, or a truncated one) is detected.
struct Msg {
  std::uint32_t producer = 0;
  std::uint32_t seq = 0;
  std::uint64_t len = 0;
  std::uint64_t sum = 0;
  std::string payload;
  template <class A>
  void serialize(A& a) {
    a(producer, seq, len, sum, payload);
  }
};
std::uint64_t checksum(const std::string& s);
// A message of `len` bytes whose content depends on (producer, seq).
Msg make_msg(std::uint32_t producer, std::uint32_t seq, std::size_t len);
// A random length: mostly small, sometimes multi-MiB.
std::size_t msg_len(Rng& r, bool big_ok);
// True if the message is whole (length and checksum agree with the payload).
bool whole(const Msg& m);

// What arrived on a set of paths: one cell per (producer, seq), counting
// deliveries, in shared memory so consumers in children record into it.
// Producers record how many puts returned, so that the checker knows which
// messages must have arrived.
class Ledger {
 public:
  Ledger(int producers, int per_producer);
  // Called by whoever took message m off the path (parent or child).
  void delivered(const Msg& m);
  void sent(std::uint32_t producer, std::uint32_t seq_done);  // puts that returned so far
  std::uint32_t sent_count(std::uint32_t producer) const;
  // The producer stopped by itself (all sent, or it gave up after a put
  // raised Full): it has no message in flight.
  void finished(std::uint32_t producer);
  // Checks and counts into the figures. `may_lose` is how many messages
  // killed consumers may have taken without recording them. A producer that
  // did not finish was killed: its in-flight message may be absent.
  void check(const char* path, int may_lose);

 private:
  int producers_, per_;
  mpxx::RawArray<std::uint32_t> cells_;
  mpxx::RawArray<std::uint32_t> sent_;
  mpxx::RawArray<std::uint32_t> finished_;
};

// ---------------------------------------------------------------- children

// The Process options of every child the soak starts (fork: the targets are
// capturing lambdas).
mpxx::ProcessOptions child_options(const char* name);
// Runs `body` in the child, catching everything into the figures: a child
// never dies of an exception the soak did not expect.
void child_body(const char* what, const std::function<void()>& body);

// Joins p (unregistering it from the chaos first) and checks its exit code:
// 0, or -SIGKILL if the chaos killed it, or one of `also`.
void join_checked(mpxx::Process& p, VictimGuard& g, const char* what, std::vector<int> also = {});

// ---------------------------------------------------------------- workloads

struct Workload {
  const char* name;
  void (*round)(Rng& rng, Clock::time_point until);
};
std::vector<Workload> channel_workloads();
std::vector<Workload> sync_workloads();
std::vector<Workload> pool_workloads();
std::vector<Workload> manager_workloads();

}  // namespace soak
