#include "corral/head/cluster_ca.h"

#include "corral/base/ids.h"

namespace corral::head {

Result<std::unique_ptr<ClusterCa>> ClusterCa::Open(std::string state_dir, std::vector<std::string> names,
                                                   int64_t node_validity_s) {
  if (node_validity_s < 60) return Err(Code::kInvalidArgument, "a node certificate must be valid for at least 60s");
  auto pki = net::LoadOrCreateHeadPki(state_dir, names);
  if (!pki) return Err(pki.error());
  auto ctx = net::MakeServerTlsContext(pki->identity, pki->ca.certificate);
  if (!ctx) return Err(ctx.error());
  std::unique_ptr<ClusterCa> ca(new ClusterCa());
  ca->state_dir_ = std::move(state_dir);
  ca->names_ = std::move(names);
  ca->node_validity_s_ = node_validity_s;
  ca->pki_ = std::move(*pki);
  ca->server_ = std::move(*ctx);
  return ca;
}

Result<std::string> ClusterCa::IssueNodeCertificate(const std::string& request_pem, const std::string& node_id) const {
  return net::IssueNodeCertificate(pki_.ca, request_pem, NodeSubject(node_id), node_validity_s_);
}

Status ClusterCa::RotateHeadCertificate() {
  auto identity = net::RenewHeadCertificate(state_dir_, pki_.ca, names_);
  if (!identity) return identity.error();
  auto ctx = net::MakeServerTlsContext(*identity, pki_.ca.certificate);
  if (!ctx) return ctx.error();
  pki_.identity = std::move(*identity);
  server_ = std::move(*ctx);
  return Status::Ok();
}

std::string ClusterCa::NodeSubject(const std::string& node_id) { return "corral-node-" + Hex(node_id); }

std::optional<std::string> ClusterCa::NodeFromSubject(const std::string& subject) {
  static constexpr std::string_view kPrefix = "corral-node-";
  if (!subject.starts_with(kPrefix)) return std::nullopt;
  auto id = FromHex(std::string_view(subject).substr(kPrefix.size()));
  if (!id || id->empty()) return std::nullopt;
  return id;
}

}  // namespace corral::head
