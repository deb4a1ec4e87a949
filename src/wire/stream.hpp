// src/wire/stream.hpp - whole frames over a stream socket or pipe, with the
// file descriptors that travel beside them. Internal.
#pragma once

#include <cstdint>
#include <vector>

#include "mpxx/detail/buffer.hpp"
#include "mpxx/detail/frame.hpp"

namespace mpxx::detail::wire {

// Sends w's bytes (one or more complete frames) and w.fds(). False if the
// peer is gone.
bool send_frame(int fd, const Writer& w);

// Receives one frame into `payload` (cleared first) and the fds sent with
// it. Returns false on a clean EOF before the first byte. A truncated frame,
// a bad header or one over max_length is a ProtocolError.
bool recv_frame(int fd, FrameHeader& header, Writer& payload, std::vector<int>& fds,
                std::uint64_t max_length = kDefaultMaxFrame);

}  // namespace mpxx::detail::wire
