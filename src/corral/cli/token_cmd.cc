// `corral token create|list|revoke` (the head's tokens with roles) and `corral node set` (an
// operator's caps on a node): admin commands.
#include <cstdio>
#include <optional>

#include "corral/base/ids.h"
#include "corral/cli/commands.h"

namespace corral::cli {
namespace {

// "30d", "12h", "10m", "45s" or plain seconds; 0 or "" for no expiry.
Result<int64_t> ParseTtl(const std::string& text) {
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
               fmt::format("--ttl '{}': use a number with s, m, h or d (e.g. 30d), at most ten years", text));
  return static_cast<int64_t>(n * scale);
}

void PrintTokens(const proto::Reply& r) {
  std::printf("%-20s %-7s %-19s %-19s %s\n", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED");
  for (const auto& t : r.tokens())
    std::printf("%-20s %-7s %-19s %-19s %s\n", t.name().c_str(), t.role().c_str(),
                t.name() == "admin" ? "(first start)" : LocalTime(t.created_ns(), false).c_str(),
                t.expires_ns() ? LocalTime(t.expires_ns(), false).c_str() : "never",
                t.last_used_ns() ? LocalTime(t.last_used_ns(), false).c_str() : "-");
}

// Sends `req` to the head; prints what went wrong (prefixed with `what`) and returns nothing if it did.
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
                 f.role.c_str(), t->ttl_s() ? fmt::format(", expires in {}", f.ttl).c_str() : "");
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

}  // namespace corral::cli
