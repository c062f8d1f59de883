// TLS contexts for the transport. The head presents its certificate chain (see pki.h); clients
// verify it against the cluster CA and check that it names the host they dialled.
// GenerateSelfSigned makes a key and self-signed certificate in memory (tests: a foreign CA).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl.hpp>

#include "corral/base/status.h"

namespace corral::net {

struct Endpoint;

struct PemPair {
  std::string certificate;
  std::string private_key;
};

// A self-signed certificate for `common_name`, valid for `days`, with `common_name` and 127.0.0.1
// as subject alternative names.
Result<PemPair> GenerateSelfSigned(const std::string& common_name, int days = 365);

// TLS 1.2 or later, presenting `identity` (its certificate may be a chain: leaf first). With
// `client_ca_pem`, a peer may present a certificate of its own (agents do; drivers need not): it
// must then verify against that CA or the handshake fails.
Result<std::shared_ptr<boost::asio::ssl::context>> MakeServerTlsContext(const PemPair& identity,
                                                                        const std::string& client_ca_pem = "");
// Verifies the server against `ca_pem` and, unless `host` is empty, that its certificate names
// `host` (a DNS name or an IP address).
Result<std::shared_ptr<boost::asio::ssl::context>> MakeClientTlsContext(const std::string& ca_pem,
                                                                        const std::string& host = "");
// Makes `ctx` (a client's) present `identity` from its next connection on: a node's certificate.
Status UseIdentity(boost::asio::ssl::context& ctx, const PemPair& identity);

// TLS 1.3 keyed by a pre-shared key, no certificates (the direct call path: decision 38). The
// server finds the key for the identity a client presents with `key_for` (empty: refused, and the
// handshake fails); a client presents `identity` and `key`. The function is called on the thread
// doing the handshake.
std::shared_ptr<boost::asio::ssl::context> MakePskServerContext(std::function<std::string(const std::string&)> key_for);
std::shared_ptr<boost::asio::ssl::context> MakePskClientContext(std::string identity, std::string key);

// The common name of the certificate the peer of `native_ssl` (ByteStream::native_ssl) presented
// and the handshake verified; empty when it presented none.
std::string VerifiedPeerName(void* native_ssl);

// Connects to `endpoint` without verifying anything and returns the certificates the server
// presented (PEM, leaf first): how a client learns a CA it will pin by fingerprint. Blocks the
// calling thread (its own io_context) for at most `timeout`. Never send anything over it.
Result<std::string> FetchPresentedChain(const Endpoint& endpoint, std::chrono::milliseconds timeout);

}  // namespace corral::net
