#include "corral/head/task_metrics.h"

namespace corral::head {

TaskSeries& TaskMetrics::For(std::string_view function, std::string_view queue) {
  std::pair<std::string, std::string> key(functions_.Admit(function), queues_.Admit(queue));
  return series_[std::move(key)];
}

void TaskMetrics::Render(MetricsText& out) const {
  struct Counter {
    const char* name;
    const char* help;
    int64_t TaskSeries::*field;
  };
  static constexpr Counter kCounters[] = {
      {"corral_tasks_submitted_total", "Tasks submitted, by function and queue.", &TaskSeries::submitted},
      {"corral_tasks_started_total", "Task attempts sent to a node to run.", &TaskSeries::started},
      {"corral_tasks_finished_total", "Tasks that finished successfully.", &TaskSeries::succeeded},
      {"corral_tasks_failed_total", "Tasks that ended with an error (after their retries).", &TaskSeries::failed},
      {"corral_tasks_cancelled_total", "Tasks cancelled or revoked.", &TaskSeries::cancelled},
      {"corral_tasks_retried_total", "Task attempts that failed and were run again.", &TaskSeries::retried},
  };
  for (const Counter& c : kCounters) {
    out.Family(c.name, "counter", c.help);
    for (const auto& [key, s] : series_)
      out.Sample(c.name, {{"function", key.first}, {"queue", key.second}}, static_cast<double>(s.*c.field));
  }
  out.Family("corral_task_queue_wait_seconds", "histogram",
             "Time from submission (or a retry) until the task was sent to a node.");
  for (const auto& [key, s] : series_)
    out.Histogram("corral_task_queue_wait_seconds", {{"function", key.first}, {"queue", key.second}}, s.wait);
  out.Family("corral_task_duration_seconds", "histogram", "Time from being sent to a node until the task finished.");
  for (const auto& [key, s] : series_)
    out.Histogram("corral_task_duration_seconds", {{"function", key.first}, {"queue", key.second}}, s.duration);
}

}  // namespace corral::head
