// WorkerProcesses: starts Python worker processes (`python -m corral.worker`), captures their
// stdout/stderr line by line, and reaps them. Knows nothing about tasks.
//
// Each worker is started with PR_SET_PDEATHSIG so it dies with the agent, in its own process group,
// with stdin from /dev/null and its output on pipes the agent reads. Output lines go to the
// worker's log file and to the LineHandler. Exits are reported once, with a readable reason.
// io thread only.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <utility>

#include <boost/asio.hpp>

#include "corral/base/status.h"

namespace corral::agent {

struct SpawnSpec {
  std::string python;                       // interpreter path
  std::vector<std::string> args;            // after the interpreter
  std::map<std::string, std::string> env;   // added to (and overriding) the agent's environment
  std::vector<std::string> unset_env;       // the agent's variables the worker must not see (secrets)
  std::string log_path;
  int pass_fd = -1;                         // given to the worker as its descriptor 3 (the parent keeps its own)
};

class WorkerProcesses {
 public:
  // `offset`: where the line (and its newline) was written in the worker's log file; -1 if not.
  using LineHandler = std::function<void(pid_t pid, bool is_stderr, std::string line, int64_t offset)>;
  using ExitHandler = std::function<void(pid_t pid, std::string reason)>;

  WorkerProcesses(boost::asio::io_context& io, LineHandler on_line, ExitHandler on_exit);
  ~WorkerProcesses();

  // Starts a worker; its pid, or why it could not (no file descriptors, no processes left).
  [[nodiscard]] Result<pid_t> Spawn(const SpawnSpec& spec);
  // The worker and the processes its tasks started that stayed in its process group (each worker
  // leads one): what ends a task ends what it started.
  void KillGroup(pid_t pid, int signal);
  // SIGINT carrying the sequence number of the task it is meant for (see python/corral/worker.py).
  // sigqueue()s `signal` (TaskCancelSignal or CallCancelSignal, base/signals.h) with `task_seq`.
  void Interrupt(pid_t pid, uint32_t task_seq, int signal = SIGINT);
  void KillAll(int signal);
  size_t alive() const { return procs_.size(); }

 private:
  struct Proc;
  void ReadPipe(const std::shared_ptr<Proc>& proc, bool is_stderr);
  void WaitSignal();
  void Reap();

  boost::asio::io_context& io_;
  LineHandler on_line_;
  ExitHandler on_exit_;
  boost::asio::signal_set sigchld_;
  std::map<pid_t, std::shared_ptr<Proc>> procs_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// "exited with status 3", "killed by signal 11 (SIGSEGV)"
std::string DescribeWaitStatus(int status);

}  // namespace corral::agent
