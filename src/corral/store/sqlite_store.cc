// SqliteStore: the Store on SQLite in WAL mode.
#include <sqlite3.h>

#include <fmt/format.h>

#include <algorithm>

#include "corral/base/resources.h"
#include "corral/store/store.h"

namespace corral::store {
namespace {

// Each entry moves the schema from version i to i + 1. Never edit a released entry: add one.
const char* const kMigrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE tasks (
  id BLOB PRIMARY KEY,
  function TEXT NOT NULL,
  args BLOB NOT NULL,
  args_format TEXT NOT NULL,
  queue TEXT NOT NULL,
  priority INTEGER NOT NULL,
  idempotency_key TEXT UNIQUE,
  eta_ns INTEGER NOT NULL,
  expires_ns INTEGER NOT NULL,
  soft_time_limit_s REAL NOT NULL,
  time_limit_s REAL NOT NULL,
  max_retries INTEGER NOT NULL,
  retry_backoff_s REAL NOT NULL,
  schedule TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  result BLOB NOT NULL,
  error TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  finished_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tasks_by_state ON tasks(state, queue, id);
CREATE INDEX tasks_by_finish ON tasks(finished_ns) WHERE finished_ns > 0;
CREATE TABLE schedules (
  name TEXT PRIMARY KEY,
  function TEXT NOT NULL,
  args BLOB NOT NULL,
  args_format TEXT NOT NULL,
  cron TEXT NOT NULL,
  every_s INTEGER NOT NULL,
  tz TEXT NOT NULL,
  misfire TEXT NOT NULL,
  queue TEXT NOT NULL,
  priority INTEGER NOT NULL,
  max_retries INTEGER NOT NULL,
  paused INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  last_slot_ns INTEGER NOT NULL
);
CREATE TABLE schedule_fires (
  name TEXT NOT NULL,
  slot_ns INTEGER NOT NULL,
  task_id BLOB NOT NULL,
  fired_ns INTEGER NOT NULL,
  PRIMARY KEY (name, slot_ns)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: queue settings; canvas links between tasks
    R"sql(
CREATE TABLE queues (
  name TEXT PRIMARY KEY,
  weight REAL NOT NULL,
  concurrency INTEGER NOT NULL,
  rate_per_s REAL NOT NULL,
  labels TEXT NOT NULL,
  resources TEXT NOT NULL,
  updated_ns INTEGER NOT NULL
);
ALTER TABLE tasks ADD COLUMN parents BLOB NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN link TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

const char* kTaskColumns =
    "id, function, args, args_format, queue, priority, idempotency_key, eta_ns, expires_ns, soft_time_limit_s, "
    "time_limit_s, max_retries, retry_backoff_s, schedule, state, attempt, result, error, created_ns, updated_ns, "
    "finished_ns, parents, link, runs";

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return stmt_ != nullptr; }
  Stmt& Bind(int i, const std::string& v, bool blob = false) {
    if (blob) sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    else sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindNullIfEmpty(int i, const std::string& v) {
    if (v.empty()) sqlite3_bind_null(stmt_, i);
    else Bind(i, v);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, double v) {
    sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  int Step() { return sqlite3_step(stmt_); }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string Text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const { return sqlite3_column_double(stmt_, col); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

// Parent ids (fixed-size binary ids, but any length is kept): each prefixed by one length byte.
std::string JoinIds(const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) {
    out.push_back(static_cast<char>(std::min<size_t>(id.size(), 255)));
    out.append(id, 0, 255);
  }
  return out;
}

std::vector<std::string> SplitIds(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = static_cast<unsigned char>(s[i]);
    out.push_back(s.substr(i + 1, n));
    i += 1 + n;
  }
  return out;
}

DurableTask ReadTask(const Stmt& s) {
  DurableTask t;
  t.id = s.Text(0);
  t.function = s.Text(1);
  t.args = s.Text(2);
  t.args_format = s.Text(3);
  t.queue = s.Text(4);
  t.priority = static_cast<int>(s.Int(5));
  t.idempotency_key = s.Text(6);
  t.eta_ns = s.Int(7);
  t.expires_ns = s.Int(8);
  t.soft_time_limit_s = s.Real(9);
  t.time_limit_s = s.Real(10);
  t.max_retries = static_cast<int>(s.Int(11));
  t.retry_backoff_s = s.Real(12);
  t.schedule = s.Text(13);
  t.state = static_cast<TaskState>(s.Int(14));
  t.attempt = static_cast<int>(s.Int(15));
  t.result = s.Text(16);
  t.error = s.Text(17);
  t.created_ns = s.Int(18);
  t.updated_ns = s.Int(19);
  t.finished_ns = s.Int(20);
  t.parents = SplitIds(s.Text(21));
  t.link = s.Text(22);
  t.runs = static_cast<int>(s.Int(23));
  return t;
}

Schedule ReadSchedule(const Stmt& s) {
  Schedule sc;
  sc.name = s.Text(0);
  sc.function = s.Text(1);
  sc.args = s.Text(2);
  sc.args_format = s.Text(3);
  sc.cron = s.Text(4);
  sc.every_s = s.Int(5);
  sc.tz = s.Text(6);
  sc.misfire = s.Text(7);
  sc.queue = s.Text(8);
  sc.priority = static_cast<int>(s.Int(9));
  sc.max_retries = static_cast<int>(s.Int(10));
  sc.paused = s.Int(11) != 0;
  sc.created_ns = s.Int(12);
  sc.updated_ns = s.Int(13);
  sc.last_slot_ns = s.Int(14);
  return sc;
}

class SqliteStore final : public Store {
 public:
  ~SqliteStore() override {
    if (db_) sqlite3_close_v2(db_);
  }

  Status Open(const SqliteOptions& o) {
    path_ = o.path;
    if (int rc = sqlite3_open_v2(o.path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 o.vfs.empty() ? nullptr : o.vfs.c_str());
        rc != SQLITE_OK)
      return Status(Code::kUnavailable, fmt::format("cannot open the store {}: {}", o.path, sqlite3_errstr(rc)));
    sqlite3_busy_timeout(db_, 5000);
    CORRAL_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    CORRAL_RETURN_IF_ERROR(Exec(o.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
    CORRAL_RETURN_IF_ERROR(Exec("PRAGMA foreign_keys=ON"));
    return Migrate();
  }

  Result<std::vector<SubmitResult>> Submit(const std::vector<DurableTask>& tasks) override { return Apply(tasks, {}); }

  Status Update(const std::vector<TaskUpdate>& updates) override {
    auto r = Apply({}, updates);
    return r ? Status::Ok() : r.error();
  }

  Result<std::vector<SubmitResult>> Apply(const std::vector<DurableTask>& tasks,
                                          const std::vector<TaskUpdate>& updates) override {
    CORRAL_RETURN_IF_ERROR_R(Begin());
    auto out = InsertAll(tasks);
    Status s = out ? UpdateAll(updates) : out.error();
    if (!s.ok()) {
      Rollback();
      return Err(s);
    }
    CORRAL_RETURN_IF_ERROR_R(Commit());
    return out;
  }

  Result<std::optional<DurableTask>> Get(const std::string& id) override {
    Stmt st(db_, fmt::format("SELECT {} FROM tasks WHERE id = ?", kTaskColumns).c_str());
    st.Bind(1, id, true);
    int rc = st.Step();
    if (rc == SQLITE_ROW) return std::optional<DurableTask>(ReadTask(st));
    if (rc == SQLITE_DONE) return std::optional<DurableTask>();
    return Err(Error("read a task"));
  }

  Result<std::vector<DurableTask>> List(const TaskFilter& f) override {
    std::string sql = fmt::format("SELECT {} FROM tasks WHERE id > ?", kTaskColumns);
    if (f.state) sql += " AND state = ?";
    if (!f.queue.empty()) sql += " AND queue = ?";
    sql += " ORDER BY id LIMIT ?";
    Stmt st(db_, sql.c_str());
    int i = 1;
    st.Bind(i++, f.after_id, true);
    if (f.state) st.Bind(i++, static_cast<int64_t>(*f.state));
    if (!f.queue.empty()) st.Bind(i++, f.queue);
    st.Bind(i, static_cast<int64_t>(f.limit));
    return ReadTasks(st);
  }

  Result<std::vector<DurableTask>> Unfinished() override {
    Stmt st(db_, fmt::format("SELECT {} FROM tasks WHERE finished_ns = 0 ORDER BY created_ns, id", kTaskColumns).c_str());
    return ReadTasks(st);
  }

  Result<bool> Forget(const std::string& id) override {
    Stmt st(db_, "DELETE FROM tasks WHERE id = ? AND finished_ns > 0");
    st.Bind(1, id, true);
    if (st.Step() != SQLITE_DONE) return Err(Error("forget a task"));
    return sqlite3_changes(db_) > 0;
  }

  Result<int> PurgeFinished(int64_t before_ns, int limit) override {
    CORRAL_RETURN_IF_ERROR_R(Begin());
    Stmt st(db_,
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE finished_ns > 0 AND finished_ns < ? "
            "ORDER BY finished_ns LIMIT ?)");
    st.Bind(1, before_ns).Bind(2, static_cast<int64_t>(limit));
    if (st.Step() != SQLITE_DONE) {
      Status s = Error("purge finished tasks");
      Rollback();
      return Err(s);
    }
    int n = sqlite3_changes(db_);
    // Fires as old: the schedules' last slots, not these rows, keep old slots from firing again.
    Stmt fires(db_, "DELETE FROM schedule_fires WHERE fired_ns < ?");
    fires.Bind(1, before_ns);
    if (fires.Step() != SQLITE_DONE) {
      Status s = Error("purge old schedule fires");
      Rollback();
      return Err(s);
    }
    CORRAL_RETURN_IF_ERROR_R(Commit());
    return n;
  }

  Status PutSchedule(const Schedule& s) override {
    Stmt st(db_,
            "INSERT OR REPLACE INTO schedules (name, function, args, args_format, cron, every_s, tz, misfire, queue, "
            "priority, max_retries, paused, created_ns, updated_ns, last_slot_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    st.Bind(1, s.name).Bind(2, s.function).Bind(3, s.args, true).Bind(4, s.args_format).Bind(5, s.cron);
    st.Bind(6, s.every_s).Bind(7, s.tz).Bind(8, s.misfire).Bind(9, s.queue).Bind(10, static_cast<int64_t>(s.priority));
    st.Bind(11, static_cast<int64_t>(s.max_retries)).Bind(12, static_cast<int64_t>(s.paused ? 1 : 0));
    st.Bind(13, s.created_ns).Bind(14, s.updated_ns).Bind(15, s.last_slot_ns);
    return WriteOne(st, "store a schedule");
  }

  Result<std::optional<Schedule>> GetSchedule(const std::string& name) override {
    Stmt st(db_, "SELECT * FROM schedules WHERE name = ?");
    st.Bind(1, name);
    int rc = st.Step();
    if (rc == SQLITE_ROW) return std::optional<Schedule>(ReadSchedule(st));
    if (rc == SQLITE_DONE) return std::optional<Schedule>();
    return Err(Error("read a schedule"));
  }

  Result<std::vector<Schedule>> ListSchedules() override {
    Stmt st(db_, "SELECT * FROM schedules ORDER BY name");
    std::vector<Schedule> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) out.push_back(ReadSchedule(st));
    if (rc != SQLITE_DONE) return Err(Error("list schedules"));
    return out;
  }

  Status PutQueue(const QueueConfig& q) override {
    Stmt st(db_,
            "INSERT OR REPLACE INTO queues (name, weight, concurrency, rate_per_s, labels, resources, updated_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)");
    st.Bind(1, q.name).Bind(2, q.weight).Bind(3, static_cast<int64_t>(q.concurrency)).Bind(4, q.rate_per_s);
    st.Bind(5, FormatPairs(q.labels)).Bind(6, FormatPairs(q.resources)).Bind(7, q.updated_ns);
    return WriteOne(st, "store a queue");
  }

  Result<std::vector<QueueConfig>> ListQueues() override {
    Stmt st(db_, "SELECT name, weight, concurrency, rate_per_s, labels, resources, updated_ns FROM queues ORDER BY name");
    std::vector<QueueConfig> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      QueueConfig q;
      q.name = st.Text(0);
      q.weight = st.Real(1);
      q.concurrency = static_cast<int>(st.Int(2));
      q.rate_per_s = st.Real(3);
      auto labels = ParseLabels(st.Text(4));
      auto resources = ParseAmounts(st.Text(5));
      if (!labels || !resources) return Err(Error("read a queue's labels or resources"));
      q.labels = std::move(*labels);
      q.resources = std::move(*resources);
      q.updated_ns = st.Int(6);
      out.push_back(std::move(q));
    }
    if (rc != SQLITE_DONE) return Err(Error("list queues"));
    return out;
  }

  Result<bool> DeleteSchedule(const std::string& name) override {
    CORRAL_RETURN_IF_ERROR_R(Begin());
    Stmt st(db_, "DELETE FROM schedules WHERE name = ?");
    st.Bind(1, name);
    Stmt fires(db_, "DELETE FROM schedule_fires WHERE name = ?");  // a schedule re-added later starts afresh
    fires.Bind(1, name);
    if (st.Step() != SQLITE_DONE || fires.Step() != SQLITE_DONE) {
      Status s = Error("delete a schedule");
      Rollback();
      return Err(s);
    }
    bool deleted = sqlite3_changes(db_) > 0;
    CORRAL_RETURN_IF_ERROR_R(Commit());
    return deleted;
  }

  Result<bool> RecordFire(const ScheduleFire& fire, const DurableTask& task) override {
    CORRAL_RETURN_IF_ERROR_R(Begin());
    Stmt st(db_, "INSERT OR IGNORE INTO schedule_fires (name, slot_ns, task_id, fired_ns) VALUES (?, ?, ?, ?)");
    st.Bind(1, fire.name).Bind(2, fire.slot_ns).Bind(3, fire.task_id, true).Bind(4, fire.fired_ns);
    if (st.Step() != SQLITE_DONE) {
      Status s = Error("record a schedule's fire");
      Rollback();
      return Err(s);
    }
    if (sqlite3_changes(db_) == 0) {  // that slot fired already
      Rollback();
      return false;
    }
    Stmt last(db_, "UPDATE schedules SET last_slot_ns = MAX(last_slot_ns, ?) WHERE name = ?");
    last.Bind(1, fire.manual ? int64_t{0} : fire.slot_ns).Bind(2, fire.name);
    Status s = last.Step() == SQLITE_DONE ? InsertTask(task) : Error("update a schedule");
    if (!s.ok()) {
      Rollback();
      return Err(s);
    }
    CORRAL_RETURN_IF_ERROR_R(Commit());
    return true;
  }

  Result<std::vector<ScheduleFire>> FireHistory(const std::string& name, int limit) override {
    Stmt st(db_, "SELECT name, slot_ns, task_id, fired_ns FROM schedule_fires WHERE name = ? ORDER BY slot_ns DESC LIMIT ?");
    st.Bind(1, name).Bind(2, static_cast<int64_t>(limit));
    std::vector<ScheduleFire> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) out.push_back({st.Text(0), st.Int(1), st.Text(2), st.Int(3)});
    if (rc != SQLITE_DONE) return Err(Error("read a schedule's history"));
    return out;
  }

  Result<std::vector<std::string>> KnownFunctions() override {
    Stmt st(db_, "SELECT function FROM tasks UNION SELECT function FROM schedules");
    std::vector<std::string> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) out.push_back(st.Text(0));
    if (rc != SQLITE_DONE) return Err(Error("read the known functions"));
    return out;
  }

  Status Checkpoint() override {
    int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) return Error("checkpoint the write-ahead log");
    return Status::Ok();
  }

 private:
  Status Exec(const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
      Status s(Code::kInternal, fmt::format("store {}: {} (running: {:.60})", path_, msg ? msg : "?", sql));
      sqlite3_free(msg);
      return s;
    }
    return Status::Ok();
  }
  Status Error(const char* what) const {
    return Status(Code::kInternal, fmt::format("store {}: cannot {}: {}", path_, what, sqlite3_errmsg(db_)));
  }
  Status Begin() { return Exec("BEGIN IMMEDIATE"); }
  Status Commit() {
    Status s = Exec("COMMIT");
    if (!s.ok() && !sqlite3_get_autocommit(db_)) Rollback();  // never leave a transaction open (disk full...)
    return s;
  }
  void Rollback() { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  // One prepared write in its own transaction.
  Status WriteOne(Stmt& st, const char* what) {
    CORRAL_RETURN_IF_ERROR(Begin());
    if (st.Step() != SQLITE_DONE) {
      Status e = Error(what);
      Rollback();
      return e;
    }
    return Commit();
  }

  Status Migrate() {
    CORRAL_RETURN_IF_ERROR(Exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"));
    int version = 0;
    {
      Stmt st(db_, "SELECT value FROM meta WHERE key = 'schema_version'");
      if (st.Step() == SQLITE_ROW) version = std::atoi(st.Text(0).c_str());
    }
    if (version > kSchemaVersion)
      return Status(Code::kFailedPrecondition,
                    fmt::format("the store {} has schema version {}, newer than this Corral knows ({}): it was "
                                "written by a newer Corral; run that version, or start with another state dir",
                                path_, version, kSchemaVersion));
    for (int v = version; v < kSchemaVersion; ++v) {
      CORRAL_RETURN_IF_ERROR(Begin());
      Status s = Exec(kMigrations[v]);
      if (s.ok())
        s = Exec(fmt::format("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{}')", v + 1).c_str());
      if (!s.ok()) {
        Rollback();
        return s;
      }
      CORRAL_RETURN_IF_ERROR(Commit());
    }
    return Status::Ok();
  }

  Result<std::vector<SubmitResult>> InsertAll(const std::vector<DurableTask>& tasks) {
    std::vector<SubmitResult> out;
    out.reserve(tasks.size());
    if (tasks.empty()) return out;
    Stmt by_id(db_, "SELECT 1 FROM tasks WHERE id = ?");
    Stmt by_key(db_, "SELECT id FROM tasks WHERE idempotency_key = ?");
    for (const auto& t : tasks) {
      by_id.Reset();
      by_id.Bind(1, t.id, true);
      if (by_id.Step() == SQLITE_ROW) {
        out.push_back({t.id, false});
        continue;
      }
      if (!t.idempotency_key.empty()) {
        by_key.Reset();
        by_key.Bind(1, t.idempotency_key);
        if (by_key.Step() == SQLITE_ROW) {
          out.push_back({by_key.Text(0), false});
          continue;
        }
      }
      CORRAL_RETURN_IF_ERROR_R(InsertTask(t));
      out.push_back({t.id, true});
    }
    return out;
  }

  Status UpdateAll(const std::vector<TaskUpdate>& updates) {
    if (updates.empty()) return Status::Ok();
    Stmt st(db_,
            "UPDATE tasks SET state = ?, attempt = ?, eta_ns = CASE WHEN ? > 0 THEN ? ELSE eta_ns END, "
            "result = ?, error = ?, updated_ns = ?, finished_ns = ?, runs = MAX(runs, ?) WHERE id = ?");
    for (const auto& u : updates) {
      st.Reset();
      st.Bind(1, static_cast<int64_t>(u.state)).Bind(2, static_cast<int64_t>(u.attempt));
      st.Bind(3, u.eta_ns).Bind(4, u.eta_ns).Bind(5, u.result, true).Bind(6, u.error).Bind(7, u.at_ns);
      st.Bind(8, IsFinal(u.state) ? u.at_ns : int64_t{0}).Bind(9, static_cast<int64_t>(u.runs)).Bind(10, u.id, true);
      if (st.Step() != SQLITE_DONE) return Error("update a task");
    }
    return Status::Ok();
  }

  Status InsertTask(const DurableTask& t) {
    if (!insert_) {
      insert_ = std::make_unique<Stmt>(
          db_, fmt::format("INSERT INTO tasks ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           kTaskColumns)
                   .c_str());
    }
    Stmt& st = *insert_;
    st.Reset();
    st.Bind(1, t.id, true).Bind(2, t.function).Bind(3, t.args, true).Bind(4, t.args_format).Bind(5, t.queue);
    st.Bind(6, static_cast<int64_t>(t.priority)).BindNullIfEmpty(7, t.idempotency_key).Bind(8, t.eta_ns);
    st.Bind(9, t.expires_ns).Bind(10, t.soft_time_limit_s).Bind(11, t.time_limit_s);
    st.Bind(12, static_cast<int64_t>(t.max_retries)).Bind(13, t.retry_backoff_s).Bind(14, t.schedule);
    st.Bind(15, static_cast<int64_t>(t.state)).Bind(16, static_cast<int64_t>(t.attempt)).Bind(17, t.result, true);
    st.Bind(18, t.error).Bind(19, t.created_ns).Bind(20, t.updated_ns).Bind(21, t.finished_ns);
    st.Bind(22, JoinIds(t.parents), true).Bind(23, t.link).Bind(24, static_cast<int64_t>(t.runs));
    if (st.Step() != SQLITE_DONE) return Error("store a task");
    return Status::Ok();
  }

  Result<std::vector<DurableTask>> ReadTasks(Stmt& st) {
    std::vector<DurableTask> out;
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) out.push_back(ReadTask(st));
    if (rc != SQLITE_DONE) return Err(Error("read tasks"));
    return out;
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<Stmt> insert_;  // prepared once: submissions are the hot path
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqlite(const SqliteOptions& options) {
  auto store = std::make_unique<SqliteStore>();
  if (Status s = store->Open(options); !s.ok()) return Err(s);
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace corral::store
