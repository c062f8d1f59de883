#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "corral/base/files.h"
#include "corral/base/ids.h"
#include "corral/base/resources.h"
#include "corral/cli/commands.h"
#include "corral/head/status_json.h"
#include "corral/client/client.h"

namespace corral::cli {

std::string ResolveAddress(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* a = std::getenv("CORRAL_ADDRESS"); a && *a) return a;
  auto f = ReadFile(DefaultHeadStateDir() + "/address");
  if (f) return f->substr(0, f->find('\n'));
  return "127.0.0.1:7370";
}

std::string Amount(const proto::NodeStatus& n, const std::string& name) {
  auto t = n.info().resources().find(name);
  double total = t == n.info().resources().end() ? 0 : t->second;
  auto a = n.available().find(name);
  double avail = a == n.available().end() ? 0 : a->second;
  if (name == kMemory) return fmt::format("{}/{}", FormatBytes(total - avail), FormatBytes(total));
  return fmt::format("{:g}/{:g}", total - avail, total);
}

client::TrustOptions& CliTrust() {
  static client::TrustOptions trust;
  return trust;
}

std::unique_ptr<client::Client> ConnectCli(const std::string& address, const std::string& name) {
  auto ep = net::ParseEndpoint(ResolveAddress(address), 7370);
  if (!ep) {
    std::fprintf(stderr, "corral: %s\n", ep.error().message().c_str());
    return nullptr;
  }
  auto trust = client::TrustHead(*ep, CliTrust());
  if (!trust) {
    std::fprintf(stderr, "corral: %s\n", trust.error().message().c_str());
    return nullptr;
  }
  client::ClientOptions options;
  options.head = *ep;
  options.tls = trust->tls;
  options.token = FindToken();
  options.name = name;
  options.connect_timeout = std::chrono::milliseconds(5000);
  options.print_logs = false;
  options.reconnect = false;
  auto c = client::Client::Connect(options);
  if (!c) {
    std::fprintf(stderr, "corral: cannot reach the head at %s: %s\n", ep->ToString().c_str(),
                 c.error().message().c_str());
    return nullptr;
  }
  return std::move(*c);
}

std::string LocalTime(int64_t ns, bool zone) {
  if (ns <= 0) return "-";
  std::time_t t = ns / 1'000'000'000;
  char buf[40];
  std::strftime(buf, sizeof buf, zone ? "%Y-%m-%d %H:%M:%S %Z" : "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

std::string DisplayState(const proto::NodeStatus& n) {
  if (n.state() == "dead" || n.state() == "left") return n.state();
  if (!n.connected()) return "offline";
  if (n.draining()) return "draining";
  return n.state();
}

int ShowStatus(const std::string& address, bool json) {
  auto c = ConnectCli(address, "corral status");
  if (!c) return 1;
  proto::Request req;
  req.set_status(true);
  auto reply = c->Request(req, 10);
  if (!reply) {
    std::fprintf(stderr, "corral: %s\n", reply.error().message().c_str());
    return 1;
  }
  const proto::ClusterStatus& st = reply->status();
  if (json) {
    nlohmann::json j = head::StatusJson(st);
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  // Where this command reached the head (a head listening on a wildcard reports 0.0.0.0).
  std::string at = st.address();
  if (auto ep = net::ParseEndpoint(ResolveAddress(address), 7370)) at = ep->ToString();
  std::printf("Cluster at %s\n\n", at.c_str());
  // CUSTOM and LABELS as wide as their longest entry, so the columns after them stay aligned.
  std::vector<std::pair<std::string, std::string>> extras;
  size_t custom_w = 6, labels_w = 6;
  for (const auto& n : st.nodes()) {
    std::string custom, labels;
    for (const auto& [k, v] : std::map<std::string, double>(n.info().resources().begin(), n.info().resources().end()))
      if (k != kCpu && k != kGpu && k != kMemory) custom += (custom.empty() ? "" : ",") + k + " " + Amount(n, k);
    for (const auto& [k, v] : std::map<std::string, std::string>(n.info().labels().begin(), n.info().labels().end()))
      labels += (labels.empty() ? "" : ",") + k + "=" + v;
    if (n.info().interruptible_only()) labels += (labels.empty() ? "" : ",") + std::string("interruptible-only");
    if (custom.empty()) custom = "-";
    if (labels.empty()) labels = "-";
    custom_w = std::max(custom_w, custom.size());
    labels_w = std::max(labels_w, labels.size());
    extras.emplace_back(std::move(custom), std::move(labels));
  }
  int cw = static_cast<int>(custom_w), lw = static_cast<int>(labels_w);
  std::printf("%-9s %-16s %-8s %-9s %-7s %-19s %-19s %-*s %-*s %-6s %s\n", "NODE", "HOST", "STATE", "CPU", "GPU",
              "MEMORY", "OBJECT STORE", cw, "CUSTOM", lw, "LABELS", "TASKS", "HEARTBEAT");
  size_t row = 0;
  for (const auto& n : st.nodes()) {
    const auto& [custom, labels] = extras[row++];
    std::string store = n.info().object_store_capacity() == 0
                            ? std::string("-")
                            : fmt::format("{}/{}{}", FormatBytes(static_cast<double>(n.object_store_used())),
                                          FormatBytes(static_cast<double>(n.info().object_store_capacity())),
                                          n.object_store_spilled() == 0
                                              ? std::string()
                                              : " +" + FormatBytes(static_cast<double>(n.object_store_spilled())) +
                                                    " spilled");
    std::printf("%-9s %-16s %-8s %-9s %-7s %-19s %-19s %-*s %-*s %-6lld %.1fs ago\n", ShortHex(n.info().node_id()).c_str(),
                n.info().hostname().substr(0, 16).c_str(), DisplayState(n).c_str(), Amount(n, kCpu).c_str(),
                Amount(n, kGpu).c_str(), Amount(n, kMemory).c_str(), store.c_str(), cw, custom.c_str(), lw,
                labels.c_str(), static_cast<long long>(n.running_tasks()), n.last_heartbeat_age_s());
  }
  if (st.nodes().empty()) std::printf("(no nodes: start one with `corral start --address %s`)\n", at.c_str());
  bool gpu_header = false;
  for (const auto& n : st.nodes())
    for (const auto& g : n.info().gpus()) {
      if (!std::exchange(gpu_header, true)) std::printf("\nGPUs (as NVML reports them):\n");
      std::printf("  %-9s GPU %d  %-28s %-9s %s\n", ShortHex(n.info().node_id()).c_str(), g.index(), g.name().c_str(),
                  FormatBytes(static_cast<double>(g.memory_bytes())).c_str(), g.uuid().c_str());
    }
  std::string tasks;
  for (const char* s : {"waiting_deps", "queued", "running", "finished"}) {
    auto it = st.tasks_by_state().find(s);
    tasks += fmt::format("{}{} {}", tasks.empty() ? "" : ", ", it == st.tasks_by_state().end() ? 0 : it->second, s);
  }
  int64_t live_actors = 0;  // an actor's creation counts as running for the actor's whole life
  for (const auto& a : st.actors()) live_actors += a.state() == "ALIVE";
  if (live_actors > 0) tasks += fmt::format(" (running: {} of them actors, for their lifetime)", live_actors);
  std::printf("\nTasks held by the head: %s\n", tasks.c_str());
  auto counter = [&](const char* name) { return head::CounterOf(st.counters(), name); };
  if (counter("durable_unfinished") > 0 || counter("schedules") > 0 || counter("durable_submitted") > 0)
    std::printf("Durable tasks: %lld unfinished, %lld schedule(s) (`corral tasks`, `corral queue list`, "
                "`corral schedule list`)\n",
                static_cast<long long>(counter("durable_unfinished")), static_cast<long long>(counter("schedules")));
  if (!st.actors().empty()) {
    std::printf("\nActors:\n%-32s %-28s %-24s %-10s %-9s %-8s %-9s %-9s %s\n", "ID", "CLASS", "NAME", "STATE", "NODE", "PID",
                "RESTARTS", "RUN+WAIT", "HOLDS");
    for (const auto& a : st.actors()) {
      std::string holds;
      for (const auto& [k, v] : std::map<std::string, double>(a.resources().begin(), a.resources().end()))
        holds += fmt::format("{}{} {}", holds.empty() ? "" : ",", k, k == kMemory ? FormatBytes(v) : fmt::format("{:g}", v));
      std::string name = a.spec().name().empty() ? "-" : a.spec().namespace_() + "/" + a.spec().name();
      if (a.spec().detached()) name += " (detached)";
      // The whole id: a driver's actors share its first half (the driver's id).
      std::printf("%-32s %-28s %-24s %-10s %-9s %-8lld %-9s %-9s %s\n", Hex(a.actor_id()).c_str(),
                  a.spec().class_name().substr(0, 28).c_str(), name.substr(0, 24).c_str(), a.state().c_str(),
                  a.node_id().empty() ? "-" : ShortHex(a.node_id()).c_str(), static_cast<long long>(a.pid()),
                  fmt::format("{}/{}", a.restarts(),
                              a.max_restarts() == UINT32_MAX ? std::string("inf") : std::to_string(a.max_restarts()))
                      .c_str(),
                  fmt::format("{}+{}", a.running_calls(), a.pending_calls()).c_str(), holds.empty() ? "-" : holds.c_str());
    }
  }
  if (!st.gangs().empty()) {
    std::printf("\nGangs:\n%-9s %-20s %-8s %-14s %s\n", "ID", "NAME", "STATE", "STRATEGY", "MEMBERS");
    for (const auto& g : st.gangs()) {
      std::string members;
      for (const auto& m : g.members()) {
        std::string holds;
        for (const auto& [k, v] : std::map<std::string, double>(m.resources().begin(), m.resources().end()))
          holds += fmt::format("{}{} {}", holds.empty() ? "" : ",", k, k == kMemory ? FormatBytes(v) : fmt::format("{:g}", v));
        members += fmt::format("{}{}:{} on {}", members.empty() ? "" : "; ", m.index(), holds,
                               m.node_id().empty() ? std::string("-") : ShortHex(m.node_id()));
      }
      std::printf("%-9s %-20s %-8s %-14s %s\n", ShortHex(g.gang_id()).c_str(),
                  (g.name().empty() ? std::string("-") : g.name()).substr(0, 20).c_str(), g.state().c_str(),
                  g.strategy().c_str(), members.c_str());
      if (!g.reason().empty()) std::printf("          %s\n", g.reason().c_str());
    }
  }
  if (!st.infeasible().empty()) {
    std::printf("\nCannot be scheduled on any node:\n");
    for (const auto& s : st.infeasible()) std::printf("  %s\n", s.c_str());
  }
  return 0;
}

}  // namespace corral::cli
