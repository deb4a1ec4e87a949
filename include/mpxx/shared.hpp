// mpxx/shared.hpp - Value, Array, RawValue, RawArray: typed shared memory.
//
//   mpxx::Value<double> num(0.0);                 // Value('d', 0.0)
//   mpxx::Array<int> arr(std::views::iota(0, 11)); // Array('i', range(11))
//   mpxx::Process p(func, num, arr);              // the child sees the same memory
//   num.value() = 3.14;                           // locked write
//   { std::scoped_lock g(num.get_lock()); num.value() += 1; }
//
// Value and Array are synchronized, as in Python: every read or write
// through value() / operator[] takes the object's RLock (recursive, so a
// block of several operations may hold it around them), and `+=` and
// friends on value() happen entirely under the lock. get_obj() gives the
// raw memory, unsynchronized. RawValue and RawArray have no lock at all.
//
// T must be trivially copyable (numbers, enums, structs of them): the bytes
// live in shared memory and are read in place by every process.
//
// Handles are cheap to copy; every copy, in any process, refers to the same
// memory, which lives while any process holds a handle (memfd: nothing to
// clean up, even after SIGKILL). An index outside the array is an
// IndexError. Passing a handle to a Process works under every start method.
#pragma once

#include <cstddef>
#include <mutex>
#include <initializer_list>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mpxx/detail/shm.hpp"
#include "mpxx/sync.hpp"

namespace mpxx {

namespace detail {
template <class T>
constexpr void check_shared_type() {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>,
                "mpxx: shared Value/Array elements must be trivially copyable and not pointers "
                "(they are read in place by other processes)");
}

template <class T>
ShmBlock shared_array_block(std::size_t n) {
  check_shared_type<T>();
  return allocate_shared(n * sizeof(T), alignof(T) < 8 ? 8 : alignof(T), "mpxx:array");
}

template <class T>
ShmBlock load_array_block(wire::InArchive& ar) {
  ShmBlock b = load_block(ar, 0);
  if (b.size % sizeof(T) != 0 || reinterpret_cast<std::uintptr_t>(b.data()) % alignof(T) != 0)
    throw ProtocolError("mpxx: received shared memory does not hold whole elements of " +
                        wire::type_name<T>());
  return b;
}

[[noreturn]] void index_error(std::size_t i, std::size_t n);

// A reference to one shared element that takes the lock for each access.
template <class T>
class LockedRef {
 public:
  LockedRef(T* p, RLock* lock) noexcept : p_(p), lock_(lock) {}
  operator T() const {
    std::scoped_lock g(*lock_);
    return *p_;
  }
  T get() const { return static_cast<T>(*this); }
  LockedRef& operator=(const T& v) {
    std::scoped_lock g(*lock_);
    *p_ = v;
    return *this;
  }
  LockedRef& operator=(const LockedRef& o) { return *this = o.get(); }
#define MPXX_LOCKED_OP(op)                \
  template <class U>                      \
  LockedRef& operator op(const U & v) {   \
    std::scoped_lock g(*lock_);           \
    *p_ op v;                             \
    return *this;                         \
  }
  MPXX_LOCKED_OP(+=)
  MPXX_LOCKED_OP(-=)
  MPXX_LOCKED_OP(*=)
  MPXX_LOCKED_OP(/=)
  MPXX_LOCKED_OP(%=)
  MPXX_LOCKED_OP(&=)
  MPXX_LOCKED_OP(|=)
  MPXX_LOCKED_OP(^=)
#undef MPXX_LOCKED_OP
  T operator++() { std::scoped_lock g(*lock_); return ++*p_; }
  T operator++(int) { std::scoped_lock g(*lock_); return (*p_)++; }
  T operator--() { std::scoped_lock g(*lock_); return --*p_; }
  T operator--(int) { std::scoped_lock g(*lock_); return (*p_)--; }

 private:
  T* p_;
  RLock* lock_;
};
}  // namespace detail

// A synchronized shared value (multiprocessing.Value).
template <class T>
class Value {
 public:
  explicit Value(T init = T{}) : Value(init, RLock()) {}
  explicit Value(detail::wire::empty_t e) noexcept : lock_(e) {}
  Value(T init, RLock lock) : lock_(std::move(lock)), block_(detail::shared_array_block<T>(1)) {
    *ptr() = init;
  }

  // value() = x; T x = value(); value() += 1 (each under the lock).
  detail::LockedRef<T> value() { return {ptr(), &lock_}; }
  T value() const {
    std::scoped_lock g(lock_);
    return *ptr();
  }
  RLock& get_lock() noexcept { return lock_; }
  // The raw shared object, unsynchronized.
  T& get_obj() noexcept { return *ptr(); }

  void save(detail::wire::OutArchive& ar) const {
    lock_.save(ar);
    detail::save_block(ar, block_);
  }
  void load(detail::wire::InArchive& ar) {
    lock_.load(ar);
    detail::ShmBlock b = detail::load_array_block<T>(ar);
    if (b.size != sizeof(T)) throw ProtocolError("mpxx: received Value has the wrong size");
    block_ = std::move(b);
  }

 private:
  T* ptr() const noexcept { return reinterpret_cast<T*>(block_.data()); }
  mutable RLock lock_;
  detail::ShmBlock block_;
};

// A synchronized shared array of fixed size (multiprocessing.Array).
template <class T>
class Array {
 public:
  explicit Array(std::size_t n = 0) : Array(n, RLock()) {}
  explicit Array(detail::wire::empty_t e) noexcept : lock_(e) {}
  Array(std::size_t n, RLock lock) : lock_(std::move(lock)), block_(detail::shared_array_block<T>(n)) {}
  Array(std::initializer_list<T> init) : Array(init.size()) {
    std::copy(init.begin(), init.end(), data());
  }
  template <std::ranges::input_range R>
    requires std::convertible_to<std::ranges::range_value_t<R>, T> &&
             (!std::same_as<std::remove_cvref_t<R>, Array>)
  explicit Array(R&& r) {
    std::vector<T> v(std::ranges::begin(r), std::ranges::end(r));
    block_ = detail::shared_array_block<T>(v.size());
    std::copy(v.begin(), v.end(), data());
  }

  std::size_t size() const noexcept { return block_.size / sizeof(T); }
  detail::LockedRef<T> operator[](std::size_t i) { return {&at_unlocked(i), &lock_}; }
  T operator[](std::size_t i) const {
    std::scoped_lock g(lock_);
    return at_unlocked(i);
  }
  // A copy of the whole array, taken under the lock.
  std::vector<T> to_vector() const {
    std::scoped_lock g(lock_);
    return std::vector<T>(data(), data() + size());
  }
  RLock& get_lock() noexcept { return lock_; }
  // The raw shared memory, unsynchronized.
  std::span<T> get_obj() noexcept { return {data(), size()}; }

  // Iteration yields locked element references (as Python's __getitem__).
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(Array* a, std::size_t i) : a_(a), i_(i) {}
    detail::LockedRef<T> operator*() const { return (*a_)[i_]; }
    iterator& operator++() { ++i_; return *this; }
    iterator operator++(int) { auto t = *this; ++i_; return t; }
    bool operator==(const iterator& o) const { return i_ == o.i_; }

   private:
    Array* a_ = nullptr;
    std::size_t i_ = 0;
  };
  iterator begin() { return {this, 0}; }
  iterator end() { return {this, size()}; }

  void save(detail::wire::OutArchive& ar) const {
    lock_.save(ar);
    detail::save_block(ar, block_);
  }
  void load(detail::wire::InArchive& ar) {
    lock_.load(ar);
    block_ = detail::load_array_block<T>(ar);
  }

 private:
  T* data() const noexcept { return reinterpret_cast<T*>(block_.data()); }
  T& at_unlocked(std::size_t i) const {
    if (i >= size()) detail::index_error(i, size());
    return data()[i];
  }
  mutable RLock lock_;
  detail::ShmBlock block_;
};

// An unsynchronized shared value (multiprocessing.RawValue).
template <class T>
class RawValue {
 public:
  explicit RawValue(T init = T{}) : block_(detail::shared_array_block<T>(1)) { value() = init; }
  explicit RawValue(detail::wire::empty_t) noexcept {}
  T& value() noexcept { return *reinterpret_cast<T*>(block_.data()); }
  const T& value() const noexcept { return *reinterpret_cast<const T*>(block_.data()); }

  void save(detail::wire::OutArchive& ar) const { detail::save_block(ar, block_); }
  void load(detail::wire::InArchive& ar) {
    detail::ShmBlock b = detail::load_array_block<T>(ar);
    if (b.size != sizeof(T)) throw ProtocolError("mpxx: received RawValue has the wrong size");
    block_ = std::move(b);
  }

 private:
  detail::ShmBlock block_;
};

// An unsynchronized shared array (multiprocessing.RawArray).
template <class T>
class RawArray {
 public:
  explicit RawArray(std::size_t n = 0) : block_(detail::shared_array_block<T>(n)) {}
  explicit RawArray(detail::wire::empty_t) noexcept {}
  RawArray(std::initializer_list<T> init) : RawArray(init.size()) {
    std::copy(init.begin(), init.end(), data());
  }
  template <std::ranges::input_range R>
    requires std::convertible_to<std::ranges::range_value_t<R>, T> &&
             (!std::same_as<std::remove_cvref_t<R>, RawArray>)
  explicit RawArray(R&& r) {
    std::vector<T> v(std::ranges::begin(r), std::ranges::end(r));
    block_ = detail::shared_array_block<T>(v.size());
    std::copy(v.begin(), v.end(), data());
  }

  std::size_t size() const noexcept { return block_.size / sizeof(T); }
  T& operator[](std::size_t i) {
    if (i >= size()) detail::index_error(i, size());
    return data()[i];
  }
  const T& operator[](std::size_t i) const {
    if (i >= size()) detail::index_error(i, size());
    return data()[i];
  }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size(); }
  std::span<T> get_obj() noexcept { return {data(), size()}; }

  void save(detail::wire::OutArchive& ar) const { detail::save_block(ar, block_); }
  void load(detail::wire::InArchive& ar) { block_ = detail::load_array_block<T>(ar); }

 private:
  T* data() const noexcept { return reinterpret_cast<T*>(block_.data()); }
  detail::ShmBlock block_;
};

}  // namespace mpxx
