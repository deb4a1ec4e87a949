// tests/test_support.hpp - helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mpxx/mpxx.hpp"

namespace mpxx_test {

// Snapshot of what a test could leak: open fds, direct children, /dev/shm.
struct Resources {
  std::set<std::string> fds;       // "N -> target"
  std::set<pid_t> children;
  std::set<std::string> shm;
};
Resources snapshot();

// A file in a fresh temporary directory, removed with the directory.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

// Redirects fd 1 or 2 to a temporary file for the lifetime of the object;
// text() returns what was written (by this process and its children).
class CaptureFd {
 public:
  explicit CaptureFd(int fd);
  ~CaptureFd();
  std::string text();

 private:
  int fd_, saved_, file_;
};

// True once `pid` no longer exists (polls a pidfd, up to `timeout`).
bool wait_gone(pid_t pid, std::chrono::milliseconds timeout);
// State letter from /proc/<pid>/stat ('Z' for a zombie), or 0 if gone.
char proc_state(pid_t pid);

// Makes process_vm_readv fail with `err` in this process (a seccomp
// filter, as a container may have): every call, or (only_one_piece) only
// the calls that name one piece of the other process's memory, which are
// the reads after the first of a large vector (the first spans the frame's
// own bytes and the vector's block). False if seccomp cannot be used here.
bool refuse_peer_reads(int err, bool only_one_piece);
// Bytes this process has read with read()-like calls (rchar in
// /proc/self/io), or -1.
long long bytes_read_so_far();

// Waits until process `pid` has `bytes` more memory resident than when
// called (/proc/<pid>/statm): a receiver is then filling a large value.
// False after `timeout`.
bool wait_rss_growth(pid_t pid, std::size_t bytes, std::chrono::milliseconds timeout);

// Waits until a thread of process `pid` sleeps inside system call `nr`
// (/proc/<pid>/task/*/syscall) with arguments that `args_match` accepts
// (the call's six arguments; any, if empty): a process is then exactly at
// the moment a test wants to stop or kill it. A thread running in the
// kernel, as in a long copy, shows no call there, and a call resumed after
// a stop or a signal shows as restart_syscall. False after `timeout`, or
// once the process has exited.
bool wait_in_syscall(pid_t pid, long nr, std::chrono::milliseconds timeout,
                     const std::function<bool(const std::vector<std::uint64_t>&)>& args_match = {});
// wait_in_syscall for up to 20 s, for tests whose assertions hold however
// far the other process got, only sharper once it is inside the call: where
// /proc/<pid>/syscall cannot be read, waits 200 ms instead and says true.
bool wait_asleep_in(pid_t pid, long nr,
                    const std::function<bool(const std::vector<std::uint64_t>&)>& args_match = {});
// Whether /proc/<pid>/syscall can be read here (a sandbox or Yama's
// ptrace_scope may forbid it): tests that use wait_in_syscall skip if not.
bool syscalls_visible();
// The address ranges [first, second) of process `pid`'s mappings whose
// name contains `name` (/proc/<pid>/maps).
std::vector<std::pair<std::uint64_t, std::uint64_t>> mappings_named(pid_t pid, const std::string& name);

// Word i of message `seq` from sender `id` in the randomized kill tests
// (a receiver checks a message whole from its first two words).
inline std::uint32_t numbered_word(std::uint32_t id, std::uint32_t seq, std::size_t i) {
  return id * 1000003u + seq * 7u + static_cast<std::uint32_t>(i);
}

// Seconds that f() took.
template <class F>
double seconds(F f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A test run once per start method: opts() makes a Process use it.
class StartMethodTest : public ::testing::TestWithParam<mpxx::StartMethod> {
 protected:
  mpxx::ProcessOptions opts(std::string name = {}) {
    return mpxx::ProcessOptions{.name = std::move(name), .context = &mpxx::get_context(GetParam())};
  }
};

inline std::string start_method_name(const ::testing::TestParamInfo<mpxx::StartMethod>& info) {
  return std::string(mpxx::to_string(info.param));
}

}  // namespace mpxx_test

// Instantiates a StartMethodTest suite for fork, spawn and forkserver.
#define MPXX_FOR_EACH_START_METHOD(Suite)                                                   \
  INSTANTIATE_TEST_SUITE_P(AllStartMethods, Suite,                                         \
                           ::testing::Values(mpxx::StartMethod::fork, mpxx::StartMethod::spawn, \
                                             mpxx::StartMethod::forkserver),              \
                           ::mpxx_test::start_method_name)
