#include "corral/base/call_table.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "corral/base/ids.h"

namespace corral {
namespace {

std::string Id(uint64_t n) { return MakeTaskId("callerid", n); }

TEST(CallTable, AClaimedCallIsHeldAndARefusedOneIsDroppedWhenItComes) {
  int fd = -1;
  auto agent = CallTable::Create(&fd);
  ASSERT_TRUE(agent) << agent.error().message();
  auto worker = CallTable::Map(fd);
  close(fd);
  ASSERT_TRUE(worker);

  EXPECT_EQ(worker->Claim(Id(1), 7), CallTable::Claimed::kYes);
  EXPECT_TRUE(agent->Refuse(Id(1), 100, 1000));  // held: its end will come
  EXPECT_EQ(agent->Find(Id(1)), 7u);
  EXPECT_FALSE(agent->Refuse(Id(2), 100, 1000));  // never came: refused from now on
  EXPECT_EQ(worker->Claim(Id(2), 8), CallTable::Claimed::kRefused);
  EXPECT_EQ(worker->Claim(Id(2), 8), CallTable::Claimed::kYes);  // (a refusal is met once)
  EXPECT_EQ(worker->Claim(Id(1), 9), CallTable::Claimed::kRefused);  // a second copy
  EXPECT_TRUE(agent->Release(Id(1)));
  EXPECT_FALSE(agent->Release(Id(1)));
  EXPECT_FALSE(agent->Find(Id(1)));
  auto claimed = agent->TakeClaimed();
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].first, Id(2));
  EXPECT_EQ(claimed[0].second, 8u);
}

TEST(CallTable, OldRefusalsAreForgottenAndAFullTableSaysSo) {
  int fd = -1;
  auto t = CallTable::Create(&fd);
  ASSERT_TRUE(t);
  close(fd);
  EXPECT_FALSE(t->Refuse(Id(1), 100, 1000));
  EXPECT_FALSE(t->Refuse(Id(2), 2000, 1000));  // the refusal of 1 is forgotten here
  EXPECT_EQ(t->Claim(Id(1), 1), CallTable::Claimed::kYes);
  for (uint32_t i = 3; i < CallTable::kCapacity + 1; ++i) ASSERT_EQ(t->Claim(Id(i), i), CallTable::Claimed::kYes);
  EXPECT_EQ(t->Claim(Id(CallTable::kCapacity + 1), 1), CallTable::Claimed::kFull);
  EXPECT_TRUE(t->Refuse(Id(CallTable::kCapacity + 2), 2000, 1000));  // no room to refuse: counts as held
}

TEST(CallTable, TheWorkerAndTheAgentNeverBothWinACall) {
  // A worker process claims calls while this one refuses the same ids, in the same order, started
  // together: each id goes one way. (An id is claimed or refused in the table, never both: at most
  // kCalls entries, below capacity.)
  int fd = -1;
  auto agent = CallTable::Create(&fd);
  ASSERT_TRUE(agent);
  constexpr int kCalls = 2000;
  static_assert(kCalls <= CallTable::kCapacity);
  int pipefd[2], go[2];
  ASSERT_EQ(pipe(pipefd), 0);
  ASSERT_EQ(pipe(go), 0);
  pid_t pid = fork();
  if (pid == 0) {
    auto worker = CallTable::Map(fd);
    std::vector<char> won(kCalls, 0);
    char byte;
    if (read(go[0], &byte, 1) != 1) _exit(1);  // (both start together, on the same ids)
    for (int i = 0; i < kCalls; ++i) {
      won[i] = worker->Claim(Id(i), i) == CallTable::Claimed::kYes;
    }
    ssize_t n = write(pipefd[1], won.data(), won.size());
    _exit(n == kCalls ? 0 : 1);
  }
  close(fd);
  std::vector<char> refused(kCalls, 0);
  ASSERT_EQ(write(go[1], "x", 1), 1);
  for (int i = 0; i < kCalls; ++i) {
    bool held = agent->Refuse(Id(i), 1, int64_t{1} << 62);
    refused[i] = !held;
    if (held) agent->Release(Id(i));  // (as its end would)
  }
  std::vector<char> won(kCalls, 0);
  size_t got = 0;
  while (got < won.size()) {
    ssize_t n = read(pipefd[0], won.data() + got, won.size() - got);
    ASSERT_GT(n, 0);
    got += static_cast<size_t>(n);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  int both = 0;
  for (int i = 0; i < kCalls; ++i) both += won[i] && refused[i];
  EXPECT_EQ(both, 0);  // (how many each won depends on the scheduler)
}

}  // namespace
}  // namespace corral
