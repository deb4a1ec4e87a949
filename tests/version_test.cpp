// mpxx/version.hpp against the project's version (CMake's project(VERSION),
// passed in as MPXX_PROJECT_VERSION): the macros, the string and the
// release the build describes are the same.
#include <gtest/gtest.h>

#include <string>

#include "mpxx/version.hpp"

TEST(Version, HeaderMatchesTheProjectVersion) {
  const std::string parts = std::to_string(MPXX_VERSION_MAJOR) + "." + std::to_string(MPXX_VERSION_MINOR) + "." +
                            std::to_string(MPXX_VERSION_PATCH);
  EXPECT_EQ(parts, MPXX_PROJECT_VERSION);
  EXPECT_EQ(std::string(mpxx::version), MPXX_PROJECT_VERSION);
}
