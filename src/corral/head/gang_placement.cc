#include "corral/head/gang_placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace corral::head {
namespace {

// The bundles, for a reason: "4 x {CPU=2, GPU=1}" or "{CPU=2}, {CPU=1}".
std::string Describe(const std::vector<ResourceSet>& bundles) {
  bool same = std::all_of(bundles.begin(), bundles.end(), [&](const ResourceSet& b) { return b == bundles[0]; });
  if (same && !bundles.empty()) return fmt::format("{} x {{{}}}", bundles.size(), bundles[0].ToString());
  std::string out;
  for (const auto& b : bundles) out += (out.empty() ? "{" : ", {") + b.ToString() + "}";
  return out;
}

// Greedy assignment over `free` (one entry per node, consumed as bundles are placed). Returns the
// node index of each bundle, or an empty vector.
std::vector<size_t> Assign(const std::vector<ResourceSet>& bundles, GangStrategy strategy,
                           const std::vector<const NodeView*>& nodes, std::vector<ResourceSet> free) {
  std::vector<size_t> out;
  std::vector<int> count(nodes.size(), 0);  // bundles of this gang on each node
  auto best_of = [&](const ResourceSet& b, auto&& allowed) -> std::optional<size_t> {
    std::optional<size_t> best;
    double best_util = 0;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!allowed(i) || !free[i].Contains(b)) continue;
      double util = free[i].UtilizationAfter(b, nodes[i]->total);
      if (!best || util < best_util) {  // nodes come in registration order: ties keep the first
        best = i;
        best_util = util;
      }
    }
    return best;
  };
  if (strategy == GangStrategy::kStrictPack) {
    ResourceSet sum;
    for (const auto& b : bundles) sum.Add(b);
    auto n = best_of(sum, [](size_t) { return true; });
    if (!n) return {};
    return std::vector<size_t>(bundles.size(), *n);
  }
  for (const auto& b : bundles) {
    std::optional<size_t> n;
    switch (strategy) {
      case GangStrategy::kPack:
        for (size_t i : out)  // where the gang already is, in the order it got there
          if (free[i].Contains(b)) {
            n = i;
            break;
          }
        if (!n) n = best_of(b, [](size_t) { return true; });
        break;
      case GangStrategy::kSpread:
        n = best_of(b, [&](size_t i) { return count[i] == 0; });
        if (!n) {
          int fewest = INT32_MAX;
          for (size_t i = 0; i < nodes.size(); ++i)
            if (free[i].Contains(b) && count[i] < fewest) {
              fewest = count[i];
              n = i;
            }
        }
        break;
      case GangStrategy::kStrictSpread:
        n = best_of(b, [&](size_t i) { return count[i] == 0; });
        break;
      case GangStrategy::kStrictPack:
        break;
    }
    if (!n) return {};
    free[*n].Subtract(b);
    count[*n]++;
    out.push_back(*n);
  }
  return out;
}

}  // namespace

Result<GangStrategy> ParseGangStrategy(const std::string& name) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "pack") return GangStrategy::kPack;
  if (s == "spread") return GangStrategy::kSpread;
  if (s == "strict_pack") return GangStrategy::kStrictPack;
  if (s == "strict_spread") return GangStrategy::kStrictSpread;
  return Err(Code::kInvalidArgument,
             fmt::format("unknown gang strategy '{}': use pack, spread, strict_pack or strict_spread", name));
}

const char* GangStrategyName(GangStrategy strategy) {
  switch (strategy) {
    case GangStrategy::kPack: return "pack";
    case GangStrategy::kSpread: return "spread";
    case GangStrategy::kStrictPack: return "strict_pack";
    case GangStrategy::kStrictSpread: return "strict_spread";
  }
  return "pack";
}

GangPlan PlanGang(const std::vector<ResourceSet>& bundles, GangStrategy strategy,
                  const std::vector<const NodeView*>& all) {
  GangPlan plan;
  // Laptops and other interruptible-only machines hold no gang: one member asleep stalls them all.
  std::vector<const NodeView*> nodes;
  for (const NodeView* n : all)
    if (n->schedulable && !n->interruptible_only) nodes.push_back(n);
  std::vector<ResourceSet> free, total;
  for (const NodeView* n : nodes) {
    free.push_back(n->available);
    total.push_back(n->total);
  }
  auto now = Assign(bundles, strategy, nodes, free);
  if (!now.empty() || bundles.empty()) {
    plan.placed = true;
    for (size_t i : now) plan.nodes.push_back(nodes[i]);
    return plan;
  }
  plan.feasible = !Assign(bundles, strategy, nodes, total).empty();
  if (plan.feasible)
    plan.reason = fmt::format("waiting for free resources: {} ({}) does not fit in what the {} node{} free now",
                              Describe(bundles), GangStrategyName(strategy), nodes.size(),
                              nodes.size() == 1 ? " has" : "s have");
  else
    plan.reason = nodes.empty() ? fmt::format("no node takes work yet to hold {} ({}); it waits for nodes to join",
                                              Describe(bundles), GangStrategyName(strategy))
                                : fmt::format("no set of the {} node{} taking work could ever hold {} ({}), not even "
                                              "idle; it waits for nodes to join",
                                              nodes.size(), nodes.size() == 1 ? "" : "s", Describe(bundles),
                                              GangStrategyName(strategy));
  return plan;
}

}  // namespace corral::head
