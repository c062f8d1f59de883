// Where a gang's bundles go: pure decisions over a snapshot of nodes, like scheduler.h; no I/O.
//
// A gang (Ray's placement group) is a list of bundles, each a ResourceSet, reserved all at once or
// not at all. The strategies are Ray's:
//   pack           as few nodes as possible (bundles go where the gang already is, when they fit)
//   spread         as many nodes as possible (a node the gang is not on yet, when one fits)
//   strict_pack    every bundle on one node
//   strict_spread  every bundle on a node of its own
// Only nodes that take new work (schedulable) and whose free resources hold the bundle count; the
// same eligibility as tasks otherwise (labels are not used: a gang has none).
#pragma once

#include <string>
#include <vector>

#include "corral/base/resources.h"
#include "corral/base/status.h"
#include "corral/head/scheduler.h"

namespace corral::head {

enum class GangStrategy { kPack, kSpread, kStrictPack, kStrictSpread };

Result<GangStrategy> ParseGangStrategy(const std::string& name);
const char* GangStrategyName(GangStrategy strategy);

struct GangPlan {
  bool placed = false;
  std::vector<const NodeView*> nodes;  // one per bundle when placed
  bool feasible = true;                // false: no set of these nodes could ever hold it (by totals)
  std::string reason;                  // when not placed: why, for `corral status`
};

GangPlan PlanGang(const std::vector<ResourceSet>& bundles, GangStrategy strategy,
                  const std::vector<const NodeView*>& nodes);

}  // namespace corral::head
