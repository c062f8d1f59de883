#include "corral/agent/resources_detect.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

namespace corral::agent {

int DetectCpus() {
  cpu_set_t set;
  int n = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    n = CPU_COUNT(&set);
  else
    n = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  // cgroup v2: "max 100000" or "200000 100000"
  std::ifstream quota("/sys/fs/cgroup/cpu.max");
  std::string q, period;
  if (quota >> q >> period && q != "max") {
    long long qv = std::stoll(q), pv = std::stoll(period);
    if (qv > 0 && pv > 0) n = std::min<int>(n, std::max<int>(1, static_cast<int>((qv + pv - 1) / pv)));
  }
  return std::max(1, n);
}

long long DetectMemoryBytes() {
  long long total = static_cast<long long>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  std::ifstream limit("/sys/fs/cgroup/memory.max");
  std::string v;
  if (limit >> v && v != "max") total = std::min(total, std::stoll(v));
  return total;
}

Result<std::vector<GpuInfo>> DetectGpus() {
  std::vector<GpuInfo> out;
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return Err(Code::kNotFound, "NVML (libnvidia-ml.so.1) not found: no NVIDIA driver on this machine");
  using InitFn = int (*)();
  using CountFn = int (*)(unsigned*);
  using HandleFn = int (*)(unsigned, void**);
  using NameFn = int (*)(void*, char*, unsigned);
  struct Memory { unsigned long long total, free, used; };
  using MemFn = int (*)(void*, Memory*);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<HandleFn>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto name = reinterpret_cast<NameFn>(dlsym(lib, "nvmlDeviceGetName"));
  auto mem = reinterpret_cast<MemFn>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  auto shutdown = reinterpret_cast<InitFn>(dlsym(lib, "nvmlShutdown"));
  unsigned n = 0;
  if (!init || !count || !handle || init() != 0 || count(&n) != 0) {
    dlclose(lib);
    return Err(Code::kUnavailable, "NVML present but could not be initialised");
  }
  for (unsigned i = 0; i < n; ++i) {
    GpuInfo g;
    g.index = static_cast<int>(i);
    void* h = nullptr;
    if (handle(i, &h) == 0) {
      char buf[96] = {};
      if (name && name(h, buf, sizeof buf) == 0) g.name = buf;
      Memory m{};
      if (mem && mem(h, &m) == 0) g.memory_bytes = static_cast<long long>(m.total);
    }
    out.push_back(g);
  }
  if (shutdown) shutdown();
  dlclose(lib);
  return out;
}

}  // namespace corral::agent
