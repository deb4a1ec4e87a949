// src/process_state.hpp - what mpxx knows about a process, and the
// per-process runtime (who am I, who are my children). Internal.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mpxx/context.hpp"
#include "mpxx/detail/buffer.hpp"
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

// Who this process is.
struct Self {
  std::string name = "MainProcess";
  std::vector<int> identity;
  bool daemon = false;
  std::string authkey;
  pid_t parent_pid = 0;  // 0 in the main program
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

// This process's connection to its forkserver, if it started one.
struct ForkServerConn {
  std::mutex mu;
  pid_t owner = 0;  // the process that started the server
  pid_t pid = 0;
  sys::UniqueFd ctl;
  sys::UniqueFd pidfd;
};
ForkServerConn& forkserver_conn();

// Everything a spawned or forkserver child needs before it runs its target.
struct Boot {
  std::vector<int> identity;
  std::string name;
  bool daemon = false;
  std::string authkey;
  pid_t parent_pid = 0;
  std::string parent_name;
  int log_level = 0;
  int default_method = 0;  // StartMethod inherited as the child's default, -1 if unset
  bool has_call = false;
};
// Encodes a boot frame for s (with its call, if any) into w.
void encode_boot(wire::Writer& w, const ProcessState& s);

// Makes this (new) process the child described by the arguments: resets
// the children table, the process counter and the forkserver connection,
// points stdin at /dev/null, and ties its life to the parent's.
void become_child(const std::vector<int>& identity, const std::string& name, bool daemon,
                  const std::string& authkey, pid_t parent_pid, const std::string& parent_name);

// Runs a child's body and returns its exit code (Python's _bootstrap):
// 0, the SystemExit code, or 1 after printing an escaped exception.
int run_child_body(void (*body)(void*), void* arg) noexcept;
// Flushes stdio and _exits; the exit code has been logged.
[[noreturn]] void exit_child(int code) noexcept;

// Reads a boot frame from fd (and the fds sent with it), becomes that child,
// runs its call and exits. Never returns.
[[noreturn]] void run_boot_from(int fd, pid_t expected_parent) noexcept;

// Children table.
void add_child(std::shared_ptr<ProcessState> s);
void cleanup_children();  // reaps the finished ones
void reset_children_after_fork() noexcept;
std::vector<std::shared_ptr<ProcessState>> live_children();
void install_exit_handler();
void join_all_children_at_exit() noexcept;

// Start methods.
void start_fork(ProcessState& s, Process& obj);
void start_spawn(ProcessState& s);
void start_forkserver(ProcessState& s);
// Re-executes this program with child_fd as fd 3 and env_var added.
pid_t spawn_self(int child_fd, const std::string& env_var);
// In a freshly forked child: forget the parent's forkserver.
void forkserver_after_fork() noexcept;
// Stops this process's shared memory tracker, which then removes the named
// blocks this process created and did not unlink.
void stop_resource_tracker() noexcept;
// Stops this process's forkserver, if it started one.
void stop_forkserver() noexcept;
[[noreturn]] void forkserver_main(int ctl_fd, pid_t expected_parent) noexcept;

// Argument vector saved by init(), for re-executing the program.
const std::vector<std::string>& saved_argv();
std::optional<StartMethod> default_start_method_if_set();
StartMethod default_start_method();
void set_default_start_method_raw(std::optional<StartMethod> m);

int exitcode_from_siginfo(int code, int status) noexcept;
std::string describe_exitcode(int code);

}  // namespace mpxx::detail
