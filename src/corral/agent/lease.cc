#include "corral/agent/lease.h"

#include <algorithm>

namespace corral::agent {

namespace {
constexpr size_t kMaxUnacked = 1024;  // a head that never acks must not make this grow forever
}

void Lease::Sent(uint64_t seq, Nanos now) {
  sent_.emplace_back(seq, now);
  if (sent_.size() > kMaxUnacked) sent_.pop_front();
}

void Lease::Acked(uint64_t seq, Nanos lease) {
  while (!sent_.empty() && sent_.front().first < seq) sent_.pop_front();
  if (sent_.empty() || sent_.front().first != seq) return;
  Nanos sent_at = sent_.front().second;
  sent_.pop_front();
  expiry_ = granted_ ? std::max(expiry_, sent_at + lease) : sent_at + lease;
  granted_ = true;
}

void Lease::Reset() {
  sent_.clear();
  expiry_ = 0;
  granted_ = false;
}

}  // namespace corral::agent
