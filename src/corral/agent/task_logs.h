// TaskLogs: where each task's output lies in this node's log files, so that `corral logs TASK_ID`
// and the dashboard find it by the task's id, never by a path a client names.
//
// Workers' output goes line by line to logs/worker-<id>.log (WorkerProcesses). When a task begins
// on a worker, the agent writes a marker line there ("==== corral task <id> <name> attempt N ====")
// and notes the offset after it here; the task's output runs from that offset to the next marker
// (the worker's next task) or to the end of the file. The last `keep` tasks are remembered.
// io thread only (reads are small and from the page cache: a few KiB per request).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "corral/common.pb.h"

namespace corral::agent {

class TaskLogs {
 public:
  explicit TaskLogs(size_t keep = 20000) : keep_(keep) {}

  // The marker line written before a task's output.
  static std::string Marker(const std::string& task_id, const std::string& name, uint32_t attempt);
  // Task `task_id` (this attempt) begins at `offset` of `path`, the log of worker `pid`.
  void Begin(const std::string& task_id, const std::string& path, int64_t offset, pid_t pid);
  // The worker exited: its tasks' output is complete.
  void WorkerGone(pid_t pid) { live_workers_.erase(pid); }
  // Up to `max_bytes` of whole lines of the task's output from `offset` bytes into it.
  proto::TaskLog Read(const std::string& task_id, uint64_t offset, uint32_t max_bytes) const;

 private:
  struct Span {
    std::string path;
    int64_t offset = 0;
    pid_t pid = 0;
  };
  size_t keep_;
  std::unordered_map<std::string, Span> spans_;  // by task id: its latest attempt here
  std::deque<std::string> order_;                // oldest first
  std::unordered_set<pid_t> live_workers_;
};

}  // namespace corral::agent
