// mpxx/detail/buffer.hpp - the byte buffers every encoder writes into and
// every decoder reads from. Internal: users never name these types.
//
// Writer grows without zero-filling (a 100 MiB value is one malloc and one
// memcpy); Reader never reads past its end: every overrun is a ProtocolError
// naming what was being read. Both carry file descriptors beside the bytes,
// so that objects such as shared memory or a pipe end can cross a process
// boundary (the transport passes them with SCM_RIGHTS or by inheritance).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mpxx/errors.hpp"

namespace mpxx::detail::wire {

// Buffers of at least this size ask the kernel for transparent huge pages.
inline constexpr std::size_t kHugeMin = std::size_t{4} << 20;
// Advises huge pages for the pages of [p, p + n) when n is at least
// kHugeMin; does nothing otherwise (and ignores failure). Writing a fresh
// 100 MiB buffer then takes 50 page faults instead of 25600, which on a VM
// is the difference between ~0.3 and several GB/s. Where those pages start
// on a huge-page boundary, the first huge page is also made whole at once
// (MADV_COLLAPSE): the allocator has already written its header there, so
// it would otherwise stay 512 small pages. Only advice: the memory's
// contents and ownership are untouched.
void advise_huge(void* p, std::size_t n) noexcept;
// A size to allocate for a buffer of at least n bytes that glibc's malloc
// maps as a whole number of huge pages (its mapping holds a header of 16
// bytes more). Linux 6.8 and later place such a mapping on a huge-page
// boundary, so that every 2 MiB of it can be one huge page; elsewhere it
// costs at most 2 MiB of address space that is never touched.
std::size_t huge_friendly_size(std::size_t n) noexcept;

class Writer {
 public:
  Writer() = default;
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  Writer(Writer&& o) noexcept;
  Writer& operator=(Writer&& o) noexcept;
  ~Writer();

  void put(const void* p, std::size_t n) {
    if (n == 0) return;
    if (n >= kRefMin && refs_on_) return add_ref(p, n);
    if (size_ + n > cap_) grow(size_ + n);
    std::memcpy(data_ + size_, p, n);
    size_ += n;
  }
  template <class T>
  void pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put(&v, sizeof v);
  }
  // Reserves n bytes at the end and returns them, for in-place writes.
  std::byte* extend(std::size_t n) {
    if (size_ + n > cap_) grow(size_ + n);
    std::byte* p = data_ + size_;
    size_ += n;
    return p;
  }
  // Room for n bytes in all. A first reservation is allocated as asked (a
  // pool keeps a map's 100k small tasks encoded at once: each is as large
  // as it needs); growing a buffer doubles it, so that reserving a little
  // more at a time stays linear.
  void reserve(std::size_t n) {
    if (n > cap_) grow(n, cap_ == 0);  // exact the first time; then geometric, as for put()
  }
  void clear() noexcept {
    size_ = 0;
    fds_.clear();
    refs_.clear();
    ref_bytes_ = 0;
  }

  // Blocks of at least kRefMin bytes put from now on are not copied: the
  // Writer notes where they are, to go between its own bytes when they are
  // sent (a 100 MiB vector goes from its own memory into the pipe or the
  // queue). The caller keeps them alive and unchanged until then. Only
  // Connection::send() and Queue::put() turn this on, for values whose
  // encoding runs no user code (by_reference_ok); bytes() and data() hold
  // the Writer's own bytes.
  static constexpr std::size_t kRefMin = std::size_t{1} << 20;
  struct Ref {
    std::size_t at;  // where the block goes among the Writer's own bytes
    const std::byte* p;
    std::size_t n;
  };
  void reference_large_blocks() noexcept { refs_on_ = true; }
  const std::vector<Ref>& refs() const noexcept { return refs_; }
  // Own bytes plus referenced blocks.
  std::size_t total_size() const noexcept { return size_ + ref_bytes_; }
  // The message from byte `from` of the Writer's own bytes on, in order:
  // spans of its own bytes and the referenced blocks between them.
  std::vector<std::span<const std::byte>> pieces(std::size_t from = 0) const;
  std::byte* data() noexcept { return data_; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

  // Adds an fd to travel with the bytes (not owned: the caller keeps it open
  // until the message is sent) and returns its index within the message.
  std::uint32_t add_fd(int fd) {
    for (std::size_t i = 0; i < fds_.size(); ++i)
      if (fds_[i] == fd) return static_cast<std::uint32_t>(i);  // send each fd once
    fds_.push_back(fd);
    return static_cast<std::uint32_t>(fds_.size() - 1);
  }
  const std::vector<int>& fds() const noexcept { return fds_; }

 private:
  void grow(std::size_t need, bool exact = false);
  void add_ref(const void* p, std::size_t n) {
    refs_.push_back({size_, static_cast<const std::byte*>(p), n});
    ref_bytes_ += n;
  }
  std::byte* data_ = nullptr;
  std::size_t size_ = 0, cap_ = 0;
  std::vector<int> fds_;
  bool refs_on_ = false;
  std::vector<Ref> refs_;
  std::size_t ref_bytes_ = 0;
};

// The rest of a message that is not in memory yet: a large message still
// arriving through its own pipe. A Reader reads from it only as decoding
// asks, so a 100 MiB vector is read straight into its own memory instead of
// into a buffer first and then copied.
class Source {
 public:
  virtual ~Source() = default;
  // Bytes still to come.
  virtual std::size_t left() const noexcept = 0;
  // Reads exactly n bytes (n <= left()) into out.
  virtual void read(void* out, std::size_t n) = 0;
};

class Reader {
 public:
  Reader(std::span<const std::byte> bytes, Source* more = nullptr)
      : p_(bytes.data()), end_(bytes.data() + bytes.size()), more_(more) {}
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader();  // closes fds that no decoder took

  void get(void* out, std::size_t n) {
    if (n > buffered()) return get_more(out, n);
    if (n) std::memcpy(out, p_, n);
    p_ += n;
  }
  template <class T>
  T pod() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    get(&v, sizeof v);
    return v;
  }
  // A view of the next n bytes, consumed (valid as long as the Reader).
  std::span<const std::byte> take(std::size_t n) {
    if (n > buffered()) return take_more(n);
    window_viewed_ = window_ != nullptr;  // (a view into the window, or not: keep it anyway)
    std::span<const std::byte> s(p_, n);
    p_ += n;
    return s;
  }
  std::size_t remaining() const noexcept { return buffered() + (more_ ? more_->left() : 0); }
  bool done() const noexcept { return remaining() == 0; }
  // Throws ProtocolError unless every byte was consumed.
  void expect_done(const char* what) const;

  // The fds that arrived with the bytes; the Reader owns them until taken.
  void set_fds(std::vector<int> fds) noexcept;
  // A duplicate of fd number `index` of this message, owned by the caller.
  int take_fd(std::uint32_t index);

 private:
  [[noreturn]] void truncated(std::size_t need) const;
  std::size_t buffered() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  void get_more(void* out, std::size_t n);
  std::span<const std::byte> take_more(std::size_t n);
  const std::byte* p_;
  const std::byte* end_;
  Source* more_ = nullptr;
  // What was read from more_ into memory: windows of small reads and copies
  // made by take(), kept while the Reader lives so that views stay valid.
  std::vector<std::unique_ptr<std::byte[]>> read_;
  std::byte* window_ = nullptr;  // the window small reads are served from
  bool window_viewed_ = false;   // take() may have handed out a view into it
  std::vector<int> fds_;
};

}  // namespace mpxx::detail::wire
