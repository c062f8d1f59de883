// QueueDispatcher: the durable queues (Celery's named queues). A due task waits in its queue's
// ready set (highest priority first, then in the order it became due) until Dispatch gives it a
// slot. Dispatch keeps the runs in flight within what the connected nodes can run at once (plus
// one prefetched per node, so workers never idle between tasks), per queue (its labels,
// resources) and per function (the nodes that registered it), and within each queue's concurrency
// limit and rate limit (a token bucket, cluster-wide, 50 ms deep). Between queues with ready tasks
// it picks by stride scheduling: the queue with the least "pass" starts next and its pass grows by
// 1/weight, so under saturation weights 3:1 give starts 3:1. A queue that was idle re-enters at
// the current pass: it gets no credit for its idle time. A queue pinned to labels or resources
// runs its tasks only on nodes that have them.
//
// It knows tasks only by id and function: starting one is the `launch` callback's job (the task
// table), which reports the run's start and end back through Started and Ended.
//
// Queue settings are stored before they take effect. Queues that nobody configured and nothing
// uses are forgotten (Prune): any client can name a new queue. io thread only.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/steady_timer.hpp>

#include "corral/client.pb.h"
#include "corral/head/io_guard.h"
#include "corral/head/node_registry.h"
#include "corral/store/group_commit.h"

namespace corral::head {

class QueueDispatcher {
 public:
  using Reply = std::function<void(proto::Reply)>;
  // Starts a run of ready task `id`; false when it did not start (it expired or ended meanwhile).
  using Launch = std::function<bool(const std::string& id)>;

  QueueDispatcher(boost::asio::io_context& io, NodeRegistry& nodes, const Clock& clock,
                  store::GroupCommitter& committer, Launch launch);

  // The stored settings (a head that starts).
  void Load(std::vector<store::QueueConfig> configs);
  // Task `id` of `function` is due: it waits in its queue's ready set. Returns the number it is
  // kept under there (for Remove), never 0.
  uint64_t Add(const std::string& queue, int priority, const std::string& id, const std::string& function);
  void Remove(const std::string& queue, int priority, uint64_t seq);
  // A run in `queue` started (counted against the queue's and the function's limits), or ended.
  void Started(const std::string& queue, const std::string& function);
  void Ended(const std::string& queue, const std::string& function, bool succeeded);
  // Starts ready tasks while there are slots (see above).
  void Dispatch();
  // Lists the queues, or changes one's settings. `waiting`: per queue, unfinished tasks that are
  // neither ready nor running (the task table counts them).
  void Handle(const proto::QueueRequest& request, const std::map<std::string, int64_t>& waiting, Reply reply);
  // Forgets queues with default settings, nothing ready or running and no task in `in_use`.
  void Prune(const std::unordered_set<std::string>& in_use);
  // The settings of `queue` (defaults for one never configured).
  const store::QueueConfig& Config(const std::string& queue) { return Named(queue).config; }
  void FillCounters(std::map<std::string, int64_t>* counters) const;
  // Each queue's ready and running runs, and how long its oldest ready task has waited (metrics).
  struct Figures {
    std::string name;
    int64_t ready = 0;
    int64_t running = 0;
    double oldest_ready_s = 0;
    int64_t concurrency = 0;  // its limit (0: none)
    double weight = 1;
  };
  std::vector<Figures> QueueFigures() const;

  // Where a task of a queue with `config` may run: one CPU, the queue's resources and labels.
  static Request PlacementFor(const store::QueueConfig& config);
  // Queue and schedule names: 1 to `max` letters, digits, '_', '-' or '.'.
  static bool ValidName(const std::string& name, size_t max);

 private:
  struct Entry {
    std::string id;
    std::string function;
    Nanos ready_at = 0;  // boot time it became ready
  };
  struct Queue {
    store::QueueConfig config;
    std::map<std::pair<int, uint64_t>, Entry> ready;  // by (-priority, seq)
    int running = 0;
    double pass = 0;       // stride scheduling (see above)
    double tokens = 1;     // rate limit bucket (at most 50 ms worth, at least 1)
    Nanos tokens_at = 0;
    int64_t succeeded = 0, failed = 0;
  };

  Queue& Named(const std::string& name);
  proto::QueueSpec Describe(Queue& q, int64_t waiting);
  // Arms the timer for a rate-limited queue's next token, `after` from `now` (boot time).
  void WakeIn(Nanos now, Nanos after);
  static std::string RunningKey(const std::string& queue, const std::string& function);

  NodeRegistry& nodes_;
  const Clock& clock_;
  store::GroupCommitter& committer_;
  Launch launch_;
  std::map<std::string, Queue> queues_;                       // by name: those configured or in use
  std::unordered_map<std::string, int> running_by_function_;  // runs in flight per (queue, function)
  uint64_t next_seq_ = 1;
  double pass_now_ = 0;                                       // the pass of the latest start
  boost::asio::steady_timer wake_;                            // a rate-limited queue's next token
  bool wake_armed_ = false;
  Nanos wake_at_ = 0;                                         // boot time the armed wait ends
  int64_t forgotten_ = 0;
  IoGuard guard_;                                             // last: goes first
};

}  // namespace corral::head
