#include "corral/head/token_store.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <nlohmann/json.hpp>

#include "corral/base/files.h"
#include "corral/base/ids.h"

namespace corral::head {
namespace {

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return Hex(std::string_view(reinterpret_cast<const char*>(md), n));
}

bool SameText(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Status Denied() {
  return Status(Code::kPermissionDenied, "bad token: set CORRAL_TOKEN or CORRAL_TOKEN_FILE to a token of this head "
                                         "(`corral token create`, or the admin token in its state dir); "
                                         "it may have been revoked or have expired");
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kRead: return "read";
    case Role::kSubmit: return "submit";
    case Role::kAdmin: return "admin";
    case Role::kAgent: return "agent";
    case Role::kWorker: return "worker";
    case Role::kJoin: return "join";
  }
  return "?";
}

std::optional<Role> ParseRole(std::string_view name) {
  for (Role r : {Role::kRead, Role::kSubmit, Role::kAdmin, Role::kAgent, Role::kWorker, Role::kJoin})
    if (name == RoleName(r)) return r;
  return std::nullopt;
}

bool Allows(Role have, Role need) {
  if (have == Role::kAdmin || have == need) return true;
  if (have == Role::kJoin) return false;  // joining is all it is for
  if (need == Role::kJoin) return have == Role::kAgent;  // an agent token joins any number of nodes
  if (need == Role::kAgent) return false;
  if (have == Role::kAgent) return false;  // only what an agent sends (its workers have their own credential)
  if (have == Role::kWorker) return need == Role::kRead || need == Role::kSubmit;
  return static_cast<int>(have) >= static_cast<int>(need);
}

Result<TokenStore> TokenStore::Open(std::string path, std::string admin_secret) {
  if (admin_secret.empty())  // it keys the worker credentials: none would be a key anyone knows
    return Err(Code::kFailedPrecondition, "the head has no admin token: remove the empty `token` file from its "
                                          "state dir to make a new one");
  TokenStore store;
  store.path_ = std::move(path);
  store.admin_secret_ = std::move(admin_secret);
  auto text = ReadFile(store.path_);
  if (!text) return store;  // none created yet
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("tokens") || !doc["tokens"].is_array())
    return Err(Code::kFailedPrecondition, fmt::format("{} is not a token file (restore it, or remove it to "
                                                      "drop every token but the admin one)",
                                                      store.path_));
  Status damaged(Code::kFailedPrecondition, fmt::format("{}: a token entry is damaged", store.path_));
  // A whole number, or 0 when absent; a value of another type makes the file damaged (an
  // unchecked conversion of a huge float would be undefined).
  auto whole = [](const nlohmann::json& t, const char* key) -> std::optional<int64_t> {
    if (!t.contains(key)) return 0;
    if (!t[key].is_number_integer()) return std::nullopt;
    return t[key].get<int64_t>();
  };
  for (const auto& t : doc["tokens"]) {
    if (!t.is_object()) return Err(damaged);
    Entry e;
    auto text = [&](const char* key) { return t.contains(key) && t[key].is_string() ? t[key].get<std::string>() : ""; };
    auto role = ParseRole(text("role"));
    e.info.id = text("id");
    e.info.name = text("name");
    e.secret_sha256 = text("sha256");
    auto created = whole(t, "created_ns"), expires = whole(t, "expires_ns");
    if (!role || e.info.id.size() != 12 || e.secret_sha256.size() != 64 || !created || !expires) return Err(damaged);
    e.info.role = *role;
    e.info.created_ns = *created;
    e.info.expires_ns = *expires;
    e.info.single_use = t.contains("single_use") && t["single_use"].is_boolean() && t["single_use"].get<bool>();
    store.by_id_[e.info.id] = std::move(e);
  }
  return store;
}

Status TokenStore::Save() const {
  if (path_.empty()) return Status(Code::kFailedPrecondition, "this head keeps no token file: tokens cannot be made");
  nlohmann::json tokens = nlohmann::json::array();
  for (const auto& [id, e] : by_id_)
    tokens.push_back({{"id", id},
                      {"name", e.info.name},
                      {"role", RoleName(e.info.role)},
                      {"sha256", e.secret_sha256},
                      {"created_ns", e.info.created_ns},
                      {"expires_ns", e.info.expires_ns},
                      {"single_use", e.info.single_use}});
  return WriteFile(path_, nlohmann::json{{"tokens", tokens}}.dump(1) + "\n", 0600);
}

Result<TokenInfo> TokenStore::Authenticate(std::string_view token, int64_t now) {
  if (!admin_secret_.empty() && SameText(token, admin_secret_)) {
    admin_last_used_ns_ = now;
    return TokenInfo{"", "admin", Role::kAdmin, 0, 0, now};
  }
  if (token.starts_with("cw_")) {  // cw_<node hex>_<expiry s>_<mac>; keyed by the admin secret, so none without one
    if (admin_secret_.empty()) return Err(Denied());
    size_t sep = token.find('_', 3);
    size_t sep2 = sep == std::string_view::npos ? sep : token.find('_', sep + 1);
    if (sep2 == std::string_view::npos || sep2 - sep - 1 > 10) return Err(Denied());  // seconds: 10 digits at most
    auto node = FromHex(token.substr(3, sep - 3));
    int64_t expires_s = 0;
    for (char c : token.substr(sep + 1, sep2 - sep - 1)) {
      if (c < '0' || c > '9') return Err(Denied());
      expires_s = expires_s * 10 + (c - '0');
    }
    if (expires_s > INT64_MAX / 1'000'000'000) return Err(Denied());  // found by fuzzing: it overflowed
    int64_t expires_ns = expires_s * 1'000'000'000;
    if (!node || node->empty() || !SameText(token, WorkerToken(*node, expires_ns)) || now >= expires_ns)
      return Err(Denied());
    return TokenInfo{"w:" + Hex(*node), "workers of node " + Hex(*node).substr(0, 8), Role::kWorker, 0, expires_ns, now};
  }
  // ct_<12 hex id>_<secret>, cj_ for join tokens
  if (token.size() < 3 + 12 + 1 + 1 || !(token.starts_with("ct_") || token.starts_with("cj_")) || token[15] != '_')
    return Err(Denied());
  auto it = by_id_.find(std::string(token.substr(3, 12)));
  if (it == by_id_.end() || !SameText(Sha256Hex(token.substr(16)), it->second.secret_sha256) ||
      token.starts_with("cj_") != (it->second.info.role == Role::kJoin))
    return Err(Denied());
  if (it->second.info.expires_ns != 0 && now >= it->second.info.expires_ns) return Err(Denied());
  it->second.info.last_used_ns = now;
  return it->second.info;
}

Result<std::string> TokenStore::Create(const std::string& name, Role role, int64_t ttl_s, int64_t now) {
  if (name.empty() || name.size() > 64 || name == "admin")
    return Err(Code::kInvalidArgument, fmt::format("a token name is 1-64 characters and not 'admin' (got '{}')", name));
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return Err(Code::kInvalidArgument, fmt::format("token name '{}': use letters, digits, '-', '_' or '.'", name));
  if (ttl_s < 0) return Err(Code::kInvalidArgument, "a token's time to live must be >= 0 (0: no expiry)");
  for (const auto& [id, e] : by_id_)
    if (e.info.name == name)
      return Err(Code::kAlreadyExists, fmt::format("a token named '{}' exists: revoke it first, or pick another name",
                                                   name));
  Entry e;
  e.info.id = Hex(RandomBytes(6));
  e.info.name = name;
  e.info.role = role;
  e.info.created_ns = now;
  e.info.expires_ns = ttl_s > 0 ? now + ttl_s * 1'000'000'000 : 0;
  e.info.single_use = role == Role::kJoin && ttl_s == 0;
  std::string secret = Hex(RandomBytes(24));
  e.secret_sha256 = Sha256Hex(secret);
  std::string id = e.info.id;
  by_id_[id] = std::move(e);
  if (Status s = Save(); !s.ok()) {
    by_id_.erase(id);
    return Err(s);
  }
  return fmt::format("{}_{}_{}", role == Role::kJoin ? "cj" : "ct", id, secret);
}

Status TokenStore::Used(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end() || !it->second.info.single_use) return Status::Ok();
  Entry gone = std::move(it->second);
  by_id_.erase(it);
  if (Status s = Save(); !s.ok()) {
    by_id_[gone.info.id] = std::move(gone);
    return s;
  }
  return Status::Ok();
}

Result<TokenInfo> TokenStore::Revoke(const std::string& name) {
  if (name == "admin")
    return Err(Code::kInvalidArgument, "the built-in admin token cannot be revoked: replace the `token` file in "
                                       "the head's state dir and restart the head to rotate it");
  for (auto it = by_id_.begin(); it != by_id_.end(); ++it) {
    if (it->second.info.name != name) continue;
    Entry gone = std::move(it->second);
    by_id_.erase(it);
    if (Status s = Save(); !s.ok()) {
      by_id_[gone.info.id] = gone;
      return Err(s);
    }
    return gone.info;
  }
  return Err(Code::kNotFound, fmt::format("no token named '{}' (see `corral token list`)", name));
}

std::vector<TokenInfo> TokenStore::List() const {
  std::vector<TokenInfo> out{{"", "admin", Role::kAdmin, 0, 0, admin_last_used_ns_}};
  for (const auto& [id, e] : by_id_) out.push_back(e.info);
  return out;
}

std::string TokenStore::WorkerToken(const std::string& node_id, int64_t expires_ns) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  int64_t expires_s = expires_ns / 1'000'000'000;
  std::string message = fmt::format("corral worker credential:{}:{}", Hex(node_id), expires_s);
  HMAC(EVP_sha256(), admin_secret_.data(), static_cast<int>(admin_secret_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &n);
  return fmt::format("cw_{}_{}_{}", Hex(node_id), expires_s, Hex(std::string_view(reinterpret_cast<const char*>(mac), n)));
}

bool TokenStore::Live(const std::string& id, int64_t now) const {
  if (id.empty() || id.starts_with("w:") || id.starts_with("n:")) return true;  // admin, workers, node certificates
  auto it = by_id_.find(id);
  return it != by_id_.end() && (it->second.info.expires_ns == 0 || now < it->second.info.expires_ns);
}

}  // namespace corral::head
