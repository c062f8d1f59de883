// TaskJournal: the head's record of recent tasks, for the dashboard and `corral logs`: the last
// `capacity` tasks submitted (10,000 by default), each with its function, queue, state, node,
// attempts, times, a summary of its arguments and, when it failed, its error with the traceback.
// Tasks older than that are forgotten here (the task table still runs them; a running one comes
// back when its next attempt starts). Durable tasks stay in the durable store as well.
//
// An entry changes in place; `version` grows with every change, so a reader (the dashboard's live
// feed) can tell whether anything changed since it last looked. Entries are numbered in order of
// submission: a task keeps its number, and updates find its entry by it in O(1), with no hashing
// (the hot path pays a deque index and an id compare). Lookups by id (a user's) scan the entries.
// io thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "corral/base/status.h"
#include "corral/head/id_key.h"

namespace corral::head {

class TaskJournal {
 public:
  enum class State : uint8_t { kWaiting, kQueued, kRunning, kRetrying, kFinished, kFailed, kCancelled };
  static const char* StateName(State s);

  struct Entry {
    IdKey id;
    const std::string* function = nullptr;  // interned (at most 1000 names; then "other")
    const std::string* queue = nullptr;
    State state = State::kQueued;
    IdKey node;                             // node id of the latest attempt (empty: none yet); in place, no allocation
    uint32_t attempts = 0;                  // attempts sent to a node
    uint32_t args_bytes = 0;                // pickled or JSON arguments
    uint32_t arg_refs = 0;                  // arguments passed by reference (ObjectRefs)
    int64_t submitted_ns = 0, started_ns = 0, ended_ns = 0;  // wall clock; 0: not yet
    std::string error;                      // failed or retrying: why (traceback included), at most 16 KiB
    uint64_t version = 0;
  };

  explicit TaskJournal(size_t capacity = 10000) : capacity_(capacity) {}

  // The entry's number (the task keeps it for the updates below). `function` and `queue`, when
  // given, are names Intern returned (no lookup); else `function_name` and `queue_name` are interned.
  uint64_t Submitted(std::string_view id, const std::string* function, std::string_view function_name,
                     std::string_view queue_name, size_t args_bytes, int arg_refs, bool waiting, int64_t now_ns);
  void Ready(uint64_t seq, std::string_view id);
  void Started(uint64_t seq, std::string_view id, std::string_view node, int64_t now_ns);
  void Retrying(uint64_t seq, std::string_view id, std::string_view why);
  void Ended(uint64_t seq, std::string_view id, State state, std::string_view error, int64_t now_ns);
  // The journal's copy of a name (at most 1000 names; then "other"): stable for its life.
  const std::string* Intern(std::string_view name);

  const Entry* Find(std::string_view id) const;
  // What a user typed: a task's hex id (ObjectRef.hex()) or a unique prefix of at least 6 hex
  // digits of one, a durable run id ("<id>#<attempt>"), or a durable task id (its latest run).
  Result<const Entry*> Resolve(std::string_view text) const;
  // Newest first, until `visit` returns false.
  void ForEachNewestFirst(const std::function<bool(const Entry&)>& visit) const;
  uint64_t version() const { return version_; }
  size_t size() const { return entries_.size(); }

 private:
  // Entry number `seq` if it is still kept and is task `id`'s; else null.
  Entry* At(uint64_t seq, std::string_view id);
  void Touch(Entry& e) { e.version = ++version_; }

  size_t capacity_;
  std::deque<Entry> entries_;  // oldest first; entries_[i] is number first_seq_ + i
  uint64_t first_seq_ = 1;
  std::set<std::string, std::less<>> names_;
  uint64_t version_ = 0;
};

}  // namespace corral::head
