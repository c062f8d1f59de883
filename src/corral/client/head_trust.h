// How a client (driver, CLI, agent, worker) trusts the head it dials. A head on another machine
// speaks only TLS; its certificate is issued by the cluster's CA, which the client knows from:
//   1. a CA file: --ca-cert, or CORRAL_CA_CERT (the ca.crt in the head's state dir, copied over);
//   2. the CA's fingerprint, pinned on first use: --ca-fingerprint, or CORRAL_CA_FINGERPRINT
//      ("sha256:..." as `corral start --head` prints it). The client fetches the chain the head
//      presents, keeps the CA whose fingerprint matches in ~/.corral/known_cas/, and verifies
//      against it from then on;
//   3. when nothing is given, the CA the head presents if this machine knows it: its own head's
//      (~/.corral/head/ca.crt), or one pinned before for this very address (~/.corral/known_cas/
//      keeps, beside each pinned CA, the addresses it was pinned for).
// Without any of them the error names the fingerprint the head presented and the flag to pass.
// A head on loopback is dialled in plaintext unless a CA or fingerprint is given (the head lets
// its own machine in without TLS). Functions may block (a first fetch); call them before serving.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "corral/base/status.h"
#include "corral/net/endpoint.h"

namespace corral::client {

struct TrustOptions {
  std::string ca_cert_file;    // empty: $CORRAL_CA_CERT
  std::string ca_fingerprint;  // empty: $CORRAL_CA_FINGERPRINT
};

struct HeadTrust {
  std::shared_ptr<boost::asio::ssl::context> tls;  // null: plaintext
  std::string ca_cert_file;                        // the CA file used (for workers to use too)
};

Result<HeadTrust> TrustHead(const net::Endpoint& head, TrustOptions options = {});

// "sha256:" and 64 lowercase hex digits, from what a user typed (any case, with or without the
// prefix, colons allowed), or kInvalidArgument.
Result<std::string> NormalizeFingerprint(const std::string& text);

}  // namespace corral::client
