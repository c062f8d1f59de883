#include "corral/head/task_state.h"

namespace corral::head {

const char* TaskStateName(TaskState state) {
  switch (state) {
    case TaskState::kWaitingDeps: return "waiting_deps";
    case TaskState::kQueued: return "queued";
    case TaskState::kDispatched: return "running";
    case TaskState::kFinished: return "finished";
  }
  return "?";
}

bool IsValidTransition(TaskState from, TaskState to) {
  switch (from) {
    case TaskState::kWaitingDeps: return to == TaskState::kQueued || to == TaskState::kFinished;
    case TaskState::kQueued: return to == TaskState::kDispatched || to == TaskState::kFinished;
    case TaskState::kDispatched: return to == TaskState::kQueued || to == TaskState::kFinished;
    case TaskState::kFinished: return false;
  }
  return false;
}

}  // namespace corral::head
