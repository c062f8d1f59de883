#include "corral/store/store.h"

namespace corral::store {

const char* TaskStateName(TaskState s) {
  switch (s) {
    case TaskState::kPending: return "PENDING";
    case TaskState::kStarted: return "STARTED";
    case TaskState::kRetry: return "RETRY";
    case TaskState::kSuccess: return "SUCCESS";
    case TaskState::kFailure: return "FAILURE";
    case TaskState::kRevoked: return "REVOKED";
  }
  return "?";
}

std::optional<TaskState> ParseTaskState(std::string_view name) {
  // Common spellings people type: `corral tasks --state failed`.
  static const std::pair<std::string_view, TaskState> kAliases[] = {
      {"failed", TaskState::kFailure},   {"succeeded", TaskState::kSuccess}, {"done", TaskState::kSuccess},
      {"cancelled", TaskState::kRevoked}, {"canceled", TaskState::kRevoked}, {"running", TaskState::kStarted},
      {"queued", TaskState::kPending},
  };
  for (const auto& [alias, state] : kAliases)
    if (name == alias) return state;
  for (auto s : {TaskState::kPending, TaskState::kStarted, TaskState::kRetry, TaskState::kSuccess,
                 TaskState::kFailure, TaskState::kRevoked}) {
    std::string_view n = TaskStateName(s);
    if (n.size() == name.size() &&
        std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) { return a == std::toupper(b); }))
      return s;
  }
  return std::nullopt;
}

bool IsFinal(TaskState s) {
  return s == TaskState::kSuccess || s == TaskState::kFailure || s == TaskState::kRevoked;
}

}  // namespace corral::store
