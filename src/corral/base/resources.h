// ResourceSet: amounts of named resources ("CPU", "GPU", "memory" in bytes, and custom names such
// as "laptop"). Amounts are fixed-point (1/10000 units) so that adding and subtracting fractional
// requests never drifts. A value type; not synchronised.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "corral/base/status.h"

namespace corral {

inline constexpr const char* kCpu = "CPU";
inline constexpr const char* kGpu = "GPU";
inline constexpr const char* kMemory = "memory";

class ResourceSet {
 public:
  ResourceSet() = default;

  void Set(const std::string& name, double amount);
  double Get(const std::string& name) const;
  bool empty() const { return units_.empty(); }

  // True if every amount in `request` is available here.
  bool Contains(const ResourceSet& request) const;
  void Add(const ResourceSet& other);
  // Subtracts; amounts may go negative (an overcommitted node), callers check Contains first.
  void Subtract(const ResourceSet& other);
  // max over resources named in `request` of (used + request) / total, where `this` is what is
  // free and `total` the node's capacity; 0 for an empty request. Used to rank nodes.
  double UtilizationAfter(const ResourceSet& request, const ResourceSet& total) const;

  const std::map<std::string, int64_t>& units() const { return units_; }
  // "CPU=2, GPU=1, memory=4.0GiB, laptop=1"
  std::string ToString() const;

  friend bool operator==(const ResourceSet&, const ResourceSet&) = default;

 private:
  std::map<std::string, int64_t> units_;  // zero amounts are not stored
};

// "4GiB", "512MiB", "1.5GB", "1000000" (bytes) -> bytes.
Result<int64_t> ParseMemory(std::string_view text);
// "zone=office,os=linux" -> {"zone": "office", "os": "linux"}.
Result<std::map<std::string, std::string>> ParseLabels(std::string_view text);
// "laptop=1,ssd=2" -> {"laptop": 1, "ssd": 2}.
Result<std::map<std::string, double>> ParseAmounts(std::string_view text);
// The inverse of both: {"zone": "office", "os": "linux"} -> "os=linux,zone=office".
std::string FormatPairs(const std::map<std::string, std::string>& pairs);
std::string FormatPairs(const std::map<std::string, double>& amounts);
// A rate as Celery writes it: "10/s", "100/m", "5/h", or a plain number per second -> per second.
Result<double> ParseRate(std::string_view text);
// 4294967296 -> "4.0GiB".
std::string FormatBytes(double bytes);

}  // namespace corral
