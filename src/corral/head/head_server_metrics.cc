// HeadServer::WriteMetrics: the cluster's figures in Prometheus' text format for /metrics. Counters
// and histograms kept as things happen (TaskMetrics, the durable store's commits, schedule lags,
// the event loop's lag); gauges read from the tables when scraped, without walking the task table.
#include <unistd.h>

#include <fstream>

#include "corral/base/log.h"
#include "corral/head/head_server.h"
#include "corral/head/head_peer.h"
#include "corral/head/metrics_text.h"
#include "corral/head/status_json.h"

namespace corral::head {
namespace {

// Resident memory of this process, bytes (0 if /proc cannot tell).
double ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

}  // namespace

void HeadServer::WriteMetrics(MetricsText& out) {
  Nanos now = clock_.BootTimeNs();
  std::vector<Node*> nodes = nodes_.All();

  // Nodes.
  out.Family("corral_node_state", "gauge",
             "1 for the node's current state (alive, suspect, dead, left, draining, revoked: cut off by `corral node revoke`).");
  static constexpr const char* kStates[] = {"alive", "suspect", "dead", "left", "draining", "revoked"};
  std::map<std::string, int64_t> by_state;
  for (Node* n : nodes) {
    std::string id = ShortHex(n->view.id);
    std::string state = book_ && book_->revoked(n->view.id)                  ? "revoked"
                        : n->draining && n->state == NodeState::kAlive ? "draining"
                                                                       : NodeStateName(n->state);
    by_state[state]++;
    for (const char* s : kStates)
      out.Sample("corral_node_state", {{"node", id}, {"hostname", n->info.hostname()}, {"state", s}},
                 state == s ? 1 : 0);
  }
  out.Family("corral_nodes", "gauge", "Nodes the head knows, by state.");
  for (const char* s : kStates) out.Sample("corral_nodes", {{"state", s}}, static_cast<double>(by_state[s]));
  out.Family("corral_node_heartbeat_age_seconds", "gauge", "Seconds since the node's last heartbeat.");
  for (Node* n : nodes)
    out.Sample("corral_node_heartbeat_age_seconds", {{"node", ShortHex(n->view.id)}},
               static_cast<double>(now - n->last_heartbeat) / 1e9);
  // Per node and resource (past 64 resource names, the rest summed as "other").
  LabelCap resources(64);
  std::map<std::pair<std::string, std::string>, std::pair<double, double>> held;  // -> (capacity, used)
  for (Node* n : nodes) {
    if (n->state == NodeState::kDead || n->state == NodeState::kLeft) continue;
    std::string id = ShortHex(n->view.id);
    for (const auto& [name, units] : n->view.total.units()) {
      if (IsGangResource(name)) continue;  // a gang's share of a resource is counted in that resource
      double total = n->view.total.Get(name);
      auto& [capacity, used] = held[{id, std::string(resources.Admit(name))}];
      capacity += total;
      used += std::max(0.0, total - n->view.available.Get(name));
    }
  }
  out.Family("corral_node_resource_capacity", "gauge",
             "What the node offers, per resource (CPU and GPU in units, memory in bytes, custom names).");
  for (const auto& [key, v] : held)
    out.Sample("corral_node_resource_capacity", {{"node", key.first}, {"resource", key.second}}, v.first);
  out.Family("corral_node_resource_used", "gauge", "What tasks, actors and gangs hold of it now.");
  for (const auto& [key, v] : held)
    out.Sample("corral_node_resource_used", {{"node", key.first}, {"resource", key.second}}, v.second);
  out.Family("corral_node_running_tasks", "gauge", "Tasks and actors placed on the node and not finished.");
  for (Node* n : nodes)
    out.Sample("corral_node_running_tasks", {{"node", ShortHex(n->view.id)}}, static_cast<double>(n->tasks.size()));
  struct FromAgent {
    const char* metric;
    const char* type;
    const char* counter;
    const char* help;
  };
  static constexpr FromAgent kFromAgent[] = {
      {"corral_worker_starts_total", "counter", "workers_started", "Worker processes the node's agent started."},
      {"corral_worker_exits_total", "counter", "workers_exited", "Worker processes that exited."},
      {"corral_worker_crashes_total", "counter", "workers_died_in_task", "Workers that died while running a task."},
      {"corral_object_store_spills_total", "counter", "objects_spilled",
       "Objects the node's agent moved from its store's memory to its spill directory."},
      {"corral_node_tasks_out_of_memory_total", "counter", "tasks_out_of_memory",
       "Tasks the agent stopped for exceeding their memory or the node's."},
      {"corral_node_memory_available_bytes", "gauge", "machine_memory_available_bytes", "The machine's available memory."},
      {"corral_node_memory_total_bytes", "gauge", "machine_memory_total_bytes", "The machine's memory."},
  };
  for (const FromAgent& f : kFromAgent) {
    out.Family(f.metric, f.type, f.help);
    for (Node* n : nodes)
      if (n->state != NodeState::kDead && n->state != NodeState::kLeft)
        out.Sample(f.metric, {{"node", ShortHex(n->view.id)}}, static_cast<double>(CounterOf(n->counters, f.counter)));
  }
  struct Store {
    const char* metric;
    const char* help;
    double (*value)(const TaskManager::StoreUsage&, const Node&);
  };
  static constexpr Store kStore[] = {
      {"corral_object_store_used_bytes", "Bytes of objects in the node's store (spilled included).",
       [](const TaskManager::StoreUsage& u, const Node&) { return static_cast<double>(u.bytes); }},
      {"corral_object_store_spilled_bytes", "Of those, bytes spilled to the node's disk.",
       [](const TaskManager::StoreUsage& u, const Node&) { return static_cast<double>(u.spilled); }},
      {"corral_object_store_capacity_bytes", "The node's object store capacity.",
       [](const TaskManager::StoreUsage&, const Node& n) { return static_cast<double>(n.info.object_store_capacity()); }},
      {"corral_object_store_objects", "Objects in the node's store.",
       [](const TaskManager::StoreUsage& u, const Node&) { return static_cast<double>(u.objects); }},
  };
  for (const Store& m : kStore) {
    out.Family(m.metric, "gauge", m.help);
    for (Node* n : nodes)
      if (n->state != NodeState::kDead && n->state != NodeState::kLeft)
        out.Sample(m.metric, {{"node", ShortHex(n->view.id)}}, m.value(tasks_.StoreUsageOf(n->view.id), *n));
  }

  // Tasks and queues.
  tasks_.metrics().Render(out);
  auto [queued, oldest] = tasks_.QueuedTasks();
  out.Family("corral_tasks_unfinished", "gauge", "Tasks the head holds that have not finished (queued, waiting, running).");
  out.Sample("corral_tasks_unfinished", {}, static_cast<double>(tasks_.unfinished_tasks()));
  // Per durable queue (past 50 names, the rest summed as "other"), and queue="" for remote tasks.
  struct QueueRow {
    double ready = 0, running = 0, oldest = 0;
  };
  std::map<std::string, QueueRow> queues{{"", QueueRow{static_cast<double>(queued), 0, oldest}}};
  if (durable_) {
    LabelCap names(50);
    for (const auto& q : durable_->queues().QueueFigures()) {
      QueueRow& row = queues[std::string(names.Admit(q.name))];
      row.ready += static_cast<double>(q.ready);
      row.running += static_cast<double>(q.running);
      row.oldest = std::max(row.oldest, q.oldest_ready_s);
    }
  }
  out.Family("corral_queue_depth", "gauge",
             "Tasks ready to run and waiting for a slot, per durable queue; queue=\"\" is remote tasks waiting for a node.");
  for (const auto& [name, row] : queues) out.Sample("corral_queue_depth", {{"queue", name}}, row.ready);
  out.Family("corral_queue_running", "gauge", "Tasks of the queue running (remote tasks: queue=\"\" counts none here).");
  for (const auto& [name, row] : queues) out.Sample("corral_queue_running", {{"queue", name}}, row.running);
  out.Family("corral_queue_oldest_ready_age_seconds", "gauge", "How long the oldest ready task of the queue has waited.");
  for (const auto& [name, row] : queues) out.Sample("corral_queue_oldest_ready_age_seconds", {{"queue", name}}, row.oldest);
  if (durable_) {
    out.Family("corral_durable_tasks_waiting", "gauge", "Durable tasks not due yet (an eta, a retry's countdown).");
    out.Sample("corral_durable_tasks_waiting", {}, static_cast<double>(durable_->waiting()));
    Histogram commits = durable_->committer().commit_seconds();
    out.Family("corral_durable_commits_total", "counter",
               "Durable store transactions that stored submissions or state changes (each ends with an fsync).");
    out.Sample("corral_durable_commits_total", {}, static_cast<double>(commits.count()));
    out.Family("corral_durable_commit_seconds", "histogram", "Time of each durable store commit, its fsync included.");
    out.Histogram("corral_durable_commit_seconds", {}, commits);
    std::map<std::string, int64_t> c;
    durable_->FillCounters(&c);
    out.Family("corral_schedule_fires_total", "counter", "Schedule slots that fired.");
    out.Sample("corral_schedule_fires_total", {}, static_cast<double>(c["schedule_fires"]));
    out.Family("corral_schedule_misfires_total", "counter",
               "Schedule slots missed (the head was down or the clock jumped) and not run, per their misfire policy.");
    out.Sample("corral_schedule_misfires_total", {}, static_cast<double>(c["schedule_slots_missed"]));
    out.Family("corral_schedule_lag_seconds", "histogram", "How late each schedule slot fired after its nominal time.");
    out.Histogram("corral_schedule_lag_seconds", {}, durable_->schedules().lag());
  }

  // Actors and gangs.
  proto::ClusterStatus st;
  tasks_.FillActors(st.mutable_actors(), /*include_dead=*/false);
  tasks_.gangs().FillAll(st.mutable_gangs());
  std::map<std::string, int64_t> actors{{"PENDING", 0}, {"ALIVE", 0}, {"RESTARTING", 0}};
  for (const auto& a : st.actors()) actors[a.state()]++;
  out.Family("corral_actors", "gauge", "Live actors by state.");
  for (const auto& [s, n] : actors) out.Sample("corral_actors", {{"state", s}}, static_cast<double>(n));
  std::map<std::string, int64_t> gangs{{"PENDING", 0}, {"READY", 0}};
  for (const auto& g : st.gangs()) gangs[g.state()]++;
  out.Family("corral_gangs", "gauge", "Gangs by state.");
  for (const auto& [s, n] : gangs) out.Sample("corral_gangs", {{"state", s}}, static_cast<double>(n));

  // The head itself.
  int64_t clients = 0, agents = 0;
  for (const auto& [p, peer] : peers_) {
    if (peer->kind == Peer::kClient) clients++;
    if (peer->kind == Peer::kAgent) agents++;
  }
  out.Family("corral_connections", "gauge", "Open connections to the head's port, by kind.");
  out.Sample("corral_connections", {{"kind", "client"}}, static_cast<double>(clients));
  out.Sample("corral_connections", {{"kind", "agent"}}, static_cast<double>(agents));
  out.Sample("corral_connections", {{"kind", "handshake"}}, static_cast<double>(unauthenticated_));
  out.Family("corral_auth_failures_total", "counter", "Failed authentications, by transport (tcp: the head's port; http).");
  out.Sample("corral_auth_failures_total", {{"transport", "tcp"}}, static_cast<double>(AuthFailures("tcp")));
  out.Sample("corral_auth_failures_total", {{"transport", "http"}}, static_cast<double>(AuthFailures("http")));
  out.Family("corral_messages_denied_total", "counter", "Messages refused because the sender's role was not enough.");
  out.Sample("corral_messages_denied_total", {}, static_cast<double>(messages_denied_));
  out.Family("corral_head_objects", "gauge", "Values (results and puts) the head holds or tracks.");
  out.Sample("corral_head_objects", {}, static_cast<double>(tasks_.objects_held()));
  out.Family("corral_head_resident_memory_bytes", "gauge", "The head process's resident memory.");
  out.Sample("corral_head_resident_memory_bytes", {}, ResidentBytes());
  out.Family("corral_head_event_loop_lag_seconds", "histogram",
             "How late the head's event loop ran a timer due every 100 ms.");
  out.Histogram("corral_head_event_loop_lag_seconds", {}, loop_lag_.histogram());
  out.Family("corral_head_event_loop_lag_max_seconds", "gauge", "The largest event loop lag of the last minute.");
  out.Sample("corral_head_event_loop_lag_max_seconds", {}, loop_lag_.recent_max());
}

}  // namespace corral::head
