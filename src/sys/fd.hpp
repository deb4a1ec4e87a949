// src/sys/fd.hpp - thin RAII over file descriptors and the syscalls mpxx
// uses on them. Nothing here knows about tasks or processes' meaning.
//
// Every call retries on EINTR through one helper, except close(), which is
// never retried (on Linux the fd is released even when close reports EINTR,
// and retrying could close an fd another thread just opened). All fds are
// created close-on-exec; the one place that hands an fd to an exec'd child
// clears it explicitly.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <span>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mpxx::sys {

// Retries f() while it fails with EINTR.
template <class F>
auto retry(F f) {
  for (;;) {
    auto r = f();
    if (r != -1 || errno != EINTR) return r;
  }
}

// Throws OSError(errno, what) - the single place errno becomes an exception.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(int err, const std::string& what);
// Inside a catch block: rethrows the exception being handled, an OSError
// with "mpxx: <what>: " in front of its message (unless it starts so
// already), so that a failure deep inside a constructor or a start names
// what was being made: "mpxx: cannot create a Pipe: socketpair: Too many
// open files".
[[noreturn]] void rethrow_with_context(const std::string& what);

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// A monotonic deadline; nullopt timeout means "forever".
class Deadline {
 public:
  using clock = std::chrono::steady_clock;
  static Deadline never() noexcept { return Deadline(); }
  static Deadline after(std::chrono::nanoseconds d) noexcept;
  bool infinite() const noexcept { return !at_; }
  bool expired() const noexcept { return at_ && clock::now() >= *at_; }
  // Milliseconds left for poll(): -1 forever, 0 expired, rounded up.
  int poll_ms() const noexcept;

 private:
  std::optional<clock::time_point> at_;
};

// poll() for one fd until the deadline; true when an event arrived, false on
// timeout. Restarts with the remaining time after a signal.
bool wait_readable(int fd, Deadline deadline);
// poll() on several fds; returns the indexes that are readable (or hung up).
std::vector<std::size_t> wait_any(std::span<const int> fds, Deadline deadline);

// The text of a small kernel file (/proc, /sys), at most `limit` bytes;
// empty if it cannot be opened or read. Never throws.
std::string read_small_file(const std::string& path, std::size_t limit = 1024) noexcept;

// Reads exactly n bytes. Returns false on EOF before the first byte; EOF
// after some bytes is a ProtocolError ("truncated"), errors are OSError.
bool read_full(int fd, void* buf, std::size_t n);
// Writes all n bytes (send(MSG_NOSIGNAL) on sockets, so a closed peer is an
// EPIPE error, never a SIGPIPE). Returns false if the peer is gone.
bool write_full(int fd, const void* buf, std::size_t n);
// Writes s to fd 2 in one write (so lines from several processes never
// interleave); quiet if it cannot.
void write_stderr(std::string_view s) noexcept;

// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC).
std::pair<UniqueFd, UniqueFd> socket_pair();
// pipe2(O_CLOEXEC).
std::pair<UniqueFd, UniqueFd> make_pipe();
// A new anonymous shared-memory file `size` bytes long: memfd_create(name,
// MFD_CLOEXEC), then ftruncate. OSError if either fails.
UniqueFd make_memfd(const std::string& name, std::size_t size);
// Allocates the first `size` bytes of a shared-memory file now
// (fallocate), so that a tmpfs without room (a full /dev/shm, a memory
// cgroup at its limit) is an OSError ENOSPC/ENOMEM here rather than a
// SIGBUS at the first touch of a page. A file system without fallocate
// is left as it is. `what` names the block in the error.
void reserve_shared(int fd, std::size_t size, const std::string& what);

// Most fds one message carries (the kernel's SCM_MAX_FD is 253).
inline constexpr std::size_t kMaxFdsPerMessage = 250;
// Sends every byte of the iovecs, with the fds (SCM_RIGHTS) attached to the
// first byte; restarts after signals and partial writes, so the stream
// never holds half a message unless the process dies. False if the peer is
// gone (EPIPE: never a SIGPIPE).
bool sendmsg_all(int sock, iovec* iov, int iovcnt, std::span<const int> fds);
// sendmsg_all of one buffer (non-empty: fds travel with a byte).
bool send_with_fds(int sock, const void* buf, std::size_t n, std::span<const int> fds);
// Collects the fds a received message carried (closed-on-exec if received
// with MSG_CMSG_CLOEXEC); ProtocolError if some were cut off.
void take_rights(msghdr& msg, std::vector<int>& fds);
// Receives up to n bytes and any fds attached to them (closed-on-exec).
// Returns the byte count (0 at EOF).
std::size_t recv_with_fds(int sock, void* buf, std::size_t n, std::vector<int>& fds);

// Moves fd to a number >= min_fd (close-on-exec), closing the original
// (also when the move fails).
UniqueFd move_above(UniqueFd fd, int min_fd);
void set_cloexec(int fd, bool on);

// pidfd_open(2) / pidfd_send_signal(2).
UniqueFd pidfd_open(pid_t pid);
// The same without throwing: an empty UniqueFd, with errno set (ESRCH: no
// such process; EINVAL: a thread that is not a process leader; ENOSYS,
// EMFILE, ENOMEM...).
UniqueFd try_pidfd_open(pid_t pid) noexcept;
// The pidfd of a child just started; a child we cannot get one for (no fd
// left) is killed and reaped rather than left untracked, and the OSError
// says that `what` could not be started.
UniqueFd pidfd_of_new_child(pid_t pid, const std::string& what);
// Whether the process behind a pidfd has exited (zombie or reaped).
bool pidfd_exited(int pidfd) noexcept;
// Returns false if the process has already been reaped (ESRCH).
bool pidfd_kill(int pidfd, int sig);

// Signals a helper process must survive from its first instruction (a
// terminal's Ctrl-C reaches the whole process group, the helper too, and it
// may come before the helper could ignore it): the starting thread blocks
// them around fork / posix_spawn, so the new process starts with them
// blocked; it then calls ignore_and_unblock, which also drops any that came
// meanwhile. Why: docs/design.md, "Helpers ignore Ctrl-C from the start".
class BlockSignals {
 public:
  explicit BlockSignals(std::initializer_list<int> sigs) noexcept;
  ~BlockSignals() { restore(); }
  // Back to the calling thread's previous mask (the parent, after the fork;
  // the new process never restores it: it ignores and unblocks).
  void restore() noexcept;
  BlockSignals(const BlockSignals&) = delete;
  BlockSignals& operator=(const BlockSignals&) = delete;

 private:
  sigset_t old_;
  bool blocked_ = true;
};
// In the new process: `sigs` ignored, then unblocked.
void ignore_and_unblock(std::initializer_list<int> sigs) noexcept;
// Or only unblocked, when the new process turns out not to be a helper.
void unblock_signals(std::initializer_list<int> sigs) noexcept;
// Tests only: a non-zero signal number makes every process mpxx forks from
// now on send itself that signal as its first act (forked_child_starts()),
// as a Ctrl-C arriving at that moment would.
extern std::atomic<int> signal_forked_children;
inline void forked_child_starts() noexcept {
  if (const int sig = signal_forked_children.load(std::memory_order_relaxed)) ::raise(sig);
}

}  // namespace mpxx::sys
