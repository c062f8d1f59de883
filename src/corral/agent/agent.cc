#include "corral/agent/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/base/version.h"

namespace corral::agent {

namespace asio = boost::asio;

struct Agent::Worker {
  std::string id;
  pid_t pid = -1;
  std::string env_key;                    // CUDA_VISIBLE_DEVICES it was started with
  std::shared_ptr<net::Connection> conn;  // null until it connects
  bool busy = false;
  bool blocked = false;
  bool cancelled = false;
  bool keep_running = false;              // the task runs on through a partition
  Nanos hard_deadline = 0;                // CLOCK_BOOTTIME after which the worker is stopped (time limit)
  double time_limit_s = 0;
  bool time_limited = false;              // stopped for its time limit
  std::string hand_back;                  // non-empty: stopped for this reason (drain, fencing); hand it back
  std::string task_id;
  std::string task_name;
  std::string owner;                      // of the current (or, once finished, the last) task
  uint32_t attempt = 0;
  double cpus = 0;
  std::vector<int> gpus;
  std::string hash;                       // function of the current task
  Nanos started = 0;
  // A short task sent ahead while the current one runs (pipelining): it starts the moment the
  // current one finishes, without a round trip through the agent.
  std::optional<Pending> next;
  bool next_cancelled = false;
  std::set<std::string> functions;
  std::deque<std::string> last_stderr;    // for the death report of a worker that never came up
  // Shared with the handlers of this worker's connection, which may run after the worker is gone:
  // cleared when it is.
  std::shared_ptr<Worker*> handle;
};

namespace {

constexpr size_t kStderrTail = 8;
constexpr int kMaxStartupFailures = 3;
// Tasks of a function whose runs take less than this on average may be sent to a busy worker ahead.
constexpr Nanos kPipelineBelow = Ms(2);
// Results held for the head while it is unreachable; beyond this they are handed back instead.
constexpr size_t kMaxOutboxBytes = 256u << 20;

std::string EnvKey(const std::vector<int>& gpus) {
  std::string key;
  for (int g : gpus) key += (key.empty() ? "" : ",") + std::to_string(g);
  return key;
}

}  // namespace

Agent::Agent(asio::io_context& io, AgentOptions options)
    : io_(io),
      options_(std::move(options)),
      heartbeat_timer_(io),
      reconnect_timer_(io),
      lease_timer_(io),
      drain_timer_(io) {
  cpus_total_ = cpus_free_ = options_.resources.Get(kCpu);
  int ngpus = static_cast<int>(options_.resources.Get(kGpu));
  for (int i = 0; i < ngpus; ++i)
    gpus_free_.insert(i < static_cast<int>(options_.gpu_ids.size()) ? options_.gpu_ids[i] : i);
  if (options_.warm_workers <= 0) options_.warm_workers = std::max(1, static_cast<int>(cpus_total_));
  if (options_.max_workers <= 0) options_.max_workers = std::max(16, 4 * static_cast<int>(cpus_total_));
  info_.set_node_id(options_.node_id);
  info_.set_hostname(options_.hostname);
  for (const auto& [k, u] : options_.resources.units()) (*info_.mutable_resources())[k] = options_.resources.Get(k);
  for (const auto& [k, v] : options_.labels) (*info_.mutable_labels())[k] = v;
  info_.set_interruptible_only(options_.interruptible_only);
}

Agent::~Agent() { Stop(); }

Status Agent::Start() {
  std::string sock = options_.state_dir + "/agent.sock";
  auto ep = net::ParseEndpoint("unix:" + sock);
  if (!ep) return ep.error();
  auto l = net::Listener::Listen(io_, *ep);
  if (!l) return l.error();
  worker_listener_ = std::move(*l);
  worker_listener_->Start([this](std::unique_ptr<net::ByteStream> s) { OnWorkerAccepted(std::move(s)); });
  // The lease, published for the workers' watchdogs (see worker_link.h); 0 until the first one.
  int fd = ::open((options_.state_dir + "/lease").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0 && ::ftruncate(fd, sizeof(int64_t)) == 0) {
    void* p = mmap(nullptr, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) lease_map_ = static_cast<int64_t*>(p);
  }
  if (fd >= 0) ::close(fd);
  if (!lease_map_)
    LOG_WARN("cannot publish the lease to workers ({}): they rely on the agent alone to stop them", std::strerror(errno));
  processes_ = std::make_unique<WorkerProcesses>(
      io_, [this](pid_t pid, bool err, std::string line) { OnWorkerLine(pid, err, std::move(line)); },
      [this](pid_t pid, std::string reason) { OnWorkerExit(pid, reason); });
  if (options_.drain_on_sleep) {
    auto inhibitor = SleepInhibitor::Start(
        io_,
        [this](std::chrono::milliseconds budget, SleepInhibitor::Done done) {
          if (!draining_) sleep_drain_ = true;
          Drain(budget, /*leave=*/false, "the machine is going to sleep", std::move(done));
        },
        [this] { Undrain("the machine woke up"); });
    if (!inhibitor) return inhibitor.error();
    sleep_inhibitor_ = std::move(*inhibitor);
  }
  for (int i = 0; i < options_.warm_workers; ++i) SpawnWorker("");
  ConnectToHead();
  return Status::Ok();
}

void Agent::Stop() {
  if (stopped_) return;
  stopped_ = true;
  *alive_ = false;
  heartbeat_timer_.cancel();
  reconnect_timer_.cancel();
  drain_timer_.cancel();
  lease_timer_.Cancel();
  sleep_inhibitor_.reset();  // lets the machine sleep without waiting for us
  if (lease_map_) munmap(lease_map_, sizeof(int64_t));
  lease_map_ = nullptr;
  if (processes_) processes_->KillAll(SIGKILL);
  if (worker_listener_) {
    worker_listener_->Stop();
    ::unlink((options_.state_dir + "/agent.sock").c_str());
  }
  if (head_) head_->Close(Status(Code::kUnavailable, "agent stopping"));
  for (auto& [pid, w] : workers_)
    if (w->conn) w->conn->Close(Status(Code::kUnavailable, "agent stopping"));
}

// ---- head link ----

void Agent::ConnectToHead() {
  auto dial = options_.connect ? options_.connect : [this](auto done) {
    net::Dial(io_, options_.head, nullptr, std::chrono::seconds(10), std::move(done));
  };
  dial([this, alive = alive_](Result<std::unique_ptr<net::ByteStream>> r) {
              if (!*alive) return;
              if (!r) {
                OnHeadLost(r.error());
                return;
              }
              head_ = net::Connection::Create(std::move(*r));
              head_->Start([this](std::string_view m) { OnHeadMessage(m); },
                           [this, alive](const Status& s) {
                             if (*alive) OnHeadLost(s);
                           });
              proto::AgentToHead hello;
              proto::Hello* h = hello.mutable_hello();
              h->set_protocol_version(kProtocolVersion);
              h->set_corral_version(CORRAL_VERSION);
              h->set_token(options_.token);
              h->set_role(proto::Hello::AGENT);
              h->set_name("agent on " + options_.hostname);
              h->set_id(options_.node_id);
              h->set_pid(getpid());
              *h->mutable_node() = info_;
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
                }
                if (w->next) hold(w->next->task.spec(), false);
              }
              for (const Pending& p : queue_) hold(p.task.spec(), false);
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

void Agent::OnHeadLost(const Status& reason) {
  head_.reset();
  registered_ = false;
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
      processes_->Kill(pid, SIGKILL);
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
      if (!session_id_.empty() && session_id_ != w.session_id())
        LOG_INFO("the head restarted (new session); reporting {} attempt end(s) held meanwhile", outbox_.size());
      session_id_ = w.session_id();
      // What ended while the head was away follows the Hello that listed it.
      std::deque<proto::AgentToHead> outbox = std::move(outbox_);
      outbox_.clear();
      outbox_bytes_ = 0;
      for (const auto& m : outbox) SendToHead(m);  // kept until acknowledged, like any other
      if (draining_) {
        proto::AgentToHead d;
        d.mutable_draining()->set_reason(drain_reason_);
        head_->Send(d);
        CheckDrained();
      }
      LOG_INFO("registered with the head at {} as node {}", options_.head.ToString(), ShortHex(options_.node_id));
      heartbeat_interval_ = std::chrono::milliseconds(std::max<uint64_t>(50, w.heartbeat_interval_ms()));
      Heartbeat();
      if (options_.on_registered) {
        auto callback = std::move(options_.on_registered);
        options_.on_registered = nullptr;
        callback();
      }
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
      break;
    case proto::HeadToAgent::kDrain:
      Drain(std::chrono::milliseconds(msg.drain().timeout_ms()), msg.drain().leave(), msg.drain().reason());
      break;
    default: break;
  }
}

void Agent::Heartbeat() {
  // Hard time limits, checked at the heartbeat's pace.
  Nanos boot = SystemClock().BootTimeNs();
  for (auto& [pid, w] : workers_)
    if (w->busy && w->hard_deadline > 0 && boot >= w->hard_deadline && !w->time_limited) {
      w->time_limited = true;
      counters_["tasks_time_limited"]++;
      LOG_WARN("{} ran past its time limit of {}s: stopping worker {}", w->task_name, w->time_limit_s, pid);
      processes_->Kill(pid, SIGKILL);
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
  for (const auto& [k, v] : counters_) (*msg.mutable_heartbeat()->mutable_counters()->mutable_values())[k] = v;
  lease_.Sent(heartbeat_seq_, SystemClock().BootTimeNs());
  head_->Send(msg);
  heartbeat_timer_.expires_after(heartbeat_interval_);
  heartbeat_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) Heartbeat();
  });
}

// ---- tasks ----

void Agent::OnExecute(proto::ExecuteTask&& task) {
  proto::TaskSpec* spec = task.mutable_spec();
  if (!spec->function().empty()) {
    functions_[spec->function_hash()] = std::move(*spec->mutable_function());
    spec->clear_function();
  }
  if (draining_) {
    HandBack(spec->task_id(), spec->attempt(), fmt::format("node {} is draining", ShortHex(options_.node_id)));
    return;
  }
  Pending p;
  auto res = spec->resources();
  p.cpus = res.contains(kCpu) ? res.at(kCpu) : 0;
  p.gpus = res.contains(kGpu) ? static_cast<int>(std::ceil(res.at(kGpu))) : 0;
  p.task = std::move(task);
  queue_.push_back(std::move(p));
  if (startup_failures_ >= kMaxStartupFailures) {
    FailQueued(broken_reason_);
    return;
  }
  TryStart();
}

void Agent::OnCancel(const proto::CancelAttempt& cancel) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->task.spec().task_id() == cancel.task_id() && it->task.spec().attempt() == cancel.attempt()) {
      queue_.erase(it);
      ReportCancelled(cancel.task_id(), cancel.attempt());
      return;
    }
  }
  for (auto& [pid, w] : workers_) {
    if (w->next && w->next->task.spec().task_id() == cancel.task_id()) {
      w->next_cancelled = true;  // stopped when it starts, right after the current task
      return;
    }
    if (w->busy && w->task_id == cancel.task_id() && w->attempt == cancel.attempt()) {
      // With a task sent ahead, the worker may already be past this one: an interrupt could hit
      // the wrong task, so stop the worker (the one sent ahead is re-queued when it exits).
      if (cancel.force() || w->next) {
        w->cancelled = true;
        processes_->Kill(pid, SIGKILL);
      } else {
        processes_->Kill(pid, SIGINT);  // KeyboardInterrupt in the task; the worker lives on
      }
      return;
    }
  }
}

void Agent::ReportCancelled(const std::string& task_id, uint32_t attempt) {
  proto::AgentToHead msg;
  proto::TaskFinished* f = msg.mutable_finished();
  f->set_task_id(task_id);
  f->set_attempt(attempt);
  f->set_node_id(options_.node_id);
  f->mutable_result()->set_error(proto::CANCELLED);
  f->mutable_result()->set_message("cancelled before it started");
  SendToHead(msg);
}

Agent::Worker* Agent::IdleWorker(const std::string& env_key) {
  for (auto& [pid, w] : workers_)
    if (w->conn && !w->busy && w->env_key == env_key) return w.get();
  return nullptr;
}

void Agent::TryStart() {
  std::map<std::string, int> starting;  // env key -> workers started but not yet connected
  for (auto& [pid, w] : workers_)
    if (!w->conn) starting[w->env_key]++;
  std::map<std::string, int> wanted;
  for (auto it = queue_.begin(); it != queue_.end();) {
    Pending& p = *it;
    bool cpu_ok = p.cpus <= 0 || p.cpus <= cpus_free_ + 1e-9;
    if (!cpu_ok) {
      if (Worker* busy = PipelineTarget(p)) {
        Pipeline(busy, std::move(p));
        it = queue_.erase(it);
      } else {
        ++it;
      }
      continue;
    }
    if (p.gpus > static_cast<int>(gpus_free_.size())) {
      ++it;
      continue;
    }
    std::vector<int> gpus(gpus_free_.begin(), std::next(gpus_free_.begin(), p.gpus));
    std::string key = EnvKey(gpus);
    Worker* w = IdleWorker(key);
    if (!w) {
      if (startup_failures_ >= kMaxStartupFailures) {
        ++it;
        continue;
      }
      if (++wanted[key] > starting[key]) {
        // Workers waiting in get() do not count against the cap: otherwise tasks nested deeper
        // than the cap would wait for workers that wait for them.
        int active = 0;
        for (auto& [pid, other] : workers_) active += !other->blocked;
        if (active >= options_.max_workers) {
          // Make room by retiring an idle worker started for another GPU set.
          for (auto& [pid, other] : workers_)
            if (other->conn && !other->busy && other->env_key != key) {
              processes_->Kill(pid, SIGKILL);
              break;
            }
        } else if (SpawnWorker(key)) {
          starting[key]++;
        }
      }
      ++it;
      continue;
    }
    cpus_free_ -= std::max(0.0, p.cpus);
    for (int g : gpus) gpus_free_.erase(g);
    w->gpus = gpus;
    SendTask(w, std::move(p), /*pipelined=*/false);
    it = queue_.erase(it);
  }
}

Agent::Worker* Agent::PipelineTarget(const Pending& p) {
  // A task submitted from inside a task may be what that task waits for: never queue it behind a
  // running task, or the wait could never end.
  // Nor a task that keeps running through a partition: stopping the one ahead of it would stop it too.
  if (p.gpus > 0 || p.task.spec().nested() || p.task.spec().keep_running_on_partition()) return nullptr;
  const std::string& hash = p.task.spec().function_hash();
  auto d = durations_.find(hash);
  if (d == durations_.end() || d->second >= kPipelineBelow) return nullptr;
  for (auto& [pid, w] : workers_)
    if (w->conn && w->busy && !w->blocked && !w->next && !w->keep_running && w->hash == hash && w->env_key.empty()) return w.get();
  return nullptr;
}

void Agent::Pipeline(Worker* w, Pending&& p) {
  w->next = Pending{p.task, p.cpus, p.gpus};  // kept to re-queue it if the worker dies first
  w->next_cancelled = false;
  counters_["tasks_pipelined"]++;
  SendTask(w, std::move(p), /*pipelined=*/true);
}

void Agent::SendTask(Worker* w, Pending&& p, bool pipelined) {
  if (!pipelined) {
    w->busy = true;
    w->blocked = w->cancelled = false;
    w->hand_back.clear();
    w->keep_running = p.task.spec().keep_running_on_partition();
    w->time_limit_s = p.task.spec().time_limit_s();
    w->time_limited = false;
    w->task_id = p.task.spec().task_id();
    w->task_name = p.task.spec().name();
    w->owner = p.task.spec().owner_id();
    w->attempt = p.task.spec().attempt();
    w->hash = p.task.spec().function_hash();
    w->cpus = std::max(0.0, p.cpus);
    w->started = SystemClock().BootTimeNs();
    w->hard_deadline = w->time_limit_s > 0 ? w->started + static_cast<Nanos>(w->time_limit_s * 1e9) : 0;
  }
  proto::AgentToWorker msg;
  proto::ExecuteTask* ex = msg.mutable_execute();
  *ex = std::move(p.task);
  for (int g : w->gpus) ex->add_gpu_ids(g);
  const std::string& hash = ex->spec().function_hash();
  if (w->functions.insert(hash).second) {
    auto f = functions_.find(hash);
    if (f != functions_.end()) ex->mutable_spec()->set_function(f->second);
    counters_["functions_shipped_to_workers"]++;
  }
  counters_["tasks_started"]++;
  w->conn->Send(msg);
}

void Agent::FailQueued(const std::string& why) {
  LOG_ERROR("{}", why);
  for (Pending& p : queue_) {
    proto::AgentToHead msg;
    proto::TaskFinished* f = msg.mutable_finished();
    f->set_task_id(p.task.spec().task_id());
    f->set_attempt(p.task.spec().attempt());
    f->set_node_id(options_.node_id);
    f->mutable_result()->set_error(proto::RUNTIME);
    f->mutable_result()->set_message(why);
    SendToHead(msg);
  }
  queue_.clear();
}

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
  spec.env["CORRAL_ADDRESS"] = options_.head.ToString();
  spec.env["CORRAL_TOKEN"] = options_.token;
  if (lease_map_) spec.env["CORRAL_LEASE_FILE"] = options_.state_dir + "/lease";
  if (!options_.task_modules.empty()) spec.env["CORRAL_TASK_MODULES"] = options_.task_modules;
  spec.env["CUDA_VISIBLE_DEVICES"] = env_key;
  for (const char* var : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"})
    spec.env[var] = "1";
  if (!options_.python_path.empty()) {
    const char* old = std::getenv("PYTHONPATH");
    spec.env["PYTHONPATH"] = options_.python_path + (old && *old ? std::string(":") + old : "");
  }
  spec.log_path = options_.state_dir + "/logs/worker-" + w->id + ".log";
  std::string error;
  pid_t pid = processes_->Spawn(spec, &error);
  if (pid < 0) {
    LOG_ERROR("cannot start a worker: {}", error);
    return nullptr;
  }
  w->pid = pid;
  counters_["workers_started"]++;
  Worker* raw = w.get();
  workers_by_id_[w->id] = raw;
  workers_[pid] = std::move(w);
  return raw;
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
        if (it == workers_by_id_.end() || msg.hello().token() != options_.token) {
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
        TryStart();
      },
      [this, attached, alive = alive_](const Status&) {
        if (!*alive || !*attached) return;
        // The process exit (reaped via SIGCHLD) does the accounting; make sure it comes.
        processes_->Kill((*attached)->pid, SIGKILL);
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
  for (int g : w->gpus) gpus_free_.insert(g);
  w->busy = w->blocked = false;
  w->cpus = 0;
  w->gpus.clear();
  w->task_id.clear();
}

void Agent::FinishOnWorker(Worker* w, proto::TaskFinished&& finished) {
  if (!w->busy || finished.task_id() != w->task_id) return;
  finished.set_node_id(options_.node_id);
  Nanos now = SystemClock().BootTimeNs();
  auto [d, fresh] = durations_.try_emplace(w->hash, now - w->started);
  if (!fresh) d->second = (d->second * 4 + (now - w->started)) / 5;
  ReleaseTask(w);
  if (w->next) {
    // The worker has already started the task sent ahead.
    std::optional<Pending> next = std::move(w->next);
    w->next.reset();
    cpus_free_ -= std::max(0.0, next->cpus);
    w->busy = true;
    w->cancelled = false;
    w->hand_back.clear();
    w->keep_running = next->task.spec().keep_running_on_partition();
    w->time_limit_s = next->task.spec().time_limit_s();
    w->time_limited = false;
    w->hard_deadline = w->time_limit_s > 0 ? now + static_cast<Nanos>(w->time_limit_s * 1e9) : 0;
    w->task_id = next->task.spec().task_id();
    w->task_name = next->task.spec().name();
    w->owner = next->task.spec().owner_id();
    w->attempt = next->task.spec().attempt();
    w->cpus = std::max(0.0, next->cpus);
    w->started = now;
    if (w->next_cancelled) {
      w->cancelled = true;
      processes_->Kill(w->pid, SIGKILL);
    }
  }
  proto::AgentToHead msg;
  *msg.mutable_finished() = std::move(finished);
  SendToHead(msg);
  TryStart();
  CheckDrained();
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
  counters_["workers_exited"]++;
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
    if (w->time_limited) {
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
      f->mutable_result()->set_message(fmt::format("worker pid {} on node {} ({}) {} while running {}", pid,
                                                   ShortHex(options_.node_id), options_.hostname, reason,
                                                   w->task_name));
    }
    LOG_WARN("worker {} {} while running {}", pid, reason, w->task_name);
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
  }
  // Keep the warm pool full.
  int plain = 0;
  for (auto& [p, other] : workers_)
    if (other->env_key.empty()) plain++;
  if (w->env_key.empty() && plain < options_.warm_workers && w->conn) SpawnWorker("");
  TryStart();
  CheckDrained();
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
        processes_->Kill(pid, SIGKILL);
      }
    }
  for (const Pending& p : queue_) HandBack(p.task.spec().task_id(), p.task.spec().attempt(), why);
  queue_.clear();
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
        processes_->Kill(pid, SIGKILL);
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

void Agent::OnWorkerLine(pid_t pid, bool is_stderr, std::string line) {
  auto it = workers_.find(pid);
  if (it == workers_.end()) return;
  Worker* w = it->second.get();
  if (is_stderr) {
    w->last_stderr.push_back(line);
    if (w->last_stderr.size() > kStderrTail) w->last_stderr.pop_front();
  }
  // Output read after the task finished still belongs to it (the pipe and the socket race).
  if (w->owner.empty()) return;
  proto::AgentToHead msg;
  proto::LogLine* l = msg.mutable_log();
  l->set_owner_id(w->owner);
  l->set_task_id(w->task_id);
  l->set_task_name(w->task_name);
  l->set_pid(pid);
  l->set_stderr(is_stderr);
  l->set_text(std::move(line));
  SendToHead(msg);
}

}  // namespace corral::agent
