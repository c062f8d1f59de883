// The agent's side of the head: connecting and reconnecting, heartbeats and the lease
// (self-fencing), the messages from the head, and drain. See agent.h.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "corral/agent/agent.h"
#include "corral/base/files.h"
#include "corral/agent/agent_worker.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/base/version.h"

namespace corral::agent {

namespace asio = boost::asio;

namespace {
// Values written this recently are not listed in the Hello: their put or result may still be on
// its way to the head, which must not take them for values it does not know.
constexpr int kStoreListMinAgeS = 5;
// Results held for the head while it is unreachable; beyond this they are handed back instead.
constexpr size_t kMaxOutboxBytes = 256u << 20;
}  // namespace

// ---- head link ----

void Agent::ConnectToHead() {
  auto dial = options_.connect ? options_.connect : [this](auto done) {
    net::Dial(io_, options_.head, options_.tls, std::chrono::seconds(10), std::move(done));
  };
  dial([this, alive = alive_](Result<std::unique_ptr<net::ByteStream>> r) {
              if (!*alive) return;
              if (!r) {
                OnHeadLost(r.error());
                return;
              }
              ServeObjects((*r)->local_ip());
              ServeCalls((*r)->local_ip());
              head_ = net::Connection::Create(std::move(*r));
              head_->Start([this](std::string_view m) { OnHeadMessage(m); },
                           [this, alive](const Status& s) {
                             if (*alive) OnHeadLost(s);
                           });
              proto::AgentToHead hello;
              proto::Hello* h = hello.mutable_hello();
              h->set_protocol_version(kProtocolVersion);
              h->set_corral_version(CORRAL_VERSION);
              if (identity_ && !identity_->has_certificate()) {  // joining: ask for this node's certificate
                auto request = identity_->MakeRequest();
                if (!request) {
                  LOG_ERROR("cannot make a certificate request: {}", request.error().ToString());
                  head_->Close(request.error());
                  return;
                }
                h->set_certificate_request(*request);
              }
              if (!has_certificate()) h->set_token(options_.token);  // the certificate is the credential
              h->set_role(proto::Hello::AGENT);
              h->set_name("agent on " + options_.hostname);
              h->set_id(options_.node_id);
              h->set_pid(getpid());
              *h->mutable_node() = info_;
              hello_info_ = info_.SerializeAsString();
              auto hold = [h](const proto::TaskSpec& spec, bool blocked) {
                proto::HeldAttempt* a = h->add_held();
                a->set_task_id(spec.task_id());
                a->set_attempt(spec.attempt());
                a->set_blocked(blocked);
              };
              for (auto& [pid, w] : workers_) {
                if (w->busy) {
                  proto::HeldAttempt* a = h->add_held();
                  a->set_task_id(w->task_id);
                  a->set_attempt(w->attempt);
                  a->set_blocked(w->blocked);
                  a->set_actor_ready(w->actor_ready);
                }
                if (w->next) hold(w->next->task.spec(), false);
                for (const auto& [id, call] : w->actor_calls) {
                  proto::HeldAttempt* a = h->add_held();
                  a->set_task_id(id);
                  a->set_attempt(call.attempt);
                }
                if (w->call_table)  // (calls its callers sent it on their channels, decision 50)
                  for (const auto& [id, seq] : w->call_table->ListClaimed()) h->add_held()->set_task_id(id);
              }
              for (const Pending& p : queue_) hold(p.task.spec(), false);
              if (store_)
                for (auto& e : store_->List(kStoreListMinAgeS)) {
                  proto::StoredObject* o = h->add_stored_objects();
                  o->set_id(std::move(e.id));
                  o->set_attempt(e.attempt);
                  o->set_spilled(e.spilled);
                }
              for (const auto& m : outbox_) {
                proto::HeldAttempt* a = h->add_held();
                a->set_task_id(m.finished().task_id());
                a->set_attempt(m.finished().attempt());
                a->set_finished(true);
              }
              lease_.Reset();
              lease_.Sent(0, SystemClock().BootTimeNs());  // the Welcome acknowledges the Hello
              head_->Send(hello);
            });
}

void Agent::OnNodeCertificate(const std::string& certificate, bool renewal) {
  if (!identity_) return;
  if (Status s = identity_->Accept(certificate); !s.ok()) {
    LOG_ERROR("cannot keep this node's certificate: {}", s.ToString());
    return;
  }
  LOG_INFO("{} this node's certificate (kept in {}/node.pem, valid for {:.1f} more days)",
           renewal ? "renewed" : "joined the cluster: got", options_.state_dir,
           static_cast<double>(identity_->not_after_s() - SystemClock().WallNs() / 1'000'000'000) / 86400);
}

void Agent::KeepWorkerToken(const std::string& token) {
  // Workers read it when they (re)connect to the head; their open connections keep working.
  if (Status s = WriteFile(options_.state_dir + "/worker-token", token + "\n", 0600); !s.ok())
    LOG_WARN("cannot write the workers' credential: {}", s.ToString());
}

void Agent::MaybeRenewCertificate() {
  if (!identity_ || renewing_ || !head_ || !registered_) return;
  if (!identity_->RenewalDue(SystemClock().WallNs() / 1'000'000'000)) return;
  auto request = identity_->MakeRequest();
  if (!request) {
    LOG_WARN("cannot make a certificate request: {}", request.error().ToString());
    return;
  }
  renewing_ = true;
  proto::AgentToHead msg;
  msg.set_renew_certificate(*request);
  head_->Send(msg);
}

void Agent::OnHeadLost(const Status& reason) {
  head_.reset();
  registered_ = false;
  renewing_ = false;
  // Direct calls need the head to hear of them: their callers go through it until it is back (the
  // calls already here run on; their callers ask the head about them).
  if (!stopped_) CloseCallers(Status(Code::kUnavailable, "this agent lost the head"));
  // Ends the head may not have received: report them again after re-registering.
  for (auto it = unacked_.rbegin(); it != unacked_.rend(); ++it) {
    outbox_bytes_ += it->msg.ByteSizeLong();
    outbox_.push_front(std::move(it->msg));
  }
  unacked_.clear();
  unacked_bytes_ = 0;
  heartbeat_timer_.cancel();
  if (left_) {
    LOG_INFO("left the cluster");
    Stop();
    if (options_.on_left) options_.on_left();
    return;
  }
  if (options_.exit_when_head_lost) {
    LOG_INFO("head gone ({}); this agent belongs to it and stops", reason.ToString());
    Stop();
    io_.stop();
    return;
  }
  if (draining_ && leave_after_drain_) {
    LOG_INFO("lost the head while draining to leave: stopping now");
    Stop();
    if (options_.on_left) options_.on_left();
    return;
  }
  double backoff = std::min(10.0, 0.25 * std::pow(2.0, std::min(reconnect_attempt_++, 6)));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  std::mt19937 rng(std::random_device{}());
  auto delay = std::chrono::milliseconds(static_cast<int>(backoff * jitter(rng) * 1000));
  int running = 0;
  for (auto& [pid, w] : workers_) running += w->busy;
  Nanos left = lease_.granted() ? lease_.expiry() - SystemClock().BootTimeNs() : 0;
  LOG_WARN("lost the head at {} ({}); reconnecting in {} ms. {} running task(s) go on while the lease lasts "
           "({:.1f}s more)",
           options_.head.ToString(), reason.ToString(), delay.count(), running, std::max<Nanos>(0, left) / 1e9);
  reconnect_timer_.expires_after(delay);
  reconnect_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) ConnectToHead();
  });
}

void Agent::SendToHead(const proto::AgentToHead& msg) {
  if (head_ && registered_) {
    // An in-process link (the head's own agent) cannot be half-open: nothing to keep.
    if (msg.has_finished() && !options_.connect) {
      size_t bytes = msg.ByteSizeLong();
      if (unacked_bytes_ + bytes <= kMaxOutboxBytes) {  // beyond: at-least-once covers a loss
        unacked_bytes_ += bytes;
        unacked_.push_back(Unacked{heartbeat_seq_ + 1, msg});
      }
    }
    head_->Send(msg);
    return;
  }
  // Only the end of an attempt must survive the gap: output and blocked notes are dropped.
  if (!msg.has_finished()) return;
  size_t bytes = msg.ByteSizeLong();
  if (outbox_bytes_ + bytes > kMaxOutboxBytes && msg.finished().result().error() != proto::HANDED_BACK) {
    counters_["results_dropped_while_away"]++;
    HandBack(msg.finished().task_id(), msg.finished().attempt(),
             "its result did not fit in the agent's buffer while the head was unreachable");
    return;
  }
  outbox_bytes_ += bytes;
  outbox_.push_back(msg);
}

void Agent::HandBack(const std::string& task_id, uint32_t attempt, const std::string& why) {
  proto::AgentToHead msg;
  proto::TaskFinished* f = msg.mutable_finished();
  f->set_task_id(task_id);
  f->set_attempt(attempt);
  f->set_node_id(options_.node_id);
  f->mutable_result()->set_error(proto::HANDED_BACK);
  f->mutable_result()->set_message(why);
  counters_["attempts_handed_back"]++;
  SendToHead(msg);
}

void Agent::OnLeaseRenewed() {
  if (!lease_.granted() || lease_.expiry() == published_lease_) return;
  published_lease_ = lease_.expiry();
  lease_timer_.ExpireAt(published_lease_, [this] { OnLeaseExpired(); });
  if (lease_map_) __atomic_store_n(lease_map_, published_lease_, __ATOMIC_RELAXED);  // workers read it whole
}

void Agent::OnLeaseExpired() {
  Nanos now = SystemClock().BootTimeNs();
  if (lease_.Valid(now)) {  // renewed meanwhile
    lease_timer_.ExpireAt(lease_.expiry(), [this] { OnLeaseExpired(); });
    return;
  }
  std::string why = fmt::format("node {} ({}) stopped it: no word from the head for longer than its lease",
                                ShortHex(options_.node_id), options_.hostname);
  int stopped = 0;
  for (auto& [pid, w] : workers_) {
    if (w->next) {
      // Stopping the worker stops the task sent ahead too: hand both back.
      HandBack(w->next->task.spec().task_id(), w->next->task.spec().attempt(), why);
      w->next.reset();  // its worker runs a task that is not kept running (see PipelineTarget): stopped below
    }
    if (w->busy && !w->keep_running && w->hand_back.empty()) {
      w->hand_back = why;
      processes_->KillGroup(pid, SIGKILL);
      stopped++;
    }
  }
  for (const Pending& p : queue_) HandBack(p.task.spec().task_id(), p.task.spec().attempt(), why);
  stopped += static_cast<int>(queue_.size());
  queue_.clear();
  if (stopped) {
    counters_["attempts_fenced"] += stopped;
    LOG_WARN("lease ran out ({}): stopped {} attempt(s) so they cannot run twice; they are handed back "
             "when the head is reachable",
             head_ ? "the head is not answering" : "the head is unreachable", stopped);
  }
}

void Agent::OnHeadMessage(std::string_view bytes) {
  proto::HeadToAgent msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    head_->Close(Status(Code::kInvalidArgument, "malformed message from the head"));
    return;
  }
  switch (msg.msg_case()) {
    case proto::HeadToAgent::kWelcome: {
      const proto::Welcome& w = msg.welcome();
      if (!w.error().empty()) {
        LOG_ERROR("the head refused this agent: {}", w.error());
        options_.exit_when_head_lost = true;  // retrying cannot help
        exit_code_ = 1;
        head_->Close(Status(Code::kPermissionDenied, w.error()));
        return;
      }
      head_->MarkHandshakeDone();
      reconnect_attempt_ = 0;
      registered_ = true;
      last_ack_ = SystemClock().BootTimeNs();
      if (w.lease_ms() > 0) lease_.Acked(0, Ms(static_cast<int64_t>(w.lease_ms())));
      OnLeaseRenewed();
      if (!session_id_.empty() && session_id_ != w.session_id()) {
        LOG_INFO("the head restarted (new session); reporting {} attempt end(s) held meanwhile", outbox_.size());
        // Their tickets were the old head's; their calls come again.
        CloseCallers(Status(Code::kUnavailable, "the head restarted"));
      }
      session_id_ = w.session_id();
      if (!w.node_certificate().empty()) OnNodeCertificate(w.node_certificate(), false);
      if (!w.worker_token().empty()) KeepWorkerToken(w.worker_token());
      if (transfer_) transfer_->SetSecret(w.peer_secret());
      peer_secret_ = w.peer_secret();
      // What ended while the head was away follows the Hello that listed it.
      std::deque<proto::AgentToHead> outbox = std::move(outbox_);
      outbox_.clear();
      outbox_bytes_ = 0;
      for (const auto& m : outbox) SendToHead(m);  // kept until acknowledged, like any other
      // What changed since the hello (a worker greeted meanwhile with its Python version: the
      // update it sent was dropped, the head not having taken this agent yet).
      if (info_.SerializeAsString() != hello_info_) {
        proto::AgentToHead update;
        *update.mutable_update() = info_;
        SendToHead(update);
      }
      for (auto& [pid, w] : workers_)  // an actor's readiness may have been lost with the connection
        if (w->busy && w->actor_ready) {
          proto::AgentToHead ready;
          ready.mutable_actor_ready()->set_actor_id(w->actor_id);
          ready.mutable_actor_ready()->set_attempt(w->attempt);
          ready.mutable_actor_ready()->set_pid(w->pid);
          ready.mutable_actor_ready()->set_node_id(options_.node_id);
          SendToHead(ready);
        }
      if (draining_) {
        proto::AgentToHead d;
        d.mutable_draining()->set_reason(drain_reason_);
        head_->Send(d);
        CheckDrained();
      }
      LOG_INFO("registered with the head at {} as node {}", options_.head.ToString(), ShortHex(options_.node_id));
      heartbeat_interval_ = std::chrono::milliseconds(std::max<uint64_t>(50, w.heartbeat_interval_ms()));
      Heartbeat();
      MaybeReady();
      break;
    }
    case proto::HeadToAgent::kExecute: OnExecute(std::move(*msg.mutable_execute())); break;
    case proto::HeadToAgent::kCancel: OnCancel(msg.cancel()); break;
    case proto::HeadToAgent::kHeartbeatAck:
      last_ack_ = SystemClock().BootTimeNs();
      while (!unacked_.empty() && unacked_.front().before_heartbeat <= msg.heartbeat_ack().seq()) {
        unacked_bytes_ -= unacked_.front().msg.ByteSizeLong();
        unacked_.pop_front();
      }
      lease_.Acked(msg.heartbeat_ack().seq(), Ms(static_cast<int64_t>(msg.heartbeat_ack().lease_ms())));
      OnLeaseRenewed();
      MaybeRenewCertificate();
      if (!msg.heartbeat_ack().worker_token().empty()) KeepWorkerToken(msg.heartbeat_ack().worker_token());
      if (ready_seq_ && msg.heartbeat_ack().seq() >= ready_seq_ && options_.on_registered) {
        auto callback = std::move(options_.on_registered);
        options_.on_registered = nullptr;
        callback();
      }
      break;
    case proto::HeadToAgent::kDrain:
      Drain(std::chrono::milliseconds(msg.drain().timeout_ms()), msg.drain().leave(), msg.drain().reason());
      break;
    case proto::HeadToAgent::kNodeCertificate:
      renewing_ = false;
      if (!msg.node_certificate().error().empty())
        LOG_WARN("the head did not renew this node's certificate: {}", msg.node_certificate().error());
      else
        OnNodeCertificate(msg.node_certificate().certificate(), true);
      break;
    case proto::HeadToAgent::kDeleteObjects: OnDeleteObjects(msg.delete_objects()); break;
    case proto::HeadToAgent::kReadObject: OnReadObject(msg.read_object()); break;
    case proto::HeadToAgent::kSpillObjects: OnSpillObjects(msg.spill_objects()); break;
    case proto::HeadToAgent::kPullObject: OnPullObject(msg.pull_object()); break;
    case proto::HeadToAgent::kProbeCalls: OnProbeCalls(msg.probe_calls()); break;
    case proto::HeadToAgent::kDropCallers: OnDropCallers(msg.drop_callers()); break;
    case proto::HeadToAgent::kReadTaskLog: {
      const proto::ReadTaskLog& r = msg.read_task_log();
      proto::AgentToHead reply;
      *reply.mutable_task_log() = task_logs_.Read(r.task_id(), r.offset(), r.max_bytes() ? r.max_bytes() : 65536);
      reply.mutable_task_log()->set_request_id(r.request_id());
      reply.mutable_task_log()->set_node_id(options_.node_id);
      SendToHead(reply);
      break;
    }
    case proto::HeadToAgent::kForgetFunctions:
      for (const auto& hash : msg.forget_functions().hashes()) {
        functions_.erase(hash);
        for (auto& [pid, w] : workers_)
          if (w->functions.erase(hash)) w->forget.push_back(hash);
        counters_["functions_forgotten"]++;
      }
      break;
    default: break;
  }
}

void Agent::MaybeReady() {
  if (!options_.on_registered || ready_seq_ || !registered_) return;
  // Workers start up front (one per CPU): wait while one is starting; a node without any is ready
  // now, and so is one whose workers died before connecting (the log says why; waiting would hang).
  bool starting = false;
  for (const auto& [pid, w] : workers_) starting |= !w->conn;
  if (info_.python_version().empty() && starting) return;
  Heartbeat();  // now, not at the next interval: its ack says the head has what came before it
  ready_seq_ = heartbeat_seq_;
}

void Agent::Heartbeat() {
  // Hard time limits, checked at the heartbeat's pace.
  Nanos boot = SystemClock().BootTimeNs();
  for (auto& [pid, w] : workers_)
    if (w->busy && w->hard_deadline > 0 && boot >= w->hard_deadline && !w->time_limited) {
      w->time_limited = true;
      counters_["tasks_time_limited"]++;
      LOG_WARN("{} ran past its time limit of {}s: stopping worker {}", Printable(w->task_name), w->time_limit_s, pid);
      processes_->KillGroup(pid, SIGKILL);
    }
  // Values a writer that is not a worker here (a driver) left half-written when it died.
  if (store_ && ++heartbeats_since_sweep_ >= 60) {
    heartbeats_since_sweep_ = 0;
    counters_["object_partials_removed"] += store_->SweepPartial();
  }
  if (!head_) return;
  // A connection that stopped carrying acks is half-open (the head's host vanished, our address
  // changed, a suspend broke it): drop it and dial again rather than wait for TCP to notice.
  Nanos now = SystemClock().BootTimeNs();
  Nanos silent_limit = std::max<Nanos>(Ms(2000), 5 * heartbeat_interval_.count() * 1'000'000);
  if (registered_ && now - last_ack_ > silent_limit) {
    head_->Close(Status(Code::kDeadlineExceeded,
                        fmt::format("no heartbeat acknowledgement for {:.1f}s", (now - last_ack_) / 1e9)));
    return;
  }
  proto::AgentToHead msg;
  msg.mutable_heartbeat()->set_seq(++heartbeat_seq_);
  counters_["workers_alive"] = static_cast<int64_t>(workers_.size());
  counters_["tasks_queued_here"] = static_cast<int64_t>(queue_.size());
  if (transfer_) counters_["object_bytes_served"] = static_cast<int64_t>(transfer_->bytes_served());
  for (const auto& [k, v] : counters_) (*msg.mutable_heartbeat()->mutable_counters()->mutable_values())[k] = v;
  lease_.Sent(heartbeat_seq_, SystemClock().BootTimeNs());
  head_->Send(msg);
  heartbeat_timer_.expires_after(heartbeat_interval_);
  heartbeat_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) Heartbeat();
  });
}

// ---- drain ----

void Agent::Drain(std::chrono::milliseconds timeout, bool leave, const std::string& reason,
                  std::function<void()> on_drained) {
  bool for_sleep = static_cast<bool>(on_drained);  // only the sleep inhibitor waits on a drain
  if (on_drained) on_drained_ = std::move(on_drained);
  if (!registered_ && leave) {
    LOG_INFO("{}: not connected to a head, stopping now", reason);
    left_ = true;
    Stop();
    if (options_.on_left) options_.on_left();
    return;
  }
  leave_after_drain_ = leave_after_drain_ || leave;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  if (draining_) {
    // Already draining (a sleep drain, then `corral stop`): the earlier deadline wins, and a drain
    // that has already finished may now have to leave.
    if (!for_sleep) sleep_drain_ = false;  // an operator's drain does not end when the machine wakes
    if (deadline < drain_deadline_) ArmDrainTimer(deadline);
    CheckDrained();
    return;
  }
  draining_ = true;
  drain_reason_ = reason;
  int running = 0;
  for (auto& [pid, w] : workers_) running += w->busy;
  LOG_INFO("draining ({}): {} queued task(s) handed back, up to {:.1f}s for {} running", reason, queue_.size(),
           timeout.count() / 1e3, running);
  proto::AgentToHead msg;
  msg.mutable_draining()->set_reason(reason);
  SendToHead(msg);
  std::string why = fmt::format("node {} is draining", ShortHex(options_.node_id));
  for (auto& [pid, w] : workers_)
    if (w->next) {  // the worker would start it after the current one: take it back instead
      HandBack(w->next->task.spec().task_id(), w->next->task.spec().attempt(), why);
      w->next.reset();
      if (w->busy) {
        w->hand_back = why + " (its worker also held the next task)";
        processes_->KillGroup(pid, SIGKILL);
      }
    }
  for (const Pending& p : queue_) HandBack(p.task.spec().task_id(), p.task.spec().attempt(), why);
  queue_.clear();
  for (auto& [pid, w] : workers_)
    if (w->busy && !w->actor_id.empty() && !w->keep_running && w->hand_back.empty()) {
      // An actor never finishes: it moves now (restarted elsewhere at no cost to its restarts).
      w->hand_back = why;
      processes_->KillGroup(pid, SIGKILL);
    }
  ArmDrainTimer(deadline);
  CheckDrained();
}

void Agent::ArmDrainTimer(std::chrono::steady_clock::time_point deadline) {
  drain_deadline_ = deadline;
  drain_timer_.expires_at(deadline);
  drain_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    std::string why = fmt::format("node {} is draining; its drain timeout passed", ShortHex(options_.node_id));
    for (auto& [pid, w] : workers_)
      if (w->busy && w->hand_back.empty()) {
        w->hand_back = why;
        processes_->KillGroup(pid, SIGKILL);
      }
    if (auto done = std::move(on_drained_)) done();  // what ran is stopped (its reports follow)
  });
}

void Agent::Undrain(const std::string& reason) {
  // Only a drain for sleep ends on wake; one an operator asked for (or a stop) goes on.
  if (!draining_ || leave_after_drain_ || !sleep_drain_) return;
  drain_timer_.cancel();
  on_drained_ = nullptr;
  sleep_drain_ = false;
  draining_ = false;
  LOG_INFO("taking work again: {}", reason);
  proto::AgentToHead msg;
  msg.mutable_draining()->set_reason(reason);
  msg.mutable_draining()->set_stopped(true);
  if (head_ && registered_) head_->Send(msg);
}

void Agent::CheckDrained() {
  if (!draining_ || left_) return;
  for (auto& [pid, w] : workers_)
    if (w->busy) return;
  if (!queue_.empty()) return;
  if (!leave_after_drain_) {
    drain_timer_.cancel();
    if (auto done = std::move(on_drained_)) {
      LOG_INFO("drained: no tasks left");
      done();
    }
    return;
  }
  if (!registered_) return;
  drain_timer_.cancel();
  left_ = true;
  proto::AgentToHead msg;
  msg.mutable_leaving()->set_reason(drain_reason_);
  head_->Send(msg);
  head_->CloseAfterFlush(Status(Code::kCancelled, "node left"));
}

}  // namespace corral::agent
