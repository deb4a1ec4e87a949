// mpxx/detail/shm.hpp - shared memory blocks that every mpxx object lives in.
//
// A block is a piece of a memfd mapped MAP_SHARED. memfds have no name in
// any filesystem, so nothing can outlive the processes that map them: when
// the last one exits (even by SIGKILL) the kernel frees the memory.
//
// Small objects (locks, values) are carved out of 64 KiB slabs, so a
// program with thousands of locks does not hold thousands of fds; large
// ones get a memfd of their own. A slab lives as long as any object in it
// has a handle in this process.
//
// Crossing a process boundary: under fork the mapping is inherited as is.
// Otherwise a block travels as (memfd passed with SCM_RIGHTS, offset,
// size); the receiver maps each memfd once, however many objects in it it
// receives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mpxx/detail/codec.hpp"

namespace mpxx::detail {

class Mapping {
 public:
  // A new memfd of `size` bytes, zero-filled, mapped read-write.
  static std::shared_ptr<Mapping> create(std::size_t size, const char* tag);
  // Maps a received memfd (taking ownership of fd); the same memfd received
  // twice is mapped once.
  static std::shared_ptr<Mapping> adopt(int fd);

  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  int fd() const noexcept { return fd_; }

 private:
  Mapping(int fd, std::byte* data, std::size_t size) noexcept : fd_(fd), data_(data), size_(size) {}
  int fd_;
  std::byte* data_;
  std::size_t size_;
};

// A piece of shared memory: the mapping it lives in and where.
struct ShmBlock {
  std::shared_ptr<Mapping> map;
  std::size_t offset = 0;
  std::size_t size = 0;

  std::byte* data() const noexcept { return map ? map->data() + offset : nullptr; }
  explicit operator bool() const noexcept { return static_cast<bool>(map); }
};

// Zero-filled shared memory for one object. Blocks of up to 16 KiB share
// slabs; larger ones get their own memfd.
ShmBlock allocate_shared(std::size_t size, std::size_t align, const char* tag);

// The wire form of a block: [fd index][offset][size], with the memfd
// attached to the message. load_block checks that the block lies inside
// the memfd and holds at least min_size bytes (ProtocolError otherwise).
void save_block(wire::OutArchive& ar, const ShmBlock& b);
ShmBlock load_block(wire::InArchive& ar, std::size_t min_size);

}  // namespace mpxx::detail
