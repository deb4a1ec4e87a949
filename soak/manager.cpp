#include "soak.hpp"
namespace soak {
std::vector<Workload> manager_workloads() { return {}; }
}  // namespace soak
