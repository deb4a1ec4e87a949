#include "manager/channel.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <chrono>
#include <algorithm>
#include <cstring>

#include "sys/fd.hpp"

namespace mpxx::detail::mgr {

namespace {
constexpr auto kSpin = std::chrono::microseconds(50);
constexpr std::size_t kInitial = 64 * 1024;
constexpr std::size_t kKeep = 4 << 20;  // a buffer grown beyond this shrinks again
}  // namespace

Channel::Channel(Connection c) : conn_(std::move(c)), fd_(conn_.fileno()), buf_(kInitial) {}

void Channel::send(std::span<const std::byte> payload) {
  unsigned char head[12];
  std::size_t head_len;
  std::uint64_t n = payload.size();
  if (n < 0x7fffffff) {
    for (int i = 0; i < 4; ++i) head[i] = static_cast<unsigned char>(n >> (24 - 8 * i));
    head_len = 4;
  } else {  // CPython's large form: -1, then an 8-byte length
    std::memset(head, 0xff, 4);
    for (int i = 0; i < 8; ++i) head[4 + i] = static_cast<unsigned char>(n >> (56 - 8 * i));
    head_len = 12;
  }
  iovec iov[2] = {{head, head_len}, {const_cast<std::byte*>(payload.data()), payload.size()}};
  std::size_t total = head_len + payload.size(), sent = 0;
  int first = 0;
  while (sent < total) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = 2 - first;
    ssize_t r = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      sys::throw_errno("send to the manager");
    }
    sent += static_cast<std::size_t>(r);
    auto left = static_cast<std::size_t>(r);
    while (first < 2 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < 2) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
}

bool Channel::fill(bool spin) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (end_ == buf_.size()) {
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    } else {
      buf_.resize(buf_.size() * 2);
    }
  }
  auto spin_until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    bool spinning = spin && std::chrono::steady_clock::now() < spin_until;
    ssize_t r = ::recv(fd_, buf_.data() + end_, buf_.size() - end_, spinning ? MSG_DONTWAIT : 0);
    if (r > 0) {
      end_ += static_cast<std::size_t>(r);
      return true;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (!spinning) {
        pollfd p{fd_, POLLIN, 0};
        ::poll(&p, 1, -1);
      }
#if defined(__x86_64__) || defined(__i386__)
      else
        for (int i = 0; i < 32; ++i) __builtin_ia32_pause();
#endif
      continue;
    }
    if (errno == ECONNRESET) return false;
    sys::throw_errno("receive from the manager");
  }
}

std::string_view Channel::recv() {
  bool first = true;
  for (;;) {
    std::size_t have = end_ - begin_;
    const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + begin_);
    if (have >= 4) {
      std::uint64_t n = 0;
      std::size_t head = 4;
      if (p[0] == 0xff && p[1] == 0xff && p[2] == 0xff && p[3] == 0xff) {
        head = 12;
        if (have >= 12)
          for (int i = 0; i < 8; ++i) n = n << 8 | p[4 + i];
        if (n > wire::kDefaultMaxFrame)
          throw ProtocolError("mpxx: a message length of " + std::to_string(n) +
                              " bytes on a manager connection, beyond the limit of " +
                              std::to_string(wire::kDefaultMaxFrame) + "; the stream is corrupt");
      } else {
        for (int i = 0; i < 4; ++i) n = n << 8 | p[i];
        if (n > 0x7fffffff) throw ProtocolError("mpxx: a negative message length from the manager connection");
      }
      if (have >= head && have - head >= n) {
        if (buf_.size() > kKeep && have <= kInitial) {
          // A large message was read before: give its memory back.
          std::vector<char> fresh(kInitial);
          std::memcpy(fresh.data(), buf_.data() + begin_, have);
          buf_ = std::move(fresh);
          begin_ = 0;
          end_ = have;
        }
        std::string_view m(buf_.data() + begin_ + head, static_cast<std::size_t>(n));
        begin_ += head + static_cast<std::size_t>(n);
        return m;
      }
      // Otherwise the buffer grows with what actually arrives (fill), never
      // with what a length field merely claims.
    }
    if (!fill(first)) {
      if (end_ != begin_) throw EOFError("mpxx: the other end closed the connection in the middle of a message");
      throw EOFError();
    }
    first = false;
  }
}

}  // namespace mpxx::detail::mgr
