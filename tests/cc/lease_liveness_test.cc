// The agent's lease against the head's dead declaration, on one injected clock: the lease the head
// grants (LivenessConfig::EffectiveLease) always runs out on the agent strictly before the head's
// NodeRegistry declares the node dead, whatever the heartbeat's network delay and the configured lease.
#include <gtest/gtest.h>

#include "corral/agent/lease.h"
#include "corral/head/node_registry.h"

namespace corral {
namespace {

struct Outcome {
  bool granted = false;            // the ack granted a lease
  bool valid_before_death = true;  // at the last 1 ms step before the node was declared dead
  Nanos dead_after_heartbeat = 0;  // when the node was declared dead, counted from the head's receipt
};

// One heartbeat: the agent sends it, the head receives it `delay` later and acks it with its lease.
// Then nothing more arrives; the clock moves in 1 ms steps, the registry ticking at each, until the
// registry declares the node dead.
Outcome HeartbeatThenSilence(const head::LivenessConfig& config, Nanos delay) {
  FakeClock clock;
  head::NodeRegistry registry(clock, config);
  proto::NodeInfo info;
  info.set_node_id("n1");
  (*info.mutable_resources())["CPU"] = 1;
  head::Node* node = registry.Register(info, nullptr, 1);

  agent::Lease lease;
  lease.Sent(1, clock.BootTimeNs());
  clock.Advance(std::chrono::nanoseconds(delay));
  registry.Heartbeat(node);
  Nanos received = clock.BootTimeNs();
  lease.Acked(1, config.EffectiveLease());

  Outcome out;
  out.granted = lease.granted();
  Nanos last = clock.BootTimeNs();
  for (Nanos waited = 0; waited <= 2 * config.dead_after; waited += Ms(1)) {
    if (!registry.Tick().empty()) break;
    last = clock.BootTimeNs();
    clock.Advance(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(node->state, head::NodeState::kDead);
  out.valid_before_death = lease.Valid(last);
  out.dead_after_heartbeat = clock.BootTimeNs() - received;
  return out;
}

TEST(LeaseAndLiveness, TheLeaseRunsOutBeforeTheHeadDeclaresTheNodeDead) {
  for (Nanos dead_after : {Ms(3'000), Ms(10'000), Ms(30'000)}) {
    // 0: the default; the others explicit, some of them at or past the dead threshold.
    for (Nanos lease : {Nanos{0}, Ms(1'000), dead_after - Ms(1), dead_after, dead_after + Ms(1), 2 * dead_after}) {
      for (Nanos delay : {Nanos{0}, Ms(1), Ms(250), dead_after / 2}) {
        head::LivenessConfig config{Ms(1'000), dead_after / 6, dead_after, lease};
        Outcome o = HeartbeatThenSilence(config, delay);
        SCOPED_TRACE(testing::Message() << "dead_after " << dead_after / 1'000'000 << " ms, lease "
                                        << lease / 1'000'000 << " ms, delay " << delay / 1'000'000 << " ms");
        EXPECT_TRUE(o.granted);
        EXPECT_GE(o.dead_after_heartbeat, dead_after) << "declared dead before its threshold";
        EXPECT_FALSE(o.valid_before_death) << "the lease still held 1 ms before the node was declared dead";
      }
    }
  }
}

TEST(LeaseAndLiveness, ALeaseAtOrPastTheDeadThresholdFallsBackToThreeQuarters) {
  head::LivenessConfig config{Ms(1'000), Ms(5'000), Ms(30'000), Ms(30'000)};
  EXPECT_EQ(config.EffectiveLease(), Ms(22'500));
  config.lease = Ms(29'999);
  EXPECT_EQ(config.EffectiveLease(), Ms(29'999)) << "an explicit lease below the threshold is kept";
}

}  // namespace
}  // namespace corral
