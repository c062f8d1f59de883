#include "corral/agent/resources_detect.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

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

// The fake NVML library (testing/fake_nvml.cc) reports what these variables say.
class FakeNvml : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("CORRAL_FAKE_NVML_DEVICES");
    unsetenv("CORRAL_FAKE_NVML_FAIL");
  }
  static Result<std::vector<GpuInfo>> Detect() { return DetectGpus(FAKE_NVML_LIBRARY, {}); }
};

TEST_F(FakeNvml, NoDevice) {
  auto gpus = Detect();
  ASSERT_TRUE(gpus) << gpus.error().message();
  EXPECT_TRUE(gpus->empty());
}

TEST_F(FakeNvml, OneDevice) {
  setenv("CORRAL_FAKE_NVML_DEVICES", "NVIDIA H200|150754820096|GPU-5c8b9f0e-0000-4000-8000-000000000001", 1);
  auto gpus = Detect();
  ASSERT_TRUE(gpus) << gpus.error().message();
  ASSERT_EQ(gpus->size(), 1u);
  EXPECT_EQ((*gpus)[0].index, 0);
  EXPECT_EQ((*gpus)[0].name, "NVIDIA H200");
  EXPECT_EQ((*gpus)[0].memory_bytes, 150754820096LL);
  EXPECT_EQ((*gpus)[0].uuid, "GPU-5c8b9f0e-0000-4000-8000-000000000001");
}

TEST_F(FakeNvml, EightOfMixedModels) {
  std::string spec;
  for (int i = 0; i < 8; ++i)
    spec += (i ? ";" : "") + std::string(i < 4 ? "NVIDIA A100-SXM4-80GB|85899345920" : "NVIDIA GeForce RTX 4090|25757220864") +
            "|GPU-" + std::to_string(i);
  setenv("CORRAL_FAKE_NVML_DEVICES", spec.c_str(), 1);
  auto gpus = Detect();
  ASSERT_TRUE(gpus) << gpus.error().message();
  ASSERT_EQ(gpus->size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ((*gpus)[i].index, i);
    EXPECT_EQ((*gpus)[i].uuid, "GPU-" + std::to_string(i));
  }
  EXPECT_EQ((*gpus)[3].name, "NVIDIA A100-SXM4-80GB");
  EXPECT_EQ((*gpus)[4].name, "NVIDIA GeForce RTX 4090");
  EXPECT_EQ((*gpus)[7].memory_bytes, 25757220864LL);
}

TEST_F(FakeNvml, FailingInitIsUnavailableWithNvmlsWords) {
  setenv("CORRAL_FAKE_NVML_DEVICES", "NVIDIA H200|1|GPU-1", 1);
  setenv("CORRAL_FAKE_NVML_FAIL", "init", 1);
  auto gpus = Detect();
  ASSERT_FALSE(gpus);
  EXPECT_EQ(gpus.error().code(), Code::kUnavailable);
  EXPECT_NE(gpus.error().message().find("Driver Not Loaded"), std::string::npos) << gpus.error().message();
}

TEST_F(FakeNvml, FailingCountIsUnavailable) {
  setenv("CORRAL_FAKE_NVML_FAIL", "count", 1);
  auto gpus = Detect();
  ASSERT_FALSE(gpus);
  EXPECT_EQ(gpus.error().code(), Code::kUnavailable);
}

TEST_F(FakeNvml, FoundInAFolderOutsideTheLoadersPath) {
  // As in containers, where the driver's library lies in /usr/local/nvidia/lib64.
  auto dir = std::filesystem::temp_directory_path() / ("nvml-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(FAKE_NVML_LIBRARY, dir / "libnvidia-ml.so.1",
                             std::filesystem::copy_options::overwrite_existing);
  setenv("CORRAL_FAKE_NVML_DEVICES", "NVIDIA L4|24000000000|GPU-L4", 1);
  auto gpus = DetectGpus("", {"/nonexistent", dir.string()});
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(gpus) << gpus.error().message();
  ASSERT_EQ(gpus->size(), 1u);
  EXPECT_EQ((*gpus)[0].name, "NVIDIA L4");
}

TEST_F(FakeNvml, MissingLibraryIsNotFoundAndNamesWhereItLooked) {
  auto gpus = DetectGpus("", {"/nonexistent/lib64"});
  if (gpus) GTEST_SKIP() << "this machine has a real NVML in the loader's path";
  EXPECT_EQ(gpus.error().code(), Code::kNotFound);
  EXPECT_NE(gpus.error().message().find("/nonexistent/lib64"), std::string::npos) << gpus.error().message();
  auto explicit_path = DetectGpus("/nonexistent/libnvidia-ml.so.1", {});
  ASSERT_FALSE(explicit_path);
  EXPECT_NE(explicit_path.error().message().find("CORRAL_NVML_LIBRARY"), std::string::npos);
}

}  // namespace
}  // namespace corral::agent
