#include "corral/net/boot_timer.h"

#include <gtest/gtest.h>

#include <boost/asio/steady_timer.hpp>

namespace corral::net {
namespace {

TEST(BootTimer, FiresNoEarlierThanItsDeadline) {
  boost::asio::io_context io;
  BootTimer timer(io);
  Nanos deadline = SystemClock().BootTimeNs() + Ms(30);
  Nanos fired_at = 0;
  timer.ExpireAt(deadline, [&] { fired_at = SystemClock().BootTimeNs(); });
  io.run();
  EXPECT_GE(fired_at, deadline);
}

TEST(BootTimer, PastDeadlineFiresAtOnce) {
  boost::asio::io_context io;
  BootTimer timer(io);
  int fired = 0;
  timer.ExpireAt(SystemClock().BootTimeNs() - Ms(1000), [&] { fired++; });
  io.run();
  EXPECT_EQ(fired, 1);
}

TEST(BootTimer, RearmingReplacesAndCancelStops) {
  boost::asio::io_context io;
  BootTimer timer(io);
  int first = 0, second = 0;
  timer.ExpireAt(SystemClock().BootTimeNs() + Ms(5), [&] { first++; });
  timer.ExpireAt(SystemClock().BootTimeNs() + Ms(10), [&] { second++; });
  io.run();
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 1);

  io.restart();
  timer.ExpireAt(SystemClock().BootTimeNs() + Ms(5), [&] { first++; });
  timer.Cancel();
  boost::asio::steady_timer wait(io, std::chrono::milliseconds(30));
  wait.async_wait([&](auto) { io.stop(); });
  io.run();
  EXPECT_EQ(first, 0);
}

}  // namespace
}  // namespace corral::net
