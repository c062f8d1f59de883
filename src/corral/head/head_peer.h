// HeadServer's view of one connection (private to head_server*.cc).
#pragma once

#include <memory>
#include <string>

#include "corral/head/head_server.h"

namespace corral::head {

struct HeadServer::Peer {
  enum Kind { kHandshake, kClient, kAgent } kind = kHandshake;
  std::string address;        // the peer's host, for the per-address limit; empty once counted out
  std::shared_ptr<net::Connection> conn;
  std::shared_ptr<ClientSession> session;  // kClient
  Node* node = nullptr;    // kAgent
  bool paused_for_output = false;
  TokenInfo token;         // who it authenticated as
  bool tls = false;        // the connection is TLS
  std::string cert_node;   // the node its verified certificate names (agents that joined)
  int64_t worker_token_ns = 0;  // agents: wall time its workers' credential was issued
};

}  // namespace corral::head
