#include "corral/head/durable_queue.h"
#include "corral/head/reply_error.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <future>
#include <optional>
#include <random>
#include <unordered_set>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/net/frame.h"

namespace corral::head {

namespace {

constexpr size_t kMaxProgressBytes = 1 << 20;  // a state's meta: progress, not results
constexpr size_t kListedArgsBytes = 4096;       // a listed task shows arguments up to this size

constexpr uint32_t kWorkerLossRetries = 100;  // a durable task survives lost workers and nodes

}  // namespace

DurableQueue::DurableQueue(boost::asio::io_context& io, TaskManager& tasks, NodeRegistry& nodes,
                           std::unique_ptr<store::Store> store, const Clock& clock, Options options)
    : tasks_(tasks),
      nodes_(nodes),
      clock_(clock),
      committer_(std::make_unique<store::GroupCommitter>(std::move(store))),
      result_ttl_ns_(options.result_ttl_s * 1'000'000'000),
      strict_task_names_(options.strict_task_names),
      queues_(io, nodes, clock, *committer_, [this](const std::string& id) { return Launch(id); }),
      schedules_(io, *committer_, clock,
                 {.validate = [this](const std::string& fn) { return ValidateFunction(fn); },
                  .fired =
                      [this](store::DurableTask t) {
                        std::string id = t.id;
                        due_.emplace(0, id);
                        active_[id] = Active{.task = std::move(t)};
                        Tick();
                      },
                  .live_state = [this](const std::string& id) -> std::optional<std::string> {
                    auto a = active_.find(id);
                    if (a == active_.end()) return std::nullopt;
                    return a->second.running ? "STARTED" : store::TaskStateName(a->second.task.state);
                  }}),
      canvas_(io, *committer_,
              {.held = [this](const std::string& id) { return active_.contains(id); },
               .due =
                   [this](const std::string& child) {
                     due_.emplace(active_.at(child).task.eta_ns, child);
                     guard_.Post([this] { Tick(); });
                   },
               .end =
                   [this](const std::string& child, store::TaskState state, std::string why, std::string exception) {
                     Record({child, state, active_.at(child).task.attempt, 0, std::move(exception), std::move(why),
                             clock_.WallNs()});
                   }}),
      guard_(io) {
  tasks_.on_durable_finished = [this](const std::string& run_id, const proto::ObjectValue& value) {
    OnRunFinished(run_id, value);
  };
  tasks_.on_durable_rerun = [this](const std::string& run_id) {
    auto it = active_.find(run_id.substr(0, run_id.rfind('#')));
    if (it == active_.end()) return;
    it->second.task.runs++;
    it->second.progress_state.clear();  // the lost run's state is not the new run's
    it->second.progress_meta.clear();
    it->second.progress_format.clear();
    counters_["durable_reexecutions"]++;
  };
  tasks_.on_durable_adopted = [this](const std::string& run_id) {
    // Launch counted a run, but the agent's held run goes on: it is the one counted before.
    auto it = active_.find(run_id.substr(0, run_id.rfind('#')));
    if (it == active_.end() || !it->second.running) return;
    it->second.task.runs = std::max(0, it->second.task.runs - 1);
    it->second.restarted = false;
  };
  tasks_.on_orphan_held = [this](const std::string& run_id) {
    // An agent holds this run from before the restart: launch it now (it is running), not when its
    // queue's priority and limits would. Deferred: we are inside the TaskManager's reconcile.
    size_t hash = run_id.rfind('#');
    if (hash == std::string::npos) return;
    guard_.Post([this, id = run_id.substr(0, hash), attempt = std::atoi(run_id.c_str() + hash + 1)] {
      auto it = active_.find(id);
      if (it == active_.end() || it->second.running || !it->second.loaded || canvas_.Waiting(id)) return;
      // Only the run the store expects now (not an older attempt whose retry waits for its time).
      if (it->second.task.attempt != attempt || it->second.task.eta_ns > clock_.WallNs()) return;
      Unready(it->second);
      counters_["durable_runs_adopted"]++;
      Launch(id);
    });
  };
}

DurableQueue::~DurableQueue() {
  tasks_.on_durable_finished = nullptr;
  tasks_.on_orphan_held = nullptr;
  tasks_.on_durable_rerun = nullptr;
  tasks_.on_durable_adopted = nullptr;
  committer_.reset();  // joins its thread while every member its callbacks reach is still alive
}

bool DurableQueue::LiveRegistered(const std::string& function) const {
  for (Node* n : nodes_.All())
    if (n->state != NodeState::kDead && n->state != NodeState::kLeft && n->view.task_functions.contains(function))
      return true;
  return false;
}

bool DurableQueue::Registered(const std::string& function) {
  if (known_functions_.contains(function)) return true;
  for (Node* n : nodes_.All())
    if (n->state != NodeState::kDead && n->state != NodeState::kLeft && n->view.task_functions.contains(function)) {
      known_functions_.insert(function);
      return true;
    }
  return false;
}

Status DurableQueue::Start() {
  // Read before the head serves anyone (the io thread is not running yet): a submission right
  // after a restart must already see the names and tasks the store holds.
  std::promise<void> loaded_all;
  std::optional<Result<std::vector<std::string>>> known;
  std::optional<Result<std::vector<store::Schedule>>> schedules;
  std::optional<Result<std::vector<store::DurableTask>>> loaded;
  std::optional<Result<std::vector<store::QueueConfig>>> queues;
  committer_->Run([&](store::Store& s) {
    known = s.KnownFunctions();
    queues = s.ListQueues();
    schedules = s.ListSchedules();
    loaded = s.Unfinished();
    loaded_all.set_value();
  });
  loaded_all.get_future().wait();
  if (!*known) return known->error();
  if (!*schedules) return schedules->error();
  if (!*loaded) return loaded->error();
  if (!*queues) return queues->error();
  queues_.Load(std::move(**queues));
  known_functions_.insert((*known)->begin(), (*known)->end());
  schedules_.Load(std::move(**schedules));
  for (auto& t : **loaded) {
    std::string id = t.id;
    if (t.parents.empty()) due_.emplace(t.eta_ns, id);
    active_[id] = Active{.task = std::move(t), .loaded = true};  // id copied first: t is moved
  }
  for (auto& [id, a] : active_)
    if (!a.task.parents.empty()) canvas_.Link(a.task);
  counters_["durable_tasks_loaded"] += static_cast<int64_t>((*loaded)->size());
  if (!(*loaded)->empty()) LOG_INFO("{} unfinished durable task(s) loaded from the store", (*loaded)->size());
  return Status::Ok();
}

void DurableQueue::Submit(const proto::DurableSubmit& request, Reply reply) {
  auto refuse = [&](std::string why) {
    counters_["durable_submissions_refused"]++;
    proto::Reply r;
    r.set_error(std::move(why));
    reply(std::move(r));
  };
  if (request.tasks().empty()) return refuse("nothing to submit");
  auto batch = std::make_shared<std::vector<store::DurableTask>>();
  int64_t now = clock_.WallNs();
  std::unordered_set<std::string> in_batch, seen;
  for (const auto& spec : request.tasks()) in_batch.insert(spec.id());
  for (const auto& spec : request.tasks()) {
    if (spec.id().empty() || spec.id().size() > 128) return refuse("a durable task needs an id of 1 to 128 bytes");
    std::string fn = spec.function();
    if (fn.find(':') == std::string::npos && fn.rfind('.') != std::string::npos)
      fn[fn.rfind('.')] = ':';  // Celery's dotted names ("tasks.process_data") from any submitter
    if (Status s = ValidateFunction(fn); !s.ok()) return refuse(s.message());
    std::string format = spec.args_format().empty() ? "pickle" : spec.args_format();
    if (format != "pickle" && format != "json")
      return refuse(fmt::format("args_format '{}' is not 'pickle' or 'json'", spec.args_format()));
    std::string queue = spec.queue().empty() ? "default" : spec.queue();
    if (!QueueDispatcher::ValidName(queue, 64))
      return refuse(fmt::format("queue name '{}' must be 1-64 letters, digits, '_', '-' or '.'", queue));
    if (spec.args().size() + 4096 > net::kDefaultMaxFrameBytes)
      return refuse(fmt::format("the arguments of {} are {} bytes, over the {}-byte limit", fn, spec.args().size(),
                                net::kDefaultMaxFrameBytes - 4096));
    if (spec.max_retries() < -1 || !(spec.retry_backoff_s() >= 0) || spec.retry_backoff_s() > 86400)
      return refuse("max_retries must be >= 0 (or -1: as the task asks) and retry_backoff between 0 and 86400 "
                    "seconds");
    store::DurableTask t;
    t.id = spec.id();
    t.function = fn;
    t.args = spec.args();
    t.args_format = format;
    t.queue = queue;
    t.priority = spec.priority();
    t.idempotency_key = spec.idempotency_key();
    t.eta_ns = spec.eta_ns();
    t.expires_ns = spec.expires_ns();
    t.max_retries = spec.max_retries();
    t.retry_backoff_s = spec.retry_backoff_s();
    if (!(spec.soft_time_limit_s() >= 0) || !(spec.time_limit_s() >= 0) || spec.time_limit_s() > 1e7 ||
        spec.soft_time_limit_s() > 1e7)
      return refuse("time limits must be between 0 and 10,000,000 seconds");
    t.soft_time_limit_s = spec.soft_time_limit_s();
    t.time_limit_s = spec.time_limit_s();
    const std::string& link = spec.link();
    if (link != "" && link != "chain" && link != "chord" && link != "after")
      return refuse(fmt::format("link '{}' must be chain, chord or after", link));
    if (!link.empty() && spec.parents().empty()) return refuse(fmt::format("link '{}' needs parents", link));
    if (link.empty() && !spec.parents().empty())
      return refuse("a task with parents needs a link: chain, chord or after");
    if (link == "chain" && spec.parents_size() != 1)
      return refuse(fmt::format("a chain step has exactly one parent, not {}", spec.parents_size()));
    if (spec.parents_size() > 10000) return refuse("a task can wait for at most 10,000 parents");
    for (const auto& p : spec.parents()) {
      if (p.empty() || p.size() > 128 || p == spec.id())
        return refuse("a parent id is empty, longer than 128 bytes, or the task itself");
      if (in_batch.contains(p) && !seen.contains(p))  // a parent in this submission comes first: no cycles
        return refuse(fmt::format("parent {} comes after its child {} in the submission", p, spec.id()));
    }
    seen.insert(spec.id());
    if (spec.priority() < -1'000'000 || spec.priority() > 1'000'000)
      return refuse("priority must be between -1,000,000 and 1,000,000");
    t.parents.assign(spec.parents().begin(), spec.parents().end());
    t.link = link;
    t.created_ns = t.updated_ns = now;
    batch->push_back(std::move(t));
  }
  // Captures move on to the io thread: the reply (holding a connection) must die there.
  committer_->Submit(*batch, [this, batch, reply](Result<std::vector<store::SubmitResult>> r) mutable {
    guard_.Post([this, batch = std::move(batch), reply = std::move(reply), r = std::move(r)] {
      proto::Reply out;
      if (!r) {
        SetError(out, StoreFailed(r.error()));
        reply(std::move(out));
        return;
      }
      std::vector<std::string> linked;
      for (size_t i = 0; i < r->size(); ++i) {
        const auto& res = (*r)[i];
        out.add_submitted_ids(res.id);
        out.add_inserted(res.inserted);
        if (!res.inserted) {
          counters_["durable_duplicates"]++;
          continue;
        }
        store::DurableTask& t = (*batch)[i];
        std::string id = t.id;  // (the right side of `=` is evaluated first, moving t)
        if (t.parents.empty()) due_.emplace(t.eta_ns, id);
        else linked.push_back(id);
        active_[id] = Active{.task = std::move(t)};
        counters_["durable_submitted"]++;
      }
      for (const auto& id : linked) canvas_.Link(active_.at(id).task);  // after the whole batch: parents may be in it
      reply(std::move(out));
      Tick();
    });
  });
}

bool DurableQueue::Launch(const std::string& id) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second.running || store::IsFinal(it->second.task.state)) return false;
  Active& a = it->second;
  a.ready_seq = 0;
  // Expired while it waited for a slot; a run an agent holds from before a restart runs already.
  if (!(a.loaded && a.task.state == store::TaskState::kStarted) && Expired(a)) return false;
  const store::QueueConfig& queue = queues_.Config(a.task.queue);
  proto::TaskSpec spec;
  spec.set_task_id(fmt::format("{}#{}", id, a.task.attempt));
  spec.set_name(a.task.function);
  spec.set_queue(a.task.queue);
  spec.set_durable_function(a.task.function);
  spec.set_args(a.task.args);
  spec.set_args_format(a.task.args_format);
  spec.set_soft_time_limit_s(a.task.soft_time_limit_s);
  spec.set_time_limit_s(a.task.time_limit_s);
  (*spec.mutable_resources())[kCpu] = 1;
  for (const auto& [name, amount] : queue.resources) (*spec.mutable_resources())[name] = amount;
  for (const auto& [k, v] : queue.labels) (*spec.mutable_label_selector())[k] = v;
  spec.set_max_retries(kWorkerLossRetries);
  canvas_.FillParents(a.task, &spec);
  // Loaded STARTED: a run began before the head went down. An agent may still hold it (the
  // TaskManager waits for the grace to see, and on_durable_adopted says so); otherwise this is a
  // re-execution. A task that had not started (PENDING, RETRY) cannot be held: it runs at once.
  a.restarted = a.loaded && a.task.state == store::TaskState::kStarted;
  spec.set_resubmitted(a.restarted);
  a.loaded = false;
  a.running = true;
  a.task.runs++;
  // Stored, so a run lost together with the head is still counted (and seen as a re-execution).
  store::TaskUpdate started{.id = id, .state = store::TaskState::kStarted, .attempt = a.task.attempt, .eta_ns = 0,
                            .result = "", .error = a.task.error, .at_ns = clock_.WallNs(), .runs = a.task.runs};
  a.task.state = store::TaskState::kStarted;
  Write(std::move(started));
  queues_.Started(a.task.queue, a.task.function);
  counters_["durable_runs_started"]++;
  tasks_.SubmitDurable(std::move(spec));
  Changed(id);
  return true;
}

void DurableQueue::OnRunFinished(const std::string& run_id, const proto::ObjectValue& value) {
  std::string id = run_id.substr(0, run_id.rfind('#'));
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = it->second;
  if (a.running) queues_.Ended(a.task.queue, a.task.function, value.error() == proto::ERROR_NONE);
  a.running = false;
  a.progress_state.clear();
  a.progress_meta.clear();
  a.progress_format.clear();
  if (std::exchange(a.restarted, false)) counters_["durable_reexecutions"]++;
  int64_t now = clock_.WallNs();
  store::TaskUpdate u{id, store::TaskState::kFailure, a.task.attempt, 0, "", value.message(), now};
  switch (value.error()) {
    case proto::ERROR_NONE:
      u.state = store::TaskState::kSuccess;
      u.result = value.data();
      u.error.clear();
      break;
    case proto::CANCELLED: u.state = store::TaskState::kRevoked; break;
    case proto::TASK_ERROR_FINAL: u.result = value.data(); break;
    case proto::TASK_ERROR:
      u.result = value.data();  // the pickled exception: the task's own is raised where its result is read
      if (a.task.max_retries < 0 ? value.has_retry_in_s() && value.retry_in_s() >= 0
                                 : a.task.attempt < a.task.max_retries) {
        // Exponential backoff with jitter: backoff x 2^attempt x [0.5, 1.5).
        static thread_local std::mt19937_64 rng(std::random_device{}());
        double delay = value.has_retry_in_s() && value.retry_in_s() >= 0
                           ? value.retry_in_s()  // the task asked (Celery's self.retry(countdown=...))
                           : a.task.retry_backoff_s * std::pow(2.0, std::min(a.task.attempt, 30)) *
                                 std::uniform_real_distribution<double>(0.5, 1.5)(rng);
        // Backoff at most a day between tries; a countdown the task asked for, up to a year.
        delay = std::min(delay, value.has_retry_in_s() && value.retry_in_s() >= 0 ? 366 * 86400.0 : 86400.0);
        u.state = store::TaskState::kRetry;
        u.attempt = a.task.attempt + 1;
        u.eta_ns = now + static_cast<int64_t>(delay * 1e9);
        counters_["durable_retries"]++;
      }
      break;
    default: break;
  }
  // Deferred: we are inside the TaskManager's Finish.
  guard_.Post([this, u = std::move(u)]() mutable {
    Record(std::move(u));
    queues_.Dispatch();  // its slot is free
  });
}

void DurableQueue::Record(store::TaskUpdate u) {
  auto it = active_.find(u.id);
  if (it == active_.end()) return;
  store::DurableTask& t = it->second.task;
  if (store::IsFinal(t.state)) return;  // already ended (a cancel racing the run's end): first one wins
  if (it->second.revoke && !store::IsFinal(u.state)) {  // revoked while this retry was on the way
    u.state = store::TaskState::kRevoked;
    u.eta_ns = 0;
    u.error = "revoked";
  }
  t.state = u.state;
  t.attempt = u.attempt;
  u.runs = t.runs;
  t.result = u.result;
  t.error = u.error;
  t.updated_ns = u.at_ns;
  if (u.state == store::TaskState::kRetry) {
    t.eta_ns = u.eta_ns;
    due_.emplace(u.eta_ns, u.id);
    Changed(u.id);
  }
  if (store::IsFinal(u.state)) t.finished_ns = u.at_ns;
  Write(std::move(u));
}

void DurableQueue::Write(store::TaskUpdate u) {
  store::TaskUpdate copy = u;
  committer_->Update({std::move(u)}, [this, copy = std::move(copy)](Status s) mutable {
    guard_.Post([this, s, u = std::move(copy)]() mutable {
      if (!s.ok()) {
        // Not stored: keep the task here and write its state again (next tick).
        LOG_ERROR("cannot store the state of durable task {}: {}; trying again", Hex(u.id), s.ToString());
        counters_["durable_store_errors"]++;
        failed_updates_.push_back(std::move(u));
        return;
      }
      auto it = active_.find(u.id);
      if (it == active_.end() || !store::IsFinal(u.state)) return;
      counters_[fmt::format("durable_{}", store::TaskStateName(it->second.task.state))]++;
      proto::DurableTaskInfo info = Info(it->second.task);
      Answer(u.id, info);
      Remember(std::move(info));
      store::DurableTask ended = std::move(it->second.task);
      active_.erase(it);
      canvas_.Forget(ended.id);
      canvas_.ParentEnded(ended);
    });
  });
}

proto::DurableTaskInfo DurableQueue::LiveInfo(const Active& a) {
  proto::DurableTaskInfo info = Info(a.task);
  if (a.running) info.set_state("STARTED");
  if (a.running && !a.progress_state.empty()) {
    info.set_state(a.progress_state);
    info.set_result(a.progress_meta);
    info.set_result_format(a.progress_format);
  }
  info.set_note(WaitNote(a));
  info.set_changes(a.changes);
  return info;
}

proto::DurableTaskInfo DurableQueue::Info(const store::DurableTask& t) const {
  proto::DurableTaskInfo info;
  info.set_found(true);
  info.set_id(t.id);
  info.set_function(t.function);
  info.set_state(store::TaskStateName(t.state));
  info.set_attempt(t.attempt);
  info.set_runs(t.runs);
  if (t.state == store::TaskState::kSuccess || t.state == store::TaskState::kFailure ||
      t.state == store::TaskState::kRetry) {
    info.set_result(t.result);  // the value, or the pickled exception
    info.set_result_format(t.state == store::TaskState::kSuccess ? t.args_format : "pickle");
  }
  info.set_error(t.error);
  info.set_queue(t.queue);
  info.set_eta_ns(t.eta_ns);
  info.set_created_ns(t.created_ns);
  info.set_finished_ns(t.finished_ns);
  return info;
}

void DurableQueue::List(const proto::DurableList& request, bool with_args, Reply reply) {
  store::TaskFilter filter;
  if (!request.state().empty()) {
    filter.state = store::ParseTaskState(request.state());
    if (!filter.state) {
      proto::Reply r;
      r.set_error(fmt::format("unknown state '{}': use pending, started, retry, success, failure (failed) or revoked",
                              request.state()));
      return reply(std::move(r));
    }
  }
  filter.queue = request.queue();
  filter.after_id = request.after_id();
  filter.limit = request.limit() > 0 ? std::min(request.limit(), 10000) : 100;
  committer_->Run([this, filter, with_args, reply](store::Store& s) mutable {
    auto tasks = s.List(filter);
    guard_.Post([this, with_args, reply = std::move(reply), tasks = std::move(tasks)] {
      proto::Reply r;
      if (!tasks) {
        SetError(r, StoreFailed(tasks.error()));
      } else {
        for (const auto& t : *tasks) {
          proto::DurableTaskInfo* info = r.add_durable_list();
          // Fresher in memory than in the store for a task in flight.
          auto a = active_.find(t.id);
          *info = a == active_.end() ? Info(t) : LiveInfo(a->second);
          info->clear_result();
          // What `inspect().active()` shows: small JSON arguments, to those who may submit (a read
          // token sees none; pickled ones are never sent: the reader would have to unpickle them).
          if (with_args && t.args_format == "json" && t.args.size() <= kListedArgsBytes) {
            info->set_args(t.args);
            info->set_args_format(t.args_format);
          }
        }
      }
      reply(std::move(r));
    });
  });
}

void DurableQueue::Cancel(const proto::DurableGet& request, Reply reply) {
  auto it = active_.find(request.id());
  if (it == active_.end() || store::IsFinal(it->second.task.state))
    return Get(request, std::move(reply));  // finished (or unknown): as it is
  Active& a = it->second;
  a.revoke = true;
  counters_["durable_revoke_requests"]++;
  if (a.running) {
    proto::Cancel c;
    c.set_task_id(fmt::format("{}#{}", request.id(), a.task.attempt));
    c.set_force(true);
    ClientSession nobody;
    nobody.may_touch_any = true;  // the queue revokes its own runs
    tasks_.Cancel(&nobody, c);  // its end (CANCELLED) is recorded as REVOKED
  } else {
    Unready(a);
    Record({request.id(), store::TaskState::kRevoked, a.task.attempt, 0, "", "revoked before it started",
            clock_.WallNs()});
  }
  proto::DurableGet wait;
  wait.set_id(request.id());
  wait.set_wait_s(30);
  Get(wait, std::move(reply));  // answered once recorded
}

void DurableQueue::Progress(const proto::DurableProgress& request, const std::string& worker_node, Reply reply) {
  proto::Reply r;
  const std::string& run = request.run_id();
  std::string id = run.substr(0, run.rfind('#'));
  auto it = active_.find(id);
  const std::string& state = request.state();
  bool printable = std::all_of(state.begin(), state.end(), [](char c) { return c > ' ' && c < 127; });
  if (state.empty() || state.size() > 64 || !printable || state == "PENDING" || state == "SUCCESS" ||
      state == "FAILURE" || state == "REVOKED") {
    SetError(r, Status(Code::kInvalidArgument, fmt::format("a task's own state must be 1-64 printable characters "
                                                           "without spaces, and not PENDING, SUCCESS, FAILURE or "
                                                           "REVOKED (the task's end sets those), not '{}'",
                                                           Printable(state.substr(0, 64)))));
  } else if (request.meta().size() > kMaxProgressBytes) {
    SetError(r, Status(Code::kInvalidArgument, fmt::format("the meta of a task's state is {} bytes, over the "
                                                           "{}-byte limit",
                                                           request.meta().size(), kMaxProgressBytes)));
  } else if (request.meta_format() != "pickle" && request.meta_format() != "json") {
    SetError(r, Status(Code::kInvalidArgument, "meta_format must be 'pickle' or 'json'"));
  } else if (it == active_.end() || !it->second.running || run != fmt::format("{}#{}", id, it->second.task.attempt) ||
             (!worker_node.empty() && tasks_.NodeRunning(run) != worker_node)) {
    counters_["durable_progress_refused"]++;
    SetError(r, Status(Code::kFailedPrecondition,
                       fmt::format("run {} is not running{}: only the run itself sets its task's state",
                                   Printable(run), worker_node.empty() ? "" : " on this node")));
  } else {
    Active& a = it->second;
    a.progress_state = state;
    a.progress_meta = request.meta();
    a.progress_format = request.meta_format();
    counters_["durable_progress_updates"]++;
    *r.mutable_durable() = LiveInfo(a);
    Changed(id);
  }
  reply(std::move(r));
}

void DurableQueue::Purge() {
  if (purging_ || clock_.BootTimeNs() < next_purge_) return;
  purging_ = true;
  int64_t before = clock_.WallNs() - result_ttl_ns_;
  committer_->Run([this, before](store::Store& s) {
    auto n = s.PurgeFinished(before, 500);
    // A failed checkpoint only leaves the write-ahead log longer until the next batch tries again.
    if (n && *n > 0) (void)s.Checkpoint();
    guard_.Post([this, n] {
      purging_ = false;
      bool backlog = n && *n == 500;
      next_purge_ = clock_.BootTimeNs() + (backlog ? Ms(200) : Ms(5000));
      if (n) counters_["durable_purged"] += *n;
      else LOG_WARN("cannot remove old durable tasks: {}", n.error().ToString());
    });
  });
}

void DurableQueue::Tick() {
  schedules_.FireDue();
  Purge();
  if (int64_t wall = clock_.WallNs(); wall - queues_pruned_ns_ >= 60'000'000'000) {  // once a minute
    queues_pruned_ns_ = wall;
    std::unordered_set<std::string> in_use;
    for (const auto& [id, a] : active_) in_use.insert(a.task.queue);
    queues_.Prune(in_use);
    for (auto it = parked_.begin(); it != parked_.end();) {  // tasks revoked or expired while parked
      std::erase_if(it->second, [&](const std::string& id) {
        auto a = active_.find(id);
        return a == active_.end() || a->second.parked.empty();
      });
      it = it->second.empty() ? parked_.erase(it) : std::next(it);
    }
  }
  std::vector<store::TaskUpdate> again = std::move(failed_updates_);
  failed_updates_.clear();
  for (auto& u : again) {
    // A later change of the same task supersedes this one (its write carries the newer state).
    auto a = active_.find(u.id);
    if (a == active_.end() || a->second.task.state != u.state) continue;
    Write(std::move(u));
  }
  int64_t now = clock_.WallNs();
  while (!due_.empty() && due_.begin()->first <= now) {
    std::string id = due_.begin()->second;
    due_.erase(due_.begin());
    MakeReady(id);
  }
  Unpark();
  queues_.Dispatch();
  AnswerExpiredWaiters();
}

void DurableQueue::FillCounters(std::map<std::string, int64_t>* counters) const {
  for (const auto& [k, v] : counters_) (*counters)[k] = v;
  (*counters)["durable_unfinished"] = static_cast<int64_t>(active_.size());
  (*counters)["durable_commits"] = committer_->commits();
  queues_.FillCounters(counters);
  schedules_.FillCounters(counters);
}

std::vector<std::string> DurableQueue::WaitingForWorkers() const {
  std::vector<std::string> out;
  for (const auto& [fn, ids] : parked_)
    if (out.size() < 20 && !ids.empty()) out.push_back(fn);
  return out;
}

void DurableQueue::Schedule(const proto::ScheduleRequest& request, Reply reply) {
  schedules_.Handle(request, std::move(reply));
}

void DurableQueue::Queues(const proto::QueueRequest& request, Reply reply) {
  std::map<std::string, int64_t> waiting;  // unfinished, not ready, not running
  for (const auto& [id, a] : active_)
    if (!a.running && a.ready_seq == 0) waiting[a.task.queue]++;
  queues_.Handle(request, waiting, std::move(reply));
}

void DurableQueue::MakeReady(const std::string& id) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second.running || it->second.ready_seq != 0 || store::IsFinal(it->second.task.state))
    return;
  Active& a = it->second;
  if (a.task.eta_ns > clock_.WallNs()) return;  // a stale entry: the task has a later one (a retry)
  if (Expired(a)) return;
  if (!LiveRegistered(a.task.function)) {
    // Kept out of its queue until a node registers the name: any number of them never holds up
    // the tasks behind them (the queue looks only so deep for one that can run).
    if (a.parked.empty()) parked_[a.task.function].push_back(id);
    a.parked = a.task.function;
    return;
  }
  a.parked.clear();
  a.ready_seq = queues_.Add(a.task.queue, a.task.priority, id, a.task.function);
}

void DurableQueue::Unpark() {
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (!LiveRegistered(it->first)) {
      ++it;
      continue;
    }
    std::vector<std::string> ids = std::move(it->second);
    it = parked_.erase(it);
    for (const auto& id : ids)
      if (auto a = active_.find(id); a != active_.end() && !a->second.parked.empty()) {
        a->second.parked.clear();
        MakeReady(id);
      }
  }
}

void DurableQueue::Unready(Active& a) {
  if (a.ready_seq == 0) return;
  queues_.Remove(a.task.queue, a.task.priority, a.ready_seq);
  a.ready_seq = 0;
}

bool DurableQueue::Expired(Active& a) {
  int64_t now = clock_.WallNs();
  if (a.task.expires_ns == 0 || now < a.task.expires_ns) return false;
  counters_["durable_expired"]++;
  Record({a.task.id, store::TaskState::kRevoked, a.task.attempt, 0, "", "expired before it started", now});
  return true;
}

Status DurableQueue::ValidateFunction(const std::string& fn) {
  size_t colon = fn.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == fn.size())
    return MakeStatus(Code::kInvalidArgument, "function '{}' must be named 'module:qualname'", fn);
  if (strict_task_names_ && !Registered(fn))
    return MakeStatus(Code::kInvalidArgument,
                      "no worker registered the task function '{}': start agents with --tasks {} (the module "
                      "that defines it with @corral.task); this head refuses unknown names (--strict-task-names)",
                      fn, fn.substr(0, colon));
  return Status::Ok();
}

std::string DurableQueue::WaitNote(const Active& a) {
  if (a.running || store::IsFinal(a.task.state) || LiveRegistered(a.task.function)) return "";
  return fmt::format("waits for a worker that runs {}: no connected node registered it (start an agent with "
                     "--tasks {})",
                     a.task.function, a.task.function.substr(0, a.task.function.find(':')));
}

}  // namespace corral::head
