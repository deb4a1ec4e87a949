#include "mpxx/errors.hpp"

namespace mpxx {

OSError::OSError(int err, const std::string& what) : Error(what), code_(err) {}

RemoteError::RemoteError(std::string type_name, std::string message, std::string backtrace)
    : Error(type_name + ": " + message),
      type_(std::move(type_name)),
      message_(std::move(message)),
      backtrace_(std::move(backtrace)) {}

}  // namespace mpxx
