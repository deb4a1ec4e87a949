// Ctrl-C while a thread waits for a pool (src/pool/interrupt.hpp): the
// SIGINT handler and its installation, the process-wide interrupt count,
// InterruptibleWait, and the terminate handler for an uncaught
// KeyboardInterrupt. What a pool does about an interrupt is pool_core.cpp's.
#include "pool/interrupt.hpp"

#include <atomic>
#include <csignal>
#include <exception>
#include <mutex>
#include <unistd.h>

#include "mpxx/detail/pool_core.hpp"
#include "mpxx/errors.hpp"

namespace mpxx::detail {

namespace {

std::atomic<int> g_waiters{0};
std::atomic<std::uint32_t> g_interrupts{0};
std::atomic<bool> g_handler_installed{false};
std::mutex g_sig_mu;

extern "C" void on_sigint(int) {
  if (g_waiters.load(std::memory_order_relaxed) == 0) {
    // Nobody is waiting for a pool: Ctrl-C ends the program, as it would
    // without mpxx.
    ::signal(SIGINT, SIG_DFL);
    ::raise(SIGINT);
    return;
  }
  g_interrupts.fetch_add(1, std::memory_order_relaxed);
}

std::terminate_handler g_prev_terminate = nullptr;
std::once_flag g_terminate_once;

// An uncaught KeyboardInterrupt ends the program the way Ctrl-C would have.
void on_terminate() {
  if (auto e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const KeyboardInterrupt&) {
      static const char msg[] = "KeyboardInterrupt\n";
      [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
      ::signal(SIGINT, SIG_DFL);
      ::raise(SIGINT);
    } catch (...) {
    }
  }
  if (g_prev_terminate) g_prev_terminate();
  std::abort();
}

}  // namespace

namespace pool {

void install_sigint_handler() {
  std::lock_guard lk(g_sig_mu);
  if (g_handler_installed.load()) return;
  struct sigaction old {};
  if (::sigaction(SIGINT, nullptr, &old) != 0) return;
  // A program that set its own SIGINT handling (or ignores SIGINT) keeps it.
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL) return;
  if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction != nullptr) return;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  g_handler_installed = true;
}

std::uint32_t interrupt_count() noexcept { return g_interrupts.load(std::memory_order_relaxed); }

void end_uncaught_keyboard_interrupts_like_ctrl_c() {
  std::call_once(g_terminate_once, [] { g_prev_terminate = std::set_terminate(on_terminate); });
}

}  // namespace pool

InterruptibleWait::InterruptibleWait() noexcept { g_waiters.fetch_add(1, std::memory_order_relaxed); }
InterruptibleWait::~InterruptibleWait() { g_waiters.fetch_sub(1, std::memory_order_relaxed); }

}  // namespace mpxx::detail
