#include "corral/head/task_journal.h"

#include <algorithm>
#include <cctype>

#include "corral/base/ids.h"

namespace corral::head {
namespace {
constexpr size_t kMaxError = 16 << 10;
constexpr size_t kMaxNames = 1000;
}  // namespace

const char* TaskJournal::StateName(State s) {
  switch (s) {
    case State::kWaiting: return "waiting";
    case State::kQueued: return "queued";
    case State::kRunning: return "running";
    case State::kRetrying: return "retrying";
    case State::kFinished: return "finished";
    case State::kFailed: return "failed";
    case State::kCancelled: return "cancelled";
  }
  return "?";
}

const std::string* TaskJournal::Intern(std::string_view name) {
  if (auto it = names_.find(name); it != names_.end()) return &*it;
  if (names_.size() >= kMaxNames) return &*names_.emplace("other").first;
  return &*names_.emplace(name).first;
}

uint64_t TaskJournal::Submitted(std::string_view id, const std::string* function, std::string_view function_name,
                               std::string_view queue_name, size_t args_bytes, int arg_refs, bool waiting,
                               int64_t now_ns) {
  Entry& e = entries_.emplace_back();
  e.id = IdKey(id);
  e.function = function ? function : Intern(function_name);
  e.queue = Intern(queue_name);
  e.state = waiting ? State::kWaiting : State::kQueued;
  e.args_bytes = static_cast<uint32_t>(std::min<size_t>(args_bytes, UINT32_MAX));
  e.arg_refs = static_cast<uint32_t>(arg_refs);
  e.submitted_ns = now_ns;
  Touch(e);
  uint64_t seq = first_seq_ + entries_.size() - 1;
  while (entries_.size() > capacity_) {
    entries_.pop_front();
    first_seq_++;
  }
  return seq;
}

TaskJournal::Entry* TaskJournal::At(uint64_t seq, std::string_view id) {
  if (seq < first_seq_ || seq - first_seq_ >= entries_.size()) return nullptr;
  Entry& e = entries_[seq - first_seq_];
  return e.id.view() == id ? &e : nullptr;
}

const TaskJournal::Entry* TaskJournal::Find(std::string_view id) const {
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    if (it->id.view() == id) return &*it;
  return nullptr;
}

void TaskJournal::Ready(uint64_t seq, std::string_view id) {
  if (Entry* e = At(seq, id); e && e->state == State::kWaiting) {
    e->state = State::kQueued;
    Touch(*e);
  }
}

void TaskJournal::Started(uint64_t seq, std::string_view id, std::string_view node, int64_t now_ns) {
  Entry* e = At(seq, id);
  if (!e) return;
  e->state = State::kRunning;
  e->node = IdKey(node);
  e->attempts++;
  e->started_ns = now_ns;
  Touch(*e);
}

void TaskJournal::Retrying(uint64_t seq, std::string_view id, std::string_view why) {
  Entry* e = At(seq, id);
  if (!e) return;
  e->state = State::kRetrying;
  e->error = std::string(why.substr(0, kMaxError));
  Touch(*e);
}

void TaskJournal::Ended(uint64_t seq, std::string_view id, State state, std::string_view error, int64_t now_ns) {
  Entry* e = At(seq, id);
  if (!e) return;
  e->state = state;
  e->ended_ns = now_ns;
  if (!error.empty() || !e->error.empty()) e->error = std::string(error.substr(0, kMaxError));
  Touch(*e);
}

void TaskJournal::ForEachNewestFirst(const std::function<bool(const Entry&)>& visit) const {
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    if (!visit(*it)) return;
}

Result<const TaskJournal::Entry*> TaskJournal::Resolve(std::string_view text) const {
  if (text.empty()) return Err(Code::kInvalidArgument, "give a task id (ObjectRef.hex(), or a durable task's id)");
  if (const Entry* e = Find(text)) return e;  // a durable run id as it is
  if (auto bytes = FromHex(text))
    if (const Entry* e = Find(*bytes)) return e;
  // A durable task's id: its latest run; or a prefix of a hex id.
  const Entry* found = nullptr;
  size_t matches = 0;
  bool hex = text.size() >= 6 && std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  std::string durable_prefix = std::string(text) + "#";
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    std::string_view id = it->id.view();
    if (id.starts_with(durable_prefix)) return &*it;  // newest first: its latest run
    if (hex && TaskIdText(id).starts_with(text)) {
      if (found && found->id == it->id) continue;  // another attempt's entry of the same task
      if (++matches == 1) found = &*it;
    }
  }
  if (matches == 1) return found;
  if (matches > 1)
    return Err(MakeStatus(Code::kInvalidArgument, "'{}' is the start of {} task ids; give more of it", text, matches));
  return Err(MakeStatus(Code::kNotFound,
             "no task '{}' among the head's recent tasks (the last {} are kept; an older task's output is in its "
             "node's logs/worker-*.log)",
             text, capacity_));
}

}  // namespace corral::head
