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

// Raises this process's soft limit on open files to its hard limit (at most 1M). A head or agent holds several descriptors per worker and per
// connection, and a driver one connection per actor it calls directly: the usual soft limit of
// 1,024 would stop a node at about two hundred actors. Children (workers) inherit it.
void RaiseOpenFilesLimit();

}  // namespace corral
