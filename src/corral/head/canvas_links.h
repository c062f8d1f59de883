// CanvasLinks: chains and chords of durable tasks. A task stored with parents waits, PENDING,
// until every parent succeeded, then runs with their results put before its arguments; a parent
// that fails or is revoked ends it (REVOKED for a revoked parent, else FAILURE), and so on down
// the chain. Links live in the store with the tasks: a canvas goes on without its submitter and
// across head restarts (parents that ended before are read back from the store).
//
// It keeps which children wait for which parents and the results of the parents that succeeded;
// the task table tells it when tasks end and hears through the hooks when a child is due or ends.
// io thread only; store reads run on the committer's thread.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>

#include "corral/common.pb.h"
#include "corral/head/io_guard.h"
#include "corral/store/group_commit.h"

namespace corral::head {

class CanvasLinks {
 public:
  struct Hooks {
    // Whether task `id` is in memory: not ended, or its end not stored yet (ParentEnded follows).
    std::function<bool(const std::string& id)> held;
    // Every parent of `child` succeeded: it is due.
    std::function<void(const std::string& child)> due;
    // A parent of `child` failed or was revoked: `child` ends so (state REVOKED or FAILURE), with
    // the parent's pickled exception as its own (`exception`; "" if none).
    std::function<void(const std::string& child, store::TaskState state, std::string why, std::string exception)>
        end;
  };

  CanvasLinks(boost::asio::io_context& io, store::GroupCommitter& committer, Hooks hooks);

  // `child` (in memory, with parents) waits for its parents.
  void Link(const store::DurableTask& child);
  // The end of `parent` is stored: the children waiting for it learn it.
  void ParentEnded(const store::DurableTask& parent);
  // `child` ended: what was kept for it goes.
  void Forget(const std::string& child) { waiting_.erase(child); }
  // Whether `child` still waits for a parent.
  bool Waiting(const std::string& child) const;
  // The run's link and its parents' results, in the parents' order.
  void FillParents(const store::DurableTask& child, proto::TaskSpec* spec) const;

 private:
  struct Child {
    int parents_left = 0;                                             // not yet succeeded
    bool chord = false;                                               // a chord's callback
    std::map<std::string, std::pair<std::string, std::string>> results;  // parent id -> (format, result)
  };
  void Learn(const std::string& child, const store::DurableTask& parent);

  store::GroupCommitter& committer_;
  Hooks hooks_;
  std::unordered_map<std::string, Child> waiting_;              // by child id
  std::unordered_multimap<std::string, std::string> children_;  // parent id -> child id waiting for it
  IoGuard guard_;  // last: goes first
};

}  // namespace corral::head
