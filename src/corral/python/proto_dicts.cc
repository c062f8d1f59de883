#include "corral/python/proto_dicts.h"

#include <nanobind/stl/string.h>

#include "corral/base/ids.h"

namespace corral::python {

nb::dict GangDict(const proto::GangInfo& g) {
  nb::dict d;
  d["gang_id"] = Bytes(g.gang_id());
  d["name"] = g.name();
  d["state"] = g.state();
  d["strategy"] = g.strategy();
  d["reason"] = g.reason();
  d["age_s"] = g.age_s();
  nb::list members;
  for (const auto& m : g.members()) {
    nb::dict md, res;
    md["index"] = m.index();
    for (const auto& [k, v] : m.resources()) res[k.c_str()] = v;
    md["resources"] = res;
    md["node_id"] = corral::Hex(m.node_id());
    md["hostname"] = m.hostname();
    md["address"] = m.address();
    members.append(md);
  }
  d["members"] = members;
  return d;
}

nb::dict NodeDict(const corral::proto::NodeStatus& n) {
  nb::dict d;
  d["node_id"] = corral::Hex(n.info().node_id());
  d["hostname"] = n.info().hostname();
  d["address"] = n.info().address();
  d["peer_address"] = n.info().peer_address();  // where its agent serves objects to other agents
  d["call_address"] = n.info().call_address();  // where its agent takes actor calls from their callers
  d["call_socket"] = n.info().call_socket();    // ...and from callers on its machine
  d["state"] = n.state();
  d["connected"] = n.connected();
  d["draining"] = n.draining();
  d["interruptible_only"] = n.info().interruptible_only();
  nb::dict total, avail, labels;
  for (const auto& [k, v] : n.info().resources()) total[k.c_str()] = v;
  for (const auto& [k, v] : n.available()) avail[k.c_str()] = v;
  for (const auto& [k, v] : n.info().labels()) labels[k.c_str()] = v;
  d["resources"] = total;
  d["available"] = avail;
  d["labels"] = labels;
  d["python_version"] = n.info().python_version();
  nb::list gpus;
  for (const auto& g : n.info().gpus()) {
    nb::dict gd;
    gd["index"] = g.index();
    gd["name"] = g.name();
    gd["memory_bytes"] = g.memory_bytes();
    gd["uuid"] = g.uuid();
    gpus.append(gd);
  }
  d["gpus"] = gpus;
  d["running_tasks"] = n.running_tasks();
  nb::dict store;
  store["dir"] = n.info().object_store_dir();
  store["capacity_bytes"] = n.info().object_store_capacity();
  store["used_bytes"] = n.object_store_used();
  store["objects"] = n.object_store_objects();
  store["spilled_bytes"] = n.object_store_spilled();
  store["spill_dir"] = n.info().spill_dir();
  d["object_store"] = store;
  d["last_heartbeat_age_s"] = n.last_heartbeat_age_s();
  nb::dict counters;
  for (const auto& [k, v] : n.counters().values()) counters[k.c_str()] = v;
  d["counters"] = counters;
  return d;
}

nb::dict DurableDict(const corral::proto::DurableTaskInfo& t) {
  nb::dict d;
  d["id"] = t.id();
  d["found"] = t.found();
  d["function"] = t.function();
  d["state"] = t.state();
  d["attempt"] = t.attempt();
  d["runs"] = t.runs();
  d["result"] = Bytes(t.result());
  d["result_format"] = t.result_format();
  d["error"] = t.error();
  d["note"] = t.note();
  d["eta_ns"] = t.eta_ns();
  d["args"] = Bytes(t.args());
  d["args_format"] = t.args_format();
  d["changes"] = t.changes();
  d["queue"] = t.queue();
  d["created_ns"] = t.created_ns();
  d["finished_ns"] = t.finished_ns();
  return d;
}

nb::dict ActorDict(const corral::proto::ActorInfo& a) {
  nb::dict d;
  d["actor_id"] = corral::Hex(a.actor_id());
  d["class_name"] = a.spec().class_name();
  d["name"] = a.spec().name();
  d["namespace"] = a.spec().namespace_();
  d["state"] = a.state();
  d["node_id"] = corral::Hex(a.node_id());
  d["hostname"] = a.hostname();
  d["pid"] = a.pid();
  d["restarts"] = a.restarts();
  d["max_restarts"] = a.max_restarts();
  d["death_cause"] = a.death_cause();
  d["detached"] = a.spec().detached();
  d["pending_calls"] = a.pending_calls();
  d["running_calls"] = a.running_calls();
  nb::dict res;
  for (const auto& [k, v] : a.resources()) res[k.c_str()] = v;
  d["resources"] = res;
  // What a handle needs (get_actor): the raw id and the class's shape.
  d["_id"] = Bytes(a.actor_id());
  nb::list methods;
  for (const auto& m : a.spec().methods()) methods.append(m);
  d["_methods"] = methods;
  d["_max_task_retries"] = a.spec().max_task_retries();
  return d;
}

corral::proto::ActorSpec ActorSpecOf(const nb::dict& d) {
  corral::proto::ActorSpec a;
  for (auto [k, v] : d) {
    std::string key = nb::cast<std::string>(k);
    if (key == "class_name") a.set_class_name(nb::cast<std::string>(v));
    else if (key == "name") a.set_name(nb::cast<std::string>(v));
    else if (key == "namespace") a.set_namespace_(nb::cast<std::string>(v));
    else if (key == "detached") a.set_detached(nb::cast<bool>(v));
    else if (key == "max_task_retries") a.set_max_task_retries(nb::cast<uint32_t>(v));
    else if (key == "max_concurrency") a.set_max_concurrency(nb::cast<uint32_t>(v));
    else if (key == "is_async") a.set_is_async(nb::cast<bool>(v));
    else if (key == "methods") for (nb::handle m : nb::cast<nb::list>(v)) a.add_methods(nb::cast<std::string>(m));
    else if (key == "concurrency_groups")
      for (auto [g, n] : nb::cast<nb::dict>(v)) (*a.mutable_concurrency_groups())[nb::cast<std::string>(g)] = nb::cast<uint32_t>(n);
  }
  return a;
}

}  // namespace corral::python
