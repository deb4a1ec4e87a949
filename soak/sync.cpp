#include "soak.hpp"
namespace soak {
std::vector<Workload> sync_workloads() { return {}; }
}  // namespace soak
