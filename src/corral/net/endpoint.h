// Endpoint: where to connect or listen. "host:port", "[::1]:port" or "unix:/path/to/socket".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "corral/base/status.h"

namespace corral::net {

struct Endpoint {
  std::string host;      // empty for a Unix socket
  uint16_t port = 0;
  std::string unix_path;  // set for a Unix socket

  bool is_unix() const { return !unix_path.empty(); }
  bool is_loopback() const;
  std::string ToString() const;
};

// `default_port` is used when the text has no ":port".
Result<Endpoint> ParseEndpoint(std::string_view text, uint16_t default_port = 0);

// The host part of a connection's peer() ("1.2.3.4:5" -> "1.2.3.4", "[::1]:5" -> "::1"); other
// names (Unix sockets, in-process streams) are returned whole. What per-address limits key on and
// what fail2ban reads.
std::string PeerHost(std::string_view peer);

}  // namespace corral::net
