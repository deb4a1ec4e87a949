// libFuzzer target for what a manager's server and its clients read from
// each other: the server's requests (run against a server holding one
// object of each built-in kind), a client's replies (an error of each kind,
// values of several shapes), and the length-prefixed stream both read
// (Channel). The first input byte picks the decoder; any mpxx::Error is an
// expected rejection.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fuzz_seeds.hpp"
#include "manager/channel.hpp"
#include "manager/protocol.hpp"
#include "mpxx/detail/manager_core.hpp"

namespace mgr = mpxx::detail::mgr;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  try {
    const int pick = data[0] % 5;
    if (pick == 0) {
      mgr::fuzz_requests(in);
    } else if (pick <= 3) {
      // A reply as transact() opens it, then its result as the typed calls
      // decode it: a list's items, a dict, an int.
      std::string reply(reinterpret_cast<const char*>(in.data()), in.size());
      const std::string result = mgr::open_reply(std::move(reply));
      auto bytes = std::as_bytes(std::span(result.data(), result.size()));
      if (pick == 1) {
        mpxx::detail::wire::Reader r(bytes);
        mgr::take_values<std::string>(r);
      } else if (pick == 2) {
        mgr::decode_value<std::map<std::string, std::vector<int>>>(bytes);
      } else {
        mgr::decode_value<long>(bytes);
      }
    } else {
      if (in.size() > 60000) return 0;  // stays within the socket buffer
      const int fd = fuzz::stream_of(in);
      if (fd < 0) return 0;
      mgr::Channel c(mpxx::Connection(fd, true, true, false));
      for (int i = 0; i < 64; ++i) c.recv();
    }
  } catch (const mpxx::Error&) {
  }
  return 0;
}
