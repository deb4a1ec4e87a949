#include "sys/fd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "mpxx/errors.hpp"

namespace mpxx::sys {

void throw_errno(const std::string& what) { throw_errno(errno, what); }

void throw_errno(int err, const std::string& what) {
  throw OSError(err, "mpxx: " + what + ": " + std::strerror(err));
}

void rethrow_with_context(const std::string& what) {
  try {
    throw;
  } catch (const OSError& e) {
    const std::string prefix = "mpxx: " + what;
    std::string msg = e.what();
    if (msg.rfind(prefix, 0) == 0) throw;
    if (msg.rfind("mpxx: ", 0) == 0) msg.erase(0, 6);
    throw OSError(e.code(), prefix + ": " + msg);
  }
}

UniqueFd pidfd_of_new_child(pid_t pid, const std::string& what) {
  UniqueFd fd = try_pidfd_open(pid);
  if (fd) return fd;
  const int err = errno;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  throw_errno(err, "cannot start " + what + ": pidfd_open");
}

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // never retried: see the header
  fd_ = fd;
}

Deadline Deadline::after(std::chrono::nanoseconds d) noexcept {
  if (d < std::chrono::nanoseconds::zero()) d = std::chrono::nanoseconds::zero();
  const auto now = clock::now();
  // nanoseconds::max() is mpxx's "forever" (detail::to_nanos): no deadline
  // rather than a time point past the clock's range.
  if (d >= clock::time_point::max() - now) return never();
  Deadline dl;
  dl.at_ = now + d;
  return dl;
}

int Deadline::poll_ms() const noexcept {
  if (!at_) return -1;
  auto left = *at_ - clock::now();
  if (left <= clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

bool wait_readable(int fd, Deadline deadline) {
  const int f = fd;
  return !wait_any(std::span<const int>(&f, 1), deadline).empty();
}

std::vector<std::size_t> wait_any(std::span<const int> fds, Deadline deadline) {
  std::vector<pollfd> p(fds.size());
  for (std::size_t i = 0; i < fds.size(); ++i) p[i] = pollfd{fds[i], POLLIN, 0};
  for (;;) {
    int r = ::poll(p.data(), p.size(), deadline.poll_ms());
    if (r < 0) {
      if (errno == EINTR) continue;  // restart with what is left of the deadline
      throw_errno("poll");
    }
    std::vector<std::size_t> ready;
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i].revents) ready.push_back(i);
    if (!ready.empty() || deadline.expired()) return ready;
  }
}

std::string read_small_file(const std::string& path, std::size_t limit) noexcept {
  try {
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f) return {};
    std::string text(limit, '\0');
    std::size_t n = 0;
    while (n < limit) {
      const ssize_t r = retry([&] { return ::read(f.get(), text.data() + n, limit - n); });
      if (r <= 0) break;
      n += static_cast<std::size_t>(r);
    }
    text.resize(n);
    return text;
  } catch (...) {  // std::bad_alloc
    return {};
  }
}

bool read_full(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = retry([&] { return ::read(fd, p + got, n - got); });
    if (r < 0) {
      if (errno == ECONNRESET) r = 0;
      else throw_errno("read");
    }
    if (r == 0) {
      if (got == 0) return false;
      throw ProtocolError("mpxx: truncated message: the other end closed after " +
                          std::to_string(got) + " of " + std::to_string(n) + " bytes");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

bool write_full(int fd, const void* buf, std::size_t n) {
  auto* p = static_cast<const char*>(buf);
  std::size_t done = 0;
  bool is_socket = true;
  while (done < n) {
    ssize_t r;
    if (is_socket) {
      r = retry([&] { return ::send(fd, p + done, n - done, MSG_NOSIGNAL); });
      if (r < 0 && errno == ENOTSOCK) {
        is_socket = false;
        continue;
      }
    } else {
      r = retry([&] { return ::write(fd, p + done, n - done); });
    }
    if (r < 0) {
      if (errno == EPIPE || errno == ECONNRESET) return false;
      throw_errno("write");
    }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

void write_stderr(std::string_view s) noexcept {
  try {
    write_full(2, s.data(), s.size());
  } catch (...) {  // nowhere left to report it
  }
}

std::pair<UniqueFd, UniqueFd> socket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) throw_errno("pipe2");
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

UniqueFd make_memfd(const std::string& name, std::size_t size) {
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd) throw_errno("cannot create shared memory " + name + " (memfd_create)");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
    throw_errno("cannot size shared memory to " + std::to_string(size) + " bytes");
  return fd;
}

void reserve_shared(int fd, std::size_t size, const std::string& what) {
  const int err = ::fallocate(fd, 0, 0, static_cast<off_t>(size)) == 0 ? 0 : errno;
  if (err == 0 || err == EOPNOTSUPP || err == ENOSYS) return;
  throw_errno(err, "cannot allocate " + std::to_string(size) + " bytes of shared memory " + what);
}

bool sendmsg_all(int sock, iovec* iov, int iovcnt, std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerMessage)
    throw ValueError("mpxx: a message can carry at most " + std::to_string(kMaxFdsPerMessage) +
                     " file descriptors");
  bool fds_sent = fds.empty();
  alignas(cmsghdr) char ctrl[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  while (iovcnt > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
    if (!fds_sent) {  // the fds ride with the first byte that goes out
      msg.msg_control = ctrl;
      msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    ssize_t r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {  // a non-blocking socket: wait for room
        pollfd p{sock, POLLOUT, 0};
        ::poll(&p, 1, -1);
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) return false;
      throw_errno("sendmsg");
    }
    fds_sent = true;
    auto n = static_cast<std::size_t>(r);
    while (iovcnt > 0 && n >= iov->iov_len) {
      n -= iov->iov_len;
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + n;
      iov->iov_len -= n;
    }
  }
  return true;
}

bool send_with_fds(int sock, const void* buf, std::size_t n, std::span<const int> fds) {
  if (n == 0) throw ValueError("mpxx: file descriptors need at least one byte to travel with");
  iovec iov{const_cast<void*>(buf), n};
  return sendmsg_all(sock, &iov, 1, fds);
}

void take_rights(msghdr& msg, std::vector<int>& fds) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* data = reinterpret_cast<const unsigned char*>(CMSG_DATA(c));
    for (std::size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int fd : fds) ::close(fd);
    fds.clear();
    throw ProtocolError("mpxx: too many file descriptors in one message");
  }
}

std::size_t recv_with_fds(int sock, void* buf, std::size_t n, std::vector<int>& fds) {
  iovec iov{buf, n};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t r = retry([&] { return ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (r < 0) {
    if (errno == ECONNRESET) return 0;
    throw_errno("recvmsg");
  }
  take_rights(msg, fds);
  return static_cast<std::size_t>(r);
}

UniqueFd move_above(UniqueFd fd, int min_fd) {
  UniqueFd moved(::fcntl(fd.get(), F_DUPFD_CLOEXEC, min_fd));
  if (!moved) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  return moved;
}

void set_cloexec(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) throw_errno("fcntl(F_GETFD)");
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (::fcntl(fd, F_SETFD, flags) < 0) throw_errno("fcntl(F_SETFD)");
}

UniqueFd pidfd_open(pid_t pid) {
  UniqueFd fd = try_pidfd_open(pid);
  if (!fd) throw_errno("pidfd_open(" + std::to_string(pid) + ")");
  return fd;
}

UniqueFd try_pidfd_open(pid_t pid) noexcept {
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

bool pidfd_exited(int pidfd) noexcept {
  pollfd p{pidfd, POLLIN, 0};  // readable once the process has exited
  return retry([&] { return ::poll(&p, 1, 0); }) > 0;
}

bool pidfd_kill(int pidfd, int sig) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0) return true;
  if (errno == ESRCH) return false;
  throw_errno("pidfd_send_signal");
}

namespace {
sigset_t set_of(std::initializer_list<int> sigs) noexcept {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : sigs) sigaddset(&set, sig);
  return set;
}
}  // namespace

BlockSignals::BlockSignals(std::initializer_list<int> sigs) noexcept {
  const sigset_t set = set_of(sigs);
  ::pthread_sigmask(SIG_BLOCK, &set, &old_);
}

void BlockSignals::restore() noexcept {
  if (blocked_) ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  blocked_ = false;
}

std::atomic<int> signal_forked_children{0};

void unblock_signals(std::initializer_list<int> sigs) noexcept {
  const sigset_t set = set_of(sigs);
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void ignore_and_unblock(std::initializer_list<int> sigs) noexcept {
  for (int sig : sigs) ::signal(sig, SIG_IGN);  // discards a pending one too
  unblock_signals(sigs);
}

}  // namespace mpxx::sys
