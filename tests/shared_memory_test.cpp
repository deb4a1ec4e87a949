// SharedMemory and ShareableList: names, lifetimes, children, bad input.
#include <gtest/gtest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"
#include "shared/tracker.hpp"

using namespace std::chrono_literals;

namespace shm_targets {

void fill(mpxx::SharedMemory shm, int value) {
  std::ranges::fill(shm.buf(), static_cast<std::byte>(value));
}

void fill_by_name(std::string name, int value) {
  auto shm = mpxx::SharedMemory::attach(name);
  std::ranges::fill(shm.buf(), static_cast<std::byte>(value));
}

// Exits 0 if every byte is (i * 31) % 251.
void verify_pattern(mpxx::SharedMemory shm) {
  auto b = shm.buf();
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b[i] != static_cast<std::byte>((i * 31) % 251)) std::exit(1);
  std::exit(0);
}

void create_named_and_block(std::string name, mpxx::Event ready) {
  auto shm = mpxx::SharedMemory::create(4096, name);
  ready.set();
  for (;;) ::pause();
}

void create_named_and_return(std::string name) { (void)mpxx::SharedMemory::create(4096, name); }

void attach_and_return(std::string name) { (void)mpxx::SharedMemory::attach(name); }

void edit_list(mpxx::ShareableList sl) {
  sl.set(0, std::int64_t{99});
  sl.set(2, std::string("howdy"));
}

void edit_list_by_name(std::string name) {
  auto sl = mpxx::ShareableList::attach(name);
  sl[0] = sl[1];
  sl[2] = "howdy";
}

// Creates an unnamed block, fills it, hands its name over, and returns once
// the parent has attached: the parent's handle must outlive this process.
void create_unnamed_and_wait(mpxx::Queue<std::string> names, mpxx::Event attached) {
  auto shm = mpxx::SharedMemory::create(1 << 16);
  std::ranges::fill(shm.buf(), std::byte{0x33});
  names.put(shm.name());
  if (!attached.wait(20s)) std::exit(3);
}

}  // namespace shm_targets

namespace {
using namespace shm_targets;

bool dev_shm_has(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

bool wait_dev_shm_gone(const std::string& name) {
  for (int i = 0; i < 500; ++i) {
    if (!dev_shm_has(name)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

std::string unique_name(const char* what) {
  return std::string("mpxx_test_") + what + "_" + std::to_string(::getpid());
}

// Polls up to 10 s for `pred`; true as soon as it holds.
template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 1000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

// The processes whose parent is this one (from /proc/<pid>/stat).
std::set<pid_t> my_children() {
  std::set<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state;
    long ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == ::getpid())
      out.insert(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

class ShmTest : public mpxx_test::StartMethodTest {};
MPXX_FOR_EACH_START_METHOD(ShmTest);

TEST(SharedMemory, UnnamedBlockIsAMemfdAttachableByName) {
  auto shm = mpxx::SharedMemory::create(10000);
  EXPECT_EQ(shm.size(), 10000u);
  EXPECT_FALSE(shm.named());
  EXPECT_EQ(shm.name().rfind("mpxx-", 0), 0u);
  EXPECT_FALSE(dev_shm_has(shm.name()));
  shm.buf()[5] = std::byte{42};
  auto other = mpxx::SharedMemory::attach(shm.name());
  EXPECT_EQ(other.size(), 10000u);
  EXPECT_EQ(other.buf()[5], std::byte{42});
  other.buf()[6] = std::byte{7};
  EXPECT_EQ(shm.buf()[6], std::byte{7});
  EXPECT_NO_THROW(shm.unlink());  // nothing to remove
}

TEST(SharedMemory, PythonConstructorForm) {
  mpxx::SharedMemory a(std::nullopt, true, 64);
  mpxx::SharedMemory b(a.name());
  b.buf()[0] = std::byte{1};
  EXPECT_EQ(a.buf()[0], std::byte{1});
  EXPECT_THROW(mpxx::SharedMemory(std::nullopt, true, 0), mpxx::ValueError);
  EXPECT_THROW(mpxx::SharedMemory(), mpxx::ValueError);
}

TEST(SharedMemory, BadInput) {
  EXPECT_THROW(mpxx::SharedMemory::attach("mpxx_test_does_not_exist"), mpxx::OSError);
  EXPECT_THROW(mpxx::SharedMemory::attach("mpxx-1-999-0123456789abcdef"), mpxx::OSError);
  EXPECT_THROW(mpxx::SharedMemory::create(0), mpxx::ValueError);
  auto shm = mpxx::SharedMemory::create(100);
  try {
    mpxx::SharedMemory::attach(shm.name(), 200);
    FAIL();
  } catch (const mpxx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("100 bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mpxx::SharedMemory::create(10, "bad/name"), mpxx::ValueError);
  shm.close();
  EXPECT_THROW(shm.buf(), mpxx::ValueError);
}

TEST(SharedMemory, NamedBlockLivesInDevShmUntilUnlinked) {
  std::string name = unique_name("named");
  auto shm = mpxx::SharedMemory::create(4096, name);
  EXPECT_TRUE(shm.named());
  EXPECT_TRUE(dev_shm_has(name));
  EXPECT_THROW(mpxx::SharedMemory::create(4096, name), mpxx::OSError);  // exists
  auto other = mpxx::SharedMemory::attach(name);
  other.buf()[0] = std::byte{9};
  EXPECT_EQ(shm.buf()[0], std::byte{9});
  shm.unlink();
  EXPECT_FALSE(dev_shm_has(name));
  EXPECT_THROW(shm.unlink(), mpxx::OSError);
  EXPECT_EQ(other.buf()[0], std::byte{9});  // mappings outlive the name
}

TEST(SharedMemory, BadInputMessagesAndErrnos) {
  try {
    mpxx::SharedMemory::attach("mpxx_test_no_such_block");
    FAIL();
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("mpxx_test_no_such_block"), std::string::npos) << e.what();
  }
  std::string name = unique_name("badsize");
  auto shm = mpxx::SharedMemory::create(100, name);
  EXPECT_THROW(mpxx::SharedMemory(name, false, 101), mpxx::ValueError);  // Python's form
  EXPECT_EQ(mpxx::SharedMemory(name, false, 100).size(), 100u);
  EXPECT_EQ(mpxx::SharedMemory::attach("/" + name).name(), name);  // Python accepts "/name" too
  try {
    mpxx::SharedMemory::create(100, name);
    FAIL();
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), EEXIST);
  }
  try {
    mpxx::SharedMemory::create(SIZE_MAX);  // negative as an off_t
    FAIL();
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), EINVAL);
    EXPECT_EQ(std::string(e.what()).rfind("mpxx: cannot size shared memory to ", 0), 0u) << e.what();
  }
  EXPECT_THROW(mpxx::SharedMemory::create(10, ""), mpxx::ValueError);
  EXPECT_THROW(mpxx::SharedMemory::create(10, "/"), mpxx::ValueError);
  EXPECT_THROW(mpxx::SharedMemory::create(10, "mpxx-1-2-0123456789abcdef"), mpxx::ValueError);
  EXPECT_THROW(mpxx::SharedMemory::attach(""), mpxx::ValueError);
  shm.unlink();
}

TEST(SharedMemory, GeneratedNameResolvesOnlyWhileTheCreatorHoldsTheBlock) {
  auto shm = mpxx::SharedMemory::create(64);
  std::string name = shm.name();
  auto attached = mpxx::SharedMemory::attach(name);
  EXPECT_FALSE(attached.creator());
  shm.close();
  try {
    mpxx::SharedMemory::attach(name);
    FAIL() << "attached to a closed block";
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), ENOENT);
  }
  attached.buf()[0] = std::byte{1};  // the memory lives on in the other handle
  // The next block most likely reuses the fd number: the old name must not
  // resolve to it (the tag is checked).
  auto reuse = mpxx::SharedMemory::create(64);
  EXPECT_THROW(mpxx::SharedMemory::attach(name), mpxx::OSError);
  EXPECT_NO_THROW(mpxx::SharedMemory::attach(reuse.name()));
}

// A process that has nothing of ours but the names: forked, every inherited
// fd above stdio closed, then attaching by name only.
TEST(SharedMemory, UnrelatedProcessAttachesByName) {
  auto unnamed = mpxx::SharedMemory::create(8192);
  std::string name = unique_name("unrelated");
  auto named = mpxx::SharedMemory::create(8192, name);
  std::string unnamed_name = unnamed.name();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close_range(3, ~0u, 0);
    int code = 0;
    try {
      auto a = mpxx::SharedMemory::attach(unnamed_name, 8192);
      auto b = mpxx::SharedMemory::attach(name, 8192);
      std::ranges::fill(a.buf(), std::byte{0x11});
      std::ranges::fill(b.buf(), std::byte{0x22});
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(unnamed.buf()[8191], std::byte{0x11});
  EXPECT_EQ(named.buf()[8191], std::byte{0x22});
  EXPECT_TRUE(dev_shm_has(name));  // it only attached
  named.unlink();
}

TEST_P(ShmTest, SpawnedCreatorExitsAttachedHandleKeepsWorking) {
  mpxx::Queue<std::string> names;
  mpxx::Event attached;
  mpxx::Process p(opts(), create_unnamed_and_wait, names, attached);
  p.start();
  std::string name = names.get(20s);
  auto shm = mpxx::SharedMemory::attach(name, 1 << 16);
  attached.set();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(std::ranges::all_of(shm.buf(), [](std::byte b) { return b == std::byte{0x33}; }));
  shm.buf()[0] = std::byte{0};
  EXPECT_THROW(mpxx::SharedMemory::attach(name), mpxx::OSError);  // its creator is gone
}

TEST_P(ShmTest, ChildWritesThroughAHandle) {
  auto shm = mpxx::SharedMemory::create(1 << 16);
  mpxx::Process p(opts(), fill, shm, 0x5a);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(std::ranges::all_of(shm.buf(), [](std::byte b) { return b == std::byte{0x5a}; }));
}

TEST_P(ShmTest, ChildAttachesByNameOnly) {
  auto unnamed = mpxx::SharedMemory::create(4096);
  std::string name = unique_name("byname");
  auto named = mpxx::SharedMemory::create(4096, name);
  mpxx::Process a(opts(), fill_by_name, unnamed.name(), 1), b(opts(), fill_by_name, name, 2);
  a.start();
  b.start();
  a.join();
  b.join();
  EXPECT_EQ(a.exitcode(), 0);
  EXPECT_EQ(b.exitcode(), 0);
  EXPECT_EQ(unnamed.buf()[100], std::byte{1});
  EXPECT_EQ(named.buf()[100], std::byte{2});
  named.unlink();
}

TEST_P(ShmTest, AttachOnlyNeverUnlinks) {
  std::string name = unique_name("attachonly");
  auto shm = mpxx::SharedMemory::create(4096, name);
  mpxx::Process p(opts(), attach_and_return, name);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(dev_shm_has(name));
  shm.unlink();
}

TEST_P(ShmTest, CreatorExitingWithoutUnlinkIsCleanedUp) {
  std::string name = unique_name("forgotten");
  mpxx_test::CaptureFd err(2);
  mpxx::Process p(opts(), create_named_and_return, name);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(wait_dev_shm_gone(name));
  EXPECT_TRUE(eventually([&] { return err.text().find("exited without unlinking") != std::string::npos; }))
      << err.text();
}

TEST_P(ShmTest, CreatorKilledIsCleanedUp) {
  std::string name = unique_name("killed");
  mpxx::Event ready;
  mpxx::Process p(opts(), create_named_and_block, name, ready);
  p.start();
  ASSERT_TRUE(ready.wait(10s));
  EXPECT_TRUE(dev_shm_has(name));
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  EXPECT_TRUE(wait_dev_shm_gone(name)) << "/dev/shm/" << name << " outlived its SIGKILLed creator";
}

// The name must never exist before the tracker knows it: a creator killed
// the moment its name appears in /dev/shm (seen through inotify, well
// within the fork of its first tracker) leaves nothing behind.
TEST_P(ShmTest, CreatorKilledTheMomentItsNameAppearsIsCleanedUp) {
  std::string name = unique_name("appears");
  int in = ::inotify_init1(IN_CLOEXEC);
  ASSERT_GE(in, 0);
  ASSERT_GE(::inotify_add_watch(in, "/dev/shm", IN_CREATE | IN_MOVED_TO), 0);
  mpxx::Event ready;
  mpxx::Process p(opts(), create_named_and_block, name, ready);
  p.start();
  bool seen = false;
  alignas(inotify_event) char buf[4096];
  for (auto deadline = std::chrono::steady_clock::now() + 10s; !seen && std::chrono::steady_clock::now() < deadline;) {
    pollfd pf{in, POLLIN, 0};
    if (::poll(&pf, 1, 100) <= 0) continue;
    ssize_t n = ::read(in, buf, sizeof buf);
    for (ssize_t at = 0; at < n;) {
      auto* ev = reinterpret_cast<inotify_event*>(buf + at);
      if (ev->len && name == ev->name) seen = true;
      at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
    }
  }
  p.kill();
  p.join();
  ::close(in);
  ASSERT_TRUE(seen) << "/dev/shm/" << name << " never appeared";
  EXPECT_TRUE(wait_dev_shm_gone(name)) << "/dev/shm/" << name << " outlived a creator killed as it appeared";
  ::shm_unlink(("/" + name).c_str());
}

TEST(SharedMemoryLifetime, UnlinkedByTheCreatorIsForgotten) {
  std::string name = unique_name("unlinked");
  mpxx_test::CaptureFd err(2);
  {
    auto shm = mpxx::SharedMemory::create(4096, name);
    EXPECT_TRUE(shm.creator());
    shm.unlink();
  }
  mpxx::detail::stop_resource_tracker();  // as at exit
  EXPECT_EQ(err.text(), "");
}

// The tracker removes a name only while it denotes the segment its creator
// made: if someone else unlinked it and made a new one, that one stays.
TEST(SharedMemoryLifetime, TrackerSparesASegmentThatReusedTheName) {
  std::string name = unique_name("reused");
  auto shm = mpxx::SharedMemory::create(4096, name);
  mpxx::SharedMemory::attach(name).unlink();  // not by its creator
  int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);  // someone else's
  ASSERT_GE(fd, 0);
  ::close(fd);
  mpxx::detail::stop_resource_tracker();  // as if the creator exited
  EXPECT_TRUE(dev_shm_has(name));
  ::shm_unlink(("/" + name).c_str());
}

// A killed tracker is replaced at the next registration, which must not
// raise SIGPIPE, and the replacement knows the earlier names.
TEST(SharedMemoryLifetime, KilledTrackerIsReplaced) {
  mpxx_test::CaptureFd err(2);
  std::string a = unique_name("replay_a"), b = unique_name("replay_b");
  auto before = my_children();
  auto sa = mpxx::SharedMemory::create(4096, a);
  std::set<pid_t> started;
  for (pid_t pid : my_children())
    if (!before.count(pid)) started.insert(pid);
  ASSERT_EQ(started.size(), 1u) << "expected exactly one tracker process";
  pid_t tracker = *started.begin();
  ASSERT_EQ(::kill(tracker, SIGKILL), 0);
  ASSERT_TRUE(mpxx_test::wait_gone(tracker, 10s));
  auto sb = mpxx::SharedMemory::create(4096, b);
  EXPECT_TRUE(dev_shm_has(a));
  EXPECT_TRUE(dev_shm_has(b));
  mpxx::detail::stop_resource_tracker();  // as if this process exited
  EXPECT_FALSE(dev_shm_has(a));
  EXPECT_FALSE(dev_shm_has(b));
  EXPECT_NE(err.text().find("'" + a + "'"), std::string::npos) << err.text();
}

TEST_P(ShmTest, HundredMiBReadInAChild) {
  constexpr std::size_t kSize = 100u << 20;
  auto shm = mpxx::SharedMemory::create(kSize);
  auto b = shm.buf();
  for (std::size_t i = 0; i < kSize; ++i) b[i] = static_cast<std::byte>((i * 31) % 251);
  mpxx::Process p(opts(), verify_pattern, shm);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------ ShareableList

TEST(ShareableList, ItemsTypesAndPythonErrors) {
  using Item = mpxx::ShareableList::Item;
  mpxx::ShareableList sl({std::int64_t{1}, 2.5, std::string("hello"), true, std::monostate{},
                          mpxx::Bytes{std::byte{1}, std::byte{2}}});
  EXPECT_EQ(sl.size(), 6u);
  EXPECT_EQ(sl[0], Item(std::int64_t{1}));
  EXPECT_EQ(sl[1], Item(2.5));
  EXPECT_EQ(sl[2], Item(std::string("hello")));
  EXPECT_EQ(sl[3], Item(true));
  EXPECT_EQ(sl[4], Item(std::monostate{}));
  EXPECT_EQ(sl[5], Item(mpxx::Bytes{std::byte{1}, std::byte{2}}));
  sl.set(2, std::string("howdy!!!"));  // "hello" got 8 bytes
  EXPECT_EQ(sl[2], Item(std::string("howdy!!!")));
  EXPECT_THROW(sl.set(2, std::string("much too long for it")), mpxx::ValueError);
  EXPECT_THROW(sl.get(6), mpxx::IndexError);
  EXPECT_THROW(sl.set(6, std::int64_t{0}), mpxx::IndexError);
  sl.set(0, 3.0);  // a fixed-size slot may change type
  EXPECT_EQ(sl[0], Item(3.0));
  EXPECT_EQ(sl.count(Item(true)), 1u);
  EXPECT_EQ(sl.index(Item(true)), 3u);
  EXPECT_THROW(sl.index(Item(std::int64_t{12345})), mpxx::ValueError);
  try {
    sl[2] = std::string(9, 'x');
    FAIL();
  } catch (const mpxx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("8 bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sl[6], mpxx::IndexError);
  EXPECT_EQ(sl[2], Item(std::string("howdy!!!")));  // a failed set changes nothing
}

TEST(ShareableList, SubscriptReadsAndWritesLikePython) {
  using Item = mpxx::ShareableList::Item;
  mpxx::ShareableList sl({1, 2.5, "hello", true, std::monostate{}});  // the header's example
  EXPECT_EQ(sl[0], Item(std::int64_t{1}));
  sl[2] = "howdy";
  sl[0] = sl[1];
  sl[4] = mpxx::Bytes{std::byte{0xff}};  // None's 8 bytes take any short value
  Item two = sl[2];
  EXPECT_EQ(two, Item(std::string("howdy")));
  EXPECT_EQ(Item(2.5), sl[0]);
  EXPECT_EQ(sl.to_vector(), (std::vector<Item>{2.5, 2.5, std::string("howdy"), true,
                                               mpxx::Bytes{std::byte{0xff}}}));
  EXPECT_EQ(sl.count(2.5), 2u);
  EXPECT_EQ(sl.index(true), 3u);
  mpxx::ShareableList empty(std::vector<mpxx::ShareableList::Item>{});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_THROW(empty[0], mpxx::IndexError);
}

TEST(ShareableList, CorruptLayoutIsAnErrorNotACrash) {
  mpxx::ShareableList sl({std::int64_t{5}, std::string("abcdefgh")});
  auto buf = sl.shm().buf();
  std::uint64_t huge = 1ull << 40;
  std::memcpy(buf.data() + 16 + 24 + 8, &huge, 8);  // slot 1's offset
  EXPECT_THROW(sl.get(1), mpxx::ProtocolError);
  EXPECT_THROW(sl.set(1, std::string("x")), mpxx::ProtocolError);
  EXPECT_THROW(mpxx::ShareableList::attach(sl.shm().name()), mpxx::ProtocolError);
  EXPECT_EQ(sl[0], mpxx::ShareableList::Item(std::int64_t{5}));  // slot 0 is fine
  std::memset(buf.data(), 0, 8);  // the magic
  EXPECT_THROW(sl.size(), mpxx::ValueError);
}

TEST(ShareableList, AttachByNameAndRejectOtherMemory) {
  mpxx::ShareableList sl({std::int64_t{5}, std::string("x")});
  auto other = mpxx::ShareableList::attach(sl.shm().name());
  other.set(0, std::int64_t{6});
  EXPECT_EQ(sl[0], mpxx::ShareableList::Item(std::int64_t{6}));
  auto plain = mpxx::SharedMemory::create(64);
  EXPECT_THROW(mpxx::ShareableList::attach(plain.name()), mpxx::ValueError);
}

TEST_P(ShmTest, ShareableListEditedByAChild) {
  mpxx::ShareableList sl({std::int64_t{1}, 2.0, std::string("hello")});
  mpxx::Process p(opts(), edit_list, sl);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(sl[0], mpxx::ShareableList::Item(std::int64_t{99}));
  EXPECT_EQ(sl[2], mpxx::ShareableList::Item(std::string("howdy")));
}

TEST_P(ShmTest, NamedShareableListAttachedByNameInAChild) {
  std::string name = unique_name("list");
  mpxx::ShareableList sl({std::int64_t{1}, 2.0, std::string("hello")}, name);
  EXPECT_TRUE(dev_shm_has(name));
  mpxx::Process p(opts(), edit_list_by_name, name);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(sl.to_vector(), (std::vector<mpxx::ShareableList::Item>{2.0, 2.0, std::string("howdy")}));
  sl.shm().unlink();
}

}  // namespace
