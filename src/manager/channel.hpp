// src/manager/channel.hpp - a manager connection after its handshake.
// Internal.
//
// Requests and replies keep CPython's framing (a 4-byte big-endian length,
// or -1 and an 8-byte length), so the bytes on the wire are those of
// Connection::send_bytes; but the receiving side reads whatever is there in
// one call and cuts frames out of its buffer, instead of one call for the
// length and another for the body. A round trip to the manager is then two
// system calls per side, which is most of its cost. Manager messages never
// carry file descriptors, so nothing is lost by reading ahead.
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "mpxx/connection.hpp"

namespace mpxx::detail::mgr {

class Channel {
 public:
  explicit Channel(Connection c);
  Channel(Channel&&) noexcept = default;
  Channel& operator=(Channel&&) noexcept = default;

  // One message. OSError when the peer is gone (EPIPE, ECONNRESET).
  void send(std::span<const std::byte> payload);
  // The next message, valid until the next recv(). Spins briefly before it
  // sleeps; EOFError when the peer has closed (OSError on a reset).
  std::string_view recv();
  int fileno() const noexcept { return fd_; }
  // Whether bytes already read wait in the buffer.
  bool buffered() const noexcept { return end_ > begin_; }

 private:
  bool fill(bool spin);  // reads more; false at EOF
  Connection conn_;      // owns the fd
  int fd_ = -1;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;
};

}  // namespace mpxx::detail::mgr
