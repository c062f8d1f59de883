#include "corral/base/host_key.h"

#include <unistd.h>

#include <fstream>

namespace corral {

std::string HostKey() {
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  if (!std::getline(f, boot) || boot.empty()) return "";
  std::string key = boot;
  for (const char* ns : {"/proc/self/ns/net", "/proc/self/ns/mnt"}) {
    char link[64];
    ssize_t n = readlink(ns, link, sizeof link);
    if (n <= 0) return "";
    key += "/" + std::string(link, static_cast<size_t>(n));
  }
  return key;
}

}  // namespace corral
