// src/sys/futex.cpp - see futex.hpp.
#include "sys/futex.hpp"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>

#include "sys/fd.hpp"
#include "sys/process_identity.hpp"

namespace mpxx::detail {

namespace {
// getpid() and gettid() are system calls (glibc caches neither), and a lock
// needs its caller's id on every acquire: cache both, and invalidate the
// caches in a forked child, where they would name the parent.
std::atomic<std::uint32_t> g_fork_generation{0};
std::uint32_t g_pid = 0;
thread_local std::uint32_t t_tid = 0;
thread_local std::uint32_t t_tid_generation = ~0u;

void after_fork_in_child() noexcept {
  g_pid = static_cast<std::uint32_t>(::getpid());
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
}

[[maybe_unused]] const bool g_registered = [] {
  g_pid = static_cast<std::uint32_t>(::getpid());
  ::pthread_atfork(nullptr, nullptr, after_fork_in_child);
  return true;
}();
}  // namespace

std::uint32_t current_pid() noexcept {
  if (g_pid == 0) g_pid = static_cast<std::uint32_t>(::getpid());
  return g_pid;
}

std::uint32_t current_tid() noexcept {
  std::uint32_t gen = g_fork_generation.load(std::memory_order_relaxed);
  if (t_tid_generation != gen) {
    t_tid = static_cast<std::uint32_t>(::gettid());
    t_tid_generation = gen;
  }
  return t_tid;
}

FutexDeadline FutexDeadline::after(nanos d) {
  FutexDeadline dl;
  if (d == nanos::max()) return dl;
  dl.infinite = false;
  ::clock_gettime(CLOCK_MONOTONIC, &dl.at);
  auto ns = d.count();
  if (ns < 0) ns = 0;
  dl.at.tv_sec += static_cast<time_t>(ns / 1000000000);
  dl.at.tv_nsec += static_cast<long>(ns % 1000000000);
  if (dl.at.tv_nsec >= 1000000000) {
    dl.at.tv_nsec -= 1000000000;
    dl.at.tv_sec += 1;
  }
  return dl;
}

bool FutexDeadline::expired() const noexcept {
  if (infinite) return false;
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > at.tv_sec || (now.tv_sec == at.tv_sec && now.tv_nsec >= at.tv_nsec);
}

FutexDeadline FutexDeadline::capped(nanos slice) const {
  FutexDeadline s = after(slice);
  if (infinite) return s;
  bool earlier = at.tv_sec < s.at.tv_sec || (at.tv_sec == s.at.tv_sec && at.tv_nsec < s.at.tv_nsec);
  return earlier ? *this : s;
}

WaitResult futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                      const FutexDeadline& deadline) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  long r = ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(word), FUTEX_WAIT_BITSET,
                     expected, deadline.infinite ? nullptr : &deadline.at, nullptr,
                     FUTEX_BITSET_MATCH_ANY);
  if (r == 0) return WaitResult::woken;
  switch (errno) {
    case EAGAIN: return WaitResult::value_changed;
    case ETIMEDOUT: return WaitResult::timed_out;
    default: return WaitResult::interrupted;  // EINTR: the caller re-checks and waits again
  }
}

int futex_wake(const std::atomic<std::uint32_t>* word, int n) noexcept {
  long r = ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(word), FUTEX_WAKE, n,
                     nullptr, nullptr, 0);
  return r < 0 ? 0 : static_cast<int>(r);
}

bool id_alive(std::uint32_t id) noexcept {
  return sys::ProcessIdentity{static_cast<pid_t>(id)}.liveness() != sys::Liveness::gone;
}

}  // namespace mpxx::detail
