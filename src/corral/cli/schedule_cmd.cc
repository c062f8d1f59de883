#include <cstdio>

#include <nlohmann/json.hpp>

#include "corral/cli/commands.h"

namespace corral::cli {

int ScheduleCommand(const std::string& address, const ScheduleFlags& f) {
  static const std::map<std::string, proto::ScheduleRequest::Op> kOps = {
      {"list", proto::ScheduleRequest::LIST},     {"add", proto::ScheduleRequest::ADD},
      {"pause", proto::ScheduleRequest::PAUSE},   {"resume", proto::ScheduleRequest::RESUME},
      {"rm", proto::ScheduleRequest::REMOVE},     {"run-now", proto::ScheduleRequest::RUN_NOW},
      {"history", proto::ScheduleRequest::HISTORY},
  };
  auto op = kOps.find(f.action);
  if (op == kOps.end()) {
    std::fprintf(stderr, "corral schedule: unknown action '%s': use list, add, pause, resume, rm, run-now or history\n",
                 f.action.c_str());
    return 2;
  }
  if (op->second != proto::ScheduleRequest::LIST && f.name.empty()) {
    std::fprintf(stderr, "corral schedule %s: give the schedule's NAME\n", f.action.c_str());
    return 2;
  }
  proto::Request req;
  proto::ScheduleRequest* r = req.mutable_schedule();
  r->set_op(op->second);
  r->set_limit(f.limit);
  proto::ScheduleSpec* spec = r->mutable_spec();
  spec->set_name(f.name);
  if (op->second == proto::ScheduleRequest::ADD) {
    if (f.function.empty()) {
      std::fprintf(stderr, "corral schedule add: --function module:qualname is required\n");
      return 2;
    }
    nlohmann::json args = nlohmann::json::parse(f.args_json, nullptr, false);
    if (args.is_discarded() || !args.is_array()) {
      std::fprintf(stderr, "corral schedule add: --args must be a JSON array, e.g. '[\"/data/latest.csv\"]'\n");
      return 2;
    }
    spec->set_function(f.function);
    spec->set_args(nlohmann::json::array({args, nlohmann::json::object()}).dump());
    spec->set_args_format("json");
    spec->set_cron(f.cron);
    spec->set_every_s(f.every_s);
    spec->set_tz(f.tz);
    spec->set_misfire(f.misfire);
    spec->set_queue(f.queue);
  }
  auto c = ConnectCli(address, "corral schedule");
  if (!c) return 1;
  auto reply = c->Request(req, 60);
  if (!reply) {
    std::fprintf(stderr, "corral schedule %s: %s\n", f.action.c_str(), reply.error().message().c_str());
    return 1;
  }
  switch (op->second) {
    case proto::ScheduleRequest::RUN_NOW:
      std::printf("schedule %s submitted task %s\n", f.name.c_str(), reply->task_id().c_str());
      return 0;
    case proto::ScheduleRequest::REMOVE:
      std::printf("schedule %s removed\n", f.name.c_str());
      return 0;
    case proto::ScheduleRequest::HISTORY:
      if (reply->fires().empty()) std::printf("schedule %s has not fired yet\n", f.name.c_str());
      for (const auto& fire : reply->fires())
        std::printf("%s  task %s  %s\n", LocalTime(fire.slot_ns(), true).c_str(), fire.task_id().c_str(), fire.state().c_str());
      return 0;
    default: break;
  }
  if (reply->schedules().empty()) {
    std::printf("No schedules. Add one with `corral schedule add NAME --function module:qualname --cron '0 2 * * *'`\n");
    return 0;
  }
  std::printf("%-24s  %-28s  %-16s  %-14s  %-9s  %-7s  %s\n", "NAME", "FUNCTION", "WHEN", "ZONE", "MISFIRE", "PAUSED",
              "NEXT");
  for (const auto& s : reply->schedules()) {
    std::string when = s.cron().empty() ? "every " + std::to_string(s.every_s()) + "s" : s.cron();
    std::printf("%-24s  %-28s  %-16s  %-14s  %-9s  %-7s  %s\n", s.name().c_str(), s.function().substr(0, 28).c_str(),
                when.c_str(), s.tz().c_str(), s.misfire().c_str(), s.paused() ? "yes" : "no",
                s.paused() ? "-" : LocalTime(s.next_slot_ns(), true).c_str());
  }
  return 0;
}

}  // namespace corral::cli
