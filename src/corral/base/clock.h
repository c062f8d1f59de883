// Clocks. Liveness and leases are timed with CLOCK_BOOTTIME, which keeps counting while a laptop
// is suspended (CLOCK_MONOTONIC and Asio's steady timers stop). `Clock` is an interface so tests
// can inject time; `SystemClock()` is the real one. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace corral {

using Nanos = int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds since boot, including time spent suspended.
  virtual Nanos BootTimeNs() const = 0;
  // Wall-clock time (UTC), nanoseconds since the Unix epoch.
  virtual Nanos WallNs() const = 0;
};

// The process-wide real clock.
const Clock& SystemClock();

// A clock whose time only moves when told to. Not thread-safe.
class FakeClock : public Clock {
 public:
  Nanos BootTimeNs() const override { return boot_; }
  Nanos WallNs() const override { return wall_; }
  void Advance(std::chrono::nanoseconds d) {
    boot_ += d.count();
    wall_ += d.count();
  }

 private:
  Nanos boot_ = 1'000'000'000;
  Nanos wall_ = 1'700'000'000'000'000'000;
};

constexpr Nanos Ms(int64_t ms) { return ms * 1'000'000; }

}  // namespace corral
