#include "mpxx/detail/frame.hpp"

#include <cstdio>
#include <cstring>
#include <string>

namespace mpxx::detail::wire {

namespace {
constexpr unsigned char kMagic[4] = {'M', 'P', 'X', 'X'};

void put_header(std::byte* out, FrameKind kind, std::uint64_t length, std::uint16_t flags = 0) {
  std::memcpy(out, kMagic, 4);
  out[4] = std::byte{kFrameVersion};
  out[5] = static_cast<std::byte>(kind);
  out[6] = static_cast<std::byte>(flags & 0xff);
  out[7] = static_cast<std::byte>(flags >> 8);
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<std::byte>((length >> (8 * i)) & 0xff);
}
}  // namespace

const char* frame_kind_name(FrameKind k) noexcept {
  switch (k) {
    case FrameKind::value: return "value";
    case FrameKind::call: return "call";
    case FrameKind::result: return "result";
    case FrameKind::error: return "error";
    case FrameKind::boot: return "boot";
    case FrameKind::control: return "control";
    case FrameKind::bytes: return "bytes";
  }
  return "unknown";
}

void write_header(Writer& w, FrameKind kind, std::uint64_t length, std::uint16_t flags) {
  put_header(w.extend(kHeaderSize), kind, length, flags);
}

std::size_t begin_frame(Writer& w, FrameKind kind) {
  std::size_t at = w.size();
  put_header(w.extend(kHeaderSize), kind, 0);
  return at;
}

void end_frame(Writer& w, std::size_t at) {
  std::uint64_t len = w.total_size() - at - kHeaderSize;
  auto kind = static_cast<FrameKind>(w.data()[at + 5]);
  put_header(w.data() + at, kind, len);
}

FrameHeader parse_header(std::span<const std::byte> h, std::uint64_t max_length) {
  if (h.size() < kHeaderSize)
    throw ProtocolError("mpxx: truncated frame header: " + std::to_string(h.size()) + " of " +
                        std::to_string(kHeaderSize) + " bytes");
  if (std::memcmp(h.data(), kMagic, 4) != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%02x %02x %02x %02x", unsigned(h[0]), unsigned(h[1]),
                  unsigned(h[2]), unsigned(h[3]));
    throw ProtocolError(std::string("mpxx: bad frame magic (") + buf +
                        "): not an mpxx message, or the stream lost its framing");
  }
  auto version = static_cast<unsigned>(h[4]);
  if (version != kFrameVersion)
    throw ProtocolError("mpxx: unsupported frame version " + std::to_string(version) +
                        " (this build speaks version " + std::to_string(kFrameVersion) + ")");
  auto kind = static_cast<unsigned>(h[5]);
  if (kind == 0 || kind > kMaxFrameKind)
    throw ProtocolError("mpxx: unknown frame kind " + std::to_string(kind));
  std::uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<std::uint64_t>(h[8 + i]) << (8 * i);
  if (len > max_length)
    throw ProtocolError("mpxx: frame of " + std::to_string(len) + " bytes exceeds the limit of " +
                        std::to_string(max_length));
  auto flags = static_cast<std::uint16_t>(static_cast<unsigned>(h[6]) | (static_cast<unsigned>(h[7]) << 8));
  if ((flags & ~(kFlagExternal | kFlagPeerRead)) || flags == kFlagPeerRead)
    throw ProtocolError("mpxx: unknown frame flags " + std::to_string(flags));
  if (flags == kFlagExternal && len != 8)
    throw ProtocolError("mpxx: an external frame must carry an 8-byte size, not " + std::to_string(len));
  if ((flags & kFlagPeerRead) && (len < 24 || len > 8 + 16 * kMaxPeerReadPieces || (len - 8) % 16 != 0))
    throw ProtocolError("mpxx: a peer-read frame must carry a size and 1 to " + std::to_string(kMaxPeerReadPieces) +
                        " pieces, not " +
                        std::to_string(len) + " bytes");
  return {static_cast<FrameKind>(kind), len, flags};
}

std::span<const std::byte> open_frame(std::span<const std::byte> frame, FrameKind expect,
                                      std::uint64_t max_length) {
  FrameHeader h = parse_header(frame, max_length);
  if (h.kind != expect)
    throw ProtocolError(std::string("mpxx: expected a ") + frame_kind_name(expect) +
                        " frame, got a " + frame_kind_name(h.kind) + " frame");
  if (frame.size() - kHeaderSize != h.length)
    throw ProtocolError("mpxx: frame says " + std::to_string(h.length) + " payload bytes but " +
                        std::to_string(frame.size() - kHeaderSize) + " are present");
  return frame.subspan(kHeaderSize);
}

}  // namespace mpxx::detail::wire
