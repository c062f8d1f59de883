// TLS contexts for the transport. The server presents a certificate; clients verify it against a
// CA file. GenerateSelfSigned makes a key and certificate in memory (tests, and the head's first
// start once TLS is the default).
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl.hpp>

#include "corral/base/status.h"

namespace corral::net {

struct PemPair {
  std::string certificate;
  std::string private_key;
};

// A self-signed certificate for `common_name`, valid for `days`, with `common_name` and 127.0.0.1
// as subject alternative names.
Result<PemPair> GenerateSelfSigned(const std::string& common_name, int days = 365);

Result<std::shared_ptr<boost::asio::ssl::context>> MakeServerTlsContext(const PemPair& identity);
// Verifies the server against `ca_pem` (for a self-signed server: its own certificate).
Result<std::shared_ptr<boost::asio::ssl::context>> MakeClientTlsContext(const std::string& ca_pem);

}  // namespace corral::net
