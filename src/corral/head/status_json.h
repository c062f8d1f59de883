// The cluster's status as JSON: one shape for `corral status --json` and GET /api/v1/status; and
// JsonText, the one way JSON becomes text here.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "corral/client.pb.h"

namespace corral::head {

// A counter's value (0 when it was never counted).
inline int64_t CounterOf(const proto::Counters& counters, const std::string& name) {
  auto it = counters.values().find(name);
  return it == counters.values().end() ? 0 : it->second;
}

nlohmann::json NodeJson(const proto::NodeStatus& node);
nlohmann::json ActorJson(const proto::ActorInfo& actor);
nlohmann::json StatusJson(const proto::ClusterStatus& status);
// j as compact text. Strings from peers (hostnames, names, paths) may hold invalid UTF-8: such
// bytes become U+FFFD instead of throwing (which would end the process).
std::string JsonText(const nlohmann::json& j);
// Parses untrusted JSON text: discarded (is_discarded()) if it is not JSON or nests deeper than
// `max_depth` arrays/objects (copying, dumping and destroying a value recurse once per level).
nlohmann::json ParseUntrustedJson(std::string_view text, int max_depth = 64);

}  // namespace corral::head
