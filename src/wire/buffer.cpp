#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <cstdlib>
#include <new>
#include <utility>

#include "mpxx/detail/buffer.hpp"

namespace mpxx::detail::wire {

Writer::Writer(Writer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      cap_(std::exchange(o.cap_, 0)),
      fds_(std::move(o.fds_)) {}

Writer& Writer::operator=(Writer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    cap_ = std::exchange(o.cap_, 0);
    fds_ = std::move(o.fds_);
  }
  return *this;
}

Writer::~Writer() { std::free(data_); }

void Writer::grow(std::size_t need) {
  std::size_t cap = cap_ ? cap_ : 256;
  while (cap < need) cap = cap * 2 > cap ? cap * 2 : need;
  auto* p = static_cast<std::byte*>(std::realloc(data_, cap));
  if (!p) throw std::bad_alloc();
  data_ = p;
  cap_ = cap;
}

Reader::~Reader() {
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

void Reader::expect_done(const char* what) const {
  if (!done())
    throw ProtocolError(std::string("mpxx: ") + what + ": " + std::to_string(remaining()) +
                        " unexpected trailing bytes");
}

void Reader::set_fds(std::vector<int> fds) noexcept {
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
  fds_ = std::move(fds);
}

int Reader::take_fd(std::uint32_t index) {
  if (index >= fds_.size() || fds_[index] < 0)
    throw ProtocolError("mpxx: message refers to file descriptor #" + std::to_string(index) +
                        " but carries " + std::to_string(fds_.size()));
  // Several objects may share one fd (Writer::add_fd sends each fd once), so
  // each taker gets its own duplicate; the Reader closes the original.
  int fd = ::fcntl(fds_[index], F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw OSError(errno, "mpxx: cannot duplicate a received file descriptor");
  return fd;
}

void Reader::truncated(std::size_t need) const {
  throw ProtocolError("mpxx: truncated message: needed " + std::to_string(need) +
                      " more bytes, " + std::to_string(remaining()) + " left");
}

}  // namespace mpxx::detail::wire
