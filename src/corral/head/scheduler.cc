#include "corral/head/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "corral/base/ids.h"

namespace corral::head {
namespace {

bool LabelsMatch(const NodeView& n, const std::map<std::string, std::string>& selector) {
  for (const auto& [k, v] : selector) {
    if (k == kNodeIdLabel) {  // every node has it: its id in hex (Ray's node affinity)
      if (v != Hex(n.id)) return false;
      continue;
    }
    auto it = n.labels.find(k);
    if (it == n.labels.end() || it->second != v) return false;
  }
  return true;
}

bool CpuOnly(const ResourceSet& r) {
  for (const auto& [name, units] : r.units())
    if (name != kCpu) return false;
  return true;
}

bool Fits(const Request& request, const NodeView& n) {
  return LabelsMatch(n, request.label_selector) && n.total.Contains(request.resources);
}

// An interruptible-only node that this request may not use.
bool TakesOnlyInterruptible(const Request& request, const NodeView& n) {
  return n.interruptible_only && !request.interruptible && request.label_selector.empty();
}

}  // namespace

int Slots(const Request& request, const NodeView& node) {
  if (!node.schedulable || !Fits(request, node) || TakesOnlyInterruptible(request, node)) return 0;
  if (!request.durable_function.empty() && !node.task_functions.contains(request.durable_function)) return 0;
  int64_t slots = INT32_MAX;
  for (const auto& [name, units] : request.resources.units()) {
    if (units <= 0) continue;
    auto total = node.total.units().find(name);
    slots = std::min(slots, (total == node.total.units().end() ? 0 : total->second) / units);
  }
  return slots == INT32_MAX ? 1 : static_cast<int>(slots);
}

bool PythonMatches(const std::string& node_python, const std::string& wanted) {
  if (node_python.empty()) return false;
  if (wanted.empty()) return true;
  return node_python == wanted || node_python.starts_with(wanted + ".");
}

Placement Place(const Request& request, const std::vector<const NodeView*>& nodes, const std::string& preferred) {
  Placement out;
  const NodeView* best = nullptr;
  const NodeView* local = nullptr;  // `preferred`, eligible and with room
  double best_util = 0;
  bool best_avoided = false;
  // Work that needs no GPU keeps off GPU nodes while another node has room (Ray's default): the
  // GPUs stay reachable for the work that needs them.
  bool wants_gpu = request.resources.Get(kGpu) > 0;
  const NodeView* prefetch = nullptr;
  bool could_fit_later = false;
  bool only_interruptible = false;  // some node would fit but takes interruptible tasks only
  for (const NodeView* n : nodes) {
    if (!Fits(request, *n)) continue;
    if (!request.durable_function.empty() && !n->task_functions.contains(request.durable_function)) continue;
    if (TakesOnlyInterruptible(request, *n)) {
      only_interruptible = true;
      continue;
    }
    if (n->python.empty()) {  // workers not up yet: may fit once they are
      could_fit_later = true;
      continue;
    }
    bool cloudpickle_ok = request.cloudpickle_major.empty() || n->cloudpickle.empty() ||
                          PythonMatches(n->cloudpickle, request.cloudpickle_major);
    if (!PythonMatches(n->python, request.python) || !cloudpickle_ok) continue;
    could_fit_later = true;
    if (!n->schedulable) continue;
    if (n->available.Contains(request.resources)) {
      if (!preferred.empty() && n->id == preferred) local = n;
      double util = n->available.UtilizationAfter(request.resources, n->total);
      bool avoided = !wants_gpu && n->total.Get(kGpu) > 0;
      if (!best || avoided < best_avoided ||
          (avoided == best_avoided && (util < best_util || (util == best_util && n->order < best->order)))) {
        best = n;
        best_util = util;
        best_avoided = avoided;
      }
    } else if (n->prefetched < n->prefetch_limit && CpuOnly(request.resources) && !request.no_prefetch &&
               !n->holds_gang) {
      if (!prefetch || n->prefetched < prefetch->prefetched ||
          (n->prefetched == prefetch->prefetched && n->order < prefetch->order))
        prefetch = n;
    }
  }
  if (nodes.empty()) {
    out.kind = Placement::kWait;  // no node has joined yet: nothing to judge feasibility by
  } else if (best) {
    out.kind = Placement::kPlaced;
    out.node = local ? local : best;
  } else if (prefetch) {
    out.kind = Placement::kPlaced;
    out.node = prefetch;
    out.prefetch = true;
  } else if (could_fit_later) {
    out.kind = Placement::kWait;
  } else {
    out.kind = Placement::kInfeasible;
    std::string labels;
    for (const auto& [k, v] : request.label_selector) labels += fmt::format(" {}={}", k, v);
    if (!request.durable_function.empty()) {
      out.reason = fmt::format("runs {}, which no connected node's workers registered (start an agent with "
                               "--tasks MODULE)",
                               request.durable_function);
      return out;
    }
    std::string needs = request.resources.empty() ? "" : request.resources.ToString();
    if (!labels.empty()) needs += (needs.empty() ? "labels" : " and labels") + labels;
    out.reason = fmt::format("requires {} on Python {}{}; no node that is or was connected has that",
                             needs.empty() ? "nothing" : needs,
                             request.python.empty() ? "any" : request.python,
                             request.cloudpickle_major.empty() ? "" : " with cloudpickle " + request.cloudpickle_major);
    if (only_interruptible)
      out.reason += " (nodes that would fit take only interruptible tasks: mark it interruptible=True to run there)";
  }
  return out;
}

}  // namespace corral::head
