// ClusterCa: the head's certificate authority at work. It holds the cluster CA (made in the state
// dir on the head's first start, see net/pki.h), issues each joining node its certificate (the
// subject names the node; clientAuth only) and renews it, and gives the head a new certificate of
// its own on `corral certs rotate`: connections made from then on see the new one, and since every
// client trusts the CA, nothing else has to change. io thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "corral/base/status.h"
#include "corral/net/pki.h"

namespace corral::head {

class ClusterCa {
 public:
  // Loads (or, the first time, makes) the CA in `state_dir` and issues the head a certificate for
  // `names`. Node certificates are valid for `node_validity_s`.
  static Result<std::unique_ptr<ClusterCa>> Open(std::string state_dir, std::vector<std::string> names,
                                                 int64_t node_validity_s);

  // The TLS context the head serves with now (its certificate; node certificates verified).
  std::shared_ptr<boost::asio::ssl::context> server_context() const { return server_; }
  const std::string& ca_certificate() const { return pki_.ca.certificate; }
  const std::string& fingerprint() const { return pki_.ca_fingerprint; }
  int64_t node_validity_s() const { return node_validity_s_; }
  const std::vector<std::string>& names() const { return names_; }
  const std::string& head_certificate() const { return pki_.identity.certificate; }

  // A certificate for node `node_id` and the key in `request_pem`.
  Result<std::string> IssueNodeCertificate(const std::string& request_pem, const std::string& node_id) const;
  // A new head certificate (written to head.crt and head.key): server_context() serves it.
  Status RotateHeadCertificate();

  // The subject a node's certificate carries, and back (nullopt: not a node's).
  static std::string NodeSubject(const std::string& node_id);
  static std::optional<std::string> NodeFromSubject(const std::string& subject);

 private:
  ClusterCa() = default;

  std::string state_dir_;
  std::vector<std::string> names_;
  int64_t node_validity_s_ = 0;
  net::HeadPki pki_;
  std::shared_ptr<boost::asio::ssl::context> server_;
};

}  // namespace corral::head
