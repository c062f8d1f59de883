// Signals the agent sends its workers, and what they carry (sigqueue's value).
#pragma once

#include <csignal>

namespace corral {

// Cancel of the running task: SIGINT, its value the sequence number of the task it names.
inline int TaskCancelSignal() { return SIGINT; }

// Cancel of one of an actor's calls: a real-time signal, so that several sent at once are all
// delivered (SIGINT would merge them), its value the sequence number of the call it names.
inline int CallCancelSignal() { return SIGRTMIN + 1; }

}  // namespace corral
