#include "corral/net/fd_passing.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace corral::net {
namespace {

struct Pair {
  int fd[2] = {-1, -1};
  Pair(int type) { EXPECT_EQ(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fd), 0); }
  ~Pair() {
    for (int f : fd)
      if (f >= 0) close(f);
  }
};

TEST(FdPassingTest, ADescriptorArrivesWithItsTagAndReachesTheSameFile) {
  Pair channel(SOCK_SEQPACKET), carried(SOCK_STREAM);
  ASSERT_TRUE(SendTaggedFd(channel.fd[0], 42, carried.fd[0]));
  ASSERT_TRUE(SendTaggedFd(channel.fd[0], 7, -1, "a note"));
  std::vector<std::pair<uint64_t, int>> got;
  std::vector<std::string> notes;
  ASSERT_TRUE(ReceiveTaggedFds(channel.fd[1], [&](uint64_t tag, int fd, std::string_view note) {
    got.emplace_back(tag, fd);
    notes.emplace_back(note);
  }));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(notes, (std::vector<std::string>{"", "a note"}));
  EXPECT_FALSE(SendTaggedFd(channel.fd[0], 8, -1, std::string(kMaxFdNote + 1, 'x')));
  EXPECT_EQ(got[0].first, 42u);
  ASSERT_GE(got[0].second, 0);
  EXPECT_NE(got[0].second, carried.fd[0]);
  EXPECT_TRUE(fcntl(got[0].second, F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(got[1], std::make_pair(uint64_t{7}, -1));
  // What the receiver writes on it comes out of the carried socket's other end.
  ASSERT_EQ(write(got[0].second, "hi", 2), 2);
  char buf[2];
  ASSERT_EQ(read(carried.fd[1], buf, 2), 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
  close(got[0].second);
}

TEST(FdPassingTest, NothingQueuedReturnsAtOnceAndAClosedPeerIsReported) {
  Pair channel(SOCK_SEQPACKET);
  int calls = 0;
  EXPECT_TRUE(ReceiveTaggedFds(channel.fd[1], [&](uint64_t, int, std::string_view) { calls++; }));
  EXPECT_EQ(calls, 0);
  close(channel.fd[0]);
  channel.fd[0] = -1;
  EXPECT_FALSE(ReceiveTaggedFds(channel.fd[1], [&](uint64_t, int, std::string_view) { calls++; }));
  EXPECT_EQ(calls, 0);
}

TEST(FdPassingTest, AFullQueueRefusesWithoutWaiting) {
  Pair channel(SOCK_SEQPACKET);
  int sent = 0;
  while (SendTaggedFd(channel.fd[0], 1, -1) && sent < 1'000'000) sent++;
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, 1'000'000);
}

}  // namespace
}  // namespace corral::net
