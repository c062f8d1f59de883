#include "corral/head/node_registry.h"

#include <algorithm>

#include "corral/base/ids.h"
#include "corral/base/log.h"

namespace corral::head {

const char* NodeStateName(NodeState state) {
  switch (state) {
    case NodeState::kAlive: return "alive";
    case NodeState::kSuspect: return "suspect";
    case NodeState::kDead: return "dead";
    case NodeState::kLeft: return "left";
  }
  return "?";
}

Node* NodeRegistry::Register(const proto::NodeInfo& info, std::shared_ptr<net::Connection> conn,
                             int prefetch_per_cpu, bool* resumed) {
  auto& slot = nodes_[info.node_id()];
  if (!slot) slot = std::make_unique<Node>();
  Node* n = slot.get();
  bool resume = n->view.order && n->state != NodeState::kDead && n->state != NodeState::kLeft;
  if (resumed) *resumed = resume;
  if (resume) {
    n->prefetch_per_cpu = prefetch_per_cpu;
    n->conn = std::move(conn);
    n->connected = true;
    n->draining = false;
    n->shipped_functions.clear();  // it may be a new agent process under the same id
    Update(n, info);
    n->state = NodeState::kAlive;
    n->last_heartbeat = clock_.BootTimeNs();
    Refresh(n);
    Invalidate();
    return n;
  }
  uint64_t order = n->view.order ? n->view.order : next_order_++;
  *n = Node{};
  n->view.id = info.node_id();
  n->view.order = order;
  n->conn = std::move(conn);
  n->last_heartbeat = clock_.BootTimeNs();
  n->prefetch_per_cpu = prefetch_per_cpu;
  Update(n, info);
  n->view.available = n->view.total;
  n->state = NodeState::kAlive;
  Refresh(n);
  Invalidate();
  return n;
}

void NodeRegistry::Refresh(Node* n) {
  n->view.schedulable = n->state == NodeState::kAlive && n->connected && !n->draining;
}

void NodeRegistry::Update(Node* n, const proto::NodeInfo& info) {
  n->info = info;
  n->view.total = ResourceSet();
  for (const auto& [k, v] : info.resources()) n->view.total.Set(k, v);
  if (auto c = caps_.find(info.node_id()); c != caps_.end())
    for (const auto& [k, cap] : c->second) n->view.total.Set(k, std::min(n->view.total.Get(k), cap));
  n->view.total.Add(n->reserved);
  n->view.labels.clear();
  for (const auto& [k, v] : info.labels()) n->view.labels[k] = v;
  n->view.python = info.python_version();
  n->view.cloudpickle = info.cloudpickle_version();
  n->view.interruptible_only = info.interruptible_only();
  n->view.task_functions = std::set<std::string>(info.task_functions().begin(), info.task_functions().end());
  // What it may queue ahead follows the CPUs it counts for (an operator's cap included).
  n->view.prefetch_limit = static_cast<int>(n->view.total.Get(kCpu)) * n->prefetch_per_cpu;
}

void NodeRegistry::SetCaps(const std::string& node_id, std::map<std::string, double> caps) {
  if (caps.empty()) caps_.erase(node_id);
  else caps_[node_id] = std::move(caps);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  Node* n = it->second.get();
  ResourceSet before = n->view.total;
  Update(n, n->info);
  n->view.available.Add(n->view.total);  // what is free moves by what the total moved
  n->view.available.Subtract(before);
  Invalidate();
}

void NodeRegistry::Heartbeat(Node* n) {
  n->last_heartbeat = clock_.BootTimeNs();
  if (n->state == NodeState::kSuspect && n->connected) {
    LOG_INFO("node {} is alive again", ShortHex(n->view.id));
    n->state = NodeState::kAlive;
    Refresh(n);
  }
}

void NodeRegistry::Disconnected(Node* n) {
  n->connected = false;
  n->conn.reset();
  if (n->state == NodeState::kAlive) n->state = NodeState::kSuspect;
  Refresh(n);
}

void NodeRegistry::SetDraining(Node* n, bool draining) {
  n->draining = draining;
  Refresh(n);
}

void NodeRegistry::MarkDead(Node* n) {
  if (n->state == NodeState::kDead || n->state == NodeState::kLeft) return;
  n->state = NodeState::kDead;
  Refresh(n);
  Invalidate();
}

void NodeRegistry::MarkLeft(Node* n) {
  n->state = NodeState::kLeft;
  Refresh(n);
  Invalidate();
}

std::vector<Node*> NodeRegistry::Tick() {
  std::vector<Node*> died;
  Nanos now = clock_.BootTimeNs();
  for (auto& [id, n] : nodes_) {
    if (n->state == NodeState::kDead || n->state == NodeState::kLeft) continue;
    Nanos silent = now - n->last_heartbeat;
    if (silent >= config_.dead_after) {
      LOG_WARN("node {} sent no heartbeat for {:.1f}s: dead", ShortHex(id), silent / 1e9);
      MarkDead(n.get());
      died.push_back(n.get());
    } else if (silent >= config_.suspect_after && n->state == NodeState::kAlive) {
      LOG_WARN("node {} sent no heartbeat for {:.1f}s: suspect, no new work", ShortHex(id), silent / 1e9);
      n->state = NodeState::kSuspect;
      Refresh(n.get());
    }
  }
  return died;
}

Node* NodeRegistry::Find(std::string_view id) {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : it->second.get();
}

const std::vector<const NodeView*>& NodeRegistry::LiveViews() {
  if (!views_valid_) {
    views_.clear();
    for (auto& [id, n] : nodes_)
      if (n->state != NodeState::kDead && n->state != NodeState::kLeft) views_.push_back(&n->view);
    std::sort(views_.begin(), views_.end(), [](auto* a, auto* b) { return a->order < b->order; });
    views_valid_ = true;
  }
  return views_;
}

std::vector<Node*> NodeRegistry::All() {
  std::vector<Node*> out;
  for (auto& [id, n] : nodes_) out.push_back(n.get());
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->view.order < b->view.order; });
  return out;
}

}  // namespace corral::head
