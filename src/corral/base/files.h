// Small file-system helpers and the places Corral keeps its state on this machine.
//
//   $CORRAL_HOME (default ~/.corral)/head     the head started by `corral start --head`:
//                                            token (0600), address, pid, head.log
//   $CORRAL_HOME/agent-<port|name>           an agent's state: pid, agent.sock, logs/
// Functions are thread-safe.
#pragma once

#include <string>

#include "corral/base/status.h"

namespace corral {

std::string CorralHome();
std::string DefaultHeadStateDir();

Status MakeDirs(const std::string& path, int mode = 0700);
Result<std::string> ReadFile(const std::string& path);
// Writes atomically (temp file + rename) with the given permission bits.
Status WriteFile(const std::string& path, const std::string& data, int mode = 0600);

// The cluster token for a client or agent on this machine: CORRAL_TOKEN, else the file named by
// CORRAL_TOKEN_FILE, else <default head state dir>/token. Empty if none is found.
std::string FindToken();

}  // namespace corral
