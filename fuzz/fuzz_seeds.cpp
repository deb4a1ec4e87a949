// Writes a seed corpus (one valid input per decoder) into the directory
// given as argv[1]; linked into the fuzz target as well, which must contain
// the same callables for the call seeds to be valid.
#include "fuzz_seeds.hpp"

#include <fstream>
#include <map>
#include <optional>
#include <tuple>
#include <variant>

#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/managers.hpp"

namespace wire = mpxx::detail::wire;

namespace fuzz {
int add(int a, int b) { return a + b; }
std::string echo(std::string s) { return s; }

void write_seeds(const std::string& dir) {
  int n = 0;
  auto emit = [&](std::uint8_t selector, const wire::Writer& w) {
    std::ofstream f(dir + "/seed-" + std::to_string(n++), std::ios::binary);
    f.put(static_cast<char>(selector));
    f.write(reinterpret_cast<const char*>(w.data()), static_cast<std::streamsize>(w.size()));
  };
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
  // Manager requests: set and read a dict item, append to the list, use
  // the queue and the lock (objects 1, 2, 13, 6 of the fuzzer's server).
  namespace mgr = mpxx::detail::mgr;
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
  emit(10, reqs);
}
}  // namespace fuzz

#ifdef MPXX_FUZZ_SEED_MAIN
int main(int argc, char** argv) {
  if (argc != 2) return 2;
  fuzz::write_seeds(argv[1]);
  return 0;
}
#endif
