// Listener and Client: authentication both ways, with mpxx and CPython
// peers, and bad clients that must not take the Listener down.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"

using namespace std::chrono_literals;
extern char** environ;

namespace listener_targets {

void client_echo(std::string host, int port, std::string key) {
  auto c = mpxx::Client(port < 0 ? mpxx::Address::unix_socket(host) : mpxx::Address::tcp(host, port),
                        key);
  c.send(c.recv<std::string>() + " back");
}

void client_expect_auth_failure(std::string path, std::string key) {
  try {
    mpxx::Client(mpxx::Address::unix_socket(path), key);
  } catch (const mpxx::AuthenticationError&) {
    std::exit(0);
  } catch (const std::exception&) {
    std::exit(2);  // e.g. EOF when the listener hung up first: still refused
  }
  std::exit(1);
}

}  // namespace listener_targets

namespace {
using namespace listener_targets;

bool have_python() { return ::system("python3 -c 'import multiprocessing' >/dev/null 2>&1") == 0; }

pid_t spawn_python(const std::string& script) {
  const char* argv[] = {"python3", "-c", script.c_str(), nullptr};
  pid_t pid = 0;
  if (::posix_spawnp(&pid, "python3", nullptr, nullptr, const_cast<char**>(argv), environ) != 0)
    return -1;
  return pid;
}

int wait_exit(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(Listener, UnixSocketWithAuthkey) {
  mpxx_test::TempDir dir;
  std::string path = dir.path("sock");
  mpxx::Listener l(mpxx::Address::unix_socket(path), "secret");
  mpxx::Process p(client_echo, path, -1, "secret");
  p.start();
  mpxx::Connection c = l.accept();
  c.send(std::string("hello"));
  EXPECT_EQ(c.recv<std::string>(), "hello back");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  ASSERT_TRUE(l.last_accepted().has_value());
  l.close();
  EXPECT_FALSE(std::ifstream(path).good());  // the socket file is gone
}

TEST(Listener, TcpLoopbackOnAnyPort) {
  mpxx::Listener l(mpxx::Address::tcp("127.0.0.1", 0), "k");
  ASSERT_GT(l.address().port, 0);
  mpxx::Process p(client_echo, std::string("127.0.0.1"), l.address().port, "k");
  p.start();
  mpxx::Connection c = l.accept();
  c.send(std::string("tcp"));
  EXPECT_EQ(c.recv<std::string>(), "tcp back");
  EXPECT_EQ(l.last_accepted()->host, "127.0.0.1");
  p.join();
}

TEST(Listener, WrongAuthkeyFailsBothSidesAndTheListenerGoesOn) {
  mpxx_test::TempDir dir;
  std::string path = dir.path("sock");
  mpxx::Listener l(mpxx::Address::unix_socket(path), "right");
  mpxx::Process bad(client_expect_auth_failure, path, "wrong");
  bad.start();
  EXPECT_THROW(l.accept(), mpxx::AuthenticationError);
  bad.join();
  EXPECT_EQ(bad.exitcode(), 0);
  mpxx::Process good(client_echo, path, -1, "right");
  good.start();
  mpxx::Connection c = l.accept();
  c.send(std::string("still here"));
  EXPECT_EQ(c.recv<std::string>(), "still here back");
  good.join();
}

TEST(Listener, GarbageOversizeAndStallingClients) {
  mpxx_test::TempDir dir;
  std::string path = dir.path("sock");
  mpxx::Listener l(mpxx::Address::unix_socket(path), "k");
  l.set_handshake_timeout(300ms);
  auto raw_client = [&](const std::string& bytes) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    if (!bytes.empty()) EXPECT_GT(::write(fd, bytes.data(), bytes.size()), 0);
    return fd;
  };
  // Garbage where the challenge's answer should be.
  int g = raw_client(std::string("\0\0\0\x05hello", 9));
  EXPECT_THROW(l.accept(), mpxx::AuthenticationError);
  ::close(g);
  // A length header far beyond the handshake's limit.
  int o = raw_client(std::string("\x7f\xff\xff\xff", 4));
  EXPECT_THROW(l.accept(), mpxx::OSError);
  ::close(o);
  // A client that says nothing.
  int s = raw_client("");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(l.accept(), mpxx::TimeoutError);
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 5s);
  ::close(s);
  // And a proper client still gets through.
  mpxx::Process good(client_echo, path, -1, "k");
  good.start();
  mpxx::Connection c = l.accept();
  c.send(std::string("ok"));
  EXPECT_EQ(c.recv<std::string>(), "ok back");
  good.join();
}

TEST(CPythonInterop, PythonClientToOurListener) {
  if (!have_python()) GTEST_SKIP() << "python3 is not available: CPython interop not tested";
  mpxx::Listener l(mpxx::Address::tcp("127.0.0.1", 0), "pykey");
  std::string script =
      "from multiprocessing.connection import Client\n"
      "c = Client(('127.0.0.1', " + std::to_string(l.address().port) + "), authkey=b'pykey')\n"
      "m = c.recv_bytes()\n"
      "c.send_bytes(m.upper())\n"
      "c.close()\n";
  pid_t pid = spawn_python(script);
  ASSERT_GT(pid, 0);
  mpxx::Connection c = l.accept();
  c.send_bytes("from mpxx");
  EXPECT_EQ(c.recv_bytes(), "FROM MPXX");
  EXPECT_EQ(wait_exit(pid), 0);
}

TEST(CPythonInterop, OurClientToPythonListener) {
  if (!have_python()) GTEST_SKIP() << "python3 is not available: CPython interop not tested";
  mpxx_test::TempDir dir;
  std::string path = dir.path("py.sock");
  std::string script =
      "from multiprocessing.connection import Listener\n"
      "l = Listener('" + path + "', authkey=b'pykey')\n"
      "c = l.accept()\n"
      "c.send_bytes(c.recv_bytes()[::-1])\n"
      "c.close(); l.close()\n";
  pid_t pid = spawn_python(script);
  ASSERT_GT(pid, 0);
  mpxx::Connection c;
  for (int i = 0; i < 500; ++i) {  // until the Python side is listening
    try {
      c = mpxx::Client(mpxx::Address::unix_socket(path), "pykey");
      break;
    } catch (const mpxx::OSError&) {
      std::this_thread::sleep_for(10ms);
    }
  }
  ASSERT_FALSE(c.closed());
  c.send_bytes("abc");
  EXPECT_EQ(c.recv_bytes(), "cba");
  EXPECT_EQ(wait_exit(pid), 0);
}

TEST(CPythonInterop, PythonRejectsAWrongKey) {
  if (!have_python()) GTEST_SKIP() << "python3 is not available: CPython interop not tested";
  mpxx::Listener l(mpxx::Address::tcp("127.0.0.1", 0), "right");
  std::string script =
      "import sys\n"
      "from multiprocessing.connection import Client, AuthenticationError\n"
      "try:\n"
      "    Client(('127.0.0.1', " + std::to_string(l.address().port) + "), authkey=b'wrong')\n"
      "except AuthenticationError:\n"
      "    sys.exit(0)\n"
      "sys.exit(1)\n";
  pid_t pid = spawn_python(script);
  ASSERT_GT(pid, 0);
  EXPECT_THROW(l.accept(), mpxx::AuthenticationError);
  EXPECT_EQ(wait_exit(pid), 0);
}

}  // namespace
