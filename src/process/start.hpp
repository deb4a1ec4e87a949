// src/process/start.hpp - the fork and spawn start methods. Internal.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>

#include "mpxx/process.hpp"
#include "process/state.hpp"

namespace mpxx::detail {

// Forks a child that runs obj.run(); returns once the child is set up.
// OSError (errno and step) if the child failed before its target.
void start_fork(ProcessState& s, Process& obj);
// Tests only: a non-zero errno makes the next fork children fail their
// set-up with it, except the first fork_child_fault_spared of them.
extern std::atomic<int> fork_child_fault;
extern std::atomic<int> fork_child_fault_spared;
void start_spawn(ProcessState& s);
// Re-executes this program with child_fd as fd 3 and env_var added; with
// block_interrupt, SIGINT starts blocked (a helper ignores it, then unblocks).
pid_t spawn_self(int child_fd, const std::string& env_var, bool block_interrupt);

}  // namespace mpxx::detail
