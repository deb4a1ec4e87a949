// src/channel/large_message.cpp - values over 1 MiB between mpxx processes
// (see large_message.hpp): the side pipe, and the peer-read grant and answer
// on both ends.
#include "channel/large_message.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "channel/peer_read.hpp"
#include "mpxx/errors.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

namespace {

// The part of a large value read before decoding starts (the decoder reads
// the rest itself; see PipeSource).
constexpr std::uint64_t kStreamedStart = 64u << 10;

// Blocks SIGPIPE for the calling thread while it lives; a SIGPIPE raised
// meanwhile (none was pending before) is consumed, never delivered.
class NoSigpipe {
 public:
  NoSigpipe() {
    ::sigemptyset(&pipe_only_);
    ::sigaddset(&pipe_only_, SIGPIPE);
    sigset_t pending;
    ::sigpending(&pending);
    was_pending_ = ::sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_only_, &old_);
  }
  NoSigpipe(const NoSigpipe&) = delete;
  NoSigpipe& operator=(const NoSigpipe&) = delete;
  ~NoSigpipe() {
    sigset_t pending;
    ::sigpending(&pending);
    if (!was_pending_ && ::sigismember(&pending, SIGPIPE) == 1) {
      timespec zero{};
      ::sigtimedwait(&pipe_only_, nullptr, &zero);
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_only_, old_;
  bool was_pending_ = false;
};

// Streams a large payload (`parts`: the encode buffer's bytes with the
// value's large blocks between them, Writer::pieces) into the pipe `fd`:
// its pages handed over with vmsplice, the last pipe-full copied with
// write(), so that when this returns the reader has taken every referenced
// page and the caller may change or free the memory at once. Like CPython's
// send of a large message, this returns only once the receiver has read all
// but the last pipe-full (see docs/design.md, "Large values through a pipe").
//
// A pipe has no MSG_NOSIGNAL: SIGPIPE is blocked while writing (NoSigpipe).
// False if the reader is gone.
bool splice_out(int fd, const std::vector<std::span<const std::byte>>& parts) {
  ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);  // fewer wakeups; the default 64 KiB works too
  const int cap = ::fcntl(fd, F_GETPIPE_SZ);
  std::size_t n = 0;
  for (const auto& part : parts) n += part.size();
  const std::size_t spliced = n - std::min<std::size_t>(n, cap > 0 ? static_cast<std::size_t>(cap) : 65536);
  NoSigpipe guard;
  bool can_splice = true;
  std::size_t sent = 0;
  for (const auto& part : parts) {
    std::size_t off = 0;
    while (off < part.size()) {
      if (can_splice && sent < spliced) {
        iovec iov{const_cast<std::byte*>(part.data() + off), std::min(part.size() - off, spliced - sent)};
        const ssize_t r = ::vmsplice(fd, &iov, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EPIPE) return false;
        if (r < 0) {
          can_splice = false;  // vmsplice refused (seccomp, an unusual kernel): copy the rest
          continue;
        }
        off += static_cast<std::size_t>(r);
        sent += static_cast<std::size_t>(r);
      } else {
        if (!sys::write_full(fd, part.data() + off, part.size() - off)) return false;
        sent += part.size() - off;
        off = part.size();
      }
    }
  }
  return true;
}

// One read() from a large message's pipe, of at most n bytes: waits (up to
// the deadline, if any) for data, and the end of the pipe in the middle of a
// message is an EOFError.
std::size_t read_some(int fd, std::byte* p, std::size_t n, const std::optional<sys::Deadline>& deadline) {
  for (;;) {
    if (deadline && !sys::wait_readable(fd, *deadline))
      throw TimeoutError("mpxx: the peer sent nothing in time (stalled in the middle of a message)");
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) sys::throw_errno("read(message pipe)");
    if (r == 0) throw EOFError("mpxx: the other end closed the connection in the middle of a message");
    return static_cast<std::size_t>(r);
  }
}

// Reads a large payload of `size` bytes from its pipe into `out`, which
// grows with what arrives (a peer cannot make us allocate by announcing).
void splice_in(int fd, wire::Writer& out, std::uint64_t size, const std::optional<sys::Deadline>& deadline) {
  std::uint64_t got = 0;
  while (got < size) {
    std::size_t room = static_cast<std::size_t>(
        std::min<std::uint64_t>(size - got, std::max<std::uint64_t>(std::uint64_t{1} << 20, got)));
    out.reserve(static_cast<std::size_t>(got) + room);
    const std::size_t r = read_some(fd, out.data() + got, room, deadline);
    out.extend(r);
    got += r;
  }
}

// The rest of a large message, read from its pipe as the decoder asks for
// it (see wire::Source). What the decoder leaves unread is drained when the
// message is done with, so the sender's send() completes as it did when the
// receiver read everything first.
class PipeSource final : public wire::Source {
 public:
  PipeSource(sys::UniqueFd pipe, std::uint64_t left, std::optional<sys::Deadline> deadline)
      : pipe_(std::move(pipe)), left_(left), deadline_(deadline) {}
  PipeSource(const PipeSource&) = delete;
  PipeSource& operator=(const PipeSource&) = delete;
  ~PipeSource() override {
    std::byte sink[65536];
    try {
      while (left_ > 0) read(sink, static_cast<std::size_t>(std::min<std::uint64_t>(left_, sizeof sink)));
    } catch (...) {
    }
  }

  std::size_t left() const noexcept override { return static_cast<std::size_t>(left_); }

  void read(void* out, std::size_t n) override {
    auto* p = static_cast<std::byte*>(out);
    while (n > 0) {
      const std::size_t r = read_some(pipe_.get(), p, n, deadline_);
      p += r;
      n -= r;
      left_ -= r;
    }
  }

 private:
  sys::UniqueFd pipe_;
  std::uint64_t left_;
  std::optional<sys::Deadline> deadline_;
};

}  // namespace

void send_large(ConnState& c, const wire::Writer& w) {
  // The payload streams through a pipe of its own, sent with a small frame.
  // Between the ends of a Pipe with a ring, the receiver is offered the
  // payload where it is, to read it itself (peer_read.hpp); the pipe sent
  // along serves if it may not.
  const std::size_t payload = w.total_size() - wire::kHeaderSize;
  const auto parts = w.pieces(wire::kHeaderSize);
  auto [rd, wr] = sys::make_pipe();
  std::optional<PeerReadGrant> grant;
  if (c.ring && parts.size() <= wire::kMaxPeerReadPieces && w.fds().size() + 3 <= sys::kMaxFdsPerMessage)
    grant = make_peer_read_grant();
  auto kind = static_cast<wire::FrameKind>(w.data()[5]);
  wire::Writer small;
  wire::write_header(small, kind, 8 + (grant ? 16 * parts.size() : 0),
                     wire::kFlagExternal | (grant ? wire::kFlagPeerRead : 0));
  small.pod(static_cast<std::uint64_t>(payload));
  std::vector<int> fds = w.fds();
  fds.push_back(rd.get());
  if (grant) {
    write_peer_read_pieces(small.extend(16 * parts.size()), parts);
    fds.push_back(grant->asker.get());
    fds.push_back(grant->pidfd.get());
  }
  send_message(c, small.data(), small.size(), fds);  // with its marker, on a ring
  rd.reset();
  if (grant) {
    grant->asker.reset();
    grant->pidfd.reset();
    switch (await_peer_read_answer(grant->answer.get())) {
      case PeerReadAnswer::done:
        return;
      case PeerReadAnswer::gone:
        throw OSError(EPIPE, "mpxx: send: the other end closed the connection before it had read "
                             "the whole message");
      case PeerReadAnswer::push:
        break;
    }
  }
  if (!splice_out(wr.get(), parts))
    throw OSError(EPIPE, "mpxx: send: the other end closed the connection before it had read "
                         "the whole message");
}

std::span<const std::byte> recv_large(ConnState& c, std::span<const std::byte> frame,
                                      const wire::FrameHeader& h, wire::Writer& storage,
                                      std::vector<int>& fds, std::unique_ptr<wire::Source>& rest) {
  const bool peer_read = h.flags & wire::kFlagPeerRead;
  if (fds.size() < (peer_read ? 3u : 1u)) throw ProtocolError("mpxx: recv: external frame without its pipe");
  if (peer_read && !c.ring)
    throw ProtocolError("mpxx: recv: a large value offered where it is, on a connection without a ring");
  std::uint64_t size;
  std::memcpy(&size, frame.data() + wire::kHeaderSize, 8);
  if (size > wire::kDefaultMaxFrame)
    throw ProtocolError("mpxx: recv: external message of " + std::to_string(size) +
                        " bytes exceeds the limit");
  const std::uint64_t first_part = std::min<std::uint64_t>(size, kStreamedStart);
  sys::UniqueFd pidfd, asker;
  if (peer_read) {
    pidfd = sys::UniqueFd(fds.back());
    fds.pop_back();
    asker = sys::UniqueFd(fds.back());
    fds.pop_back();
  }
  sys::UniqueFd pipe(fds.back());
  fds.pop_back();
  if (peer_read) {
    const pid_t sender = pidfd_pid(pidfd.get());
    auto source = std::make_unique<PeerReadSource>(frame.subspan(wire::kHeaderSize + 8), size, sender,
                                                   std::move(pidfd), std::move(asker));
    wire::Writer payload;
    if (source->start(payload, static_cast<std::size_t>(first_part))) {
      storage = std::move(payload);
      if (first_part < size) rest = std::move(source);
      return {storage.data(), storage.size()};
    }
    // Not permitted: the sender now streams the payload through the pipe.
  }
  struct stat st {};
  if (::fstat(pipe.get(), &st) < 0 || !S_ISFIFO(st.st_mode))
    throw ProtocolError("mpxx: recv: external frame without its pipe");
  // From a Pipe's other end only the start, from other peers all of it (see
  // docs/design.md, "Large values: what is read before decoding").
  const std::uint64_t first = c.ring ? first_part : size;
  wire::Writer payload;
  splice_in(pipe.get(), payload, first, c.deadline);
  storage = std::move(payload);
  if (first < size) rest = std::make_unique<PipeSource>(std::move(pipe), size - first, c.deadline);
  return {storage.data(), storage.size()};
}

}  // namespace mpxx::detail
