// LoopLag: how late the head's io thread gets to a timer due every 100 ms. A busy or blocked
// event loop delays every message, heartbeat and HTTP answer by that much; /metrics exports it
// (corral_head_event_loop_lag_seconds) and HeadEventLoopLag alerts on it. io thread only.
#pragma once

#include <chrono>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "corral/base/histogram.h"

namespace corral::head {

class LoopLag {
 public:
  explicit LoopLag(boost::asio::io_context& io);
  ~LoopLag();
  void Start();
  void Stop();
  const Histogram& histogram() const { return lag_; }
  // The largest lag seen in the last minute or so (two 30-second windows), seconds.
  double recent_max() const;

 private:
  void Arm();
  boost::asio::steady_timer timer_;
  std::chrono::steady_clock::time_point due_;
  Histogram lag_;
  double window_max_[2] = {0, 0};
  std::chrono::steady_clock::time_point window_start_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
