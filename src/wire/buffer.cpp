#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>

#include "mpxx/detail/buffer.hpp"
#include "sys/fd.hpp"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older kernels refuse it (EINVAL), which is fine
#endif

namespace mpxx::detail::wire {

namespace {

// Large buffers are kept for reuse instead of being freed: glibc returns
// big blocks to the kernel, and every fresh page then costs a fault and a
// zeroing (~1 GB/s on a VM against ~7 GB/s for memcpy into resident
// memory). A pool's map encodes many ~1 MB chunks over and over; with the
// cache their buffers stay resident. Bounded: a few buffers, 32 MiB in all.
constexpr std::size_t kCacheMin = 256u << 10;
constexpr std::size_t kCacheBytes = 32u << 20;
constexpr std::size_t kCacheSlots = 8;

struct BufferCache {
  std::mutex mu;
  struct Buf {
    void* p;
    std::size_t cap;
  };
  Buf bufs[kCacheSlots]{};
  std::size_t bytes = 0;

  // A cached buffer of at least `need` bytes (and not wastefully larger).
  Buf take(std::size_t need) {
    std::lock_guard lk(mu);
    for (Buf& b : bufs)
      if (b.p && b.cap >= need && b.cap / 4 <= need) {
        Buf out = b;
        b = {};
        bytes -= out.cap;
        return out;
      }
    return {};
  }
  bool give(void* p, std::size_t cap) {
    if (cap < kCacheMin || cap > kCacheBytes) return false;
    std::lock_guard lk(mu);
    if (bytes + cap > kCacheBytes) return false;
    for (Buf& b : bufs)
      if (!b.p) {
        b = {p, cap};
        bytes += cap;
        return true;
      }
    return false;
  }
};

BufferCache& cache() {
  static BufferCache* c = [] {
    auto* bc = new BufferCache;  // never destroyed: used until exit
    // A forked child must not inherit the lock held by another thread.
    ::pthread_atfork(nullptr, nullptr, [] { new (&cache().mu) std::mutex; });
    return bc;
  }();
  return *c;
}

// Buffers of kHugeMin bytes or more are mappings of their own (huge-page
// advised), grown with mremap: a buffer that doubles its way to 100 MiB as
// a message arrives moves page tables, never bytes. Smaller ones are malloc's.
bool mapped(std::size_t cap) noexcept { return cap >= kHugeMin; }

void free_buffer(void* p, std::size_t cap) noexcept {
  if (mapped(cap)) ::munmap(p, cap);
  else std::free(p);
}

void release(void* p, std::size_t cap) {
  if (p && !cache().give(p, cap)) free_buffer(p, cap);
}

// Resizes buffer p (capacity `cap`, `size` bytes in use) to `want` bytes.
std::byte* resize_buffer(std::byte* p, std::size_t size, std::size_t cap, std::size_t want) {
  if (!mapped(want)) {
    void* q = std::realloc(p, want);
    if (!q) throw std::bad_alloc();
    return static_cast<std::byte*>(q);
  }
  // The whole mapping is advised, never a part of it: advising its 2 MiB-
  // aligned middle only would split it into several areas, which mremap
  // then refuses to move as one (kernels before 6.7 do not align mappings).
  if (p && mapped(cap)) {
    void* q = ::mremap(p, cap, want, MREMAP_MAYMOVE);
    if (q != MAP_FAILED) {
      ::madvise(q, want, MADV_HUGEPAGE);
      return static_cast<std::byte*>(q);
    }
  }
  void* q = ::mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q == MAP_FAILED) throw std::bad_alloc();
  ::madvise(q, want, MADV_HUGEPAGE);  // before the first byte is written
  if (size) std::memcpy(q, p, size);
  if (p) free_buffer(p, cap);
  return static_cast<std::byte*>(q);
}

}  // namespace

// MADV_COLLAPSE makes a huge page whatever the system's setting: only
// where transparent huge pages are not turned off.
bool huge_pages_wanted() noexcept {
  static const bool wanted = [] {
    const std::string text = sys::read_small_file("/sys/kernel/mm/transparent_hugepage/enabled");
    return !text.empty() && text.find("[never]") == std::string::npos;
  }();
  return wanted;
}

void advise_huge(void* p, std::size_t n) noexcept {
  if (n < kHugeMin) return;
  constexpr std::uintptr_t kPage = 4096, kHuge = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(p) & ~(kPage - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + n + kPage - 1) & ~(kPage - 1);
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  if (begin % kHuge == 0 && huge_pages_wanted())
    ::madvise(reinterpret_cast<void*>(begin), kHuge, MADV_COLLAPSE);
}

std::size_t huge_friendly_size(std::size_t n) noexcept {
  constexpr std::size_t kHuge = std::size_t{2} << 20, kMallocExtra = 32;
  if (n < kHugeMin || n > SIZE_MAX - kHuge - kMallocExtra) return n;
  return (n + kMallocExtra + kHuge - 1) / kHuge * kHuge - kMallocExtra;
}

Writer::Writer(Writer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      cap_(std::exchange(o.cap_, 0)),
      fds_(std::move(o.fds_)),
      refs_on_(std::exchange(o.refs_on_, false)),
      refs_(std::move(o.refs_)),
      ref_bytes_(std::exchange(o.ref_bytes_, 0)) {
  o.refs_.clear();
}

Writer& Writer::operator=(Writer&& o) noexcept {
  if (this != &o) {
    release(data_, cap_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    cap_ = std::exchange(o.cap_, 0);
    fds_ = std::move(o.fds_);
    refs_on_ = std::exchange(o.refs_on_, false);
    refs_ = std::move(o.refs_);
    o.refs_.clear();
    ref_bytes_ = std::exchange(o.ref_bytes_, 0);
  }
  return *this;
}

Writer::~Writer() { release(data_, cap_); }

std::vector<std::span<const std::byte>> Writer::pieces(std::size_t from) const {
  std::vector<std::span<const std::byte>> out;
  std::size_t at = from;
  for (const Ref& ref : refs_) {
    if (ref.at > at) out.emplace_back(data_ + at, ref.at - at);
    out.emplace_back(ref.p, ref.n);
    at = ref.at;
  }
  if (size_ > at) out.emplace_back(data_ + at, size_ - at);
  return out;
}

void Writer::grow(std::size_t need, bool exact) {
  std::size_t cap = exact ? (need + 15) & ~std::size_t{15} : cap_ ? cap_ : 256;
  while (cap < need) cap = cap * 2 > cap ? cap * 2 : need;
  if (cap >= kCacheMin) {
    if (BufferCache::Buf b = cache().take(need); b.p) {
      if (size_) std::memcpy(b.p, data_, size_);
      release(data_, cap_);
      data_ = static_cast<std::byte*>(b.p);
      cap_ = b.cap;
      return;
    }
  }
  data_ = resize_buffer(data_, size_, cap_, cap);
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

// Reads of at least kDirect bytes go from the source straight to their
// destination; smaller ones are served from a window of up to kWindow bytes
// read ahead (a value made of many small parts costs a read per window, not
// per part).
namespace {
constexpr std::size_t kDirect = 16u << 10;
constexpr std::size_t kWindow = 64u << 10;
}  // namespace

void Reader::get_more(void* out, std::size_t n) {
  if (n > remaining()) truncated(n);
  auto* dst = static_cast<std::byte*>(out);
  const std::size_t have = buffered();
  if (have) std::memcpy(dst, p_, have);
  dst += have;
  n -= have;
  p_ = end_;
  if (n >= kDirect) {
    more_->read(dst, n);
    return;
  }
  // n < kDirect <= kWindow and n <= more_->left(): the window holds it. The
  // last window is reused unless take() handed out a view into it.
  const std::size_t k = std::min(more_->left(), kWindow);
  if (!window_ || window_viewed_) {
    read_.push_back(std::make_unique_for_overwrite<std::byte[]>(kWindow));
    window_ = read_.back().get();
    window_viewed_ = false;
  }
  more_->read(window_, k);
  p_ = window_;
  end_ = p_ + k;
  std::memcpy(dst, p_, n);
  p_ += n;
}

std::span<const std::byte> Reader::take_more(std::size_t n) {
  if (n > remaining()) truncated(n);
  read_.push_back(std::make_unique_for_overwrite<std::byte[]>(n));
  std::byte* copy = read_.back().get();
  get_more(copy, n);
  return {copy, n};
}

void Reader::truncated(std::size_t need) const {
  throw ProtocolError("mpxx: truncated message: needed " + std::to_string(need) +
                      " more bytes, " + std::to_string(remaining()) + " left");
}

}  // namespace mpxx::detail::wire
