// ShareableList: a fixed-length list of numbers, strings, bytes and None
// laid out in one SharedMemory block.
#include "mpxx/shared_memory.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <variant>
#include <vector>

namespace mpxx {

// Layout: [u64 magic][u64 count][count slots][data], slot = {u32 type,
// u32 capacity, u64 offset, u64 length}; offsets are relative to the data.
// Every access checks the slot it uses against the block: any process
// attached may have scribbled over the layout.

namespace {
constexpr std::uint64_t kListMagic = 0x5453494c4d485358ull;  // "XSHMLIST"
struct Slot {
  std::uint32_t type;
  std::uint32_t capacity;
  std::uint64_t offset;
  std::uint64_t length;
};
constexpr std::size_t kHeader = 16;
constexpr std::uint32_t kTypes = std::variant_size_v<ShareableList::Item>;

std::size_t capacity_for(const ShareableList::Item& v) {
  std::size_t n = 8;
  if (auto* s = std::get_if<std::string>(&v)) n = (s->size() + 7) / 8 * 8;
  if (auto* b = std::get_if<Bytes>(&v)) n = (b->size() + 7) / 8 * 8;
  if (n > UINT32_MAX - 7)
    throw ValueError("mpxx: a ShareableList item of " + std::to_string(n) + " bytes is too large");
  return n;
}

std::size_t layout_size(const std::vector<ShareableList::Item>& items) {
  std::size_t n = kHeader + items.size() * sizeof(Slot);
  for (auto& v : items) n += capacity_for(v);
  return n;
}

std::uint64_t load_u64(const std::byte* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The list's item count, checked against the block.
std::size_t count_in(std::span<std::byte> buf, const std::string& name) {
  if (buf.size() < kHeader || load_u64(buf.data()) != kListMagic)
    throw ValueError("mpxx: shared memory '" + name + "' does not hold a ShareableList");
  std::uint64_t n = load_u64(buf.data() + 8);
  if (n > (buf.size() - kHeader) / sizeof(Slot))
    throw ProtocolError("mpxx: corrupt ShareableList '" + name + "' (count " + std::to_string(n) + ")");
  return static_cast<std::size_t>(n);
}

// Slot i (i < count), and where its data is, checked against the block.
struct SlotRef {
  Slot slot;
  std::byte* data;
};
SlotRef slot_at(std::span<std::byte> buf, std::size_t n, std::size_t i, const std::string& name) {
  Slot s;
  std::memcpy(&s, buf.data() + kHeader + i * sizeof(Slot), sizeof s);
  std::size_t data = kHeader + n * sizeof(Slot);
  std::size_t room = buf.size() - data;
  if (s.type >= kTypes || s.offset > room || s.capacity > room - s.offset || s.length > s.capacity ||
      (s.type != 4 && s.type != 5 && s.capacity < 8))
    throw ProtocolError("mpxx: corrupt ShareableList '" + name + "' (slot " + std::to_string(i) + ")");
  return {s, buf.data() + data + s.offset};
}

[[noreturn]] void throw_index(std::size_t i, std::size_t n) {
  throw IndexError("mpxx: ShareableList index " + std::to_string(i) + " out of range (size " +
                   std::to_string(n) + ")");
}
}  // namespace

ShareableList::ShareableList(const std::vector<Item>& items)
    : ShareableList(SharedMemory::create(layout_size(items))) {
  init(items);
}

ShareableList::ShareableList(const std::vector<Item>& items, std::string name)
    : ShareableList(SharedMemory::create(layout_size(items), std::move(name))) {
  try {
    init(items);
  } catch (...) {
    try {
      shm_.unlink();
    } catch (...) {
    }
    throw;
  }
}

void ShareableList::init(const std::vector<Item>& items) {
  std::byte* base = shm_.buf().data();
  std::uint64_t magic = kListMagic, n = items.size();
  std::uint64_t off = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    Slot s{0, static_cast<std::uint32_t>(capacity_for(items[i])), off, 0};
    std::memcpy(base + kHeader + i * sizeof(Slot), &s, sizeof s);
    off += s.capacity;
  }
  std::memcpy(base + 8, &n, 8);
  std::memcpy(base, &magic, 8);
  for (std::size_t i = 0; i < items.size(); ++i) set(i, items[i]);
}

ShareableList::ShareableList(SharedMemory shm) : shm_(std::move(shm)) {}

ShareableList ShareableList::attach(const std::string& name) {
  ShareableList l(SharedMemory::attach(name));
  l.check();
  return l;
}

void ShareableList::load(detail::wire::InArchive& ar) {
  shm_.load(ar);
  check();
}

// Validates a whole list that came from elsewhere, so that a wrong block is
// reported where it was attached.
void ShareableList::check() const {
  auto buf = shm_.buf();
  std::size_t n = count_in(buf, shm_.name());
  for (std::size_t i = 0; i < n; ++i) slot_at(buf, n, i, shm_.name());
}

std::size_t ShareableList::size() const { return count_in(shm_.buf(), shm_.name()); }

ShareableList::Item ShareableList::get(std::size_t i) const {
  auto buf = shm_.buf();
  std::size_t n = count_in(buf, shm_.name());
  if (i >= n) throw_index(i, n);
  auto [s, p] = slot_at(buf, n, i, shm_.name());
  switch (s.type) {
    case 0: return std::monostate{};
    case 1: return static_cast<std::int64_t>(load_u64(p));
    case 2: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case 3: return std::to_integer<int>(p[0]) != 0;
    case 4: return std::string(reinterpret_cast<const char*>(p), s.length);
    default: return Bytes(p, p + s.length);
  }
}

void ShareableList::set(std::size_t i, const Item& v) const {
  auto buf = shm_.buf();
  std::size_t n = count_in(buf, shm_.name());
  if (i >= n) throw_index(i, n);
  auto [s, p] = slot_at(buf, n, i, shm_.name());
  std::size_t need = 0;
  const void* src = nullptr;
  std::int64_t iv;
  double dv;
  std::byte bv;
  switch (v.index()) {
    case 0: break;
    case 1: iv = std::get<1>(v); src = &iv; need = 8; break;
    case 2: dv = std::get<2>(v); src = &dv; need = 8; break;
    case 3: bv = std::byte{std::get<3>(v) ? std::uint8_t{1} : std::uint8_t{0}}; src = &bv; need = 1; break;
    case 4: src = std::get<4>(v).data(); need = std::get<4>(v).size(); break;
    case 5: src = std::get<5>(v).data(); need = std::get<5>(v).size(); break;
  }
  if (need > s.capacity)
    throw ValueError("mpxx: a " + std::string(v.index() == 4 ? "string" : "bytes value") + " of " +
                     std::to_string(need) + " bytes does not fit item " + std::to_string(i) +
                     " of ShareableList '" + shm_.name() + "' (" + std::to_string(s.capacity) +
                     " bytes, fixed when the list was created)");
  if (need) std::memcpy(p, src, need);
  s.length = need;
  s.type = static_cast<std::uint32_t>(v.index());
  std::memcpy(buf.data() + kHeader + i * sizeof(Slot), &s, sizeof s);
}

ShareableList::Ref ShareableList::operator[](std::size_t i) const {
  std::size_t n = size();
  if (i >= n) throw_index(i, n);
  return Ref(this, i);
}

std::size_t ShareableList::count(const Item& v) const {
  std::size_t c = 0;
  for (std::size_t i = 0, n = size(); i < n; ++i) c += get(i) == v;
  return c;
}

std::size_t ShareableList::index(const Item& v) const {
  for (std::size_t i = 0, n = size(); i < n; ++i)
    if (get(i) == v) return i;
  throw ValueError("mpxx: value is not in the ShareableList '" + shm_.name() + "'");
}

std::vector<ShareableList::Item> ShareableList::to_vector() const {
  std::vector<Item> out;
  for (std::size_t i = 0, n = size(); i < n; ++i) out.push_back(get(i));
  return out;
}

}  // namespace mpxx
