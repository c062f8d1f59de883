// HeadServer's admin side: which agents may register which node (node certificates, join tokens,
// tokens over loopback), certificate renewal and rotation, and the token and node requests an
// admin sends. See head_server.h.
#include <nlohmann/json.hpp>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/head_peer.h"
#include "corral/head/head_server.h"
#include "corral/head/reply_error.h"
#include "corral/client.pb.h"
#include "corral/node.pb.h"

namespace corral::head {

bool HeadServer::AdmitAgent(Peer* peer, const proto::Hello& hello, proto::HeadToClient& welcome) {
  const std::string& id = hello.node().node_id();
  if (id.empty()) {
    Refuse(peer, "an agent must send its node id");
    return false;
  }
  if (book_->revoked(id)) {
    Refuse(peer, fmt::format("node {} was revoked by the operator (`corral node revoke`); it cannot join again "
                             "under this id", ShortHex(id)));
    return false;
  }
  auto as_node = [&] {
    peer->cert_node = id;
    peer->token = TokenInfo{"n:" + Hex(id), "certificate of node " + ShortHex(id), Role::kAgent, 0, 0, 0};
  };
  if (!peer->cert_node.empty()) {  // mutual TLS: the certificate says which node this is
    if (peer->cert_node != id) {
      LogAuthFailure(net::PeerHost(peer->conn->peer()), "tcp", "node certificate for another node");
      Refuse(peer, fmt::format("this node certificate is for node {}, not {}", ShortHex(peer->cert_node), ShortHex(id)));
      return false;
    }
    as_node();
    return true;
  }
  std::string hex = Hex(id);
  if (!hello.certificate_request().empty()) {  // joining: the id must be new to this cluster
    if (!peer->tls || !options_.ca) {
      Refuse(peer, "nodes join with a certificate only over TLS: on the head's own machine, connect with the "
                   "head's token instead of a join token");
      return false;
    }
    bool again = JoinedWithKey(hello);  // the same key as its join: its certificate is issued again
    if (!again && (book_->joined(id) || nodes_.Find(id))) {
      LogAuthFailure(net::PeerHost(peer->conn->peer()), "tcp", "join as a known node");
      Refuse(peer, fmt::format("node id {} is already known to this cluster and bound to another identity; a new "
                               "machine needs a new id (remove node_id from the agent's state dir). A machine that "
                               "lost its certificate: `corral node revoke {}`, then remove its node_id and join again",
                               hex, hex.substr(0, 8)));
      return false;
    }
    auto cert = options_.ca->IssueNodeCertificate(hello.certificate_request(), id);
    if (!cert) {
      Refuse(peer, "cannot issue the node certificate: " + cert.error().message());
      return false;
    }
    // Kept before the node hears of it: a joined id is bound from now on, and a single-use token
    // is spent even if the Welcome never arrives (the node then asks again with the same key).
    if (!again) {
      Status kept = book_->RecordJoin(id, NodeBook::Joined{clock_.WallNs(), peer->token.name, peer->token.id, true,
                                                           net::RequestKeyFingerprint(hello.certificate_request())
                                                               .value_or("")});
      if (kept.ok()) kept = tokens_->Used(peer->token.id);
      if (!kept.ok()) {
        Refuse(peer, "the head cannot record the join: " + kept.message());
        return false;
      }
    }
    LOG_INFO("node {} {} and got its certificate (valid {}s)", ShortHex(id),
             again ? "asked again for the certificate of its join (same key)"
                   : fmt::format("joined with token '{}'", peer->token.name),
             options_.ca->node_validity_s());
    welcome.mutable_welcome()->set_node_certificate(*cert);
    as_node();
    return true;
  }
  // A token without a certificate: only over the head's own plaintext loopback (or in-process).
  const char* refusal = nullptr;
  const NodeBook::Joined* known = book_->FindJoined(id);
  if (peer->token.role == Role::kJoin) refusal = "a join token is sent with a certificate request (over TLS)";
  else if (peer->tls) refusal = "over TLS a node presents its certificate, or joins with a certificate request";
  else if (known && known->certificate) refusal = "this node joined with a certificate and must present it (over TLS)";
  else if (known && known->token_id != peer->token.id && peer->token.role != Role::kAdmin)
    refusal = "this node id was registered with another token";
  if (refusal) {
    LogAuthFailure(net::PeerHost(peer->conn->peer()), "tcp", refusal);
    Refuse(peer, fmt::format("node {} is refused: {}", ShortHex(id), refusal));
    return false;
  }
  if (!known) {  // kept, so the id cannot join elsewhere later (after a head restart too)
    if (Status s = book_->RecordJoin(id, NodeBook::Joined{clock_.WallNs(), peer->token.name, peer->token.id, false, ""});
        !s.ok()) {
      Refuse(peer, "the head cannot record the node: " + s.message());
      return false;
    }
  }
  return true;
}

bool HeadServer::JoinedWithKey(const proto::Hello& hello) const {
  if (hello.certificate_request().empty() || !options_.ca) return false;
  const NodeBook::Joined* j = book_->FindJoined(hello.node().node_id());
  if (!j || !j->certificate || j->key.empty() || book_->revoked(hello.node().node_id())) return false;
  auto key = net::RequestKeyFingerprint(hello.certificate_request());  // its signature checked: it holds the key
  return key && *key == j->key;
}

void HeadServer::RenewNodeCertificate(Peer* peer, const std::string& request_pem) {
  proto::HeadToAgent reply;
  proto::NodeCertificate* out = reply.mutable_node_certificate();
  if (peer->cert_node.empty() || !options_.ca) {
    out->set_error("only a node that joined with a certificate renews it");
  } else if (auto cert = options_.ca->IssueNodeCertificate(request_pem, peer->cert_node); !cert) {
    out->set_error(cert.error().message());
  } else {
    out->set_certificate(*cert);
    LOG_INFO("node {}: certificate renewed (valid {}s)", ShortHex(peer->cert_node), options_.ca->node_validity_s());
  }
  peer->conn->Send(reply);
}

void HeadServer::HandleCertsRequest(const proto::CertsRequest& request, proto::Reply* reply) {
  if (!options_.ca) return SetError(*reply, Status(Code::kFailedPrecondition, "this head has no cluster CA"));
  if (request.op() == proto::CertsRequest::ROTATE) {
    if (Status s = options_.ca->RotateHeadCertificate(); !s.ok()) return SetError(*reply, s);
    if (options_.tls) {
      options_.tls = options_.ca->server_context();
      listener_->SetTls(options_.tls);
    }
    LOG_INFO("head certificate rotated; new connections get the new one");
  } else if (request.op() != proto::CertsRequest::STATUS) {
    return SetError(*reply, Status(Code::kInvalidArgument, "unknown certs operation"));
  }
  proto::CertsInfo* info = reply->mutable_certs();
  info->set_ca_fingerprint(options_.ca->fingerprint());
  if (auto head = net::InspectCertificate(options_.ca->head_certificate())) {
    info->set_head_serial(head->serial);
    info->set_head_not_after_s(head->not_after_s);
  }
  for (const auto& n : options_.ca->names()) info->add_head_names(n);
  info->set_node_validity_s(options_.ca->node_validity_s());
  info->set_nodes_with_certificates(static_cast<int64_t>(book_->joined_count()));
}

void HeadServer::HandleTokenRequest(const proto::TokenRequest& request, proto::Reply* reply) {
  auto describe = [](const TokenInfo& t) {
    proto::TokenInfo p;
    p.set_name(t.name);
    p.set_role(RoleName(t.role));
    p.set_created_ns(t.created_ns);
    p.set_expires_ns(t.expires_ns);
    p.set_last_used_ns(t.last_used_ns);
    p.set_single_use(t.single_use);
    return p;
  };
  switch (request.op()) {
    case proto::TokenRequest::LIST:
      for (const auto& t : tokens_->List()) *reply->add_tokens() = describe(t);
      return;
    case proto::TokenRequest::CREATE: {
      auto role = ParseRole(request.role());
      if (!role || *role == Role::kWorker)
        return SetError(*reply, Status(Code::kInvalidArgument, fmt::format("role '{}' must be read, submit, admin, "
                                                                           "agent or join", request.role())));
      auto secret = tokens_->Create(request.name(), *role, request.ttl_s(), clock_.WallNs());
      if (!secret) return SetError(*reply, secret.error());
      reply->set_token_secret(*secret);
      for (const auto& t : tokens_->List())
        if (t.name == request.name()) *reply->add_tokens() = describe(t);
      LOG_INFO("token '{}' created (role {})", Printable(request.name()), RoleName(*role));
      return;
    }
    case proto::TokenRequest::REVOKE: {
      auto gone = RevokeToken(request.name());
      if (!gone) return SetError(*reply, gone.error());
      *reply->add_tokens() = describe(*gone);
      return;
    }
    default: SetError(*reply, Status(Code::kInvalidArgument, "unknown token operation"));
  }
}

void HeadServer::HandleNodeRequest(const proto::NodeRequest& request, proto::Reply* reply) {
  // The node by id prefix or hostname; for a revoke also among the ids this head has known (an
  // offline laptop after a head restart) or, given whole, an id it never saw.
  std::set<std::string> ids;
  for (Node* n : nodes_.All())
    if (!request.node().empty() && (Hex(n->view.id).starts_with(request.node()) || n->info.hostname() == request.node()))
      ids.insert(n->view.id);
  if (ids.empty() && request.op() == proto::NodeRequest::REVOKE && request.node().size() >= 4) {
    for (const auto& [known, how] : book_->joined())
      if (Hex(known).starts_with(request.node())) ids.insert(known);
    if (auto whole = FromHex(request.node()); ids.empty() && whole && whole->size() == 8) ids.insert(*whole);
  }
  if (ids.size() != 1)
    return SetError(*reply, MakeStatus(ids.empty() ? Code::kNotFound : Code::kFailedPrecondition,
                                       "'{}' matches {} nodes; give a node id (or enough of its first hex digits) "
                                       "or a hostname from `corral status`",
                                       Printable(request.node()), ids.size()));
  std::string id = *ids.begin();
  Node* node = nodes_.Find(id);  // null: not seen since the head started
  if (!node && request.op() != proto::NodeRequest::REVOKE)
    return SetError(*reply, MakeStatus(Code::kNotFound, "node {} has not connected since the head started",
                                       ShortHex(id)));
  auto describe = [&] {
    proto::ClusterStatus st = BuildStatus();
    for (auto& n : *st.mutable_nodes())
      if (n.info().node_id() == id) *reply->add_nodes() = std::move(n);
  };
  if (request.op() == proto::NodeRequest::REVOKE) {
    if (Status s = book_->Revoke(id); !s.ok()) return SetError(*reply, s);  // kept first
    std::string token;  // the token it joined with: the operator should revoke it too if it is its own
    for (auto& [p, peer] : peers_) {
      bool its_agent = peer->kind == Peer::kAgent && node && peer->node == node;
      if (its_agent) token = peer->token.name;
      if (its_agent || (peer->kind != Peer::kHandshake && peer->token.id == "w:" + Hex(id)))
        peer->conn->Close(Status(Code::kPermissionDenied, "node revoked by the operator"));
    }
    if (node && node->state != NodeState::kDead && node->state != NodeState::kLeft) {
      nodes_.MarkDead(node);
      tasks_.OnNodeDead(node, "revoked by the operator");
    }
    if (const NodeBook::Joined* j = book_->FindJoined(id)) token = j->token;
    bool token_lives = false;  // a single-use join token is gone already: nothing to advise
    for (const auto& t : tokens_->List()) token_lives |= !token.empty() && t.name == token;
    LOG_WARN("node {} ({}) revoked by the operator; it joined with token '{}'", ShortHex(id),
             node ? Printable(node->info.hostname()) : "not connected since the head started", token);
    describe();
    if (!node) {  // not in the status: say which id it was
      proto::NodeStatus* ns = reply->add_nodes();
      ns->mutable_info()->set_node_id(id);
      ns->set_state("revoked");
    }
    if (token_lives) reply->set_node_token(token);
    return;
  }
  auto caps = ParseAmounts(request.max_resources());
  if (!caps) return SetError(*reply, Status(Code::kInvalidArgument, "--max-resources: " + caps.error().message()));
  if (Status s = book_->SetCaps(id, *caps); !s.ok()) return SetError(*reply, s);  // kept first
  nodes_.SetCaps(id, *caps);
  tasks_.OnNodesChanged();
  LOG_INFO("node {}: resources capped at {}", ShortHex(id), caps->empty() ? "nothing (caps removed)" : FormatPairs(*caps));
  describe();
}

Result<TokenInfo> HeadServer::RevokeToken(const std::string& name) {
  auto gone = tokens_->Revoke(name);
  if (!gone) return gone;
  int closed = 0;
  std::set<std::string> worker_ids;  // the workers of nodes that joined with it go too
  for (auto& [p, peer] : peers_)
    if (peer->kind == Peer::kAgent && peer->node && peer->token.id == gone->id) worker_ids.insert("w:" + Hex(peer->node->view.id));
  std::vector<std::string> clients;  // their direct-call connections to agents go too
  for (auto& [p, peer] : peers_)
    if (peer->kind != Peer::kHandshake && (peer->token.id == gone->id || worker_ids.contains(peer->token.id))) {
      if (peer->session) clients.push_back(peer->session->id);
      peer->conn->Close(Status(Code::kPermissionDenied, fmt::format("token '{}' was revoked", gone->name)));
      closed++;
    }
  for (const auto& [id, d] : detached_)  // (and sessions waiting for their client to come back)
    if (d.session->token_id == gone->id) clients.push_back(id);
  worker_ids.insert(gone->id);
  for (const auto& token : worker_ids)  // (and those routed under it that left)
    for (auto& id : ForgetRouted(token)) clients.push_back(std::move(id));
  DropCallers(clients);
  LOG_INFO("token '{}' revoked; {} connection(s) that used it closed", Printable(name), closed);
  return gone;
}

void HeadServer::CloseDeadTokens() {
  int64_t now = clock_.WallNs();
  std::vector<std::string> clients;
  for (auto& [p, peer] : peers_)
    if (peer->kind != Peer::kHandshake && !tokens_->Live(peer->token.id, now) && !peer->conn->closed()) {
      LOG_INFO("closing a connection from {}: its token '{}' expired", peer->conn->peer(), peer->token.name);
      if (peer->session) clients.push_back(peer->session->id);
      peer->conn->Close(Status(Code::kPermissionDenied, fmt::format("token '{}' expired", peer->token.name)));
    }
  for (const auto& [id, d] : detached_)
    if (!tokens_->Live(d.session->token_id, now) && !dropped_callers_.contains(id)) clients.push_back(id);
  std::vector<std::string> dead;
  for (const auto& [token, ids] : routed_)
    if (!tokens_->Live(token, now)) dead.push_back(token);
  for (const auto& token : dead)
    for (auto& id : ForgetRouted(token)) clients.push_back(std::move(id));
  DropCallers(clients);
}

bool HeadServer::RememberRouted(const std::string& token_id, const std::string& client_id) {
  if (token_id.empty() || token_id.starts_with("n:")) return true;  // (admin and node certificates never end)
  auto& clients = routed_[token_id];
  if (clients.contains(client_id)) return true;
  if (clients.size() >= kRoutedPerToken) {
    if (routed_full_.insert(token_id).second)
      LOG_WARN("token {}: {} clients have had routes to actors under it; its other clients call through the head",
               Printable(token_id), kRoutedPerToken);
    return false;
  }
  clients.insert(client_id);
  return true;
}

std::vector<std::string> HeadServer::ForgetRouted(const std::string& token_id) {
  auto t = routed_.find(token_id);
  if (t == routed_.end()) return {};
  std::vector<std::string> ids(t->second.begin(), t->second.end());
  routed_.erase(t);
  routed_full_.erase(token_id);
  return ids;
}

void HeadServer::DropCallers(const std::vector<std::string>& client_ids) {
  if (client_ids.empty()) return;
  proto::HeadToAgent msg;
  for (const auto& id : client_ids) {
    msg.mutable_drop_callers()->add_client_ids(id);
    if (dropped_callers_.size() < kDroppedCallersKept) dropped_callers_.insert(id);  // (told to agents that register later)
  }
  for (Node* n : nodes_.All())
    if (n->conn) n->conn->Send(msg);
}

void HeadServer::TellDroppedCallers(net::Connection& agent) {
  if (dropped_callers_.empty()) return;
  proto::HeadToAgent msg;
  for (const auto& id : dropped_callers_) msg.mutable_drop_callers()->add_client_ids(id);
  agent.Send(msg);
}

}  // namespace corral::head
