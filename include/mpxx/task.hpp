// mpxx/task.hpp - what may cross a process boundary.
//
// Values: anything trivially copyable (numbers, enums, structs of them,
// std::array of them) is copied as raw bytes, unless it has its own
// serialize()/save() member; anything cereal can serialize
// (std::string, containers, std::tuple/pair/optional/variant, and your own
// types with a `template <class Archive> void serialize(Archive&)` member)
// goes through cereal with a binary archive whose contiguous data is a
// single memcpy. Pointers and views are compile errors: they would mean
// nothing in the other address space.
//
//   struct Point { double x, y; };                      // crosses as 16 bytes
//   struct Job { std::string url; std::vector<int> ids;
//                template <class A> void serialize(A& a) { a(url, ids); } };
//   static_assert(mpxx::Transferable<Job>);
//
// Callables: plain functions, captureless lambdas, function objects that are
// empty or serializable, and mpxx::partial(f, bound...). They cross as a
// checked reference into the same program (see detail/callable.hpp), so the
// receiving process must run the same binary: a forked or spawned child, the
// forkserver, or the same executable on another host. A capturing lambda
// runs only in a forked child.
//
// Exceptions: one escaping a task in another process arrives as
// mpxx::RemoteError with the original type name, message and backtrace.
#pragma once

#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/codec.hpp"

namespace mpxx {

// True when values of T can be sent to another process.
template <class T>
concept Transferable = detail::wire::transferable_v<T>;

// True when f(args...) can be sent to another process and run there.
template <class F, class... A>
concept TransferableCall =
    detail::call_transferable_v<std::decay_t<F>, detail::arg_t<A>...>;

}  // namespace mpxx
