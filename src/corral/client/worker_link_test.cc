#include "corral/client/worker_link.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <future>
#include <thread>

#include "corral/base/ids.h"
#include "corral/client.pb.h"
#include "corral/net/fd_passing.h"
#include "corral/net/frame.h"
#include "corral/worker.pb.h"

namespace corral::client {
namespace {

// Reads framed messages from a blocking socket.
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}
  // The next message, or nullopt once the socket closed (or broke a frame).
  std::optional<std::string> Next() {
    while (messages_.empty()) {
      char buf[65536];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return std::nullopt;
      pending_.append(buf, static_cast<size_t>(n));
      auto used = decoder_.Decode(pending_, [&](std::string_view m) { messages_.emplace_back(m); });
      if (!used) return std::nullopt;
      pending_.erase(0, *used);
    }
    std::string m = std::move(messages_.front());
    messages_.pop_front();
    return m;
  }

 private:
  int fd_;
  net::FrameDecoder decoder_{64u << 20};
  std::string pending_;
  std::deque<std::string> messages_;
};

void WriteAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    ASSERT_GT(n, 0);
    off += static_cast<size_t>(n);
  }
}

std::string Frame(const google::protobuf::MessageLite& m) {
  net::FrameBuilder b;
  b.AppendMessage(m.SerializeAsString());
  return b.Take();
}

// A stand-in for the agent: a Unix socket a WorkerLink connects to, the socket pair result
// channels are handed over on (decision 46), and a caller's end of one channel.
class WorkerLinkChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "/corral-worker-link-" + std::to_string(getpid()) + ".sock";
    unlink(path_.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    ASSERT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(listen(listen_fd_, 1), 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pass_), 0);
    std::thread agent([this] {
      agent_fd_ = accept(listen_fd_, nullptr, nullptr);
      agent_ = std::make_unique<FrameReader>(agent_fd_);
      auto hello = agent_->Next();
      proto::AgentToWorker welcome;
      welcome.mutable_welcome()->set_protocol_version(1);
      WriteAll(agent_fd_, Frame(welcome));
    });
    WorkerLinkOptions o;
    o.socket_path = path_;
    o.worker_id = "0011";
    o.results_fd = pass_[1];
    o.node_id = "0a0b";
    auto link = WorkerLink::Connect(o);
    agent.join();
    ASSERT_TRUE(link.has_value()) << link.error().ToString();
    link_ = std::move(*link);
    pass_[1] = -1;  // (the link's now)
  }

  void TearDown() override {
    link_.reset();
    for (int fd : {listen_fd_, agent_fd_, pass_[0], pass_[1], caller_[0], caller_[1]})
      if (fd >= 0) close(fd);
    unlink(path_.c_str());
  }

  // Hands the worker a new channel numbered `n`; the caller's end is caller_[0].
  void HandOver(uint64_t n) {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, caller_), 0);
    ASSERT_TRUE(net::SendTaggedFd(pass_[0], n, caller_[1]));
    close(caller_[1]);
    caller_[1] = -1;
  }

  static proto::AgentToWorker Call(const std::string& id, uint64_t channel) {
    proto::AgentToWorker m;
    m.mutable_execute()->mutable_spec()->set_task_id(id);
    m.mutable_execute()->mutable_spec()->set_actor_id("actor");
    m.mutable_execute()->set_result_channel(channel);
    return m;
  }

  static proto::TaskFinished Result(const std::string& id, std::string data) {
    proto::TaskFinished f;
    f.set_task_id(id);
    f.mutable_result()->set_data(std::move(data));
    return f;
  }

  // The agent's side: the worker's next report.
  proto::TaskFinished Report() {
    proto::WorkerToAgent m;
    auto bytes = agent_->Next();
    EXPECT_TRUE(bytes && m.ParseFromString(*bytes) && m.has_finished());
    return m.finished();
  }

  std::string path_;
  int listen_fd_ = -1, agent_fd_ = -1;
  int pass_[2] = {-1, -1}, caller_[2] = {-1, -1};
  std::unique_ptr<FrameReader> agent_;
  std::unique_ptr<WorkerLink> link_;
};

TEST_F(WorkerLinkChannelTest, AResultGoesToTheCallerAndTheAgentIsToldItWasDelivered) {
  HandOver(7);
  WriteAll(agent_fd_, Frame(Call("t1", 7)));
  auto call = link_->NextTask();
  ASSERT_TRUE(call.has_value());
  ASSERT_TRUE(link_->Finish(Result("t1", "forty-two")).ok());
  FrameReader caller(caller_[0]);
  auto got = caller.Next();
  ASSERT_TRUE(got);
  proto::AgentToCaller msg;
  ASSERT_TRUE(msg.ParseFromString(*got) && msg.has_finished());
  EXPECT_EQ(msg.finished().task_id(), "t1");
  EXPECT_EQ(msg.finished().result().data(), "forty-two");
  EXPECT_EQ(msg.finished().node_id(), *FromHex("0a0b"));
  EXPECT_TRUE(msg.finished().direct());
  proto::TaskFinished report = Report();
  EXPECT_EQ(report.task_id(), "t1");
  EXPECT_TRUE(report.delivered());
  EXPECT_EQ(report.result().data(), "forty-two");  // (the head keeps its record as before)
}

TEST_F(WorkerLinkChannelTest, WithCallsQueuedOrNoChannelTheAgentSendsTheResult) {
  HandOver(7);
  // Two calls read at once: the first one's result waits for nobody, the agent sends it with others.
  WriteAll(agent_fd_, Frame(Call("t1", 7)) + Frame(Call("t2", 7)));
  ASSERT_TRUE(link_->NextTask().has_value());
  ASSERT_TRUE(link_->Finish(Result("t1", "a")).ok());
  EXPECT_FALSE(Report().delivered());
  ASSERT_TRUE(link_->NextTask().has_value());
  ASSERT_TRUE(link_->Finish(Result("t2", "b")).ok());
  EXPECT_TRUE(Report().delivered());  // nothing queued behind it
  // A channel the worker was never given, and a call that names none.
  WriteAll(agent_fd_, Frame(Call("t3", 99)));
  ASSERT_TRUE(link_->NextTask().has_value());
  ASSERT_TRUE(link_->Finish(Result("t3", "c")).ok());
  EXPECT_FALSE(Report().delivered());
  WriteAll(agent_fd_, Frame(Call("t4", 0)));
  ASSERT_TRUE(link_->NextTask().has_value());
  ASSERT_TRUE(link_->Finish(Result("t4", "d")).ok());
  EXPECT_FALSE(Report().delivered());
  FrameReader caller(caller_[0]);
  auto got = caller.Next();
  proto::AgentToCaller msg;
  ASSERT_TRUE(got && msg.ParseFromString(*got));
  EXPECT_EQ(msg.finished().task_id(), "t2");  // the only one written there
}

TEST_F(WorkerLinkChannelTest, ACallerThatStopsReadingLosesItsChannelNotItsResult) {
  HandOver(7);
  int small = 4096;
  setsockopt(caller_[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  // More than the socket holds: part of the frame goes in, the rest never can (nobody reads).
  WriteAll(agent_fd_, Frame(Call("big", 7)));
  ASSERT_TRUE(link_->NextTask().has_value());
  // (On a thread: its 4 MiB report to the agent waits for this thread to read it.)
  auto finished = std::async(std::launch::async, [&] { return link_->Finish(Result("big", std::string(4u << 20, 'x'))); });
  proto::TaskFinished report = Report();
  ASSERT_TRUE(finished.get().ok());
  EXPECT_EQ(report.task_id(), "big");
  EXPECT_FALSE(report.delivered());  // the agent relays it
  // The channel is closed: the caller reads a part, then its end; later results skip it.
  char buf[65536];
  ssize_t n;
  size_t total = 0;
  while ((n = recv(caller_[0], buf, sizeof buf, 0)) > 0) total += static_cast<size_t>(n);
  EXPECT_EQ(n, 0);
  EXPECT_GT(total, 0u);
  EXPECT_LT(total, 4u << 20);
  WriteAll(agent_fd_, Frame(Call("after", 7)));
  ASSERT_TRUE(link_->NextTask().has_value());
  ASSERT_TRUE(link_->Finish(Result("after", "small")).ok());
  EXPECT_FALSE(Report().delivered());
}

}  // namespace
}  // namespace corral::client
