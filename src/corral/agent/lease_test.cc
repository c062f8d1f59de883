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

TEST(Lease, StaysShorterThanTheHeadsDeadThreshold) {
  // The head declares the node dead `dead_after` after the last heartbeat it received; that one was
  // sent no later than received. With lease < dead_after the agent always stops first.
  const Nanos lease_len = Ms(22'500), dead_after = Ms(30'000);
  for (Nanos delay : {Nanos{0}, Ms(10), Ms(4000)}) {
    Lease lease;
    Nanos sent = Ms(5000);
    lease.Sent(7, sent);
    lease.Acked(7, lease_len);
    Nanos head_received = sent + delay;
    Nanos head_declares_dead = head_received + dead_after;
    EXPECT_LT(lease.expiry(), head_declares_dead);
    EXPECT_FALSE(lease.Valid(head_declares_dead));
  }
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
