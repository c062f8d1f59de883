#include "corral/agent/agent.h"

#include <openssl/crypto.h>
#include "corral/agent/agent_worker.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <unordered_set>

#include "corral/base/files.h"
#include "corral/base/hop_trace.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/base/signals.h"

namespace corral::agent {

namespace asio = boost::asio;


namespace {

// Tasks of a function whose runs take less than this on average may be sent to a busy worker ahead.
constexpr Nanos kPipelineBelow = Ms(2);

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
      memory_timer_(io),
      reconnect_timer_(io),
      lease_timer_(io),
      drain_timer_(io),
      spawn_retry_timer_(io) {
  cpus_total_ = cpus_free_ = options_.resources.Get(kCpu);
  int ngpus = static_cast<int>(options_.resources.Get(kGpu));
  std::vector<int> devices;
  for (int i = 0; i < ngpus; ++i)
    devices.push_back(i < static_cast<int>(options_.gpu_ids.size()) ? options_.gpu_ids[i] : i);
  gpus_ = GpuAllocator(devices);
  if (options_.warm_workers <= 0) options_.warm_workers = std::max(1, static_cast<int>(cpus_total_));
  if (options_.max_workers <= 0) options_.max_workers = std::max(16, 4 * static_cast<int>(cpus_total_));
  info_.set_node_id(options_.node_id);
  info_.set_hostname(options_.hostname);
  for (const auto& [k, u] : options_.resources.units()) (*info_.mutable_resources())[k] = options_.resources.Get(k);
  for (const auto& [k, v] : options_.labels) (*info_.mutable_labels())[k] = v;
  info_.set_interruptible_only(options_.interruptible_only);
  for (const GpuInfo& g : options_.gpu_devices) {
    proto::GpuDevice* d = info_.add_gpus();
    d->set_index(g.index);
    d->set_name(g.name);
    d->set_memory_bytes(static_cast<uint64_t>(g.memory_bytes));
    d->set_uuid(g.uuid);
  }
}

Agent::~Agent() { Stop(); }

Status Agent::Start() {
  if (options_.tls && !options_.connect) {
    identity_ = std::make_unique<NodeIdentity>(options_.state_dir, options_.tls);
    if (Status s = identity_->Load(); !s.ok()) return s;
  }
  // A directory the operator names gets a subdirectory of ours: its other files are never touched.
  auto ours = [&](const std::string& given) -> std::string {
    if (Status s = MakeDirs(given); !s.ok()) LOG_WARN("{}", s.ToString());
    return given + "/corral-" + Hex(options_.node_id).substr(0, 16);
  };
  std::string store_dir = options_.object_store_dir.empty()
                              ? objects::NodeStore::DefaultDir(options_.node_id, options_.state_dir)
                              : ours(options_.object_store_dir);
  auto store = objects::NodeStore::Open(store_dir, options_.node_id,
                                       options_.spill_dir.empty() ? options_.state_dir + "/spill" : ours(options_.spill_dir));
  if (!store) return store.error();
  store_ = std::move(*store);
  uint64_t capacity = options_.object_store_memory > 0 ? options_.object_store_memory
                                                       : objects::NodeStore::DefaultCapacity(store_->dir());
  // Freed values' pages kept for the next writers: an eighth of the store, at most 2 GiB.
  store_->SetPoolCapacity(std::min<uint64_t>(capacity / 8, 2ull << 30));
  info_.set_object_store_dir(store_->dir());
  info_.set_object_store_capacity(capacity);
  info_.set_spill_dir(store_->spill_dir());
  spill_thread_ = std::thread([this] { SpillLoop(); });
  transfer_ = std::make_unique<ObjectTransfer>(io_, store_->dir(), store_->spill_dir());
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
      io_, [this](pid_t pid, bool err, std::string line, int64_t at) { OnWorkerLine(pid, err, std::move(line), at); },
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
  for (int i = 0; i < options_.warm_workers && !spawn_paused_; ++i) SpawnWorker("");
  ConnectToHead();
  CheckMemory();
  return Status::Ok();
}

void Agent::Stop() {
  if (stopped_) return;
  stopped_ = true;
  *alive_ = false;
  heartbeat_timer_.cancel();
  memory_timer_.cancel();
  reconnect_timer_.cancel();
  drain_timer_.cancel();
  spawn_retry_timer_.cancel();
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
  if (call_listener_) call_listener_->Stop();
  if (call_socket_) {
    call_socket_->Stop();
    ::unlink(call_socket_->endpoint().unix_path.c_str());
  }
  for (auto& [c, caller] : callers_) caller->conn->Close(Status(Code::kUnavailable, "agent stopping"));  // (*alive_ is false: their handlers do nothing)
  for (auto& [pid, w] : workers_)
    if (w->conn) w->conn->Close(Status(Code::kUnavailable, "agent stopping"));
  if (transfer_) transfer_->Stop();
  if (spill_thread_.joinable()) {
    {
      std::lock_guard lock(spill_mu_);
      spill_stop_ = true;
    }
    spill_cv_.notify_all();
    spill_thread_.join();
  }
  if (store_) store_->RemoveAll();  // the head forgets this node's objects with it
}

// ---- memory ----

namespace {

// A process's own resident memory: RSS less its shared pages (the object store's mapped values and
// the libraries it shares with other processes are not its own).
int64_t PrivateResidentBytes(pid_t pid) {
  FILE* f = std::fopen(fmt::format("/proc/{}/statm", pid).c_str(), "r");
  if (!f) return 0;
  long long size = 0, resident = 0, shared = 0;
  int n = std::fscanf(f, "%lld %lld %lld", &size, &resident, &shared);
  std::fclose(f);
  return n == 3 ? (resident - shared) * sysconf(_SC_PAGE_SIZE) : 0;
}

// The private resident memory of `root` and of every process under it: what a task started (a
// DataLoader's workers, a multiprocessing pool) counts against its request too. Children are read
// from /proc/<pid>/task/<tid>/children.
int64_t TreeResidentBytes(pid_t root) {
  int64_t total = 0;
  std::vector<pid_t> todo{root};
  std::unordered_set<pid_t> seen;
  while (!todo.empty() && seen.size() < 4096) {
    pid_t pid = todo.back();
    todo.pop_back();
    if (!seen.insert(pid).second) continue;
    total += PrivateResidentBytes(pid);
    std::string threads = fmt::format("/proc/{}/task", pid);
    DIR* d = opendir(threads.c_str());
    if (!d) continue;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      FILE* f = std::fopen(fmt::format("{}/{}/children", threads, e->d_name).c_str(), "r");
      if (!f) continue;
      long long child = 0;
      while (std::fscanf(f, "%lld", &child) == 1) todo.push_back(static_cast<pid_t>(child));
      std::fclose(f);
    }
    closedir(d);
  }
  return total;
}

// (MemAvailable, MemTotal) in bytes, from /proc/meminfo; zeros if unreadable.
std::pair<int64_t, int64_t> MachineMemory() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return {0, 0};
  char line[256];
  int64_t available = 0, total = 0;
  while (std::fgets(line, sizeof line, f)) {
    long long kb = 0;
    if (std::sscanf(line, "MemTotal: %lld kB", &kb) == 1) total = kb * 1024;
    if (std::sscanf(line, "MemAvailable: %lld kB", &kb) == 1) available = kb * 1024;
  }
  std::fclose(f);
  return {available, total};
}

}  // namespace

void Agent::CheckMemory() {
  if (stopped_) return;
  Worker* newest = nullptr;
  bool stopping = false;  // a worker stopped for memory has not exited yet: its memory is not back
  for (auto& [pid, w] : workers_) {
    stopping |= !w->out_of_memory.empty();
    if (!w->busy || !w->out_of_memory.empty()) continue;
    if (!newest || w->started > newest->started) newest = w.get();
    if (w->memory_limit <= 0) continue;
    int64_t rss = TreeResidentBytes(pid);
    if (rss > w->memory_limit)
      StopForMemory(w.get(), fmt::format("{} {} used {} of memory on node {} ({}), over its request of {} (memory=); "
                                         "its worker (pid {}) and the processes it started were stopped",
                                         w->actor_id.empty() ? "task" : "actor", w->task_name, FormatBytes(static_cast<double>(rss)),
                                         ShortHex(options_.node_id), options_.hostname,
                                         FormatBytes(static_cast<double>(w->memory_limit)), pid));
  }
  auto [available, total] = MachineMemory();
  counters_["machine_memory_available_bytes"] = available;
  counters_["machine_memory_total_bytes"] = total;
  if (store_ && total > 0 && available < total / 10)  // before any task is stopped for memory
    if (uint64_t freed = store_->EmptyPool(); freed > 0) {
      counters_["object_pool_bytes_freed_low_memory"] += static_cast<int64_t>(freed);
      available += static_cast<int64_t>(freed);
    }
  if (newest && !stopping && total > 0 && available < total / 20)
    StopForMemory(newest, fmt::format("node {} ({}) ran low on memory ({} available of {}): its most recently started "
                                      "task, {}, was stopped (worker pid {}) so the machine does not swap itself "
                                      "to a halt",
                                      ShortHex(options_.node_id), options_.hostname,
                                      FormatBytes(static_cast<double>(available)),
                                      FormatBytes(static_cast<double>(total)), newest->task_name, newest->pid));
  memory_timer_.expires_after(std::chrono::milliseconds(250));
  memory_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) CheckMemory();
  });
}

void Agent::StopForMemory(Worker* w, std::string why) {
  LOG_WARN("{}", why);
  counters_["tasks_out_of_memory"]++;
  w->out_of_memory = std::move(why);
  processes_->KillGroup(w->pid, SIGKILL);  // with what the task started: their memory counted too
}

// ---- tasks ----

void Agent::OnExecute(proto::ExecuteTask&& task) {
  proto::TaskSpec* spec = task.mutable_spec();
  if (!spec->actor_id().empty() && !spec->has_actor()) return OnActorCall(std::move(task));
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
  p.gpus = res.contains(kGpu) ? res.at(kGpu) : 0;
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
    if (auto call = w->actor_calls.find(cancel.task_id());
        call != w->actor_calls.end() && call->second.attempt == cancel.attempt()) {
      // An actor's call: the worker marks it cancelled (an async call's coroutine is cancelled; a
      // sync one sees it in is_canceled()). The actor, and its other calls, run on.
      processes_->Interrupt(pid, call->second.seq, CallCancelSignal());
      counters_["actor_call_cancels_signalled"]++;
      return;
    }
    if (w->call_table && cancel.attempt() == 0) {  // one its caller sent the worker itself (decision 50)
      if (auto seq = w->call_table->Find(cancel.task_id())) {
        processes_->Interrupt(pid, *seq, CallCancelSignal());
        counters_["actor_call_cancels_signalled"]++;
        return;
      }
    }
    if (w->next && w->next->task.spec().task_id() == cancel.task_id()) {
      w->next_cancelled = true;  // stopped when it starts, right after the current task
      return;
    }
    if (w->busy && w->task_id == cancel.task_id() && w->attempt == cancel.attempt()) {
      // With a task sent ahead, the worker may already be past this one: an interrupt could hit
      // the wrong task, so stop the worker (the one sent ahead is re-queued when it exits).
      // An actor's creation runs no task code an interrupt could stop: its worker is stopped.
      if (cancel.force() || w->next || !w->actor_id.empty()) {
        w->cancelled = true;
        processes_->KillGroup(pid, SIGKILL);
      } else {
        processes_->Interrupt(pid, w->seq);  // KeyboardInterrupt in that task, whenever it starts; the worker lives on
      }
      return;
    }
  }
  // A call on its way to an actor's worker on a call channel, or waiting there unread (decision
  // 50): refused, so it never runs, and ended as cancelled here.
  if (cancel.attempt() == 0 && !ChannelWorkersOf(cancel.task_id()).empty() && !HeldOnChannel(cancel.task_id())) {
    RefuseFromNowOn(cancel.task_id(), 0);
    counters_["channel_calls_cancelled_unread"]++;
    ReportEnded(cancel.task_id(), 0, proto::CANCELLED, "cancelled before it started", /*direct=*/true);
  }
}

void Agent::OnActorCall(proto::ExecuteTask&& task, const std::shared_ptr<net::Connection>& caller) {
  const proto::TaskSpec& spec = task.spec();
  auto it = actor_workers_.find(spec.actor_id());
  Worker* w = it == actor_workers_.end() ? nullptr : it->second;
  if (!w || !w->conn || w->retired) {
    // It never started: handed back at no cost to its retries; the head sends it to the actor's next
    // incarnation, or fails it if the actor is dead (the report of that is on its way).
    if (caller) Abandon(caller, spec.task_id());
    ReportEnded(spec.task_id(), spec.attempt(), proto::HANDED_BACK,
                fmt::format("actor {} is not running on node {} ({})", Hex(spec.actor_id()),
                            ShortHex(options_.node_id), options_.hostname),
                caller != nullptr);
    return;
  }
  // A result channel only as its caller's own, handed to this worker (HandOverResults).
  bool channel = caller && task.result_channel() != 0 && w->result_channels.contains(task.result_channel());
  if (!channel) task.clear_result_channel();
  w->actor_calls[spec.task_id()] = {spec.attempt(), ++w->sent, caller != nullptr, channel, caller};
  proto::AgentToWorker msg;
  *msg.mutable_execute() = std::move(task);
  counters_["actor_calls_started"]++;
  hop_trace::Mark(hop_trace::kAgentWritesToWorker);
  w->conn->Send(msg);
}

void Agent::ReportEnded(const std::string& task_id, uint32_t attempt, proto::ErrorKind kind,
                        const std::string& message, bool direct) {
  proto::AgentToHead msg;
  proto::TaskFinished* f = msg.mutable_finished();
  f->set_task_id(task_id);
  f->set_attempt(attempt);
  f->set_direct(direct);
  f->set_node_id(options_.node_id);
  f->mutable_result()->set_error(kind);
  f->mutable_result()->set_message(message);
  SendToHead(msg);
}

void Agent::ReportCancelled(const std::string& task_id, uint32_t attempt) {
  ReportEnded(task_id, attempt, proto::CANCELLED, "cancelled before it started");
}

Agent::Worker* Agent::IdleWorker(const std::string& env_key) {
  for (auto& [pid, w] : workers_)
    if (w->conn && !w->busy && !w->retired && w->env_key == env_key) return w.get();
  return nullptr;
}

void Agent::TryStart() {
  std::map<std::string, int> starting;  // env key -> workers started but not yet connected
  for (auto& [pid, w] : workers_)
    if (!w->conn) starting[w->env_key]++;
  std::map<std::string, int> wanted;
  for (auto it = queue_.begin(); it != queue_.end();) {
    Pending& p = *it;
    bool cpu_ok = CpuFree(p);
    if (!cpu_ok) {
      if (Worker* busy = PipelineTarget(p)) {
        Pipeline(busy, std::move(p));
        it = queue_.erase(it);
      } else {
        ++it;
      }
      continue;
    }
    std::vector<int> gpus;
    std::optional<GpuAllocator> after;  // GPU work: taken only once a worker for that device set is at hand
    if (p.gpus > 0) {
      after = gpus_;
      std::optional<std::vector<int>> taken = after->Take(p.gpus);
      if (!taken) {
        ++it;
        continue;
      }
      gpus = std::move(*taken);
    }
    std::string key = EnvKey(gpus);
    Worker* w = IdleWorker(key);
    if (!w) {
      if (startup_failures_ >= kMaxStartupFailures || spawn_paused_) {
        ++it;
        continue;
      }
      if (++wanted[key] > starting[key]) {
        // Workers waiting in get() do not count against the cap: otherwise tasks nested deeper
        // than the cap would wait for workers that wait for them.
        int active = 0;
        for (auto& [pid, other] : workers_) active += !other->blocked && other->actor_id.empty();  // actors: their own
        if (active >= options_.max_workers) {
          // Make room by retiring an idle worker started for another GPU set.
          for (auto& [pid, other] : workers_)
            if (other->conn && !other->busy && other->env_key != key) {
              processes_->KillGroup(pid, SIGKILL);
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
    if (after) gpus_ = std::move(*after);
    w->gpus = std::move(gpus);
    w->gpu_amount = p.gpus;
    SendTask(w, std::move(p), /*pipelined=*/false);
    it = queue_.erase(it);
  }
}

Agent::Worker* Agent::PipelineTarget(const Pending& p) {
  // A task submitted from inside a task may be what that task waits for: never queue it behind a
  // running task, or the wait could never end.
  // Nor a task that keeps running through a partition: stopping the one ahead of it would stop it too.
  // Nor a gang's member behind another (they may wait for each other), nor GPU work.
  if (p.gpus > 0 || p.task.spec().nested() || p.task.spec().keep_running_on_partition() || p.task.spec().has_actor() ||
      !p.task.spec().gang_id().empty())
    return nullptr;
  const std::string& hash = p.task.spec().function_hash();
  auto d = durations_.find(hash);
  if (d == durations_.end() || d->second >= kPipelineBelow) return nullptr;
  for (auto& [pid, w] : workers_)
    if (w->conn && w->busy && !w->blocked && !w->next && !w->keep_running && w->actor_id.empty() && w->hash == hash &&
        w->env_key.empty())
      return w.get();
  return nullptr;
}

void Agent::Pipeline(Worker* w, Pending&& p) {
  w->next = Pending{p.task, p.cpus, p.gpus};  // kept to re-queue it if the worker dies first
  w->next_cancelled = false;
  counters_["tasks_pipelined"]++;
  SendTask(w, std::move(p), /*pipelined=*/true);
}

void Agent::BeginTask(Worker* w, const Pending& p, Nanos now) {
  const proto::TaskSpec& spec = p.task.spec();
  w->busy = true;
  w->blocked = w->cancelled = false;
  w->hand_back.clear();
  w->keep_running = spec.keep_running_on_partition();
  w->time_limit_s = spec.time_limit_s();
  w->time_limited = false;
  w->task_id = w->output_task_id = spec.task_id();
  w->task_name = spec.name();
  w->attempt = spec.attempt();
  task_logs_.Begin(spec.task_id(), w->pid);
  w->hash = spec.function_hash();
  w->cpus = std::max(0.0, p.cpus);
  w->started = now;
  w->hard_deadline = w->time_limit_s > 0 ? now + static_cast<Nanos>(w->time_limit_s * 1e9) : 0;
  auto memory = spec.resources().find(kMemory);
  w->memory_limit = memory == spec.resources().end() ? 0 : static_cast<int64_t>(memory->second);
  w->out_of_memory.clear();
}

void Agent::SendTask(Worker* w, Pending&& p, bool pipelined) {
  if (!pipelined) BeginTask(w, p, SystemClock().BootTimeNs());
  (pipelined ? w->next_seq : w->seq) = ++w->sent;
  proto::AgentToWorker msg;
  proto::ExecuteTask* ex = msg.mutable_execute();
  *ex = std::move(p.task);
  for (int g : w->gpus) ex->add_gpu_ids(g);
  for (auto& h : w->forget) ex->add_forget_functions(std::move(h));
  w->forget.clear();
  if (ex->spec().has_actor()) {  // the worker is the actor's from now on
    w->actor_id = ex->spec().actor_id();
    actor_workers_[w->actor_id] = w;
  }
  const std::string& hash = ex->spec().function_hash();
  if (w->functions.insert(hash).second) {
    auto f = functions_.find(hash);
    if (f != functions_.end()) ex->mutable_spec()->set_function(f->second);
    counters_["functions_shipped_to_workers"]++;
  }
  counters_["tasks_started"]++;
  w->conn->Send(msg);
}

void Agent::FailQueued(const std::string& why, bool only_startable) {
  LOG_ERROR("{}", why);
  std::deque<Pending> kept;
  for (Pending& p : queue_) {
    if (only_startable && !CpuFree(p)) {
      kept.push_back(std::move(p));  // waits for a CPU, not for a new worker
      continue;
    }
    proto::AgentToHead msg;
    proto::TaskFinished* f = msg.mutable_finished();
    f->set_task_id(p.task.spec().task_id());
    f->set_attempt(p.task.spec().attempt());
    f->set_node_id(options_.node_id);
    f->mutable_result()->set_error(proto::RUNTIME);
    f->mutable_result()->set_message(why);
    SendToHead(msg);
  }
  queue_ = std::move(kept);
}

}  // namespace corral::agent
