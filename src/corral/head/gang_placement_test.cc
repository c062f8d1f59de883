#include "corral/head/gang_placement.h"

#include <gtest/gtest.h>

namespace corral::head {
namespace {

ResourceSet R(double cpu, double gpu = 0) {
  ResourceSet r;
  r.Set(kCpu, cpu);
  r.Set(kGpu, gpu);
  return r;
}

NodeView Node(std::string id, uint64_t order, ResourceSet total) {
  NodeView n;
  n.id = std::move(id);
  n.order = order;
  n.schedulable = true;
  n.total = total;
  n.available = total;
  return n;
}

std::vector<std::string> Ids(const GangPlan& plan) {
  std::vector<std::string> out;
  for (const NodeView* n : plan.nodes) out.push_back(n->id);
  return out;
}

using Ids_ = std::vector<std::string>;

TEST(GangPlacement, StrictSpreadNeedsADistinctNodeForEach) {
  NodeView a = Node("a", 1, R(2)), b = Node("b", 2, R(2)), c = Node("c", 3, R(2));
  auto plan = PlanGang({R(2), R(2), R(2)}, GangStrategy::kStrictSpread, {&a, &b, &c});
  ASSERT_TRUE(plan.placed);
  EXPECT_EQ(Ids(plan), Ids_({"a", "b", "c"}));
  plan = PlanGang({R(1), R(1), R(1), R(1)}, GangStrategy::kStrictSpread, {&a, &b, &c});
  EXPECT_FALSE(plan.placed);
  EXPECT_FALSE(plan.feasible) << "four members, three nodes: never";
  EXPECT_NE(plan.reason.find("4 x {CPU=1}"), std::string::npos) << plan.reason;
  EXPECT_NE(plan.reason.find("strict_spread"), std::string::npos) << plan.reason;
}

TEST(GangPlacement, StrictPackTakesOneNodeThatHoldsTheSum) {
  NodeView a = Node("a", 1, R(2)), b = Node("b", 2, R(4));
  auto plan = PlanGang({R(1), R(1), R(1)}, GangStrategy::kStrictPack, {&a, &b});
  ASSERT_TRUE(plan.placed);
  EXPECT_EQ(Ids(plan), Ids_({"b", "b", "b"}));
  b.available = R(2);
  plan = PlanGang({R(1), R(1), R(1)}, GangStrategy::kStrictPack, {&a, &b});
  EXPECT_FALSE(plan.placed);
  EXPECT_TRUE(plan.feasible) << "b could hold it once its tasks end";
  EXPECT_NE(plan.reason.find("waiting for free resources"), std::string::npos) << plan.reason;
}

TEST(GangPlacement, PackFillsANodeBeforeTheNext) {
  NodeView a = Node("a", 1, R(4)), b = Node("b", 2, R(4));
  auto plan = PlanGang({R(2), R(2), R(2)}, GangStrategy::kPack, {&a, &b});
  ASSERT_TRUE(plan.placed);
  EXPECT_EQ(Ids(plan), Ids_({"a", "a", "b"}));
}

TEST(GangPlacement, SpreadUsesEveryNodeThenDoublesUp) {
  NodeView a = Node("a", 1, R(4)), b = Node("b", 2, R(4));
  auto plan = PlanGang({R(1), R(1), R(1)}, GangStrategy::kSpread, {&a, &b});
  ASSERT_TRUE(plan.placed);
  EXPECT_EQ(Ids(plan), Ids_({"a", "b", "a"}));
}

TEST(GangPlacement, AllOrNothingWhenOnlyPartFits) {
  NodeView a = Node("a", 1, R(2)), b = Node("b", 2, R(2)), c = Node("c", 3, R(2));
  c.available = R(0);  // busy
  auto plan = PlanGang({R(2), R(2), R(2)}, GangStrategy::kSpread, {&a, &b, &c});
  EXPECT_FALSE(plan.placed);
  EXPECT_TRUE(plan.nodes.empty()) << "nothing is handed out for part of a gang";
  EXPECT_TRUE(plan.feasible);
}

TEST(GangPlacement, NodesThatTakeNoWorkOrAreLaptopsHoldNone) {
  NodeView a = Node("a", 1, R(2)), b = Node("b", 2, R(2)), laptop = Node("l", 3, R(8));
  b.schedulable = false;
  laptop.interruptible_only = true;
  auto plan = PlanGang({R(1), R(1)}, GangStrategy::kStrictSpread, {&a, &b, &laptop});
  EXPECT_FALSE(plan.placed);
  plan = PlanGang({R(1), R(1)}, GangStrategy::kPack, {&a, &b, &laptop});
  ASSERT_TRUE(plan.placed);
  EXPECT_EQ(Ids(plan), Ids_({"a", "a"}));
}

TEST(GangPlacement, GpusCountLikeAnyResource) {
  NodeView cpu = Node("cpu", 1, R(8)), gpu = Node("gpu", 2, R(8, 2));
  auto plan = PlanGang({R(1, 1), R(1, 1)}, GangStrategy::kPack, {&cpu, &gpu});
  ASSERT_TRUE(plan.placed);
  EXPECT_EQ(Ids(plan), Ids_({"gpu", "gpu"}));
  EXPECT_FALSE(PlanGang({R(1, 1), R(1, 1), R(1, 1)}, GangStrategy::kPack, {&cpu, &gpu}).feasible);
}

TEST(GangPlacement, StrategiesByName) {
  EXPECT_EQ(*ParseGangStrategy("STRICT_SPREAD"), GangStrategy::kStrictSpread);
  EXPECT_EQ(*ParseGangStrategy("pack"), GangStrategy::kPack);
  auto bad = ParseGangStrategy("round_robin");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("strict_pack"), std::string::npos);
}

}  // namespace
}  // namespace corral::head
