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

// Waits until the process has ended and records its exit code; true if it
// did before the deadline. Safe to call from several threads.
bool wait_exit(ProcessState& s, sys::Deadline deadline);

// "1:2" for identity {1, 2}.
std::string identity_suffix(const std::vector<int>& identity);

}  // namespace mpxx::detail
