#include "corral/agent/node_identity.h"

#include <unistd.h>

#include "corral/base/files.h"
#include "corral/net/pki.h"

namespace corral::agent {

NodeIdentity::NodeIdentity(std::string state_dir, std::shared_ptr<boost::asio::ssl::context> tls)
    : state_dir_(std::move(state_dir)), tls_(std::move(tls)) {}

Status NodeIdentity::Load() {
  auto pem = ReadFile(state_dir_ + "/node.pem");
  if (!pem) return Status::Ok();  // not joined yet
  auto info = net::InspectCertificate(*pem);
  Status used = info ? net::UseIdentity(*tls_, {*pem, *pem}) : info.error();
  if (!used.ok())
    return MakeStatus(Code::kFailedPrecondition, "{}/node.pem is damaged ({}): restore it, or have the operator "
                      "revoke this node (`corral node revoke`) and join again after removing node.pem and node_id",
                      state_dir_, used.message());
  identity_ = {*pem, *pem};
  not_before_s_ = info->not_before_s;
  not_after_s_ = info->not_after_s;
  return Status::Ok();
}

Result<std::string> NodeIdentity::MakeRequest() {
  // The key is kept before the request leaves: if the answer is lost (a dropped connection, a
  // crash), the next request is for the same key, which the head recognises and answers again.
  std::string pending_path = state_dir_ + "/node.key.pending";
  std::string key = ReadFile(pending_path).value_or("");
  auto request = net::CreateCertificateRequest("corral node", key);
  if (!request && !key.empty()) request = net::CreateCertificateRequest("corral node");  // a damaged one: anew
  if (!request) return Err(request.error());
  if (request->private_key != key) {
    if (Status s = WriteFile(pending_path, request->private_key, 0600); !s.ok()) return Err(s);
  }
  pending_key_ = request->private_key;
  return request->certificate;
}

Status NodeIdentity::Accept(const std::string& certificate_pem) {
  if (pending_key_.empty()) return Status(Code::kFailedPrecondition, "a certificate arrived without a request");
  auto info = net::InspectCertificate(certificate_pem);
  if (!info) return info.error();
  net::PemPair identity{certificate_pem, pending_key_};
  if (Status s = net::UseIdentity(*tls_, identity); !s.ok()) return s;  // also checks they belong together
  if (Status s = WriteFile(state_dir_ + "/node.pem", pending_key_ + certificate_pem, 0600); !s.ok()) return s;
  ::unlink((state_dir_ + "/node.key.pending").c_str());
  identity_ = std::move(identity);
  pending_key_.clear();
  not_before_s_ = info->not_before_s;
  not_after_s_ = info->not_after_s;
  return Status::Ok();
}

bool NodeIdentity::RenewalDue(int64_t now_s) const {
  if (!has_certificate()) return false;
  int64_t issued_s = not_before_s_ + net::kCertificateBackdateS;
  return (not_after_s_ - now_s) * 3 < (not_after_s_ - issued_s);
}

}  // namespace corral::agent
