// HeadServer::ReadTaskLog: a task's output for `corral logs` and the dashboard, read by the agent
// of the node that ran it from its log files (agent/task_logs.h) and relayed here. The head finds
// the node in its journal of recent tasks; a client names a task by id, never a file.
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/head_peer.h"
#include "corral/head/head_server.h"

namespace corral::head {

void HeadServer::ReadTaskLog(const std::string& task, uint64_t offset, std::function<void(Result<proto::TaskLog>)> done) {
  auto entry = tasks_.journal().Resolve(task);
  if (!entry) return done(Err(entry.error()));
  const TaskJournal::Entry& e = **entry;
  proto::TaskLog log;
  log.set_task_state(TaskJournal::StateName(e.state));
  log.set_task_name(*e.function);
  log.set_next_offset(offset);
  if (e.node.empty()) {  // not started: no output yet
    log.set_ended(e.state == TaskJournal::State::kFailed || e.state == TaskJournal::State::kCancelled);
    return done(std::move(log));
  }
  const std::string node_id = e.node.str();
  log.set_node_id(node_id);
  Node* node = nodes_.Find(node_id);
  if (!node || !node->connected || !node->conn)
    return done(Err(MakeStatus(
        Code::kUnavailable,
        "task {} ran on node {} ({}), which is not connected now; its output is in that machine's agent state "
        "dir, logs/worker-*.log, after the line '==== corral task {} ...'",
        TaskIdText(e.id.view()), ShortHex(node_id), node ? node->info.hostname() : "gone", Hex(e.id.view()))));
  uint64_t request_id = ++next_read_;
  proto::HeadToAgent msg;
  proto::ReadTaskLog* r = msg.mutable_read_task_log();
  r->set_request_id(request_id);
  r->set_task_id(e.id.str());
  r->set_offset(offset);
  r->set_max_bytes(64 << 10);
  if (!node->conn->Send(msg))
    return done(Err(MakeStatus(Code::kUnavailable, "node {} is not taking messages now; try again",
                               ShortHex(node_id))));
  pending_logs_[request_id] = PendingLog{node_id, e.id.str(), std::move(done)};
  // An agent that does not answer (stuck, or too old to know the request) must not hold the reader.
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::seconds(10));
  timer->async_wait([this, timer, request_id, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    auto it = pending_logs_.find(request_id);
    if (it == pending_logs_.end()) return;
    auto late = std::move(it->second);
    pending_logs_.erase(it);
    late.done(Err(MakeStatus(Code::kDeadlineExceeded, "node {} did not answer for the task's log within 10 s",
                             ShortHex(late.node))));
  });
}

void HeadServer::OnTaskLog(Peer* peer, proto::TaskLog&& log) {
  auto it = pending_logs_.find(log.request_id());
  if (it == pending_logs_.end() || !peer->node || it->second.node != peer->node->view.id) return;
  PendingLog pending = std::move(it->second);
  pending_logs_.erase(it);
  // The head's view of the task now (it may have ended since the read was asked).
  if (const TaskJournal::Entry* e = tasks_.journal().Find(pending.task)) {
    log.set_task_state(TaskJournal::StateName(e->state));
    log.set_task_name(*e->function);
  }
  if (!log.error().empty()) return pending.done(Err(Status(Code::kNotFound, log.error())));
  pending.done(std::move(log));
}

void HeadServer::FailLogReadsFrom(const std::string& node_id, const std::string& why) {
  for (auto it = pending_logs_.begin(); it != pending_logs_.end();) {
    if (it->second.node != node_id) {
      ++it;
      continue;
    }
    auto done = std::move(it->second.done);
    it = pending_logs_.erase(it);
    done(Err(MakeStatus(Code::kUnavailable, "reading the log on node {}: {}", ShortHex(node_id), why)));
  }
}

}  // namespace corral::head
