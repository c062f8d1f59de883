// Histogram: how many observations fell at or below each of a fixed set of bounds, with their sum
// and count, as Prometheus histograms need them. Observe is a short scan of the bounds (about 20).
// Not thread-safe: one owner, or a copy taken under its owner's lock.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace corral {

class Histogram {
 public:
  // `bounds`: ascending upper bounds in base units (seconds, bytes); +Inf is implied.
  explicit Histogram(std::span<const double> bounds = SecondsBounds());

  void Observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  // Observations in each bucket (not cumulative); one more than bounds(): the last is above all.
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

  // 1 ms .. 1 h: task durations, queue waits, commit and schedule lags.
  static std::span<const double> SecondsBounds();

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace corral
