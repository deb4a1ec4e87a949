// src/process/state.hpp - what mpxx knows about one process (a child it
// started, itself, or its parent). Internal.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mpxx/context.hpp"
#include "mpxx/process.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

struct ProcessState {
  enum class Kind { child, self, parent };
  Kind kind = Kind::child;
  std::string name;
  bool name_is_default = false;  // "Process-N", to be replaced by a subclass's name
  std::vector<int> identity;
  bool daemon = false;
  std::string authkey;
  StartMethod method = StartMethod::fork;
  Target target;
  bool has_target = false;
  // A helper (pool worker, manager server): the child ignores SIGINT from
  // its first instruction (docs/design.md, "Helpers ignore Ctrl-C from the
  // start").
  bool ignores_interrupts = false;

  pid_t creator = 0;  // the pid that created this object (only it may start/join)
  pid_t pid = 0;
  bool started = false;
  bool closed = false;

  // Reaping state, guarded by mu (join may race with active_children()).
  std::mutex mu;
  sys::UniqueFd pidfd;
  sys::UniqueFd status;  // forkserver children: the server reports the exit code here
  std::optional<int> exitcode;
};

// For the layers above (pool, manager): the state behind a handle.
struct ProcessAccess {
  static ProcessState& state(const ProcessHandle& h) { return h.state(); }
};

// Makes the child that p will start a helper that ignores SIGINT from its
// first instruction, as a Ctrl-C at the terminal reaches the whole process
// group: its parent decides what the interrupt means. Before p.start().
inline void ignore_interrupts_from_start(Process& p) { ProcessAccess::state(p).ignores_interrupts = true; }

// Waits until the process has ended and records its exit code; true if it
// did before the deadline. Safe to call from several threads.
bool wait_exit(ProcessState& s, sys::Deadline deadline);

// "1:2" for identity {1, 2}.
std::string identity_suffix(const std::vector<int>& identity);

}  // namespace mpxx::detail
