#include "corral/store/group_commit.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>

namespace corral::store {
namespace {

// A SQLite VFS that passes everything to the default one and counts syncs (fsync/fdatasync).
std::atomic<int> g_syncs{0};
sqlite3_vfs* g_real = nullptr;

struct CountingFile {
  sqlite3_file base;
  sqlite3_file* real;  // the default VFS's file, allocated right after this struct
};
sqlite3_file* Real(sqlite3_file* f) { return reinterpret_cast<CountingFile*>(f)->real; }

#define FORWARD(name, ...) Real(f)->pMethods->name(Real(f), ##__VA_ARGS__)
sqlite3_io_methods g_methods = {
    3,
    [](sqlite3_file* f) { return FORWARD(xClose); },
    [](sqlite3_file* f, void* b, int n, sqlite3_int64 o) { return FORWARD(xRead, b, n, o); },
    [](sqlite3_file* f, const void* b, int n, sqlite3_int64 o) { return FORWARD(xWrite, b, n, o); },
    [](sqlite3_file* f, sqlite3_int64 size) { return FORWARD(xTruncate, size); },
    [](sqlite3_file* f, int flags) {
      g_syncs++;
      return FORWARD(xSync, flags);
    },
    [](sqlite3_file* f, sqlite3_int64* size) { return FORWARD(xFileSize, size); },
    [](sqlite3_file* f, int l) { return FORWARD(xLock, l); },
    [](sqlite3_file* f, int l) { return FORWARD(xUnlock, l); },
    [](sqlite3_file* f, int* out) { return FORWARD(xCheckReservedLock, out); },
    [](sqlite3_file* f, int op, void* arg) { return FORWARD(xFileControl, op, arg); },
    [](sqlite3_file* f) { return FORWARD(xSectorSize); },
    [](sqlite3_file* f) { return FORWARD(xDeviceCharacteristics); },
    [](sqlite3_file* f, int pg, int sz, int extend, void volatile** p) { return FORWARD(xShmMap, pg, sz, extend, p); },
    [](sqlite3_file* f, int off, int n, int flags) { return FORWARD(xShmLock, off, n, flags); },
    [](sqlite3_file* f) { FORWARD(xShmBarrier); },
    [](sqlite3_file* f, int del) { return FORWARD(xShmUnmap, del); },
    [](sqlite3_file* f, sqlite3_int64 o, int n, void** p) { return FORWARD(xFetch, o, n, p); },
    [](sqlite3_file* f, sqlite3_int64 o, void* p) { return FORWARD(xUnfetch, o, p); },
};
#undef FORWARD

sqlite3_vfs g_counting;

void RegisterCountingVfs() {
  static bool done = [] {
    g_real = sqlite3_vfs_find(nullptr);
    g_counting = *g_real;
    g_counting.zName = "corral-counting";
    g_counting.szOsFile = static_cast<int>(sizeof(CountingFile)) + g_real->szOsFile;
    g_counting.xOpen = [](sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
      auto* cf = reinterpret_cast<CountingFile*>(f);
      cf->real = reinterpret_cast<sqlite3_file*>(cf + 1);
      int rc = g_real->xOpen(g_real, name, cf->real, flags, out);
      cf->base.pMethods = cf->real->pMethods ? &g_methods : nullptr;
      return rc;
    };
    return sqlite3_vfs_register(&g_counting, 0) == SQLITE_OK;
  }();
  ASSERT_TRUE(done);
}

std::string TempPath(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / ("corral-gc-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto p = (dir / name).string();
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(p + suffix);
  return p;
}

DurableTask Task(int i) {
  DurableTask t;
  t.id = "task-" + std::to_string(i);
  t.function = "tasks:f";
  return t;
}

TEST(GroupCommit, EveryAcknowledgedSubmissionWasSyncedFirst) {
  RegisterCountingVfs();
  auto store = OpenSqlite({TempPath("sync.db"), true, "corral-counting"});
  ASSERT_TRUE(store.has_value()) << store.error().ToString();
  GroupCommitter committer(std::move(*store));
  for (int i = 0; i < 20; ++i) {
    int before = g_syncs.load();
    std::promise<int> acked;
    committer.Submit({Task(i)}, [&](Result<std::vector<SubmitResult>> r) {
      EXPECT_TRUE(r.has_value());
      acked.set_value(g_syncs.load());  // what had been synced by the time of the acknowledgement
    });
    EXPECT_GE(acked.get_future().get(), before + 1) << "submission " << i << " acknowledged before any sync";
  }
}

TEST(GroupCommit, SubmissionsQueuedDuringACommitShareTheNextOne) {
  GroupCommitter committer(NewMemoryStore());
  // Hold the committer busy, queue 100 submissions, then let it go: they commit together.
  std::promise<void> release, started;
  std::shared_future<void> gate = release.get_future().share();
  committer.Run([gate, &started](Store&) {
    started.set_value();
    gate.wait();
  });
  started.get_future().wait();  // (else the committer may take the first submission with the gate)
  std::atomic<int> done{0};
  for (int i = 0; i < 100; ++i)
    committer.Submit({Task(i)}, [&](Result<std::vector<SubmitResult>> r) {
      ASSERT_TRUE(r.has_value());
      ASSERT_EQ(r->size(), 1u);
      EXPECT_TRUE((*r)[0].inserted);
      done++;
    });
  release.set_value();
  std::promise<void> flushed;
  committer.Run([&](Store&) { flushed.set_value(); });
  flushed.get_future().wait();
  EXPECT_EQ(done.load(), 100);
  EXPECT_EQ(committer.submissions(), 100);
  EXPECT_EQ(committer.commits(), 1) << "100 submissions, one transaction";
}

TEST(GroupCommit, ResultsGoBackToTheirOwnSubmitterInOrder) {
  GroupCommitter committer(NewMemoryStore());
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  committer.Run([gate](Store&) { gate.wait(); });
  DurableTask keyed = Task(1);
  keyed.idempotency_key = "same";
  DurableTask keyed_again = Task(2);
  keyed_again.idempotency_key = "same";
  std::promise<std::vector<SubmitResult>> first, second;
  committer.Submit({keyed, Task(3)}, [&](auto r) { first.set_value(*r); });
  committer.Submit({keyed_again}, [&](auto r) { second.set_value(*r); });
  std::promise<Status> updated;
  committer.Update({{"task-3", TaskState::kSuccess, 0, 0, "v", "", 10}}, [&](Status s) { updated.set_value(s); });
  release.set_value();
  auto a = first.get_future().get();
  auto b = second.get_future().get();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_TRUE(a[0].inserted && a[1].inserted);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_FALSE(b[0].inserted);
  EXPECT_EQ(b[0].id, "task-1");
  EXPECT_TRUE(updated.get_future().get().ok());
  std::promise<TaskState> state;
  committer.Run([&](Store& s) { state.set_value((**s.Get("task-3")).state); });
  EXPECT_EQ(state.get_future().get(), TaskState::kSuccess);
}

}  // namespace
}  // namespace corral::store
