// src/sys/process_identity.cpp - see process_identity.hpp.
#include "sys/process_identity.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sys/futex.hpp"

namespace mpxx::sys {

bool proc_is_ours() noexcept {
  char link[32];
  const ssize_t n = ::readlink("/proc/self", link, sizeof link - 1);
  if (n <= 0) return false;
  link[n] = '\0';
  return std::strtol(link, nullptr, 10) == static_cast<long>(::getpid());
}

std::uint64_t process_start_time(pid_t pid) noexcept {
  if (pid <= 0 || !proc_is_ours()) return 0;
  const std::string text = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  // After the command (in parentheses, and it may hold anything), the
  // state is field 3 and the start time field 22.
  const char* at = std::strrchr(text.c_str(), ')');
  for (int field = 2; at && field < 22; ++field) at = std::strchr(at + 1, ' ');
  return at ? std::strtoull(at + 1, nullptr, 10) : 0;
}

ProcessIdentity ProcessIdentity::self() noexcept {
  thread_local ProcessIdentity me;
  const auto pid = static_cast<pid_t>(detail::current_pid());
  if (me.pid != pid) me = of(pid);  // first call in this thread, or a forked child
  return me;
}

ProcessIdentity ProcessIdentity::of(pid_t pid) noexcept { return {pid, process_start_time(pid)}; }

UniqueFd ProcessIdentity::open(Liveness* why) const noexcept {
  auto fail = [why](Liveness l) {
    if (why) *why = l;
    return UniqueFd();
  };
  if (pid <= 0) return fail(Liveness::gone);
  // Opened first, checked after: a pidfd names the process that held the
  // pid when it was opened, so if that one started at start_time it is the
  // process meant (and not one that took the pid over since).
  UniqueFd fd = try_pidfd_open(pid);
  if (!fd && errno == ESRCH) return fail(Liveness::gone);
  // (Other failures: EINVAL for a thread that is not a process leader, or
  // out of fds; the start time may still tell.)
  if (start_time != 0) {
    const std::uint64_t now = process_start_time(pid);
    if (now != 0 && now != start_time) return fail(Liveness::gone);
    if (now == 0) return fail(fd && pidfd_exited(fd.get()) ? Liveness::gone : Liveness::unknown);
  }
  if (!fd) return fail(Liveness::unknown);
  if (pidfd_exited(fd.get())) return fail(Liveness::gone);
  if (why) *why = Liveness::alive;
  return fd;
}

Liveness ProcessIdentity::liveness() const noexcept {
  if (pid <= 0) return Liveness::gone;
  if (::kill(pid, 0) < 0 && errno == ESRCH) return Liveness::gone;  // the cheap answer first
  Liveness l = Liveness::unknown;
  open(&l);
  return l;
}

}  // namespace mpxx::sys
