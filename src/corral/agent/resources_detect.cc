#include "corral/agent/resources_detect.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdlib>
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

std::vector<std::string> DefaultNvmlFolders() {
  return {"/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
          "/usr/lib64", "/usr/lib", "/usr/lib/wsl/lib", "/run/nvidia/driver/usr/lib/x86_64-linux-gnu"};
}

Result<std::vector<GpuInfo>> DetectGpus() {
  const char* library = std::getenv("CORRAL_NVML_LIBRARY");
  return DetectGpus(library ? library : "", DefaultNvmlFolders());
}

Result<std::vector<GpuInfo>> DetectGpus(const std::string& library, const std::vector<std::string>& folders) {
  constexpr const char* kSoname = "libnvidia-ml.so.1";
  void* lib = nullptr;
  std::string tried;
  if (!library.empty()) {
    lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) return Err(Code::kNotFound, fmt::format("NVML not loaded from {} (CORRAL_NVML_LIBRARY): {}", library, dlerror()));
  } else {
    lib = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
    for (size_t i = 0; !lib && i < folders.size(); ++i) {
      std::string path = folders[i] + "/" + kSoname;
      if (access(path.c_str(), R_OK) == 0) lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    }
    if (!lib)
      return Err(Code::kNotFound, fmt::format("NVML ({}) not found in the loader's path nor in {}: no NVIDIA driver "
                                              "on this machine (or set CORRAL_NVML_LIBRARY to its path)",
                                              kSoname, fmt::join(folders, ", ")));
  }
  using InitFn = int (*)();
  using CountFn = int (*)(unsigned*);
  using HandleFn = int (*)(unsigned, void**);
  using TextFn = int (*)(void*, char*, unsigned);
  using ErrorFn = const char* (*)(int);
  struct Memory { unsigned long long total, free, used; };
  using MemFn = int (*)(void*, Memory*);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<HandleFn>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto name = reinterpret_cast<TextFn>(dlsym(lib, "nvmlDeviceGetName"));
  auto uuid = reinterpret_cast<TextFn>(dlsym(lib, "nvmlDeviceGetUUID"));
  auto mem = reinterpret_cast<MemFn>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  auto shutdown = reinterpret_cast<InitFn>(dlsym(lib, "nvmlShutdown"));
  auto error_string = reinterpret_cast<ErrorFn>(dlsym(lib, "nvmlErrorString"));
  auto why = [&](int rc) {
    const char* text = error_string ? error_string(rc) : nullptr;
    return text ? fmt::format("{} (NVML error {})", text, rc) : fmt::format("NVML error {}", rc);
  };
  if (!init || !count || !handle) {
    dlclose(lib);
    return Err(Code::kUnavailable, "NVML lacks nvmlInit_v2/nvmlDeviceGetCount_v2: is the driver older than 2015?");
  }
  if (int rc = init(); rc != 0) {
    std::string text = why(rc);
    dlclose(lib);
    return Err(Code::kUnavailable, fmt::format("NVML present but could not be initialised: {}", text));
  }
  std::vector<GpuInfo> out;
  unsigned n = 0;
  if (int rc = count(&n); rc != 0) {
    std::string text = why(rc);
    if (shutdown) shutdown();
    dlclose(lib);
    return Err(Code::kUnavailable, fmt::format("NVML could not count the GPUs: {}", text));
  }
  for (unsigned i = 0; i < n; ++i) {
    GpuInfo g;
    g.index = static_cast<int>(i);
    void* h = nullptr;
    if (handle(i, &h) == 0) {
      char buf[96] = {};
      if (name && name(h, buf, sizeof buf) == 0) g.name = buf;
      char id[96] = {};
      if (uuid && uuid(h, id, sizeof id) == 0) g.uuid = id;
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
