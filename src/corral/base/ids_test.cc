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
