#include "corral/agent/gpu_allocator.h"

#include <gtest/gtest.h>

namespace corral::agent {
namespace {

using Devices = std::vector<int>;

TEST(GpuAllocator, WholeDevicesLowestFirst) {
  GpuAllocator a({0, 1, 2, 3});
  EXPECT_EQ(a.Take(1), Devices({0}));
  EXPECT_EQ(a.Take(2), Devices({1, 2}));
  EXPECT_FALSE(a.Take(2).has_value()) << "one device left";
  EXPECT_EQ(a.Take(1), Devices({3}));
  a.Give({1, 2}, 2);
  EXPECT_EQ(a.Take(2), Devices({1, 2}));
}

TEST(GpuAllocator, PhysicalIdsAreKept) {
  GpuAllocator a({2, 5});  // e.g. the agent was given devices 2 and 5 only
  EXPECT_EQ(a.Take(1), Devices({2}));
  EXPECT_EQ(a.Take(1), Devices({5}));
  EXPECT_FALSE(a.Take(0.5).has_value());
}

TEST(GpuAllocator, FractionsPackOntoOneDevice) {
  GpuAllocator a({0, 1});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.Take(0.25), Devices({0})) << "quarter " << i;
  EXPECT_EQ(a.Take(0.25), Devices({1})) << "device 0 is full";
  EXPECT_FALSE(a.Take(1).has_value()) << "device 1 is shared now: no whole device is free";
  EXPECT_EQ(a.Take(0.75), Devices({1}));
  EXPECT_FALSE(a.Take(0.25).has_value());
}

TEST(GpuAllocator, FractionGoesWhereLeastRoomFits) {
  GpuAllocator a({0, 1, 2});
  EXPECT_EQ(a.Take(0.5), Devices({0}));
  EXPECT_EQ(a.Take(0.7), Devices({1})) << "0.7 does not fit in device 0's half";
  EXPECT_EQ(a.Take(0.3), Devices({1})) << "device 1 has 0.3 left: the tightest fit";
  EXPECT_EQ(a.Take(1), Devices({2})) << "a whole device stayed free";
  a.Give({0}, 0.5);
  EXPECT_EQ(a.Take(1), Devices({0})) << "a fraction given back makes the device whole again";
}

TEST(GpuAllocator, NoDriftOverManyThirds) {
  GpuAllocator a({0});
  for (int round = 0; round < 1000; ++round) {
    auto x = a.Take(1.0 / 3), y = a.Take(1.0 / 3), z = a.Take(1.0 / 3);
    ASSERT_TRUE(x && y && z) << round;
    a.Give(*x, 1.0 / 3);
    a.Give(*y, 1.0 / 3);
    a.Give(*z, 1.0 / 3);
  }
  EXPECT_EQ(a.Take(1), Devices({0}));
}

TEST(GpuAllocator, ZeroTakesNothingEvenWithoutDevices) {
  GpuAllocator a;
  EXPECT_EQ(a.Take(0), Devices());
  EXPECT_FALSE(a.Take(0.1).has_value());
}

}  // namespace
}  // namespace corral::agent
