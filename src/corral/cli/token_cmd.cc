// Admin commands: `corral token create|list|revoke` (the head's tokens with roles), `corral node
// set|revoke` (an operator's caps on a node, cutting one off) and `corral certs status|rotate`.
#include <cstdio>
#include <optional>

#include "corral/base/ids.h"
#include "corral/cli/commands.h"

namespace corral::cli {

Result<int64_t> ParseTtl(const std::string& text, const char* flag) {
  if (text.empty() || text == "0") return 0;
  size_t used = 0;
  double n = 0;
  try {
    n = std::stod(text, &used);
  } catch (...) {
    used = 0;
  }
  std::string unit = text.substr(used);
  double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : -1;
  if (used == 0 || scale < 0 || !(n > 0) || n * scale > 10.0 * 365 * 86400)
    return Err(Code::kInvalidArgument,
               fmt::format("{} '{}': use a number with s, m, h or d (e.g. 30d), at most ten years", flag, text));
  return static_cast<int64_t>(n * scale);
}

namespace {

void PrintTokens(const proto::Reply& r) {
  std::printf("%-20s %-7s %-19s %-19s %s\n", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED");
  for (const auto& t : r.tokens())
    std::printf("%-20s %-7s %-19s %-19s %s\n", t.name().c_str(), t.role().c_str(),
                t.name() == "admin" ? "(first start)" : LocalTime(t.created_ns(), false).c_str(),
                t.expires_ns() ? LocalTime(t.expires_ns(), false).c_str() : t.single_use() ? "once used" : "never",
                t.last_used_ns() ? LocalTime(t.last_used_ns(), false).c_str() : "-");
}

// Sends `req` to the head; prints what went wrong (prefixed with `what`) and returns nothing if it did.
std::optional<proto::Reply> Ask(const std::string& address, const char* what, const proto::Request& req);

// The command that joins another machine with join token `secret`: the head's address as other
// machines see it (its certificate's first name that is not loopback) and its CA's fingerprint.
void PrintJoinCommand(const std::string& address, const std::string& secret) {
  proto::Request req;
  req.mutable_certs()->set_op(proto::CertsRequest::STATUS);
  auto r = Ask(address, "corral token", req);
  if (!r) return;
  // Like `corral start --head`: its first address that is not loopback, else its host name.
  std::string host;
  for (const auto& n : r->certs().head_names()) {
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address(n, ec);
    if (!ec && !a.is_loopback()) {
      host = n;
      break;
    }
    if (ec && host.empty() && n != "localhost") host = n;
  }
  std::string port = "7370";
  if (auto ep = net::ParseEndpoint(ResolveAddress(address), 7370)) port = std::to_string(ep->port);
  if (host.empty()) {
    std::fprintf(stderr, "this head listens on loopback only: other machines cannot join it\n");
    return;
  }
  std::fprintf(stderr, "join a machine with (run there):\n  corral start --address %s --join-token %s --ca-fingerprint %s\n",
               net::Endpoint{host, static_cast<uint16_t>(std::stoi(port)), ""}.ToString().c_str(), secret.c_str(),
               r->certs().ca_fingerprint().c_str());
}

std::optional<proto::Reply> Ask(const std::string& address, const char* what, const proto::Request& req) {
  auto c = ConnectCli(address, "corral");
  if (!c) return std::nullopt;
  auto r = c->Request(req, 10);
  if (!r) {
    std::fprintf(stderr, "%s: %s\n", what, r.error().message().c_str());
    return std::nullopt;
  }
  return std::move(*r);
}

}  // namespace

int TokenCommand(const TokenFlags& f) {
  proto::Request req;
  proto::TokenRequest* t = req.mutable_token();
  if (f.op == "create") {
    auto ttl = ParseTtl(f.ttl);
    if (!ttl) {
      std::fprintf(stderr, "corral token: %s\n", ttl.error().message().c_str());
      return 2;
    }
    t->set_op(proto::TokenRequest::CREATE);
    t->set_name(f.name.empty() ? f.role : f.name);
    t->set_role(f.role);
    t->set_ttl_s(*ttl);
  } else if (f.op == "revoke") {
    t->set_op(proto::TokenRequest::REVOKE);
    t->set_name(f.name);
  } else {
    t->set_op(proto::TokenRequest::LIST);
  }
  auto r = Ask(f.address, "corral token", req);
  if (!r) return 1;
  if (f.op == "create") {
    // The secret goes to stdout alone (scripts: TOKEN=$(corral token create ...)); the rest to stderr.
    std::printf("%s\n", r->token_secret().c_str());
    std::fprintf(stderr, "token '%s' (role %s) created%s; it is shown only this once\n", t->name().c_str(),
                 f.role.c_str(),
                 t->ttl_s() ? fmt::format(", expires in {}", f.ttl).c_str()
                 : f.role == "join" ? ", for one machine (--ttl makes it usable by any number until it expires)"
                                    : "");
    if (f.role == "join") PrintJoinCommand(f.address, r->token_secret());
  } else if (f.op == "revoke") {
    std::printf("token '%s' revoked; connections that used it are closed\n", f.name.c_str());
  } else {
    PrintTokens(*r);
  }
  return 0;
}

int NodeSet(const std::string& address, const std::string& node, const std::string& max_resources) {
  proto::Request req;
  req.mutable_node()->set_op(proto::NodeRequest::SET);
  req.mutable_node()->set_node(node);
  req.mutable_node()->set_max_resources(max_resources);
  auto r = Ask(address, "corral node set", req);
  if (!r) return 1;
  for (const auto& n : r->nodes())
    std::printf("node %s (%s): %s\n", ShortHex(n.info().node_id()).c_str(), n.info().hostname().c_str(),
                max_resources.empty() ? "caps removed" : ("resources capped at " + max_resources).c_str());
  return 0;
}

int NodeRevoke(const std::string& address, const std::string& node) {
  proto::Request req;
  req.mutable_node()->set_op(proto::NodeRequest::REVOKE);
  req.mutable_node()->set_node(node);
  auto r = Ask(address, "corral node revoke", req);
  if (!r) return 1;
  for (const auto& n : r->nodes())
    std::printf("node %s (%s) revoked: disconnected, its tasks re-run elsewhere, it cannot join again under this id\n",
                ShortHex(n.info().node_id()).c_str(), n.info().hostname().c_str());
  if (!r->node_token().empty())
    std::printf("it joined with token '%s': if that token is this machine's alone, revoke it too (`corral token "
                "revoke %s`); a shared one lets a holder join again under a new node id\n",
                r->node_token().c_str(), r->node_token().c_str());
  return 0;
}

int CertsCommand(const std::string& address, const std::string& op) {
  proto::Request req;
  req.mutable_certs()->set_op(op == "rotate" ? proto::CertsRequest::ROTATE : proto::CertsRequest::STATUS);
  auto r = Ask(address, ("corral certs " + op).c_str(), req);
  if (!r) return 1;
  const proto::CertsInfo& c = r->certs();
  std::string names;
  for (const auto& n : c.head_names()) names += (names.empty() ? "" : ", ") + n;
  if (op == "rotate")
    std::printf("the head has a new certificate; new connections get it (clients and nodes trust the CA, which is "
                "unchanged)\n");
  std::printf("cluster CA:        %s\nhead certificate:  serial %s, for %s, valid until %s\n"
              "node certificates: valid %.0f days (renewed by each node when a third is left); %lld node(s) joined "
              "with one\n",
              c.ca_fingerprint().c_str(), c.head_serial().c_str(), names.c_str(),
              LocalTime(c.head_not_after_s() * 1'000'000'000, false).c_str(),
              static_cast<double>(c.node_validity_s()) / 86400, static_cast<long long>(c.nodes_with_certificates()));
  return 0;
}

}  // namespace corral::cli
