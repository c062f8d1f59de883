// Placement: which node a task goes to. Pure decisions over a snapshot of nodes; no I/O.
//
// Policy (stated in docs/architecture.md and tested in scheduler_test.cc):
//  1. Eligible nodes: alive (not suspect or dead), labels match the task's selector, the workers'
//     Python major.minor and cloudpickle major equal the submitter's (else its pickles may not load),
//     and the node's total resources contain the request. An interruptible-only node (a laptop)
//     takes a task only if it is marked interruptible or its label selector is not empty and
//     matches the node (the task asked for that node by name).
//  2. Among eligible nodes with the request free now, take the one least utilised after placing
//     (max over requested resources of used/total): work spreads across nodes.
//     But a task whose arguments are stored values goes to `preferred`, the node holding most of
//     their bytes, when it is eligible and has the request free (locality: the bytes stay put).
//     A task that asks no GPU goes to a node without GPUs when one has room (Ray's default).
//  3. Ties go to the node that registered first.
//  4. If no node has room now, a CPU-only task may wait in an agent's short prefetch queue (at most
//     `prefetch` tasks per node, fewest queued first) so workers never idle between tasks; not on a
//     node that holds a gang's reservation.
//  5. If no node could ever fit, the task is infeasible: it stays pending with a reason and does not
//     block other tasks. With no node at all, tasks simply wait for the first one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "corral/base/resources.h"

namespace corral::head {

// A label every node has without being given it: its node id. `label_selector={"corral.node_id": id}`
// pins a task or actor to that node.
inline constexpr const char* kNodeIdLabel = "corral.node_id";

struct NodeView {
  std::string id;
  uint64_t order = 0;        // registration order, for ties
  bool schedulable = false;  // alive
  ResourceSet total;
  ResourceSet available;     // may be negative for CPU while tasks wait in the prefetch queue
  std::map<std::string, std::string> labels;
  std::string python;        // "3.11.7"; empty until the node's first worker started
  std::string cloudpickle;   // "3.1.3"
  int prefetched = 0;
  int prefetch_limit = 0;
  bool interruptible_only = false;  // takes only tasks that tolerate interruption
  // Holds a gang's reservation: nothing is prefetched there, since its agent does not know which of
  // its CPUs are the gang's (it would start the prefetched task on them at once).
  bool holds_gang = false;
  std::set<std::string> task_functions;  // durable task functions its workers registered
};

struct Request {
  ResourceSet resources;
  std::map<std::string, std::string> label_selector;
  std::string python;        // "3.11"
  std::string cloudpickle_major;  // "3"; empty: any
  bool interruptible = false;     // may run on interruptible-only nodes
  std::string durable_function;   // non-empty: only nodes whose workers registered it
  bool no_prefetch = false;       // an actor: placed only where its resources are free now
};

struct Placement {
  enum Kind { kPlaced, kWait, kInfeasible } kind = kWait;
  const NodeView* node = nullptr;  // for kPlaced
  bool prefetch = false;           // placed into the node's prefetch queue
  std::string reason;              // for kInfeasible: what no node offers
};

Placement Place(const Request& request, const std::vector<const NodeView*>& nodes,
                const std::string& preferred = "");

// How many tasks of `request` the node could run at once (by its total resources): 0 if it takes
// no new work or cannot take the request at all (labels, size, interruptible-only, a durable
// function its workers did not register). The durable
// queue sizes its dispatch with it.
int Slots(const Request& request, const NodeView& node);

// "3.11.7" matches "3.11"; "" matches nothing.
bool PythonMatches(const std::string& node_python, const std::string& wanted);

}  // namespace corral::head
