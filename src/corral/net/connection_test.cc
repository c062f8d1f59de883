#include "corral/net/connection.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <thread>

#include "corral/common.pb.h"
#include "corral/net/frame.h"
#include "corral/net/listener.h"
#include "corral/net/memory_stream.h"
#include "corral/net/tls.h"

namespace corral::net {
namespace {

using namespace std::chrono_literals;

// A server that echoes every Hello back with its name, on one io thread.
struct Fixture {
  asio::io_context io;
  std::unique_ptr<Listener> listener;
  std::vector<std::shared_ptr<Connection>> accepted;
  std::vector<Status> server_closes;
  ConnectionOptions server_options;

  void Serve(const Endpoint& ep, std::shared_ptr<asio::ssl::context> tls = nullptr) {
    auto l = Listener::Listen(io, ep, tls);
    ASSERT_TRUE(l.has_value()) << l.error().ToString();
    listener = std::move(*l);
    listener->Start([this](std::unique_ptr<ByteStream> s) {
      auto c = Connection::Create(std::move(s), server_options);
      accepted.push_back(c);
      std::weak_ptr<Connection> weak = c;
      c->Start(
          [weak](std::string_view m) {
            proto::Hello h;
            if (!h.ParseFromArray(m.data(), static_cast<int>(m.size()))) return;
            if (auto c = weak.lock()) {
              c->MarkHandshakeDone();
              c->Send(h);
            }
          },
          [this](const Status& s) { server_closes.push_back(s); });
    });
  }

  std::shared_ptr<Connection> DialSync(const Endpoint& ep, std::shared_ptr<asio::ssl::context> tls = nullptr,
                                       ConnectionOptions options = {}) {
    std::shared_ptr<Connection> conn;
    bool done = false;
    Dial(io, ep, tls, 5s, [&](Result<std::unique_ptr<ByteStream>> r) {
      done = true;
      ASSERT_TRUE(r.has_value()) << r.error().ToString();
      conn = Connection::Create(std::move(*r), options);
    });
    RunUntil([&] { return done; });
    return conn;
  }

  template <typename Pred>
  void RunUntil(Pred pred, std::chrono::seconds limit = 10s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < deadline) io.run_for(5ms);
    ASSERT_TRUE(pred()) << "condition not met in time";
  }
};

// Starts a dialed connection whose received Hellos' names go to `got`.
void StartCollecting(Connection& c, std::vector<std::string>* got) {
  c.Start(
      [got](std::string_view m) {
        proto::Hello h;
        ASSERT_TRUE(h.ParseFromArray(m.data(), static_cast<int>(m.size())));
        got->push_back(h.name());
      },
      [](const Status&) {});
  c.MarkHandshakeDone();
}

void EchoMany(Fixture& f, const Endpoint& ep, std::shared_ptr<asio::ssl::context> server_tls = nullptr,
              std::shared_ptr<asio::ssl::context> client_tls = nullptr) {
  f.Serve(ep, server_tls);
  auto c = f.DialSync(f.listener->endpoint(), client_tls);
  ASSERT_TRUE(c);
  std::vector<std::string> got;
  StartCollecting(*c, &got);
  auto& counters = GlobalNetCounters();
  int64_t frames_before = counters.frames_sent, messages_before = counters.messages_sent;
  const int kCount = 2000;
  for (int i = 0; i < kCount; ++i) {
    proto::Hello h;
    h.set_name(std::to_string(i));
    ASSERT_TRUE(c->Send(h));
  }
  f.RunUntil([&] { return got.size() == kCount; });
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(got[i], std::to_string(i));
  int64_t frames = counters.frames_sent - frames_before;
  int64_t messages = counters.messages_sent - messages_before;
  EXPECT_EQ(messages, 2 * kCount);
  // Sent in a burst: coalesced into far fewer frames than messages.
  EXPECT_LT(frames, messages / 4) << frames << " frames for " << messages << " messages";
}

TEST(Connection, EchoOverTcpCoalesces) {
  Fixture f;
  EchoMany(f, *ParseEndpoint("127.0.0.1:0"));
}

TEST(Connection, EchoOverUnixSocket) {
  Fixture f;
  std::string path = ::testing::TempDir() + "/corral-net-test-" + std::to_string(getpid()) + ".sock";
  EchoMany(f, *ParseEndpoint("unix:" + path));
}

TEST(Connection, CloseAndTakeFdHandsOverTheOpenSocket) {
  // The server's end of an accepted Unix connection, taken out after a first message: the socket
  // stays open (no shutdown), what is written on it reaches the client, and the connection closed.
  Fixture f;
  std::string path = ::testing::TempDir() + "/corral-net-take-" + std::to_string(getpid()) + ".sock";
  f.Serve(*ParseEndpoint("unix:" + path));
  auto c = f.DialSync(f.listener->endpoint());
  ASSERT_TRUE(c);
  std::vector<std::string> got;
  StartCollecting(*c, &got);
  proto::Hello hello;
  hello.set_name("first");
  ASSERT_TRUE(c->Send(hello));
  f.RunUntil([&] { return got.size() == 1; });
  ASSERT_EQ(f.accepted.size(), 1u);
  int fd = f.accepted[0]->CloseAndTakeFd(Status(Code::kCancelled, "handed over"));
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(f.accepted[0]->closed());
  f.RunUntil([&] { return f.server_closes.size() == 1; });
  proto::Hello later;
  later.set_name("written on the taken socket");
  FrameBuilder frame;
  frame.AppendMessage(later.SerializeAsString());
  std::string bytes = frame.Take();
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  f.RunUntil([&] { return got.size() == 2; });
  EXPECT_EQ(got[1], "written on the taken socket");
  EXPECT_FALSE(c->closed());
  close(fd);
  f.RunUntil([&] { return c->closed(); });
}

TEST(Connection, EchoOverTls) {
  auto pem = GenerateSelfSigned("localhost");
  ASSERT_TRUE(pem.has_value()) << pem.error().ToString();
  auto server = MakeServerTlsContext(*pem);
  auto client = MakeClientTlsContext(pem->certificate);
  ASSERT_TRUE(server.has_value() && client.has_value());
  Fixture f;
  EchoMany(f, *ParseEndpoint("127.0.0.1:0"), *server, *client);
}

TEST(Connection, TlsClientRejectsUnknownCertificate) {
  auto pem = GenerateSelfSigned("localhost");
  auto other = GenerateSelfSigned("localhost");
  Fixture f;
  f.Serve(*ParseEndpoint("127.0.0.1:0"), *MakeServerTlsContext(*pem));
  bool done = false;
  Status status;
  Dial(f.io, f.listener->endpoint(), *MakeClientTlsContext(other->certificate), 5s,
       [&](Result<std::unique_ptr<ByteStream>> r) {
         done = true;
         if (!r) status = r.error();
       });
  f.RunUntil([&] { return done; });
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("TLS handshake"), std::string::npos) << status.ToString();
}

// Writes raw bytes to the server and returns the reason the server closed the connection.
Status ServerCloseReasonFor(const std::string& bytes, ConnectionOptions options = {}) {
  Fixture f;
  f.server_options = options;
  f.Serve(*ParseEndpoint("127.0.0.1:0"));
  asio::ip::tcp::socket raw(f.io);
  raw.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), f.listener->endpoint().port));
  if (!bytes.empty()) asio::write(raw, asio::buffer(bytes));
  f.RunUntil([&] { return !f.server_closes.empty(); });
  return f.server_closes.empty() ? Status() : f.server_closes[0];
}

TEST(Connection, GarbageClosesWithReason) {
  Status s = ServerCloseReasonFor("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("magic"), std::string::npos);
}

TEST(Connection, OversizedFrameClosesWithReason) {
  ConnectionOptions options;
  options.max_frame_bytes = 1024;
  FrameBuilder b;
  b.AppendMessage(std::string(4096, 'x'));
  Status s = ServerCloseReasonFor(b.Take(), options);
  EXPECT_EQ(s.code(), Code::kResourceExhausted);
}

TEST(Connection, SilentPeerHitsHandshakeDeadline) {
  ConnectionOptions options;
  options.handshake_timeout = 100ms;
  FrameBuilder b;
  b.AppendMessage("partial");
  std::string frame = b.Take();
  Status s = ServerCloseReasonFor(frame.substr(0, 5), options);  // stops mid-frame
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded);
}

proto::Hello Named(const std::string& name) {
  proto::Hello h;
  h.set_name(name);
  return h;
}

TEST(Connection, LateMessagesLeaveWithTheNextOneOrOnFlush) {
  Fixture f;
  f.Serve(*ParseEndpoint("127.0.0.1:0"));
  ConnectionOptions options;
  options.late_delay = 3600s;  // (never, in this test)
  options.cork_max_messages = 4;
  auto c = f.DialSync(f.listener->endpoint(), nullptr, options);
  std::vector<std::string> got;
  StartCollecting(*c, &got);
  ASSERT_TRUE(c->Send(Named("late 1"), Urgency::kLate));
  f.io.run_for(50ms);
  EXPECT_TRUE(got.empty()) << "a late message left on its own";
  ASSERT_TRUE(c->Send(Named("now"), Urgency::kNow));  // takes the held one with it, in order
  f.RunUntil([&] { return got.size() == 2; });
  EXPECT_EQ(got, (std::vector<std::string>{"late 1", "now"}));
  ASSERT_TRUE(c->Send(Named("late 2"), Urgency::kLate));
  f.io.run_for(50ms);
  EXPECT_EQ(got.size(), 2u);
  c->Flush();
  f.RunUntil([&] { return got.size() == 3; });
  EXPECT_EQ(got.back(), "late 2");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c->Send(Named("many " + std::to_string(i)), Urgency::kLate));
  f.RunUntil([&] { return got.size() == 8; });  // past cork_max_messages they go
  EXPECT_EQ(got.back(), "many 4");
}

TEST(Connection, ALateMessageSentPastTheDelayTakesTheHeldOnes) {
  Fixture f;
  f.Serve(*ParseEndpoint("127.0.0.1:0"));
  ConnectionOptions options;
  options.late_delay = 1s;  // (the io thread's deadline: 4 s)
  auto c = f.DialSync(f.listener->endpoint(), nullptr, options);
  std::vector<std::string> got;
  StartCollecting(*c, &got);
  ASSERT_TRUE(c->Send(Named("held"), Urgency::kLate));
  std::this_thread::sleep_for(1100ms);
  ASSERT_TRUE(c->Send(Named("past the delay"), Urgency::kLate));
  f.RunUntil([&] { return got.size() == 2; }, 3s);
  EXPECT_EQ(got, (std::vector<std::string>{"held", "past the delay"}));
}

TEST(Connection, KeepsTheFramesItNeverWroteForItsOwner) {
  Fixture f;
  f.Serve(*ParseEndpoint("127.0.0.1:0"));
  ConnectionOptions options;
  options.late_delay = 3600s;
  options.keep_unsent = true;
  auto c = f.DialSync(f.listener->endpoint(), nullptr, options);
  std::vector<std::string> got;
  StartCollecting(*c, &got);
  ASSERT_TRUE(c->Send(Named("sent"), Urgency::kNow));
  f.RunUntil([&] { return got.size() == 1; });
  ASSERT_TRUE(c->Send(Named("held 1"), Urgency::kLate));
  ASSERT_TRUE(c->Send(Named("held 2"), Urgency::kLate));
  c->Close(Status(Code::kUnavailable, "a network fault"));
  f.RunUntil([&] { return c->closed(); });
  std::vector<std::string> unsent;
  FrameDecoder decoder;
  ASSERT_TRUE(decoder.Decode(c->TakeUnsent(), [&](std::string_view m) {
    proto::Hello h;
    ASSERT_TRUE(h.ParseFromArray(m.data(), static_cast<int>(m.size())));
    unsent.push_back(h.name());
  }).has_value());
  EXPECT_EQ(unsent, (std::vector<std::string>{"held 1", "held 2"}));
  EXPECT_TRUE(c->TakeUnsent().empty());  // (once)
}

TEST(Connection, LateMessagesLeaveAfterTheirDelay) {
  Fixture f;
  f.Serve(*ParseEndpoint("127.0.0.1:0"));
  ConnectionOptions options;
  options.late_delay = 20ms;
  auto c = f.DialSync(f.listener->endpoint(), nullptr, options);
  std::vector<std::string> got;
  StartCollecting(*c, &got);
  for (int round = 0; round < 2; ++round) {  // (the timer is armed again after it fired)
    ASSERT_TRUE(c->Send(Named("late " + std::to_string(round)), Urgency::kLate));
    f.RunUntil([&] { return got.size() == static_cast<size_t>(round + 1); });
  }
  EXPECT_EQ(got, (std::vector<std::string>{"late 0", "late 1"}));
}

TEST(Connection, SendFromOtherThreads) {
  Fixture f;
  f.Serve(*ParseEndpoint("127.0.0.1:0"));
  auto c = f.DialSync(f.listener->endpoint());
  std::atomic<int> got{0};
  c->Start([&](std::string_view) { ++got; }, [](const Status&) {});
  c->MarkHandshakeDone();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        proto::Hello h;
        h.set_name("x");
        c->Send(h);
      }
    });
  for (auto& t : threads) t.join();
  f.RunUntil([&] { return got == 2000; });
}

}  // namespace
}  // namespace corral::net

namespace corral::net {
namespace {

TEST(MemoryStream, ConnectionsTalkWithoutSockets) {
  asio::io_context io;
  auto [a, b] = MakeMemoryStreamPair(io.get_executor(), "a", "b");
  auto ca = Connection::Create(std::move(a));
  auto cb = Connection::Create(std::move(b));
  std::vector<std::string> at_b;
  Status b_closed;
  bool b_done = false;
  cb->Start(
      [&](std::string_view m) {
        proto::Hello h;
        ASSERT_TRUE(h.ParseFromArray(m.data(), static_cast<int>(m.size())));
        at_b.push_back(h.name());
        cb->Send(h);  // echo
      },
      [&](const Status& s) {
        b_closed = s;
        b_done = true;
      });
  int echoed = 0;
  ca->Start([&](std::string_view) { ++echoed; }, [](const Status&) {});
  for (int i = 0; i < 500; ++i) {
    proto::Hello h;
    h.set_name(std::to_string(i));
    ca->Send(h);
  }
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (echoed < 500 && std::chrono::steady_clock::now() < deadline) io.run_for(5ms);
  ASSERT_EQ(echoed, 500);
  for (int i = 0; i < 500; ++i) ASSERT_EQ(at_b[i], std::to_string(i));
  ca->Close(Status(Code::kCancelled, "done"));
  while (!b_done && std::chrono::steady_clock::now() < deadline) io.run_for(5ms);
  EXPECT_TRUE(b_done);
  EXPECT_EQ(b_closed.code(), Code::kUnavailable);  // the peer saw end-of-stream
}

}  // namespace
}  // namespace corral::net
