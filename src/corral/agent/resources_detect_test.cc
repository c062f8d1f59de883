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

TEST(Detect, GpusOrWhyNot) {
  auto gpus = DetectGpus();
  if (!gpus) {  // no driver here: the error says so, for the log
    EXPECT_NE(gpus.error().message().find("NVML"), std::string::npos);
    return;
  }
  for (size_t i = 0; i < gpus->size(); ++i) EXPECT_EQ((*gpus)[i].index, static_cast<int>(i));
}

}  // namespace
}  // namespace corral::agent
