// The durable queue's schedules with an injected clock: misfire policies and clock steps.
#include "corral/head/durable_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace corral::head {
namespace {

using namespace std::chrono_literals;

// A MemoryStore whose schedule writes fail while `failing` is set (a full disk, a locked file).
class FlakyStore : public store::Store {
 public:
  std::atomic<bool> failing{false};

  Result<std::vector<store::SubmitResult>> Submit(const std::vector<store::DurableTask>& t) override { return s_->Submit(t); }
  Status Update(const std::vector<store::TaskUpdate>& u) override { return s_->Update(u); }
  Result<std::vector<store::SubmitResult>> Apply(const std::vector<store::DurableTask>& t,
                                                 const std::vector<store::TaskUpdate>& u) override { return s_->Apply(t, u); }
  Result<std::optional<store::DurableTask>> Get(const std::string& id) override { return s_->Get(id); }
  Result<std::vector<store::DurableTask>> List(const store::TaskFilter& f) override { return s_->List(f); }
  Result<std::vector<store::DurableTask>> Unfinished() override { return s_->Unfinished(); }
  Result<int> PurgeFinished(int64_t before, int limit) override { return s_->PurgeFinished(before, limit); }
  Result<bool> Forget(const std::string& id) override { return s_->Forget(id); }
  Status PutSchedule(const store::Schedule& sc) override { return failing ? Broken() : s_->PutSchedule(sc); }
  Result<std::optional<store::Schedule>> GetSchedule(const std::string& n) override { return s_->GetSchedule(n); }
  Result<std::vector<store::Schedule>> ListSchedules() override { return s_->ListSchedules(); }
  Result<bool> DeleteSchedule(const std::string& n) override {
    if (failing) return Err(Broken());
    return s_->DeleteSchedule(n);
  }
  Result<bool> RecordFire(const store::ScheduleFire& f, const store::DurableTask& t) override {
    if (failing) return Err(Broken());
    return s_->RecordFire(f, t);
  }
  Result<std::vector<store::ScheduleFire>> FireHistory(const std::string& n, int limit) override {
    return s_->FireHistory(n, limit);
  }
  Status PutQueue(const store::QueueConfig& q) override { return s_->PutQueue(q); }
  Result<std::vector<store::QueueConfig>> ListQueues() override { return s_->ListQueues(); }
  Result<std::vector<std::string>> KnownFunctions() override { return s_->KnownFunctions(); }
  Status Checkpoint() override { return s_->Checkpoint(); }

 private:
  static Status Broken() { return Status(Code::kInternal, "disk I/O error"); }
  std::unique_ptr<store::Store> s_ = store::NewMemoryStore();
};

struct Fixture {
  explicit Fixture(const std::string& misfire) {
    proto::NodeInfo info;  // registers the function; no Python yet, so nothing is ever dispatched
    info.set_node_id("n1");
    (*info.mutable_resources())["CPU"] = 1;
    info.add_task_functions("jobs:nightly");
    nodes.Register(info, nullptr, 1);
    auto st = std::make_unique<FlakyStore>();
    store = st.get();
    queue = std::make_unique<DurableQueue>(io, tasks, nodes, std::move(st), clock, DurableQueue::Options{.result_ttl_s = 3600});
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

  proto::Reply Op(proto::ScheduleRequest::Op op) {
    proto::ScheduleRequest r;
    r.set_op(op);
    r.mutable_spec()->set_name("s");
    return Call([&](auto reply) { queue->Schedule(r, reply); });
  }
  bool Listed() {
    proto::Reply r = Op(proto::ScheduleRequest::LIST);
    return r.schedules_size() == 1;
  }

  FlakyStore* store = nullptr;  // owned by the queue
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

TEST(DurableSchedules, AChangeTheStoreRefusedDoesNotTakeEffect) {
  Fixture f("run_all");
  f.store->failing = true;
  proto::Reply paused = f.Op(proto::ScheduleRequest::PAUSE);
  EXPECT_FALSE(paused.error().empty());
  EXPECT_EQ(paused.error_code(), static_cast<uint32_t>(Code::kUnavailable)) << "a store failure is transient";
  EXPECT_FALSE(f.Op(proto::ScheduleRequest::REMOVE).error().empty());
  f.store->failing = false;
  EXPECT_TRUE(f.Listed()) << "a removal the store refused must not remove it";
  f.clock.Advance(70s);
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 1) << "a pause the store refused must not pause it";
  EXPECT_TRUE(f.Op(proto::ScheduleRequest::PAUSE).error().empty());
  f.clock.Advance(60s);
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 1) << "a stored pause holds";
}

TEST(DurableSchedules, ASlotWhoseFireWasNotStoredFiresOnceLater) {
  Fixture f("run_all");
  f.store->failing = true;
  f.clock.Advance(70s);  // slot ...040 is due
  f.TickAndSettle();
  f.store->failing = false;
  EXPECT_EQ(f.Fires(), 0);
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 1) << "the slot whose fire failed to be stored fires at the next tick";
  f.TickAndSettle();
  EXPECT_EQ(f.Fires(), 1) << "and only once";
}

}  // namespace
}  // namespace corral::head
