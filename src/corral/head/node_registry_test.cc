#include "corral/head/node_registry.h"

#include <gtest/gtest.h>

namespace corral::head {
namespace {

using namespace std::chrono_literals;

proto::NodeInfo Info(const std::string& id, double cpus) {
  proto::NodeInfo info;
  info.set_node_id(id);
  (*info.mutable_resources())["CPU"] = cpus;
  info.set_python_version("3.11.7");
  return info;
}

TEST(NodeRegistry, AliveSuspectDead) {
  FakeClock clock;
  NodeRegistry reg(clock, LivenessConfig{Ms(1000), Ms(3000), Ms(10000)});
  Node* n = reg.Register(Info("n1", 4), nullptr, 1);
  EXPECT_EQ(n->view.prefetch_limit, 4);
  EXPECT_EQ(reg.LiveViews().size(), 1u);
  clock.Advance(2s);
  EXPECT_TRUE(reg.Tick().empty());
  EXPECT_EQ(n->state, NodeState::kAlive);
  clock.Advance(2s);
  EXPECT_TRUE(reg.Tick().empty());
  EXPECT_EQ(n->state, NodeState::kSuspect);
  EXPECT_FALSE(n->view.schedulable);
  reg.Heartbeat(n);
  EXPECT_EQ(n->state, NodeState::kAlive);
  clock.Advance(10s);
  auto died = reg.Tick();
  ASSERT_EQ(died.size(), 1u);
  EXPECT_EQ(died[0], n);
  EXPECT_TRUE(reg.LiveViews().empty());
  EXPECT_TRUE(reg.Tick().empty());  // reported once
}

TEST(NodeRegistry, SameIdRevivesAndKeepsOrder) {
  FakeClock clock;
  NodeRegistry reg(clock, LivenessConfig{});
  Node* a = reg.Register(Info("a", 1), nullptr, 1);
  reg.Register(Info("b", 1), nullptr, 1);
  reg.MarkDead(a);
  EXPECT_EQ(reg.LiveViews().size(), 1u);
  Node* again = reg.Register(Info("a", 2), nullptr, 1);
  EXPECT_EQ(again, a);
  EXPECT_EQ(again->state, NodeState::kAlive);
  EXPECT_EQ(again->view.total.Get("CPU"), 2);
  ASSERT_EQ(reg.LiveViews().size(), 2u);
  EXPECT_EQ(reg.LiveViews()[0]->id, "a");
}

TEST(NodeRegistry, LostConnectionKeepsTasksUntilDead) {
  FakeClock clock;
  NodeRegistry reg(clock, LivenessConfig{Ms(1000), Ms(3000), Ms(10000)});
  Node* n = reg.Register(Info("n1", 2), nullptr, 1);
  n->tasks.insert("t1");
  reg.Disconnected(n);
  EXPECT_EQ(n->state, NodeState::kSuspect);
  EXPECT_FALSE(n->view.schedulable);
  reg.Heartbeat(n);  // a heartbeat without a connection (a late message) does not make it usable
  EXPECT_FALSE(n->view.schedulable);
  clock.Advance(9s);
  EXPECT_TRUE(reg.Tick().empty());
  EXPECT_EQ(n->tasks.size(), 1u) << "its tasks wait for it while its lease may last";
  bool resumed = false;
  Node* back = reg.Register(Info("n1", 2), nullptr, 1, &resumed);
  EXPECT_TRUE(resumed);
  EXPECT_EQ(back, n);
  EXPECT_EQ(n->tasks.size(), 1u);
  EXPECT_EQ(n->state, NodeState::kAlive);
  EXPECT_TRUE(n->view.schedulable);
  reg.Disconnected(n);
  clock.Advance(10s);
  ASSERT_EQ(reg.Tick().size(), 1u);
  EXPECT_EQ(n->state, NodeState::kDead);
  reg.Register(Info("n1", 2), nullptr, 1, &resumed);
  EXPECT_FALSE(resumed) << "a dead node starts afresh";
  EXPECT_TRUE(n->tasks.empty());
}

TEST(NodeRegistry, ACapShrinksWhatTheNodeCountsForAndQueuesAhead) {
  FakeClock clock;
  NodeRegistry reg(clock, LivenessConfig{});
  Node* n = reg.Register(Info("n1", 8), nullptr, 2);
  EXPECT_EQ(n->view.prefetch_limit, 16);
  reg.SetCaps("n1", {{"CPU", 2}});
  EXPECT_EQ(n->view.total.Get("CPU"), 2);
  EXPECT_EQ(n->view.available.Get("CPU"), 2);
  EXPECT_EQ(n->view.prefetch_limit, 4);
  reg.SetCaps("n1", {});
  EXPECT_EQ(n->view.prefetch_limit, 16);
}

TEST(NodeRegistry, LeaseIsShorterThanTheDeadThreshold) {
  LivenessConfig c{Ms(1000), Ms(5000), Ms(30000)};
  EXPECT_EQ(c.EffectiveLease(), Ms(22500));
  EXPECT_LT(c.EffectiveLease(), c.dead_after);
  c.lease = Ms(1000);
  EXPECT_EQ(c.EffectiveLease(), Ms(1000));
}

TEST(NodeRegistry, DrainingTakesNoWorkAndLeftIsNeitherLiveNorDead) {
  FakeClock clock;
  NodeRegistry reg(clock, LivenessConfig{Ms(1000), Ms(3000), Ms(10000)});
  Node* n = reg.Register(Info("n1", 2), nullptr, 1);
  reg.SetDraining(n, true);
  EXPECT_EQ(n->state, NodeState::kAlive);
  EXPECT_FALSE(n->view.schedulable);
  clock.Advance(2s);
  reg.Heartbeat(n);
  EXPECT_FALSE(n->view.schedulable) << "a heartbeat does not end a drain";
  reg.MarkLeft(n);
  EXPECT_TRUE(reg.LiveViews().empty());
  clock.Advance(60s);
  EXPECT_TRUE(reg.Tick().empty()) << "a node that left is never declared dead";
  EXPECT_EQ(n->state, NodeState::kLeft);
  bool resumed = true;
  reg.Register(Info("n1", 2), nullptr, 1, &resumed);
  EXPECT_FALSE(resumed);
  EXPECT_TRUE(n->view.schedulable);
}

}  // namespace
}  // namespace corral::head
