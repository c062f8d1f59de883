// Store: the head's durable state behind a narrow interface.
//
// What lives here: durable tasks (the queue API, schedules' runs), their results, and schedules
// with the slots they fired. Ephemeral tasks (`remote()`) never touch it.
//
// Implementations: SqliteStore (WAL, synchronous=FULL by default: a committed write survives power
// loss) in the head's state dir, and MemoryStore for tests and for heads started without a state
// dir. One test suite (store_test.cc) runs against both; PostgreSQL is meant to join them.
//
// Every method is one transaction. Batches (Submit, Update) commit many rows at once: that is how
// the group committer (group_commit.h) shares one fsync among concurrent submitters. Not
// thread-safe: one thread (the committer's) uses a store.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "corral/base/status.h"

namespace corral::store {

enum class TaskState { kPending, kStarted, kRetry, kSuccess, kFailure, kRevoked };
const char* TaskStateName(TaskState s);  // "PENDING", "STARTED", ... as Celery names them
std::optional<TaskState> ParseTaskState(std::string_view name);
bool IsFinal(TaskState s);

struct DurableTask {
  std::string id;                 // made by the client: a resubmission carries the same id
  std::string function;           // importable path, "module:qualname"
  std::string args;               // encoded (args, kwargs)
  std::string args_format = "pickle";  // "pickle" or "json"
  std::string queue = "default";
  int priority = 0;               // higher first within a queue
  std::string idempotency_key;    // "" = none; else unique: a second submission is the same task
  int64_t eta_ns = 0;             // wall clock; 0 = now
  int64_t expires_ns = 0;         // wall clock; 0 = never
  double soft_time_limit_s = 0;
  double time_limit_s = 0;
  int max_retries = 0;
  double retry_backoff_s = 0;     // first retry delay; doubles each attempt (with jitter)
  std::string schedule;           // the schedule that fired it, or ""
  // Canvas (chains, chords): the task waits until every parent succeeded, then runs with their
  // results put before its arguments: link "chain" puts the one parent's result first, "chord" a
  // list of all parents' results, "after" nothing. A parent that fails fails it.
  std::vector<std::string> parents;
  std::string link;               // "", "chain", "chord" or "after"
  TaskState state = TaskState::kPending;
  int attempt = 0;
  int runs = 0;                   // runs started (retries, and re-executions after a lost worker or node)
  std::string result;             // encoded value (SUCCESS)
  std::string error;              // message with traceback (FAILURE, REVOKED)
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  int64_t finished_ns = 0;        // 0 until final
};

// A change of state (and what comes with it) for one task.
struct TaskUpdate {
  std::string id;
  TaskState state = TaskState::kPending;
  int attempt = 0;
  int64_t eta_ns = 0;             // for RETRY: when to run again
  std::string result;
  std::string error;
  int64_t at_ns = 0;              // when it happened (wall clock)
  int runs = 0;                   // runs started so far (the stored count only grows)
};

struct SubmitResult {
  std::string id;                 // the stored task's id: an existing one if the key matched
  bool inserted = false;          // false: this id or idempotency key was already stored
};

struct TaskFilter {
  std::optional<TaskState> state;
  std::string queue;              // "" = any
  std::string after_id;           // paging: ids greater than this
  int limit = 100;
};

struct Schedule {
  std::string name;
  std::string function;           // "module:qualname"
  std::string args;
  std::string args_format = "pickle";
  std::string cron;               // 5 fields; or empty with every_s > 0
  int64_t every_s = 0;
  std::string tz = "UTC";
  std::string misfire = "run_once";  // run_once | skip | run_all: slots missed while the head was down
  std::string queue = "default";
  int priority = 0;
  int max_retries = 0;
  bool paused = false;
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  int64_t last_slot_ns = 0;       // the latest slot fired (0: none yet)
};

// A queue's settings (a queue without a row has the defaults). Shares are by starts: under
// saturation, queues with weights 3 and 1 start tasks 3:1.
struct QueueConfig {
  std::string name;
  double weight = 1;              // share of the cluster when queues compete
  int concurrency = 0;            // at most this many of its tasks run at once; 0 = no limit
  double rate_per_s = 0;          // at most this many starts per second, cluster-wide; 0 = no limit
  std::map<std::string, std::string> labels;  // its tasks run only on nodes with these labels
  std::map<std::string, double> resources;    // and ask for these resources (default CPU=1)
  int64_t updated_ns = 0;
};

struct ScheduleFire {
  std::string name;
  int64_t slot_ns = 0;            // the slot's nominal time
  std::string task_id;
  int64_t fired_ns = 0;
  bool manual = false;            // run-now: not a slot; the schedule's last slot stays as it is
};

class Store {
 public:
  virtual ~Store() = default;

  // Stores new tasks in one transaction. A task whose id or idempotency key is already stored is
  // not stored again; its result names the existing task.
  virtual Result<std::vector<SubmitResult>> Submit(const std::vector<DurableTask>& tasks) = 0;
  // Applies state changes in one transaction. Unknown ids are skipped.
  virtual Status Update(const std::vector<TaskUpdate>& updates) = 0;
  // Both in one transaction (one fsync): new tasks first, then the state changes.
  virtual Result<std::vector<SubmitResult>> Apply(const std::vector<DurableTask>& tasks,
                                                  const std::vector<TaskUpdate>& updates) = 0;
  virtual Result<std::optional<DurableTask>> Get(const std::string& id) = 0;
  virtual Result<std::vector<DurableTask>> List(const TaskFilter& filter) = 0;
  // Everything not final, oldest first, for a head that starts: what it must run (again).
  virtual Result<std::vector<DurableTask>> Unfinished() = 0;
  // Removes up to `limit` final tasks that finished before `before_ns` (and schedule fires recorded
  // before then); returns how many tasks.
  virtual Result<int> PurgeFinished(int64_t before_ns, int limit) = 0;
  // Removes one finished task (Celery's forget()); false if there is none, or it has not finished.
  virtual Result<bool> Forget(const std::string& id) = 0;

  virtual Status PutSchedule(const Schedule& schedule) = 0;  // insert or replace by name
  virtual Result<std::optional<Schedule>> GetSchedule(const std::string& name) = 0;
  virtual Result<std::vector<Schedule>> ListSchedules() = 0;
  virtual Result<bool> DeleteSchedule(const std::string& name) = 0;  // and its history; false: no such schedule
  // Records that `fire.name` fired its slot `fire.slot_ns` and submits `task` with it, in one
  // transaction. Returns false, storing nothing, if that slot already fired: each slot fires once,
  // also across head restarts.
  virtual Result<bool> RecordFire(const ScheduleFire& fire, const DurableTask& task) = 0;
  virtual Result<std::vector<ScheduleFire>> FireHistory(const std::string& name, int limit) = 0;

  virtual Status PutQueue(const QueueConfig& queue) = 0;  // insert or replace by name
  virtual Result<std::vector<QueueConfig>> ListQueues() = 0;

  // Functions named by stored tasks and schedules (each was registered by workers when submitted).
  virtual Result<std::vector<std::string>> KnownFunctions() = 0;

  // Folds the write-ahead log into the database (SQLite); a no-op where there is none.
  virtual Status Checkpoint() = 0;
};

struct SqliteOptions {
  std::string path;               // the database file; its -wal and -shm live beside it
  bool synchronous_full = true;   // false: synchronous=NORMAL (survives a crash, not power loss)
  std::string vfs;                // SQLite VFS name; "" = the default (tests count syncs with their own)
};

// Opens (creating or migrating) the database. Refuses one written by a newer schema.
Result<std::unique_ptr<Store>> OpenSqlite(const SqliteOptions& options);
std::unique_ptr<Store> NewMemoryStore();

// The schema version this build writes.
constexpr int kSchemaVersion = 2;

}  // namespace corral::store
