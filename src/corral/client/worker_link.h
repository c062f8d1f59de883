// WorkerLink: a Python worker's connection to its agent over the agent's Unix socket.
// The worker's main thread calls NextTask() (blocking, GIL released by the binding), runs the task,
// and calls Finish(). Blocked() tells the agent that the running task waits in get(), so its CPU
// can go to other work. Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "corral/client/io_thread.h"
#include "corral/common.pb.h"
#include "corral/net/connection.h"

namespace corral::client {

struct WorkerLinkOptions {
  std::string socket_path;
  std::string worker_id;  // hex, given by the agent in the environment
  std::string token;
  std::string python_version;
  std::string cloudpickle_version;
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
  void OnMessage(std::string_view bytes);

  std::unique_ptr<IoThread> io_ = std::make_unique<IoThread>();
  std::shared_ptr<net::Connection> conn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<proto::ExecuteTask> tasks_;  // guarded by mu_
  bool welcomed_ = false;                 // guarded by mu_
  bool closed_ = false;                   // guarded by mu_
  Status closed_reason_;                  // guarded by mu_
};

}  // namespace corral::client
