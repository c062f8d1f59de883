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

}  // namespace
}  // namespace corral::head
