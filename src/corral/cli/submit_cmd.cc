#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "corral/base/clock.h"
#include "corral/base/ids.h"
#include "corral/cli/commands.h"

namespace corral::cli {

int SubmitTask(const std::string& address, const SubmitFlags& f) {
  nlohmann::json args = nlohmann::json::parse(f.args_json, nullptr, false);
  nlohmann::json kwargs = nlohmann::json::parse(f.kwargs_json, nullptr, false);
  if (args.is_discarded() || !args.is_array() || kwargs.is_discarded() || !kwargs.is_object()) {
    std::fprintf(stderr, "corral submit: --args must be a JSON array and --kwargs a JSON object, e.g. "
                         "--args '[\"/data/x.csv\"]' --kwargs '{\"retries\": 2}'\n");
    return 2;
  }
  auto c = ConnectCli(address, "corral submit");
  if (!c) return 1;
  proto::Request req;
  proto::DurableTaskSpec* t = req.mutable_durable_submit()->add_tasks();
  t->set_id(Hex(RandomBytes(16)));
  t->set_function(f.function);
  t->set_args(nlohmann::json::array({args, kwargs}).dump());
  t->set_args_format("json");
  t->set_queue(f.queue);
  t->set_idempotency_key(f.idempotency_key);
  t->set_max_retries(f.max_retries);
  t->set_priority(f.priority);
  if (f.countdown_s > 0) t->set_eta_ns(SystemClock().WallNs() + static_cast<int64_t>(f.countdown_s * 1e9));
  auto reply = c->Request(req, 60);
  if (!reply) {
    std::fprintf(stderr, "corral submit: %s\n", reply.error().message().c_str());
    return 1;
  }
  std::string id = reply->submitted_ids(0);
  if (!f.wait) {
    std::printf("%s\n", id.c_str());
    return 0;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(f.timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    proto::Request get;
    get.mutable_durable_get()->set_id(id);
    get.mutable_durable_get()->set_wait_s(5);
    auto r = c->Request(get, 40);
    if (!r) {
      std::fprintf(stderr, "corral submit: %s\n", r.error().message().c_str());
      return 1;
    }
    const proto::DurableTaskInfo& info = r->durable();
    if (info.state() == "SUCCESS") {
      std::printf("%s\n", info.result_format() == "json" ? info.result().c_str() : "(a pickled value)");
      return 0;
    }
    if (info.state() == "FAILURE" || info.state() == "REVOKED") {
      std::fprintf(stderr, "task %s %s:\n%s\n", id.c_str(), info.state() == "FAILURE" ? "failed" : "was revoked",
                   info.error().c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "corral submit: task %s is not finished after %.0fs\n", id.c_str(), f.timeout_s);
  return 1;
}

}  // namespace corral::cli
