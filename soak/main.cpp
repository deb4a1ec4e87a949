// mpxx_soak - a randomized, seeded chaos run over mpxx (docs/reliability.md).
//
//   mpxx_soak [--seconds N | --minutes M] [--seed S] [--threads T]
//
// Prints the seed first; the same seed replays the same workload choices.
// Runs the workloads of every family at once for the given time while the
// chaos thread SIGKILLs and SIGSTOP/SIGCONTs their processes, then checks
// the ledgers and the resources and prints one table. Exits 1 if any
// must-be-zero figure is not zero.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "resources.hpp"
#include "soak.hpp"

namespace soak {
namespace {

struct Options {
  double seconds = 120;
  std::uint64_t seed = 0;
  bool seeded = false;
  int threads = 4;
  std::string only;       // run only the workloads whose name contains this
  int chaos_ms = 150;     // mean time between faults; 0: no chaos
  std::optional<std::uint64_t> round;  // replay one round of the --only workload
};

[[noreturn]] void usage(const char* why) {
  std::cerr << "mpxx_soak: " << why << "\nusage: mpxx_soak [--seconds N | --minutes M] [--seed S] [--threads T]\n"
               "       [--only WORKLOAD] [--chaos-ms MEAN_MS_BETWEEN_FAULTS, 0: none]\n"
               "       [--round S]  (with --only: replays the round a failure names)\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    try {
      if (a == "--seconds") o.seconds = std::stod(value());
      else if (a == "--minutes") o.seconds = 60 * std::stod(value());
      else if (a == "--seed") o.seed = std::stoull(value()), o.seeded = true;
      else if (a == "--threads") o.threads = std::stoi(value());
      else if (a == "--only") o.only = value();
      else if (a == "--chaos-ms") o.chaos_ms = std::stoi(value());
      else if (a == "--round") o.round = std::stoull(value());
      else usage(("unknown option " + a).c_str());
    } catch (const std::logic_error&) {
      usage(("bad value for " + a).c_str());
    }
  }
  if (o.seconds <= 0 || o.threads < 1 || o.chaos_ms < 0) usage("the time and the thread count must be positive");
  if (!o.seeded) o.seed = std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32);
  return o;
}

void run_round(const Workload& w, std::uint64_t seed, Clock::time_point until) {
  Rng rng(seed);
  current_round = std::string(w.name) + " --round " + std::to_string(seed);
  try {
    w.round(rng, until);
  } catch (const std::exception& e) {
    fail(unexpected_error, std::string(w.name) + " round (seed " + std::to_string(seed) + "): " + e.what());
  }
}

struct Row {
  const char* label;
  long long value;
  bool must_be_zero;
};

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  std::cout << "mpxx_soak: seed " << opt.seed << " (replay: --seed " << opt.seed << "), " << opt.seconds
            << " s, " << opt.threads << " workload threads" << std::endl;
  init_figures();
  become_subreaper();

  std::vector<Workload> all;
  for (auto family : {channel_workloads, sync_workloads, pool_workloads, manager_workloads})
    for (auto& w : family())
      if (std::string(w.name).find(opt.only) != std::string::npos) all.push_back(w);
  if (all.empty()) usage(("no workload matches " + opt.only).c_str());

  // Warm-up: each workload once, without chaos, so that what mpxx starts
  // once per process (the shared-memory tracker, thread pools, caches) is
  // in the baseline.
  for (std::size_t i = 0; i < all.size(); ++i) run_round(all[i], opt.seed + i, Clock::now() + 500ms);
  const Resources base = measure();
  for (auto& f : figs().v) f = 0;
  figs().max_overrun_ns = 0;

  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.seconds));
  if (opt.chaos_ms > 0) start_chaos(opt.seed, std::chrono::milliseconds(opt.chaos_ms));
  std::atomic<int> running{opt.threads};
  std::mutex rounds_mu;  // what each thread runs now, for the report of a hang
  std::vector<std::string> rounds(opt.threads);
  std::vector<std::thread> threads;
  for (int t = 0; t < opt.threads; ++t)
    threads.emplace_back([&, t] {
      // Round k of thread t: its own seed, its own workload.
      if (opt.round) {
        if (t == 0) run_round(all[0], *opt.round, Clock::now() + 4s);
        --running;
        return;
      }
      for (std::uint64_t k = 0; Clock::now() < end; ++k) {
        const std::uint64_t s = opt.seed * 1000003 + t * 7919 + k;
        const Workload& w = all[(t + k * opt.threads) % all.size()];  // every thread meets every workload
        {
          std::scoped_lock g(rounds_mu);
          rounds[t] = std::string(w.name) + " --round " + std::to_string(s);
        }
        run_round(w, s, std::min(end, Clock::now() + 4s));
      }
      {
        std::scoped_lock g(rounds_mu);
        rounds[t].clear();
      }
      --running;
    });
  // The watchdog: every round ends by itself soon after the deadline.
  const auto give_up = end + 120s;
  long orphans = 0;
  while (running > 0 && Clock::now() < give_up) {
    std::this_thread::sleep_for(100ms);  // a periodic sweep: nothing signals an orphan's exit
    orphans += reap_orphans();
  }
  if (running > 0) {
    fail(hangs, std::to_string(running.load()) + " workload threads still running 120 s after the end");
    {
      std::scoped_lock g(rounds_mu);
      for (auto& r : rounds)
        if (!r.empty()) std::cerr << "mpxx_soak: still running: --only " << r << "\n";
    }
    stop_chaos();
    std::cout << "mpxx_soak: FAILED (hang); seed " << opt.seed << std::endl;
    std::_Exit(1);
  }
  for (auto& t : threads) t.join();
  stop_chaos();
  const double ran = std::chrono::duration<double>(Clock::now() - t0).count();

  // Resources come back asynchronously (the tracker removes a dead
  // creator's names, exiting children are reaped): wait a little for it.
  Resources now = measure();
  for (auto wait_until = Clock::now() + 10s;
       Clock::now() < wait_until && (now.fds > base.fds || now.shm_names > base.shm_names ||
                                     now.descendants > base.descendants || now.zombies > 0 ||
                                     now.shared_maps > base.shared_maps);
       now = measure()) {
    std::this_thread::sleep_for(100ms);
    orphans += reap_orphans();
  }
  describe_leaks(base, now);

  constexpr long kRssBoundKiB = 64 * 1024;
  const long rss_growth = now.rss_kib - base.rss_kib;
#ifdef MPXX_SOAK_SANITIZED
  constexpr bool kRssChecked = false;  // the sanitizer's quarantine holds freed memory
#else
  constexpr bool kRssChecked = true;
#endif
  std::vector<Row> rows = {
      {"seconds run", static_cast<long long>(ran), false},
      {"processes started and joined", get(op_process), false},
      {"pipe messages", get(op_pipe_msg), false},
      {"queue messages", get(op_queue_msg), false},
      {"joinable queue messages", get(op_jq_msg), false},
      {"sync primitive operations", get(op_sync), false},
      {"shared memory operations", get(op_shm), false},
      {"pool tasks", get(op_pool_task), false},
      {"manager proxy calls", get(op_manager), false},
      {"remote (TCP) manager calls", get(op_remote), false},
      {"faults: SIGKILL", get(fault_kill), false},
      {"faults: SIGSTOP+SIGCONT", get(fault_stop), false},
      {"faults: terminate()", get(fault_terminate), false},
      {"orphaned trackers reaped", orphans, false},
      {"messages checked", get(checked_msgs), false},
      {"  absent with a killed consumer (allowed)", get(allowed_absent), false},
      {"pool results checked (tasks, map items)", get(checked_tasks), false},
      {"  completed once, right value", get(tasks_ok), false},
      {"  calls failed: WorkerLostError", get(tasks_lost_worker), false},
      {"  calls failed: their own exception", get(tasks_own_error), false},
      {"lost", get(lost), true},
      {"duplicated", get(duplicated), true},
      {"torn", get(torn), true},
      {"wrong results", get(wrong_result), true},
      {"pool tasks vanished", get(task_vanished), true},
      {"callbacks run twice", get(callback_twice), true},
      {"wrong exit codes", get(wrong_exitcode), true},
      {"unexpected errors", get(unexpected_error), true},
      {"invariants broken", get(invariant_broken), true},
      {"hangs", get(hangs), true},
      {"blocking calls over timeout + 2 s", get(overruns), true},
      {"leaked fds", now.fds - base.fds, true},
      {"leaked shared mappings (locks, semaphores...)", now.shared_maps - base.shared_maps, true},
      {"leaked /dev/shm entries", now.shm_names - base.shm_names, true},
      {"leaked processes", now.descendants - base.descendants, true},
      {"zombies", now.zombies, true},
      {kRssChecked ? "RSS growth over 64 MiB (KiB)" : "RSS growth over 64 MiB (KiB; not under ASan)",
       kRssChecked && rss_growth > kRssBoundKiB ? rss_growth : 0, kRssChecked},
  };
  int bad = 0;
  std::printf("\n%-48s %12s\n", "mpxx soak", "");
  for (auto& r : rows) {
    const bool wrong = r.must_be_zero && r.value > 0;
    bad += wrong;
    std::printf("%-48s %12lld%s\n", r.label, r.value, r.must_be_zero ? (wrong ? "  <-- must be 0" : "  (must be 0)") : "");
  }
  std::printf("%-48s %12.1f\n", "max blocking-call overrun (ms)", figs().max_overrun_ns.load() / 1e6);
  std::printf("%-48s %12ld\n", "parent RSS growth after warm-up (KiB)", rss_growth);
  std::printf("\nseed %llu: %s\n", static_cast<unsigned long long>(opt.seed), bad ? "FAILED" : "passed");
  return bad ? 1 : 0;
}

}  // namespace soak

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  return soak::main(argc, argv);
}
