// SharedMemory, ShareableList, and the tracker that removes a named block
// whose creator died without unlinking it.
#include "mpxx/shared_memory.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <new>
#include <random>
#include <set>

#include "process_state.hpp"
#include "sys/fd.hpp"

namespace mpxx {
namespace detail {

struct ShmState {
  std::string name;
  bool named = false;
  bool creator = false;
  sys::UniqueFd fd;
  std::byte* addr = nullptr;
  std::size_t size = 0;

  ~ShmState() { unmap(); }
  void unmap() noexcept {
    if (addr) ::munmap(addr, size ? size : 1);
    addr = nullptr;
    fd.reset();
  }
};

// ------------------------------------------------------------ the tracker
//
// A process forked on the first named create(). It reads "R name" and
// "U name" lines from a pipe; when the pipe reports EOF - the creator has
// exited, whatever the cause - it unlinks every name still registered and
// exits. It lives in its own session, so a Ctrl-C at the terminal does not
// stop it before it has cleaned up.
namespace {

struct Tracker {
  std::mutex mu;
  pid_t owner = 0;
  sys::UniqueFd pipe;
  sys::UniqueFd pidfd;
};

Tracker& tracker() {
  static auto* t = [] {
    auto* tr = new Tracker;
    ::pthread_atfork(nullptr, nullptr, [] {
      // A forked child keeps its own registrations; it must not hold the
      // parent's pipe open (the tracker would never see EOF).
      Tracker& t = tracker();
      if (t.owner == 0 && !t.pipe) return;
      new (&t.mu) std::mutex;
      t.pipe.reset();
      t.pidfd.reset();
      t.owner = 0;
    });
    return tr;
  }();
  return *t;
}

[[noreturn]] void tracker_main(int in) {
  ::setsid();
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  std::set<std::string> names;
  std::string pending;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.size() < 3) continue;
      if (line[0] == 'R') names.insert(line.substr(2));
      if (line[0] == 'U') names.erase(line.substr(2));
    }
  }
  for (const std::string& name : names) {
    if (::shm_unlink(name.c_str()) == 0) {
      std::string m = "mpxx: the process that created shared memory '" + name.substr(1) +
                      "' exited without unlinking it; removed it\n";
      (void)!::write(2, m.data(), m.size());
    }
  }
  ::_exit(0);
}

void tracker_send(char op, const std::string& shm_name) {
  Tracker& t = tracker();
  std::lock_guard lk(t.mu);
  if (!t.pipe || t.owner != ::getpid()) {
    auto [r, w] = sys::make_pipe();
    pid_t pid = ::fork();
    if (pid < 0) sys::throw_errno("cannot start the shared memory tracker");
    if (pid == 0) {
      int in = r.release();
      if (in != 3) {
        ::dup2(in, 3);
        in = 3;
      }
      ::close_range(4, ~0u, 0);  // nothing of the parent's but the pipe and stdio
      tracker_main(in);
    }
    t.pidfd = sys::pidfd_open(pid);
    t.pipe = std::move(w);
    t.owner = ::getpid();
  }
  std::string line = std::string(1, op) + " " + shm_name + "\n";
  sys::write_full(t.pipe.get(), line.data(), line.size());
}

std::string posix_name(const std::string& name) { return name[0] == '/' ? name : "/" + name; }

std::string random_tag() {
  static std::mt19937_64 rng(std::random_device{}() ^ static_cast<std::uint64_t>(::getpid()));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

std::byte* map_fd(int fd, std::size_t size, const std::string& what) {
  void* p = ::mmap(nullptr, size ? size : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) sys::throw_errno("cannot map shared memory '" + what + "'");
  return static_cast<std::byte*>(p);
}

std::size_t fd_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) sys::throw_errno("fstat(shared memory)");
  return static_cast<std::size_t>(st.st_size);
}

}  // namespace

void stop_resource_tracker() noexcept {
  Tracker& t = tracker();
  std::lock_guard lk(t.mu);
  if (!t.pipe || t.owner != ::getpid()) return;
  t.pipe.reset();  // EOF: the tracker removes what is left and exits
  siginfo_t si{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(t.pidfd.get()), &si, WEXITED) <
             0 &&
         errno == EINTR) {
  }
  t.pidfd.reset();
  t.owner = 0;
}

}  // namespace detail

using detail::ShmState;

// ------------------------------------------------------------ SharedMemory

SharedMemory::SharedMemory(std::optional<std::string> name, bool create, std::size_t size) {
  if (create) {
    if (size == 0) throw ValueError("mpxx: 'size' must be a positive number different from zero");
    *this = name ? SharedMemory::create(size, std::move(*name)) : SharedMemory::create(size);
  } else {
    if (!name) throw ValueError("mpxx: 'name' can only be omitted when create is true");
    *this = attach(*name, size);
  }
}

SharedMemory SharedMemory::create(std::size_t size) {
  if (size == 0) throw ValueError("mpxx: shared memory size must be > 0");
  auto st = std::make_shared<ShmState>();
  std::string tag = detail::random_tag();
  int fd = ::memfd_create(("mpxx-" + tag).c_str(), MFD_CLOEXEC);
  if (fd < 0) sys::throw_errno("memfd_create");
  st->fd.reset(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0)
    sys::throw_errno("cannot size shared memory to " + std::to_string(size) + " bytes");
  st->size = size;
  st->name = "mpxx-" + std::to_string(::getpid()) + "-" + std::to_string(fd) + "-" + tag;
  st->creator = true;
  st->addr = detail::map_fd(fd, size, st->name);
  SharedMemory shm(detail::wire::empty);
  shm.st_ = std::move(st);
  return shm;
}

SharedMemory SharedMemory::create(std::size_t size, std::string name) {
  if (size == 0) throw ValueError("mpxx: shared memory size must be > 0");
  if (name.empty() || name.find('/', 1) != std::string::npos || name == "/")
    throw ValueError("mpxx: invalid shared memory name '" + name + "'");
  std::string path = detail::posix_name(name);
  int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) sys::throw_errno("cannot create shared memory '" + name + "'");
  auto st = std::make_shared<ShmState>();
  st->fd.reset(fd);
  st->name = std::move(name);
  st->named = true;
  st->creator = true;
  try {
    detail::tracker_send('R', path);
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0)
      sys::throw_errno("cannot size shared memory to " + std::to_string(size) + " bytes");
    st->size = size;
    st->addr = detail::map_fd(fd, size, st->name);
  } catch (...) {
    ::shm_unlink(path.c_str());
    try {
      detail::tracker_send('U', path);
    } catch (...) {
    }
    throw;
  }
  SharedMemory shm(detail::wire::empty);
  shm.st_ = std::move(st);
  return shm;
}

SharedMemory SharedMemory::attach(const std::string& name, std::size_t size) {
  auto st = std::make_shared<ShmState>();
  st->name = name;
  int fd = -1;
  unsigned long pid = 0, number = 0;
  char tag[64] = {0};
  if (name.rfind("mpxx-", 0) == 0 &&
      std::sscanf(name.c_str(), "mpxx-%lu-%lu-%63s", &pid, &number, tag) == 3) {
    // A memfd block: reachable through its creator's fd table while the
    // creator holds it. Check that the fd there is that very memfd.
    std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(number);
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      char target[256] = {0};
      std::string self = "/proc/self/fd/" + std::to_string(fd);
      ssize_t n = ::readlink(self.c_str(), target, sizeof target - 1);
      std::string want = std::string("/memfd:mpxx-") + tag + " (deleted)";
      if (n <= 0 || want != std::string(target, static_cast<std::size_t>(n))) {
        ::close(fd);
        fd = -1;
        errno = ENOENT;
      }
    }
    if (fd < 0)
      throw OSError(ENOENT, "mpxx: no shared memory named '" + name +
                                "' (its creator has exited or closed it)");
  } else {
    fd = ::shm_open(detail::posix_name(name).c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
      int err = errno;
      throw OSError(err, "mpxx: cannot attach to shared memory '" + name + "': " +
                             std::strerror(err));
    }
    st->named = true;
  }
  st->fd.reset(fd);
  st->size = detail::fd_size(fd);
  if (size > st->size)
    throw ValueError("mpxx: shared memory '" + name + "' has " + std::to_string(st->size) +
                     " bytes, " + std::to_string(size) + " were asked for");
  st->addr = detail::map_fd(fd, st->size, name);
  SharedMemory shm(detail::wire::empty);
  shm.st_ = std::move(st);
  return shm;
}

std::span<std::byte> SharedMemory::buf() const {
  if (!st_ || !st_->addr) throw ValueError("mpxx: shared memory is closed");
  return {st_->addr, st_->size};
}

std::size_t SharedMemory::size() const noexcept { return st_ ? st_->size : 0; }

const std::string& SharedMemory::name() const noexcept {
  static const std::string none;
  return st_ ? st_->name : none;
}

bool SharedMemory::named() const noexcept { return st_ && st_->named; }

void SharedMemory::close() noexcept {
  if (st_) st_->unmap();
}

void SharedMemory::unlink() {
  if (!st_ || !st_->named) return;
  std::string path = detail::posix_name(st_->name);
  if (::shm_unlink(path.c_str()) < 0) {
    int err = errno;
    throw OSError(err, "mpxx: cannot unlink shared memory '" + st_->name + "': " + std::strerror(err));
  }
  if (st_->creator) detail::tracker_send('U', path);
}

void SharedMemory::save(detail::wire::OutArchive& ar) const {
  if (!st_ || !st_->fd) throw ValueError("mpxx: cannot send closed shared memory");
  std::uint32_t index = ar.writer().add_fd(st_->fd.get());
  ar(index, static_cast<std::uint64_t>(st_->size), st_->name, static_cast<std::uint8_t>(st_->named));
}

void SharedMemory::load(detail::wire::InArchive& ar) {
  std::uint32_t index;
  std::uint64_t size;
  std::string name;
  std::uint8_t named;
  ar(index, size, name, named);
  auto st = std::make_shared<ShmState>();
  st->fd.reset(ar.reader().take_fd(index));
  std::size_t actual = detail::fd_size(st->fd.get());
  if (size == 0 || size > actual)
    throw ProtocolError("mpxx: received shared memory of " + std::to_string(actual) +
                        " bytes described as " + std::to_string(size));
  st->size = static_cast<std::size_t>(size);
  st->name = std::move(name);
  st->named = named != 0;
  st->addr = detail::map_fd(st->fd.get(), st->size, st->name);
  st_ = std::move(st);
}

// ----------------------------------------------------------- ShareableList
//
// Layout: [u64 magic][u64 count][count slots][data], slot = {u32 type,
// u32 capacity, u64 offset, u64 length}. Offsets are relative to the data.

namespace {
constexpr std::uint64_t kListMagic = 0x5453494c4d485358ull;  // "XSHMLIST"
struct Slot {
  std::uint32_t type;
  std::uint32_t capacity;
  std::uint64_t offset;
  std::uint64_t length;
};
constexpr std::size_t kHeader = 16;

std::size_t capacity_for(const ShareableList::Item& v) {
  if (auto* s = std::get_if<std::string>(&v)) return (s->size() + 7) / 8 * 8;
  if (auto* b = std::get_if<Bytes>(&v)) return (b->size() + 7) / 8 * 8;
  return 8;
}

std::size_t layout_size(const std::vector<ShareableList::Item>& items) {
  std::size_t n = kHeader + items.size() * sizeof(Slot);
  for (auto& v : items) n += capacity_for(v);
  return n;
}

Slot* slots(std::byte* base) { return reinterpret_cast<Slot*>(base + kHeader); }
std::uint64_t count_of(std::byte* base) {
  std::uint64_t n;
  std::memcpy(&n, base + 8, 8);
  return n;
}
}  // namespace

ShareableList::ShareableList(const std::vector<Item>& items)
    : ShareableList(SharedMemory::create(layout_size(items))) {
  init(items);
}

ShareableList::ShareableList(const std::vector<Item>& items, std::string name)
    : ShareableList(SharedMemory::create(layout_size(items), std::move(name))) {
  init(items);
}

void ShareableList::init(const std::vector<Item>& items) {
  std::byte* base = shm_.buf().data();
  std::uint64_t magic = kListMagic, n = items.size();
  std::memcpy(base, &magic, 8);
  std::memcpy(base + 8, &n, 8);
  std::uint64_t off = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    slots(base)[i] = Slot{0, static_cast<std::uint32_t>(capacity_for(items[i])), off, 0};
    off += slots(base)[i].capacity;
    set(i, items[i]);
  }
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

// Validates a list that came from elsewhere before any index is trusted.
void ShareableList::check() const {
  auto buf = shm_.buf();
  std::uint64_t magic;
  if (buf.size() < kHeader || (std::memcpy(&magic, buf.data(), 8), magic != kListMagic))
    throw ValueError("mpxx: shared memory '" + shm_.name() + "' does not hold a ShareableList");
  std::uint64_t n = count_of(buf.data());
  if (n > (buf.size() - kHeader) / sizeof(Slot))
    throw ProtocolError("mpxx: corrupt ShareableList (count " + std::to_string(n) + ")");
  std::size_t data = kHeader + n * sizeof(Slot);
  for (std::uint64_t i = 0; i < n; ++i) {
    const Slot& s = slots(buf.data())[i];
    if (s.type > 5 || s.offset > buf.size() - data || s.capacity > buf.size() - data - s.offset ||
        s.length > s.capacity)
      throw ProtocolError("mpxx: corrupt ShareableList slot " + std::to_string(i));
  }
}

std::size_t ShareableList::size() const { return count_of(shm_.buf().data()); }

ShareableList::Item ShareableList::get(std::size_t i) const {
  std::byte* base = shm_.buf().data();
  std::size_t n = count_of(base);
  if (i >= n) throw IndexError("mpxx: ShareableList index " + std::to_string(i) + " out of range");
  const Slot& s = slots(base)[i];
  const std::byte* p = base + kHeader + n * sizeof(Slot) + s.offset;
  switch (s.type) {
    case 0: return std::monostate{};
    case 1: {
      std::int64_t v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case 2: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case 3: return std::to_integer<int>(p[0]) != 0;
    case 4: return std::string(reinterpret_cast<const char*>(p), s.length);
    case 5: return Bytes(p, p + s.length);
  }
  throw ProtocolError("mpxx: corrupt ShareableList slot " + std::to_string(i));
}

void ShareableList::set(std::size_t i, const Item& v) {
  std::byte* base = shm_.buf().data();
  std::size_t n = count_of(base);
  if (i >= n) throw IndexError("mpxx: ShareableList index " + std::to_string(i) + " out of range");
  Slot& s = slots(base)[i];
  std::byte* p = base + kHeader + n * sizeof(Slot) + s.offset;
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
    throw ValueError("mpxx: a value of " + std::to_string(need) + " bytes does not fit slot " +
                     std::to_string(i) + " of " + std::to_string(s.capacity) + " bytes");
  if (need) std::memcpy(p, src, need);
  s.length = need;
  s.type = static_cast<std::uint32_t>(v.index());
}

std::size_t ShareableList::count(const Item& v) const {
  std::size_t c = 0;
  for (std::size_t i = 0, n = size(); i < n; ++i) c += get(i) == v;
  return c;
}

std::size_t ShareableList::index(const Item& v) const {
  for (std::size_t i = 0, n = size(); i < n; ++i)
    if (get(i) == v) return i;
  throw ValueError("mpxx: value is not in the ShareableList");
}

std::vector<ShareableList::Item> ShareableList::to_vector() const {
  std::vector<Item> out;
  for (std::size_t i = 0, n = size(); i < n; ++i) out.push_back(get(i));
  return out;
}

}  // namespace mpxx
