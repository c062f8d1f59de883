// HostKey: names this machine and its network and mount namespaces, so that two processes can
// tell whether a Unix socket one of them listens on is reachable by the other and means the same
// thing there: the kernel's boot id (a new one each boot) and the namespaces' inodes. Processes in
// other namespaces on one machine (containers, the test suite's simulated hosts) get other keys.
// Empty when /proc cannot tell. Thread-safe.
#pragma once

#include <string>

namespace corral {

std::string HostKey();

}  // namespace corral
