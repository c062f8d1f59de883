// DurableQueue: tasks that survive the head (Celery's side of Corral): submission, runs, results
// and their waiters. Its parts with one job each: QueueDispatcher (queues, their limits and
// Dispatch), ScheduleBook (cron and `every` schedules), CanvasLinks (chains and chords).
//
// A durable task is stored (Store, through the GroupCommitter: fsync before the acknowledgement,
// shared among concurrent submitters) before its submitter hears back. Then it runs through the
// same TaskManager as every task, as a run named "<id>#<n>" of a function the node's workers
// registered by name ("module:qualname"), placed only on nodes that registered it. Its end is
// stored (SUCCESS with the result, FAILURE with the traceback and the pickled exception, REVOKED),
// or, if the function raised and retries are left, it is stored as RETRY with the time of its next
// run (the countdown the run asked for, else exponential backoff with jitter). A task submitted
// with max_retries -1 (the Celery facade's) retries only when a run asks, as often as it asks. A head that starts loads every unfinished task and runs it again (at-least-once);
// runs that agents still hold from before the restart are adopted instead (TaskSpec.resubmitted),
// launched at once, ahead of their queue's limits.
//
// A task may name a function no worker registered yet (Celery queues such a task too): it waits,
// with a note saying so, and runs only on nodes whose workers registered that name themselves, so
// a name can never reach code a worker did not offer. Options::strict_task_names refuses unknown
// names instead (before anything is stored) for operators who want a typo to fail at once.
//
// A running task may report a state of its own and a value (Celery's update_state): kept in
// memory while the run lasts, shown by Get and List.
//
// durable_queue.cc holds submission, runs and their ends, queues and the tick; durable_results.cc
// reading results (Get, and its waiters), forgetting them and keeping values.
//
// Finished tasks (and their results) are kept for the result TTL, then removed in batches of 500
// (at most one batch every few seconds, more while there is a backlog), and the write-ahead log is
// checkpointed after each batch: the store does not grow without bound. io thread only; store work
// happens on the committer's thread and comes back through the io thread.
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

#include "corral/client.pb.h"
#include "corral/head/canvas_links.h"
#include "corral/head/io_guard.h"
#include "corral/head/node_registry.h"
#include "corral/head/queue_dispatcher.h"
#include "corral/head/schedule_book.h"
#include "corral/head/task_manager.h"
#include "corral/store/group_commit.h"

namespace corral::head {

class DurableQueue {
 public:
  using Reply = std::function<void(proto::Reply)>;

  struct Options {
    int64_t result_ttl_s = 7 * 86400;  // finished tasks are kept this long
    bool strict_task_names = false;    // refuse functions no worker registered (else they wait)
  };

  DurableQueue(boost::asio::io_context& io, TaskManager& tasks, NodeRegistry& nodes,
               std::unique_ptr<store::Store> store, const Clock& clock, Options options);
  ~DurableQueue();

  // Loads the known names, schedules and unfinished tasks (a head that starts) and queues them.
  Status Start();
  void Submit(const proto::DurableSubmit& request, Reply reply);
  void Get(const proto::DurableGet& request, Reply reply);
  // `with_args`: small JSON arguments come with each task (for a client that may submit).
  void List(const proto::DurableList& request, bool with_args, Reply reply);
  // Removes a finished task and its result (Celery's forget()); one not finished is refused.
  void Forget(const proto::DurableGet& request, Reply reply);
  // Keeps a value by id as a finished task (JSON only).
  void StoreValue(const proto::DurableStore& request, Reply reply);
  // A running task's own state and meta; `worker_node` (empty for an admin) must be running it.
  void Progress(const proto::DurableProgress& request, const std::string& worker_node, Reply reply);
  // Revokes: a task not started never runs; a running one is stopped (force) and recorded REVOKED.
  void Cancel(const proto::DurableGet& request, Reply reply);
  // Schedules (cron or every N seconds): add, list, pause, resume, remove, run now, history.
  void Schedule(const proto::ScheduleRequest& request, Reply reply);
  // Queues: list them with their counts, or change a queue's settings (stored).
  void Queues(const proto::QueueRequest& request, Reply reply);
  // Launches runs that are due and answers waiters whose time is up. Called every tick.
  void Tick();
  void FillCounters(std::map<std::string, int64_t>* counters) const;
  // For /metrics.
  const QueueDispatcher& queues() const { return queues_; }
  const ScheduleBook& schedules() const { return schedules_; }
  const store::GroupCommitter& committer() const { return *committer_; }
  // Unfinished durable tasks not ready yet (a future eta, a retry's countdown, waiting for a worker).
  int64_t waiting() const { return static_cast<int64_t>(due_.size()); }
  // The functions of tasks that wait for a node that registers them (at most 20).
  std::vector<std::string> WaitingForWorkers() const;
  // Whether some node's workers registered `function`, or a stored task or schedule names it
  // (accepted before a restart: still accepted before its agents are back).
  bool Registered(const std::string& function);
  // Whether a node connected now registered `function`.
  bool LiveRegistered(const std::string& function) const;

 private:
  struct Active {
    store::DurableTask task;
    bool running = false;   // a run is in the TaskManager
    bool loaded = false;    // from the store at start: a run may still be held by an agent
    bool revoke = false;    // revoked while its end was on the way: that end is recorded as REVOKED
    bool restarted = false; // this run started again after a head restart lost the one before
    uint64_t ready_seq = 0; // in its queue's ready set under this number; 0: not
    std::string progress_state = {};  // the running run's own state (update_state), shown while it runs
    std::string progress_meta = {};
    std::string progress_format = {};
    std::string parked = {};     // waits outside its queue for a node that registers this function
    uint32_t changes = 0;        // changes of state a reader can wait for (Changed)
  };
  struct Waiter {
    Reply reply;
    Nanos deadline;
    bool on_change = false;  // also answered at its next change of state (Changed)
  };

  // Puts a task whose time has come into its queue's ready set (or ends it if it expired).
  void MakeReady(const std::string& id);
  void Unready(Active& a);
  // Puts parked tasks whose function a node now registered into their queues. Every tick.
  void Unpark();
  // Expired before it started: recorded REVOKED (true).
  bool Expired(Active& a);
  // Starts a run of the task; false if it did not start.
  bool Launch(const std::string& id);
  // Removes finished tasks older than the result TTL, a batch at a time, and checkpoints the WAL.
  void Purge();
  // kInvalidArgument when `function` is not "module:qualname", or (strict_task_names) no worker
  // registered it.
  Status ValidateFunction(const std::string& function);
  // Why a task not started waits, if for something other than its eta ("" if not).
  std::string WaitNote(const Active& a);
  void OnRunFinished(const std::string& run_id, const proto::ObjectValue& value);
  // Applies `update` to the task in memory, then writes it (Write).
  void Record(store::TaskUpdate update);
  // Stores `update`; a final one then answers the waiters and forgets the task; a failed write is
  // tried again next tick.
  void Write(store::TaskUpdate update);
  proto::DurableTaskInfo Info(const store::DurableTask& t) const;
  // Info of a task in memory (STARTED while a run is in flight).
  proto::DurableTaskInfo LiveInfo(const Active& a);
  void Answer(const std::string& id, const proto::DurableTaskInfo& info);
  // Answers the waiters of `id` that wait for any change (on_change): it started, was set to retry,
  // or reported a state of its own.
  void Changed(const std::string& id);
  // Keeps the latest finished tasks (10,000, 64 MiB of results at most) to answer Get from memory.
  void Remember(proto::DurableTaskInfo info);
  void Unremember(const std::string& id);
  void AnswerExpiredWaiters();

  TaskManager& tasks_;
  NodeRegistry& nodes_;
  const Clock& clock_;
  std::unique_ptr<store::GroupCommitter> committer_;  // joined first in the destructor
  std::unordered_map<std::string, Active> active_;             // unfinished, by id
  std::multimap<int64_t, std::string> due_;                    // wall-clock eta -> id, not yet launched
  std::unordered_map<std::string, std::vector<Waiter>> waiters_;
  std::map<std::string, int64_t> counters_;
  int64_t queues_pruned_ns_ = 0;                               // wall clock of the last Prune
  int64_t result_ttl_ns_;
  bool strict_task_names_;
  Nanos next_purge_ = 0;
  bool purging_ = false;
  // Names accepted before (stored tasks and schedules name them): still accepted after a restart,
  // before the agents that registered them are back.
  std::set<std::string> known_functions_;
  std::map<std::string, std::vector<std::string>> parked_;  // function no live node registered -> task ids
  std::unordered_map<std::string, proto::DurableTaskInfo> recent_;  // finished lately, by id
  std::deque<std::string> recent_order_;                             // oldest first
  size_t recent_bytes_ = 0;
  std::vector<store::TaskUpdate> failed_updates_;  // writes the store refused: tried again every tick
  QueueDispatcher queues_;
  ScheduleBook schedules_;
  CanvasLinks canvas_;
  IoGuard guard_;  // last: goes first
};

}  // namespace corral::head
