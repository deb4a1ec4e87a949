// libFuzzer target for the wire decoders every channel shares: frame
// headers, tagged values of several shapes, calls (entry id, function
// reference, arguments), remote exceptions, and a Connection's byte stream.
// The first input byte picks the decoder. Any mpxx::Error is an expected
// rejection; a crash, a leak, an out-of-memory or any other exception is a
// bug. (The other families have targets of their own: see CMakeLists.txt.)
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "fuzz_seeds.hpp"
#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/connection.hpp"


namespace wire = mpxx::detail::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  try {
    switch (data[0] % 10) {
      case 0:
        wire::parse_header(in, 1 << 20);
        break;
      case 1:
        wire::open_frame(in, wire::FrameKind::value, 1 << 20);
        break;
      case 2: {
        wire::Reader r(in);
        wire::decode_tagged<std::string>(r);
        break;
      }
      case 3: {
        wire::Reader r(in);
        wire::decode_tagged<std::map<std::string, std::vector<double>>>(r);
        break;
      }
      case 4: {
        wire::Reader r(in);
        wire::decode_tagged<fuzz::Record>(r);
        break;
      }
      case 5: {
        wire::Reader r(in);
        wire::decode<std::tuple<int, std::optional<std::string>, std::variant<int, std::vector<int>>>>(r);
        break;
      }
      case 6: {
        wire::Reader r(in);
        wire::Writer out;
        mpxx::detail::invoke_call(r, &out);
        break;
      }
      case 7: {
        wire::Reader r(in);
        mpxx::detail::decode_exception(r);
        break;
      }
      case 8:
      case 9: {
        // A byte stream as a Connection receives it: CPython length
        // prefixes around mpxx frames (or raw bytes).
        if (in.size() > 60000) break;  // stays within the socket buffer
        const int fd = fuzz::stream_of(in);
        if (fd < 0) break;
        mpxx::Connection c(fd, true, false, true);
        for (int i = 0; i < 64; ++i) {
          if (data[0] % 10 == 8)
            c.recv<std::vector<std::string>>();
          else
            c.recv_bytes(1 << 20);
        }
        break;
      }
    }
  } catch (const mpxx::Error&) {
  }
  return 0;
}
