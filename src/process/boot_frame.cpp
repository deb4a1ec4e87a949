// src/process/boot_frame.cpp - the boot frame: what the parent sends a
// spawned or forkserver child, and how the child reads it. Encoder and
// decoder stand side by side so that their fields cannot drift apart.
#include <unistd.h>

#include <cstdint>

#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/codec.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/errors.hpp"
#include "mpxx/log.hpp"
#include "process/boot.hpp"
#include "process/runtime.hpp"

namespace mpxx::detail {

void encode_boot(wire::Writer& w, const ProcessState& s) {
  std::size_t at = wire::begin_frame(w, wire::FrameKind::boot);
  wire::encode(w, s.identity);
  wire::encode(w, s.name);
  wire::encode(w, static_cast<std::uint8_t>(s.daemon));
  wire::encode(w, s.authkey);
  wire::encode(w, static_cast<std::int32_t>(::getpid()));
  wire::encode(w, self().name);
  wire::encode(w, static_cast<std::int32_t>(get_logger().level()));
  wire::encode(w, static_cast<std::int32_t>(s.method));
  wire::encode(w, static_cast<std::uint8_t>(s.ignores_interrupts));
  bool has_call = s.has_target;
  wire::encode(w, static_cast<std::uint8_t>(has_call));
  if (has_call) s.target.encode(w);
  wire::end_frame(w, at);
}

Boot decode_boot(wire::Reader& r) {
  Boot b;
  b.identity = wire::decode<std::vector<int>>(r);
  b.name = wire::decode<std::string>(r);
  b.daemon = wire::decode<std::uint8_t>(r) != 0;
  b.authkey = wire::decode<std::string>(r);
  b.parent_pid = wire::decode<std::int32_t>(r);
  b.parent_name = wire::decode<std::string>(r);
  b.log_level = wire::decode<std::int32_t>(r);
  const auto method = wire::decode<std::int32_t>(r);
  if (method < 0 || method > static_cast<std::int32_t>(StartMethod::forkserver))
    throw ProtocolError("mpxx: corrupt boot frame");
  b.method = static_cast<StartMethod>(method);
  const auto ignores = wire::decode<std::uint8_t>(r);
  if (ignores > 1) throw ProtocolError("mpxx: corrupt boot frame");
  b.ignores_interrupts = ignores != 0;
  b.has_call = wire::decode<std::uint8_t>(r) != 0;
  return b;
}

}  // namespace mpxx::detail
