// Pool workers on this host: child processes, each with its own task ring
// (a QueueCore only the parent writes and only that worker reads) and one
// result ring shared by all of them (the parent reads). Both are shared
// memory, so a busy pool moves tasks and results without a system call; a
// sleeping side is woken through the ring's futex. A worker dying in the
// middle of a put never exposes half a result (see queue.hpp), and the
// parent notices the death through the worker's pidfd.
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

#include "mpxx/detail/exception.hpp"
#include "mpxx/process.hpp"
#include "mpxx/queue.hpp"
#include "mpxx/shared.hpp"
#include "pool/transport.hpp"
#include "process/state.hpp"

namespace mpxx::detail::pool {

namespace {

constexpr std::uint64_t kTaskRing = std::uint64_t{1} << 30;    // sparse: costs what is in flight
constexpr std::uint64_t kResultRing = std::uint64_t{1} << 30;
constexpr std::size_t kSkipSlots = 32;  // per worker, in one block for the whole pool

// What a worker process receives.
struct WorkerArgs {
  QueueCore tasks{wire::empty_t{}};
  QueueCore results{wire::empty_t{}};
  RawArray<std::uint64_t> skips{wire::empty_t{}};  // every worker's cells; this one's are row `slot`
  std::uint32_t slot = 0;
  std::uint64_t generation = 0;
  std::uint64_t maxtasks = 0;
  std::vector<std::uint8_t> init_call;

  template <class Ar>
  void serialize(Ar& ar) {
    ar(tasks, results, skips, slot, generation, maxtasks, init_call);
  }
};

// The skip cells of one worker: its row of the pool's block.
std::span<std::uint64_t> skip_cells(RawArray<std::uint64_t>& skips, std::uint32_t slot) {
  if ((std::size_t{slot} + 1) * kSkipSlots > skips.size())
    throw ValueError("mpxx: pool worker slot " + std::to_string(slot) + " out of range");
  return skips.get_obj().subspan(std::size_t{slot} * kSkipSlots, kSkipSlots);
}

bool skip_requested(std::span<std::uint64_t> cells, std::uint64_t id) {
  for (std::uint64_t& cell : cells)
    if (std::atomic_ref<std::uint64_t>(cell).load(std::memory_order_acquire) == id) return true;
  return false;
}

// The worker's life: initializer, then tasks until told to stop or until
// maxtasks tasks have been handled.
void worker_loop(WorkerArgs& a, const std::function<void()>& local_init) {
  ThrowTrace trace;
  wire::Writer out;
  auto begin = [&](MsgKind k, std::uint64_t task) {
    out.clear();
    out.pod(WorkerMsg{a.slot, k, a.generation, task, 0});
  };
  auto flush = [&] {
    a.results.put(out.bytes(), std::chrono::nanoseconds::max());
    if (out.size() > (std::size_t{1} << 20)) out = wire::Writer{};  // do not keep a huge buffer
  };

  if (!a.init_call.empty() || local_init) {
    try {
      if (local_init) {
        local_init();
      } else {
        wire::Reader r(std::as_bytes(std::span(a.init_call)));
        invoke_call(r, nullptr);
      }
    } catch (...) {
      ExceptionInfo info = describe_current_exception();
      begin(MsgKind::init_failed, 0);
      encode_exception(out, info);
      flush();
      throw SystemExit(1);
    }
    begin(MsgKind::ready, 0);
    flush();
  }

  std::uint64_t handled = 0;
  for (;;) {
    bool stop = false;
    a.tasks.get(
        [&](std::span<const std::byte> msg) {
          wire::Reader r(msg);
          const auto id = r.pod<std::uint64_t>();
          if (id == 0) {
            stop = true;
            return;
          }
          if (skip_requested(skip_cells(a.skips, a.slot), id)) {
            begin(MsgKind::skipped, id);
            flush();
            return;
          }
          begin(MsgKind::result, id);
          const auto t0 = std::chrono::steady_clock::now();
          try {
            invoke_call(r, &out);
            r.expect_done("a pool task");
          } catch (...) {
            ExceptionInfo info = describe_current_exception();
            begin(MsgKind::error, id);
            encode_exception(out, info);
          }
          const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
              std::chrono::steady_clock::now() - t0);
          const std::uint64_t exec = static_cast<std::uint64_t>(ns.count());
          std::memcpy(out.data() + offsetof(WorkerMsg, exec_ns), &exec, sizeof exec);
          flush();
        },
        std::chrono::nanoseconds::max());
    if (stop || (a.maxtasks && ++handled >= a.maxtasks)) {
      // Lets the parent reap this worker at once instead of on its next
      // periodic check (what Pool.join() would otherwise wait for).
      begin(MsgKind::exiting, 0);
      flush();
      return;
    }
  }
}

void worker_entry(WorkerArgs a) { worker_loop(a, nullptr); }

std::atomic<unsigned> g_worker_counter{0};

class LocalTransport final : public Transport {
 public:
  explicit LocalTransport(const PoolConfig& cfg)
      : cfg_(cfg), ctx_(cfg.context ? cfg.context : &get_context()), results_(0, false, kResultRing),
        skips_(kSkipSlots * static_cast<std::size_t>(cfg.processes)),
        slots_(static_cast<std::size_t>(cfg.processes)) {
    if (ctx_->start_method() != StartMethod::fork && cfg.init_call.empty() && cfg.local_init)
      throw ValueError("mpxx: the pool's initializer cannot be sent to " +
                       std::string(ctx_->name()) + " workers: " + cfg.init_why_not);
  }

  ~LocalTransport() override {
    for (Slot& s : slots_)
      if (s.proc) stop_process(*s.proc);
    for (Process& p : retiring_) stop_process(p);
  }

  pid_t start(std::uint32_t slot, std::uint64_t generation) override {
    Slot& s = slots_.at(slot);
    if (s.proc && !s.reaped) retiring_.push_back(std::move(*s.proc));
    s.proc.reset();

    WorkerArgs a;
    a.tasks = QueueCore(0, false, kTaskRing);
    a.results = results_;
    // The row's previous worker is gone or past its last task.
    for (std::uint64_t& cell : skip_cells(skips_, slot))
      std::atomic_ref<std::uint64_t>(cell).store(0, std::memory_order_relaxed);
    a.skips = skips_;
    a.slot = slot;
    a.generation = generation;
    a.maxtasks = cfg_.maxtasksperchild;
    a.init_call.assign(reinterpret_cast<const std::uint8_t*>(cfg_.init_call.data()),
                       reinterpret_cast<const std::uint8_t*>(cfg_.init_call.data()) +
                           cfg_.init_call.size());

    static constexpr const char* kPrefix[] = {"ForkPoolWorker-", "SpawnPoolWorker-",
                                              "ForkServerPoolWorker-"};
    ProcessOptions opts{
        .name = kPrefix[static_cast<int>(ctx_->start_method())] + std::to_string(++g_worker_counter),
        .daemon = true,
        .context = ctx_};
    Process p = ctx_->start_method() == StartMethod::fork
                    ? Process(opts, [a, init = cfg_.local_init]() mutable { worker_loop(a, init); })
                    : Process(opts, &worker_entry, a);
    // Ctrl-C reaches the whole process group; the parent decides what it
    // means (see pool.hpp), so one report is printed, not one per worker.
    ignore_interrupts_from_start(p);
    p.start();
    s.tasks = std::move(a.tasks);
    s.proc.emplace(std::move(p));
    s.generation = generation;
    s.reaped = false;
    s.killed = false;
    return s.proc->pid();
  }

  void send(std::uint32_t slot, std::span<const std::byte> msg) override {
    slots_.at(slot).tasks.put(msg, std::chrono::nanoseconds::max());
  }

  bool skip(std::uint32_t slot, std::uint64_t task) override {
    for (std::uint64_t& cell : skip_cells(skips_, slot)) {
      std::atomic_ref<std::uint64_t> c(cell);
      if (c.load(std::memory_order_relaxed) == 0) {
        c.store(task, std::memory_order_release);
        return true;
      }
    }
    return false;
  }

  void skipped(std::uint32_t slot, std::uint64_t task) override {
    for (std::uint64_t& cell : skip_cells(skips_, slot)) {
      std::atomic_ref<std::uint64_t> c(cell);
      if (c.load(std::memory_order_relaxed) == task) c.store(0, std::memory_order_relaxed);
    }
  }

  void poll(std::chrono::nanoseconds timeout,
            const std::function<void(const WorkerMsg&, std::span<const std::byte>)>& on_msg) override {
    auto consume = [&](std::span<const std::byte> bytes) {
      if (bytes.size() < sizeof(WorkerMsg))
        throw ProtocolError("mpxx: a pool worker sent a truncated message");
      WorkerMsg m;
      std::memcpy(&m, bytes.data(), sizeof m);
      on_msg(m, bytes.subspan(sizeof m));
    };
    if (!results_.get(consume, timeout)) return;
    // Then whatever else is already there, up to a batch.
    for (int i = 0; i < 256 && results_.get(consume, std::chrono::nanoseconds::zero()); ++i) {
    }
  }

  bool wait(std::chrono::nanoseconds timeout, const std::function<bool()>& also) override {
    return results_.wait_readable(timeout, also);
  }

  void wake() override {
    const WorkerMsg m{0, MsgKind::poke, 0, 0, 0};
    results_.put(std::span(reinterpret_cast<const std::byte*>(&m), sizeof m),
                 std::chrono::nanoseconds::max());
  }

  std::vector<WorkerExit> reap() override {
    std::vector<WorkerExit> out;
    std::vector<pollfd> fds;
    for (Slot& s : slots_)
      if (s.proc && !s.reaped) fds.push_back({s.proc->sentinel(), POLLIN, 0});
    for (Process& p : retiring_) fds.push_back({p.sentinel(), POLLIN, 0});
    if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return out;
    for (std::uint32_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (!s.proc || s.reaped || s.proc->is_alive()) continue;
      s.reaped = true;
      out.push_back({i, s.generation, s.proc->pid(), s.proc->exitcode().value_or(-SIGKILL)});
    }
    std::erase_if(retiring_, [](Process& p) { return !p.is_alive(); });
    return out;
  }

  void kill(std::uint32_t slot) override {
    Slot& s = slots_.at(slot);
    if (s.proc && !s.reaped) {
      s.proc->kill();
      s.killed = true;
    }
  }

  void wait_killed(std::chrono::nanoseconds timeout) override {
    for (Slot& s : slots_)
      if (s.proc && s.killed && !s.reaped) s.proc->join(timeout);
  }

  void wait_exit(std::uint32_t slot, std::chrono::nanoseconds timeout) override {
    Slot& s = slots_.at(slot);
    if (s.proc && !s.reaped) s.proc->join(timeout);
  }

  pid_t pid(std::uint32_t slot) const override {
    const Slot& s = slots_.at(slot);
    return s.proc ? s.proc->pid() : 0;
  }

 private:
  struct Slot {
    std::optional<Process> proc;
    QueueCore tasks{wire::empty_t{}};
    std::uint64_t generation = 0;
    bool reaped = false;
    bool killed = false;
  };

  static void stop_process(Process& p) noexcept {
    try {
      if (p.is_alive()) p.kill();
      p.join();
    } catch (...) {
    }
  }

  PoolConfig cfg_;
  const Context* ctx_;
  QueueCore results_;
  RawArray<std::uint64_t> skips_;
  std::vector<Slot> slots_;
  std::vector<Process> retiring_;
};

}  // namespace

std::unique_ptr<Transport> make_local_transport(const PoolConfig& cfg) {
  return std::make_unique<LocalTransport>(cfg);
}

}  // namespace mpxx::detail::pool
