// `corral logs TASK_ID [--follow]`: a task's output, read by the agent of the node that ran it from
// its log files (the head finds the node; nobody names a file).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "corral/cli/commands.h"

namespace corral::cli {
namespace {
bool Final(const std::string& state) { return state == "finished" || state == "failed" || state == "cancelled"; }
}  // namespace

int ShowLogs(const std::string& address, const std::string& task, bool follow) {
  auto c = ConnectCli(address, "corral logs");
  if (!c) return 1;
  uint64_t offset = 0;
  bool said_waiting = false;
  for (;;) {
    proto::Request req;
    req.mutable_task_log()->set_task_id(task);
    req.mutable_task_log()->set_offset(offset);
    auto reply = c->Request(req, 30);
    if (!reply) {
      std::fprintf(stderr, "corral logs: %s\n", reply.error().message().c_str());
      return 1;
    }
    const proto::TaskLog& log = reply->task_log();
    std::fwrite(log.text().data(), 1, log.text().size(), stdout);
    std::fflush(stdout);
    offset = log.next_offset();
    bool done = log.ended() || (Final(log.task_state()) && log.text().empty());
    if (!follow) {
      if (offset == 0 && log.text().empty())
        std::fprintf(stderr, "(no output from %s yet: it is %s%s)\n", log.task_name().c_str(),
                     log.task_state().c_str(), Final(log.task_state()) ? "" : "; --follow waits for it");
      return 0;
    }
    if (done) return 0;
    if (log.node_id().empty() && !said_waiting) {
      std::fprintf(stderr, "(%s is %s; waiting for it to start)\n", log.task_name().c_str(), log.task_state().c_str());
      said_waiting = true;
    }
    if (log.text().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

}  // namespace corral::cli
