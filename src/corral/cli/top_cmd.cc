// `corral top`: a live view of the cluster like top(1): nodes with their busy workers and resources,
// tasks per second, and the durable queues, refreshed every --interval seconds until Ctrl-C.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>

#include <fmt/format.h>

#include "corral/base/ids.h"
#include "corral/base/resources.h"
#include "corral/cli/commands.h"
#include "corral/head/status_json.h"

namespace corral::cli {

int Top(const std::string& address, double interval_s, int iterations) {
  auto c = ConnectCli(address, "corral top");
  if (!c) return 1;
  bool tty = isatty(STDOUT_FILENO);
  int64_t last_done = -1;
  auto last_at = std::chrono::steady_clock::now();
  for (int i = 0; iterations <= 0 || i < iterations; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
    proto::Request status_req;
    status_req.set_status(true);
    auto status = c->Request(status_req, 10);
    if (!status) {
      std::fprintf(stderr, "corral top: %s\n", status.error().message().c_str());
      return 1;
    }
    proto::Request queue_req;
    queue_req.mutable_queue()->set_op(proto::QueueRequest::LIST);
    auto queues = c->Request(queue_req, 10);
    const proto::ClusterStatus& st = status->status();
    auto now = std::chrono::steady_clock::now();
    int64_t done = head::CounterOf(st.counters(), "tasks_succeeded") + head::CounterOf(st.counters(), "tasks_failed");
    double rate = last_done < 0 ? 0.0
                                : static_cast<double>(done - last_done) /
                                      std::max(1e-3, std::chrono::duration<double>(now - last_at).count());
    last_done = done;
    last_at = now;
    int alive = 0;
    for (const auto& n : st.nodes())
      if (n.state() == "alive") alive++;
    auto state_count = [&](const char* s) {
      auto it = st.tasks_by_state().find(s);
      return it == st.tasks_by_state().end() ? int64_t{0} : it->second;
    };
    std::string screen;
    auto out = std::back_inserter(screen);
    std::time_t t = std::time(nullptr);
    char clock[16];
    std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&t));
    fmt::format_to(out, "corral top - {}  head {}  (Ctrl-C quits)\n", clock, st.address());
    fmt::format_to(out, "Nodes: {} alive of {}   Tasks: {:.1f}/s done, {} running, {} queued, {} waiting   Failed: {} in all\n\n",
                   alive, st.nodes_size(), rate, state_count("running"), state_count("queued"),
                   state_count("waiting_deps"), head::CounterOf(st.counters(), "tasks_failed"));
    fmt::format_to(out, "{:<9} {:<16} {:<9} {:>9} {:>7} {:>21} {:>12} {:>10}\n", "NODE", "HOST", "STATE", "CPU", "GPU",
                   "MEMORY", "BUSY/WORKERS", "HEARTBEAT");
    for (const auto& n : st.nodes()) {
      fmt::format_to(out, "{:<9} {:<16} {:<9} {:>9} {:>7} {:>21} {:>12} {:>9.1f}s\n", ShortHex(n.info().node_id()),
                     n.info().hostname().substr(0, 16), DisplayState(n), Amount(n, kCpu), Amount(n, kGpu),
                     Amount(n, kMemory),
                     fmt::format("{}/{}", n.running_tasks(), head::CounterOf(n.counters(), "workers_alive")),
                     n.last_heartbeat_age_s());
    }
    if (queues && !queues->queues().empty()) {
      fmt::format_to(out, "\n{:<20} {:>8} {:>8} {:>8} {:>10} {:>8}\n", "QUEUE", "READY", "WAITING", "RUNNING",
                     "SUCCEEDED", "FAILED");
      for (const auto& q : queues->queues())
        fmt::format_to(out, "{:<20} {:>8} {:>8} {:>8} {:>10} {:>8}\n", q.name().substr(0, 20), q.ready(), q.waiting(),
                       q.running(), q.succeeded(), q.failed());
    }
    if (tty) std::fputs("\x1b[H\x1b[2J", stdout);  // home, clear: redraw in place
    else if (i > 0) std::fputs("\n", stdout);
    std::fputs(screen.c_str(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace corral::cli
