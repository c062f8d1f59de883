// The cluster's certificates. A head's first start creates a cluster CA (an EC P-256 key and a
// self-signed v3 certificate, ten years); the head's own certificate is issued by that CA at every
// start for the names and addresses clients may dial (so a changed address needs no step), valid
// for a year. Clients trust the CA, not the head's certificate: a CA file, or the CA's SHA-256
// fingerprint pinned on first use. Functions are free and thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "corral/base/status.h"
#include "corral/net/tls.h"

namespace corral::net {

// Certificates are valid from this long before they were issued (clocks differ a little between
// machines).
constexpr int64_t kCertificateBackdateS = 300;

// A new CA: key and self-signed certificate (CA:TRUE, pathlen 0, keyCertSign).
Result<PemPair> CreateCa(const std::string& common_name, int days = 3650);

// A server certificate issued by `ca` for `names` ("localhost", "10.0.0.84", "::1": IP addresses
// become IP SANs, the rest DNS SANs), serverAuth only; `certificate` holds the leaf followed by the
// CA's certificate, so a server presents the whole chain.
Result<PemPair> IssueServerCertificate(const PemPair& ca, const std::vector<std::string>& names, int days = 365);

// A node's key and a certificate signing request for it (PEM): how an agent joins without its key
// ever leaving the machine. `certificate` holds the request. With `key_pem`, for that key (a
// request sent again); otherwise for a new one.
Result<PemPair> CreateCertificateRequest(const std::string& common_name, const std::string& key_pem = "");

// "sha256:" and the hex SHA-256 of the public key in a request whose signature checks out: who
// sent it, as far as possession of a key can say.
Result<std::string> RequestKeyFingerprint(const std::string& request_pem);

// A node's certificate, issued by `ca` for the key in `request_pem` (its signature checked): the
// subject is `common_name` whatever the request asked for, clientAuth only, valid `seconds`.
// Returns the leaf followed by the CA's certificate.
Result<std::string> IssueNodeCertificate(const PemPair& ca, const std::string& request_pem,
                                         const std::string& common_name, int64_t seconds);

struct CertificateInfo {
  std::string common_name;
  std::string serial;          // hex
  int64_t not_before_s = 0;    // Unix seconds
  int64_t not_after_s = 0;
};
// The first certificate in `pem`.
Result<CertificateInfo> InspectCertificate(const std::string& pem);

// "sha256:" and the lowercase hex SHA-256 of the certificate's DER encoding.
Result<std::string> Fingerprint(const std::string& certificate_pem);

// Every certificate in `pem` (a chain), each as its own PEM block.
std::vector<std::string> SplitPemCertificates(const std::string& pem);

// The head's state dir: ca.key (0600) and ca.crt made on first use, head.key (0600) and head.crt
// issued afresh for `names`. Returns the head's identity (leaf + CA chain, key) and the CA.
struct HeadPki {
  PemPair identity;
  PemPair ca;  // the CA's certificate and key: the head signs nodes' certificates with it
  std::string ca_fingerprint;
};
// Issues the head a new certificate for `names` with `ca` and writes head.key and head.crt in `dir`.
Result<PemPair> RenewHeadCertificate(const std::string& dir, const PemPair& ca, const std::vector<std::string>& names);
Result<HeadPki> LoadOrCreateHeadPki(const std::string& state_dir, const std::vector<std::string>& names);

// The ticket that lets caller `client_id` send actor `actor_id`'s calls straight to its agent: an
// HMAC-SHA256 of both ids under the cluster's peer secret, made by the head (which checked that
// the caller may use the actor) and checked by the agent (ActorRoute, CallHello).
std::string CallTicket(std::string_view peer_secret, std::string_view actor_id, std::string_view client_id);
// Off loopback the call port speaks TLS keyed by the ticket: the identity a caller presents
// ("<hex actor id>:<hex client id>"), and the key a server finds for one (empty: not one of ours).
std::string CallPskIdentity(std::string_view actor_id, std::string_view client_id);
std::string CallPskKey(std::string_view peer_secret, std::string_view identity);

}  // namespace corral::net
