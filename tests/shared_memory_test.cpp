// SharedMemory and ShareableList: names, lifetimes, children, bad input.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"

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

TEST(SharedMemoryLifetime, AttachOnlyNeverUnlinks) {
  std::string name = unique_name("attachonly");
  auto shm = mpxx::SharedMemory::create(4096, name);
  mpxx::Process p(attach_and_return, name);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(dev_shm_has(name));
  shm.unlink();
}

TEST(SharedMemoryLifetime, CreatorExitingWithoutUnlinkIsCleanedUp) {
  std::string name = unique_name("forgotten");
  mpxx_test::CaptureFd err(2);
  mpxx::Process p(create_named_and_return, name);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(wait_dev_shm_gone(name));
  EXPECT_NE(err.text().find("exited without unlinking"), std::string::npos);
}

TEST(SharedMemoryLifetime, CreatorKilledIsCleanedUp) {
  std::string name = unique_name("killed");
  mpxx::Event ready;
  mpxx::Process p(create_named_and_block, name, ready);
  p.start();
  ASSERT_TRUE(ready.wait(10s));
  EXPECT_TRUE(dev_shm_has(name));
  p.kill();
  p.join();
  EXPECT_TRUE(wait_dev_shm_gone(name)) << "/dev/shm/" << name << " outlived its SIGKILLed creator";
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

}  // namespace
