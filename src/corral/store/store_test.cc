// One suite, every Store: SqliteStore (on a temporary file) and MemoryStore must behave alike.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "corral/store/store.h"

namespace corral::store {
namespace {

std::string TempPath(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / ("corral-store-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto p = dir / name;
  std::filesystem::remove(p);
  std::filesystem::remove(p.string() + "-wal");
  std::filesystem::remove(p.string() + "-shm");
  return p.string();
}

struct SqliteFactory {
  static std::unique_ptr<Store> Make() {
    auto s = OpenSqlite({TempPath(::testing::UnitTest::GetInstance()->current_test_info()->name()), true, ""});
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    return std::move(*s);
  }
};
struct MemoryFactory {
  static std::unique_ptr<Store> Make() { return NewMemoryStore(); }
};

template <typename F>
class StoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> store = F::Make();
};
using Factories = ::testing::Types<SqliteFactory, MemoryFactory>;
TYPED_TEST_SUITE(StoreTest, Factories);

DurableTask Task(const std::string& id, const std::string& key = "", const std::string& queue = "default") {
  DurableTask t;
  t.id = id;
  t.function = "tasks:process_data";
  t.args = std::string("\x80\x05pickled\0bytes", 15);
  t.queue = queue;
  t.idempotency_key = key;
  t.priority = 5;
  t.eta_ns = 123;
  t.max_retries = 3;
  t.retry_backoff_s = 2.0;
  t.time_limit_s = 600;
  t.soft_time_limit_s = 540;
  t.created_ns = t.updated_ns = 1000;
  return t;
}

TYPED_TEST(StoreTest, SubmitThenGetRoundTripsEveryField) {
  auto r = this->store->Submit({Task("t1", "report-2026-11-26")});
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].inserted);
  auto got = this->store->Get("t1");
  ASSERT_TRUE(got.has_value() && got->has_value());
  const DurableTask& t = **got;
  EXPECT_EQ(t.function, "tasks:process_data");
  EXPECT_EQ(t.args, std::string("\x80\x05pickled\0bytes", 15));
  EXPECT_EQ(t.idempotency_key, "report-2026-11-26");
  EXPECT_EQ(t.priority, 5);
  EXPECT_EQ(t.eta_ns, 123);
  EXPECT_EQ(t.max_retries, 3);
  EXPECT_DOUBLE_EQ(t.retry_backoff_s, 2.0);
  EXPECT_DOUBLE_EQ(t.soft_time_limit_s, 540);
  EXPECT_EQ(t.state, TaskState::kPending);
  EXPECT_FALSE(this->store->Get("nope")->has_value());
}

TYPED_TEST(StoreTest, CanvasLinksRoundTrip) {
  DurableTask body = Task("body");
  body.parents = {std::string("a\0b", 3), "second-parent"};
  body.link = "chord";
  ASSERT_TRUE(this->store->Submit({Task("a"), body}).has_value());
  auto got = this->store->Get("body");
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ((**got).parents, body.parents);
  EXPECT_EQ((**got).link, "chord");
  EXPECT_TRUE((**this->store->Get("a")).parents.empty());
}

TYPED_TEST(StoreTest, QueueSettingsAreStoredByName) {
  QueueConfig q;
  q.name = "reports";
  q.weight = 3;
  q.concurrency = 4;
  q.rate_per_s = 0.5;
  q.labels = {{"gpu", "true"}, {"zone", "lab"}};
  q.resources = {{"GPU", 1}, {"CPU", 0.5}};
  q.updated_ns = 42;
  ASSERT_TRUE(this->store->PutQueue(q).ok());
  q.weight = 2;  // replaced, not added
  ASSERT_TRUE(this->store->PutQueue(q).ok());
  auto all = this->store->ListQueues();
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 1u);
  const QueueConfig& got = (*all)[0];
  EXPECT_EQ(got.name, "reports");
  EXPECT_DOUBLE_EQ(got.weight, 2);
  EXPECT_EQ(got.concurrency, 4);
  EXPECT_DOUBLE_EQ(got.rate_per_s, 0.5);
  EXPECT_EQ(got.labels, q.labels);
  EXPECT_EQ(got.resources, q.resources);
  EXPECT_EQ(got.updated_ns, 42);
}

TYPED_TEST(StoreTest, SameIdOrIdempotencyKeyIsTheSameTask) {
  ASSERT_TRUE(this->store->Submit({Task("t1", "k1"), Task("t2")}).has_value());
  auto r = this->store->Submit({Task("t1"), Task("t3", "k1"), Task("t4", "k2")});
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_FALSE((*r)[0].inserted);
  EXPECT_EQ((*r)[0].id, "t1");
  EXPECT_FALSE((*r)[1].inserted);
  EXPECT_EQ((*r)[1].id, "t1") << "the key names the task first stored with it";
  EXPECT_TRUE((*r)[2].inserted);
  EXPECT_FALSE(this->store->Get("t3")->has_value());
  // Within one batch too.
  auto again = this->store->Submit({Task("t5", "k3"), Task("t6", "k3")});
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE((*again)[0].inserted);
  EXPECT_FALSE((*again)[1].inserted);
  EXPECT_EQ((*again)[1].id, "t5");
}

TYPED_TEST(StoreTest, UpdatesMoveTasksToFinalStatesAndListFilters) {
  ASSERT_TRUE(this->store->Submit({Task("a"), Task("b", "", "reports"), Task("c")}).has_value());
  TaskUpdate done{"a", TaskState::kSuccess, 0, 0, "result-bytes", "", 5000};
  TaskUpdate failed{"b", TaskState::kFailure, 2, 0, "", "Traceback...\nValueError: x", 6000};
  TaskUpdate retry{"c", TaskState::kRetry, 1, 9999, "", "first try failed", 7000};
  TaskUpdate ghost{"ghost", TaskState::kSuccess, 0, 0, "", "", 1};
  ASSERT_TRUE(this->store->Update({done, failed, retry, ghost}).ok());
  auto a = **this->store->Get("a");
  EXPECT_EQ(a.state, TaskState::kSuccess);
  EXPECT_EQ(a.result, "result-bytes");
  EXPECT_EQ(a.finished_ns, 5000);
  auto b = **this->store->Get("b");
  EXPECT_EQ(b.attempt, 2);
  EXPECT_EQ(b.error, "Traceback...\nValueError: x");
  auto c = **this->store->Get("c");
  EXPECT_EQ(c.eta_ns, 9999);
  EXPECT_EQ(c.finished_ns, 0);

  auto failures = this->store->List({TaskState::kFailure, "", "", 100});
  ASSERT_TRUE(failures.has_value());
  ASSERT_EQ(failures->size(), 1u);
  EXPECT_EQ((*failures)[0].id, "b");
  auto reports = this->store->List({std::nullopt, "reports", "", 100});
  ASSERT_EQ(reports->size(), 1u);
  auto page = this->store->List({std::nullopt, "", "a", 1});
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].id, "b") << "ids after 'a', one page";
  auto unfinished = this->store->Unfinished();
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_EQ((*unfinished)[0].id, "c");
}

TYPED_TEST(StoreTest, PurgeRemovesOldFinishedTasksInBatches) {
  std::vector<DurableTask> batch;
  std::vector<TaskUpdate> updates;
  for (int i = 0; i < 10; ++i) {
    std::string id = "t" + std::to_string(i);
    batch.push_back(Task(id, "key" + std::to_string(i)));
    updates.push_back({id, TaskState::kSuccess, 0, 0, "", "", 100 + i});
  }
  batch.push_back(Task("running"));
  ASSERT_TRUE(this->store->Submit(batch).has_value());
  ASSERT_TRUE(this->store->Update(updates).ok());
  EXPECT_EQ(*this->store->PurgeFinished(105, 3), 3) << "a batch at most";
  EXPECT_EQ(*this->store->PurgeFinished(105, 100), 2) << "only those finished before the cut";
  EXPECT_EQ(*this->store->PurgeFinished(1000, 100), 5);
  ASSERT_TRUE(*this->store->RecordFire({"s", 1, "fired-task", 50}, Task("fired-task")));
  ASSERT_TRUE(this->store->PurgeFinished(60, 100).has_value());
  EXPECT_TRUE(this->store->FireHistory("s", 10)->empty()) << "old fires are removed with old tasks";
  EXPECT_TRUE(this->store->Get("running")->has_value());
  // A purged task's key is free again.
  auto r = this->store->Submit({Task("new", "key0")});
  EXPECT_TRUE((*r)[0].inserted);
  EXPECT_TRUE(this->store->Checkpoint().ok());
}

TYPED_TEST(StoreTest, ForgetRemovesOneFinishedTaskOnly) {
  ASSERT_TRUE(this->store->Submit({Task("done", "k"), Task("other"), Task("running")}).has_value());
  ASSERT_TRUE(this->store->Update({{"done", TaskState::kSuccess, 0, 0, "42", "", 100},
                                   {"other", TaskState::kFailure, 0, 0, "", "boom", 100}})
                  .ok());
  EXPECT_FALSE(*this->store->Forget("running")) << "a task that has not finished stays";
  EXPECT_TRUE(this->store->Get("running")->has_value());
  EXPECT_TRUE(*this->store->Forget("done"));
  EXPECT_FALSE(this->store->Get("done")->has_value());
  EXPECT_FALSE(*this->store->Forget("done")) << "gone already";
  EXPECT_TRUE(this->store->Get("other")->has_value()) << "only that one";
  EXPECT_TRUE((*this->store->Submit({Task("again", "k")}))[0].inserted) << "its key is free again";
}

TYPED_TEST(StoreTest, SchedulesAndEachSlotFiresOnce) {
  Schedule s;
  s.name = "daily-retraining";
  s.function = "train:train";
  s.cron = "0 2 * * *";
  s.tz = "Asia/Dhaka";
  s.misfire = "run_once";
  ASSERT_TRUE(this->store->PutSchedule(s).ok());
  auto got = this->store->GetSchedule("daily-retraining");
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ((*got)->tz, "Asia/Dhaka");
  EXPECT_EQ((*got)->cron, "0 2 * * *");

  DurableTask run = Task("run-1");
  run.schedule = "daily-retraining";
  EXPECT_TRUE(*this->store->RecordFire({"daily-retraining", 1'000, "run-1", 1'001}, run));
  EXPECT_FALSE(*this->store->RecordFire({"daily-retraining", 1'000, "run-1b", 1'002}, Task("run-1b")))
      << "the same slot never fires twice";
  EXPECT_FALSE(this->store->Get("run-1b")->has_value()) << "nothing is stored for a slot that fired";
  EXPECT_TRUE(*this->store->RecordFire({"daily-retraining", 2'000, "run-2", 2'001}, Task("run-2")));
  EXPECT_EQ((**this->store->GetSchedule("daily-retraining")).last_slot_ns, 2'000);
  auto history = this->store->FireHistory("daily-retraining", 10);
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ((*history)[0].slot_ns, 2'000) << "newest first";
  EXPECT_EQ((*history)[1].task_id, "run-1");
  EXPECT_EQ(this->store->ListSchedules()->size(), 1u);
  auto known = this->store->KnownFunctions();
  ASSERT_TRUE(known.has_value());
  EXPECT_EQ(std::set<std::string>(known->begin(), known->end()),
            (std::set<std::string>{"tasks:process_data", "train:train"}));
  EXPECT_TRUE(*this->store->DeleteSchedule("daily-retraining"));
  EXPECT_FALSE(*this->store->DeleteSchedule("daily-retraining"));
  EXPECT_TRUE(this->store->FireHistory("daily-retraining", 10)->empty()) << "its history goes with it";
}

TEST(SqliteStore, SurvivesReopeningAndRefusesANewerSchema) {
  std::string path = TempPath("reopen.db");
  {
    auto s = OpenSqlite({path, true, ""});
    ASSERT_TRUE(s.has_value());
    ASSERT_TRUE((*s)->Submit({Task("kept")}).has_value());
  }
  {
    auto s = OpenSqlite({path, true, ""});
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE((*s)->Get("kept")->has_value());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto s = OpenSqlite({path, true, ""});
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("newer Corral"), std::string::npos) << s.error().message();
}

TEST(SqliteStore, MigratesAVersion1StoreKeepingItsTasks) {
  std::string path = TempPath("v1.db");
  {
    auto s = OpenSqlite({path, true, ""});
    ASSERT_TRUE(s.has_value());
    ASSERT_TRUE((*s)->Submit({Task("from-v1")}).has_value());
  }
  // Back to what version 1 wrote: no queues table, no link columns.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE queues; ALTER TABLE tasks DROP COLUMN parents; ALTER TABLE tasks DROP COLUMN link; "
                         "ALTER TABLE tasks DROP COLUMN runs; "
                         "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto s = OpenSqlite({path, true, ""});
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  auto t = (*s)->Get("from-v1");
  ASSERT_TRUE(t.has_value() && t->has_value());
  EXPECT_TRUE((**t).parents.empty());
  QueueConfig q;
  q.name = "after-migration";
  EXPECT_TRUE((*s)->PutQueue(q).ok());
  EXPECT_EQ((*s)->ListQueues()->size(), 1u);
}

TEST(SqliteStore, UnwritablePathIsAClearError) {
  auto s = OpenSqlite({"/nonexistent-dir/x/store.db", true, ""});
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("/nonexistent-dir/x/store.db"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace corral::store
