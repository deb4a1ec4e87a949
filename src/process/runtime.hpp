// src/process/runtime.hpp - the per-process runtime: who this process is,
// its children, and the program's saved settings. Internal.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mpxx/context.hpp"
#include "process/state.hpp"

namespace mpxx::detail {

// Who this process is.
struct Self {
  std::string name = "MainProcess";
  std::vector<int> identity;
  bool daemon = false;
  std::string authkey;
  pid_t parent_pid = 0;  // 0 in the main program
  std::optional<StartMethod> started_by;  // how this child was started; none in the main program
  std::string parent_name;
  int counter = 0;  // numbers children: Process-<identity>:<counter>
  std::shared_ptr<ProcessState> self_state, parent_state;
};
Self& self();

// The children table.
struct Children {
  std::mutex mu;
  std::vector<std::shared_ptr<ProcessState>> list;
};
Children& children();

// The children table (process.cpp).
void add_child(std::shared_ptr<ProcessState> s);
void cleanup_children();  // reaps the finished ones
void reset_children_after_fork() noexcept;
std::vector<std::shared_ptr<ProcessState>> live_children();
// At program exit: join the non-daemon children, terminate the daemonic
// ones, stop the forkserver and the resource tracker.
void install_exit_handler();
void join_all_children_at_exit() noexcept;

// Argument vector saved by init(), for re-executing the program, and the
// default start method (context.cpp).
const std::vector<std::string>& saved_argv();
std::optional<StartMethod> default_start_method_if_set();
StartMethod default_start_method();
void set_default_start_method_raw(std::optional<StartMethod> m);

}  // namespace mpxx::detail
