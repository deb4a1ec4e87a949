// src/pool/transport.hpp - how the pool core reaches its workers.
//
// PoolCore (pool_core.cpp) decides which task goes to which worker and what
// a result or a death means; a Transport only starts workers, carries bytes
// and reports exits. The local transport (local_transport.cpp) runs workers
// as child processes with shared-memory rings; a transport over MPI ranks
// implements the same interface, and the core and every user of Pool stay
// unchanged.
//
// Messages. Core -> worker: [u64 task id][encoded call], or a bare id 0 to
// stop. Worker -> core: a WorkerMsg header and a payload (the encoded result,
// or an encoded exception).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sys/types.h>
#include <vector>

#include "mpxx/detail/pool_core.hpp"

namespace mpxx::detail::pool {

enum class MsgKind : std::uint32_t {
  result = 1,       // payload: the encoded result
  error = 2,        // payload: an encoded exception
  ready = 3,        // the initializer has run
  init_failed = 4,  // payload: the initializer's exception; the worker exits
  skipped = 5,      // a task cancelled before it started
  poke = 6,         // from the core itself: look at your state
  exiting = 7,      // the worker is about to exit (stopped, or maxtasksperchild)
};

struct WorkerMsg {
  std::uint32_t slot;
  MsgKind kind;
  std::uint64_t generation;
  std::uint64_t task;
  std::uint64_t exec_ns;  // time the task ran in the worker
};

struct WorkerExit {
  std::uint32_t slot;
  std::uint64_t generation;
  pid_t pid;
  int exitcode;  // Python's convention: -N for signal N
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Starts the worker of `slot` (a fresh one each generation); its pid.
  virtual pid_t start(std::uint32_t slot, std::uint64_t generation) = 0;
  // Queues a message for the worker (never blocks for long: the core bounds
  // the tasks in flight).
  virtual void send(std::uint32_t slot, std::span<const std::byte> msg) = 0;
  // Asks the worker to skip a task it holds but has not started; false if
  // that cannot be arranged (the core then lets it run).
  virtual bool skip(std::uint32_t slot, std::uint64_t task) = 0;
  // Forgets skip requests once the worker has acknowledged them.
  virtual void skipped(std::uint32_t slot, std::uint64_t task) = 0;
  // Waits up to `timeout` for worker messages and hands each to on_msg (the
  // payload is valid during the call only). Returns after a batch.
  virtual void poll(std::chrono::nanoseconds timeout,
                    const std::function<void(const WorkerMsg&, std::span<const std::byte>)>& on_msg) = 0;
  // Waits up to `timeout` until worker messages may be there or `also()`
  // holds (see wake()), consuming nothing; false on timeout. poll() may run
  // on several threads (one at a time: the core serializes them), wait() on
  // one.
  virtual bool wait(std::chrono::nanoseconds timeout, const std::function<bool()>& also) = 0;
  // Makes a poll() or wait() in progress return soon; any thread.
  virtual void wake() = 0;
  // Workers that have ended since the last call (reaped).
  virtual std::vector<WorkerExit> reap() = 0;
  virtual void kill(std::uint32_t slot) = 0;
  // Waits (bounded) until every killed worker has exited, so that nothing
  // of the pool is left running when its caller hears of it.
  virtual void wait_killed(std::chrono::nanoseconds timeout) = 0;
  // Waits (bounded) for a worker that said it is exiting.
  virtual void wait_exit(std::uint32_t slot, std::chrono::nanoseconds timeout) = 0;
  virtual pid_t pid(std::uint32_t slot) const = 0;
};

std::unique_ptr<Transport> make_local_transport(const PoolConfig& cfg);

}  // namespace mpxx::detail::pool
