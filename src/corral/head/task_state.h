// The one task state machine, shared by every task the head knows.
//
//   kWaitingDeps --deps ready--> kQueued --placed--> kDispatched --result--> kFinished
//        |                         ^  |                  |  |
//        |                         |  +---cancel-----+   |  +--worker/node died, retries left--> kQueued
//        +--dep failed/cancel------+-----------------+---+--> kFinished
//
// kDispatched means sent to an agent (running or waiting in the agent's short prefetch queue).
// A finished task never leaves kFinished. Pure functions.
#pragma once

#include <cstdint>

namespace corral::head {

enum class TaskState : uint8_t { kWaitingDeps, kQueued, kDispatched, kFinished };

const char* TaskStateName(TaskState state);
bool IsValidTransition(TaskState from, TaskState to);

}  // namespace corral::head
