#include "corral/agent/lease.h"

#include <gtest/gtest.h>

namespace corral::agent {
namespace {

TEST(Lease, NoLeaseBeforeTheFirstAck) {
  Lease lease;
  lease.Sent(1, Ms(100));
  EXPECT_FALSE(lease.Valid(Ms(100)));
}

TEST(Lease, RunsFromTheSendTimeNotTheAckTime) {
  Lease lease;
  lease.Sent(1, Ms(1000));
  lease.Acked(1, Ms(500));  // the ack arrives late: the lease still counts from 1000
  EXPECT_TRUE(lease.Valid(Ms(1499)));
  EXPECT_FALSE(lease.Valid(Ms(1500)));
}

// Heartbeats go out every interval without waiting for acks: an ack counts from the send time of
// the heartbeat it acknowledges, not from the latest one sent. (That the lease the head grants ends
// before the head declares the node dead is tested against the real NodeRegistry in
// tests/cc/lease_liveness_test.cc.)
TEST(Lease, AnAckCountsFromItsOwnHeartbeatNotTheLatestSent) {
  Lease lease;
  lease.Sent(1, Ms(1000));
  lease.Sent(2, Ms(2000));
  lease.Sent(3, Ms(3000));
  lease.Acked(1, Ms(500));
  EXPECT_EQ(lease.expiry(), Ms(1500));
  EXPECT_FALSE(lease.Valid(Ms(1500)));
  lease.Acked(2, Ms(500));  // still outstanding after the ack of 1
  EXPECT_EQ(lease.expiry(), Ms(2500));
}

TEST(Lease, RenewalsOnlyExtend) {
  Lease lease;
  lease.Sent(1, Ms(100));
  lease.Sent(2, Ms(200));
  lease.Acked(2, Ms(1000));
  lease.Acked(1, Ms(1000));  // older, out of order: ignored
  EXPECT_EQ(lease.expiry(), Ms(1200));
  lease.Sent(3, Ms(300));
  lease.Acked(3, Ms(100));   // a shorter lease granted later does not cut the one held
  EXPECT_EQ(lease.expiry(), Ms(1200));
}

TEST(Lease, UnknownAcksAndResetGiveNothing) {
  Lease lease;
  lease.Acked(9, Ms(1000));
  EXPECT_FALSE(lease.granted());
  lease.Sent(1, Ms(0));
  lease.Acked(1, Ms(1000));
  EXPECT_TRUE(lease.Valid(Ms(10)));
  lease.Reset();
  EXPECT_FALSE(lease.Valid(Ms(10)));
  lease.Acked(1, Ms(1000));  // an ack for a heartbeat of the previous registration
  EXPECT_FALSE(lease.granted());
}

}  // namespace
}  // namespace corral::agent
