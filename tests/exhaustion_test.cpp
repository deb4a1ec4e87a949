// Resource exhaustion gives errors, not crashes: no fds left (RLIMIT_NOFILE),
// /dev/shm full, and an address-space limit (RLIMIT_AS) on a large message.
//
// Every scenario runs in a child forked from the test, so that its rlimits
// and mount namespace never touch the test runner; the child writes what it
// found wrong, one line each, to a pipe, and the test asserts that it found
// nothing (and that the child finished).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"
#include "process/forkserver.hpp"
#include "shared/tracker.hpp"

using namespace std::chrono_literals;

namespace exhaustion_targets {
// Plain functions: they cross to spawn and forkserver children.
void do_nothing() {}
int plus_one(int x) { return x + 1; }
std::vector<char> big_result(std::size_t n) { return std::vector<char>(n, 'r'); }
}  // namespace exhaustion_targets

namespace {
using namespace exhaustion_targets;

// What a scenario child reports: each failed check is one line.
class Findings {
 public:
  void fail(const std::string& line) { out_ << line << "\n"; }
  void check(bool ok, const std::string& what) {
    if (!ok) fail(what);
  }
  // Not a failure: shown in the test's output (what each object needed).
  void note(const std::string& line) { notes_ << line << "\n"; }
  std::string text() const { return out_.str(); }
  std::string notes() const { return notes_.str(); }

 private:
  std::ostringstream out_, notes_;
};

struct ChildResult {
  int status = -1;   // waitpid status, -1 if it hung and was killed
  std::string text;  // the failed checks
};

// Runs `scenario` in a forked child and collects its findings. The child
// leaves with _exit (no atexit of the test runner); exit status 0 means the
// scenario ran to its end, 77 that it skipped (the text says why).
ChildResult in_child(const std::function<void(Findings&)>& scenario) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return {-1, "pipe2 failed"};
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    Findings f;
    int code = 0;
    try {
      scenario(f);
    } catch (const std::exception& e) {
      f.fail(std::string("scenario threw: ") + e.what());
    }
    std::string t = f.text();
    if (t.rfind("SKIP ", 0) == 0) code = 77;
    t = f.notes() + '\0' + t;
    (void)!::write(p[1], t.data(), t.size());
    ::_exit(code);
  }
  ::close(p[1]);
  ChildResult r;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  pollfd pf{pidfd, POLLIN, 0};
  if (::poll(&pf, 1, 50000) != 1) {
    ::kill(pid, SIGKILL);
    r.text = "the scenario hung (killed after 50 s)\n";
  }
  ::close(pidfd);
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (r.text.empty()) r.status = st;
  ::fcntl(p[0], F_SETFL, O_NONBLOCK);
  char buf[4096];
  ssize_t n;
  std::string all;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) all.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  const auto split = all.find('\0');
  if (split != std::string::npos) {
    std::fputs(all.substr(0, split).c_str(), stdout);
    r.text += all.substr(split + 1);
  } else {
    r.text += all;
  }
  return r;
}

// The test's verdict on a scenario child.
#define EXPECT_SCENARIO_CLEAN(result)                                                         \
  do {                                                                                        \
    const ChildResult& r_ = (result);                                                         \
    if (r_.status >= 0 && WIFEXITED(r_.status) && WEXITSTATUS(r_.status) == 77)                \
      GTEST_SKIP() << r_.text;                                                                \
    EXPECT_EQ(r_.text, "");                                                                   \
    EXPECT_TRUE(r_.status >= 0 && WIFEXITED(r_.status) && WEXITSTATUS(r_.status) == 0)       \
        << "the scenario child ended with status " << r_.status                             \
        << (r_.status >= 0 && WIFSIGNALED(r_.status)                                         \
                ? " (signal " + std::to_string(WTERMSIG(r_.status)) + ")"                    \
                : std::string());                                                            \
  } while (0)

// ------------------------------------------------------------ no fds left

constexpr rlim_t kFdLimit = 64;

// Takes every free fd below RLIMIT_NOFILE but `spare`, and gives them back.
class FdFiller {
 public:
  explicit FdFiller(int spare) {
    for (;;) {
      int fd = ::fcntl(0, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) break;
      fds_.push_back(fd);
    }
    for (int i = 0; i < spare && !fds_.empty(); ++i) {
      ::close(fds_.back());
      fds_.pop_back();
    }
  }
  ~FdFiller() { release(); }
  void release() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

 private:
  std::vector<int> fds_;
};

// What a failed call could leave behind. The forkserver and the resource
// tracker are infrastructure that lives until exit: they are stopped first,
// as the test fixture does.
mpxx_test::Resources settled_snapshot() {
  mpxx::detail::stop_forkserver();
  mpxx::detail::stop_resource_tracker();
  return mpxx_test::snapshot();
}

std::string describe_diff(const mpxx_test::Resources& a, const mpxx_test::Resources& b) {
  std::ostringstream out;
  for (const auto& x : b.fds)
    if (!a.fds.count(x)) out << " fd " << x << ";";
  for (const auto& x : a.fds)
    if (!b.fds.count(x)) out << " closed fd " << x << ";";
  for (pid_t c : b.children)
    if (!a.children.count(c)) out << " child " << c << ";";
  for (const auto& x : b.shm)
    if (!a.shm.count(x)) out << " /dev/shm/" << x << ";";
  return out.str();
}

// Calls `attempt` with 0, 1, 2, ... fds left below the limit until it
// succeeds, so that the failure falls on every fd it opens in turn. Each
// failure must be an OSError EMFILE whose message starts with "mpxx: " and
// `context` (what was being made), and must leave no fd, child or /dev/shm
// entry behind. Then, with the fds given back, the attempt must succeed
// again. Returns the fds it needed.
int step_through_fd_shortage(Findings& f, const std::string& what, const std::string& context,
                             const std::function<void()>& attempt) {
  attempt();  // warm up what is made once per process and kept
  const auto before = settled_snapshot();
  rlimit old{};
  ::getrlimit(RLIMIT_NOFILE, &old);
  rlimit low{kFdLimit, old.rlim_max};
  ::setrlimit(RLIMIT_NOFILE, &low);
  int needed = -1;
  for (int spare = 0; spare < static_cast<int>(kFdLimit) && needed < 0; ++spare) {
    std::string failure;
    {
      FdFiller filler(spare);
      try {
        attempt();
        needed = spare;
      } catch (const mpxx::OSError& e) {
        f.note("  " + what + ", " + std::to_string(spare) + " fds left: " + e.what());
        if (e.code() != EMFILE)
          failure = "an OSError with errno " + std::to_string(e.code()) + " instead of EMFILE: " + e.what();
        else if (std::string(e.what()).rfind("mpxx: " + context, 0) != 0)
          failure = std::string("a message that does not start with 'mpxx: ") + context + "': " + e.what();
      } catch (const std::exception& e) {
        failure = std::string("not an OSError: ") + e.what();
      }
    }
    const auto after = settled_snapshot();
    std::string leaked = describe_diff(before, after);
    if (!failure.empty()) f.fail(what + " with " + std::to_string(spare) + " fds left: " + failure);
    if (!leaked.empty())
      f.fail(what + " with " + std::to_string(spare) + " fds left left behind:" + leaked);
  }
  f.check(needed >= 0, what + " never succeeded below " + std::to_string(kFdLimit) + " fds");
  f.note(what + " needs " + std::to_string(needed) + " free fds");
  try {
    attempt();
  } catch (const std::exception& e) {
    f.fail(what + " failed with the fds given back: " + e.what());
  }
  ::setrlimit(RLIMIT_NOFILE, &old);
  return needed;
}

#ifdef MPXX_TEST_SANITIZED
#define SKIP_UNDER_SANITIZERS(why) GTEST_SKIP() << why
#else
#define SKIP_UNDER_SANITIZERS(why) (void)0
#endif
// The sanitizer runtime opens fds of its own: with none left, a scenario
// child ends with status 1 and no finding of ours.
#define SKIP_FD_SHORTAGE_UNDER_SANITIZERS() \
  SKIP_UNDER_SANITIZERS("the sanitizer runtime needs fds of its own when none are left")

class FdShortage : public mpxx_test::StartMethodTest {};

TEST_P(FdShortage, ProcessStartFailsWithEmfileAndLeavesNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  auto ctx = opts();
  EXPECT_SCENARIO_CLEAN(in_child([&](Findings& f) {
    step_through_fd_shortage(f, "Process start", "cannot start Process-", [&] {
      mpxx::Process p(ctx, do_nothing);
      p.start();
      p.join();
      if (p.exitcode() != 0) throw std::runtime_error("exit code " + std::to_string(*p.exitcode()));
    });
  }));
}
MPXX_FOR_EACH_START_METHOD(FdShortage);

TEST(FdShortage, PipeFailsWithEmfileAndLeavesNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    step_through_fd_shortage(f, "Pipe()", "cannot create a Pipe", [] {
      auto [a, b] = mpxx::Pipe();
      a.send(41);
      if (b.recv<int>() != 41) throw std::runtime_error("wrong value");
    });
  }));
}

TEST(FdShortage, QueueAndALargePutFailWithEmfileAndLeaveNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    const std::vector<int> big(1 << 20, 7);  // 4 MiB: the large-message path
    step_through_fd_shortage(f, "Queue", "cannot create a Queue", [&] {
      mpxx::Queue<std::vector<int>> q;
      q.put(big);
      if (q.get(5s) != big) throw std::runtime_error("wrong value");
    });
    step_through_fd_shortage(f, "JoinableQueue", "cannot create a Queue", [&] {
      mpxx::JoinableQueue<std::vector<int>> q;
      q.put(big);
      if (q.get(5s) != big) throw std::runtime_error("wrong value");
      q.task_done();
      q.join();
    });
  }));
}

TEST(FdShortage, PoolFailsWithEmfileAndLeavesNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    step_through_fd_shortage(f, "Pool(2)", "cannot start a Pool of 2 processes", [] {
      mpxx::Pool pool(2);
      if (pool.map(plus_one, std::vector<int>{1, 2, 3}) != std::vector<int>{2, 3, 4})
        throw std::runtime_error("wrong results");
      pool.close();
      pool.join();
    });
  }));
}

// Free fd numbers below the soft RLIMIT_NOFILE.
int free_fds() {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  int used = 0;
  for (const std::string& fd : mpxx_test::snapshot().fds)
    if (static_cast<rlim_t>(std::stoi(fd)) < lim.rlim_cur) ++used;
  return static_cast<int>(lim.rlim_cur) - used;
}

// Pool(n) under the current fd limit: starts, maps, closes, joins.
void pool_of(int n) {
  mpxx::Pool pool(n);
  if (pool.worker_pids().size() != static_cast<std::size_t>(n)) throw std::runtime_error("missing workers");
  if (pool.map(plus_one, std::vector<int>(static_cast<std::size_t>(2 * n), 1), {.chunksize = 1}) !=
      std::vector<int>(static_cast<std::size_t>(2 * n), 2))
    throw std::runtime_error("wrong results");
  pool.close();
  pool.join();
}

// Pool(n) must fail with EMFILE, say so, and leave nothing behind.
void pool_fails_with_emfile(Findings& f, int n) {
  const auto before = settled_snapshot();
  const std::string what = "Pool(" + std::to_string(n) + ") with " + std::to_string(free_fds()) + " free fds";
  try {
    pool_of(n);
    f.fail(what + " started");
  } catch (const mpxx::OSError& e) {
    f.note("  " + what + ": " + e.what());
    const std::string context = "mpxx: cannot start a Pool of " + std::to_string(n) + " processes";
    f.check(e.code() == EMFILE, what + ": errno " + std::to_string(e.code()) + " instead of EMFILE");
    f.check(std::string(e.what()).rfind(context, 0) == 0, what + ": the message does not start with '" +
                                                              context + "': " + e.what());
  }
  const std::string leaked = describe_diff(before, settled_snapshot());
  f.check(leaked.empty(), what + " left behind:" + leaked);
}

// docs/pool.md: a Pool of n workers (fork) holds 2 + 2n fds and needs one
// more while it starts. Under `ulimit -n 256` the largest n that allows
// works and one worker more is a clean EMFILE; with the limit set to what
// Pool(256) needs it starts, and one fd less it does not.
TEST(FdShortage, PoolsUpToTheSizeTheFdLimitAllowsStartAndOneWorkerMoreIsEmfile) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    pool_of(1);  // warm up what is made once per process and kept
    rlimit old{};
    ::getrlimit(RLIMIT_NOFILE, &old);
    auto set_limit = [&](rlim_t n) {
      rlimit lim{n, old.rlim_max};
      return ::setrlimit(RLIMIT_NOFILE, &lim) == 0;
    };
    if (!set_limit(256)) return f.fail("cannot lower RLIMIT_NOFILE to 256");
    const int n = (free_fds() - 3) / 2;
    f.note("ulimit -n 256: " + std::to_string(free_fds()) + " free fds, Pool(" + std::to_string(n) + ") fits");
    try {
      pool_of(n);
    } catch (const std::exception& e) {
      f.fail("Pool(" + std::to_string(n) + ") under ulimit -n 256: " + e.what());
    }
    pool_fails_with_emfile(f, n + 1);

    const int open = 256 - free_fds();
    const rlim_t need = static_cast<rlim_t>(open + 2 + 2 * 256 + 1);
    if (!set_limit(need)) {
      f.note("the hard fd limit is below " + std::to_string(need) + ": Pool(256) at its limit not tried");
    } else {
      try {
        pool_of(256);
      } catch (const std::exception& e) {
        f.fail("Pool(256) with " + std::to_string(free_fds()) + " free fds: " + e.what());
      }
      set_limit(need - 1);
      pool_fails_with_emfile(f, 256);
    }
    ::setrlimit(RLIMIT_NOFILE, &old);
  }));
}

TEST(FdShortage, ManagerFailsWithEmfileAndLeavesNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    step_through_fd_shortage(f, "Manager()", "cannot start a Manager", [] {
      auto m = mpxx::Manager();
      auto d = m.dict<std::string, int>();
      d.set("a", 1);
      if (d.at("a") != 1) throw std::runtime_error("wrong value");
    });
  }));
}

TEST(FdShortage, SharedMemoryFailsWithEmfileAndLeavesNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    auto round_trip = [](mpxx::SharedMemory& shm) {
      shm.buf()[100] = std::byte{5};
      auto again = mpxx::SharedMemory::attach(shm.name());
      if (again.buf()[100] != std::byte{5}) throw std::runtime_error("wrong byte");
    };
    step_through_fd_shortage(f, "SharedMemory::create", "cannot ", [&] {
      auto shm = mpxx::SharedMemory::create(1 << 20);
      round_trip(shm);
    });
    const std::string name = "mpxx_test_emfile_" + std::to_string(::getpid());
    step_through_fd_shortage(f, "named SharedMemory::create", "cannot ", [&] {
      auto shm = mpxx::SharedMemory::create(1 << 20, name);
      try {
        round_trip(shm);
      } catch (...) {
        shm.unlink();
        throw;
      }
      shm.unlink();
    });
  }));
}

TEST(FdShortage, ListenerAndClientFailWithEmfileAndLeaveNothing) {
  SKIP_FD_SHORTAGE_UNDER_SANITIZERS();
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    step_through_fd_shortage(f, "Listener", "cannot listen on 127.0.0.1", [] { mpxx::Listener l(mpxx::Address::tcp("127.0.0.1", 0), "k"); });
    // The server side runs in a process started with fds to spare.
    mpxx::Listener l(mpxx::Address::tcp("127.0.0.1", 0), "k");
    mpxx::Process server([&] {
      for (;;) {
        auto c = l.accept();
        c.send(c.recv<int>() + 1);
      }
    });
    server.start();
    const mpxx::Address addr = l.address();
    l.close();
    step_through_fd_shortage(f, "Client", "cannot connect to 127.0.0.1", [&] {
      auto c = mpxx::Client(addr, "k");
      c.send(1);
      if (c.recv<int>() != 2) throw std::runtime_error("wrong value");
    });
    server.terminate();
    server.join();
  }));
}

}  // namespace

// ------------------------------------------------------ /dev/shm full

// In a scenario child: a private mount namespace with a 1 MiB tmpfs over
// /dev/shm. Returns why not, where this is not allowed (no CAP_SYS_ADMIN,
// a seccomp filter), or "" once mounted.
std::string mount_small_dev_shm() {
  auto why = [](const char* what) { return std::string(what) + ": " + std::strerror(errno); };
  if (::unshare(CLONE_NEWNS) != 0) return why("unshare(CLONE_NEWNS)");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return why("making mounts private");
  if (::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0) return why("mounting a tmpfs on /dev/shm");
  return "";
}

std::vector<std::string> dev_shm_entries() {
  std::vector<std::string> out;
  for (const auto& e : mpxx_test::snapshot().shm) out.push_back(e);
  return out;
}

#define SKIP_UNLESS_SMALL_DEV_SHM(f)                                                           \
  if (std::string why_ = mount_small_dev_shm(); !why_.empty()) {                              \
    (f).fail("SKIP a small tmpfs cannot be mounted over /dev/shm here (" + why_ + ")");       \
    return;                                                                                    \
  }

TEST(DevShmFull, NamedSharedMemoryIsAnOSErrorAtCreationNotASigbus) {
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    SKIP_UNLESS_SMALL_DEV_SHM(f);
    const std::string name = "mpxx_test_full_" + std::to_string(::getpid());
    try {
      auto shm = mpxx::SharedMemory::create(8 << 20, name);
      // Without a reservation this is where the process dies of SIGBUS.
      for (std::size_t i = 0; i < shm.size(); i += 4096) shm.buf()[i] = std::byte{1};
      f.fail("8 MiB of named shared memory in a 1 MiB /dev/shm was created and written");
      shm.unlink();
    } catch (const mpxx::OSError& e) {
      f.check(e.code() == ENOSPC, std::string("not ENOSPC: ") + e.what());
      f.check(std::string(e.what()).find(name) != std::string::npos,
              std::string("the message does not name the block: ") + e.what());
    }
    f.check(dev_shm_entries().empty(), "the failed block was left in /dev/shm");
    // What fits still works.
    auto small = mpxx::SharedMemory::create(256 << 10, name);
    for (std::size_t i = 0; i < small.size(); i += 4096) small.buf()[i] = std::byte{2};
    auto again = mpxx::SharedMemory::attach(name);
    f.check(again.buf()[4096] == std::byte{2}, "the small block does not read back");
    small.unlink();
  }));
}

TEST(DevShmFull, QueuePipeAndUnnamedSharedMemoryDoNotNeedDevShm) {
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    SKIP_UNLESS_SMALL_DEV_SHM(f);
    // Fill /dev/shm to the last byte.
    const std::string filler = "/dev/shm/mpxx_test_filler_" + std::to_string(::getpid());
    int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    std::vector<char> block(64 << 10, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    f.check(errno == ENOSPC, "filling /dev/shm did not end with ENOSPC");
    ::close(fd);
    // Large values through a Queue (its ring is a memfd) and a Pipe (read
    // from the sender's memory or through a pipe), and unnamed blocks
    // (memfds) do not live in /dev/shm.
    const std::vector<char> big(8 << 20, 'q');
    mpxx::Queue<std::vector<char>> q;
    q.put(big);
    f.check(q.get(5s) == big, "the Queue's large value did not arrive whole");
    auto [a, b] = mpxx::Pipe();
    std::thread sender([&, &a = a] { a.send(big); });
    f.check(b.recv<std::vector<char>>() == big, "the Pipe's large value did not arrive whole");
    sender.join();
    auto shm = mpxx::SharedMemory::create(8 << 20);
    for (std::size_t i = 0; i < shm.size(); i += 4096) shm.buf()[i] = std::byte{3};
    ::unlink(filler.c_str());
  }));
}

// ------------------------------------------- an address-space limit (ulimit -v)

constexpr std::size_t kHugeMessage = std::size_t{256} << 20;

// Lets this process grow by `headroom` bytes of address space from now on.
void limit_address_space(std::size_t headroom) {
  std::size_t vm_kb = 0;
  std::istringstream status(mpxx_test::read_file("/proc/self/status"));
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoul(line.substr(7));
  rlimit r{};
  ::getrlimit(RLIMIT_AS, &r);
  r.rlim_cur = vm_kb * 1024 + headroom;
  ::setrlimit(RLIMIT_AS, &r);
}

// The receiving call failed as documented: an OSError ENOMEM that names the
// type and the message's size (the value and its 8-byte size prefix).
template <class F>
void expect_enomem(Findings& f, const std::string& what, F call) {
  try {
    call();
    f.fail(what + " succeeded beyond the address-space limit");
  } catch (const mpxx::OSError& e) {
    f.check(e.code() == ENOMEM, what + ": not ENOMEM: " + e.what());
    f.check(std::string(e.what()).find("out of memory receiving a std::vector<char") != std::string::npos &&
                std::string(e.what()).find(std::to_string(kHugeMessage + 8) + " bytes") != std::string::npos,
            what + ": the message does not say what was received, and how large: " + e.what());
  } catch (const std::bad_alloc&) {
    f.fail(what + ": a bare std::bad_alloc");
  } catch (const std::exception& e) {
    f.fail(what + ": not an OSError: " + e.what());
  }
}

TEST(AddressSpaceLimit, ALargePipeMessageFailsThatRecvAndThePipeGoesOn) {
  SKIP_UNDER_SANITIZERS("ASan reserves terabytes of address space: RLIMIT_AS cannot apply");
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    auto pipe = mpxx::Pipe();
    mpxx::Connection& rx = pipe.first;
    mpxx::Connection& tx = pipe.second;
    // The sender starts before the limit, so only the receiver has it.
    mpxx::Process sender([&tx] {
      std::vector<char> big(kHugeMessage, 'b');
      try {
        tx.send(big);
      } catch (const std::exception&) {
        // the receiver could not take it: this send may fail too
      }
      tx.send(std::string("small"));
    });
    sender.start();
    tx.close();
    limit_address_space(128 << 20);
    expect_enomem(f, "Pipe recv of 256 MiB", [&] { rx.recv<std::vector<char>>(); });
    if (!rx.poll(20s)) {
      f.fail("the small message after the large one never came");
    } else {
      try {
        f.check(rx.recv<std::string>() == "small", "the next message is not the small one");
      } catch (const std::exception& e) {
        f.fail(std::string("the next recv failed: ") + e.what());
      }
    }
    sender.join(20s);
    f.check(sender.exitcode() == 0, "the sender did not finish cleanly");
    if (sender.is_alive()) sender.kill(), sender.join();
  }));
}

TEST(AddressSpaceLimit, ALargeQueueMessageFailsThatGetAndTheQueueGoesOn) {
  SKIP_UNDER_SANITIZERS("ASan reserves terabytes of address space: RLIMIT_AS cannot apply");
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    mpxx::Queue<std::vector<char>> q;
    mpxx::Process producer([&q] {
      q.put(std::vector<char>(kHugeMessage, 'q'));
      q.put(std::vector<char>(10, 's'));
    });
    producer.start();
    limit_address_space(128 << 20);
    expect_enomem(f, "Queue get of 256 MiB", [&] { q.get(20s); });
    try {
      f.check(q.get(20s) == std::vector<char>(10, 's'), "the next item is not the small one");
    } catch (const std::exception& e) {
      f.fail(std::string("the next get failed: ") + e.what());
    }
    producer.join(20s);
    f.check(producer.exitcode() == 0, "the producer did not finish cleanly");
    if (producer.is_alive()) producer.kill(), producer.join();
  }));
}

TEST(AddressSpaceLimit, ALargePoolResultFailsThatTaskAndThePoolGoesOn) {
  SKIP_UNDER_SANITIZERS("ASan reserves terabytes of address space: RLIMIT_AS cannot apply");
  EXPECT_SCENARIO_CLEAN(in_child([](Findings& f) {
    mpxx::Pool pool(2);
    limit_address_space(128 << 20);
    expect_enomem(f, "a Pool result of 256 MiB", [&] { pool.apply_async(big_result, kHugeMessage).get(30s); });
    try {
      f.check(pool.apply(plus_one, 1) == 2, "the next task's result is wrong");
    } catch (const std::exception& e) {
      f.fail(std::string("the next task failed: ") + e.what());
    }
    pool.close();
    pool.join();
  }));
}
