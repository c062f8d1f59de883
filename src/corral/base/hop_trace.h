// Hop trace: where a direct actor call's time goes, process by process.
//
// Off unless the environment has CORRAL_HOP_TRACE=<dir> when a process first marks a point (the
// driver, the agent and the actor's worker inherit it from whoever starts them). Then each process
// appends (point, CLOCK_MONOTONIC ns) records to `<dir>/hops.<pid>`, a file it maps once, and
// bench/hop_trace.py lines the records of all processes up by time, call by call. The clock is the
// machine's, so records from several processes on one machine compare directly.
//
// Off, Mark costs one load and a predictable branch. On, a record is a clock read and a 16-byte
// store; past kMaxRecords a process stops recording, and a forked child records nothing. Any
// thread may call Mark.
#pragma once

#include <atomic>
#include <cstdint>

namespace corral::hop_trace {

// The points of a direct actor call, in the order a sync call passes them. A process stamps a
// message it sends just before writing it, so the step to the receiver's stamp (a hop: the write,
// the receiver's wake-up and read) is never negative, even when the receiver runs before the
// sender's write returns.
enum Point : uint32_t {
  kCallerSubmit = 1,         // driver: Client::SubmitCall entered
  kCallerWrites = 2,         // driver: writing the call to the agent's connection
  kCallerRecorded = 3,       // driver: its record handed to the head's connection
  kCallerGet = 4,            // driver: Client::GetHeld entered
  kAgentGotCall = 10,        // agent: a caller's call decoded
  kAgentWritesToWorker = 11, // agent: writing the call to the worker's connection
  kWorkerGotCall = 20,       // worker: WorkerLink::NextTask returns the call
  kWorkerFinish = 21,        // worker: WorkerLink::Finish entered (the method has returned)
  kWorkerWrites = 22,        // worker: writing the result to the agent
  kWorkerWritesToCaller = 23,  // worker: writing the result to the caller's result channel (decision 46)
  kAgentGotResult = 12,      // agent: a worker's result decoded
  kAgentWritesToCaller = 13, // agent: writing the result to the caller's connection
  kCallerGotResult = 5,      // driver: the result decoded from the agent's connection
  kCallerGetReturns = 6,     // driver: Client::GetHeld returns
};

constexpr uint64_t kMaxRecords = 1 << 20;

namespace internal {
extern std::atomic<int> state;  // 0: not looked at yet, 1: on, -1: off
void Record(Point p);
}  // namespace internal

inline void Mark(Point p) {
  if (internal::state.load(std::memory_order_relaxed) >= 0) internal::Record(p);
}

}  // namespace corral::hop_trace
