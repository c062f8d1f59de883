#include <chrono>
#include <cstdio>
#include <thread>

#include "corral/base/ids.h"
#include "corral/cli/commands.h"

namespace corral::cli {

int DrainNode(const std::string& address, const std::string& node, double timeout_s, bool stay) {
  auto c = ConnectCli(address, "corral drain");
  if (!c) return 1;
  proto::Request req;
  req.mutable_drain()->set_node(node);
  req.mutable_drain()->set_timeout_s(timeout_s);
  req.mutable_drain()->set_leave(!stay);
  if (auto r = c->Request(req, 10); !r) {
    std::fprintf(stderr, "corral drain: %s\n", r.error().message().c_str());
    return 1;
  }
  // Progress until the node left (or is idle, with --stay). Its agent hands running tasks back
  // at the timeout, so a little slack beyond it is enough.
  auto start = std::chrono::steady_clock::now();
  auto give_up = start + std::chrono::milliseconds(static_cast<int64_t>((timeout_s + 15) * 1000));
  std::string last;
  while (std::chrono::steady_clock::now() < give_up) {
    proto::Request nodes;
    nodes.set_nodes(true);
    auto r = c->Request(nodes, 10);
    if (!r) {
      std::fprintf(stderr, "corral drain: %s\n", r.error().message().c_str());
      return 1;
    }
    const proto::NodeStatus* found = nullptr;
    for (const auto& n : r->nodes()) {
      std::string hex = Hex(n.info().node_id());
      if (hex.starts_with(node) || n.info().hostname() == node) {
        if (n.state() != "dead" && n.state() != "left" && (!found || found->state() == "left" || found->state() == "dead"))
          found = &n;
        else if (!found)
          found = &n;
      }
    }
    if (!found) {
      std::fprintf(stderr, "corral drain: node %s is no longer known to the head\n", node.c_str());
      return 1;
    }
    std::string id = ShortHex(found->info().node_id());
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (found->state() == "left") {
      std::printf("node %s (%s) drained and left the cluster after %.1fs\n", id.c_str(),
                  found->info().hostname().c_str(), waited);
      return 0;
    }
    if (found->state() == "dead") {
      std::fprintf(stderr, "corral drain: node %s died while draining; its tasks were re-queued elsewhere\n", id.c_str());
      return 1;
    }
    if (stay && found->running_tasks() == 0) {
      std::printf("node %s (%s) drained after %.1fs: it takes no new work and runs nothing\n", id.c_str(),
                  found->info().hostname().c_str(), waited);
      return 0;
    }
    std::string line = fmt::format("node {} ({}): {}, {} task(s) still running", id, found->info().hostname(),
                                   DisplayState(*found), found->running_tasks());
    if (line != last) {
      std::printf("%s (%.0fs of %.0fs)\n", line.c_str(), waited, timeout_s);
      std::fflush(stdout);
      last = line;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::fprintf(stderr, "corral drain: node %s has not finished draining %.0fs after its timeout\n", node.c_str(),
               15.0);
  return 1;
}

}  // namespace corral::cli
