// WorkerLink: a Python worker's connection to its agent over the agent's Unix socket.
//
// Synchronous on purpose: the worker's main thread reads its next task straight from the socket
// (NextTask, which the binding calls with the GIL released) and writes results straight to it, so
// no IO thread sits between the agent and the task and no thread hand-off is paid per task. The
// agent sends a worker nothing while it runs a task, so nobody needs to read then.
// Finish() and Blocked() may be called from any thread (writes are serialised); NextTask() from
// one thread at a time.
#pragma once

#include <deque>
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

  int fd_ = -1;
  net::FrameDecoder decoder_;
  std::string buf_;                  // bytes read and not yet decoded
  std::deque<std::string> messages_; // decoded, not yet handed out
  std::mutex write_mu_;
};

}  // namespace corral::client
