// TaskMetrics: the task table's counters and histograms for /metrics, one series per (function,
// queue). A task keeps a pointer to its series (stable: a node-based map), so counting costs no
// lookup on the hot path. At most 100 function names and 50 queue names get series of their own;
// the rest count under "other". Plain remote tasks have the queue "" (the label is then empty).
// io thread only.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "corral/base/histogram.h"
#include "corral/head/metrics_text.h"

namespace corral::head {

struct TaskSeries {
  int64_t submitted = 0;
  int64_t started = 0;    // sent to a node's agent
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t cancelled = 0;
  int64_t retried = 0;
  Histogram wait;         // submitted (or ready again for a retry) -> sent to a node, seconds
  Histogram duration;     // sent to a node -> finished, seconds
};

class TaskMetrics {
 public:
  TaskSeries& For(std::string_view function, std::string_view queue);
  void Render(MetricsText& out) const;

 private:
  std::map<std::pair<std::string, std::string>, TaskSeries> series_;
  LabelCap functions_{100};
  LabelCap queues_{50};
};

}  // namespace corral::head
