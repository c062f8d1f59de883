#include "corral/head/gang_book.h"

#include <gtest/gtest.h>

namespace corral::head {
namespace {

proto::NodeInfo Info(const std::string& id, double cpus, double gpus = 0) {
  proto::NodeInfo info;
  info.set_node_id(id);
  (*info.mutable_resources())["CPU"] = cpus;
  if (gpus > 0) (*info.mutable_resources())["GPU"] = gpus;
  info.set_python_version("3.11.7");
  return info;
}

proto::GangRequest Request(const std::string& id, int members, double cpus, const std::string& strategy) {
  proto::GangRequest r;
  r.set_gang_id(id);
  r.set_strategy(strategy);
  for (int i = 0; i < members; ++i) (*r.add_bundles()->mutable_resources())["CPU"] = cpus;
  return r;
}

ResourceSet Cpus(double n) {
  ResourceSet r;
  r.Set(kCpu, n);
  return r;
}

struct Fixture {
  FakeClock clock;
  NodeRegistry nodes{clock, LivenessConfig{}};
  GangBook gangs{nodes};
};

TEST(GangBook, ReservingMovesResourcesIntoTheGangsNames) {
  Fixture f;
  Node* a = f.nodes.Register(Info("a", 4), nullptr, 1);
  auto g = f.gangs.Create(Request("g1", 2, 1, "strict_pack"), "owner");
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ((*g)->state, GangBook::State::kReady);
  EXPECT_EQ(a->view.available.Get(kCpu), 2) << "two of its four CPUs are the gang's now";
  ResourceSet member0 = GangRequestFor("g1", 0, Cpus(1));
  EXPECT_TRUE(a->view.available.Contains(member0));
  EXPECT_TRUE(a->view.total.Contains(member0));
  ResourceSet too_much = GangRequestFor("g1", 0, Cpus(2));
  EXPECT_FALSE(a->view.total.Contains(too_much)) << "member 0 holds one CPU";
  EXPECT_TRUE(a->view.available.Contains(GangRequestFor("g1", -1, Cpus(2)))) << "both bundles are on a";
  f.gangs.Remove("g1");
  EXPECT_EQ(a->view.available, a->view.total);
  EXPECT_EQ(a->view.total, Cpus(4)) << "no name of the gang is left behind";
}

TEST(GangBook, TheGangsNamesSurviveTheNodesUpdate) {
  Fixture f;
  Node* a = f.nodes.Register(Info("a", 4), nullptr, 1);
  ASSERT_TRUE(f.gangs.Create(Request("g1", 1, 2, "pack"), "owner"));
  f.nodes.Update(a, Info("a", 4));  // e.g. its Python became known
  EXPECT_TRUE(a->view.total.Contains(GangRequestFor("g1", 0, Cpus(2))));
}

TEST(GangBook, WaitsWholeThenReservesWhenRoomComes) {
  Fixture f;
  Node* a = f.nodes.Register(Info("a", 2), nullptr, 1);
  Node* b = f.nodes.Register(Info("b", 2), nullptr, 1);
  b->view.available = Cpus(0);  // busy
  auto g = f.gangs.Create(Request("g1", 2, 2, "strict_spread"), "owner");
  ASSERT_TRUE(g);
  EXPECT_EQ((*g)->state, GangBook::State::kPending);
  EXPECT_TRUE(f.gangs.HasPending());
  EXPECT_EQ(a->view.available, Cpus(2)) << "a waiting gang holds nothing";
  EXPECT_FALSE(f.gangs.ReservePending());
  b->view.available = Cpus(2);
  EXPECT_TRUE(f.gangs.ReservePending());
  EXPECT_EQ(f.gangs.Find("g1")->state, GangBook::State::kReady);
  EXPECT_EQ(a->view.available.Get(kCpu), 0);
  EXPECT_EQ(b->view.available.Get(kCpu), 0);
}

TEST(GangBook, ANodeGoneReleasesTheWholeGangAndSaysWhich) {
  Fixture f;
  Node* a = f.nodes.Register(Info("a", 2), nullptr, 1);
  Node* b = f.nodes.Register(Info("b", 2), nullptr, 1);
  ASSERT_TRUE(f.gangs.Create(Request("g1", 2, 2, "strict_spread"), "owner"));
  f.nodes.MarkDead(b);
  f.gangs.NodeGone(b->view.id);
  const GangBook::Gang* g = f.gangs.Find("g1");
  EXPECT_EQ(g->state, GangBook::State::kPending);
  EXPECT_EQ(a->view.available, Cpus(2)) << "the survivor's share came back";
  EXPECT_FALSE(f.gangs.ReservePending()) << "one node cannot hold a strict_spread of two";
  EXPECT_NE(g->reason.find("died"), std::string::npos) << g->reason;
  EXPECT_NE(g->reason.find("could ever hold"), std::string::npos) << g->reason;
}

TEST(GangBook, TasksAskingMoreThanTheirMemberHoldsAreRefused) {
  Fixture f;
  f.nodes.Register(Info("a", 4), nullptr, 1);
  auto g = f.gangs.Create(Request("g1", 2, 1, "pack"), "owner");
  ASSERT_TRUE(g);
  EXPECT_TRUE(f.gangs.CheckFits(**g, 0, Cpus(1)).ok());
  EXPECT_FALSE(f.gangs.CheckFits(**g, 0, Cpus(2)).ok());
  EXPECT_FALSE(f.gangs.CheckFits(**g, -1, Cpus(2)).ok());
  Status s = f.gangs.CheckFits(**g, 2, Cpus(1));
  EXPECT_NE(s.message().find("members 0..1"), std::string::npos) << s.message();
}

TEST(GangBook, BadRequestsAreRefused) {
  Fixture f;
  EXPECT_FALSE(f.gangs.Create(Request("g", 0, 1, "pack"), "o"));
  EXPECT_FALSE(f.gangs.Create(Request("g", 1, 1, "diagonal"), "o"));
  proto::GangRequest empty = Request("g", 1, 0, "pack");
  auto r = f.gangs.Create(empty, "o");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("no resources"), std::string::npos);
  proto::GangRequest sneaky = Request("g", 1, 1, "pack");
  (*sneaky.mutable_bundles(0)->mutable_resources())["gang:ff:0:CPU"] = 1;
  EXPECT_FALSE(f.gangs.Create(sneaky, "o")) << "a gang's names are not for asking";
  ASSERT_TRUE(f.gangs.Create(Request("g", 1, 1, "pack"), "o"));
  EXPECT_FALSE(f.gangs.Create(Request("g", 1, 1, "pack"), "o")) << "ids are unique";
}

TEST(GangBook, OwnedByListsOnlyWhatEndsWithItsCreator) {
  Fixture f;
  proto::GangRequest kept = Request("k", 1, 1, "pack");
  kept.set_detached(true);
  ASSERT_TRUE(f.gangs.Create(kept, "me"));
  ASSERT_TRUE(f.gangs.Create(Request("m", 1, 1, "pack"), "me"));
  ASSERT_TRUE(f.gangs.Create(Request("o", 1, 1, "pack"), "other"));
  EXPECT_EQ(f.gangs.OwnedBy("me"), std::vector<std::string>{"m"});
}

}  // namespace
}  // namespace corral::head
