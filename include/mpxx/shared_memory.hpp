// mpxx/shared_memory.hpp - SharedMemory and ShareableList
// (Python's multiprocessing.shared_memory).
//
// A SharedMemory is a block of bytes that any process can map, by handle
// (pass it to a Process, send it through a channel) or by name:
//
//   auto shm = mpxx::SharedMemory::create(1 << 20);     // SharedMemory(create=True, size=...)
//   std::ranges::fill(shm.buf(), std::byte{7});
//   auto other = mpxx::SharedMemory::attach(shm.name()); // SharedMemory(name=...), any process
//   mpxx::Process p(reader, shm);                        // or hand it to a child directly
//
// Names and lifetimes - the rule:
//  * Without a name (create(size)), the memory is a memfd: it has no entry in
//    /dev/shm at all, so nothing can leak, even if every process is SIGKILLed.
//    Its generated name ("mpxx-<pid>-<fd>-<tag>") lets other processes of
//    the same user attach while the creating process keeps the block open;
//    handles already attached keep working after the creator exits.
//  * With a name you choose (create(size, "name")), it lives in /dev/shm like
//    Python's. The creating process is responsible for it: unlink() removes
//    the name, and if the creator exits without unlinking - normally or by
//    any signal, SIGKILL included - a small tracker process it started
//    removes the name then. A process that only attached never unlinks it
//    unless it calls unlink() itself.
// close() unmaps the block from this process (all handles to this mapping in
// the process); the memory itself lives while any process maps it.
//
// Bad input: attaching to a name that does not exist, or asking for more
// bytes than the block has, raises OSError/ValueError with the name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "mpxx/detail/codec.hpp"

namespace mpxx {

namespace detail {
struct ShmState;
}

class SharedMemory {
 public:
  // Python's constructor: SharedMemory(name=None, create=False, size=0).
  explicit SharedMemory(std::optional<std::string> name = std::nullopt, bool create = false,
                        std::size_t size = 0);
  explicit SharedMemory(detail::wire::empty_t) noexcept {}

  // A new block of `size` bytes (zero-filled). Without a name it is a memfd.
  static SharedMemory create(std::size_t size);
  static SharedMemory create(std::size_t size, std::string name);
  // Maps an existing block by name; with size > 0, checks it is that large.
  static SharedMemory attach(const std::string& name, std::size_t size = 0);

  std::span<std::byte> buf() const;
  std::size_t size() const noexcept;
  const std::string& name() const noexcept;
  // True for blocks with a /dev/shm name (create(size, name) or attach(name)).
  bool named() const noexcept;

  void close() noexcept;
  // Removes the name (a no-op for memfd blocks, which have none to remove).
  void unlink();

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 private:
  std::shared_ptr<detail::ShmState> st_;
};

// Python's bytes, for ShareableList items.
using Bytes = std::vector<std::byte>;

// A list of fixed length whose items live in a SharedMemory: integers,
// doubles, bools, strings, bytes or None (std::monostate). As in Python, the
// length cannot change, and a str/bytes item keeps the capacity it was
// created with (rounded up to 8 bytes): a longer value raises ValueError.
// Not synchronized (use a Lock), exactly like Python's.
//
//   mpxx::ShareableList sl({1, 2.5, "hello", true, std::monostate{}});
//   mpxx::Process p(f, sl);             // or ShareableList::attach(sl.shm().name())
//   sl.set(2, "howdy");                 // sl[2] == "howdy" in every process
class ShareableList {
 public:
  using Item = std::variant<std::monostate, std::int64_t, double, bool, std::string, Bytes>;

  explicit ShareableList(const std::vector<Item>& items);
  ShareableList(const std::vector<Item>& items, std::string name);
  explicit ShareableList(detail::wire::empty_t e) noexcept : shm_(e) {}
  static ShareableList attach(const std::string& name);

  std::size_t size() const;
  Item get(std::size_t i) const;
  void set(std::size_t i, const Item& v);
  Item operator[](std::size_t i) const { return get(i); }
  std::size_t count(const Item& v) const;
  // ValueError if absent, as Python's list.index.
  std::size_t index(const Item& v) const;
  std::vector<Item> to_vector() const;
  SharedMemory& shm() noexcept { return shm_; }

  void save(detail::wire::OutArchive& ar) const { shm_.save(ar); }
  void load(detail::wire::InArchive& ar);

 private:
  explicit ShareableList(SharedMemory shm);
  void init(const std::vector<Item>& items);
  void check() const;
  SharedMemory shm_;
};

}  // namespace mpxx
