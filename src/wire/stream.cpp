#include "wire/stream.hpp"

#include <unistd.h>

#include <string>

#include "sys/fd.hpp"

namespace mpxx::detail::wire {

bool send_frame(int fd, const Writer& w) {
  if (w.fds().empty()) return sys::write_full(fd, w.data(), w.size());
  return sys::send_with_fds(fd, w.data(), w.size(), w.fds());
}

namespace {
// Reads exactly n bytes, collecting fds; false on EOF before the first byte.
bool recv_exact(int fd, std::byte* p, std::size_t n, std::vector<int>& fds, bool first) {
  std::size_t got = 0;
  while (got < n) {
    std::size_t r = sys::recv_with_fds(fd, p + got, n - got, fds);
    if (r == 0) {
      if (got == 0 && first) return false;
      throw ProtocolError("mpxx: truncated message: the other end closed after " +
                          std::to_string(got) + " of " + std::to_string(n) + " bytes");
    }
    got += r;
  }
  return true;
}
}  // namespace

bool recv_frame(int fd, FrameHeader& header, Writer& payload, std::vector<int>& fds,
                std::uint64_t max_length) {
  std::byte h[kHeaderSize];
  try {
    if (!recv_exact(fd, h, kHeaderSize, fds, true)) return false;
    header = parse_header(std::span<const std::byte>(h, kHeaderSize), max_length);
    payload.clear();
    recv_exact(fd, payload.extend(header.length), header.length, fds, false);
  } catch (...) {
    for (int f : fds) ::close(f);
    fds.clear();
    throw;
  }
  return true;
}

}  // namespace mpxx::detail::wire
