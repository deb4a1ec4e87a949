// Value and Array (mpxx/shared.hpp) are templates; this is their one
// out-of-line piece, the IndexError a shared array raises.
#include "mpxx/shared.hpp"

namespace mpxx::detail {

void index_error(std::size_t i, std::size_t n) {
  throw IndexError("mpxx: index " + std::to_string(i) + " is out of range for a shared array of " +
                   std::to_string(n) + " elements");
}

}  // namespace mpxx::detail
