// WorkerLink: a Python worker's connection to its agent over the agent's Unix socket.
//
// Synchronous on purpose: the worker's main thread reads its next task straight from the socket
// (NextTask, which the binding calls with the GIL released) and writes results straight to it, so
// no IO thread sits between the agent and the task and no thread hand-off is paid per task. The
// agent sends a worker nothing while it runs a task, so nobody needs to read then.
// Finish() and Blocked() may be called from any thread (writes are serialised); NextTask() from
// one thread at a time.
//
// Lease watchdog: the agent publishes its lease expiry (CLOCK_BOOTTIME ns) in a small file that
// the worker maps. A thread here (no GIL needed) kills the worker when a task runs past the lease,
// unless the task keeps running through partitions: so attempts stop on time even when the agent
// itself is frozen or too slow to stop them.
#pragma once

#include <atomic>
#include <deque>
#include <thread>
#include <vector>
#include <memory>
#include <mutex>
#include <string>

#include "corral/common.pb.h"
#include "corral/net/frame.h"

namespace corral::client {

struct WorkerLinkOptions {
  std::string socket_path;
  std::string worker_id;  // hex, given by the agent in the environment
  std::string token;
  std::string python_version;
  std::string cloudpickle_version;
  std::string lease_file;  // the agent's published lease; empty: no watchdog
  std::vector<std::string> task_functions;  // durable task functions this worker registered
};

class WorkerLink {
 public:
  static Result<std::unique_ptr<WorkerLink>> Connect(const WorkerLinkOptions& options);
  ~WorkerLink();

  // Waits for the next task. An error means the agent is gone: the worker should exit.
  Result<proto::ExecuteTask> NextTask();
  Status Finish(const proto::TaskFinished& finished);
  Status Blocked(const std::string& task_id, bool blocked);

 private:
  WorkerLink() = default;
  // Reads until at least one whole message is queued.
  Status ReadMessage(std::string* out);
  Status Write(const google::protobuf::MessageLite& msg);

  void StartWatchdog(const std::string& lease_file);

  int fd_ = -1;
  const int64_t* lease_ = nullptr;           // mapped from the agent's lease file
  std::atomic<bool> fence_current_{false};   // a task runs that must stop with the lease
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
  net::FrameDecoder decoder_;
  std::string buf_;                  // bytes read and not yet decoded
  std::deque<std::string> messages_; // decoded, not yet handed out
  std::mutex write_mu_;
};

}  // namespace corral::client
