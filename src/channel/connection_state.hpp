// src/channel/connection_state.hpp - what a Connection handle refers to, and
// the calls on it that connection.cpp shares with large_message.cpp and
// wait.cpp. Internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "mpxx/connection.hpp"
#include "channel/pipe_ring.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

struct ConnState {
  sys::UniqueFd fd;
  bool readable = false;
  bool writable = false;
  bool mpxx_peer = false;  // the other end is mpxx: a large value goes beside its message (large_message.hpp)
  std::shared_ptr<PipeRingEnd> ring;  // a Pipe's shared-memory ring (pipe_ring.hpp), if it has one
  // While set (during an authentication handshake), a peer that sends
  // nothing before it is a TimeoutError instead of a wait forever.
  std::optional<sys::Deadline> deadline;
};

struct ConnAccess {
  static void set_deadline(Connection& c, std::optional<sys::Deadline> d) { c.st_->deadline = d; }
  static void set_ring(Connection& c, std::shared_ptr<PipeRingEnd> l) { c.st_->ring = std::move(l); }
  static ConnState& state(const Connection& c) { return *c.st_; }
  // The handle itself (null for a Connection never connected).
  static const std::shared_ptr<ConnState>& handle(const Connection& c) { return c.st_; }
};

// The state of an open handle; OSError (EBADF) if it is closed, or cannot
// read (need_read) or write (need_write).
ConnState& live(const std::shared_ptr<ConnState>& st, bool need_read, bool need_write);

// Sends one message: on a Pipe's ring, a record there (small, without fds)
// or a marker and the message on the socket; otherwise on the socket.
void send_message(ConnState& c, const void* data, std::size_t n, const std::vector<int>& fds);

// Sends one message on the socket in CPython's framing; on a Pipe's ring,
// after the tag of its marker (at `tag` in the ring, see pipe_ring.hpp).
void send_on_socket(ConnState& c, const void* data, std::size_t n, const std::vector<int>& fds,
                    std::optional<std::uint64_t> tag = std::nullopt);

}  // namespace mpxx::detail

namespace mpxx::detail {
struct ListenerAccess {
  // l.accept(), or nullopt as soon as one of `wake` is readable (for a
  // server that also waits for a stop request).
  static std::optional<Connection> accept_or_wake(Listener& l, std::span<const int> wake);
};
// The connecting side of CPython's mutual authentication (Client's).
void client_handshake(Connection& c, const std::string& authkey, std::chrono::milliseconds timeout);
// The listening side, as Listener::accept drives it without blocking, on a
// socket `fd` (taken over) to which `challenge` was sent: what has arrived
// taken as far as it goes; true once the peer is authenticated both ways
// (for the fuzz target).
bool advance_server_handshake(int fd, const std::string& authkey, const std::string& challenge);
}  // namespace mpxx::detail
