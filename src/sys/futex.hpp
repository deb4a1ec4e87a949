// src/sys/futex.hpp - futexes shared between processes, and the liveness
// checks that let waiters notice a dead owner. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>

namespace mpxx::detail {

using nanos = std::chrono::nanoseconds;

// An absolute CLOCK_MONOTONIC deadline (or none).
struct FutexDeadline {
  bool infinite = true;
  timespec at{};
  static FutexDeadline after(nanos d);
  bool expired() const noexcept;
  // The earlier of this deadline and now + slice.
  FutexDeadline capped(nanos slice) const;
};

enum class WaitResult { woken, value_changed, timed_out, interrupted };

// FUTEX_WAIT_BITSET (shared, not private: the word is in shared memory)
// while *word == expected, until the absolute deadline.
WaitResult futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                      const FutexDeadline& deadline) noexcept;
// Wakes up to n waiters; returns how many were woken.
int futex_wake(const std::atomic<std::uint32_t>* word, int n) noexcept;

// Spins briefly (a few microseconds) while pred() is false; true if it
// became true. Waking a sleeping process costs tens of microseconds, so a
// short spin wins whenever the other side is about to let go. Throws what
// pred() throws.
template <class Pred>
bool spin_until(Pred pred, int iterations = 200) noexcept(noexcept(pred())) {
  for (int i = 0; i < iterations; ++i) {
    if (pred()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  return pred();
}

// False once the process or thread `id` has exited (zombies count as
// exited). Conservative: anything uncertain counts as alive.
bool id_alive(std::uint32_t id) noexcept;

// How often a sleeping waiter checks that the owner is alive.
inline constexpr nanos kLivenessSlice = std::chrono::milliseconds(50);

std::uint32_t current_pid() noexcept;
std::uint32_t current_tid() noexcept;

}  // namespace mpxx::detail
