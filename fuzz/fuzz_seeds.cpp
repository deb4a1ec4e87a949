// Writes a seed corpus (valid inputs for each decoder of each target) into
// the directory given as argv[1], one subdirectory per target
// (DIR/wire_fuzz, DIR/manager_fuzz, ...). Linked into the fuzz targets as
// well, which must contain the same callables and map chunks for the call
// seeds to be valid. ./run fuzz --seeds regenerates fuzz/seeds/ with it.
#include "fuzz_seeds.hpp"


#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <tuple>
#include <variant>

#include "channel/pipe_ring.hpp"
#include "manager/protocol.hpp"
#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/managers.hpp"
#include "mpxx/pool.hpp"
#include "pool/transport.hpp"
#include "process/boot.hpp"

namespace wire = mpxx::detail::wire;
namespace mgr = mpxx::detail::mgr;

namespace fuzz {
int stream_of(std::span<const std::byte> bytes, int* keep_writer) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
  ssize_t w = ::write(sv[1], bytes.data(), bytes.size());
  (void)w;
  if (keep_writer) {
    ::shutdown(sv[1], SHUT_WR);
    *keep_writer = sv[1];
  } else {
    ::close(sv[1]);
  }
  return sv[0];
}

int add(int a, int b) { return a + b; }
std::string echo(std::string s) { return s; }
int square(int x) { return x * x; }

namespace {
using Writer = wire::Writer;

// A message in CPython's framing: a 4-byte big-endian length, then it.
void put_framed(Writer& w, std::span<const std::byte> m) {
  const auto n = static_cast<std::uint32_t>(m.size());
  const unsigned char len[4] = {static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
                                static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
  w.put(len, 4);
  w.put(m.data(), m.size());
}
void put_framed(Writer& w, const std::string& m) { put_framed(w, std::as_bytes(std::span(m.data(), m.size()))); }

// A ring record as both rings lay them out: [u32 length][u32 flags], the
// payload, padding to 8 bytes (pipe_ring.cpp's kRecord*; queue.cpp's kData
// = 1 and kWrap = 2 in the flags word).
void put_record(Writer& ring, std::uint32_t flags, const std::string& payload) {
  ring.pod(static_cast<std::uint32_t>(payload.size()));
  ring.pod(flags);
  ring.put(payload.data(), payload.size());
  while (ring.size() % 8) ring.pod(std::uint8_t{0});
}
// [u64 head][u64 tail][ring bytes, placed at head modulo the capacity].
Writer ring_input(std::uint64_t head, std::uint64_t capacity, const Writer& records) {
  Writer w;
  w.pod(head);
  w.pod(head + records.size());
  std::vector<std::byte> ring(capacity);
  for (std::size_t i = 0; i < records.size(); ++i) ring[(head + i) % capacity] = records.data()[i];
  w.put(ring.data(), ring.size());
  return w;
}
}  // namespace

void write_seeds(const std::string& root) {
  int n = 0;
  std::string dir;
  auto target = [&](const char* name) {
    dir = root + "/" + name;
    std::filesystem::create_directories(dir);
    n = 0;
  };
  auto emit = [&](std::uint8_t selector, const wire::Writer& w) {
    std::ofstream f(dir + "/seed-" + std::to_string(n++), std::ios::binary);
    f.put(static_cast<char>(selector));
    f.write(reinterpret_cast<const char*>(w.data()), static_cast<std::streamsize>(w.size()));
  };

  target("wire_fuzz");
  wire::Writer h;
  wire::write_header(h, wire::FrameKind::value, 4);
  emit(0, h);
  wire::Writer f;
  auto at = wire::begin_frame(f, wire::FrameKind::value);
  wire::encode_tagged(f, 1234);
  wire::end_frame(f, at);
  emit(1, f);
  wire::Writer s;
  wire::encode_tagged(s, std::string("hello fuzzer"));
  emit(2, s);
  wire::Writer m;
  wire::encode_tagged(m, std::map<std::string, std::vector<double>>{{"a", {1.5, 2}}, {"b", {}}});
  emit(3, m);
  wire::Writer r;
  wire::encode_tagged(r, Record{"rec", {1, 2, 3}, 0.5});
  emit(4, r);
  wire::Writer t;
  wire::encode(t, std::tuple<int, std::optional<std::string>, std::variant<int, std::vector<int>>>(
                      1, std::string("x"), std::vector<int>{4, 5}));
  emit(5, t);
  wire::Writer c1, c2;
  mpxx::detail::encode_call(c1, &add, 2, 3);
  mpxx::detail::encode_call(c2, &echo, std::string("abc"));
  emit(6, c1);
  emit(6, c2);
  wire::Writer e;
  mpxx::detail::encode_exception(e, {"std::runtime_error", "boom", "  frame\n"});
  emit(7, e);
  // Two messages as a Connection frames them: length prefix + value frame.
  wire::Writer v;
  auto vat = wire::begin_frame(v, wire::FrameKind::value);
  wire::encode_tagged(v, std::vector<std::string>{"a", "bc"});
  wire::end_frame(v, vat);
  wire::Writer stream;
  for (int k = 0; k < 2; ++k) {
    unsigned char len[4] = {0, 0, static_cast<unsigned char>(v.size() >> 8),
                            static_cast<unsigned char>(v.size())};
    stream.put(len, 4);
    stream.put(v.data(), v.size());
  }
  emit(8, stream);
  emit(9, stream);

  target("manager_fuzz");
  // Manager requests: set and read a dict item, append to the list, use
  // the queue and the lock (objects 1, 2, 13, 6 of the fuzzer's server).
  wire::Writer reqs;
  auto request = [&](mgr::Op op, std::uint64_t id, mgr::Method m, auto fill) {
    wire::Writer one;
    mgr::begin(one, op, id);
    one.pod(m);
    fill(one);
    reqs.pod(static_cast<std::uint16_t>(one.size()));
    reqs.put(one.data(), one.size());
  };
  request(mgr::Op::call, 1, mgr::Method::d_set, [](wire::Writer& w) {
    mgr::put_value(w, std::string("key"));
    mgr::put_value(w, 42);
  });
  request(mgr::Op::call, 1, mgr::Method::d_get, [](wire::Writer& w) { mgr::put_value(w, std::string("key")); });
  request(mgr::Op::call, 1, mgr::Method::d_items, [](wire::Writer&) {});
  request(mgr::Op::call, 2, mgr::Method::l_append, [](wire::Writer& w) { mgr::put_value(w, 7); });
  request(mgr::Op::call, 2, mgr::Method::l_slice, [](wire::Writer& w) {
    w.pod(std::int64_t{0});
    w.pod(mgr::kNone);
    w.pod(std::int64_t{-1});
  });
  request(mgr::Op::call, 13, mgr::Method::q_put, [](wire::Writer& w) {
    mgr::put_value(w, 1.5);
    w.pod(std::int64_t{0});
  });
  request(mgr::Op::call, 13, mgr::Method::q_get, [](wire::Writer& w) { w.pod(std::int64_t{0}); });
  request(mgr::Op::call, 6, mgr::Method::a_acquire, [](wire::Writer& w) { w.pod(std::int64_t{0}); });
  request(mgr::Op::call, 6, mgr::Method::a_release, [](wire::Writer&) {});
  emit(0, reqs);
  // Replies: results of each shape the target decodes, and errors.
  {
    std::vector<std::string> items{"a", "bc"};
    Writer list;
    list.pod(std::uint8_t{0});
    mgr::put_values(list, items.begin(), items.end());
    emit(1, list);
    Writer dict;
    dict.pod(std::uint8_t{0});
    wire::encode_tagged(dict, std::map<std::string, std::vector<int>>{{"k", {1, 2}}});
    emit(2, dict);
    Writer num;
    num.pod(std::uint8_t{0});
    wire::encode_tagged(num, 42L);
    emit(3, num);
    Writer key_error;
    key_error.pod(std::uint8_t{1});
    key_error.pod(mgr::ErrKind::key);
    mgr::put_str(key_error, "'missing'");
    emit(1, key_error);
    Writer remote;
    remote.pod(std::uint8_t{1});
    remote.pod(mgr::ErrKind::remote);
    mgr::put_str(remote, "boom");
    mpxx::detail::encode_exception(remote, {"std::runtime_error", "boom", ""});
    emit(2, remote);
    // The stream both sides read: a short and a long length prefix.
    Writer chan;
    put_framed(chan, std::string("\0reply"));
    const unsigned char longer[12] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 3};
    chan.put(longer, 12);
    chan.put("abc", 3);
    emit(4, chan);
  }

  target("boot_fuzz");
  {
    mpxx::detail::ProcessState s;
    s.identity = {1, 2};
    s.name = "Process-1:2";
    s.authkey = "key";
    s.target = mpxx::detail::make_target(&add, 2, 3);
    s.has_target = true;
    Writer boot;
    mpxx::detail::encode_boot(boot, s);
    emit(0, boot);
    Writer cfg;
    wire::encode(cfg, mgr::ServerConfig{"/tmp/mpxx-sock", -1, "key", {}, 1234});
    emit(1, cfg);
    Writer ready;
    wire::encode(ready, mgr::Ready{true, "127.0.0.1", 5000, 0});
    emit(2, ready);
  }

  target("ring_fuzz");
  {
    // A Pipe's ring: two messages in place; a marker whose message is on
    // the socket (a bell, then the tag and the framed message); a marker
    // cancelled, then a message; a message across the end of the ring.
    Writer two;
    put_record(two, 0, "hello");
    put_record(two, 0, "ring!");
    emit(0, ring_input(0, mpxx::detail::kPipeRingCapacity, two));
    Writer marker;
    put_record(marker, 1, "");
    Writer with_socket = ring_input(0, mpxx::detail::kPipeRingCapacity, marker);
    with_socket.pod(mpxx::detail::kBell);
    with_socket.pod(mpxx::detail::kTag);
    with_socket.pod(std::uint64_t{0});
    put_framed(with_socket, std::string("on the socket"));
    emit(0, with_socket);
    Writer cancelled;
    put_record(cancelled, 1, "");
    put_record(cancelled, 2, "");
    put_record(cancelled, 0, "after");
    emit(0, ring_input(0, mpxx::detail::kPipeRingCapacity, cancelled));
    Writer across;
    put_record(across, 0, "across the end");
    emit(0, ring_input(mpxx::detail::kPipeRingCapacity - 8, mpxx::detail::kPipeRingCapacity, across));
    // A Queue's ring (capacity 4096): two messages; a wrap record at the
    // end of a lap, then a message at the start of the next.
    Writer q;
    put_record(q, 1, "first");
    put_record(q, 1, "second");
    emit(1, ring_input(0, 4096, q));
    Writer wrap;
    put_record(wrap, 2, "");
    put_record(wrap, 2, "");
    put_record(wrap, 1, "next lap");
    emit(1, ring_input(4096 - 16, 4096, wrap));
  }

  target("pool_fuzz");
  {
    namespace pool = mpxx::detail::pool;
    // Tasks as a worker reads them: apply_async(add, 2, 3); map(square)
    // over ints (a raw chunk); map(echo) over strings (an encoded chunk).
    mpxx::detail::TaskSpec apply = mpxx::detail::make_task(&add, 2, 3);
    std::uint64_t id = 1;
    std::memcpy(apply.call.data(), &id, sizeof id);
    emit(0, apply.call);
    using IntChunk = mpxx::detail::ChunkCall<int (*)(int), false>;
    Writer raw;
    raw.pod(std::uint64_t{2});
    raw.pod(mpxx::detail::RawChunkEntry<IntChunk, int>::id);
    mpxx::detail::CallableCodec<IntChunk>::encode(raw, IntChunk{&square});
    raw.pod(std::uint64_t{3});
    for (int x : {1, 2, 3}) raw.pod(x);
    emit(0, raw);
    using StrChunk = mpxx::detail::ChunkCall<std::string (*)(std::string), false>;
    mpxx::detail::TaskSpec strs =
        mpxx::detail::make_task(StrChunk{&echo}, std::vector<std::string>{"a", "bc"});
    id = 3;
    std::memcpy(strs.call.data(), &id, sizeof id);
    emit(0, strs.call);
    // Messages as the parent reads them: results of three shapes, an error.
    auto msg = [](std::uint32_t slot, pool::MsgKind kind) {
      Writer w;
      w.pod(pool::WorkerMsg{slot, kind, 1, 7, 1000});
      return w;
    };
    Writer ints = msg(0, pool::MsgKind::result);
    wire::encode(ints, std::vector<int>{1, 4, 9});
    emit(1, ints);
    Writer str = msg(1, pool::MsgKind::result);
    wire::encode(str, std::string("done"));
    emit(1, str);
    Writer count = msg(2, pool::MsgKind::result);
    wire::encode(count, std::uint64_t{3});
    emit(1, count);
    Writer err = msg(0, pool::MsgKind::error);
    mpxx::detail::encode_exception(err, {"mpxx::ValueError", "bad", "  frame\n"});
    emit(1, err);
  }

  target("handshake_fuzz");
  {
    // What a server sends a connecting client (a challenge, the verdict,
    // its answer to the client's challenge), in both digest forms; and
    // what a client sends a listener.
    const std::string modern = "{sha256}" + std::string(40, 'r');
    const std::string legacy(20, 'r');
    for (const std::string& challenge : {modern, legacy}) {
      Writer w;
      put_framed(w, "#CHALLENGE#" + challenge);
      put_framed(w, std::string("#WELCOME#"));
      put_framed(w, "{sha256}" + std::string(32, 'm'));
      emit(0, w);
    }
    Writer to_server;
    put_framed(to_server, "{sha256}" + std::string(32, 'm'));
    put_framed(to_server, "#CHALLENGE#" + modern);
    put_framed(to_server, std::string("#WELCOME#"));
    emit(1, to_server);
  }
}
}  // namespace fuzz

#ifdef MPXX_FUZZ_SEED_MAIN
int main(int argc, char** argv) {
  if (argc != 2) return 2;
  fuzz::write_seeds(argv[1]);
  return 0;
}
#endif
