// src/process/start.hpp - the fork and spawn start methods. Internal.
#pragma once

#include <sys/types.h>

#include <string>

#include "mpxx/process.hpp"
#include "process/state.hpp"

namespace mpxx::detail {

void start_fork(ProcessState& s, Process& obj);
void start_spawn(ProcessState& s);
// Re-executes this program with child_fd as fd 3 and env_var added.
pid_t spawn_self(int child_fd, const std::string& env_var);

}  // namespace mpxx::detail
