#include "corral/client/read_watcher.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <optional>
#include <thread>

#include "corral/common.pb.h"
#include "corral/net/listener.h"

namespace corral::client {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;

// An echo server on loopback TCP, and a client connection whose reads are its owner's, with the
// io_context running on a thread of its own as in a driver.
class ReadWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = net::Listener::Listen(io_, *net::ParseEndpoint("127.0.0.1:0"), nullptr);
    ASSERT_TRUE(l.has_value()) << l.error().ToString();
    listener_ = std::move(*l);
    listener_->Start([this](std::unique_ptr<net::ByteStream> s) {
      auto c = net::Connection::Create(std::move(s));
      std::weak_ptr<net::Connection> weak = c;
      c->Start([weak](std::string_view m) {
                 proto::Hello h;
                 if (!h.ParseFromArray(m.data(), static_cast<int>(m.size()))) return;
                 if (h.name() == "hang up") {
                   if (auto c = weak.lock()) c->Close(Status(Code::kCancelled, "asked to"));
                   return;
                 }
                 if (auto c = weak.lock()) c->Send(h);
               },
               [](const Status&) {});
      std::lock_guard lock(mu_);
      accepted_.push_back(c);
    });
    io_thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    watcher_.reset();
    guard_.reset();
    asio::post(io_, [this] {
      listener_.reset();
      for (auto& c : accepted_) c->Close(Status::Ok());
      if (conn_) conn_->Close(Status::Ok());
    });
    io_.stop();
    io_thread_.join();
  }

  // Dials with owner_reads; received names (and the thread each was handed out on) go to got_.
  // `into`: conn_, or another connection to the same server.
  void Connect(std::shared_ptr<net::Connection>* into = nullptr) {
    std::shared_ptr<net::Connection>& conn_ = into ? *into : this->conn_;
    std::unique_ptr<net::ByteStream> stream;
    std::promise<void> dialed;
    net::Dial(io_, listener_->endpoint(), nullptr, 5s, [&](Result<std::unique_ptr<net::ByteStream>> r) {
      if (r) stream = std::move(*r);
      dialed.set_value();
    });
    dialed.get_future().wait();
    ASSERT_TRUE(stream);
    net::ConnectionOptions options;
    options.owner_reads = true;
    options.direct_writes = true;
    conn_ = net::Connection::Create(std::move(stream), options);
    ASSERT_TRUE(conn_->owner_reads());
    std::promise<void> started;
    asio::post(io_, [&] {
      conn_->Start(
          [this](std::string_view m) {
            proto::Hello h;
            ASSERT_TRUE(h.ParseFromArray(m.data(), static_cast<int>(m.size())));
            std::lock_guard lock(mu_);
            got_.push_back({h.name(), std::this_thread::get_id()});
            cv_.notify_all();
          },
          [this](const Status&) {
            std::lock_guard lock(mu_);
            closed_on_ = std::this_thread::get_id();
            cv_.notify_all();
          });
      started.set_value();
    });
    started.get_future().wait();
    ASSERT_TRUE(watcher_->Watch(conn_));
  }

  void Send(const std::string& name, net::Connection* on = nullptr) {
    proto::Hello h;
    h.set_name(name);
    ASSERT_TRUE((on ? on : conn_.get())->Send(h));
  }

  bool Got(const std::string& name) {
    for (const auto& [n, t] : got_)
      if (n == name) return true;
    return false;
  }

  // The thread `name` was handed out on, waiting up to 10 s for it.
  std::thread::id WaitFor(const std::string& name) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 10s, [&] { return Got(name); });
    for (const auto& [n, t] : got_)
      if (n == name) return t;
    ADD_FAILURE() << name << " never arrived";
    return {};
  }

  // ReadUntil as a waiting thread, again while the watcher happens to be reading (it lets go soon).
  ReadWatcher::Outcome ReadAsWaiter(Clock::duration limit, const std::function<bool()>& done) {
    auto outcome = ReadWatcher::Outcome::kBusy;
    for (int i = 0; i < 1000 && outcome == ReadWatcher::Outcome::kBusy; ++i) {
      outcome = watcher_->ReadUntil(conn_.get(), Clock::now() + limit, done);
      if (outcome == ReadWatcher::Outcome::kBusy) std::this_thread::sleep_for(1ms);
    }
    return outcome;
  }

  std::function<bool()> Has(const std::string& name) {
    return [this, name] {
      std::lock_guard lock(mu_);
      return Got(name);
    };
  }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_{asio::make_work_guard(io_)};
  std::thread io_thread_;
  std::unique_ptr<net::Listener> listener_;
  std::vector<std::shared_ptr<net::Connection>> accepted_;
  std::shared_ptr<net::Connection> conn_;
  std::unique_ptr<ReadWatcher> watcher_ = std::make_unique<ReadWatcher>();
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, std::thread::id>> got_;
  std::optional<std::thread::id> closed_on_;
};

TEST_F(ReadWatcherTest, ItsThreadReadsWhatNobodyWaitsFor) {
  Connect();
  Send("unasked");
  std::thread::id on = WaitFor("unasked");
  EXPECT_NE(on, std::this_thread::get_id());
  EXPECT_NE(on, io_thread_.get_id());  // the io thread does not watch the socket
}

TEST_F(ReadWatcherTest, AWaitingThreadReadsItsReplyItselfAndLetsGoAfter) {
  Connect();
  // Sent once this thread reads (nothing arrived before: the watcher is idle, the read is ours).
  std::thread later([this] {
    std::this_thread::sleep_for(50ms);
    Send("mine");
  });
  EXPECT_EQ(watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, Has("mine")), ReadWatcher::Outcome::kDone);
  later.join();
  EXPECT_EQ(WaitFor("mine"), std::this_thread::get_id());
  // Let go of: what comes next, with nobody waiting, the watcher reads.
  Send("later");
  EXPECT_NE(WaitFor("later"), std::this_thread::get_id());
  EXPECT_EQ(ReadAsWaiter(50ms, Has("never")), ReadWatcher::Outcome::kTimedOut);
  Send("after a timeout");
  EXPECT_NE(WaitFor("after a timeout"), std::this_thread::get_id());
}

TEST_F(ReadWatcherTest, OneReaderAtATimeTheOtherIsTold) {
  Connect();
  std::atomic<bool> reading{false};
  ReadWatcher::Outcome first{};
  std::thread::id first_id;
  std::thread t([&] {
    first_id = std::this_thread::get_id();
    first = watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, [&] {
      reading = true;
      std::lock_guard lock(mu_);
      return Got("for the first");
    });
  });
  // (done() is first asked after the reader's first read: it holds the connection from then on.)
  while (!reading) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, Has("for the first")),
            ReadWatcher::Outcome::kBusy);
  Send("for the first");
  t.join();
  EXPECT_EQ(first, ReadWatcher::Outcome::kDone);
  EXPECT_EQ(WaitFor("for the first"), first_id);
}

TEST_F(ReadWatcherTest, ThePeerClosingEndsAReadAndClosesOnTheIoThread) {
  Connect();
  Send("hang up");
  EXPECT_EQ(ReadAsWaiter(10s, Has("never")), ReadWatcher::Outcome::kClosed);
  std::unique_lock lock(mu_);
  ASSERT_TRUE(cv_.wait_for(lock, 10s, [&] { return closed_on_.has_value(); }));
  EXPECT_EQ(*closed_on_, io_thread_.get_id());
  EXPECT_TRUE(conn_->closed());
  lock.unlock();
  EXPECT_EQ(watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, Has("never")), ReadWatcher::Outcome::kClosed);
}

TEST_F(ReadWatcherTest, LargeMessagesBothWays) {
  // 8 MiB out: more than the socket takes at once, so the rest waits for room on the io thread;
  // the echo comes back in many reads into a growing buffer.
  Connect();
  std::string big(8u << 20, 'x');
  big[12345] = 'y';
  Send(big);
  EXPECT_EQ(ReadAsWaiter(20s, Has(big)), ReadWatcher::Outcome::kDone);
  Send("small after");
  WaitFor("small after");
}

// done() is asked after every read attempt: a spinning waiter asks it over and over, a sleeping one
// once before it sleeps and once when the reply wakes it.
TEST_F(ReadWatcherTest, AWaiterSpinsWhileItsWaitsEndWithinTheSpinAndSleepsAfterALongOne) {
  watcher_ = std::make_unique<ReadWatcher>(std::chrono::microseconds(300ms));
  Connect();
  auto wait_counting = [&](const std::string& name, Clock::duration reply_after) {
    int asked = 0;
    std::thread later([&] {
      std::this_thread::sleep_for(reply_after);
      Send(name);
    });
    auto outcome = watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, [&] {
      ++asked;
      return Has(name)();
    });
    later.join();
    EXPECT_EQ(outcome, ReadWatcher::Outcome::kDone) << name;
    return asked;
  };
  EXPECT_GT(wait_counting("within the spin", 50ms), 100);
  EXPECT_GT(wait_counting("past the spin", 500ms), 100);  // spun 300 ms, then slept
  EXPECT_LE(wait_counting("after a long wait", 50ms), 5);  // the last one was long: no spin
}

TEST_F(ReadWatcherTest, AWaiterReadsASecondConnectionTooAndGoesOnWithoutItOnceItCloses) {
  // A result channel beside its call connection: what comes on either is read by the waiting
  // thread, which sleeps on both.
  Connect();
  std::shared_ptr<net::Connection> channel;
  Connect(&channel);
  std::thread later([&] {
    std::this_thread::sleep_for(50ms);
    Send("on the channel", channel.get());
  });
  EXPECT_EQ(watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, Has("on the channel"), channel.get()),
            ReadWatcher::Outcome::kDone);
  later.join();
  EXPECT_EQ(WaitFor("on the channel"), std::this_thread::get_id());
  // The channel closing ends nothing: the reply on the call connection still comes to the reader.
  Send("hang up", channel.get());
  std::thread reply([&] {
    std::this_thread::sleep_for(100ms);
    Send("on the call connection");
  });
  EXPECT_EQ(watcher_->ReadUntil(conn_.get(), Clock::now() + 10s, Has("on the call connection"), channel.get()),
            ReadWatcher::Outcome::kDone);
  reply.join();
  EXPECT_EQ(WaitFor("on the call connection"), std::this_thread::get_id());
  std::shared_ptr<net::Connection> closing = channel;
  asio::post(io_, [closing] { closing->Close(Status::Ok()); });
}

TEST_F(ReadWatcherTest, WithoutASpinAWaiterSleepsAtOnce) {
  Connect();
  int asked = 0;
  std::thread later([&] {
    std::this_thread::sleep_for(50ms);
    Send("reply");
  });
  EXPECT_EQ(watcher_->ReadUntil(conn_.get(), Clock::now() + 10s,
                                [&] {
                                  ++asked;
                                  return Has("reply")();
                                }),
            ReadWatcher::Outcome::kDone);
  later.join();
  EXPECT_LE(asked, 5);
}

}  // namespace
}  // namespace corral::client
