// TaskLogs: where each task's output lies in this node's log files, so that `corral logs TASK_ID`
// and the dashboard find it by the task's id, never by a path a client names.
//
// Workers' output goes line by line to logs/worker-<id>.log (WorkerProcesses). The worker starts
// each task's output on each stream with a marker line naming the task (python/corral/
// _task_output.py), so the agent knows whose a line is even when the previous task's last lines
// were still in the pipe; Append notes where each line went. A task's output is its lines'
// byte ranges in that file, in order (few ranges: consecutive lines merge). A task that prints
// nothing costs nothing here beyond its worker's "current task"; the last `keep` tasks that printed
// are remembered (in memory: an agent that restarts forgets them). io thread only (reads are small
// and from the page cache: at most 1 MiB each).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "corral/common.pb.h"

namespace corral::agent {

class TaskLogs {
 public:
  explicit TaskLogs(size_t keep = 20000) : keep_(keep) {}

  // The task id (raw bytes) a marker line names, if `line` is one (the worker writes it in hex).
  static bool ParseMarker(std::string_view line, std::string* task_id);
  // Worker `pid` started, writing its output to `path`.
  void WorkerStarted(pid_t pid, const std::string& path);
  // Task `task_id` began on worker `pid`.
  void Begin(const std::string& task_id, pid_t pid) { current_[pid].assign(task_id); }
  // A line of the task's output: `length` bytes (its newline included) at `offset` of worker `pid`'s log.
  void Append(const std::string& task_id, pid_t pid, int64_t offset, int64_t length);
  // The worker exited: its tasks' output is complete.
  void WorkerGone(pid_t pid);
  // Up to `max_bytes` of the task's output from `offset` bytes into it. A task this node has no
  // output of printed nothing (or ran here before the agent started): empty, ended unless it is
  // some worker's current task.
  proto::TaskLog Read(const std::string& task_id, uint64_t offset, uint32_t max_bytes) const;

 private:
  struct Span {
    std::shared_ptr<const std::string> path;  // its worker's log, shared by the worker's tasks
    pid_t pid = 0;
    std::vector<std::pair<int64_t, int64_t>> ranges;  // (offset, length) in the file, in order
    uint64_t length = 0;                               // sum of the ranges
  };
  size_t keep_;
  std::unordered_map<std::string, Span> spans_;  // by task id: its latest attempt here
  std::deque<std::string> order_;                // oldest first
  std::unordered_map<pid_t, std::string> current_;  // worker -> the last task that began there
  std::unordered_map<pid_t, std::shared_ptr<const std::string>> paths_;  // live workers' logs
};

}  // namespace corral::agent
