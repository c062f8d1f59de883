// NodeRegistry: the head's table of nodes and their liveness.
//
// A node is identified by the id its agent chose, never by address (laptops change addresses).
// Liveness, timed with CLOCK_BOOTTIME through the injected Clock:
//   alive --no heartbeat for suspect_after, or connection lost--> suspect (takes no new work)
//   suspect --heartbeat on a live connection--> alive
//   suspect --no heartbeat for dead_after--> dead (its tasks are re-queued by the caller)
//   any --drained and said goodbye--> left
// A node that loses its connection keeps its tasks: its agent holds a lease (shorter than
// dead_after) and keeps running them; if it registers again before it is declared dead, the caller
// reconciles what it still holds. A dead or departed node that registers again starts afresh.
// Draining is orthogonal: a draining node is alive but takes no new work.
// Owned by the head; io thread only.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "corral/base/clock.h"
#include "corral/common.pb.h"
#include "corral/head/scheduler.h"
#include "corral/net/connection.h"

namespace corral::head {

enum class NodeState { kAlive, kSuspect, kDead, kLeft };
const char* NodeStateName(NodeState state);

struct LivenessConfig {
  Nanos heartbeat_interval = Ms(1000);
  Nanos suspect_after = Ms(5000);
  Nanos dead_after = Ms(30000);
  Nanos lease = 0;  // granted with every heartbeat ack; 0: three quarters of dead_after

  // The lease granted: `lease`, or three quarters of dead_after when it is 0 or not shorter than
  // dead_after. It counts from when the agent sent its heartbeat, so only a lease shorter than
  // dead_after ends before the head may declare the node dead; a longer one is clamped, not refused.
  Nanos EffectiveLease() const { return lease > 0 && lease < dead_after ? lease : dead_after / 4 * 3; }
};

struct Node {
  NodeView view;
  NodeState state = NodeState::kAlive;
  bool connected = true;
  bool draining = false;
  proto::NodeInfo info;
  Nanos last_heartbeat = 0;
  std::shared_ptr<net::Connection> conn;
  std::set<std::string> tasks;             // ids of tasks dispatched here and not finished
  std::set<std::string> shipped_functions; // function hashes this node's agent has
  proto::Counters counters;                // the agent's, from its last heartbeat
  int prefetch_per_cpu = 0;                // its prefetch queue holds this many tasks per CPU it counts
  ResourceSet reserved;                    // gangs' named resources on it (gang_book.h), part of view.total
  ResourceSet reserved_plain;              // what those bundles took out of its free pool
};

class NodeRegistry {
 public:
  NodeRegistry(const Clock& clock, LivenessConfig config) : clock_(clock), config_(config) {}

  // Adds the node, or revives a dead or departed one afresh. If the node is known and not dead
  // (it reconnected), it keeps its tasks and resource accounting, and *resumed is set: the caller
  // reconciles its tasks with what the agent says it holds. `prefetch_per_cpu` sizes its prefetch queue.
  Node* Register(const proto::NodeInfo& info, std::shared_ptr<net::Connection> conn, int prefetch_per_cpu,
                 bool* resumed = nullptr);
  void Update(Node* node, const proto::NodeInfo& info);
  void Heartbeat(Node* node);
  // Its connection is gone: no new work; its tasks stay until it comes back or is declared dead.
  void Disconnected(Node* node);
  void SetDraining(Node* node, bool draining);
  void MarkDead(Node* node);
  // Drained and gone on purpose: not dead (nothing to re-run), not shown as a failure.
  void MarkLeft(Node* node);
  // Advances suspect/dead states. Returns the nodes that became dead now.
  std::vector<Node*> Tick();

  // The operator's caps on what a node may advertise (`corral node set --max-resources`): a capped
  // resource counts as the smaller of what the node says and the cap. A live node's total changes
  // at once (what it runs stays; only new placements see the change). Empty: no caps.
  void SetCaps(const std::string& node_id, std::map<std::string, double> caps);
  const std::map<std::string, std::map<std::string, double>>& caps() const { return caps_; }

  Node* Find(std::string_view id);  // (no copy of the id: the tables keep ids in place)
  // Nodes that are not dead, in registration order.
  const std::vector<const NodeView*>& LiveViews();
  std::vector<Node*> All();
  const LivenessConfig& config() const { return config_; }
  const Clock& clock() const { return clock_; }

 private:
  void Invalidate() { views_valid_ = false; }
  void Refresh(Node* node);  // recomputes whether it takes new work

  const Clock& clock_;
  LivenessConfig config_;
  uint64_t next_order_ = 1;
  struct IdHash {  // looks up by string_view too
    using is_transparent = void;
    size_t operator()(std::string_view id) const noexcept { return std::hash<std::string_view>()(id); }
  };
  std::unordered_map<std::string, std::unique_ptr<Node>, IdHash, std::equal_to<>> nodes_;
  std::vector<const NodeView*> views_;
  bool views_valid_ = false;
  std::map<std::string, std::map<std::string, double>> caps_;  // by node id
};

}  // namespace corral::head
