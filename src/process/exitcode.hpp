// src/process/exitcode.hpp - exit codes as Python's Process reports them
// (-N for a process killed by signal N). Internal.
#pragma once

#include <string>

namespace mpxx::detail {

// The exit code for waitid's si_code / si_status.
int exitcode_from_siginfo(int code, int status) noexcept;
// "exitcode 3", "exitcode -9 (SIGKILL)": for messages.
std::string describe_exitcode(int code);

}  // namespace mpxx::detail
