#include "corral/net/boot_timer.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "corral/base/log.h"

namespace corral::net {

BootTimer::BootTimer(boost::asio::io_context& io) : fd_(io) {
  int fd = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) {
    LOG_ERROR("timerfd_create(CLOCK_BOOTTIME) failed: {}", std::strerror(errno));
    return;
  }
  fd_.assign(fd);
}

BootTimer::~BootTimer() { *alive_ = false; }

void BootTimer::ExpireAt(Nanos at, std::function<void()> fn) {
  fn_ = std::move(fn);
  if (!fd_.is_open()) return;
  itimerspec spec{};
  // 0 would disarm the timer: a deadline already past fires at the next nanosecond.
  if (at <= 0) at = 1;
  spec.it_value.tv_sec = at / 1'000'000'000;
  spec.it_value.tv_nsec = at % 1'000'000'000;
  if (timerfd_settime(fd_.native_handle(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) {
    LOG_ERROR("timerfd_settime failed: {}", std::strerror(errno));
    return;
  }
  Wait();
}

void BootTimer::Cancel() {
  fn_ = nullptr;
  if (!fd_.is_open()) return;
  itimerspec spec{};
  timerfd_settime(fd_.native_handle(), 0, &spec, nullptr);
}

void BootTimer::Wait() {
  if (waiting_) return;
  waiting_ = true;
  fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                 [this, alive = alive_](const boost::system::error_code& ec) {
                   if (!*alive) return;
                   waiting_ = false;
                   if (ec) return;
                   uint64_t expirations = 0;
                   if (::read(fd_.native_handle(), &expirations, sizeof expirations) != sizeof expirations) {
                     if (fn_) Wait();  // spurious wake-up (re-armed meanwhile): keep waiting
                     return;
                   }
                   if (auto fn = std::move(fn_)) {
                     fn_ = nullptr;
                     fn();
                   }
                 });
}

}  // namespace corral::net
