// src/sys/process_identity.hpp - "is process P, started at time T, still
// alive?", answered in one place. Internal.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "sys/fd.hpp"

namespace mpxx::sys {

// What can be told of a process: alive, gone (exited, a zombie included, or
// its pid now names another process), or unknown (nothing to tell it by:
// no /proc of this pid namespace, no pidfd to be had). Each caller decides
// what unknown means for it.
enum class Liveness { alive, gone, unknown };

// A process named for good: its pid and the kernel's start time (clock
// ticks since boot, field 22 of /proc/<pid>/stat). A pid is reused once its
// process is reaped; the pair is not. start_time 0: not known, and the pid
// alone names it (also a thread id: futex owners are thread ids).
struct ProcessIdentity {
  pid_t pid = 0;
  std::uint64_t start_time = 0;

  // This process; read once per process (a forked child reads its own).
  static ProcessIdentity self() noexcept;
  // Process `pid` as it is now (start_time 0 if it cannot be read).
  static ProcessIdentity of(pid_t pid) noexcept;

  Liveness liveness() const noexcept;
  // A pidfd for this very process while it is alive; empty otherwise, and
  // then *why (if given) says gone or unknown.
  UniqueFd open(Liveness* why = nullptr) const noexcept;
};

// When process `pid` started (see ProcessIdentity); 0 if that cannot be
// told.
std::uint64_t process_start_time(pid_t pid) noexcept;

// Whether the /proc mounted here shows pids as this process sees them (it
// may belong to another pid namespace, as after `unshare --pid` without a
// new /proc): only then do /proc/<pid> and fdinfo speak of our pids.
bool proc_is_ours() noexcept;

}  // namespace mpxx::sys
