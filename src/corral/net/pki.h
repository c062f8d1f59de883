// The cluster's certificates. A head's first start creates a cluster CA (an EC P-256 key and a
// self-signed v3 certificate, ten years); the head's own certificate is issued by that CA at every
// start for the names and addresses clients may dial (so a changed address needs no step), valid
// for a year. Clients trust the CA, not the head's certificate: a CA file, or the CA's SHA-256
// fingerprint pinned on first use. Functions are free and thread-safe.
#pragma once

#include <string>
#include <vector>

#include "corral/base/status.h"
#include "corral/net/tls.h"

namespace corral::net {

// A new CA: key and self-signed certificate (CA:TRUE, pathlen 0, keyCertSign).
Result<PemPair> CreateCa(const std::string& common_name, int days = 3650);

// A server certificate issued by `ca` for `names` ("localhost", "10.0.0.84", "::1": IP addresses
// become IP SANs, the rest DNS SANs), serverAuth only; `certificate` holds the leaf followed by the
// CA's certificate, so a server presents the whole chain.
Result<PemPair> IssueServerCertificate(const PemPair& ca, const std::vector<std::string>& names, int days = 365);

// "sha256:" and the lowercase hex SHA-256 of the certificate's DER encoding.
Result<std::string> Fingerprint(const std::string& certificate_pem);

// Every certificate in `pem` (a chain), each as its own PEM block.
std::vector<std::string> SplitPemCertificates(const std::string& pem);

// The head's state dir: ca.key (0600) and ca.crt made on first use, head.key (0600) and head.crt
// issued afresh for `names`. Returns the head's identity (leaf + CA chain, key) and the CA's PEM.
struct HeadPki {
  PemPair identity;
  std::string ca_certificate;
  std::string ca_fingerprint;
};
Result<HeadPki> LoadOrCreateHeadPki(const std::string& state_dir, const std::vector<std::string>& names);

}  // namespace corral::net
