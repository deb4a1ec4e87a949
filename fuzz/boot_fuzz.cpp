// libFuzzer target for what a new process reads from the one that started
// it, and the first answer coming back: the boot frame of a spawned or
// forkserver child (read from its socket as the child does, then decoded up
// to its call, then the call), and the configuration a manager's server
// process starts with and the Ready message it answers with. The first input
// byte picks the decoder; any mpxx::Error is an expected rejection.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_seeds.hpp"
#include "manager/protocol.hpp"
#include "mpxx/detail/callable.hpp"
#include "process/boot.hpp"

namespace wire = mpxx::detail::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  try {
    switch (data[0] % 3) {
      case 0: {
        if (in.size() > 60000) break;  // stays within the socket buffer
        const int fd = fuzz::stream_of(in);
        if (fd < 0) break;
        wire::Writer payload;
        std::vector<int> fds;
        bool got = false;
        try {
          got = mpxx::detail::recv_boot(fd, payload, fds);
        } catch (...) {
          ::close(fd);
          throw;
        }
        ::close(fd);
        if (!got) break;
        wire::Reader r(payload.bytes());
        r.set_fds(std::move(fds));
        const mpxx::detail::Boot boot = mpxx::detail::decode_boot(r);
        if (boot.has_call) {
          wire::Writer out;
          mpxx::detail::invoke_call(r, &out);
        }
        break;
      }
      case 1: {
        wire::Reader r(in);
        wire::decode<mpxx::detail::mgr::ServerConfig>(r);
        break;
      }
      case 2: {
        wire::Reader r(in);
        wire::decode<mpxx::detail::mgr::Ready>(r);
        break;
      }
    }
  } catch (const mpxx::Error&) {
  }
  return 0;
}
