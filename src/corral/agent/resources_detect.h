// What this machine offers: CPUs (the affinity mask, capped by a cgroup CPU quota), memory
// (physical memory, capped by a cgroup limit) and NVIDIA GPUs, found through NVML loaded at run
// time when the driver is installed (no build-time CUDA dependency). Flags override each.
#pragma once

#include <string>
#include <vector>

namespace corral::agent {

struct GpuInfo {
  int index = 0;
  std::string name;
  long long memory_bytes = 0;
};

int DetectCpus();
long long DetectMemoryBytes();
// Empty when NVML is missing or reports no devices. `why` says what happened, for the log.
std::vector<GpuInfo> DetectGpus(std::string* why);

}  // namespace corral::agent
