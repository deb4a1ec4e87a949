#include "mpxx/log.hpp"

#include <unistd.h>

#include <atomic>
#include <string>

#include "process/runtime.hpp"
#include "sys/fd.hpp"

namespace mpxx {

namespace {
std::atomic<int> g_level{log::OFF};

const char* level_name(int level) {
  if (level >= log::CRITICAL) return "CRITICAL";
  if (level >= log::ERROR) return "ERROR";
  if (level >= log::WARNING) return "WARNING";
  if (level >= log::SUBWARNING) return "SUBWARNING";
  if (level >= log::INFO) return "INFO";
  if (level >= log::DEBUG) return "DEBUG";
  return "SUBDEBUG";
}
}  // namespace

int Logger::level() const noexcept { return g_level.load(std::memory_order_relaxed); }
void Logger::set_level(int level) noexcept { g_level.store(level, std::memory_order_relaxed); }
bool Logger::enabled_for(int level) const noexcept { return level >= this->level(); }

void Logger::log(int level, std::string_view message) const {
  if (!enabled_for(level)) return;
  std::string line = "[";
  line += level_name(level);
  line += '/';
  line += detail::self().name;
  line += "] ";
  line += message;
  line += '\n';
  sys::write_stderr(line);  // a logger that cannot write stays quiet
}

Logger& get_logger() noexcept {
  static Logger logger;
  return logger;
}

Logger& log_to_stderr(int level) noexcept {
  get_logger().set_level(level);
  return get_logger();
}

}  // namespace mpxx
