// The agent's side of its workers: starting them, their connections and messages, the end of a
// task on a worker, a worker's exit and its output lines. (The rest of the agent: agent.cc.)
#include "corral/agent/agent.h"

#include "corral/agent/agent_worker.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "corral/base/hop_trace.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/base/version.h"
#include "corral/client.pb.h"

namespace corral::agent {

namespace {

constexpr size_t kStderrTail = 8;  // a worker's last stderr lines, kept for its death report

}  // namespace

Agent::Worker* Agent::SpawnWorker(const std::string& env_key) {
  auto w = std::make_unique<Worker>();
  w->id = Hex(RandomBytes(8));
  w->env_key = env_key;
  SpawnSpec spec;
  spec.python = options_.python;
  spec.args = {"-u", "-m", "corral.worker"};
  spec.env["CORRAL_AGENT_SOCKET"] = options_.state_dir + "/agent.sock";
  spec.env["CORRAL_WORKER_ID"] = w->id;
  spec.env["CORRAL_NODE_ID"] = Hex(options_.node_id);
  if (store_) {
    spec.env["CORRAL_OBJECT_DIR"] = store_->dir();
    spec.env["CORRAL_SPILL_DIR"] = store_->spill_dir();
  }
  spec.env["CORRAL_ADDRESS"] = options_.head.ToString();
  // Not the agent's token: the head's worker credential for this node (written on registration),
  // and for this agent's socket a secret of its own. The agent's secrets stay out of the workers.
  spec.unset_env = {"CORRAL_TOKEN", "CORRAL_JOIN_TOKEN"};
  spec.env["CORRAL_TOKEN_FILE"] = options_.state_dir + "/worker-token";
  spec.env["CORRAL_WORKER_SECRET"] = worker_secret_;
  if (!options_.ca_cert_file.empty()) spec.env["CORRAL_CA_CERT"] = options_.ca_cert_file;
  if (lease_map_) spec.env["CORRAL_LEASE_FILE"] = options_.state_dir + "/lease";
  if (!options_.task_modules.empty()) spec.env["CORRAL_TASK_MODULES"] = options_.task_modules;
  spec.env["CUDA_VISIBLE_DEVICES"] = env_key;
  // CUDA numbers devices fastest first unless told otherwise; NVML (and so env_key) by PCI bus.
  spec.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID";
  for (const char* var : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"})
    spec.env[var] = "1";
  if (!options_.python_path.empty()) {
    const char* old = std::getenv("PYTHONPATH");
    spec.env["PYTHONPATH"] = options_.python_path + (old && *old ? std::string(":") + old : "");
  }
  spec.log_path = WorkerLogPath(*w);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0) {  // (else its results go through here)
    w->results_fd = pair[0];
    spec.pass_fd = pair[1];
    spec.env["CORRAL_RESULTS_FD"] = "3";
  }
  auto pid = processes_->Spawn(spec);
  if (spec.pass_fd >= 0) close(spec.pass_fd);
  if (!pid) {
    OnSpawnFailed(pid.error());
    return nullptr;
  }
  spawn_failures_ = 0;
  w->pid = *pid;
  task_logs_.WorkerStarted(w->pid, spec.log_path);
  counters_["workers_started"]++;
  Worker* raw = w.get();
  workers_by_id_[w->id] = raw;
  workers_[*pid] = std::move(w);
  return raw;
}

void Agent::OnSpawnFailed(const Status& why) {
  constexpr auto kSpawnRetry = std::chrono::seconds(1);
  spawn_failures_++;
  std::string reason = fmt::format("cannot start a worker on node {} ({}): {}", ShortHex(options_.node_id),
                                   options_.hostname, why.message());
  if (why.message().find(strerror(EMFILE)) != std::string::npos) {
    rlimit l{};
    getrlimit(RLIMIT_NOFILE, &l);
    reason += fmt::format(
        " (this agent may hold {} open files, and holds several per worker: raise the limit of the process "
        "that starts it, `ulimit -n`, or LimitNOFILE= in its systemd unit)",
        static_cast<uint64_t>(l.rlim_cur));
  }
  // Tried again in a second, not at the next event: a full table would otherwise spin the loop.
  spawn_paused_ = true;
  spawn_retry_timer_.expires_after(kSpawnRetry);
  spawn_retry_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    spawn_paused_ = false;
    TryStart();
  });
  if (spawn_failures_ >= kMaxStartupFailures) {
    // (Posted: this runs inside TryStart's walk over the queue.)
    boost::asio::post(io_, [this, alive = alive_, reason = reason + fmt::format("; tried {} times, a second apart",
                                                                               spawn_failures_)] {
      if (*alive) FailQueued(reason, /*only_startable=*/true);
    });
  } else {
    LOG_ERROR("{}; trying again in a second", reason);
  }
}

void Agent::OnWorkerAccepted(std::unique_ptr<net::ByteStream> stream) {
  auto conn = net::Connection::Create(std::move(stream));
  // Until the worker's Hello names it, messages go to a placeholder that attaches it.
  std::weak_ptr<net::Connection> weak = conn;
  auto attached = std::make_shared<Worker*>(nullptr);
  conn->Start(
      [this, weak, attached](std::string_view bytes) {
        if (*attached) return OnWorkerMessage(*attached, bytes);
        auto c = weak.lock();
        proto::WorkerToAgent msg;
        if (!c || !msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || !msg.has_hello()) {
          if (c) c->Close(Status(Code::kInvalidArgument, "a worker must start with Hello"));
          return;
        }
        auto it = workers_by_id_.find(Hex(msg.hello().id()));
        if (it == workers_by_id_.end() || msg.hello().token().size() != worker_secret_.size() ||
            CRYPTO_memcmp(msg.hello().token().data(), worker_secret_.data(), worker_secret_.size()) != 0) {
          c->Close(Status(Code::kPermissionDenied, "unknown worker"));
          return;
        }
        Worker* w = it->second;
        *attached = w;
        w->handle = attached;
        startup_failures_ = 0;
        w->conn = c;
        c->MarkHandshakeDone();
        const proto::Hello& h = msg.hello();
        std::set<std::string> functions(info_.task_functions().begin(), info_.task_functions().end());
        size_t known = functions.size();
        functions.insert(h.task_functions().begin(), h.task_functions().end());
        if (info_.python_version() != h.python_version() ||
            info_.cloudpickle_version() != h.cloudpickle_version() || functions.size() != known) {
          info_.set_python_version(h.python_version());
          info_.set_cloudpickle_version(h.cloudpickle_version());
          info_.clear_task_functions();
          for (const auto& f : functions) info_.add_task_functions(f);
          proto::AgentToHead update;
          *update.mutable_update() = info_;
          SendToHead(update);
        }
        proto::AgentToWorker welcome;
        welcome.mutable_welcome()->set_protocol_version(kProtocolVersion);
        c->Send(welcome);
        MaybeReady();
        TryStart();
      },
      [this, attached, alive = alive_](const Status&) {
        if (!*alive || !*attached) return;
        // The process exit (reaped via SIGCHLD) does the accounting; make sure it comes.
        processes_->KillGroup((*attached)->pid, SIGKILL);
      });
}

void Agent::OnWorkerMessage(Worker* w, std::string_view bytes) {
  proto::WorkerToAgent msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    w->conn->Close(Status(Code::kInvalidArgument, "malformed message from worker"));
    return;
  }
  switch (msg.msg_case()) {
    case proto::WorkerToAgent::kFinished: FinishOnWorker(w, std::move(*msg.mutable_finished())); break;
    case proto::WorkerToAgent::kActorReady: {
      if (!w->busy || msg.actor_ready().actor_id() != w->actor_id || msg.actor_ready().attempt() != w->attempt) break;
      w->actor_ready = true;
      proto::AgentToHead fwd;
      *fwd.mutable_actor_ready() = msg.actor_ready();
      fwd.mutable_actor_ready()->set_pid(w->pid);
      fwd.mutable_actor_ready()->set_node_id(options_.node_id);
      SendToHead(fwd);
      break;
    }
    case proto::WorkerToAgent::kItem: {
      const proto::GeneratorItem& item = msg.item();
      // Only for what this worker runs: its task, or one of its actor's calls.
      if (!(w->busy && item.task_id() == w->task_id) && !w->actor_calls.contains(item.task_id())) break;
      proto::AgentToHead fwd;
      proto::LogLine* l = fwd.mutable_log();
      l->set_task_id(item.task_id());
      l->set_task_name(w->task_name);
      l->set_pid(w->pid);
      l->set_item_id(item.object_id());
      l->set_item_index(item.index());
      SendToHead(fwd);
      break;
    }
    case proto::WorkerToAgent::kChannelClosed: {
      // Its caller's calls there that the worker never read are handed back through the head.
      uint64_t n = msg.channel_closed();
      if (!w->result_channels.erase(n)) break;
      CloseCallers(Status(Code::kAborted, "the actor's worker closed the call channel"),
                   [&](const Caller& c) { return c.result_channel == n; });
      break;
    }
    case proto::WorkerToAgent::kBlocked: {
      const proto::Blocked& b = msg.blocked();
      if (!w->busy || b.task_id() != w->task_id || b.blocked() == w->blocked) break;
      w->blocked = b.blocked();
      cpus_free_ += w->blocked ? w->cpus : -w->cpus;
      proto::AgentToHead fwd;
      *fwd.mutable_blocked() = b;
      SendToHead(fwd);
      if (w->blocked) TryStart();
      break;
    }
    default: break;
  }
}

void Agent::ReleaseTask(Worker* w) {
  if (!w->blocked) cpus_free_ += w->cpus;
  gpus_.Give(w->gpus, w->gpu_amount);
  w->gpu_amount = 0;
  w->busy = w->blocked = false;
  w->cpus = 0;
  w->gpus.clear();
  w->task_id.clear();
}

void Agent::FinishOnWorker(Worker* w, proto::TaskFinished&& finished) {
  if (auto call = w->actor_calls.find(finished.task_id());
      call != w->actor_calls.end() && call->second.attempt == finished.attempt()) {
    finished.set_node_id(options_.node_id);
    if (!call->second.channel) finished.set_delivered(false);  // (only a worker given a channel writes there)
    if (call->second.direct) {
      hop_trace::Mark(hop_trace::kAgentGotResult);
      finished.set_direct(true);
      if (finished.delivered()) {
        counters_["actor_results_by_worker"]++;  // the worker wrote it on the caller's result channel
      } else if (auto caller = call->second.caller.lock()) {  // the caller first: it waits for this
        proto::AgentToCaller result;
        *result.mutable_finished() = finished;
        hop_trace::Mark(hop_trace::kAgentWritesToCaller);
        caller->Send(result, net::Urgency::kSoon);
        finished.set_delivered(!caller->closed());  // (if it breaks later, the caller asks the head)
      }
    }
    w->actor_calls.erase(call);
    proto::AgentToHead msg;
    *msg.mutable_finished() = std::move(finished);
    SendToHead(msg);
    return;
  }
  if (finished.channel() != 0) return FinishChannelCall(w, std::move(finished));
  if (!w->busy || finished.task_id() != w->task_id) return;
  finished.set_node_id(options_.node_id);
  finished.set_delivered(false);
  if (!w->actor_id.empty()) {
    // The actor ended (its constructor raised, or it exited): its worker, with whatever state the
    // class left in the process, serves nothing else.
    w->retired = true;
    actor_workers_.erase(w->actor_id);
    processes_->KillGroup(w->pid, SIGKILL);
  }
  Nanos now = SystemClock().BootTimeNs();
  auto [d, fresh] = durations_.try_emplace(w->hash, now - w->started);
  if (!fresh) d->second = (d->second * 4 + (now - w->started)) / 5;
  ReleaseTask(w);
  if (w->next) {
    // The worker has already started the task sent ahead.
    std::optional<Pending> next = std::move(w->next);
    w->next.reset();
    cpus_free_ -= std::max(0.0, next->cpus);
    BeginTask(w, *next, now);
    w->seq = w->next_seq;
    if (w->next_cancelled) {
      w->cancelled = true;
      processes_->KillGroup(w->pid, SIGKILL);
    }
  }
  proto::AgentToHead msg;
  *msg.mutable_finished() = std::move(finished);
  SendToHead(msg);
  TryStart();
  CheckDrained();
}

void Agent::FinishChannelCall(Worker* w, proto::TaskFinished&& finished) {
  // A call its caller sent the worker itself on its call channel (decision 50): the worker claimed
  // it in the table; this report ends it there. Reports of calls it did not claim are dropped.
  if (!w->call_table || finished.attempt() != 0 || !w->call_table->Release(finished.task_id())) {
    counters_["channel_call_reports_dropped"]++;
    return;
  }
  counters_["actor_calls_on_channels"]++;
  finished.set_node_id(options_.node_id);
  finished.set_direct(true);
  if (finished.delivered()) {
    counters_["actor_results_by_worker"]++;
  } else {
    // The channel would have blocked or broke: sent on the caller's call connection, if it has one.
    Caller* caller = nullptr;
    for (const auto& [p, c] : callers_)
      if (c->result_channel == finished.channel() && c->actor_id == w->actor_id && !c->conn->closed()) caller = c.get();
    if (caller) {
      proto::AgentToCaller result;
      *result.mutable_finished() = finished;
      caller->conn->Send(result, net::Urgency::kSoon);
      finished.set_delivered(!caller->conn->closed());
    }
  }
  finished.clear_channel();
  proto::AgentToHead msg;
  *msg.mutable_finished() = std::move(finished);
  SendToHead(msg);
}

std::string Agent::WorkerLogPath(const Worker& w) const {
  return options_.state_dir + "/logs/worker-" + w.id + ".log";
}

void Agent::OnWorkerExit(pid_t pid, const std::string& reason) {
  auto it = workers_.find(pid);
  if (it == workers_.end()) return;
  std::unique_ptr<Worker> w = std::move(it->second);
  workers_.erase(it);
  workers_by_id_.erase(w->id);
  if (w->handle) *w->handle = nullptr;
  if (w->conn) w->conn->Close(Status(Code::kUnavailable, "worker exited"));
  if (stopped_) return;
  if (store_) counters_["object_partials_removed"] += store_->SweepPartial(pid);
  counters_["workers_exited"]++;
  {
    proto::AgentToHead gone;  // (its client session at the head ends with it)
    gone.set_worker_exited(pid);
    SendToHead(gone);
  }
  task_logs_.WorkerGone(pid);
  if (w->next) {
    if (w->next_cancelled) {
      ReportCancelled(w->next->task.spec().task_id(), w->next->task.spec().attempt());
    } else {
      queue_.push_front(std::move(*w->next));  // it never started: run it elsewhere here
    }
    w->next.reset();
  }
  if (w->busy && w->hand_back.empty() && !w->keep_running && lease_.granted() &&
      !lease_.Valid(SystemClock().BootTimeNs()))
    w->hand_back = fmt::format("node {} ({}) stopped it: its lease ran out", ShortHex(options_.node_id),
                               options_.hostname);  // the worker's watchdog stopped it
  if (w->busy) {
    counters_["workers_died_in_task"]++;
    proto::AgentToHead msg;
    proto::TaskFinished* f = msg.mutable_finished();
    f->set_task_id(w->task_id);
    f->set_attempt(w->attempt);
    f->set_node_id(options_.node_id);
    if (!w->out_of_memory.empty()) {
      f->mutable_result()->set_error(proto::OUT_OF_MEMORY);
      f->mutable_result()->set_message(w->out_of_memory);
    } else if (w->time_limited) {
      f->mutable_result()->set_error(proto::TASK_ERROR);
      f->mutable_result()->set_message(fmt::format("TimeLimitExceeded: {} ran past its time limit of {}s; its "
                                                   "worker (pid {}) was stopped",
                                                   w->task_name, w->time_limit_s, pid));
    } else if (!w->hand_back.empty()) {
      f->mutable_result()->set_error(proto::HANDED_BACK);
      f->mutable_result()->set_message(w->hand_back);
      counters_["attempts_handed_back"]++;
    } else if (w->cancelled) {
      f->mutable_result()->set_error(proto::CANCELLED);
      f->mutable_result()->set_message("stopped by cancel");
    } else {
      f->mutable_result()->set_error(proto::WORKER_DIED);
      f->mutable_result()->set_message(fmt::format("worker pid {} on node {} ({}) {} while {}", pid,
                                                   ShortHex(options_.node_id), options_.hostname, reason,
                                                   w->Doing()));
    }
    LOG_WARN("worker {} {} while {}", pid, reason, Printable(w->Doing()));
    ReleaseTask(w.get());
    SendToHead(msg);
  } else if (!w->conn) {
    std::string tail;
    for (const auto& l : w->last_stderr) tail += "\n    " + l;
    LOG_ERROR("worker {} {} before it connected; its last output:{}", pid, reason, tail.empty() ? " (none)" : tail);
    if (++startup_failures_ >= kMaxStartupFailures) FailQueued(broken_reason_ = fmt::format(
        "workers on node {} ({}) cannot start ({} in a row; the last {}). Check that '{}' can run "
        "`import corral` (see the agent's log and {}/logs){}",
        ShortHex(options_.node_id), options_.hostname, startup_failures_, reason, options_.python,
        options_.state_dir, tail.empty() ? "" : ". Its last output:" + tail));
    MaybeReady();  // it died before connecting: the node is up (and says why), waiting would hang
  }
  if (!w->actor_id.empty()) {
    if (auto a = actor_workers_.find(w->actor_id); a != actor_workers_.end() && a->second == w.get())
      actor_workers_.erase(a);
    // Calls in flight end with the worker, reported after its creation (the head then knows the actor
    // restarts or died): the head retries them on the restarted actor, or fails them.
    std::string why = !w->hand_back.empty()     ? w->hand_back
                      : !w->out_of_memory.empty() ? w->out_of_memory
                                                  : fmt::format("its worker (pid {}) on node {} ({}) {}", pid,
                                                                ShortHex(options_.node_id), options_.hostname, reason);
    // Calls that had reached the worker may have run (part of) their effect: a retry counts.
    for (const auto& [id, call] : w->actor_calls) {
      if (call.direct) Abandon(call.caller, id);  // its caller now waits for the head's word
      ReportEnded(id, call.attempt, proto::WORKER_DIED, why, call.direct);
    }
    // So did those it took from its callers' channels (they hand the rest back to the head).
    if (w->call_table)
      for (const auto& [id, seq] : w->call_table->TakeClaimed()) ReportEnded(id, 0, proto::WORKER_DIED, why, true);
    // Its callers ask the head for a route again (to its next incarnation, wherever that runs);
    // those with a call channel learn why first (their calls there died with it, read or not).
    proto::AgentToCaller died;
    died.set_worker_died(why);
    for (const auto& [p, c] : callers_)
      if (c->actor_id == w->actor_id && c->result_channel != 0 && w->result_channels.contains(c->result_channel))
        c->conn->Send(died);
    CloseCallers(Status(Code::kAborted, "the actor's worker exited"),
                 [&](const Caller& c) { return c.actor_id == w->actor_id; });
    w->actor_calls.clear();
  }
  // Keep the warm pool full.
  int plain = 0;
  for (auto& [p, other] : workers_)
    if (other->env_key.empty()) plain++;
  if (w->env_key.empty() && plain < options_.warm_workers && w->conn && !spawn_paused_) SpawnWorker("");
  TryStart();
  CheckDrained();
}

void Agent::OnWorkerLine(pid_t pid, bool is_stderr, std::string line, int64_t offset) {
  auto it = workers_.find(pid);
  if (it == workers_.end()) return;
  Worker* w = it->second.get();
  std::string marked;
  if (TaskLogs::ParseMarker(line, &marked)) {
    // Only a task this worker was given may be named (a task's output must not claim another's).
    if (marked == w->task_id || marked == w->output_task_id || (w->next && marked == w->next->task.spec().task_id()))
      w->stream_task[is_stderr] = std::move(marked);
    return;  // kept in the log file for people; not output
  }
  if (is_stderr) {
    w->last_stderr.push_back(line);
    if (w->last_stderr.size() > kStderrTail) w->last_stderr.pop_front();
  }
  // Whose line: the task its stream's last marker named; else (written to the file descriptor
  // directly) the current task, or once finished the last one (the pipe and the socket race).
  const std::string& task = w->stream_task[is_stderr].empty() ? w->output_task_id : w->stream_task[is_stderr];
  if (task.empty()) return;  // no task yet
  task_logs_.Append(task, pid, offset, static_cast<int64_t>(line.size()) + 1);
  proto::AgentToHead msg;
  proto::LogLine* l = msg.mutable_log();
  l->set_task_id(task);
  l->set_task_name(w->task_name);
  l->set_pid(pid);
  l->set_stderr(is_stderr);
  l->set_text(std::move(line));
  SendToHead(msg);
}

}  // namespace corral::agent
