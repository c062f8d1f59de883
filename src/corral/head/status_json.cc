#include "corral/head/status_json.h"

#include <map>

#include "corral/base/ids.h"

namespace corral::head {

nlohmann::json NodeJson(const proto::NodeStatus& n) {
  nlohmann::json nj;
  nj["node_id"] = Hex(n.info().node_id());
  nj["hostname"] = n.info().hostname();
  nj["address"] = n.info().address();
  nj["state"] = n.state();
  nj["connected"] = n.connected();
  nj["draining"] = n.draining();
  nj["interruptible_only"] = n.info().interruptible_only();
  nj["resources"] = std::map<std::string, double>(n.info().resources().begin(), n.info().resources().end());
  nj["available"] = std::map<std::string, double>(n.available().begin(), n.available().end());
  nj["labels"] = std::map<std::string, std::string>(n.info().labels().begin(), n.info().labels().end());
  nj["python"] = n.info().python_version();
  nj["gpus"] = nlohmann::json::array();
  for (const auto& g : n.info().gpus())
    nj["gpus"].push_back({{"index", g.index()}, {"name", g.name()}, {"memory_bytes", g.memory_bytes()}, {"uuid", g.uuid()}});
  nj["running_tasks"] = n.running_tasks();
  nj["object_store"] = {{"dir", n.info().object_store_dir()},
                        {"capacity_bytes", n.info().object_store_capacity()},
                        {"used_bytes", n.object_store_used()},
                        {"objects", n.object_store_objects()},
                        {"spilled_bytes", n.object_store_spilled()},
                        {"spill_dir", n.info().spill_dir()}};
  nj["last_heartbeat_age_s"] = n.last_heartbeat_age_s();
  nj["counters"] = std::map<std::string, int64_t>(n.counters().values().begin(), n.counters().values().end());
  return nj;
}

nlohmann::json ActorJson(const proto::ActorInfo& a) {
  nlohmann::json j;
  j["actor_id"] = Hex(a.actor_id());
  j["class_name"] = a.spec().class_name();
  j["name"] = a.spec().name();
  j["namespace"] = a.spec().namespace_();
  j["state"] = a.state();
  j["node_id"] = Hex(a.node_id());
  j["hostname"] = a.hostname();
  j["pid"] = a.pid();
  j["restarts"] = a.restarts();
  j["max_restarts"] = a.max_restarts();
  j["death_cause"] = a.death_cause();
  j["detached"] = a.spec().detached();
  j["pending_calls"] = a.pending_calls();
  j["running_calls"] = a.running_calls();
  j["resources"] = std::map<std::string, double>(a.resources().begin(), a.resources().end());
  return j;
}

nlohmann::json StatusJson(const proto::ClusterStatus& st) {
  nlohmann::json j;
  j["address"] = st.address();
  j["nodes"] = nlohmann::json::array();
  for (const auto& n : st.nodes()) j["nodes"].push_back(NodeJson(n));
  j["tasks"] = std::map<std::string, int64_t>(st.tasks_by_state().begin(), st.tasks_by_state().end());
  j["infeasible"] = std::vector<std::string>(st.infeasible().begin(), st.infeasible().end());
  j["actors"] = nlohmann::json::array();
  for (const auto& a : st.actors()) j["actors"].push_back(ActorJson(a));
  j["gangs"] = nlohmann::json::array();
  for (const auto& g : st.gangs()) {
    nlohmann::json gj = {{"gang_id", Hex(g.gang_id())}, {"name", g.name()},       {"state", g.state()},
                         {"strategy", g.strategy()},   {"reason", g.reason()},   {"age_s", g.age_s()}};
    gj["members"] = nlohmann::json::array();
    for (const auto& m : g.members())
      gj["members"].push_back({{"index", m.index()},
                               {"resources", std::map<std::string, double>(m.resources().begin(), m.resources().end())},
                               {"node_id", Hex(m.node_id())},
                               {"hostname", m.hostname()}});
    j["gangs"].push_back(gj);
  }
  j["counters"] = std::map<std::string, int64_t>(st.counters().values().begin(), st.counters().values().end());
  return j;
}

nlohmann::json ParseUntrustedJson(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return nlohmann::json(nlohmann::json::value_t::discarded);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

std::string JsonText(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace corral::head
