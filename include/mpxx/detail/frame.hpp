// mpxx/detail/frame.hpp - the envelope around every message mpxx sends.
//
//   offset  size  field
//        0     4  magic   "MPXX" (0x4d 0x50 0x58 0x58)
//        4     1  version (kFrameVersion)
//        5     1  kind    (FrameKind)
//        6     2  flags   (kFlagExternal, kFlagExternal | kFlagPeerRead, or 0)
//        8     8  payload length in bytes, little endian
//       16     -  payload
//
// parse_header() checks magic, version, kind, flags and length (against a
// caller-given limit) before anything trusts the payload; each failure is a
// ProtocolError saying what was wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "mpxx/detail/buffer.hpp"

namespace mpxx::detail::wire {

enum class FrameKind : std::uint8_t {
  value = 1,    // one tagged value (Connection::send, Queue::put)
  call = 2,     // a callable id, its state and its arguments
  result = 3,   // the value a call returned
  error = 4,    // an exception that escaped a call (type, what, backtrace)
  boot = 5,     // everything a spawned or forkserver child needs to start
  control = 6,  // small protocol messages (forkserver requests, acks)
  bytes = 7,    // raw bytes (Connection::send_bytes)
};
inline constexpr std::uint8_t kMaxFrameKind = 7;
inline constexpr std::uint8_t kFrameVersion = 1;
inline constexpr std::size_t kHeaderSize = 16;
// Default ceiling for one message: large enough for any sane value, small
// enough that a corrupt length cannot make the receiver allocate the machine.
inline constexpr std::uint64_t kDefaultMaxFrame = std::uint64_t{1} << 34;  // 16 GiB

// The payload is not in the frame: it streams through a pipe sent with it,
// and the frame's 8-byte payload is its size. Large messages between mpxx
// processes take this path (see src/channel/large_message.hpp), so the
// sender's pages are handed over with vmsplice instead of being copied into
// a socket buffer.
inline constexpr std::uint16_t kFlagExternal = 1;
// With kFlagExternal: after the size, the payload's pieces in the sender's
// memory, as (address, length) pairs of 8 bytes each (1 to kMaxPeerReadPieces),
// for the receiver to read itself (see src/channel/peer_read.hpp).
inline constexpr std::uint16_t kFlagPeerRead = 2;
inline constexpr std::size_t kMaxPeerReadPieces = 256;

struct FrameHeader {
  FrameKind kind;
  std::uint64_t length;
  std::uint16_t flags = 0;
};

// Appends a header; the payload must follow with exactly `length` bytes.
void write_header(Writer& w, FrameKind kind, std::uint64_t length, std::uint16_t flags = 0);
// Starts a frame whose length is patched by end_frame (for payloads encoded
// in place). Returns the offset of the header.
std::size_t begin_frame(Writer& w, FrameKind kind);
void end_frame(Writer& w, std::size_t header_offset);

FrameHeader parse_header(std::span<const std::byte> header, std::uint64_t max_length = kDefaultMaxFrame);
// A whole frame in one buffer: parses the header, checks that exactly
// header.length payload bytes follow and that the kind is `expect`.
std::span<const std::byte> open_frame(std::span<const std::byte> frame, FrameKind expect,
                                      std::uint64_t max_length = kDefaultMaxFrame);
const char* frame_kind_name(FrameKind k) noexcept;

}  // namespace mpxx::detail::wire
