// Pool at scale: a map's tasks are encoded as workers make room, so the
// parent's memory stays bounded whatever the input's length, with Python's
// semantics kept while the map streams (close, terminate, deaths, timeouts,
// callbacks, an input that throws).
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <fstream>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;
using mpxx_test::seconds;

namespace scale_targets {
// Plain functions: they cross to the workers under every start method.
long twice(long x) { return 2 * x; }
using Kib = std::array<long, 128>;
long first_of(const Kib& item) { return item[0]; }
void consume(long) {}
constexpr long kMarker = 12345;  // the item the functions below act up on
long die_at_marker(long x) {
  if (x == kMarker) ::raise(SIGKILL);
  return x;
}
long hang_at_marker(long x) {
  if (x == kMarker)
    for (;;) ::pause();
  return x;
}
long fail_at_marker(long x) {
  if (x == kMarker) throw std::invalid_argument("bad item " + std::to_string(x));
  return x;
}
}  // namespace scale_targets

namespace {
using namespace scale_targets;

long status_kb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::string(field).size()));
  return -1;
}

// Resets the process's peak RSS (VmHWM) to its current RSS.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return f.good();
}

TEST(PoolScale, AStreamedMapKeepsTheParentsMemoryBounded) {
#ifdef MPXX_TEST_SANITIZED
  GTEST_SKIP() << "ASan keeps up to 256 MB of freed memory in quarantine: RSS says nothing of what is live";
#endif
  mpxx::Pool pool(2);
  // 300k tasks of 1 KiB each (chunksize=1): encoded up front, they held
  // over 300 MB; streamed, the parent holds only those in flight. (Items
  // of 1 KiB keep the test short in debug builds: it is the bytes encoded
  // at once that count, not the number of tasks.)
  constexpr long n = 300'000;
  auto input = std::views::iota(0L, n) | std::views::transform([](long i) {
                 Kib item{};
                 item[0] = i;
                 return item;
               });
  pool.map(first_of, input | std::views::take(1000), {.chunksize = 1});  // warm
  if (!reset_peak_rss()) GTEST_SKIP() << "cannot reset the peak RSS (/proc/self/clear_refs)";
  const long before = status_kb("VmRSS:");
  const auto v = pool.map(first_of, input, {.chunksize = 1});
  const long grown_mb = (status_kb("VmHWM:") - before) / 1024;
  ASSERT_EQ(v.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(v[n - 1], n - 1);
  constexpr long limit_mb = 64;
  EXPECT_LT(grown_mb, limit_mb) << "the map's peak RSS grew by " << grown_mb << " MB";
}

TEST(PoolScale, AMapAcceptedBeforeCloseCompletesAfterIt) {
  mpxx::Pool pool(2);
  constexpr long n = 100'000;
  std::atomic<int> callbacks{0};
  auto r = pool.map_async(twice, std::views::iota(0L, n), {.chunksize = 1},
                          {.callback = [&](const std::vector<long>&) { ++callbacks; }});
  pool.close();
  const auto v = r.get(60s);
  ASSERT_EQ(v.size(), static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) ASSERT_EQ(v[static_cast<std::size_t>(i)], 2 * i);
  EXPECT_EQ(callbacks.load(), 1);
  pool.join();
  EXPECT_THROW(pool.map(twice, std::views::iota(0L, 3L)), mpxx::ValueError);
}

TEST(PoolScale, TerminateDuringAHugeMapReturnsPromptly) {
  mpxx::Pool pool(2);
  // A billion tasks: encoded up front, they would not even fit in memory.
  auto r = pool.map_async(consume, std::views::iota(0L, 1'000'000'000L), {.chunksize = 1});
  EXPECT_FALSE(r.ready());
  const double t = seconds([&] { pool.terminate(); });
  EXPECT_LT(t, 5);
  EXPECT_THROW(r.get(10s), mpxx::CancelledError);
  pool.join();
}

TEST(PoolScale, AWorkerKilledDuringAStreamedMapFailsOnlyItsTask) {
  mpxx::Pool pool(2);
  constexpr long n = 50'000;
  std::atomic<int> callbacks{0}, error_callbacks{0};
  auto r = pool.map_async(die_at_marker, std::views::iota(0L, n), {.chunksize = 1},
                          {.callback = [&](const std::vector<long>&) { ++callbacks; },
                           .error_callback = [&](const mpxx::Error&) { ++error_callbacks; }});
  try {
    r.get(60s);
    FAIL() << "expected WorkerLostError";
  } catch (const mpxx::WorkerLostError& e) {
    EXPECT_EQ(e.exitcode(), -SIGKILL);
    EXPECT_NE(std::string(e.what()).find("task " + std::to_string(kMarker)), std::string::npos) << e.what();
  }
  EXPECT_EQ(callbacks.load(), 0);
  EXPECT_EQ(error_callbacks.load(), 1);
  // The pool replaced the worker and goes on.
  EXPECT_EQ(pool.map(twice, std::views::iota(0L, 1000L), {.chunksize = 1})[999], 1998);
  EXPECT_EQ(pool.worker_pids().size(), 2u);
}

TEST(PoolScale, APerTaskTimeoutDuringAStreamedMapFailsTheMap) {
  mpxx::Pool pool(2);
  double t = seconds([&] {
    EXPECT_THROW(pool.map(hang_at_marker, std::views::iota(0L, 50'000L), {.chunksize = 1, .timeout = 300ms}),
                 mpxx::TimeoutError);
  });
  EXPECT_GE(t, 0.25);
  EXPECT_LT(t, 30);
  EXPECT_EQ(pool.map(twice, std::views::iota(0L, 1000L), {.chunksize = 1})[999], 1998);
}

TEST(PoolScale, MapAsyncCallbacksRunOnceWhileStreaming) {
  mpxx::Pool pool(2);
  constexpr long n = 50'000;
  std::atomic<int> ok{0}, ok_errors{0}, failed{0}, failed_errors{0};
  auto good = pool.map_async(twice, std::views::iota(0L, n), {.chunksize = 1},
                             {.callback = [&](const std::vector<long>& v) { ok += v.size() == n ? 1 : 100; },
                              .error_callback = [&](const mpxx::Error&) { ++ok_errors; }});
  auto bad = pool.map_async(fail_at_marker, std::views::iota(0L, n), {.chunksize = 1},
                            {.callback = [&](const std::vector<long>&) { ++failed; },
                             .error_callback = [&](const mpxx::Error&) { ++failed_errors; }});
  EXPECT_EQ(good.get(60s).size(), static_cast<std::size_t>(n));
  EXPECT_THROW(bad.get(60s), mpxx::RemoteError);
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(ok_errors.load(), 0);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(failed_errors.load(), 1);
}

TEST(PoolScale, MapAsyncNeedsNotKeepItsInputAlive) {
  mpxx::Pool pool(2);
  mpxx::AsyncResult<std::vector<long>> r;
  {
    std::vector<long> in(100'000);
    std::iota(in.begin(), in.end(), 0L);
    r = pool.map_async(twice, in, {.chunksize = 1});
    in.assign(in.size(), -1);  // then destroyed: the map has its own copy
  }
  const auto v = r.get(60s);
  ASSERT_EQ(v.size(), 100'000u);
  EXPECT_EQ(v[99'999], 2 * 99'999);
}

TEST(PoolScale, AnInputThatThrowsMidStreamFailsTheMapWithItsError) {
  mpxx::Pool pool(2);
  auto input = std::views::iota(0L, 200'000L) | std::views::transform([](long i) {
                 if (i == 100'000) throw std::invalid_argument("bad input 100000");
                 return i;
               });
  EXPECT_THROW(pool.map(twice, input, {.chunksize = 1}), std::invalid_argument);
  EXPECT_EQ(pool.map(twice, std::views::iota(0L, 1000L), {.chunksize = 1})[999], 1998);
}

}  // namespace
