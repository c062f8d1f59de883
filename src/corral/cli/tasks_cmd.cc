#include <cstdio>

#include <nlohmann/json.hpp>

#include "corral/cli/commands.h"

namespace corral::cli {

int ListTasks(const std::string& address, const std::string& state, const std::string& queue, int limit, bool json) {
  auto c = ConnectCli(address, "corral tasks");
  if (!c) return 1;
  proto::Request req;
  req.mutable_durable_list()->set_state(state);
  req.mutable_durable_list()->set_queue(queue);
  req.mutable_durable_list()->set_limit(limit);
  auto reply = c->Request(req, 60);
  if (!reply) {
    std::fprintf(stderr, "corral tasks: %s\n", reply.error().message().c_str());
    return 1;
  }
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : reply->durable_list())
      out.push_back({{"id", t.id()}, {"function", t.function()}, {"state", t.state()}, {"attempt", t.attempt()},
                     {"runs", t.runs()}, {"queue", t.queue()}, {"error", t.error()}, {"note", t.note()}, {"created_ns", t.created_ns()},
                     {"finished_ns", t.finished_ns()}});
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  if (reply->durable_list().empty()) {
    std::printf("No durable tasks%s%s.\n", state.empty() ? "" : (" in state " + state).c_str(),
                queue.empty() ? "" : (" in queue " + queue).c_str());
    return 0;
  }
  std::printf("%-32s  %-8s  %-30s  %-10s  %-7s  %-4s  %-19s  %s\n", "ID", "STATE", "FUNCTION", "QUEUE", "ATTEMPT",
              "RUNS", "CREATED", "ERROR");
  for (const auto& t : reply->durable_list()) {
    std::string error = t.error();
    if (size_t nl = error.rfind('\n', error.size() > 1 ? error.size() - 2 : 0); nl != std::string::npos && error.size() > 1)
      error = error.substr(nl + 1);  // the last line of a traceback says what happened
    while (!error.empty() && error.back() == '\n') error.pop_back();
    if (error.empty() && !t.note().empty()) error = "(" + t.note() + ")";
    std::printf("%-32s  %-8s  %-30s  %-10s  %-7d  %-4d  %-19s  %s\n", t.id().c_str(), t.state().c_str(),
                t.function().substr(0, 30).c_str(), t.queue().c_str(), t.attempt(), t.runs(),
                LocalTime(t.created_ns(), false).c_str(), error.substr(0, 100).c_str());
  }
  if (static_cast<int>(reply->durable_list_size()) == limit)
    std::printf("(first %d; --limit N for more)\n", limit);
  return 0;
}

}  // namespace corral::cli
