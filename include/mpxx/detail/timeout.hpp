// mpxx/detail/timeout.hpp - the one rule every blocking call applies to a
// user's timeout: zero or negative polls once, a century or more (or
// duration::max()) waits forever, anything else waits at least that long.
// Internal.
#pragma once

#include <chrono>

namespace mpxx::detail {

using nanos = std::chrono::nanoseconds;
inline constexpr nanos kForever = nanos::max();

template <class Rep, class Period>
nanos to_nanos(std::chrono::duration<Rep, Period> d) {
  if (d <= std::chrono::duration<Rep, Period>::zero()) return nanos::zero();
  if (d >= std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(std::chrono::hours(24 * 365 * 100)))
    return kForever;
  return std::chrono::ceil<nanos>(d);
}
template <class Clock, class Duration>
nanos until(std::chrono::time_point<Clock, Duration> tp) {
  return to_nanos(tp - Clock::now());
}

}  // namespace mpxx::detail
