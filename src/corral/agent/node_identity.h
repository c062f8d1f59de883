// NodeIdentity: this node's certificate, its credential with the head (mutual TLS). A node without
// one joins: a key is made here, a certificate request goes to the head with the join token, and
// the certificate the head issues for it is kept with the key in the agent's state dir (node.pem,
// 0600, key and certificate chain in one file, so a crash never leaves one without the other). From then on every connection to the head presents it and no token is
// needed; once a third of its lifetime is left, the agent asks for a new one over its connection.
// The key never leaves the machine. io thread only.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "corral/base/status.h"
#include "corral/net/tls.h"

namespace corral::agent {

class NodeIdentity {
 public:
  // `tls`: the context the agent dials the head with; it presents the certificate once there is one.
  NodeIdentity(std::string state_dir, std::shared_ptr<boost::asio::ssl::context> tls);

  // Loads node.pem, if the node joined before. A damaged one is an error (the operator decides:
  // restore it, or revoke the node and join afresh).
  Status Load();
  bool has_certificate() const { return !identity_.certificate.empty(); }
  // A request for a new key (kept in node.key.pending, 0600, until Accept(): a request whose
  // answer was lost is made again for the same key).
  Result<std::string> MakeRequest();
  // Keeps the certificate the head issued for the last request: files first, then the context.
  Status Accept(const std::string& certificate_pem);
  // Whether less than a third of the certificate's lifetime is left at wall time `now_s`.
  bool RenewalDue(int64_t now_s) const;
  int64_t not_after_s() const { return not_after_s_; }

 private:
  std::string state_dir_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  net::PemPair identity_;
  std::string pending_key_;  // the key of the request in flight
  int64_t not_before_s_ = 0, not_after_s_ = 0;
};

}  // namespace corral::agent
