// The test runner's main: mpxx::init first (spawn and forkserver children
// branch off there), then GoogleTest with a listener that fails any test
// leaving a child process, an open fd or a /dev/shm entry behind.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"
#include "process/forkserver.hpp"
#include "shared/tracker.hpp"
#include "sys/fd.hpp"


namespace mpxx_test {

namespace {
// A process re-executed with MPXX_TEST_SIGNAL_AT_START=<signal> in its
// environment (a spawned child or a forkserver, started by a test that
// plays a Ctrl-C at the worst moment) sends itself that signal before main,
// and so does every process it forks.
const int signal_at_start = [] {
  const char* v = std::getenv("MPXX_TEST_SIGNAL_AT_START");
  if (!v) return 0;
  const int sig = std::atoi(v);
  mpxx::sys::signal_forked_children = sig;
  ::raise(sig);
  return sig;
}();
}  // namespace

Resources snapshot() {
  Resources r;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    int self_fd = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      int fd = std::atoi(e->d_name);
      if (fd == self_fd) continue;
      char target[512] = {0};
      std::string link = std::string("/proc/self/fd/") + e->d_name;
      ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
      r.fds.insert(std::string(e->d_name) + " -> " + (n > 0 ? std::string(target, n) : "?"));
    }
    ::closedir(d);
  }
  // Direct children: every thread's children list.
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/children");
      pid_t p;
      while (f >> p) r.children.insert(p);
    }
    ::closedir(d);
  }
  if (DIR* d = ::opendir("/dev/shm")) {
    // /dev/shm is shared by the tests ctest runs in parallel: the tests name
    // their segments mpxx_test_<what>_<pid>, and another test's are not ours.
    const std::string mine = "_" + std::to_string(::getpid());
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name[0] == '.') continue;
      if (name.rfind("mpxx_test_", 0) == 0 &&
          (name.size() < mine.size() || name.compare(name.size() - mine.size(), mine.size(), mine) != 0))
        continue;
      r.shm.insert(name);
    }
    ::closedir(d);
  }
  return r;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/mpxx-test-XXXXXX";
  if (!::mkdtemp(tmpl)) std::abort();
  dir_ = tmpl;
}
TempDir::~TempDir() { std::system(("rm -rf '" + dir_ + "'").c_str()); }

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

CaptureFd::CaptureFd(int fd) : fd_(fd) {
  std::fflush(nullptr);
  char tmpl[] = "/tmp/mpxx-capture-XXXXXX";
  file_ = ::mkostemp(tmpl, O_CLOEXEC);
  ::unlink(tmpl);
  saved_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  ::dup2(file_, fd);
}

CaptureFd::~CaptureFd() {
  std::fflush(nullptr);
  ::dup2(saved_, fd_);
  ::close(saved_);
  ::close(file_);
}

std::string CaptureFd::text() {
  std::fflush(nullptr);
  std::string out;
  char buf[4096];
  ssize_t n;
  off_t off = 0;
  while ((n = ::pread(file_, buf, sizeof buf, off)) > 0) {
    out.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
  return out;
}

bool wait_gone(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return r == 1;
}

char proc_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return 0;
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? 0 : line[close + 2];
}

namespace {

template <class T>
std::string diff(const std::set<T>& before, const std::set<T>& after) {
  std::ostringstream out;
  for (const auto& x : after)
    if (!before.count(x)) out << "  " << x << "\n";
  return out.str();
}

class LeakListener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override { before_ = snapshot(); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    // The forkserver is infrastructure that lives until exit; stop it so that
    // what remains is what the test itself left behind.
    mpxx::detail::stop_forkserver();
    mpxx::detail::stop_resource_tracker();
    Resources after = snapshot();
    std::string fds = diff(before_.fds, after.fds);
    std::string kids = diff(before_.children, after.children);
    std::string shm = diff(before_.shm, after.shm);
    if (!fds.empty() || !kids.empty() || !shm.empty()) {
      std::fprintf(stderr, "LEAK in %s.%s:\n%s%s%s", info.test_suite_name(), info.name(),
                   fds.empty() ? "" : ("open fds:\n" + fds).c_str(),
                   kids.empty() ? "" : ("child processes:\n" + kids).c_str(),
                   shm.empty() ? "" : ("/dev/shm entries:\n" + shm).c_str());
      leaked_ = true;
    }
  }
  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    if (leaked_) std::_Exit(3);
  }
  Resources before_;
  bool leaked_ = false;
};

}  // namespace

bool refuse_peer_reads(int err, bool only_one_piece) {
  sock_filter all[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_filter one_piece[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[4])),  // riovcnt (low word)
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog = only_one_piece ? sock_fprog{static_cast<unsigned short>(std::size(one_piece)), one_piece}
                                   : sock_fprog{static_cast<unsigned short>(std::size(all)), all};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

long long bytes_read_so_far() {
  std::FILE* f = std::fopen("/proc/self/io", "r");
  if (!f) return -1;
  long long rchar = -1;
  if (std::fscanf(f, "rchar: %lld", &rchar) != 1) rchar = -1;
  std::fclose(f);
  return rchar;
}

bool wait_rss_growth(pid_t pid, std::size_t bytes, std::chrono::milliseconds timeout) {
  const std::string path = "/proc/" + std::to_string(pid) + "/statm";
  auto resident = [&] {
    std::ifstream f(path);
    std::size_t size = 0, pages = 0;
    f >> size >> pages;
    return pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  };
  const std::size_t before = resident();
  const auto until = std::chrono::steady_clock::now() + timeout;
  do {
    if (resident() >= before + bytes) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

bool wait_in_syscall(pid_t pid, long nr, std::chrono::milliseconds timeout,
                     const std::function<bool(const std::vector<std::uint64_t>&)>& args_match) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  auto inside = [&] {
    DIR* d = ::opendir(tasks.c_str());
    if (!d) return false;
    bool found = false;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      // "nr arg1 ... arg6 sp pc" while in a call, "-1 sp pc" or "running" otherwise.
      std::ifstream f(tasks + "/" + e->d_name + "/syscall");
      long n = -1;
      if (!(f >> n) || n != nr) continue;
      std::vector<std::uint64_t> args;
      std::string word;
      while (args.size() < 6 && f >> word) args.push_back(std::stoull(word, nullptr, 16));
      if (args.size() == 6 && (!args_match || args_match(args))) {
        found = true;
        break;
      }
    }
    ::closedir(d);
    return found;
  };
  const auto until = std::chrono::steady_clock::now() + timeout;
  do {
    if (inside()) return true;
    const char state = proc_state(pid);
    if (state == 0 || state == 'Z') return false;  // it will never be there now
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

bool wait_asleep_in(pid_t pid, long nr,
                    const std::function<bool(const std::vector<std::uint64_t>&)>& args_match) {
  if (!syscalls_visible()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return true;
  }
  return wait_in_syscall(pid, nr, std::chrono::milliseconds(20000), args_match);
}

bool syscalls_visible() {
  std::ifstream f("/proc/self/syscall");
  std::string word;
  return static_cast<bool>(f >> word);
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> mappings_named(pid_t pid, const std::string& name) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> found;
  std::ifstream f("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(f, line);) {
    if (line.find(name) == std::string::npos) continue;
    std::size_t dash = 0;
    const std::uint64_t first = std::stoull(line, &dash, 16);
    found.emplace_back(first, std::stoull(line.substr(dash + 1), nullptr, 16));
  }
  return found;
}

}  // namespace mpxx_test

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new mpxx_test::LeakListener);
  return RUN_ALL_TESTS();
}
