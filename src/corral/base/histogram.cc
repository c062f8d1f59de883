#include "corral/base/histogram.h"

#include <algorithm>
#include <array>

namespace corral {

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds.begin(), bounds.end()), counts_(bounds.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  counts_[i]++;
  sum_ += value;
  count_++;
}

std::span<const double> Histogram::SecondsBounds() {
  static constexpr std::array<double, 18> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1,     2.5,    5,     10,   30,    60,   300, 900, 3600};
  return kBounds;
}

}  // namespace corral
