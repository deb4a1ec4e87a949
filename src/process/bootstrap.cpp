// src/process/bootstrap.cpp - the child side: becoming a child, running its
// body like Python's Process._bootstrap, and the spawned child's entry.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <stdio_ext.h>
#ifdef __GLIBCXX__
#include <ext/stdio_sync_filebuf.h>
#endif
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "mpxx/context.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/log.hpp"
#include "process/boot.hpp"
#include "process/forkserver.hpp"
#include "process/runtime.hpp"
#include "wire/stream.hpp"

namespace mpxx {
namespace detail {

void become_child(const std::vector<int>& identity, const std::string& name, bool daemon,
                  const std::string& authkey, pid_t parent_pid, const std::string& parent_name,
                  StartMethod started_by) {
  // Every page a forked child writes to is copied by the kernel (on this
  // kind of VM, ~5 us each), so unchanged fields are left alone.
  Self& me = self();
  me.identity = identity;
  me.name = name;
  me.daemon = daemon;
  if (me.authkey != authkey) me.authkey = authkey;
  me.parent_pid = parent_pid;
  if (me.parent_name != parent_name) me.parent_name = parent_name;
  me.counter = 0;
  me.started_by = started_by;
  if (default_start_method_if_set() != started_by) set_default_start_method_raw(started_by);
  if (me.self_state) me.self_state.reset();
  if (me.parent_state) me.parent_state.reset();
  reset_children_after_fork();
  forkserver_after_fork();
  // As in Python, a child does not share the parent's standard input.
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) {
    if (devnull != 0) {
      ::dup2(devnull, 0);
      ::close(devnull);
    } else {
      sys::set_cloexec(0, false);
    }
  }
}

int run_child_body(void (*body)(void*), void* arg) noexcept {
  Logger& log = get_logger();
  int code = 0;
  try {
    ThrowTrace trace;
    log.info("child process calling self.run()");
    try {
      body(arg);
      code = 0;
    } catch (const SystemExit& e) {
      code = e.code();
    } catch (...) {
      ExceptionInfo e = describe_current_exception();
      std::cout.flush();
      sys::write_stderr("Process " + self().name + ":\nTraceback (most recent call last):\n" +
                   e.backtrace + e.type + ": " + e.message + "\n");
      code = 1;
    }
  } catch (...) {
    code = 1;
  }
  join_all_children_at_exit();
  log.logf(log::INFO, "process exiting with exitcode ", code);
  return code;
}

void exit_child(int code) noexcept {
  // As Python's child does before os._exit: flush the standard streams.
  // (With the default sync_with_stdio, std::cout writes straight into
  // stdout's buffer, so checking stdio's pending bytes covers both.)
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  if (__fpending(stdout) > 0) std::fflush(stdout);
  if (__fpending(stderr) > 0) std::fflush(stderr);
  ::_exit(code & 0xff);
}

namespace {
struct BootCall {
  wire::Reader* reader;
};
void run_boot_call(void* p) {
  auto* c = static_cast<BootCall*>(p);
  invoke_call(*c->reader, nullptr);
}
}  // namespace

bool recv_boot(int fd, wire::Writer& payload, std::vector<int>& fds) {
  wire::FrameHeader h{};
  if (!wire::recv_frame(fd, h, payload, fds)) return false;
  if (h.kind != wire::FrameKind::boot)
    throw ProtocolError(std::string("mpxx: expected a boot frame, got ") + wire::frame_kind_name(h.kind));
  return true;
}

void run_boot_from(int fd, pid_t expected_parent) noexcept {
  // Die with the parent; if it is already gone, do not start at all.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != expected_parent) ::_exit(1);
  int code = 1;
  try {
    wire::Writer payload;
    std::vector<int> fds;
    if (!recv_boot(fd, payload, fds)) ::_exit(1);  // parent gave up before sending
    ::close(fd);
    wire::Reader r(payload.bytes());
    r.set_fds(std::move(fds));
    const Boot boot = decode_boot(r);
    // SIGINT has been blocked since before this process existed (spawn_self,
    // or the forkserver's fork): a helper ignores it before letting it in.
    if (boot.ignores_interrupts)
      sys::ignore_and_unblock({SIGINT});
    else
      sys::unblock_signals({SIGINT});
    become_child(boot.identity, boot.name, boot.daemon, boot.authkey, boot.parent_pid,
                 boot.parent_name, boot.method);
    get_logger().set_level(boot.log_level);
    if (boot.has_call) {
      BootCall c{&r};
      code = run_child_body(&run_boot_call, &c);
    } else {
      code = run_child_body([](void*) {}, nullptr);
    }
  } catch (const std::exception& e) {
    sys::write_stderr(std::string("mpxx: child could not start: ") + e.what() + "\n");
    code = 1;
  }
  exit_child(code);
}

}  // namespace detail

}  // namespace mpxx
