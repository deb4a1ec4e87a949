// src/channel/large_message.hpp - values over 1 MiB between mpxx processes.
// Internal.
//
// Such a value's payload does not travel in its message: the message is a
// small external frame (wire::kFlagExternal) with the payload's size and a
// pipe of its own, through which the sender streams the payload (its pages
// handed over with vmsplice). Between the ends of a Pipe with a ring, the
// frame also offers the payload where it is in the sender's memory
// (wire::kFlagPeerRead): the receiver reads it from there itself
// (peer_read.hpp), or, where it may not, asks the sender for the pipe.
// Either way the receiver makes the only copy, and the decoder reads all but
// the start of the payload straight into the value (wire::Source).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "channel/connection_state.hpp"
#include "mpxx/detail/buffer.hpp"
#include "mpxx/detail/frame.hpp"

namespace mpxx::detail {

// Encoded values larger than this take this path, between mpxx peers
// (ConnState::mpxx_peer).
inline constexpr std::size_t kExternalThreshold = 1u << 20;

// Sends the encoded value `w` as an external frame, then its payload (read
// by the receiver or pushed through the pipe). Returns once the receiver has
// read it (on the pipe, all but the last pipe-full): the memory `w` refers
// to may change at once.
void send_large(ConnState& c, const wire::Writer& w);

// Receives the payload of the external frame `frame` (header `h`), whose fds
// are in `fds` (the pipe last, or with kFlagPeerRead the pipe, the answer
// socket and the sender's pidfd): its start into `storage`, which the
// returned span then covers, and what the decoder is to read itself into
// `rest`. The fds it takes are removed from `fds`.
std::span<const std::byte> recv_large(ConnState& c, std::span<const std::byte> frame,
                                      const wire::FrameHeader& h, wire::Writer& storage,
                                      std::vector<int>& fds, std::unique_ptr<wire::Source>& rest);

}  // namespace mpxx::detail
