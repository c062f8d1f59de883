#include "corral/agent/task_logs.h"

#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "corral/base/ids.h"
#include "corral/base/log.h"

namespace corral::agent {
namespace {
constexpr std::string_view kMarkerPrefix = "==== corral task ";
}  // namespace

std::string TaskLogs::Marker(const std::string& task_id, const std::string& name, uint32_t attempt) {
  return fmt::format("{}{} {} attempt {} ====", kMarkerPrefix, TaskIdText(task_id), Printable(name), attempt + 1);
}

void TaskLogs::Begin(const std::string& task_id, const std::string& path, int64_t offset, pid_t pid) {
  if (offset < 0) return;
  live_workers_.insert(pid);
  auto [it, inserted] = spans_.insert_or_assign(task_id, Span{path, offset, pid});
  if (!inserted) return;  // a new attempt of a task remembered already keeps its place in order_
  order_.push_back(task_id);
  while (order_.size() > keep_) {
    spans_.erase(order_.front());
    order_.pop_front();
  }
}

proto::TaskLog TaskLogs::Read(const std::string& task_id, uint64_t offset, uint32_t max_bytes) const {
  proto::TaskLog out;
  auto it = spans_.find(task_id);
  if (it == spans_.end()) {
    out.set_error("this node has no output of that task (it printed nothing here yet, or it ran long ago: only "
                  "the last tasks are indexed; the worker logs are under the agent's state dir, logs/)");
    return out;
  }
  const Span& span = it->second;
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(span.path.c_str(), "r"), &std::fclose);
  if (!f) {
    out.set_error(fmt::format("the worker's log file is gone ({})", span.path));
    return out;
  }
  std::string buf(std::min<uint32_t>(max_bytes, 1u << 20), '\0');
  std::fseek(f.get(), static_cast<long>(span.offset + static_cast<int64_t>(offset)), SEEK_SET);
  size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
  bool at_end = n < buf.size();
  buf.resize(n);
  // The next task's marker ends this one's output.
  size_t marker = buf.starts_with(kMarkerPrefix) ? 0 : buf.find(fmt::format("\n{}", kMarkerPrefix));
  bool ended = false;
  if (marker != std::string::npos) {
    buf.resize(marker == 0 ? 0 : marker + 1);
    ended = true;
  } else {
    size_t last = buf.rfind('\n');  // whole lines only: a line still being written waits
    buf.resize(last == std::string::npos ? 0 : last + 1);
    ended = at_end && !live_workers_.contains(span.pid);
  }
  out.set_next_offset(offset + buf.size());
  out.set_text(std::move(buf));
  out.set_ended(ended);
  return out;
}

}  // namespace corral::agent
