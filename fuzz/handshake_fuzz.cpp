// libFuzzer target for the authentication handshake of Listener and Client
// (CPython's challenge-response), fed a peer's bytes before it is trusted:
// as the connecting side reads them (a challenge of any digest, then the
// verdict and the answer to its own challenge) and as the listening side
// reads them (the answer to its challenge, then the peer's challenge). The
// first input byte picks the side; any mpxx::Error is an expected
// rejection.

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "channel/connection_state.hpp"
#include "fuzz_seeds.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 60000) return 0;  // stays within the socket buffer
  int writer = -1;  // kept open: what the handshake writes stays there, unread
  const int fd = fuzz::stream_of(std::as_bytes(std::span(data + 1, size - 1)), &writer);
  if (fd < 0) return 0;
  try {
    if (data[0] % 2 == 0) {
      mpxx::Connection c(fd, true, true, false);
      mpxx::detail::client_handshake(c, "fuzz key", std::chrono::milliseconds(1000));
    } else {
      mpxx::detail::advance_server_handshake(fd, "fuzz key", "{sha256}" + std::string(40, 'c'));
    }
  } catch (const mpxx::Error&) {
  }
  ::close(writer);
  return 0;
}
