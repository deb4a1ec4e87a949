// mpxx/version.hpp
#pragma once

#define MPXX_VERSION_MAJOR 0
#define MPXX_VERSION_MINOR 1
#define MPXX_VERSION_PATCH 0

namespace mpxx {
inline constexpr const char* version = "0.1.0";
}  // namespace mpxx
