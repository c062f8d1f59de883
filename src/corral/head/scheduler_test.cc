#include "corral/head/scheduler.h"

#include "corral/base/ids.h"

#include <gtest/gtest.h>

namespace corral::head {
namespace {

ResourceSet R(double cpu, double gpu = 0, double laptop = 0) {
  ResourceSet r;
  r.Set(kCpu, cpu);
  r.Set(kGpu, gpu);
  r.Set("laptop", laptop);
  return r;
}

NodeView Node(std::string id, uint64_t order, ResourceSet total) {
  NodeView n;
  n.id = std::move(id);
  n.order = order;
  n.schedulable = true;
  n.total = total;
  n.available = total;
  n.python = "3.11.7";
  n.prefetch_limit = 2;
  return n;
}

Request Req(ResourceSet r) {
  Request req;
  req.resources = r;
  req.python = "3.11";
  return req;
}

TEST(Place, SpreadsToLeastUtilised) {
  NodeView a = Node("a", 1, R(4)), b = Node("b", 2, R(4));
  a.available = R(2);  // a is half busy
  auto p = Place(Req(R(1)), {&a, &b});
  ASSERT_EQ(p.kind, Placement::kPlaced);
  EXPECT_EQ(p.node->id, "b");
  EXPECT_FALSE(p.prefetch);
}

TEST(Place, PrefersTheNodeHoldingTheArgumentsWhenItHasRoom) {
  NodeView a = Node("a", 1, R(4)), b = Node("b", 2, R(4));
  a.available = R(1);  // a is busier, but holds the task's stored arguments
  auto p = Place(Req(R(1)), {&a, &b}, "a");
  ASSERT_EQ(p.kind, Placement::kPlaced);
  EXPECT_EQ(p.node->id, "a");
  a.available = R(0);  // full: the task runs elsewhere rather than wait
  p = Place(Req(R(1)), {&a, &b}, "a");
  ASSERT_EQ(p.kind, Placement::kPlaced);
  EXPECT_EQ(p.node->id, "b");
  EXPECT_FALSE(p.prefetch);
  a.available = R(4);
  a.labels = {{"zone", "x"}};
  Request zoned = Req(R(1));
  zoned.label_selector = {{"zone", "y"}};  // not eligible: its selector wins over locality
  b.labels = {{"zone", "y"}};
  p = Place(zoned, {&a, &b}, "a");
  ASSERT_EQ(p.kind, Placement::kPlaced);
  EXPECT_EQ(p.node->id, "b");
}

TEST(Place, TiesGoToFirstRegistered) {
  NodeView a = Node("a", 2, R(4)), b = Node("b", 1, R(4));
  EXPECT_EQ(Place(Req(R(1)), {&a, &b}).node->id, "b");
}

TEST(Place, OnlyWhereResourcesFit) {
  NodeView cpu = Node("cpu", 1, R(8)), gpu = Node("gpu", 2, R(2, 1));
  EXPECT_EQ(Place(Req(R(1, 1)), {&cpu, &gpu}).node->id, "gpu");
  gpu.available = R(2, 0);
  EXPECT_EQ(Place(Req(R(1, 1)), {&cpu, &gpu}).kind, Placement::kWait);  // GPU busy: wait, no prefetch
}

TEST(Place, CustomResourcesAndLabels) {
  NodeView laptop = Node("laptop", 1, R(2, 0, 1)), server = Node("server", 2, R(16));
  server.labels["zone"] = "office";
  EXPECT_EQ(Place(Req(R(1, 0, 1)), {&laptop, &server}).node->id, "laptop");
  Request r = Req(R(1));
  r.label_selector["zone"] = "office";
  EXPECT_EQ(Place(r, {&laptop, &server}).node->id, "server");
  r.label_selector["zone"] = "home";
  auto p = Place(r, {&laptop, &server});
  EXPECT_EQ(p.kind, Placement::kInfeasible);
  EXPECT_NE(p.reason.find("zone=home"), std::string::npos) << p.reason;
}

TEST(Place, NodeIdLabelPinsToThatNode) {
  NodeView a = Node("a", 1, R(8)), b = Node("b", 2, R(8));
  Request r = Req(R(1));
  r.label_selector[kNodeIdLabel] = Hex("b");  // ids are bytes; the label is their hex
  EXPECT_EQ(Place(r, {&a, &b}).node->id, "b");  // a is as idle, and registered first
  r.label_selector[kNodeIdLabel] = "gone";
  EXPECT_EQ(Place(r, {&a, &b}).kind, Placement::kInfeasible);
}

TEST(Place, InfeasibleSaysWhat) {
  NodeView a = Node("a", 1, R(2));
  auto p = Place(Req(R(1, 1)), {&a});
  EXPECT_EQ(p.kind, Placement::kInfeasible);
  EXPECT_NE(p.reason.find("GPU=1"), std::string::npos) << p.reason;
}

TEST(Place, NoNodesYetMeansWait) {
  EXPECT_EQ(Place(Req(R(1)), {}).kind, Placement::kWait);
}

TEST(Place, PrefetchWhenFullThenWait) {
  NodeView a = Node("a", 1, R(2));
  a.available = R(0);
  auto p = Place(Req(R(1)), {&a});
  ASSERT_EQ(p.kind, Placement::kPlaced);
  EXPECT_TRUE(p.prefetch);
  a.prefetched = 2;
  EXPECT_EQ(Place(Req(R(1)), {&a}).kind, Placement::kWait);
}

TEST(Place, SuspectNodesTakeNoNewWorkButStayFeasible) {
  NodeView a = Node("a", 1, R(2));
  a.schedulable = false;
  EXPECT_EQ(Place(Req(R(1)), {&a}).kind, Placement::kWait);
}

TEST(Place, CloudpickleMajorMustMatch) {
  NodeView a = Node("a", 1, R(2));
  a.cloudpickle = "3.1.3";
  Request r = Req(R(1));
  r.cloudpickle_major = "3";
  EXPECT_EQ(Place(r, {&a}).kind, Placement::kPlaced);
  r.cloudpickle_major = "2";
  auto p = Place(r, {&a});
  EXPECT_EQ(p.kind, Placement::kInfeasible);
  EXPECT_NE(p.reason.find("cloudpickle 2"), std::string::npos) << p.reason;
}

TEST(Place, PythonVersionMustMatch) {
  NodeView a = Node("a", 1, R(2));
  a.python = "3.12.1";
  EXPECT_EQ(Place(Req(R(1)), {&a}).kind, Placement::kInfeasible);
  a.python = "";  // not known yet: may fit later
  EXPECT_EQ(Place(Req(R(1)), {&a}).kind, Placement::kWait);
  EXPECT_TRUE(PythonMatches("3.11.7", "3.11"));
  EXPECT_FALSE(PythonMatches("3.110.1", "3.11"));
}

TEST(Place, CpuWorkKeepsOffGpuNodesWhileAnotherHasRoom) {
  NodeView gpu = Node("gpu", 1, R(8, 1)), cpu = Node("cpu", 2, R(2));
  cpu.available = R(1);  // more utilised than the GPU node, which would win on utilisation alone
  EXPECT_EQ(Place(Req(R(1)), {&gpu, &cpu}).node->id, "cpu");
  cpu.available = R(0);
  auto p = Place(Req(R(1)), {&gpu, &cpu});
  ASSERT_EQ(p.kind, Placement::kPlaced);
  EXPECT_EQ(p.node->id, "gpu") << "no other node has room: the GPU node takes it";
  EXPECT_FALSE(p.prefetch) << "running at once on the GPU node beats waiting behind the busy one";
  EXPECT_EQ(Place(Req(R(1, 1)), {&gpu, &cpu}).node->id, "gpu");
}

TEST(Slots, CountsWhatTheNodeCouldRunAtOnce) {
  NodeView cpu = Node("cpu", 1, R(4)), gpu = Node("gpu", 2, R(8, 2));
  gpu.labels = {{"kind", "gpu"}};
  EXPECT_EQ(Slots(Req(R(1)), cpu), 4);
  EXPECT_EQ(Slots(Req(R(1)), gpu), 8);
  EXPECT_EQ(Slots(Req(R(1, 1)), gpu), 2) << "the scarcest resource bounds it";
  EXPECT_EQ(Slots(Req(R(1, 1)), cpu), 0);
  Request pinned = Req(R(1));
  pinned.label_selector = {{"kind", "gpu"}};
  EXPECT_EQ(Slots(pinned, cpu), 0);
  EXPECT_EQ(Slots(pinned, gpu), 8);
  cpu.interruptible_only = true;
  EXPECT_EQ(Slots(Req(R(1)), cpu), 0);
  gpu.schedulable = false;
  EXPECT_EQ(Slots(pinned, gpu), 0) << "a node that takes no new work has no slots";
}

}  // namespace
}  // namespace corral::head
