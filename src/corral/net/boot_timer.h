// BootTimer: a one-shot timer on CLOCK_BOOTTIME, for leases and liveness.
//
// Asio's steady timers use CLOCK_MONOTONIC, which stops while the machine is suspended: a laptop
// that slept an hour would wake with its lease timer still an hour from firing. A timerfd on
// CLOCK_BOOTTIME fires as soon as the machine wakes past the deadline. io thread only.
#pragma once

#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "corral/base/clock.h"
#include "corral/base/status.h"

namespace corral::net {

class BootTimer {
 public:
  explicit BootTimer(boost::asio::io_context& io);
  ~BootTimer();
  BootTimer(const BootTimer&) = delete;
  BootTimer& operator=(const BootTimer&) = delete;

  // Calls `fn` once CLOCK_BOOTTIME reaches `at` (SystemClock().BootTimeNs() units; at once if it
  // has already). Replaces an earlier arming.
  void ExpireAt(Nanos at, std::function<void()> fn);
  void Cancel();

 private:
  void Wait();

  boost::asio::posix::stream_descriptor fd_;
  std::function<void()> fn_;
  bool waiting_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::net
