// src/pool/interrupt.hpp - Ctrl-C while a thread waits for a pool.
// Internal.
//
// Process-wide, shared by every pool: the SIGINT handler (installed once,
// and only where the program kept SIGINT's default), the count of SIGINTs
// that arrived while some thread was inside an InterruptibleWait, and the
// terminate handler that makes an uncaught KeyboardInterrupt end the program
// as Ctrl-C would. Each pool's handler thread compares the count with the
// one it saw last and, if it has tasks, stops them with KeyboardInterrupt
// (pool_core.cpp). InterruptibleWait (mpxx/detail/pool_core.hpp) is defined
// in interrupt.cpp.
#pragma once

#include <cstdint>

namespace mpxx::detail::pool {

// Installs the SIGINT handler, once per process; a program that set its own
// SIGINT handling (or ignores SIGINT) keeps it.
void install_sigint_handler();

// How many SIGINTs arrived while a thread waited for pool results (it wraps
// around: compare it with an earlier value, never order them).
std::uint32_t interrupt_count() noexcept;

// From now on (once per process), an uncaught KeyboardInterrupt ends the
// program the way Ctrl-C would: "KeyboardInterrupt" on stderr, then killed
// by SIGINT.
void end_uncaught_keyboard_interrupts_like_ctrl_c();

}  // namespace mpxx::detail::pool
