// src/channel/connection.cpp - Connection and Pipe: CPython's message
// framing on a Unix stream socket or, between the ends of a Pipe, its
// shared-memory ring (pipe_ring.hpp), with fds and a short spin before
// sleeping; send/recv, close, a Connection's pickling, and Pipe(). Values
// over 1 MiB take large_message.cpp's path; poll and mpxx::wait: wait.cpp.
#include "mpxx/connection.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>

#include "mpxx/detail/shm.hpp"
#include "channel/connection_state.hpp"
#include "channel/large_message.hpp"
#include "sys/fd.hpp"

namespace mpxx {
namespace detail {

namespace {

constexpr auto kSpin = std::chrono::microseconds(50);
constexpr auto kNap = std::chrono::milliseconds(250);

// CPython's length prefix: 4 bytes big-endian, or -1 then 8 bytes.
std::size_t put_length(unsigned char* out, std::uint64_t n) {
  if (n <= 0x7fffffff) {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<unsigned char>(n >> (24 - 8 * i));
    return 4;
  }
  std::memset(out, 0xff, 4);
  for (int i = 0; i < 8; ++i) out[4 + i] = static_cast<unsigned char>(n >> (56 - 8 * i));
  return 12;
}

}  // namespace

ConnState& live(const std::shared_ptr<ConnState>& st, bool need_read, bool need_write) {
  if (!st || !st->fd) throw OSError(EBADF, "mpxx: handle is closed");
  if (need_read && !st->readable) throw OSError(EBADF, "mpxx: connection is write-only");
  if (need_write && !st->writable) throw OSError(EBADF, "mpxx: connection is read-only");
  return *st;
}

void send_on_socket(ConnState& c, const void* data, std::size_t n, const std::vector<int>& fds,
                    std::optional<std::uint64_t> tag) {
  unsigned char head[kTagBytes + 12];
  std::size_t hn = 0;
  if (tag) {
    head[0] = kTag;
    std::memcpy(head + 1, &*tag, sizeof *tag);
    hn = kTagBytes;
  }
  hn += put_length(head + hn, n);
  // Untagged: CPython's framing, in one go. Tagged: in pieces (pipe_ring.hpp).
  auto* bytes = static_cast<unsigned char*>(const_cast<void*>(data));
  const std::size_t first = tag ? std::min(n, kSocketPiece - hn) : n;
  iovec iov[2] = {{head, hn}, {bytes, first}};
  if (!sys::sendmsg_all(c.fd.get(), iov, first ? 2 : 1, fds))
    throw OSError(EPIPE, "mpxx: send: the other end of the connection is closed");
  head[0] = kTagMore;
  for (std::size_t at = first; at < n;) {
    const std::size_t k = std::min(n - at, kSocketPiece - kTagBytes);
    iovec more[2] = {{head, kTagBytes}, {bytes + at, k}};
    if (!sys::sendmsg_all(c.fd.get(), more, 2, {}))
      throw OSError(EPIPE, "mpxx: send: the other end of the connection is closed");
    at += k;
  }
}

// One message. On a Pipe's ring, a small message without fds is a record
// in shared memory; any other leaves a marker there and takes the socket
// (under the writers' lock, so markers and messages keep one order).
// (A local copy of the ring pointer: another thread may close() meanwhile.)
void send_message(ConnState& c, const void* data, std::size_t n, const std::vector<int>& fds) {
  std::shared_ptr<PipeRingEnd> ring = c.ring;
  if (!ring) return send_on_socket(c, data, n, fds);
  const int fd = c.fd.get();
  if (fds.size() > sys::kMaxFdsPerMessage)  // refused before any marker
    throw ValueError("mpxx: a message can carry at most " + std::to_string(sys::kMaxFdsPerMessage) +
                     " file descriptors");
  std::lock_guard<Lock> hold(ring->write_lock());
  if (ring->write_lock().recovered()) ring->after_recovery(fd);
  if (fds.empty() && n <= kMaxInline && ring->put_inline(fd, data, n)) return;
  const std::uint64_t at = ring->put_marker(fd, kRecordOnSocket);
  try {
    send_on_socket(c, data, n, fds, at);
    ring->sent();
  } catch (...) {
    // sendmsg refused the message (nothing went out) or the reader is
    // gone: tell a reader waiting behind the marker not to wait. (The
    // in-flight flag stays set until then: dying in between, this writer
    // leaves the cancel to the next.)
    try {
      ring->put_marker(fd, kRecordCancel);
    } catch (...) {
    }
    ring->sent();
    throw;
  }
}

namespace {

void close_all(std::vector<int>& fds) {
  for (int f : fds) ::close(f);
  fds.clear();
}

// Receives exactly n bytes (collecting fds). The first read of a message
// may spin before blocking; false on EOF before any byte if eof_ok.
bool recv_exact(int fd, void* buf, std::size_t n, std::vector<int>& fds, bool eof_ok, bool spin,
                const std::optional<sys::Deadline>& deadline = std::nullopt) {
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  auto spin_until = std::chrono::steady_clock::time_point::min();
  if (spin) spin_until = std::chrono::steady_clock::now() + kSpin;
  while (got < n) {
    iovec iov{p + got, n - got};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(253 * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    bool spinning = spin && got == 0 && std::chrono::steady_clock::now() < spin_until;
    bool nonblock = spinning || deadline.has_value();
    ssize_t r = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (nonblock ? MSG_DONTWAIT : 0));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!spinning) {  // wait for data (until the deadline, if there is one)
          pollfd pf{fd, POLLIN, 0};
          int pr = ::poll(&pf, 1, deadline ? deadline->poll_ms() : -1);
          if (pr == 0 && deadline && deadline->expired()) {
            close_all(fds);
            throw TimeoutError("mpxx: the peer sent nothing in time (stalled in the middle of a "
                               "message or of the handshake)");
          }
        } else {
#if defined(__x86_64__) || defined(__i386__)
          for (int i = 0; i < 32; ++i) __builtin_ia32_pause();
#endif
        }
        continue;
      }
      if (errno == ECONNRESET) r = 0;
      else sys::throw_errno("recv");
    }
    sys::take_rights(msg, fds);
    if (r == 0) {
      if (got == 0 && eof_ok) return false;
      throw EOFError("mpxx: the other end closed the connection in the middle of a message");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

[[noreturn]] void too_long(ConnState& c, std::uint64_t n, std::optional<std::size_t> maxlength,
                           std::vector<int>& fds) {
  c.fd.reset();
  c.ring.reset();
  close_all(fds);
  throw OSError(EMSGSIZE, "mpxx: bad message length " + std::to_string(n) +
                              (maxlength ? " (maxlength " + std::to_string(*maxlength) + ")" : "") +
                              "; connection closed");
}

// A tagged message's pieces on a ring's socket (pipe_ring.hpp): how much of
// the payload the piece being read still holds, and the tag the next
// piece must start with.
struct Pieces {
  unsigned char tag[kTagBytes];
  std::size_t left = 0;
};

// Reads a message's length prefix from the socket (after the tag a ring's
// writer puts before it, if `pieces`, which it then describes); nullopt
// at a clean EOF.
std::optional<std::uint64_t> recv_length(ConnState& c, std::vector<int>& fds, bool spin,
                                         Pieces* pieces = nullptr) {
  unsigned char head[kTagBytes];
  if (pieces && !recv_exact(c.fd.get(), pieces->tag, kTagBytes, fds, true, spin, c.deadline))
    return std::nullopt;
  if (!recv_exact(c.fd.get(), head, 4, fds, !pieces, spin, c.deadline)) return std::nullopt;
  std::uint64_t n = (std::uint64_t{head[0]} << 24) | (std::uint64_t{head[1]} << 16) |
                    (std::uint64_t{head[2]} << 8) | head[3];
  std::size_t header = kTagBytes + 4;
  if (n == 0xffffffffu) {
    recv_exact(c.fd.get(), head, 8, fds, false, false, c.deadline);
    n = 0;
    for (int i = 0; i < 8; ++i) n = (n << 8) | head[i];
    header += 8;
  } else if (n & 0x80000000u) {
    c.fd.reset();
    close_all(fds);
    throw ProtocolError("mpxx: negative message length: the stream is corrupt; connection closed");
  }
  if (pieces) pieces->left = static_cast<std::size_t>(std::min<std::uint64_t>(n, kSocketPiece - header));
  return n;
}

// Before reading up to `want` of the `rest` bytes still to come of a
// tagged message: at the end of a piece, takes the next piece's header
// (nullopt if there is none: the writer died between two pieces, and what
// follows is not its message). Returns how many bytes to read from this
// piece now.
std::optional<std::size_t> next_piece(ConnState& c, Pieces& p, std::uint64_t rest, std::uint64_t want) {
  if (p.left == 0) {
    unsigned char front[kTagBytes];
    ssize_t r = sys::retry([&] { return ::recv(c.fd.get(), front, kTagBytes, MSG_PEEK); });
    if (r < 0 && errno == ECONNRESET) r = 0;  // the end of the stream, as recv_exact takes it
    if (r < 0) sys::throw_errno("recv(pipe)");
    if (static_cast<std::size_t>(r) < kTagBytes || front[0] != kTagMore ||
        std::memcmp(front + 1, p.tag + 1, kTagBytes - 1) != 0)
      return std::nullopt;
    std::vector<int> none;
    recv_exact(c.fd.get(), front, kTagBytes, none, false, false, c.deadline);
    p.left = static_cast<std::size_t>(std::min<std::uint64_t>(rest, kSocketPiece - kTagBytes));
  }
  return static_cast<std::size_t>(std::min<std::uint64_t>(want, p.left));
}

enum class Received { message, eof, torn };

// Reads one whole message from the socket into `out` (after its tag, if
// `tagged`, in pieces): eof at a clean EOF, torn if its writer died
// between two pieces (the pieces read, and the fds they brought, are
// dropped).
Received recv_from_socket(ConnState& c, wire::Writer& out, std::vector<int>& fds,
                          std::optional<std::size_t> maxlength, bool spin, bool tagged = false) {
  Pieces pieces;
  const std::optional<std::uint64_t> length = recv_length(c, fds, spin, tagged ? &pieces : nullptr);
  if (!length) return Received::eof;
  const std::uint64_t n = *length;
  if ((maxlength && n > *maxlength) || n > wire::kDefaultMaxFrame) too_long(c, n, maxlength, fds);
  out.clear();
  try {
    // Memory grows with the bytes that actually arrive, not with what the
    // length prefix claims: a peer cannot make us allocate 16 GiB with 4 bytes.
    std::uint64_t got = 0;
    while (got < n) {
      std::size_t chunk = static_cast<std::size_t>(
          std::min<std::uint64_t>(n - got, std::max<std::uint64_t>(std::uint64_t{1} << 16, got)));
      if (tagged) {
        const std::optional<std::size_t> k = next_piece(c, pieces, n - got, chunk);
        if (!k) {
          close_all(fds);
          out.clear();
          return Received::torn;
        }
        chunk = *k;
        pieces.left -= chunk;
      }
      recv_exact(c.fd.get(), out.extend(chunk), chunk, fds, false, false, c.deadline);
      got += chunk;
    }
  } catch (...) {
    close_all(fds);
    throw;
  }
  return Received::message;
}

// Reads and drops the message at the front of a ring's socket whose
// marker's reader died before reading it (pipe_ring.hpp), holding the front
// turn: in pieces, whatever its size, closing the fds it brought.
void drop_stale(ConnState& c) {
  std::vector<int> lost_fds;
  try {
    Pieces pieces;
    std::optional<std::uint64_t> left = recv_length(c, lost_fds, false, &pieces);
    unsigned char sink[16 << 10];
    while (left && *left > 0) {
      const std::optional<std::size_t> k = next_piece(c, pieces, *left, std::min<std::uint64_t>(*left, sizeof sink));
      if (!k) break;  // its writer died too: the rest never came
      recv_exact(c.fd.get(), sink, *k, lost_fds, false, false, c.deadline);
      pieces.left -= *k;
      *left -= *k;
    }
  } catch (...) {
    close_all(lost_fds);
    throw;
  }
  close_all(lost_fds);
}

// Reads one whole message into `out`; returns false at a clean EOF. On a
// Pipe's ring the receiver spins on shared memory, then sleeps in poll()
// on the socket, where senders ring a bell (pipe_ring.hpp).
bool recv_message(ConnState& c, wire::Writer& out, std::vector<int>& fds,
                  std::optional<std::size_t> maxlength) {
  std::shared_ptr<PipeRingEnd> keep = c.ring;  // another thread may close() meanwhile
  if (!keep) return recv_from_socket(c, out, fds, maxlength, !c.deadline) == Received::message;
  PipeRingEnd& ring = *keep;
  const int fd = c.fd.get();
  bool spin = true;
  for (;;) {
    if (ring.has_record() || (spin && ring.spin_for_record(kSpin))) {
      out.clear();
      // A marker is taken holding the front turn, kept until its message
      // is read: pollers keep off the message's bytes, and a tag below the
      // marker's position can only be a dead reader's (pipe_ring.hpp).
      std::optional<PipeRingEnd::FrontTurn> turn;
      if (ring.next_is_marker()) {
        turn.emplace(ring, PipeRingEnd::Drainer::receiver);
        if (!ring.has_record()) continue;  // another receiving thread took it meanwhile
      }
      const PipeRingEnd::Record rec = ring.take(out, maxlength);
      if (maxlength && rec.length > *maxlength) too_long(c, rec.length, maxlength, fds);
      if (rec.flags == kRecordCancel) continue;  // a stray cancel (its marker's message came)
      if (rec.flags == kRecordOnSocket) {
        if (!turn) turn.emplace(ring, PipeRingEnd::Drainer::receiver);  // another thread reads here too
        PipeRingEnd::Next next;
        while ((next = ring.skip_bells(fd, rec.at)) == PipeRingEnd::Next::stale) drop_stale(c);
        if (next == PipeRingEnd::Next::cancelled) continue;
        const Received got =
            next == PipeRingEnd::Next::eof ? Received::eof : recv_from_socket(c, out, fds, maxlength, false, true);
        if (got == Received::torn) continue;  // its writer died part way: lost, as a cut-short send
        if (got == Received::eof)
          throw EOFError("mpxx: the other end closed the connection in the middle of a message");
      }
      return true;
    }
    {
      // Registered before the last look at the ring: a poller in another
      // thread then leaves the bell that wakes us alone.
      PipeRingEnd::Sleeping asleep(ring);
      if (ring.has_record()) continue;
      // In naps: a poller forced to drain may take the bell meant for us.
      // After a nap with nothing to read, a look at the ring, no spin.
      const sys::Deadline nap = sys::Deadline::after(kNap);
      const bool sooner = c.deadline && !c.deadline->infinite() && c.deadline->poll_ms() < nap.poll_ms();
      spin = sys::wait_readable(fd, sooner ? *c.deadline : nap);
    }
    if (spin) {  // the socket is readable
      const PipeRingEnd::Front front = ring.drain_bells(fd, PipeRingEnd::Drainer::receiver);
      if (front == PipeRingEnd::Front::eof) {
        if (ring.has_record()) continue;  // sent before the other end closed
        return false;
      }
      if (front == PipeRingEnd::Front::message && !ring.has_record()) {
        PipeRingEnd::FrontTurn turn(ring, PipeRingEnd::Drainer::receiver);
        if (ring.stale_in_front(fd)) {
          drop_stale(c);
          continue;
        }
        throw ProtocolError("mpxx: recv: a message on the pipe's socket without its marker (two "
                            "processes reading one end at once?)");
      }
    }
    if (c.deadline && c.deadline->expired() && !ring.has_record())
      throw TimeoutError("mpxx: the peer sent nothing in time");
  }
}

std::string eof_message() { return "mpxx: the other end of the connection is closed"; }

}  // namespace
}  // namespace detail

using detail::ConnState;

Connection::Connection(int fd, bool readable, bool writable, bool mpxx_peer)
    : st_(std::make_shared<ConnState>()) {
  if (fd < 0) throw ValueError("mpxx: Connection: invalid handle " + std::to_string(fd));
  if (!readable && !writable)
    throw ValueError("mpxx: Connection: at least one of readable and writable must be true");
  st_->fd.reset(fd);
  st_->readable = readable;
  st_->writable = writable;
  st_->mpxx_peer = mpxx_peer;
}

bool Connection::streams_large() const noexcept { return st_ && st_->mpxx_peer; }

void Connection::send_frame(detail::wire::Writer w) {
  ConnState& c = detail::live(st_, false, true);
  if (c.mpxx_peer && w.total_size() > detail::kExternalThreshold) return detail::send_large(c, w);
  if (!w.refs().empty()) {  // not sent through a pipe after all: one buffer
    detail::wire::Writer flat;
    for (auto piece : w.pieces(0)) flat.put(piece.data(), piece.size());
    for (int fd : w.fds()) flat.add_fd(fd);
    w = std::move(flat);
  }
  detail::send_message(c, w.data(), w.size(), w.fds());
}

std::span<const std::byte> Connection::recv_frame(detail::wire::Writer& storage, std::vector<int>& fds,
                                                  std::unique_ptr<detail::wire::Source>& rest) {
  ConnState& c = detail::live(st_, true, false);
  if (!detail::recv_message(c, storage, fds, std::nullopt)) throw EOFError(detail::eof_message());
  auto all = std::span<const std::byte>(storage.data(), storage.size());
  if (all.size() < detail::wire::kHeaderSize || std::memcmp(all.data(), "MPXX", 4) != 0) {
    detail::close_all(fds);
    throw ProtocolError(
        "mpxx: recv: the message is not an mpxx value (it was sent with send_bytes, or by "
        "another program); use recv_bytes for it");
  }
  detail::wire::FrameHeader h;
  try {
    h = detail::wire::parse_header(all);
    if (h.kind != detail::wire::FrameKind::value)
      throw ProtocolError(std::string("mpxx: recv: expected a value frame, got a ") +
                          detail::wire::frame_kind_name(h.kind) + " frame");
    if (all.size() - detail::wire::kHeaderSize != h.length)
      throw ProtocolError("mpxx: recv: frame length does not match the message");
    if (h.flags & detail::wire::kFlagExternal) return detail::recv_large(c, all, h, storage, fds, rest);
  } catch (...) {
    detail::close_all(fds);
    throw;
  }
  return all.subspan(detail::wire::kHeaderSize);
}

void Connection::send_bytes(std::span<const std::byte> buf, std::size_t offset,
                            std::optional<std::size_t> size) {
  if (offset > buf.size()) throw ValueError("mpxx: send_bytes: offset is beyond the buffer");
  std::size_t n = size.value_or(buf.size() - offset);
  if (n > buf.size() - offset) throw ValueError("mpxx: send_bytes: buffer is shorter than offset + size");
  ConnState& c = detail::live(st_, false, true);
  detail::send_message(c, buf.data() + offset, n, {});
}

std::string Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  ConnState& c = detail::live(st_, true, false);
  detail::wire::Writer w;
  std::vector<int> fds;
  if (!detail::recv_message(c, w, fds, maxlength)) throw EOFError(detail::eof_message());
  detail::close_all(fds);
  return std::string(reinterpret_cast<const char*>(w.data()), w.size());
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buf, std::size_t offset) {
  if (offset > buf.size()) throw ValueError("mpxx: recv_bytes_into: offset is beyond the buffer");
  ConnState& c = detail::live(st_, true, false);
  detail::wire::Writer w;
  std::vector<int> fds;
  if (!detail::recv_message(c, w, fds, std::nullopt)) throw EOFError(detail::eof_message());
  detail::close_all(fds);
  if (w.size() > buf.size() - offset)
    throw BufferTooShort(std::string(reinterpret_cast<const char*>(w.data()), w.size()));
  if (w.size()) std::memcpy(buf.data() + offset, w.data(), w.size());
  return w.size();
}

void Connection::close() noexcept {
  if (st_) {
    st_->fd.reset();
    st_->ring.reset();
  }
}

bool Connection::closed() const noexcept { return !st_ || !st_->fd; }
bool Connection::readable() const noexcept { return st_ && st_->readable; }
bool Connection::writable() const noexcept { return st_ && st_->writable; }

int Connection::fileno() const { return detail::live(st_, false, false).fd.get(); }

void Connection::save(detail::wire::OutArchive& ar) const {
  ConnState& c = detail::live(st_, false, false);
  std::uint32_t index = ar.writer().add_fd(c.fd.get());
  ar(index, static_cast<std::uint8_t>(c.readable | (c.writable << 1) | (c.mpxx_peer << 2) |
                                      (static_cast<bool>(c.ring) << 3)));
  if (c.ring) c.ring->save(ar);
}

void Connection::load(detail::wire::InArchive& ar) {
  std::uint32_t index;
  std::uint8_t flags;
  ar(index, flags);
  if (flags > 15) throw ProtocolError("mpxx: corrupt Connection");
  st_ = std::make_shared<ConnState>();
  st_->fd.reset(ar.reader().take_fd(index));
  st_->readable = flags & 1;
  st_->writable = flags & 2;
  st_->mpxx_peer = flags & 4;
  if (flags & 8) st_->ring = detail::PipeRingEnd::load(ar);
}

namespace detail {
namespace {
// A piece of a tagged message is one skb, sent whole or not at all, only
// while the sending socket's buffer holds two pieces (pipe_ring.hpp, Pieces):
// raises it where a lowered net.core.wmem_default made it smaller (the
// kernel doubles what it is given, up to net.core.wmem_max).
void hold_pieces_whole(int fd) {
  constexpr int kNeed = 2 * static_cast<int>(kSocketPiece + 64);
  int have = 0;
  socklen_t len = sizeof have;
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &have, &len) == 0 && have >= kNeed) return;
  const int want = kNeed / 2;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
}
}  // namespace
}  // namespace detail

std::pair<Connection, Connection> Pipe(bool duplex, PipeOptions options) try {
  auto [a, b] = sys::socket_pair();
  if (options.shared_memory) {
    detail::hold_pieces_whole(a.get());
    detail::hold_pieces_whole(b.get());
  }
  if (!duplex) {
    ::shutdown(a.get(), SHUT_WR);
    ::shutdown(b.get(), SHUT_RD);
  }
  Connection r(a.release(), true, duplex, true);
  Connection w(b.release(), duplex, true, true);
  if (!options.shared_memory) return {std::move(r), std::move(w)};
  auto [ra, wa] = detail::PipeRingEnd::create_pair();
  detail::ConnAccess::set_ring(r, std::move(ra));
  detail::ConnAccess::set_ring(w, std::move(wa));
  return {std::move(r), std::move(w)};
} catch (...) {
  sys::rethrow_with_context("cannot create a Pipe");
}

}  // namespace mpxx
