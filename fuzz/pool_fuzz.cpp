// libFuzzer target for a Pool's task and result messages: a task as a
// worker reads it ([u64 task id][entry][callable][arguments], map's chunks
// included, raw or encoded) and runs it, and a worker's message as the
// parent reads it ([WorkerMsg][payload]: a result of several shapes or an
// exception). The first input byte picks the side; any mpxx::Error is an
// expected rejection.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_seeds.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/pool.hpp"
#include "pool/transport.hpp"

namespace wire = mpxx::detail::wire;
namespace pool = mpxx::detail::pool;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  try {
    if (data[0] % 2 == 0) {
      // The worker's side (worker_loop in src/pool/local_transport.cpp).
      wire::Reader r(in);
      if (r.pod<std::uint64_t>() == 0) return 0;  // the stop message
      wire::Writer out;
      mpxx::detail::invoke_call(r, &out);
      r.expect_done("a pool task");
    } else {
      // The parent's side (LocalTransport::poll, then PoolCore).
      if (in.size() < sizeof(pool::WorkerMsg))
        throw mpxx::ProtocolError("mpxx: a pool worker sent a truncated message");
      pool::WorkerMsg m;
      std::memcpy(&m, in.data(), sizeof m);
      const auto payload = in.subspan(sizeof m);
      if (m.kind == pool::MsgKind::result) {
        switch (m.slot % 3) {
          case 0: mpxx::detail::decode_result<std::vector<int>>(payload); break;
          case 1: mpxx::detail::decode_result<std::string>(payload); break;
          default: mpxx::detail::decode_result<std::uint64_t>(payload);
        }
      } else if (m.kind == pool::MsgKind::error || m.kind == pool::MsgKind::init_failed) {
        wire::Reader r(payload);
        mpxx::detail::decode_exception(r);
      }
    }
  } catch (const mpxx::Error&) {
  }
  return 0;
}
