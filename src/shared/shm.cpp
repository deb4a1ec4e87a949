// Shared memory blocks: memfds, slabs, and their wire form.
#include "mpxx/detail/shm.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <new>

#include "sys/fd.hpp"

namespace mpxx::detail {

namespace {

constexpr std::size_t kSlabSize = 64 * 1024;
constexpr std::size_t kSmallLimit = 16 * 1024;

// Mappings of received memfds, by inode, so that each is mapped once.
struct Adopted {
  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, std::weak_ptr<Mapping>> by_inode;
};
Adopted& adopted() {
  static auto* a = new Adopted;
  return *a;
}

// The slab being carved. Held weakly: once every object in it is gone, the
// memory goes back to the kernel, and the next object starts a new slab.
struct SlabState {
  std::mutex mu;
  std::weak_ptr<Mapping> slab;
  std::size_t used = 0;
};
SlabState& slabs() {
  static auto* s = [] {
    auto* st = new SlabState;
    // A forked child must not carve blocks out of the slab its parent is
    // still carving from: each side's bump pointer is its own copy.
    ::pthread_atfork(nullptr, nullptr, [] {
      SlabState& s = slabs();
      new (&s.mu) std::mutex;
      s.slab.reset();
      s.used = 0;
      Adopted& a = adopted();
      new (&a.mu) std::mutex;
    });
    return st;
  }();
  return *s;
}

}  // namespace

std::shared_ptr<Mapping> Mapping::create(std::size_t size, const char* tag) {
  if (size == 0) size = 1;
  sys::UniqueFd guard = sys::make_memfd(tag, size);
  const int fd = guard.get();
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) sys::throw_errno("cannot map " + std::to_string(size) + " bytes of shared memory");
  return std::shared_ptr<Mapping>(new Mapping(guard.release(), static_cast<std::byte*>(p), size));
}

std::shared_ptr<Mapping> Mapping::adopt(int fd) {
  sys::UniqueFd guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) < 0) sys::throw_errno("fstat(shared memory)");
  if (!S_ISREG(st.st_mode) || st.st_size <= 0)
    throw ProtocolError("mpxx: received a file descriptor that is not shared memory");
  Adopted& a = adopted();
  std::lock_guard lk(a.mu);
  auto key = std::make_pair(st.st_dev, st.st_ino);
  if (auto it = a.by_inode.find(key); it != a.by_inode.end())
    if (auto m = it->second.lock()) return m;  // guard closes the duplicate fd
  auto size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) sys::throw_errno("cannot map received shared memory");
  std::shared_ptr<Mapping> m(new Mapping(guard.release(), static_cast<std::byte*>(p), size));
  a.by_inode[key] = m;
  return m;
}

Mapping::~Mapping() {
  ::munmap(data_, size_);
  ::close(fd_);
}

ShmBlock allocate_shared(std::size_t size, std::size_t align, const char* tag) {
  if (align == 0 || (align & (align - 1)) != 0) align = alignof(std::max_align_t);
  if (size > kSmallLimit) return ShmBlock{Mapping::create(size, tag), 0, size};
  SlabState& s = slabs();
  std::lock_guard lk(s.mu);
  std::size_t at = (s.used + align - 1) & ~(align - 1);
  std::shared_ptr<Mapping> slab = s.slab.lock();
  if (!slab || at + size > slab->size()) {
    slab = Mapping::create(kSlabSize, "mpxx:slab");
    s.slab = slab;
    at = 0;
  }
  s.used = at + size;
  return ShmBlock{std::move(slab), at, size};
}

void save_block(wire::OutArchive& ar, const ShmBlock& b) {
  if (!b) throw ValueError("mpxx: cannot send an empty shared object");
  std::uint32_t index = ar.writer().add_fd(b.map->fd());
  ar(index, static_cast<std::uint64_t>(b.offset), static_cast<std::uint64_t>(b.size));
}

ShmBlock load_block(wire::InArchive& ar, std::size_t min_size) {
  std::uint32_t index;
  std::uint64_t offset, size;
  ar(index, offset, size);
  auto map = Mapping::adopt(ar.reader().take_fd(index));
  if (offset > map->size() || size > map->size() - offset || size < min_size)
    throw ProtocolError("mpxx: shared object at offset " + std::to_string(offset) + " of " +
                        std::to_string(size) + " bytes does not fit its memory (" +
                        std::to_string(map->size()) + " bytes, at least " +
                        std::to_string(min_size) + " needed)");
  return ShmBlock{std::move(map), static_cast<std::size_t>(offset), static_cast<std::size_t>(size)};
}

}  // namespace mpxx::detail
