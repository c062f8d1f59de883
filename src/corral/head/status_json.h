// The cluster's status as JSON: one shape for `corral status --json` and GET /api/v1/status.
#pragma once

#include <nlohmann/json.hpp>

#include "corral/client.pb.h"

namespace corral::head {

nlohmann::json NodeJson(const proto::NodeStatus& node);
nlohmann::json StatusJson(const proto::ClusterStatus& status);

}  // namespace corral::head
