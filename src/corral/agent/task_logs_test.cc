#include "corral/agent/task_logs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace corral::agent {
namespace {

// A worker log file written as WorkerProcesses would: each line where the previous ended.
struct Log {
  std::string path = ::testing::TempDir() + "/corral-task-logs-" + std::to_string(getpid()) + ".log";
  FILE* f = std::fopen(path.c_str(), "w");
  ~Log() {
    std::fclose(f);
    unlink(path.c_str());
  }
  // Writes `line` and files it under `task` (as the agent does), returning its offset.
  void Line(TaskLogs& logs, const std::string& task, const std::string& line, pid_t pid = 7) {
    int64_t at = std::ftell(f);
    std::fprintf(f, "%s\n", line.c_str());
    std::fflush(f);
    logs.Append(task, pid, at, static_cast<int64_t>(line.size()) + 1);
  }
};

TEST(TaskLogs, EachTaskGetsItsOwnLinesEvenInterleaved) {
  TaskLogs logs;
  Log log;
  logs.WorkerStarted(7, log.path);
  logs.Begin("A", 7);
  log.Line(logs, "A", "a1");
  logs.Begin("B", 7);  // B began while A's last line was still in the pipe
  log.Line(logs, "B", "b1");
  log.Line(logs, "A", "a2");
  log.Line(logs, "B", "b2");
  EXPECT_EQ(logs.Read("A", 0, 1 << 16).text(), "a1\na2\n");
  EXPECT_EQ(logs.Read("B", 0, 1 << 16).text(), "b1\nb2\n");
  // From an offset, and in small reads that resume where the last one stopped.
  EXPECT_EQ(logs.Read("A", 3, 1 << 16).text(), "a2\n");
  proto::TaskLog part = logs.Read("B", 0, 4);
  EXPECT_EQ(part.text(), "b1\nb");
  EXPECT_EQ(logs.Read("B", part.next_offset(), 4).text(), "2\n");
}

TEST(TaskLogs, EndedOnlyOnceTheWorkerMovedOnAndAllWasRead) {
  TaskLogs logs;
  Log log;
  logs.WorkerStarted(7, log.path);
  logs.Begin("A", 7);
  log.Line(logs, "A", "x");
  EXPECT_FALSE(logs.Read("A", 0, 100).ended());  // still its worker's current task
  logs.Begin("B", 7);
  EXPECT_TRUE(logs.Read("A", 0, 100).ended());
  EXPECT_FALSE(logs.Read("A", 0, 1).ended());    // not all of it read
  EXPECT_FALSE(logs.Read("B", 0, 100).ended());  // printed nothing yet, and runs
  EXPECT_EQ(logs.Read("B", 0, 100).text(), "");
  logs.WorkerGone(7);
  EXPECT_TRUE(logs.Read("B", 0, 100).ended());   // nothing, and its worker exited
}

TEST(TaskLogs, OffsetsPastTheOutputAndUnknownTasksAreErrors) {
  TaskLogs logs;
  Log log;
  logs.WorkerStarted(7, log.path);
  logs.Begin("A", 7);
  log.Line(logs, "A", "abc");
  EXPECT_TRUE(logs.Read("A", 4, 100).error().empty());  // exactly at the end: nothing more yet
  EXPECT_NE(logs.Read("A", 5, 100).error(), "");
  EXPECT_NE(logs.Read("A", UINT64_MAX - 4, 100).error(), "");
  EXPECT_NE(logs.Read("nope", 1, 100).error(), "");
  EXPECT_TRUE(logs.Read("nope", 0, 100).ended());  // never printed here: nothing, done
}

TEST(TaskLogs, OnlyTheLastTasksAreKept) {
  TaskLogs logs(/*keep=*/2);
  Log log;
  logs.WorkerStarted(7, log.path);
  for (const char* t : {"A", "B", "C"}) {
    logs.Begin(t, 7);
    log.Line(logs, t, std::string("from ") + t);
  }
  EXPECT_EQ(logs.Read("A", 0, 100).text(), "");  // forgotten
  EXPECT_EQ(logs.Read("B", 0, 100).text(), "from B\n");
  EXPECT_EQ(logs.Read("C", 0, 100).text(), "from C\n");
}

TEST(TaskLogs, MarkersNameTasksInHex) {
  std::string id;
  EXPECT_TRUE(TaskLogs::ParseMarker("==== corral task 0a0b f attempt 1 ====", &id));
  EXPECT_EQ(id, std::string("\x0a\x0b", 2));
  EXPECT_FALSE(TaskLogs::ParseMarker("==== corral task zz f attempt 1 ====", &id));
  EXPECT_FALSE(TaskLogs::ParseMarker("hello", &id));
}

}  // namespace
}  // namespace corral::agent
