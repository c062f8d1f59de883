#include "corral/agent/resources_detect.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace corral::agent {
namespace {

TEST(Detect, CpusWithinOnlineCount) {
  int n = DetectCpus();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, sysconf(_SC_NPROCESSORS_ONLN));
}

TEST(Detect, MemoryIsPlausible) {
  EXPECT_GT(DetectMemoryBytes(), 64LL << 20);
}

TEST(Detect, GpusSayWhy) {
  std::string why;
  auto gpus = DetectGpus(&why);
  EXPECT_FALSE(why.empty());
  for (size_t i = 0; i < gpus.size(); ++i) EXPECT_EQ(gpus[i].index, static_cast<int>(i));
}

}  // namespace
}  // namespace corral::agent
