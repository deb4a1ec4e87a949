// mpxx/detail/codec.hpp - how a value becomes bytes and back.
//
// Two paths, chosen from the static type alone so both ends agree:
//  * trivially copyable types (int, double, a struct of numbers, std::array
//    of them) are copied as raw bytes: one memcpy;
//  * everything else goes through cereal (Debian's libcereal) with mpxx's own
//    binary archive, whose contiguous data (std::string, std::vector of
//    numbers) is again a single memcpy, and whose size prefixes are checked
//    against the bytes actually present before anything is allocated, so a
//    corrupt length is a ProtocolError instead of a 2^60-byte allocation.
// Trivially copyable structs nested inside containers are written raw too,
// unless they bring their own cereal serialize().
//
// Pointers and views (std::string_view, std::span) would arrive meaning
// nothing in another address space, so they are compile errors.
#pragma once

#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/bitset.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>
#include <cereal/archives/binary.hpp>
#include <cstdint>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>

#include "mpxx/detail/buffer.hpp"

namespace mpxx::detail::wire {

// ---------------------------------------------------------------- archives

class OutArchive : public cereal::OutputArchive<OutArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit OutArchive(Writer& w) : OutputArchive(this), w_(w) {}
  void saveBinary(const void* p, std::size_t n) { w_.put(p, n); }
  Writer& writer() noexcept { return w_; }

 private:
  Writer& w_;
};

class InArchive : public cereal::InputArchive<InArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit InArchive(Reader& r) : InputArchive(this), r_(r) {}
  void loadBinary(void* p, std::size_t n) { r_.get(p, n); }
  Reader& reader() noexcept { return r_; }

 private:
  Reader& r_;
};

// Types cereal (or the user) already knows how to serialize with a standard
// archive; those keep their own representation even when trivially copyable.
template <class T>
inline constexpr bool cereal_knows_v =
    cereal::traits::is_output_serializable<T, cereal::BinaryOutputArchive>::value;

template <class T>
inline constexpr bool raw_struct_v = std::is_class_v<T> && std::is_trivially_copyable_v<T> &&
                                     !std::is_empty_v<T> && !cereal_knows_v<T>;

template <class T>
std::enable_if_t<std::is_arithmetic_v<T> || raw_struct_v<T>>
CEREAL_SAVE_FUNCTION_NAME(OutArchive& ar, const T& t) {
  ar.saveBinary(std::addressof(t), sizeof t);
}
[[noreturn]] void bad_bool(unsigned value);
template <class T>
std::enable_if_t<std::is_arithmetic_v<T> || raw_struct_v<T>>
CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    // Any byte but 0 or 1 in a bool is undefined behaviour to read.
    unsigned char b;
    ar.loadBinary(&b, 1);
    if (b > 1) bad_bool(b);
    t = b != 0;
  } else {
    ar.loadBinary(std::addressof(t), sizeof t);
  }
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(OutArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(InArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutArchive& ar, const cereal::SizeTag<T>& t) {
  ar.saveBinary(&t.size, sizeof t.size);
}
// A size prefix larger than the bytes left cannot be honest (every element
// takes at least one byte, except empty classes, which are capped apart).
void check_size_prefix(const Reader& r, std::uint64_t n);
// The same for n elements of `size` bytes each, read as one block: they
// must all be in the message (before the destination is sized for them).
void check_block_prefix(const Reader& r, std::uint64_t n, std::size_t size);
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, cereal::SizeTag<T>& t) {
  ar.loadBinary(&t.size, sizeof t.size);
  check_size_prefix(ar.reader(), static_cast<std::uint64_t>(t.size));
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

template <class T>
struct is_basic_string : std::false_type {};
template <class C, class Tr, class A>
struct is_basic_string<std::basic_string<C, Tr, A>> : std::true_type {};

// Contiguous numbers and strings: cereal's own loads, except that a large
// destination is reserved first and advised to use huge pages, so filling
// it does not fault in 4 KiB at a time (see advise_huge).
template <class Container>
void reserve_destination(Container& c, std::size_t count) {
  using T = typename Container::value_type;
  if (count * sizeof(T) < kHugeMin || c.capacity() >= count) return;
  // A string allocates one element more than its capacity (the null).
  constexpr std::size_t extra = is_basic_string<Container>::value;
  c.reserve(std::max(count, huge_friendly_size((count + extra) * sizeof(T)) / sizeof(T) - extra));
  advise_huge(c.data(), c.capacity() * sizeof(T));
}
template <class T>
std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>>
CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, std::vector<T>& v) {
  cereal::size_type n;
  ar(cereal::make_size_tag(n));
  check_block_prefix(ar.reader(), n, sizeof(T));
  reserve_destination(v, static_cast<std::size_t>(n));
  v.resize(static_cast<std::size_t>(n));
  ar(cereal::binary_data(v.data(), static_cast<std::size_t>(n) * sizeof(T)));
}
template <class C, class Tr>
std::enable_if_t<std::is_arithmetic_v<C>>
CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, std::basic_string<C, Tr>& s) {
  cereal::size_type n;
  ar(cereal::make_size_tag(n));
  check_block_prefix(ar.reader(), n, sizeof(C));
  reserve_destination(s, static_cast<std::size_t>(n));
  s.resize(static_cast<std::size_t>(n));
  ar(cereal::binary_data(s.data(), static_cast<std::size_t>(n) * sizeof(C)));
}

}  // namespace mpxx::detail::wire

CEREAL_REGISTER_ARCHIVE(mpxx::detail::wire::OutArchive)
CEREAL_REGISTER_ARCHIVE(mpxx::detail::wire::InArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(mpxx::detail::wire::InArchive, mpxx::detail::wire::OutArchive)

namespace mpxx::detail::wire {

// ----------------------------------------------------------------- traits

template <class T>
struct is_view : std::false_type {};
template <class C, class Tr>
struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N>
struct is_view<std::span<T, N>> : std::true_type {};

template <class T>
inline constexpr bool has_member_serialization_v =
    cereal::traits::has_member_serialize<T, cereal::BinaryOutputArchive>::value ||
    cereal::traits::has_member_versioned_serialize<T, cereal::BinaryOutputArchive>::value ||
    cereal::traits::has_member_save<T, cereal::BinaryOutputArchive>::value ||
    cereal::traits::has_member_versioned_save<T, cereal::BinaryOutputArchive>::value;

// Raw bytes for trivially copyable types, unless the type brings its own
// serialize()/save() member, which then wins.
template <class T>
inline constexpr bool raw_v = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> &&
                              !std::is_member_pointer_v<T> && !is_view<T>::value &&
                              !has_member_serialization_v<T>;

template <class T>
inline constexpr bool cereal_v =
    cereal::traits::is_output_serializable<T, OutArchive>::value &&
    cereal::traits::is_input_serializable<T, InArchive>::value;

// Types whose default state would cost something (a shared-memory block, a
// lock) offer a constructor taking `empty`, which decoding uses to make an
// object that load() then fills in.
struct empty_t {
  explicit constexpr empty_t() = default;
};
inline constexpr empty_t empty{};

template <class T>
inline constexpr bool decodable_v =
    std::is_default_constructible_v<T> || std::is_constructible_v<T, empty_t>;

// True when a T can cross a process boundary by value.
template <class T>
inline constexpr bool transferable_v =
    !std::is_pointer_v<T> && !is_view<T>::value && !std::is_reference_v<T> &&
    (raw_v<T> || (cereal_v<T> && decodable_v<T>));

template <class T>
constexpr void check_transferable() {
  static_assert(!std::is_pointer_v<T>,
                "mpxx: a raw pointer cannot cross a process boundary (it means nothing in "
                "another address space); pass the value itself, a std::string or a std::vector");
  static_assert(!is_view<T>::value,
                "mpxx: a view (std::string_view, std::span) cannot cross a process boundary "
                "because it does not own its data; pass a std::string or a std::vector");
  static_assert(transferable_v<T> || std::is_pointer_v<T> || is_view<T>::value,
                "mpxx: this type cannot cross a process boundary: make it trivially copyable, "
                "or give it a cereal `template <class Archive> void serialize(Archive&)` "
                "member and a default constructor");
}

// ------------------------------------------------------------------ values

template <class T>
void encode(Writer& w, const T& v) {
  check_transferable<T>();
  if constexpr (raw_v<T>) {
    w.put(std::addressof(v), sizeof(T));
  } else {
    OutArchive ar(w);
    ar(v);
  }
}

// The decoding of a received value ran out of memory (an address-space or
// memory limit): OSError ENOMEM naming the type and the message's size.
[[noreturn]] void out_of_memory_decoding(const std::string& type, std::size_t bytes);
template <class T>
std::string type_name();

template <class T>
void decode_into(Reader& r, T& out) {
  check_transferable<T>();
  if constexpr (std::is_same_v<T, bool>) {
    unsigned char b;
    r.get(&b, 1);
    if (b > 1) bad_bool(b);
    out = b != 0;
  } else if constexpr (raw_v<T>) {
    r.get(std::addressof(out), sizeof(T));
  } else {
    const std::size_t bytes = r.remaining();
    InArchive ar(r);
    try {
      ar(out);
    } catch (const cereal::Exception& e) {
      throw ProtocolError(std::string("mpxx: corrupt value: ") + e.what());
    } catch (const std::bad_alloc&) {
      out_of_memory_decoding(type_name<T>(), bytes);
    }
  }
}

template <class T>
T decode(Reader& r) {
  if constexpr (raw_v<T> && !std::is_default_constructible_v<T>) {
    alignas(T) std::byte storage[sizeof(T)];
    r.get(storage, sizeof(T));
    return *std::launder(reinterpret_cast<T*>(storage));
  } else if constexpr (std::is_constructible_v<T, empty_t>) {
    T v(empty);
    decode_into(r, v);
    return v;
  } else {
    T v{};
    decode_into(r, v);
    return v;
  }
}

// A 64-bit tag for a type (FNV-1a of its mangled name): both ends of one
// binary, or of two builds of the same program, agree on it.
std::uint64_t type_tag_of(const char* mangled) noexcept;
template <class T>
std::uint64_t type_tag() noexcept {
  static const std::uint64_t tag = type_tag_of(typeid(T).name());
  return tag;
}
// Demangled, readable name of a type, for messages.
std::string demangle(const char* mangled);
template <class T>
std::string type_name() {
  return demangle(typeid(T).name());
}

// Value with its type tag in front; decode_tagged checks the tag, so a
// receiver that expects a different type gets a clear error, not garbage.
template <class T>
void encode_tagged(Writer& w, const T& v) {
  w.pod(type_tag<T>());
  encode(w, v);
}
[[noreturn]] void type_mismatch(std::uint64_t got, std::uint64_t want, const std::string& want_name);
template <class T>
T decode_tagged(Reader& r) {
  std::uint64_t got = r.pod<std::uint64_t>();
  if (got != type_tag<T>()) type_mismatch(got, type_tag<T>(), type_name<T>());
  return decode<T>(r);
}

}  // namespace mpxx::detail::wire

namespace mpxx::detail {
// Values whose large blocks a Writer may reference instead of copying
// (Writer::reference_large_blocks): vectors of numbers and strings, whose
// data is saved as one block from the value's own memory and whose
// encoding runs no user code (a user's save() may encode a temporary that
// is gone before the message is sent).
template <class T>
struct by_reference_ok : std::false_type {};
template <class A, class Alloc>
struct by_reference_ok<std::vector<A, Alloc>>
    : std::bool_constant<std::is_arithmetic_v<A> && !std::is_same_v<A, bool>> {};
template <class C, class Tr, class Alloc>
struct by_reference_ok<std::basic_string<C, Tr, Alloc>> : std::is_arithmetic<C> {};
}  // namespace mpxx::detail
