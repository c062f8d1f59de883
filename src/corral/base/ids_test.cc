#include "corral/base/ids.h"

#include <gtest/gtest.h>

namespace corral {
namespace {

TEST(Ids, HexRoundTrip) {
  std::string raw = RandomBytes(16);
  auto back = FromHex(Hex(raw));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, raw);
  EXPECT_EQ(FromHex("00Ff"), std::string("\x00\xff", 2));
  EXPECT_FALSE(FromHex("abc"));
  EXPECT_FALSE(FromHex("zz"));
}

TEST(Ids, TaskIdsAreOrderedByCounter) {
  std::string a = MakeTaskId("prefix!!", 1), b = MakeTaskId("prefix!!", 256);
  EXPECT_EQ(a.size(), 16u);
  EXPECT_LT(a, b);
  EXPECT_EQ(a.substr(0, 8), "prefix!!");
}

}  // namespace
}  // namespace corral

namespace corral {
namespace {

TEST(Ids, TaskIdTextShowsDurableIdsAsTextAndOthersInHex) {
  EXPECT_EQ(TaskIdText("5f0c9a1e-7b2d#0"), "5f0c9a1e-7b2d#0");  // a durable run
  EXPECT_EQ(TaskIdText("c8ab31f0"), "c8ab31f0");                // a durable task
  std::string raw("\x7c\x1f\x0e\x2a\x93\xb4\xd5\xe6\0\0\0\0\0\0\0\x02", 16);  // a client's id, then its counter
  EXPECT_EQ(TaskIdText(raw), "7c1f0e2a93b4d5e60000000000000002");
  EXPECT_EQ(TaskIdText(""), "");
}

}  // namespace
}  // namespace corral
