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

void TaskLogs::WorkerStarted(pid_t pid, const std::string& path) {
  paths_[pid] = std::make_shared<const std::string>(path);
}

void TaskLogs::WorkerGone(pid_t pid) {
  paths_.erase(pid);
  current_.erase(pid);
}

void TaskLogs::Append(const std::string& task_id, pid_t pid, int64_t offset, int64_t length) {
  if (offset < 0 || length <= 0) return;
  auto it = spans_.find(task_id);
  if (it == spans_.end()) {  // its first line: remembered from now on
    auto path = paths_.find(pid);
    if (path == paths_.end()) return;
    it = spans_.emplace(task_id, Span{path->second, pid, {}, 0}).first;
    order_.push_back(task_id);
    if (order_.size() > keep_) {
      spans_.erase(order_.front());
      order_.pop_front();
    }
  }
  auto& ranges = it->second.ranges;
  if (!ranges.empty() && ranges.back().first + ranges.back().second == offset) ranges.back().second += length;
  else ranges.emplace_back(offset, length);
  it->second.length += static_cast<uint64_t>(length);
}

proto::TaskLog TaskLogs::Read(const std::string& task_id, uint64_t offset, uint32_t max_bytes) const {
  proto::TaskLog out;
  auto running = [&] {
    for (const auto& [pid, task] : current_)
      if (task == task_id) return true;
    return false;
  };
  auto it = spans_.find(task_id);
  if (it == spans_.end()) {  // it printed nothing (yet)
    if (offset > 0) out.set_error(fmt::format("offset {} is past the end of the task's output (0 bytes)", offset));
    out.set_ended(!running());
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
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(span.path->c_str(), "r"), &std::fclose);
    if (!f) {
      out.set_error(fmt::format("the worker's log file is gone ({})", *span.path));
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
  auto current = current_.find(span.pid);
  bool moved_on = current == current_.end() || current->second != task_id;
  out.set_next_offset(offset + text.size());
  out.set_ended(moved_on && offset + text.size() == span.length);
  out.set_text(std::move(text));
  return out;
}

}  // namespace corral::agent
