// MetricsText: writes Prometheus' text exposition format (version 0.0.4) for /metrics. Each family
// is announced once (HELP, TYPE), then its samples; label values are escaped as the format asks.
// LabelCap bounds a label's distinct values: past its limit new values become "other", so a
// cluster running thousands of function names still exports a bounded number of series.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "corral/base/histogram.h"

namespace corral::head {

using MetricLabels = std::vector<std::pair<std::string_view, std::string_view>>;

class MetricsText {
 public:
  // `type`: "counter", "gauge" or "histogram".
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const MetricLabels& labels, double value);
  // name_bucket{le=...}, name_sum, name_count.
  void Histogram(std::string_view name, const MetricLabels& labels, const corral::Histogram& h);
  const std::string& text() const { return out_; }

 private:
  void Write(std::string_view name, const MetricLabels& labels, std::string_view extra_label,
             std::string_view extra_value, double value);
  std::string out_;
};

class LabelCap {
 public:
  explicit LabelCap(size_t max_values) : max_(max_values) {}
  // `value` itself while it is one of the first max_values seen, else "other".
  std::string_view Admit(std::string_view value);

 private:
  size_t max_;
  std::set<std::string, std::less<>> seen_;
};

}  // namespace corral::head
