// NodeRegistry: the head's table of nodes and their liveness.
//
// A node is identified by the id its agent chose, never by address (laptops change addresses).
// Liveness, timed with CLOCK_BOOTTIME through the injected Clock:
//   alive --no heartbeat for suspect_after--> suspect (takes no new work)
//   suspect --heartbeat--> alive
//   suspect --no heartbeat for dead_after--> dead (its tasks are re-queued by the caller)
//   any --connection lost--> dead
// A dead node that registers again under the same id starts afresh as alive.
// Owned by the head; io thread only.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "corral/base/clock.h"
#include "corral/common.pb.h"
#include "corral/head/scheduler.h"
#include "corral/net/connection.h"

namespace corral::head {

enum class NodeState { kAlive, kSuspect, kDead };
const char* NodeStateName(NodeState state);

struct LivenessConfig {
  Nanos heartbeat_interval = Ms(1000);
  Nanos suspect_after = Ms(5000);
  Nanos dead_after = Ms(30000);
};

struct Node {
  NodeView view;
  NodeState state = NodeState::kAlive;
  proto::NodeInfo info;
  Nanos last_heartbeat = 0;
  std::shared_ptr<net::Connection> conn;
  std::set<std::string> tasks;             // ids of tasks dispatched here and not finished
  std::set<std::string> shipped_functions; // function hashes this node's agent has
  proto::Counters counters;                // the agent's, from its last heartbeat
};

class NodeRegistry {
 public:
  NodeRegistry(const Clock& clock, LivenessConfig config) : clock_(clock), config_(config) {}

  // Adds or revives the node. `prefetch_per_cpu` sizes its prefetch queue.
  Node* Register(const proto::NodeInfo& info, std::shared_ptr<net::Connection> conn, int prefetch_per_cpu);
  void Update(Node* node, const proto::NodeInfo& info);
  void Heartbeat(Node* node);
  void MarkDead(Node* node);
  // Advances suspect/dead states. Returns the nodes that became dead now.
  std::vector<Node*> Tick();

  Node* Find(const std::string& id);
  // Nodes that are not dead, in registration order.
  const std::vector<const NodeView*>& LiveViews();
  std::vector<Node*> All();
  const LivenessConfig& config() const { return config_; }

 private:
  void Invalidate() { views_valid_ = false; }

  const Clock& clock_;
  LivenessConfig config_;
  uint64_t next_order_ = 1;
  std::unordered_map<std::string, std::unique_ptr<Node>> nodes_;
  std::vector<const NodeView*> views_;
  bool views_valid_ = false;
};

}  // namespace corral::head
