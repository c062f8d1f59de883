#include "corral/net/endpoint.h"

#include <gtest/gtest.h>

namespace corral::net {
namespace {

TEST(Endpoint, Parses) {
  auto a = ParseEndpoint("127.0.0.1:7370");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7370);
  EXPECT_TRUE(a->is_loopback());
  auto b = ParseEndpoint("[::1]:80");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->ToString(), "[::1]:80");
  auto c = ParseEndpoint("unix:/tmp/x.sock");
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->is_unix());
  EXPECT_EQ(ParseEndpoint("10.0.0.5", 7370)->port, 7370);
  EXPECT_FALSE(ParseEndpoint("10.0.0.5").has_value());
  EXPECT_FALSE(ParseEndpoint("host:99999").has_value());
  EXPECT_FALSE(ParseEndpoint(":80").has_value());
  EXPECT_FALSE(ParseEndpoint("10.0.0.5").value_or(Endpoint{}).is_loopback());
}

TEST(PeerHost, StripsThePortOnly) {
  EXPECT_EQ(PeerHost("10.0.0.5:7370"), "10.0.0.5");
  EXPECT_EQ(PeerHost("[::1]:80"), "::1");
  EXPECT_EQ(PeerHost("[fe80::1%eth0]:80"), "fe80::1%eth0");
  EXPECT_EQ(PeerHost("unix:/tmp/x.sock"), "unix:/tmp/x.sock");
  EXPECT_EQ(PeerHost("in-process agent"), "in-process agent");
}

}  // namespace
}  // namespace corral::net
