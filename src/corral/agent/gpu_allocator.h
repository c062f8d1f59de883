// GpuAllocator: which of this node's GPUs a task gets. A request of k >= 1 takes k whole free
// devices (the lowest-numbered); a fraction (0 < f < 1) shares a device with other fractions, packed:
// the device with the least room left that still fits it, so four 0.25 requests fill one device
// before touching the next and whole devices stay free for whole requests. Amounts are counted in
// 1/10000 of a device, like ResourceSet, so fractions never drift. A value type; not synchronised
// (the agent's io thread owns it).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace corral::agent {

class GpuAllocator {
 public:
  GpuAllocator() = default;
  explicit GpuAllocator(const std::vector<int>& device_ids);

  // The devices for `amount` GPUs, taken; nullopt if they are not free now. 0 takes nothing.
  // Amounts above 1 count whole devices (rounded up).
  std::optional<std::vector<int>> Take(double amount);
  // Gives back what Take(amount) returned.
  void Give(const std::vector<int>& devices, double amount);

 private:
  static constexpr int64_t kWhole = 10000;
  static int64_t Units(double amount);
  std::map<int, int64_t> free_;  // device id -> units free
};

}  // namespace corral::agent
