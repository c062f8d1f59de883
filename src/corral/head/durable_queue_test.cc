// The durable queue's schedules with an injected clock: misfire policies and clock steps.
#include "corral/head/durable_queue.h"

#include <gtest/gtest.h>

#include <thread>

namespace corral::head {
namespace {

using namespace std::chrono_literals;

struct Fixture {
  explicit Fixture(const std::string& misfire) {
    proto::NodeInfo info;  // registers the function; no Python yet, so nothing is ever dispatched
    info.set_node_id("n1");
    (*info.mutable_resources())["CPU"] = 1;
    info.add_task_functions("jobs:nightly");
    nodes.Register(info, nullptr, 1);
    queue = std::make_unique<DurableQueue>(io, tasks, nodes, store::NewMemoryStore(), clock, 3600);
    EXPECT_TRUE(queue->Start().ok());
    proto::ScheduleRequest add;
    add.set_op(proto::ScheduleRequest::ADD);
    add.mutable_spec()->set_name("s");
    add.mutable_spec()->set_function("jobs:nightly");
    add.mutable_spec()->set_every_s(60);
    add.mutable_spec()->set_misfire(misfire);
    EXPECT_TRUE(Call([&](auto reply) { queue->Schedule(add, reply); }).error().empty());
  }

  // Runs `fn` with a reply callback and the io loop until the reply came (store work runs on the
  // committer's thread and comes back through the loop).
  proto::Reply Call(std::function<void(DurableQueue::Reply)> fn) {
    std::optional<proto::Reply> out;
    fn([&](proto::Reply r) { out = std::move(r); });
    for (int i = 0; i < 2000 && !out; ++i) Poll();
    EXPECT_TRUE(out.has_value());
    return out.value_or(proto::Reply{});
  }
  void Poll() {
    io.restart();
    io.poll();
    std::this_thread::sleep_for(1ms);
  }
  // Ticks, then lets the fires' store work finish.
  void TickAndSettle() {
    queue->Tick();
    for (int i = 0; i < 50; ++i) Poll();
  }
  int Fires() {
    proto::ScheduleRequest h;
    h.set_op(proto::ScheduleRequest::HISTORY);
    h.mutable_spec()->set_name("s");
    h.set_limit(1000);
    return Call([&](auto reply) { queue->Schedule(h, reply); }).fires_size();
  }

  FakeClock clock;  // wall clock 1,700,000,000 s: the 60 s slots fall at ...040, ...100, ...
  boost::asio::io_context io;
  NodeRegistry nodes{clock, LivenessConfig{}};
  TaskManager tasks{nodes, {}};
  std::unique_ptr<DurableQueue> queue;
};

// Down for 600 s: slots ...040 to ...580 are due; the last is 20 s old (on time), 9 are late.
TEST(DurableSchedules, MisfirePolicies) {
  for (auto [policy, fires] : {std::pair{"run_all", 10}, {"run_once", 2}, {"skip", 1}}) {
    Fixture f(policy);
    f.clock.Advance(600s);
    f.TickAndSettle();
    EXPECT_EQ(f.Fires(), fires) << policy;
    f.TickAndSettle();
    EXPECT_EQ(f.Fires(), fires) << policy << ": a slot is considered once";
  }
}

TEST(DurableSchedules, ClockStepsFireNothingTwice) {
  Fixture f("run_all");
  f.clock.Advance(130s);  // slots ...040 and ...100 (30 s old: on time)
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 2);
  f.clock.Advance(-600s);  // the clock steps back ten minutes
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 2) << "nothing fires again after a step back";
  f.clock.Advance(600s + 60s);  // past the next slot (...160) again
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 3) << "the next slot fires once";
}

}  // namespace
}  // namespace corral::head
