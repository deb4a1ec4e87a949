#include "sync/futex.hpp"

#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace mpxx::detail {

namespace {
thread_local std::uint32_t t_tid = 0;
}  // namespace

std::uint32_t current_pid() noexcept {
  return static_cast<std::uint32_t>(::getpid());  // not cached: must change across fork
}

std::uint32_t current_tid() noexcept {
  // A thread id cached in a forked child would be the parent's: re-read it
  // whenever the pid changed.
  static thread_local std::uint32_t t_pid = 0;
  std::uint32_t pid = static_cast<std::uint32_t>(::getpid());
  if (t_tid == 0 || t_pid != pid) {
    t_tid = static_cast<std::uint32_t>(::gettid());
    t_pid = pid;
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
  if (id == 0) return false;
  if (::kill(static_cast<pid_t>(id), 0) < 0 && errno == ESRCH) return false;
  // It exists, but may be a zombie: a pidfd is readable once it has exited.
  // (pidfd_open fails for a thread that is not a process leader: such a
  // thread cannot be a zombie, so it is alive.)
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(id), 0));
  if (fd < 0) return errno != ESRCH;
  pollfd p{fd, POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  ::close(fd);
  return r != 1;
}

}  // namespace mpxx::detail
