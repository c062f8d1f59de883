#include "corral/base/clock.h"

#include <time.h>

namespace corral {
namespace {

Nanos Read(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<Nanos>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class RealClock : public Clock {
 public:
  Nanos BootTimeNs() const override { return Read(CLOCK_BOOTTIME); }
  Nanos WallNs() const override { return Read(CLOCK_REALTIME); }
};

}  // namespace

const Clock& SystemClock() {
  static const RealClock clock;
  return clock;
}

}  // namespace corral
