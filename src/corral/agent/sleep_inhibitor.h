// SleepInhibitor: drain before the machine suspends (`corral start --drain-on-sleep`).
//
// Takes a "delay" inhibitor lock from systemd-logind over the system D-Bus and listens for
// logind's PrepareForSleep signal. When the machine is about to sleep, `on_sleep` runs and gets a
// `done` callback; the lock is released (letting the suspend proceed) when `done` is called or when
// logind's InhibitDelayMaxUSec is nearly up, whichever comes first. After resume `on_wake` runs and
// the lock is taken again.
//
// libsystemd is loaded at run time (dlopen), so the binary does not need it unless this is used.
// The bus is the system bus, or DBUS_SYSTEM_BUS_ADDRESS when set (tests run their own bus).
// io thread only.
#pragma once

#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "corral/base/status.h"

namespace corral::agent {

class SleepInhibitor {
 public:
  using Done = std::function<void()>;
  static Result<std::unique_ptr<SleepInhibitor>> Start(boost::asio::io_context& io,
                                                       std::function<void(std::chrono::milliseconds budget, Done)> on_sleep,
                                                       std::function<void()> on_wake);
  ~SleepInhibitor();

 private:
  struct Impl;
  explicit SleepInhibitor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace corral::agent
