// Lease: how long this agent may keep running attempts without hearing from the head.
//
// Every heartbeat acknowledgement renews the lease to (the time the agent SENT that heartbeat) +
// lease_ms. The head last heard from the agent no earlier than that send time, and declares the
// node dead only dead_after (> lease) after it last heard: so the lease always runs out on the
// agent before the head may re-queue the agent's attempts, whatever the network delay. Both sides
// measure with CLOCK_BOOTTIME, so time spent suspended counts on both. Pure arithmetic, no I/O.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>

#include "corral/base/clock.h"

namespace corral::agent {

class Lease {
 public:
  // A heartbeat with `seq` leaves at `now`.
  void Sent(uint64_t seq, Nanos now);
  // The head acknowledged `seq` granting `lease`. Acks of unknown or older heartbeats are ignored.
  void Acked(uint64_t seq, Nanos lease);
  bool Valid(Nanos now) const { return granted_ && now < expiry_; }
  bool granted() const { return granted_; }
  Nanos expiry() const { return expiry_; }
  // Forget everything (a new registration starts without a lease until the first ack).
  void Reset();

 private:
  std::deque<std::pair<uint64_t, Nanos>> sent_;  // unacknowledged heartbeats, oldest first
  Nanos expiry_ = 0;
  bool granted_ = false;
};

}  // namespace corral::agent
