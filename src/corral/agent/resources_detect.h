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
  std::string uuid;  // "GPU-..." as NVML and nvidia-smi give it
};

// Where NVML is looked for, in order, after CORRAL_NVML_LIBRARY (a path: that library and no other):
// the loader's own search (LD_LIBRARY_PATH, the ld.so cache), then these folders, where containers
// and distributions put the driver's library outside that search.
std::vector<std::string> DefaultNvmlFolders();

int DetectCpus();
long long DetectMemoryBytes();
// The devices NVML reports (possibly none); kNotFound when NVML is missing, kUnavailable when it
// cannot be initialised. The error's message is meant for the log. `library`: a path to load
// instead of searching (CORRAL_NVML_LIBRARY's role); `folders`: where to search after the loader.
Result<std::vector<GpuInfo>> DetectGpus();
Result<std::vector<GpuInfo>> DetectGpus(const std::string& library, const std::vector<std::string>& folders);

}  // namespace corral::agent
