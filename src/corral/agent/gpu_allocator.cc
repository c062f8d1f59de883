#include "corral/agent/gpu_allocator.h"

#include <algorithm>
#include <cmath>

namespace corral::agent {

GpuAllocator::GpuAllocator(const std::vector<int>& device_ids) {
  for (int id : device_ids) free_[id] = kWhole;
}

int64_t GpuAllocator::Units(double amount) { return static_cast<int64_t>(std::llround(amount * kWhole)); }

std::optional<std::vector<int>> GpuAllocator::Take(double amount) {
  int64_t units = Units(amount);
  if (units <= 0) return std::vector<int>();
  if (units < kWhole) {
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second >= units && (best == free_.end() || it->second < best->second)) best = it;
    if (best == free_.end()) return std::nullopt;
    best->second -= units;
    return std::vector<int>{best->first};
  }
  size_t whole = static_cast<size_t>((units + kWhole - 1) / kWhole);
  std::vector<int> out;
  for (const auto& [id, left] : free_)
    if (left == kWhole && out.size() < whole) out.push_back(id);
  if (out.size() < whole) return std::nullopt;
  for (int id : out) free_[id] = 0;
  return out;
}

void GpuAllocator::Give(const std::vector<int>& devices, double amount) {
  int64_t units = Units(amount);
  if (units <= 0) return;
  for (int id : devices) {
    auto it = free_.find(id);
    if (it == free_.end()) continue;
    it->second = std::min(kWhole, it->second + (units < kWhole ? units : kWhole));
  }
}

}  // namespace corral::agent
