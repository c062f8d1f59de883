// What this machine offers: CPUs (the affinity mask, capped by a cgroup CPU quota), memory
// (physical memory, capped by a cgroup limit) and NVIDIA GPUs, found through NVML loaded at run
// time when the driver is installed (no build-time CUDA dependency). Flags override each.
#pragma once

#include <string>
#include <vector>

#include "corral/base/status.h"

namespace corral::agent {

struct GpuInfo {
  int index = 0;
  std::string name;
  long long memory_bytes = 0;
};

int DetectCpus();
long long DetectMemoryBytes();
// The devices NVML reports (possibly none); kNotFound when NVML is missing, kUnavailable when it
// cannot be initialised. The error's message is meant for the log.
Result<std::vector<GpuInfo>> DetectGpus();

}  // namespace corral::agent
