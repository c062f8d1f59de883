#include "corral/head/loop_lag.h"

#include <algorithm>
#include <array>

namespace corral::head {
namespace {
constexpr auto kPeriod = std::chrono::milliseconds(100);
constexpr std::array<double, 12> kLagBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,   0.25,   0.5,   1,    5};
}  // namespace

LoopLag::LoopLag(boost::asio::io_context& io) : timer_(io), lag_(kLagBounds) {}

LoopLag::~LoopLag() { *alive_ = false; }

void LoopLag::Start() {
  window_start_ = std::chrono::steady_clock::now();
  Arm();
}

void LoopLag::Stop() {
  *alive_ = false;
  timer_.cancel();
}

double LoopLag::recent_max() const { return std::max(window_max_[0], window_max_[1]); }

void LoopLag::Arm() {
  due_ = std::chrono::steady_clock::now() + kPeriod;
  timer_.expires_at(due_);
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    auto now = std::chrono::steady_clock::now();
    double lag = std::max(0.0, std::chrono::duration<double>(now - due_).count());
    lag_.Observe(lag);
    if (now - window_start_ > std::chrono::seconds(30)) {
      window_max_[1] = window_max_[0];
      window_max_[0] = 0;
      window_start_ = now;
    }
    window_max_[0] = std::max(window_max_[0], lag);
    Arm();
  });
}

}  // namespace corral::head
