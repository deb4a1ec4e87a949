#include "soak.hpp"
namespace soak {
std::vector<Workload> pool_workloads() { return {}; }
}  // namespace soak
