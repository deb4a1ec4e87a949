// src/process/boot.hpp - becoming a child: the boot frame a spawned or
// forkserver child reads before it runs its target, and Python's
// Process._bootstrap. Internal.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "mpxx/detail/buffer.hpp"
#include "process/state.hpp"

namespace mpxx::detail {

// Everything a spawned or forkserver child needs before it runs its target.
struct Boot {
  std::vector<int> identity;
  std::string name;
  bool daemon = false;
  std::string authkey;
  pid_t parent_pid = 0;
  std::string parent_name;
  int log_level = 0;
  StartMethod method = StartMethod::spawn;  // the one starting this child: its default too
  bool ignores_interrupts = false;  // SIGINT: blocked at start, then ignored (else unblocked)
  bool has_call = false;
};

// The boot frame (boot_frame.cpp). encode_boot writes one for s (with its
// call, if any) into w; decode_boot reads it back up to the call, which is
// left in r for invoke_call.
void encode_boot(wire::Writer& w, const ProcessState& s);
Boot decode_boot(wire::Reader& r);
// Receives a boot frame on fd: its payload (for decode_boot) and the fds
// sent with it. False on EOF before one came; ProtocolError for another
// kind of frame, or a bad one.
bool recv_boot(int fd, wire::Writer& payload, std::vector<int>& fds);

// Makes this (new) process the child described by the arguments: resets
// the children table, the process counter and the forkserver connection,
// points stdin at /dev/null, and ties its life to the parent's.
// The method that started it becomes its default start method, as Python's
// child forces it.
void become_child(const std::vector<int>& identity, const std::string& name, bool daemon,
                  const std::string& authkey, pid_t parent_pid, const std::string& parent_name,
                  StartMethod started_by);

// Runs a child's body and returns its exit code (Python's _bootstrap):
// 0, the SystemExit code, or 1 after printing an escaped exception.
int run_child_body(void (*body)(void*), void* arg) noexcept;
// Flushes stdio and _exits; the exit code has been logged.
[[noreturn]] void exit_child(int code) noexcept;

// Reads a boot frame from fd (and the fds sent with it), becomes that child,
// runs its call and exits. Never returns.
[[noreturn]] void run_boot_from(int fd, pid_t expected_parent) noexcept;

}  // namespace mpxx::detail
