// mpxx/log.hpp - the library's own lifecycle messages, off by default.
//
// Python's multiprocessing.log_to_stderr() / get_logger(): turn it on to see
// children start, exit with a code, get reaped or terminated:
//
//   mpxx::log_to_stderr(mpxx::log::INFO);
//   // [INFO/MainProcess] Process-1 started with pid 4242 (fork)
//   // [INFO/Process-1] child process calling self.run()
//   // [INFO/Process-1] process exiting with exitcode 0
//
// Lines are written with one write(2) each, so lines from different
// processes never interleave mid-line. The level is inherited by children
// under every start method.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

namespace mpxx {

namespace log {
inline constexpr int NOTSET = 0;
inline constexpr int SUBDEBUG = 5;
inline constexpr int DEBUG = 10;
inline constexpr int INFO = 20;
inline constexpr int SUBWARNING = 25;
inline constexpr int WARNING = 30;
inline constexpr int ERROR = 40;
inline constexpr int CRITICAL = 50;
inline constexpr int OFF = 100;
}  // namespace log

class Logger {
 public:
  int level() const noexcept;
  void set_level(int level) noexcept;
  bool enabled_for(int level) const noexcept;
  // Writes "[LEVEL/ProcessName] message\n" to stderr if the level is enabled.
  void log(int level, std::string_view message) const;
  void debug(std::string_view m) const { log(log::DEBUG, m); }
  void info(std::string_view m) const { log(log::INFO, m); }
  void warning(std::string_view m) const { log(log::WARNING, m); }
  void error(std::string_view m) const { log(log::ERROR, m); }

  // Builds the message from its parts only when the level is enabled, so a
  // disabled logger costs one load (it runs in every child's exit path).
  template <class... Parts>
  void logf(int level, const Parts&... parts) const {
    if (!enabled_for(level)) return;
    std::string m;
    (m.append(to_text(parts)), ...);
    log(level, m);
  }

 private:
  static std::string_view to_text(std::string_view s) { return s; }
  static std::string_view to_text(const char* s) { return s; }
  static std::string_view to_text(const std::string& s) { return s; }
  template <class T>
    requires std::is_arithmetic_v<T>
  static std::string to_text(T v) {
    return std::to_string(v);
  }
};

// The library's logger (level OFF until set).
Logger& get_logger() noexcept;
// Turns the library's messages on at `level` (and above) and returns the
// logger, like Python's log_to_stderr(level).
Logger& log_to_stderr(int level = log::INFO) noexcept;

}  // namespace mpxx
