// src/process/forkserver.hpp - the forkserver start method: a server
// process, started once, that forks the children. Internal.
#pragma once

#include <sys/types.h>

#include <mutex>

#include "process/state.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

// This process's connection to its forkserver, if it started one.
struct ForkServerConn {
  std::mutex mu;
  pid_t owner = 0;  // the process that started the server
  pid_t pid = 0;
  sys::UniqueFd ctl;
  sys::UniqueFd pidfd;
};
ForkServerConn& forkserver_conn();

void start_forkserver(ProcessState& s);
// In a freshly forked child: forget the parent's forkserver.
void forkserver_after_fork() noexcept;
// Stops this process's forkserver, if it started one.
void stop_forkserver() noexcept;
// The server's own loop (mpxx::init() branches to it). Never returns.
[[noreturn]] void forkserver_main(int ctl_fd, pid_t expected_parent) noexcept;

}  // namespace mpxx::detail
