// NodeBook: what the head remembers about nodes across restarts, kept in nodes.json in its state
// dir (0600) and written before anything acts on a change: the operator's resource caps, the ids
// revoked with `corral node revoke`, and the ids that joined with a node certificate (who joined
// them and when). A joined id is bound to its certificate: nothing but that certificate registers
// it again. io thread only.
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
    int64_t since_ns = 0;   // wall clock
    std::string token;      // the name of the token it joined with
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
