#include "corral/base/status.h"

#include <gtest/gtest.h>

namespace corral {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Err(Code::kInvalidArgument, fmt::format("{} is odd", x));
  return x / 2;
}

TEST(Status, OkByDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(Status, CarriesCodeAndMessage) {
  Status s = MakeStatus(Code::kUnavailable, "peer {} gone", "a");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsRetryable());
  EXPECT_EQ(s.ToString(), "UNAVAILABLE: peer a gone");
  EXPECT_FALSE(Status(Code::kInvalidArgument, "x").IsRetryable());
}

TEST(Result, ValueOrError) {
  EXPECT_EQ(*Half(4), 2);
  auto r = Half(3);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "3 is odd");
}

}  // namespace
}  // namespace corral
