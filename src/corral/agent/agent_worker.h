// Agent::Worker: what the agent knows of one worker process. Private to the agent's sources
// (agent.cc: tasks; agent_workers.cc: worker processes and their messages; agent_head.cc: the
// head link, the lease, drain).
#pragma once

#include <unistd.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "corral/agent/agent.h"
#include "corral/base/call_table.h"

namespace corral::agent {

// Workers that die before they connect, in a row, after which the node reports itself broken.
inline constexpr int kMaxStartupFailures = 3;

struct Agent::Worker {
  Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    if (results_fd >= 0) close(results_fd);
  }
  std::string id;
  pid_t pid = -1;
  std::string env_key;                    // CUDA_VISIBLE_DEVICES it was started with
  std::shared_ptr<net::Connection> conn;  // null until it connects
  bool busy = false;
  bool blocked = false;
  bool cancelled = false;
  bool keep_running = false;              // the task runs on through a partition
  Nanos hard_deadline = 0;                // CLOCK_BOOTTIME after which the worker is stopped (time limit)
  double time_limit_s = 0;
  bool time_limited = false;              // stopped for its time limit
  int64_t memory_limit = 0;               // bytes: the task's memory= request (0: none)
  std::string out_of_memory;              // non-empty: stopped for using too much memory (the report)
  std::string hand_back;                  // non-empty: stopped for this reason (drain, fencing); hand it back
  std::string task_id;
  std::string output_task_id;             // the current task, or once finished the last one (late output)
  std::string stream_task[2];             // stdout, stderr: the task the worker's last marker there named
  std::string task_name;
  uint32_t attempt = 0;
  uint32_t sent = 0;                      // tasks sent to this worker so far (it counts them too)
  uint32_t seq = 0;                       // `sent` when the current task was sent: names it in a cancel
  double cpus = 0;
  std::vector<int> gpus;                  // devices of the current task (CUDA_VISIBLE_DEVICES)
  double gpu_amount = 0;                  // what of them it holds (a fraction shares a device)
  std::string hash;                       // function of the current task
  Nanos started = 0;
  // A short task sent ahead while the current one runs (pipelining): it starts the moment the
  // current one finishes, without a round trip through the agent.
  std::optional<Pending> next;
  uint32_t next_seq = 0;
  bool next_cancelled = false;
  // An actor's worker: its creation task is the running task for the actor's life, and its calls
  // come straight through (OnActorCall) while the constructor's result is known.
  std::string actor_id;
  struct Call {
    uint32_t attempt = 0;
    uint32_t seq = 0;                     // `sent` when it was sent: names it in a cancel
    bool direct = false;                  // its caller sent it here itself (the direct path)
    bool channel = false;                 // ...and the worker may write the result to it itself
    std::weak_ptr<net::Connection> caller;  // which then gets the result first
  };
  std::map<std::string, Call> actor_calls;  // calls sent to it, not finished, by task id
  bool actor_ready = false;               // its constructor returned (told again after a reconnect)
  bool retired = false;                   // an actor ended here: killed, never given another task
  std::set<std::string> functions;        // hashes this worker was sent
  std::vector<std::string> forget;        // of those, hashes to drop: told with its next task
  std::deque<std::string> last_stderr;    // for the death report of a worker that never came up
  // Result channels (decision 46): this end of a socket pair made at spawn (the worker has the
  // other) hands it callers' result connections, numbered; those it holds now.
  int results_fd = -1;
  std::map<uint64_t, std::string> result_channels;  // number -> its caller's client id
  std::set<std::string> channel_clients;  // every caller it was handed a channel of (never forgotten)
  // Handed over with its first channel: where the worker claims the calls callers send it on their
  // channels (decision 50), which this agent never sees arrive.
  std::unique_ptr<CallTable> call_table;
  // Shared with the handlers of this worker's connection, which may run after the worker is gone:
  // cleared when it is.
  std::shared_ptr<Worker*> handle;

  // What it was doing, for a report of its end: "running <task>" or "hosting actor <class>" (an
  // actor's calls are named by the head, which knows which were in flight).
  std::string Doing() const { return (actor_id.empty() ? "running " : "hosting actor ") + task_name; }
};

// A caller on the direct call path (agent_calls.cc): one caller's calls to one actor.
struct Agent::Caller {
  std::shared_ptr<net::Connection> conn;
  std::string actor_id, client_id;
  bool greeted = false;  // its hello's ticket checked out
  uint64_t greeted_seq = 0;     // the how-manieth caller greeted here
  bool local = false;           // came on the Unix socket (a result channel may come only there)
  bool results = false;         // a result channel, about to be handed to the actor's worker
  uint64_t result_channel = 0;  // its result channel, as handed to the actor's worker (0: none)
};

}  // namespace corral::agent
