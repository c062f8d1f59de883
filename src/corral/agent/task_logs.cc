#include "corral/agent/task_logs.h"

#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "corral/base/ids.h"

namespace corral::agent {
namespace {
constexpr std::string_view kMarkerPrefix = "==== corral task ";
}  // namespace

bool TaskLogs::ParseMarker(std::string_view line, std::string* task_id) {
  if (!line.starts_with(kMarkerPrefix)) return false;
  std::string_view rest = line.substr(kMarkerPrefix.size());
  auto id = FromHex(rest.substr(0, rest.find(' ')));
  if (!id || id->empty()) return false;
  *task_id = std::move(*id);
  return true;
}

void TaskLogs::Begin(const std::string& task_id, const std::string& path, pid_t pid) {
  live_workers_.insert(pid);
  latest_[pid] = task_id;
  auto [it, inserted] = spans_.insert_or_assign(task_id, Span{path, pid, {}, 0});
  if (!inserted) return;  // a new attempt of a task remembered already keeps its place in order_
  order_.push_back(task_id);
  while (order_.size() > keep_) {
    spans_.erase(order_.front());
    order_.pop_front();
  }
}

void TaskLogs::Append(const std::string& task_id, int64_t offset, int64_t length) {
  auto it = spans_.find(task_id);
  if (it == spans_.end() || offset < 0 || length <= 0) return;
  auto& ranges = it->second.ranges;
  if (!ranges.empty() && ranges.back().first + ranges.back().second == offset) ranges.back().second += length;
  else ranges.emplace_back(offset, length);
  it->second.length += static_cast<uint64_t>(length);
}

proto::TaskLog TaskLogs::Read(const std::string& task_id, uint64_t offset, uint32_t max_bytes) const {
  proto::TaskLog out;
  auto it = spans_.find(task_id);
  if (it == spans_.end()) {
    out.set_error("this node has no output of that task (it ran long ago: only the last tasks are indexed; the "
                  "worker logs are under the agent's state dir, logs/)");
    return out;
  }
  const Span& span = it->second;
  if (offset > span.length) {
    out.set_error(fmt::format("offset {} is past the end of the task's output ({} bytes so far)", offset, span.length));
    return out;
  }
  std::string text;
  uint64_t want = std::min<uint64_t>({max_bytes, 1u << 20, span.length - offset});
  if (want > 0) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(span.path.c_str(), "r"), &std::fclose);
    if (!f) {
      out.set_error(fmt::format("the worker's log file is gone ({})", span.path));
      return out;
    }
    uint64_t skip = offset;
    for (const auto& [at, length] : span.ranges) {
      if (text.size() >= want) break;
      uint64_t len = static_cast<uint64_t>(length);
      if (skip >= len) {
        skip -= len;
        continue;
      }
      uint64_t take = std::min<uint64_t>(len - skip, want - text.size());
      size_t old = text.size();
      text.resize(old + take);
      if (std::fseek(f.get(), static_cast<long>(at + static_cast<int64_t>(skip)), SEEK_SET) != 0 ||
          std::fread(text.data() + old, 1, take, f.get()) != take) {
        text.resize(old);  // the file was cut short (rotated by hand): what was read stands
        break;
      }
      skip = 0;
    }
  }
  // Done: its worker exited, or went on to other tasks, and all of it was read.
  auto latest = latest_.find(span.pid);
  bool moved_on = !live_workers_.contains(span.pid) || latest == latest_.end() || latest->second != task_id;
  out.set_next_offset(offset + text.size());
  out.set_ended(moved_on && offset + text.size() == span.length);
  out.set_text(std::move(text));
  return out;
}

}  // namespace corral::agent
