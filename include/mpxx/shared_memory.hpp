// mpxx/shared_memory.hpp - SharedMemory and ShareableList
// (Python's multiprocessing.shared_memory).
//
// A SharedMemory is a block of raw bytes that several processes map at
// once: hand the object to a Process (any start method) or send it through
// a Pipe, or give another process its name() and let it attach. A
// ShareableList is a fixed-length list of numbers, strings, bytes and None
// laid out in one such block.
//
//   auto shm = mpxx::SharedMemory::create(1 << 20);     // SharedMemory(create=True, size=...)
//   std::ranges::fill(shm.buf(), std::byte{7});         // shm.buf[:] = ...
//   auto same = mpxx::SharedMemory::attach(shm.name()); // SharedMemory(name), from any process
//   mpxx::Process p(reader, shm);                        // or hand it to a child directly
//   p.start(); p.join();                                 // reader saw the 7s
//
// Names and lifetimes - the rule:
//  * Without a name (create(size)), the block is a memfd: it has no entry in
//    /dev/shm at all, so nothing can leak, even if every process is
//    SIGKILLed; the memory is freed when the last process that maps it
//    exits or closes it. Its generated name ("mpxx-<pid>-<fd>-<tag>") lets
//    other processes of the same user attach by name while the creating
//    process keeps the block open (attach() reopens the creator's fd through
//    /proc and checks that it is that very memfd); after the creator exits
//    or close()s it the name no longer resolves (OSError ENOENT), but every
//    handle already attached keeps working.
//  * With a name you choose (create(size, "name")), the block lives in
//    /dev/shm as Python's does, and Python programs can attach to it. The
//    creating process is responsible for the name: unlink() removes it, and
//    if the creator exits without unlinking - normally, by an exception or
//    by any signal, SIGKILL included - a small tracker process it started
//    (CPython's resource_tracker, one per creating process) removes it then
//    and says so on stderr. A process that only attached never removes a
//    name unless it calls unlink() itself; the tracker removes only the very
//    segment its creator made, not a later one that reuses the name.
//    Names of the generated form "mpxx-<pid>-<fd>-<tag>" are reserved.
//
// What crosses a process boundary: the handle travels as its file
// descriptor (SCM_RIGHTS under spawn/forkserver and over a Pipe; inherited
// under fork), its size and its name; the receiver maps the same memory.
// A handle received this way or made by attach() is not the creator: it
// never unlinks on its own, and the block stays mapped in the receiver
// whatever happens to the sender.
//
// close() unmaps the block and closes its fd in this process, for every
// copy of this handle (copies share one mapping); buf() then raises
// ValueError. Destroying the last copy closes it too. The memory lives while
// any process maps it (or, for a named block, while its name exists).
//
// Bad input raises, with the name in the message: attaching to a name that
// does not exist is OSError (ENOENT), creating one that exists is OSError
// (EEXIST), asking attach() for more bytes than the block has, a size of 0
// or an invalid name is ValueError.
//
// Not synchronized, as in Python: use a Lock if several processes write.
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
  // create=true: a new block (a memfd without a name, /dev/shm with one);
  // create=false: attach(*name, size).
  explicit SharedMemory(std::optional<std::string> name = std::nullopt, bool create = false,
                        std::size_t size = 0);
  explicit SharedMemory(detail::wire::empty_t) noexcept {}

  // A new block of `size` bytes (zero-filled). Without a name it is a memfd.
  static SharedMemory create(std::size_t size);
  static SharedMemory create(std::size_t size, std::string name);
  // Maps an existing block by name; with size > 0, checks it is at least
  // that large (ValueError otherwise). The whole block is mapped.
  static SharedMemory attach(const std::string& name, std::size_t size = 0);

  // The bytes (Python's memoryview `buf`). ValueError once closed.
  std::span<std::byte> buf() const;
  std::size_t size() const noexcept;
  // The name to attach() by (without the leading '/', as in Python).
  const std::string& name() const noexcept;
  // True for blocks with a /dev/shm name (create(size, name) or attach(name)).
  bool named() const noexcept;
  // True if this process created the block (and so is responsible for it).
  bool creator() const noexcept;

  void close() noexcept;
  // Removes the /dev/shm name (a no-op for memfd blocks, which have none);
  // OSError if it is already gone. Handles keep their mapping.
  void unlink();

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 private:
  std::shared_ptr<detail::ShmState> st_;
};

// Python's bytes, for ShareableList items.
using Bytes = std::vector<std::byte>;

// A list of fixed length whose items live in a SharedMemory: integers
// (64-bit), doubles, bools, strings, bytes or None (std::monostate). As in
// Python, the length cannot change, and each item keeps the storage it was
// created with: 8 bytes for numbers, bools and None, the value's length
// rounded up to 8 for str/bytes. A value that does not fit its slot raises
// ValueError; any value that fits may replace any other (a number may
// become a short string). Not synchronized (use a Lock), exactly like
// Python's. Passing a ShareableList to a Process, sending it, or attaching
// by sl.shm().name() gives the same list; the naming and lifetime rules are
// SharedMemory's.
//
//   mpxx::ShareableList sl({1, 2.5, "hello", true, std::monostate{}});
//   mpxx::Process p(f, sl);             // or ShareableList::attach(sl.shm().name())
//   sl[2] = "howdy";                    // sl[2] == "howdy" in every process
//
// An index at or past size() is IndexError; a block that does not hold a
// ShareableList, or whose layout another process corrupted, raises
// ValueError / ProtocolError instead of reading outside the block.
class ShareableList {
 public:
  using Item = std::variant<std::monostate, std::int64_t, double, bool, std::string, Bytes>;

  // sl[i]: reads like an Item, assigning to it writes the slot.
  class Ref {
   public:
    operator Item() const { return list_->get(i_); }
    Item get() const { return list_->get(i_); }
    const Ref& operator=(const Item& v) const {
      list_->set(i_, v);
      return *this;
    }
    const Ref& operator=(const Ref& o) const { return *this = o.get(); }
    friend bool operator==(const Ref& a, const Item& b) { return a.get() == b; }
    friend bool operator==(const Ref& a, const Ref& b) { return a.get() == b.get(); }

   private:
    friend class ShareableList;
    Ref(const ShareableList* l, std::size_t i) noexcept : list_(l), i_(i) {}
    Ref(const Ref&) = default;
    const ShareableList* list_;
    std::size_t i_;
  };

  explicit ShareableList(const std::vector<Item>& items);
  ShareableList(const std::vector<Item>& items, std::string name);
  explicit ShareableList(detail::wire::empty_t e) noexcept : shm_(e) {}
  static ShareableList attach(const std::string& name);

  std::size_t size() const;
  Item get(std::size_t i) const;
  void set(std::size_t i, const Item& v) const;
  // Checked like get(): IndexError at once if i >= size().
  Ref operator[](std::size_t i) const;
  // Python's count() and index() (ValueError if absent).
  std::size_t count(const Item& v) const;
  std::size_t index(const Item& v) const;
  std::vector<Item> to_vector() const;
  SharedMemory& shm() noexcept { return shm_; }
  const SharedMemory& shm() const noexcept { return shm_; }

  void save(detail::wire::OutArchive& ar) const { shm_.save(ar); }
  void load(detail::wire::InArchive& ar);

 private:
  explicit ShareableList(SharedMemory shm);
  void init(const std::vector<Item>& items);
  void check() const;
  SharedMemory shm_;
};

}  // namespace mpxx
