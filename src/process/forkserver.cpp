// src/process/forkserver.cpp - the forkserver: a single-threaded copy of
// the program, started on first use by re-executing it, that forks children
// on request. Its protocol: docs/design.md, "forkserver".
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "mpxx/log.hpp"
#include "process/boot.hpp"
#include "process/exitcode.hpp"
#include "process/forkserver.hpp"
#include "process/runtime.hpp"
#include "process/start.hpp"
#include "process/state.hpp"
#include "wire/stream.hpp"

namespace mpxx::detail {

namespace {

using Server = ForkServerConn;
Server& server() { return forkserver_conn(); }

void ensure_running(Server& sv) {
  if (sv.ctl && sv.owner == ::getpid()) {
    // Still alive? A dead server shows up as a readable pidfd.
    if (!sys::wait_readable(sv.pidfd.get(), sys::Deadline::after(std::chrono::nanoseconds(0))))
      return;
    siginfo_t si{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(sv.pidfd.get()), &si, WEXITED);
    get_logger().logf(log::WARNING, "forkserver (pid ", sv.pid, ") died; restarting it");
  }
  auto [mine, theirs] = sys::socket_pair();
  sys::UniqueFd child_end = sys::move_above(std::move(theirs), 4);
  pid_t pid = spawn_self(child_end.get(), "MPXX_FORKSERVER=3:" + std::to_string(::getpid()), true);
  child_end.reset();
  sv.pidfd = sys::pidfd_of_new_child(pid, "the forkserver");
  sv.owner = ::getpid();
  sv.pid = pid;
  sv.ctl = std::move(mine);
  get_logger().logf(log::DEBUG, "forkserver started with pid ", pid);
}

}  // namespace

void start_forkserver(ProcessState& s) {
  wire::Writer boot;
  encode_boot(boot, s);
  auto [mine, theirs] = sys::socket_pair();
  Server& sv = server();
  {
    std::lock_guard lk(sv.mu);
    const char req = 'F';
    const int fd = theirs.get();
    bool sent = false;
    for (int attempt = 0; attempt < 2 && !sent; ++attempt) {
      ensure_running(sv);
      sent = sys::send_with_fds(sv.ctl.get(), &req, 1, std::span<const int>(&fd, 1));
      if (!sent) sv.ctl.reset();
    }
    if (!sent) throw ProcessError("mpxx: the forkserver is not accepting requests");
  }
  theirs.reset();
  if (!wire::send_frame(mine.get(), boot))
    throw ProcessError("mpxx: the forkserver's child for " + s.name + " exited before starting");
  std::int32_t pid = 0;
  std::vector<int> fds;
  std::size_t got = 0;
  while (got < sizeof pid) {
    std::size_t r = sys::recv_with_fds(mine.get(), reinterpret_cast<char*>(&pid) + got,
                                       sizeof pid - got, fds);
    if (r == 0) break;
    got += r;
  }
  if (got != sizeof pid || fds.size() != 1) {
    for (int f : fds) ::close(f);
    throw ProcessError("mpxx: the forkserver did not report a pid for " + s.name);
  }
  s.pid = pid;
  s.pidfd.reset(fds[0]);
  s.status = std::move(mine);
}

void forkserver_after_fork() noexcept {
  Server& sv = server();
  if (sv.owner == 0 && !sv.ctl && !sv.pidfd) return;  // nothing to forget: write nothing
  new (&sv.mu) std::mutex;
  sv.ctl.reset();
  sv.pidfd.reset();
  sv.owner = 0;
  sv.pid = 0;
}

void stop_forkserver() noexcept {
  Server& sv = server();
  std::lock_guard lk(sv.mu);
  if (!sv.ctl || sv.owner != ::getpid()) return;
  sv.ctl.reset();  // EOF: the server exits
  siginfo_t si{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(sv.pidfd.get()), &si,
                  WEXITED) < 0 &&
         errno == EINTR) {
  }
  sv.pidfd.reset();
  sv.owner = 0;
}

void forkserver_main(int ctl, pid_t expected_parent) noexcept {
  // No PR_SET_PDEATHSIG here: Linux ties it to the *thread* that started
  // the server (a Pool's handler thread, say), not to the program. The
  // server ends instead when its control socket reads EOF, which happens
  // however the program ends, SIGKILL included (the kernel closes its fds).
  if (::getppid() != expected_parent) ::_exit(0);
  sys::ignore_and_unblock({SIGINT});  // blocked since spawn_self
  self().name = "ForkServer";
  const pid_t me = ::getpid();

  struct Kid {
    pid_t pid;
    sys::UniqueFd pidfd;
    sys::UniqueFd conn;
  };
  std::vector<Kid> kids;
  try {
    for (;;) {
      std::vector<pollfd> pfds;
      pfds.push_back({ctl, POLLIN, 0});
      for (auto& k : kids) pfds.push_back({k.pidfd.get(), POLLIN, 0});
      if (::poll(pfds.data(), pfds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        sys::throw_errno("forkserver poll");
      }
      // Reap first, so a finished child's fds are not inherited by the next.
      for (std::size_t i = pfds.size(); i-- > 1;) {
        if (!pfds[i].revents) continue;
        Kid& k = kids[i - 1];
        siginfo_t si{};
        if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(k.pidfd.get()), &si,
                     WEXITED) < 0)
          continue;
        std::int32_t code = exitcode_from_siginfo(si.si_code, si.si_status);
        sys::write_full(k.conn.get(), &code, sizeof code);
        kids.erase(kids.begin() + static_cast<std::ptrdiff_t>(i - 1));
      }
      if (!pfds[0].revents) continue;
      char req;
      std::vector<int> fds;
      if (sys::recv_with_fds(ctl, &req, 1, fds) == 0) break;  // the program is done with us
      for (int conn : fds) {
        sys::UniqueFd conn_fd(conn);
        pid_t pid = ::fork();
        if (pid < 0) continue;  // the client sees EOF instead of a pid
        if (pid == 0) {
          ::close(ctl);
          for (auto& k : kids) {
            k.pidfd.reset();
            k.conn.reset();
          }
          // The child's boot frame says whether it ignores SIGINT (a
          // helper) or takes it the default way; until then it is held.
          const sys::BlockSignals held({SIGINT});
          ::signal(SIGINT, SIG_DFL);
          sys::forked_child_starts();
          run_boot_from(conn_fd.release(), me);
        }
        Kid k{pid, {}, std::move(conn_fd)};
        try {
          k.pidfd = sys::pidfd_open(pid);
        } catch (...) {
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
          continue;
        }
        std::int32_t p32 = pid;
        const int pfd = k.pidfd.get();
        sys::send_with_fds(k.conn.get(), &p32, sizeof p32, std::span<const int>(&pfd, 1));
        kids.push_back(std::move(k));
      }
    }
  } catch (const std::exception& e) {
    std::string m = std::string("mpxx: forkserver: ") + e.what() + "\n";
    (void)!::write(2, m.data(), m.size());
  }
  ::_exit(0);
}

}  // namespace mpxx::detail
