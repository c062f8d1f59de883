// DurableQueue: tasks that survive the head (Celery's side of Corral). durable_queue.cc holds
// submission, runs, results and the canvas; durable_dispatch.cc the queues; durable_schedules.cc
// the schedules.
//
// A durable task is stored (Store, through the GroupCommitter: fsync before the acknowledgement,
// shared among concurrent submitters) before its submitter hears back. Then it runs through the
// same TaskManager as every task, as a run named "<id>#<n>" of a function the node's workers
// registered by name ("module:qualname"), placed only on nodes that registered it. Its end is
// stored (SUCCESS with the result, FAILURE with the traceback, REVOKED), or, if the function raised
// and retries are left, it is stored as RETRY with the time of its next run (exponential backoff
// with jitter). A head that starts loads every unfinished task and runs it again (at-least-once);
// runs that agents still hold from before the restart are adopted instead (TaskSpec.resubmitted).
//
// By-name submission reaches only functions that workers registered: an unknown name is refused
// before anything is stored.
//
// Schedules live in the store too; each slot fires once, also across restarts (the store records
// (schedule, slot) with the task it submitted, in one transaction). Slots are wall-clock times:
// cron slots in the schedule's zone (see base/cron.h for DST), `every` slots at multiples of the
// period since the epoch. A slot is late when it is found more than 30 s after its time (the head
// was down, or the clock stepped forward); the misfire policy says what late slots do: run_once
// (default) fires the latest of them once, skip fires none, run_all fires each (at most 1000). A
// clock that steps backward fires nothing twice: slots only move forward from the last one fired.
// Slots that pass while a schedule is paused are skipped.
//
// Queues: a due task waits in its queue's ready set (highest priority first, then in the order it
// became due) until Dispatch gives it a slot. Dispatch keeps the runs in flight within what the
// connected nodes can run at once (plus one prefetched per node, so workers never idle between
// tasks), per queue (its labels, resources) and per function (the nodes that registered it), and
// within each queue's concurrency limit and rate limit (a token bucket, cluster-wide, 50 ms deep).
// After a head restart, a run an agent still holds is launched at once, ahead of the limits.
// Between queues with ready tasks it picks by stride scheduling: the queue with the least "pass"
// starts next and its pass grows by 1/weight, so under saturation weights 3:1 give starts 3:1. A
// queue that was idle re-enters at the current pass: it gets no credit for its idle time. A queue
// pinned to labels or resources runs its tasks only on nodes that have them.
//
// Canvas (chains, chords): a task stored with parents waits, PENDING, until every parent succeeded,
// then runs with their results put before its arguments; a parent that fails or is revoked fails
// it (and so on down the chain). Links live in the store: a canvas goes on without its submitter
// and across head restarts.
//
// Finished tasks (and their results) are kept for the result TTL, then removed in batches of 500
// (at most one batch every few seconds, more while there is a backlog), and the write-ahead log is
// checkpointed after each batch: the store does not grow without bound. io thread only; store work happens on the committer's thread and
// comes back through io.post.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "corral/client.pb.h"
#include "corral/head/node_registry.h"
#include "corral/head/task_manager.h"
#include "corral/store/group_commit.h"

namespace corral::head {

class DurableQueue {
 public:
  using Reply = std::function<void(proto::Reply)>;

  DurableQueue(boost::asio::io_context& io, TaskManager& tasks, NodeRegistry& nodes,
               std::unique_ptr<store::Store> store, const Clock& clock, int64_t result_ttl_s = 7 * 86400);
  ~DurableQueue();

  // Loads the known names, schedules and unfinished tasks (a head that starts) and queues them.
  Status Start();
  void Submit(const proto::DurableSubmit& request, Reply reply);
  void Get(const proto::DurableGet& request, Reply reply);
  void List(const proto::DurableList& request, Reply reply);
  // Revokes: a task not started never runs; a running one is stopped (force) and recorded REVOKED.
  void Cancel(const proto::DurableGet& request, Reply reply);
  // Schedules (cron or every N seconds): add, list, pause, resume, remove, run now, history.
  void Schedule(const proto::ScheduleRequest& request, Reply reply);
  // Queues: list them with their counts, or change a queue's settings (stored).
  void Queues(const proto::QueueRequest& request, Reply reply);
  // Launches runs that are due and answers waiters whose time is up. Called every tick.
  void Tick();
  void FillCounters(std::map<std::string, int64_t>* counters) const;
  // Whether some node's workers registered `function`.
  bool Registered(const std::string& function);

 private:
  struct Active {
    store::DurableTask task;
    bool running = false;   // a run is in the TaskManager
    bool loaded = false;    // from the store at start: a run may still be held by an agent
    bool revoke = false;    // revoked while its end was on the way: that end is recorded as REVOKED
    bool restarted = false; // this run started again after a head restart lost the one before
    uint64_t ready_seq = 0; // in its queue's ready set under this number; 0: not
    int parents_left = 0;   // canvas: parents not yet succeeded (it is not due before)
    std::map<std::string, std::pair<std::string, std::string>> parent_results = {};  // id -> (format, result)
  };
  struct QueueState {
    store::QueueConfig config;
    // (-priority, ready_seq, id): highest priority first, then the order they became due.
    std::set<std::tuple<int, uint64_t, std::string>> ready;
    int running = 0;
    double pass = 0;       // stride scheduling (see above)
    double tokens = 1;     // rate limit bucket (at most 50 ms worth, at least 1)
    Nanos tokens_at = 0;
    int64_t succeeded = 0, failed = 0;
  };
  struct Waiter {
    Reply reply;
    Nanos deadline;
  };

  // Puts a task whose time has come into its queue's ready set (or ends it if it expired).
  void MakeReady(const std::string& id);
  void Unready(Active& a);
  // Expired before it started: recorded REVOKED (true).
  bool Expired(Active& a);
  // Starts ready tasks while there are slots (see above).
  void Dispatch();
  // Forgets queues with default settings, nothing waiting or running and no task left: any client
  // can name a new queue, and Dispatch walks every one. Once a minute, from Tick.
  void PruneQueues();
  void Launch(const std::string& id);
  // Canvas: waits for the task's parents (reading from the store those not in memory).
  void LinkParents(const std::string& id);
  // A parent ended (stored): the child becomes due when all succeeded, fails when one did not.
  void ParentDone(const std::string& child, const store::DurableTask& parent);
  QueueState& QueueNamed(const std::string& name);
  Request PlacementFor(const store::QueueConfig& config) const;

  // Fires the slots of schedules that are due (misfire policy for late ones).
  void FireDue();
  void Fire(const store::Schedule& s, int64_t slot_ns, Reply reply = nullptr, bool manual = false);
  // Removes finished tasks older than the result TTL, a batch at a time, and checkpoints the WAL.
  void Purge();
  Result<int64_t> NextSlot(const store::Schedule& s, int64_t after_ns) const;
  proto::ScheduleSpec ScheduleInfo(const store::Schedule& s) const;
  std::string ValidateFunction(const std::string& function);
  void OnRunFinished(const std::string& run_id, const proto::ObjectValue& value);
  // Applies `update` to the task in memory, then writes it (Write).
  void Record(store::TaskUpdate update);
  // Stores `update`; a final one then answers the waiters and forgets the task; a failed write is
  // tried again next tick.
  void Write(store::TaskUpdate update);
  proto::DurableTaskInfo Info(const store::DurableTask& t) const;
  void Answer(const std::string& id, const proto::DurableTaskInfo& info);
  // Keeps the latest finished tasks (10,000, 64 MiB of results at most) to answer Get from memory.
  void Remember(proto::DurableTaskInfo info);
  // Runs f on the io thread later, unless this queue is gone by then.
  template <typename F>
  void OnIo(F&& f) {
    boost::asio::post(io_, [alive = alive_, f = std::forward<F>(f)]() mutable {
      if (*alive) f();
    });
  }
  // Queue and schedule names: 1 to `max` letters, digits, '_', '-' or '.'.
  static bool ValidName(const std::string& n, size_t max);

  boost::asio::io_context& io_;
  TaskManager& tasks_;
  NodeRegistry& nodes_;
  const Clock& clock_;
  std::unique_ptr<store::GroupCommitter> committer_;  // joined first in the destructor
  std::unordered_map<std::string, Active> active_;             // unfinished, by id
  std::multimap<int64_t, std::string> due_;                    // wall-clock eta -> id, not yet launched
  std::unordered_map<std::string, std::vector<Waiter>> waiters_;
  std::unordered_multimap<std::string, std::string> children_;  // canvas: parent id -> waiting child id
  std::map<std::string, int64_t> counters_;
  std::map<std::string, store::Schedule> schedules_;  // by name; changed only once the store has the change
  // Slots whose fire the store failed to record: fired again at the next tick (a fire is keyed by
  // schedule and slot, so a retry never fires a slot twice).
  std::vector<std::pair<std::string, int64_t>> unrecorded_fires_;
  std::map<std::string, QueueState> queues_;               // by name: those configured or in use
  int64_t queues_pruned_ns_ = 0;                            // wall clock of the last PruneQueues
  uint64_t next_ready_seq_ = 1;
  std::unordered_map<std::string, int> running_by_function_;  // runs in flight per (queue, function)
  static std::string RunningKey(const std::string& queue, const std::string& function);
  double pass_now_ = 0;                               // the pass of the latest start
  boost::asio::steady_timer wake_;                    // a rate-limited queue's next token
  bool wake_armed_ = false;
  Nanos wake_at_ = 0;                                 // boot time the armed wait ends
  int64_t result_ttl_ns_;
  Nanos next_purge_ = 0;
  bool purging_ = false;
  // Names accepted before (stored tasks and schedules name them): still accepted after a restart,
  // before the agents that registered them are back.
  std::set<std::string> known_functions_;
  std::unordered_map<std::string, proto::DurableTaskInfo> recent_;  // finished lately, by id
  std::deque<std::string> recent_order_;                             // oldest first
  size_t recent_bytes_ = 0;
  std::vector<store::TaskUpdate> failed_updates_;  // writes the store refused: tried again every tick
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
