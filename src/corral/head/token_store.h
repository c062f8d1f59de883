// TokenStore: the head's tokens, each with a role. A token is "ct_<id>_<secret>"; the store keeps
// its name, role, creation and expiry and the SHA-256 of its secret (tokens.json in the head's
// state dir, 0600), never the secret itself. The state dir's `token` file (the admin token made at
// the first start) is the built-in "admin" token; it cannot be revoked (replace the file to
// rotate it).
//
// Roles, each including the ones before it: read (status, nodes, durable results, lists),
// submit (remote functions, values, durable tasks, schedules), admin (everything: drain, queue
// settings, tokens). agent is apart: it may register (and join) nodes and nothing else. worker: the
// credential a node's workers get instead of their agent's token ("cw_<node>_<expiry>_<mac>", an
// HMAC of the node id and its expiry under the admin secret: valid across head restarts until it
// expires, stored nowhere; the head gives each agent a fresh one well before): submit nested tasks
// and read, nothing else. join: "cj_<id>_<secret>", only for joining a node (an agent sends
// it once with a certificate request and gets its node certificate); single-use unless made with a
// time to live, then usable by any number of nodes until it expires. io thread only; Save writes the file (small, no fsync).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/base/status.h"

namespace corral::head {

// kWorker is never created by hand: each node's workers get one derived from the node's id.
enum class Role { kRead = 1, kSubmit = 2, kAdmin = 3, kAgent = 4, kWorker = 5, kJoin = 6 };

const char* RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);
// Whether a token of role `have` may do what needs `need`.
bool Allows(Role have, Role need);

struct TokenInfo {
  std::string id;     // 12 hex digits; "" for the built-in admin token
  std::string name;
  Role role = Role::kRead;
  int64_t created_ns = 0;
  int64_t expires_ns = 0;    // wall clock; 0: never
  int64_t last_used_ns = 0;  // in memory only
  bool single_use = false;   // join tokens without a time to live: gone once a node joined with it
};

// Token ids of workers' credentials are "w:<node hex>".
inline bool IsWorkerToken(std::string_view token_id) { return token_id.starts_with("w:"); }

class TokenStore {
 public:
  // Loads `path` (tokens.json; missing: none yet). `admin_secret`: the built-in admin token.
  static Result<TokenStore> Open(std::string path, std::string admin_secret);

  // Who presents `token` at wall time `now`; kPermissionDenied when no live token matches.
  Result<TokenInfo> Authenticate(std::string_view token, int64_t now);
  // A new token; returns its secret (shown once). kAlreadyExists for a name in use.
  Result<std::string> Create(const std::string& name, Role role, int64_t ttl_s, int64_t now);
  // A node joined with token `id`: a single-use token is gone from now on.
  Status Used(const std::string& id);
  // Removes the token named `name`; returns what it was.
  Result<TokenInfo> Revoke(const std::string& name);
  std::vector<TokenInfo> List() const;
  // The credential of node `node_id`'s workers (role worker), valid until wall time `expires_ns`.
  std::string WorkerToken(const std::string& node_id, int64_t expires_ns) const;
  // Whether token `id` still exists and has not expired at `now` ("" is the built-in admin).
  bool Live(const std::string& id, int64_t now) const;

 private:
  struct Entry {
    TokenInfo info;
    std::string secret_sha256;  // hex
  };
  Status Save() const;

  std::string path_;
  std::string admin_secret_;
  int64_t admin_last_used_ns_ = 0;
  std::map<std::string, Entry> by_id_;
};

}  // namespace corral::head
