// NodeBook: what the head remembers about nodes across restarts, kept in nodes.json in its state
// dir (0600) and written before anything acts on a change: the operator's resource caps, the ids
// revoked with `corral node revoke`, and every id that ever registered: with a node certificate
// (bound to it: nothing else registers it again) or with a token over loopback (bound to that
// token). A known id never joins again as a new node. io thread only.
#pragma once

#include <map>
#include <set>
#include <string>

#include "corral/base/status.h"

namespace corral::head {

class NodeBook {
 public:
  using Caps = std::map<std::string, double>;
  struct Joined {
    int64_t since_ns = 0;     // wall clock
    std::string token;        // the name of the token it joined (or registered) with
    std::string token_id;     // and its id ("" the admin token)
    bool certificate = true;  // joined with a certificate; false: registered with a token over loopback
    std::string key;          // the key it joined with ("sha256:..." of its public key), for a re-delivery
  };

  // Loads `path` (missing: nothing kept yet; empty path: nothing is ever kept).
  static Result<NodeBook> Open(std::string path);

  const std::map<std::string, Caps>& caps() const { return caps_; }
  bool revoked(const std::string& id) const { return revoked_.contains(id); }
  bool joined(const std::string& id) const { return joined_.contains(id); }
  const Joined* FindJoined(const std::string& id) const {
    auto it = joined_.find(id);
    return it == joined_.end() ? nullptr : &it->second;
  }
  size_t joined_count() const { return joined_.size(); }
  const std::map<std::string, Joined>& joined() const { return joined_; }

  // Each is kept on disk first; on a failed write nothing changes.
  Status SetCaps(const std::string& id, Caps caps);  // empty: no caps
  Status Revoke(const std::string& id);
  Status RecordJoin(const std::string& id, Joined how);

 private:
  Status Save(const std::map<std::string, Caps>& caps, const std::set<std::string>& revoked,
              const std::map<std::string, Joined>& joined) const;

  std::string path_;
  std::map<std::string, Caps> caps_;
  std::set<std::string> revoked_;
  std::map<std::string, Joined> joined_;
};

}  // namespace corral::head
