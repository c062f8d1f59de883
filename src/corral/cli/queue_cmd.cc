#include <cstdio>

#include <fmt/format.h>

#include "corral/cli/commands.h"

namespace corral::cli {
namespace {

// 1.6667/s -> "100/m": in the unit it was most likely given in.
std::string FormatRate(double per_s) {
  if (per_s <= 0) return "-";
  if (per_s >= 1) return fmt::format("{:.4g}/s", per_s);
  if (per_s * 60 >= 1) return fmt::format("{:.4g}/m", per_s * 60);
  return fmt::format("{:.4g}/h", per_s * 3600);
}

}  // namespace

int QueueCommand(const std::string& address, const QueueFlags& f) {
  proto::Request req;
  proto::QueueRequest* r = req.mutable_queue();
  if (f.action == "set") {
    if (f.name.empty()) {
      std::fprintf(stderr, "corral queue set: give the queue's NAME\n");
      return 2;
    }
    r->set_op(proto::QueueRequest::SET);
    proto::QueueSpec* spec = r->mutable_spec();
    spec->set_name(f.name);
    if (f.weight) spec->set_weight(*f.weight);
    if (f.concurrency) spec->set_concurrency(*f.concurrency);
    if (f.rate) {
      auto rate = ParseRate(*f.rate);
      if (!rate) {
        std::fprintf(stderr, "corral queue set: %s\n", rate.error().message().c_str());
        return 2;
      }
      spec->set_rate_per_s(*rate);
    }
    if (f.labels) spec->set_labels(*f.labels);
    if (f.resources) spec->set_resources(*f.resources);
  } else if (f.action != "list") {
    std::fprintf(stderr, "corral queue: unknown action '%s': use list or set\n", f.action.c_str());
    return 2;
  }
  auto c = ConnectCli(address, "corral queue");
  if (!c) return 1;
  auto reply = c->Request(req, 60);
  if (!reply) {
    std::fprintf(stderr, "corral queue %s: %s\n", f.action.c_str(), reply.error().message().c_str());
    return 1;
  }
  if (reply->queues().empty()) {
    std::printf("No queues yet: a queue exists from its first task on (or `corral queue set NAME ...`).\n");
    return 0;
  }
  std::printf("%-20s %6s %6s %7s %7s %9s %7s %7s %5s  %s\n", "QUEUE", "WEIGHT", "LIMIT", "RATE", "READY", "WAITING",
              "RUNNING", "DONE", "FAIL", "PINNED TO");
  for (const auto& q : reply->queues()) {
    std::string pinned = q.labels();
    if (!q.resources().empty()) pinned += (pinned.empty() ? "" : " ") + q.resources();
    if (q.slots() == 0 && q.ready() > 0) pinned += "  (no connected node can run it)";
    std::printf("%-20s %6g %6s %7s %7lld %9lld %7lld %7lld %5lld  %s\n", q.name().c_str(), q.weight(),
                q.concurrency() > 0 ? std::to_string(q.concurrency()).c_str() : "-",
                FormatRate(q.rate_per_s()).c_str(),
                static_cast<long long>(q.ready()), static_cast<long long>(q.waiting()),
                static_cast<long long>(q.running()), static_cast<long long>(q.succeeded()),
                static_cast<long long>(q.failed()), pinned.empty() ? "-" : pinned.c_str());
  }
  return 0;
}

}  // namespace corral::cli
