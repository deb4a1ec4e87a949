// libFuzzer target for the consumers of shared-memory rings, whose bytes a
// peer process can write anything into. A Pipe's end receives from its ring
// (records, markers, cancels) and socket (bells, tags, pieces), as
// recv_bytes() does: the input is the ring's positions and bytes (see
// ring_with_bytes), then the socket's bytes. A Queue gets from its ring
// (data and wrap records; see fuzz_queue_ring). The first input byte picks
// the ring; any mpxx::Error is an expected rejection.

#include <cstddef>
#include <cstdint>

#include "channel/connection_state.hpp"
#include "fuzz_seeds.hpp"
#include "mpxx/queue.hpp"

namespace wire = mpxx::detail::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  try {
    if (data[0] % 2 == 1) {
      mpxx::detail::fuzz_queue_ring(in);
      return 0;
    }
    wire::Reader r(in);
    auto ring = mpxx::detail::ring_with_bytes(r);
    const auto rest = r.take(std::min<std::size_t>(r.remaining(), 60000));  // within the socket buffer
    const int fd = fuzz::stream_of(rest);
    if (fd < 0) return 0;
    mpxx::Connection c(fd, true, false, true);
    mpxx::detail::ConnAccess::set_ring(c, std::move(ring));
    for (int i = 0; i < 64; ++i) c.recv_bytes(1 << 20);
  } catch (const mpxx::Error&) {
  }
  return 0;
}
