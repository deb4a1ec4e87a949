// The progress bar of Pool::map and friends: tqdm's layout on stderr,
//   map:  45%|████▌     | 450/1000 [00:02<00:02, 215.30it/s]
// or, when the total is unknown (imap over an endless range),
//   imap: 450it [00:02, 215.30it/s]
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>

#include "mpxx/detail/pool_core.hpp"

namespace mpxx::detail {

namespace {

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

int terminal_width() {
  winsize ws{};
  if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
  return 80;
}

}  // namespace

bool stderr_is_tty() noexcept { return ::isatty(2) == 1; }

ProgressBar::ProgressBar(std::string desc, long total, bool enabled)
    : desc_(std::move(desc)), total_(total), enabled_(enabled), start_(std::chrono::steady_clock::now()) {
  if (enabled_) draw(false);
}

ProgressBar::~ProgressBar() {
  if (enabled_ && !finished_) finish();
}

void ProgressBar::advance(long n) {
  if (!enabled_) return;
  std::lock_guard lk(mu_);
  done_ += n;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100)) draw(false);  // finish() draws the end
}

void ProgressBar::finish() {
  if (!enabled_) return;
  std::lock_guard lk(mu_);
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressBar::draw(bool final) {
  last_draw_ = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(last_draw_ - start_).count();
  // Appended, not "\r" + render(...): g++ 12 -O2 warns (-Wrestrict) about
  // the inlined operator+ of a literal and a temporary string.
  std::string line = "\r";
  line += render(desc_, done_, total_, secs, terminal_width());
  if (final) line += "\n";
  [[maybe_unused]] auto n = ::write(2, line.data(), line.size());
}

std::string ProgressBar::render(const std::string& desc, long done, long total, double seconds,
                                int width) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  char rate_text[48];
  std::snprintf(rate_text, sizeof rate_text, "%.2fit/s", rate);
  std::string prefix = desc.empty() ? "" : desc + ": ";
  if (total < 0)
    return prefix + std::to_string(done) + "it [" + clock_text(seconds) + ", " + rate_text + "]";

  const double frac = total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100));
  const double eta = rate > 0 ? static_cast<double>(total - done) / rate : -1;
  std::string right = "| " + std::to_string(done) + "/" + std::to_string(total) + " [" +
                      clock_text(seconds) + "<" + clock_text(eta) + ", " + rate_text + "]";
  const int bar = std::max(10, width - static_cast<int>(prefix.size() + 5 + right.size()) - 1);
  // Eighths of a cell, as tqdm draws them.
  static const char* const kEighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  const long cells8 = std::lround(frac * bar * 8);
  std::string body;
  for (long i = 0; i < cells8 / 8; ++i) body += "█";
  int used = static_cast<int>(cells8 / 8);
  if (cells8 % 8 && used < bar) {
    body += kEighths[cells8 % 8];
    ++used;
  }
  body.append(static_cast<std::size_t>(bar - used), ' ');
  return prefix + pct + "|" + body + right;
}

}  // namespace mpxx::detail
