#include "corral/base/ids.h"

#include <gtest/gtest.h>

namespace corral {
namespace {

TEST(Ids, HexRoundTrip) {
  std::string raw = RandomBytes(16);
  std::string back;
  ASSERT_TRUE(FromHex(Hex(raw), &back));
  EXPECT_EQ(back, raw);
  EXPECT_FALSE(FromHex("abc", &back));
  EXPECT_FALSE(FromHex("zz", &back));
}

TEST(Ids, TaskIdsAreOrderedByCounter) {
  std::string a = MakeTaskId("prefix!!", 1), b = MakeTaskId("prefix!!", 256);
  EXPECT_EQ(a.size(), 16u);
  EXPECT_LT(a, b);
  EXPECT_EQ(a.substr(0, 8), "prefix!!");
}

}  // namespace
}  // namespace corral
