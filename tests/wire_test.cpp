// The wire layer: frames, values, callables and exceptions as bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <algorithm>
#include <map>
#include <span>
#include <stdexcept>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/mpxx.hpp"

namespace wire = mpxx::detail::wire;
using mpxx::ProtocolError;

namespace {

struct Point {
  double x, y;
  bool operator==(const Point&) const = default;
};

struct Job {
  std::string url;
  std::vector<int> ids;
  std::optional<Point> where;
  template <class A>
  void serialize(A& a) {
    a(url, ids, where);
  }
  bool operator==(const Job&) const = default;
};

struct Opaque {
  std::vector<int> v;  // not trivially copyable, no serialize()
};

static_assert(mpxx::Transferable<int>);
static_assert(mpxx::Transferable<Point>);
static_assert(mpxx::Transferable<std::string>);
static_assert(mpxx::Transferable<std::vector<Point>>);
static_assert(mpxx::Transferable<std::map<std::string, std::vector<int>>>);
static_assert(mpxx::Transferable<Job>);
static_assert(!mpxx::Transferable<int*>);
static_assert(!mpxx::Transferable<const char*>);
static_assert(!mpxx::Transferable<std::string_view>);
static_assert(!mpxx::Transferable<std::span<int>>);
static_assert(!mpxx::Transferable<Opaque>);

template <class T>
T roundtrip(const T& v) {
  wire::Writer w;
  wire::encode(w, v);
  wire::Reader r(w.bytes());
  T out = wire::decode<T>(r);
  EXPECT_TRUE(r.done());
  return out;
}

TEST(Codec, RoundTrips) {
  EXPECT_EQ(roundtrip(42), 42);
  EXPECT_EQ(roundtrip(2.5), 2.5);
  EXPECT_EQ(roundtrip(Point{1, 2}), (Point{1, 2}));
  EXPECT_EQ(roundtrip(std::string("héllo\0x", 8)), std::string("héllo\0x", 8));
  EXPECT_EQ(roundtrip(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(roundtrip(std::vector<Point>{{1, 2}, {3, 4}}), (std::vector<Point>{{1, 2}, {3, 4}}));
  std::map<std::string, std::vector<int>> m{{"a", {1}}, {"b", {2, 3}}};
  EXPECT_EQ(roundtrip(m), m);
  auto t = std::make_tuple(1, std::string("x"), 3.5);
  EXPECT_EQ(roundtrip(t), t);
  std::variant<int, std::string> var = std::string("v");
  EXPECT_EQ(roundtrip(var), var);
  Job j{"http://x", {1, 2, 3}, Point{5, 6}};
  EXPECT_EQ(roundtrip(j), j);
}

TEST(Codec, RawFastPathIsExactlyTheBytes) {
  wire::Writer w;
  wire::encode(w, Point{1, 2});
  EXPECT_EQ(w.size(), sizeof(Point));
  wire::Writer v;
  std::vector<double> big(1000, 1.5);
  wire::encode(v, big);
  EXPECT_EQ(v.size(), 8 + big.size() * sizeof(double));  // size prefix + one block
}

TEST(Codec, LargeValue) {
  std::vector<std::uint8_t> big(64 << 20);
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<std::uint8_t>(i >> 12);
  EXPECT_EQ(roundtrip(big), big);
}

TEST(Codec, TruncatedValueIsProtocolError) {
  wire::Writer w;
  wire::encode(w, std::string("hello world"));
  for (std::size_t cut = 0; cut < w.size(); ++cut) {
    wire::Reader r(w.bytes().first(cut));
    EXPECT_THROW(wire::decode<std::string>(r), ProtocolError) << "cut at " << cut;
  }
}

TEST(Codec, AbsurdSizePrefixIsRejectedBeforeAllocating) {
  wire::Writer w;
  std::uint64_t huge = std::uint64_t{1} << 60;
  w.pod(huge);
  wire::Reader r(w.bytes());
  try {
    wire::decode<std::vector<std::string>>(r);
    FAIL() << "expected ProtocolError";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("size prefix"), std::string::npos) << e.what();
  }
}

TEST(Codec, TaggedValueChecksTheType) {
  wire::Writer w;
  wire::encode_tagged(w, 42);
  {
    wire::Reader r(w.bytes());
    EXPECT_EQ(wire::decode_tagged<int>(r), 42);
  }
  wire::Reader r(w.bytes());
  try {
    wire::decode_tagged<std::string>(r);
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("type mismatch"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("std::"), std::string::npos) << e.what();
  }
}

// A message whose rest arrives later, a few bytes at a time (as from a
// pipe): the Reader reads it as decoding asks.
class Trickle final : public wire::Source {
 public:
  explicit Trickle(std::span<const std::byte> bytes) : bytes_(bytes) {}
  std::size_t left() const noexcept override { return bytes_.size() - at_; }
  void read(void* out, std::size_t n) override {
    if (n > left()) throw std::logic_error("read past the end of the source");
    std::memcpy(out, bytes_.data() + at_, n);
    at_ += n;
    ++reads;
  }
  int reads = 0;

 private:
  std::span<const std::byte> bytes_;
  std::size_t at_ = 0;
};

TEST(Codec, DecodesFromMemoryAndASourceBeyondIt) {
  std::vector<std::string> many;
  for (int i = 0; i < 20000; ++i) many.push_back(std::string(static_cast<std::size_t>(i % 97), 'a' + i % 26));
  std::vector<std::uint32_t> big(1u << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint32_t>(i * 2654435761u);
  wire::Writer w;
  wire::encode_tagged(w, many);
  wire::encode_tagged(w, big);
  for (std::size_t start : {std::size_t{0}, std::size_t{5}, std::size_t{65536}}) {
    Trickle rest(w.bytes().subspan(start));
    wire::Reader r(w.bytes().first(start), &rest);
    EXPECT_EQ(r.remaining(), w.size());
    EXPECT_EQ(wire::decode_tagged<std::vector<std::string>>(r), many) << "start " << start;
    EXPECT_EQ(wire::decode_tagged<std::vector<std::uint32_t>>(r), big) << "start " << start;
    EXPECT_TRUE(r.done());
    // Small parts are read a window at a time, the large vector at once.
    EXPECT_LT(rest.reads, static_cast<int>(w.size() / 32768) + 4) << "start " << start;
  }
  // A view taken across the end of what is in memory stays valid after
  // further reads.
  Trickle rest(w.bytes().subspan(10));
  wire::Reader r(w.bytes().first(10), &rest);
  auto view = r.take(20);
  std::vector<std::byte> more(100000);
  r.get(more.data(), more.size());
  EXPECT_EQ(0, std::memcmp(view.data(), w.data(), 20));
  EXPECT_EQ(0, std::memcmp(more.data(), w.data() + 20, more.size()));
  // ... and so does a view taken from inside a window, after the window
  // would have been refilled.
  auto inside = r.take(16);
  std::vector<std::byte> expect(inside.begin(), inside.end());
  std::vector<std::byte> small(100);
  for (int i = 0; i < 2000; ++i) r.get(small.data(), small.size());  // several windows
  EXPECT_TRUE(std::equal(inside.begin(), inside.end(), expect.begin()));
  EXPECT_EQ(0, std::memcmp(inside.data(), w.data() + 20 + more.size(), 16));
  // Nothing is read past the message's end.
  std::vector<std::byte> all(r.remaining() + 1);
  EXPECT_THROW(r.get(all.data(), all.size()), ProtocolError);
}

// ---------------------------------------------------------------- frames

TEST(Frame, HeaderRoundTrip) {
  wire::Writer w;
  auto at = wire::begin_frame(w, wire::FrameKind::value);
  wire::encode(w, 7);
  wire::end_frame(w, at);
  auto payload = wire::open_frame(w.bytes(), wire::FrameKind::value);
  EXPECT_EQ(payload.size(), sizeof(int));
  auto h = wire::parse_header(w.bytes());
  EXPECT_EQ(h.kind, wire::FrameKind::value);
  EXPECT_EQ(h.length, sizeof(int));
}

std::string parse_error(std::vector<std::byte> bytes, std::uint64_t max = wire::kDefaultMaxFrame) {
  try {
    wire::parse_header(bytes, max);
  } catch (const ProtocolError& e) {
    return e.what();
  }
  return "";
}

std::vector<std::byte> good_header(std::uint64_t len = 4) {
  wire::Writer w;
  wire::write_header(w, wire::FrameKind::value, len);
  return {w.data(), w.data() + w.size()};
}

TEST(Frame, CorruptHeadersSayWhatIsWrong) {
  auto h = good_header();
  EXPECT_NE(parse_error({h.begin(), h.begin() + 10}).find("truncated"), std::string::npos);
  auto bad = h;
  bad[0] = std::byte{'X'};
  EXPECT_NE(parse_error(bad).find("magic"), std::string::npos);
  bad = h;
  bad[4] = std::byte{9};
  EXPECT_NE(parse_error(bad).find("version 9"), std::string::npos);
  bad = h;
  bad[5] = std::byte{200};
  EXPECT_NE(parse_error(bad).find("kind 200"), std::string::npos);
  bad = h;
  bad[6] = std::byte{2};
  EXPECT_NE(parse_error(bad).find("flags"), std::string::npos);
  EXPECT_NE(parse_error(good_header(1 << 20), 1024).find("exceeds the limit"), std::string::npos);
}

// A peer-read frame (a large value offered where it is in the sender's
// memory) carries its size and 1 to kMaxPeerReadPieces (address, length)
// pairs, and is always external.
TEST(Frame, PeerReadFramesCarryASizeAndTheirPieces) {
  const std::uint16_t peer_read = wire::kFlagExternal | wire::kFlagPeerRead;
  auto header = [](std::uint64_t len, std::uint16_t flags) {
    wire::Writer w;
    wire::write_header(w, wire::FrameKind::value, len, flags);
    return std::vector<std::byte>(w.data(), w.data() + w.size());
  };
  EXPECT_EQ(parse_error(header(8 + 16, peer_read)), "");
  EXPECT_EQ(parse_error(header(8 + 16 * wire::kMaxPeerReadPieces, peer_read)), "");
  EXPECT_NE(parse_error(header(8, peer_read)).find("1 to 256 pieces"), std::string::npos);
  EXPECT_NE(parse_error(header(8 + 16 * wire::kMaxPeerReadPieces + 16, peer_read)).find("pieces"), std::string::npos);
  EXPECT_NE(parse_error(header(8 + 20, peer_read)).find("pieces"), std::string::npos);
  EXPECT_NE(parse_error(header(8 + 16, wire::kFlagPeerRead)).find("flags"), std::string::npos);
  EXPECT_NE(parse_error(header(8 + 16, wire::kFlagExternal)).find("8-byte size"), std::string::npos);
}

TEST(Frame, OpenFrameChecksKindAndLength) {
  wire::Writer w;
  wire::write_header(w, wire::FrameKind::call, 4);
  w.pod(std::uint32_t{1});
  EXPECT_THROW(wire::open_frame(w.bytes(), wire::FrameKind::value), ProtocolError);
  EXPECT_THROW(wire::open_frame(w.bytes().first(w.size() - 1), wire::FrameKind::call),
               ProtocolError);
  EXPECT_NO_THROW(wire::open_frame(w.bytes(), wire::FrameKind::call));
}

// ------------------------------------------------------------- callables

int add(int a, int b) { return a + b; }
std::string greet(std::string name) { return "hello " + name; }

struct Scale {
  int factor = 1;
  int operator()(int x) const { return x * factor; }
  template <class A>
  void serialize(A& a) {
    a(factor);
  }
};

template <class R, class F, class... A>
R call_through_bytes(const F& f, const A&... a) {
  wire::Writer w;
  mpxx::detail::encode_call(w, f, a...);
  wire::Reader r(w.bytes());
  wire::Writer out;
  mpxx::detail::invoke_call(r, &out);
  EXPECT_TRUE(r.done());
  wire::Reader rr(out.bytes());
  return wire::decode<R>(rr);
}

TEST(Callable, FunctionPointer) {
  EXPECT_EQ(call_through_bytes<int>(&add, 2, 3), 5);
  EXPECT_EQ(call_through_bytes<std::string>(&greet, std::string("bob")), "hello bob");
}

TEST(Callable, CaptureFreeLambdaFunctorAndPartial) {
  auto sq = [](int x) { return x * x; };
  EXPECT_EQ(call_through_bytes<int>(sq, 7), 49);
  EXPECT_EQ(call_through_bytes<int>(Scale{3}, 5), 15);
  auto add10 = mpxx::partial(&add, 10);
  EXPECT_EQ(add10(1), 11);
  EXPECT_EQ(call_through_bytes<int>(add10, 5), 15);
  auto nested = mpxx::partial(Scale{2}, 21);
  EXPECT_EQ(call_through_bytes<int>(nested), 42);
}

TEST(Callable, CapturingLambdaIsNotTransferable) {
  int k = 3;
  auto cap = [k](int x) { return x + k; };
  static_assert(!mpxx::TransferableCall<decltype(cap), int>);
  static_assert(mpxx::TransferableCall<decltype(&add), int, int>);
  EXPECT_NE((mpxx::detail::why_not_transferable<decltype(cap), int>().find("capturing lambda")),
            std::string::npos);
  (void)cap(1);
}

TEST(Callable, UnknownEntryIdIsProtocolError) {
  wire::Writer w;
  w.pod(std::uint64_t{0x0123456789abcdefull});
  wire::Reader r(w.bytes());
  try {
    mpxx::detail::invoke_call(r, nullptr);
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown callable id"), std::string::npos);
  }
}

// Encodes add(2, 3), then lets `mutate` change the function reference.
std::string forged(void (*mutate)(mpxx::detail::FnRef&)) {
  wire::Writer w;
  mpxx::detail::encode_call(w, &add, 2, 3);
  mpxx::detail::FnRef ref;
  std::memcpy(&ref, w.data() + 8, sizeof ref);
  mutate(ref);
  std::memcpy(w.data() + 8, &ref, sizeof ref);
  wire::Reader r(w.bytes());
  wire::Writer out;
  try {
    mpxx::detail::invoke_call(r, &out);
  } catch (const ProtocolError& e) {
    return e.what();
  }
  return "";
}

TEST(Callable, ForgedFunctionReferencesAreRejected) {
  EXPECT_NE(forged([](mpxx::detail::FnRef& r) { r.offset += 1; }).find("forged"), std::string::npos);
  EXPECT_NE(forged([](mpxx::detail::FnRef& r) { r.offset = 1ull << 40; }).find("forged"),
            std::string::npos);
  EXPECT_NE(forged([](mpxx::detail::FnRef& r) { r.code_hash ^= 1; }).find("does not match"),
            std::string::npos);
  EXPECT_NE(forged([](mpxx::detail::FnRef& r) { r.module ^= 1; }).find("not loaded here"),
            std::string::npos);
}

// Two functions that begin with the same code bytes (here: the same
// code): a reference to one, its offset turned into the other's, must not
// resolve (a corrupted message would otherwise call a function of another
// type).
[[gnu::noinline]] int twin_a(int x) { return x * 3 + 1; }
[[gnu::noinline]] int twin_b(int x) { return x * 3 + 1; }

TEST(Callable, AReferenceMovedToAnotherFunctionThatBeginsAlikeIsRefused) {
  const auto a = mpxx::detail::make_fn_ref(reinterpret_cast<const void*>(&twin_a));
  const auto b = mpxx::detail::make_fn_ref(reinterpret_cast<const void*>(&twin_b));
  ASSERT_NE(a.offset, b.offset);
  EXPECT_EQ(mpxx::detail::resolve_fn_ref(a), reinterpret_cast<const void*>(&twin_a));
  EXPECT_THROW(mpxx::detail::resolve_fn_ref({a.module, b.offset, a.code_hash}), ProtocolError);
}

TEST(Callable, RandomCorruptionNeverCrashes) {
  wire::Writer base;
  mpxx::detail::encode_call(base, &greet, std::string("someone"));
  std::mt19937 rng(12345);
  int errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::byte> b(base.data(), base.data() + base.size());
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] ^= static_cast<std::byte>(1 + rng() % 255);
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    wire::Reader r(b);
    wire::Writer out;
    try {
      mpxx::detail::invoke_call(r, &out);
    } catch (const mpxx::Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 2000);  // almost every corruption is detected
}

// ------------------------------------------------------------- exceptions

}  // namespace

// Outside the anonymous namespace: backtraces name functions with external
// linkage (the dynamic symbol table); internal ones show as module+offset.
[[noreturn]] void thrower_for_trace() { throw std::out_of_range("index 7 of 3"); }

namespace {

TEST(RemoteException, CarriesTypeMessageAndBacktrace) {
  wire::Writer w;
  try {
    mpxx::detail::ThrowTrace trace;
    thrower_for_trace();
  } catch (...) {
    mpxx::detail::encode_exception(w, mpxx::detail::describe_current_exception());
  }
  wire::Reader r(w.bytes());
  mpxx::RemoteError e = mpxx::detail::decode_exception(r);
  EXPECT_EQ(e.type_name(), "std::out_of_range");
  EXPECT_EQ(e.message(), "index 7 of 3");
  EXPECT_EQ(std::string(e.what()), "std::out_of_range: index 7 of 3");
#if !defined(MPXX_TEST_SANITIZED)
  EXPECT_NE(e.backtrace().find("thrower_for_trace"), std::string::npos) << e.backtrace();
#endif
}

}  // namespace
