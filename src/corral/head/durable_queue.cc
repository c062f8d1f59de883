#include "corral/head/durable_queue.h"

#include <boost/asio/post.hpp>

#include <cmath>
#include <random>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/net/frame.h"

namespace corral::head {

namespace {

constexpr uint32_t kWorkerLossRetries = 100;  // a durable task survives lost workers and nodes

bool ValidQueueName(const std::string& q) {
  if (q.empty() || q.size() > 64) return false;
  for (char c : q)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') return false;
  return true;
}

}  // namespace

DurableQueue::DurableQueue(boost::asio::io_context& io, TaskManager& tasks, NodeRegistry& nodes,
                           std::unique_ptr<store::Store> store, const Clock& clock)
    : io_(io), tasks_(tasks), nodes_(nodes), clock_(clock), committer_(std::move(store)) {
  tasks_.on_durable_finished = [this](const std::string& run_id, const proto::ObjectValue& value) {
    OnRunFinished(run_id, value);
  };
}

DurableQueue::~DurableQueue() {
  *alive_ = false;
  tasks_.on_durable_finished = nullptr;
}

template <typename F>
void DurableQueue::OnIo(F&& f) {
  boost::asio::post(io_, [alive = alive_, f = std::forward<F>(f)]() mutable {
    if (*alive) f();
  });
}

bool DurableQueue::Registered(const std::string& function) {
  for (Node* n : nodes_.All())
    if (n->state != NodeState::kDead && n->state != NodeState::kLeft && n->view.task_functions.contains(function))
      return true;
  return false;
}

void DurableQueue::Start() {
  committer_.Run([this](store::Store& s) {
    auto loaded = s.Unfinished();
    OnIo([this, loaded = std::move(loaded)]() mutable {
      if (!loaded) {
        LOG_ERROR("cannot load the durable tasks: {}", loaded.error().ToString());
        return;
      }
      for (auto& t : *loaded) {
        std::string id = t.id;
        due_.emplace(t.eta_ns, id);
        active_[id] = Active{std::move(t), false, true};  // id copied first: t is moved
      }
      counters_["durable_tasks_loaded"] += static_cast<int64_t>(loaded->size());
      if (!loaded->empty()) LOG_INFO("{} unfinished durable task(s) loaded from the store", loaded->size());
      Tick();
    });
  });
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
  for (const auto& spec : request.tasks()) {
    if (spec.id().empty()) return refuse("a durable task needs an id");
    const std::string& fn = spec.function();
    size_t colon = fn.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == fn.size())
      return refuse(fmt::format("function '{}' must be named 'module:qualname'", fn));
    if (!Registered(fn))
      return refuse(fmt::format("no worker registered the task function '{}': start agents with --tasks {} (the "
                                "module that defines it with @corral.task)",
                                fn, fn.substr(0, colon)));
    std::string format = spec.args_format().empty() ? "pickle" : spec.args_format();
    if (format != "pickle" && format != "json")
      return refuse(fmt::format("args_format '{}' is not 'pickle' or 'json'", spec.args_format()));
    std::string queue = spec.queue().empty() ? "default" : spec.queue();
    if (!ValidQueueName(queue))
      return refuse(fmt::format("queue name '{}' must be 1-64 letters, digits, '_', '-' or '.'", queue));
    if (spec.args().size() + 4096 > net::kDefaultMaxFrameBytes)
      return refuse(fmt::format("the arguments of {} are {} bytes, over the {}-byte limit", fn, spec.args().size(),
                                net::kDefaultMaxFrameBytes - 4096));
    if (spec.max_retries() < 0 || spec.retry_backoff_s() < 0)
      return refuse("max_retries and retry_backoff must not be negative");
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
    t.created_ns = t.updated_ns = now;
    batch->push_back(std::move(t));
  }
  committer_.Submit(*batch, [this, batch, reply](Result<std::vector<store::SubmitResult>> r) {
    OnIo([this, batch, reply, r = std::move(r)] {
      proto::Reply out;
      if (!r) {
        out.set_error("the durable store failed: " + r.error().message());
        reply(std::move(out));
        return;
      }
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
        due_.emplace(t.eta_ns, id);
        active_[id] = Active{std::move(t), false, false};
        counters_["durable_submitted"]++;
      }
      reply(std::move(out));
      Tick();
    });
  });
}

void DurableQueue::Launch(const std::string& id) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second.running || store::IsFinal(it->second.task.state)) return;
  Active& a = it->second;
  int64_t now = clock_.WallNs();
  if (a.task.expires_ns > 0 && now >= a.task.expires_ns) {
    counters_["durable_expired"]++;
    Record({id, store::TaskState::kRevoked, a.task.attempt, 0, "", "expired before it started", now});
    return;
  }
  proto::TaskSpec spec;
  spec.set_task_id(fmt::format("{}#{}", id, a.task.attempt));
  spec.set_name(a.task.function);
  spec.set_durable_function(a.task.function);
  spec.set_args(a.task.args);
  spec.set_args_format(a.task.args_format);
  (*spec.mutable_resources())[kCpu] = 1;
  spec.set_max_retries(kWorkerLossRetries);
  spec.set_resubmitted(a.loaded);  // an agent may still hold this run from before a restart
  a.loaded = false;
  a.running = true;
  counters_["durable_runs_started"]++;
  tasks_.SubmitDurable(std::move(spec));
}

void DurableQueue::OnRunFinished(const std::string& run_id, const proto::ObjectValue& value) {
  std::string id = run_id.substr(0, run_id.rfind('#'));
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = it->second;
  a.running = false;
  int64_t now = clock_.WallNs();
  store::TaskUpdate u{id, store::TaskState::kFailure, a.task.attempt, 0, "", value.message(), now};
  switch (value.error()) {
    case proto::ERROR_NONE:
      u.state = store::TaskState::kSuccess;
      u.result = value.data();
      u.error.clear();
      break;
    case proto::CANCELLED: u.state = store::TaskState::kRevoked; break;
    case proto::TASK_ERROR:
      if (a.task.attempt < a.task.max_retries) {
        // Exponential backoff with jitter: backoff x 2^attempt x [0.5, 1.5).
        static thread_local std::mt19937_64 rng(std::random_device{}());
        double delay = a.task.retry_backoff_s * std::pow(2.0, a.task.attempt) *
                       std::uniform_real_distribution<double>(0.5, 1.5)(rng);
        u.state = store::TaskState::kRetry;
        u.attempt = a.task.attempt + 1;
        u.eta_ns = now + static_cast<int64_t>(delay * 1e9);
        counters_["durable_retries"]++;
      }
      break;
    default: break;
  }
  // Deferred: we are inside the TaskManager's Finish.
  OnIo([this, u = std::move(u)]() mutable { Record(std::move(u)); });
}

void DurableQueue::Record(store::TaskUpdate u) {
  auto it = active_.find(u.id);
  if (it == active_.end()) return;
  store::DurableTask& t = it->second.task;
  t.state = u.state;
  t.attempt = u.attempt;
  t.result = u.result;
  t.error = u.error;
  t.updated_ns = u.at_ns;
  if (u.state == store::TaskState::kRetry) {
    t.eta_ns = u.eta_ns;
    due_.emplace(u.eta_ns, u.id);
  }
  bool final = store::IsFinal(u.state);
  if (final) t.finished_ns = u.at_ns;
  std::string id = u.id;
  committer_.Update({std::move(u)}, [this, id, final](Status s) {
    OnIo([this, id, final, s] {
      if (!s.ok()) LOG_ERROR("cannot store the state of durable task {}: {}", Hex(id), s.ToString());
      auto it = active_.find(id);
      if (it == active_.end() || !final) return;
      counters_[fmt::format("durable_{}", store::TaskStateName(it->second.task.state))]++;
      Answer(id, Info(it->second.task));
      active_.erase(it);
    });
  });
}

proto::DurableTaskInfo DurableQueue::Info(const store::DurableTask& t) const {
  proto::DurableTaskInfo info;
  info.set_found(true);
  info.set_id(t.id);
  info.set_function(t.function);
  info.set_state(store::TaskStateName(t.state));
  info.set_attempt(t.attempt);
  if (t.state == store::TaskState::kSuccess) {
    info.set_result(t.result);
    info.set_result_format(t.args_format);
  }
  info.set_error(t.error);
  info.set_queue(t.queue);
  info.set_created_ns(t.created_ns);
  info.set_finished_ns(t.finished_ns);
  return info;
}

void DurableQueue::Answer(const std::string& id, const proto::DurableTaskInfo& info) {
  auto w = waiters_.find(id);
  if (w == waiters_.end()) return;
  for (auto& waiter : w->second) {
    proto::Reply r;
    *r.mutable_durable() = info;
    waiter.reply(std::move(r));
  }
  waiters_.erase(w);
}

void DurableQueue::Get(const proto::DurableGet& request, Reply reply) {
  const std::string& id = request.id();
  auto it = active_.find(id);
  if (it != active_.end()) {
    if (request.wait_s() > 0) {
      Nanos deadline = clock_.BootTimeNs() + static_cast<Nanos>(request.wait_s() * 1e9);
      waiters_[id].push_back({std::move(reply), deadline});
      return;
    }
    proto::Reply r;
    *r.mutable_durable() = Info(it->second.task);
    if (it->second.running) r.mutable_durable()->set_state("STARTED");
    reply(std::move(r));
    return;
  }
  committer_.Run([this, id, reply](store::Store& s) {
    auto t = s.Get(id);
    OnIo([this, id, reply, t = std::move(t)] {
      proto::Reply r;
      if (!t) {
        r.set_error("the durable store failed: " + t.error().message());
      } else if (!t->has_value()) {
        r.mutable_durable()->set_id(id);
        r.mutable_durable()->set_found(false);
        r.mutable_durable()->set_state("PENDING");  // as Celery: an unknown id looks pending
      } else {
        *r.mutable_durable() = Info(**t);
      }
      reply(std::move(r));
    });
  });
}

void DurableQueue::List(const proto::DurableList& request, Reply reply) {
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
  committer_.Run([this, filter, reply](store::Store& s) {
    auto tasks = s.List(filter);
    OnIo([this, reply, tasks = std::move(tasks)] {
      proto::Reply r;
      if (!tasks) {
        r.set_error("the durable store failed: " + tasks.error().message());
      } else {
        for (const auto& t : *tasks) {
          proto::DurableTaskInfo* info = r.add_durable_list();
          // Fresher in memory than in the store for a task in flight.
          auto a = active_.find(t.id);
          *info = Info(a == active_.end() ? t : a->second.task);
          if (a != active_.end() && a->second.running) info->set_state("STARTED");
          info->clear_result();
        }
      }
      reply(std::move(r));
    });
  });
}

void DurableQueue::Cancel(const proto::DurableGet& request, Reply reply) {
  auto it = active_.find(request.id());
  if (it == active_.end()) return Get(request, std::move(reply));  // finished (or unknown): as it is
  Active& a = it->second;
  counters_["durable_revoke_requests"]++;
  if (a.running) {
    proto::Cancel c;
    c.set_task_id(fmt::format("{}#{}", request.id(), a.task.attempt));
    c.set_force(true);
    ClientSession nobody;
    tasks_.Cancel(&nobody, c);  // its end (CANCELLED) is recorded as REVOKED
  } else {
    Record({request.id(), store::TaskState::kRevoked, a.task.attempt, 0, "", "revoked before it started",
            clock_.WallNs()});
  }
  proto::DurableGet wait;
  wait.set_id(request.id());
  wait.set_wait_s(30);
  Get(wait, std::move(reply));  // answered once recorded
}

void DurableQueue::Tick() {
  int64_t now = clock_.WallNs();
  while (!due_.empty() && due_.begin()->first <= now) {
    std::string id = due_.begin()->second;
    due_.erase(due_.begin());
    Launch(id);
  }
  Nanos boot = clock_.BootTimeNs();
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    auto& list = it->second;
    auto a = active_.find(it->first);
    for (auto w = list.begin(); w != list.end();) {
      if (w->deadline > boot || a == active_.end()) {
        ++w;
        continue;
      }
      proto::Reply r;
      *r.mutable_durable() = Info(a->second.task);
      if (a->second.running) r.mutable_durable()->set_state("STARTED");
      w->reply(std::move(r));
      w = list.erase(w);
    }
    it = list.empty() ? waiters_.erase(it) : std::next(it);
  }
}

void DurableQueue::FillCounters(std::map<std::string, int64_t>* counters) const {
  for (const auto& [k, v] : counters_) (*counters)[k] = v;
  (*counters)["durable_unfinished"] = static_cast<int64_t>(active_.size());
  (*counters)["durable_commits"] = committer_.commits();
}

}  // namespace corral::head
