#include "corral/base/host_key.h"

#include <unistd.h>

#include <fstream>

namespace corral {

std::string HostKey() {
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  if (!std::getline(f, boot) || boot.empty()) return "";
  char ns[64];
  ssize_t n = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
  if (n <= 0) return "";
  return boot + "/" + std::string(ns, static_cast<size_t>(n));
}

}  // namespace corral
