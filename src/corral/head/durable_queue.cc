#include "corral/head/durable_queue.h"

#include <openssl/sha.h>

#include <boost/asio/post.hpp>

#include <cmath>
#include <deque>
#include <future>
#include <optional>
#include <random>
#include <unordered_set>

#include "corral/base/cron.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/net/frame.h"

namespace corral::head {

namespace {

constexpr uint32_t kWorkerLossRetries = 100;  // a durable task survives lost workers and nodes
constexpr int64_t kMisfireGraceNs = 30'000'000'000;
constexpr int kMaxCatchUp = 1000;

// Queue and schedule names: 1 to `max` letters, digits, '_', '-' or '.'.
bool ValidName(const std::string& n, size_t max) {
  if (n.empty() || n.size() > max) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') return false;
  return true;
}

// A slot's task id: the same for the same (schedule, slot), so a fire is recognisably one task.
std::string SlotTaskId(const std::string& name, int64_t slot) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  std::string key = name + '\0' + std::to_string(slot);
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  return Hex(std::string(reinterpret_cast<const char*>(digest), 16));
}

}  // namespace

DurableQueue::DurableQueue(boost::asio::io_context& io, TaskManager& tasks, NodeRegistry& nodes,
                           std::unique_ptr<store::Store> store, const Clock& clock, int64_t result_ttl_s)
    : io_(io),
      tasks_(tasks),
      nodes_(nodes),
      clock_(clock),
      committer_(std::make_unique<store::GroupCommitter>(std::move(store))),
      wake_(io),
      result_ttl_ns_(result_ttl_s * 1'000'000'000) {
  tasks_.on_durable_finished = [this](const std::string& run_id, const proto::ObjectValue& value) {
    OnRunFinished(run_id, value);
  };
  tasks_.on_durable_rerun = [this](const std::string& run_id) {
    auto it = active_.find(run_id.substr(0, run_id.rfind('#')));
    if (it == active_.end()) return;
    it->second.task.runs++;
    counters_["durable_reexecutions"]++;
  };
  tasks_.on_orphan_held = [this](const std::string& run_id) {
    // An agent holds this run from before the restart: launch it now (it is running), not when its
    // queue's priority and limits would. Deferred: we are inside the TaskManager's reconcile.
    size_t hash = run_id.rfind('#');
    if (hash == std::string::npos) return;
    OnIo([this, id = run_id.substr(0, hash), attempt = std::atoi(run_id.c_str() + hash + 1)] {
      auto it = active_.find(id);
      if (it == active_.end() || it->second.running || !it->second.loaded || it->second.parents_left > 0) return;
      // Only the run the store expects now (not an older attempt whose retry waits for its time).
      if (it->second.task.attempt != attempt || it->second.task.eta_ns > clock_.WallNs()) return;
      Unready(it->second);
      counters_["durable_runs_adopted"]++;
      Launch(id);
    });
  };
}

DurableQueue::~DurableQueue() {
  *alive_ = false;
  tasks_.on_durable_finished = nullptr;
  tasks_.on_orphan_held = nullptr;
  tasks_.on_durable_rerun = nullptr;
  committer_.reset();  // joins its thread while every member its callbacks reach is still alive
}

template <typename F>
void DurableQueue::OnIo(F&& f) {
  boost::asio::post(io_, [alive = alive_, f = std::forward<F>(f)]() mutable {
    if (*alive) f();
  });
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
  for (auto& q : **queues) {
    QueueNamed(q.name).config = std::move(q);
  }
  known_functions_.insert((*known)->begin(), (*known)->end());
  for (const auto& sc : **schedules) schedules_[sc.name] = sc;
  if (!(*schedules)->empty()) LOG_INFO("{} schedule(s) loaded from the store", (*schedules)->size());
  for (auto& t : **loaded) {
    std::string id = t.id;
    if (t.parents.empty()) due_.emplace(t.eta_ns, id);
    active_[id] = Active{.task = std::move(t), .loaded = true};  // id copied first: t is moved
  }
  for (auto& [id, a] : active_)
    if (!a.task.parents.empty()) LinkParents(id);
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
    if (std::string e = ValidateFunction(fn); !e.empty()) return refuse(std::move(e));
    std::string format = spec.args_format().empty() ? "pickle" : spec.args_format();
    if (format != "pickle" && format != "json")
      return refuse(fmt::format("args_format '{}' is not 'pickle' or 'json'", spec.args_format()));
    std::string queue = spec.queue().empty() ? "default" : spec.queue();
    if (!ValidName(queue, 64))
      return refuse(fmt::format("queue name '{}' must be 1-64 letters, digits, '_', '-' or '.'", queue));
    if (spec.args().size() + 4096 > net::kDefaultMaxFrameBytes)
      return refuse(fmt::format("the arguments of {} are {} bytes, over the {}-byte limit", fn, spec.args().size(),
                                net::kDefaultMaxFrameBytes - 4096));
    if (spec.max_retries() < 0 || !(spec.retry_backoff_s() >= 0) || spec.retry_backoff_s() > 86400)
      return refuse("max_retries must be >= 0 and retry_backoff between 0 and 86400 seconds");
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
    OnIo([this, batch = std::move(batch), reply = std::move(reply), r = std::move(r)] {
      proto::Reply out;
      if (!r) {
        out.set_error("the durable store failed: " + r.error().message());
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
      for (const auto& id : linked) LinkParents(id);  // after the whole batch is in: parents may be in it
      reply(std::move(out));
      Tick();
    });
  });
}

std::string DurableQueue::RunningKey(const std::string& queue, const std::string& function) {
  return queue + '\0' + function;
}

DurableQueue::QueueState& DurableQueue::QueueNamed(const std::string& name) {
  auto [it, added] = queues_.try_emplace(name);
  if (added) {
    it->second.config.name = name;
    it->second.pass = pass_now_;
  }
  return it->second;
}

Request DurableQueue::PlacementFor(const store::QueueConfig& config) const {
  Request r;
  r.resources.Set(kCpu, 1);
  for (const auto& [name, amount] : config.resources) r.resources.Set(name, amount);
  r.label_selector = config.labels;
  return r;
}

void DurableQueue::MakeReady(const std::string& id) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second.running || it->second.ready_seq != 0 || store::IsFinal(it->second.task.state))
    return;
  Active& a = it->second;
  if (a.task.eta_ns > clock_.WallNs()) return;  // a stale entry: the task has a later one (a retry)
  if (Expired(a)) return;
  QueueState& q = QueueNamed(a.task.queue);
  if (q.ready.empty()) q.pass = std::max(q.pass, pass_now_);  // no credit for idle time
  a.ready_seq = next_ready_seq_++;
  q.ready.emplace(-a.task.priority, a.ready_seq, id);
}

bool DurableQueue::Expired(Active& a) {
  int64_t now = clock_.WallNs();
  if (a.task.expires_ns == 0 || now < a.task.expires_ns) return false;
  counters_["durable_expired"]++;
  Record({a.task.id, store::TaskState::kRevoked, a.task.attempt, 0, "", "expired before it started", now});
  return true;
}

void DurableQueue::Unready(Active& a) {
  if (a.ready_seq == 0) return;
  QueueNamed(a.task.queue).ready.erase({-a.task.priority, a.ready_seq, a.task.id});
  a.ready_seq = 0;
}

void DurableQueue::Dispatch() {
  const auto& views = nodes_.LiveViews();
  Nanos now = clock_.BootTimeNs();
  // How many runs the nodes can take at once, per (queue placement [+ function]): the slots of the
  // nodes that fit it, plus one prefetched per such node. Cached for this call.
  std::map<std::pair<const QueueState*, std::string>, int> caps;
  auto cap_of = [&](const QueueState& q, const std::string& function) {
    auto [it, added] = caps.try_emplace({&q, function}, 0);
    if (added) {
      Request req = PlacementFor(q.config);
      req.durable_function = function;
      for (const NodeView* n : views)
        if (int slots = Slots(req, *n); slots > 0) it->second += slots + 1;
    }
    return it->second;
  };
  struct Candidate {
    QueueState* q;
    int cap;
  };
  std::vector<Candidate> candidates;
  std::vector<Request> placements{PlacementFor({})};
  int in_flight = 0;
  for (auto& [name, q] : queues_) {
    in_flight += q.running;
    if (q.ready.empty()) continue;
    int cap = cap_of(q, "");
    if (q.config.concurrency > 0) cap = std::min(cap, q.config.concurrency);
    if (q.running >= cap) continue;
    if (q.config.rate_per_s > 0) {  // a bucket of 50 ms worth (at least one): timer lateness is not lost
      double burst = std::max(1.0, q.config.rate_per_s * 0.05);
      q.tokens = std::min(burst, q.tokens + static_cast<double>(now - q.tokens_at) * 1e-9 * q.config.rate_per_s);
      q.tokens_at = now;
    }
    candidates.push_back({&q, cap});
    placements.push_back(PlacementFor(q.config));
  }
  // All queues together: per node, the most runs of any placement in play (plus one prefetched).
  int total = 0;
  for (const NodeView* n : views) {
    int most = 0;
    for (const Request& r : placements) most = std::max(most, Slots(r, *n));
    total += most > 0 ? most + 1 : 0;
  }
  Nanos next_token = 0;
  while (in_flight < total) {
    Candidate* best = nullptr;
    for (auto& c : candidates) {
      if (c.q->ready.empty() || c.q->running >= c.cap) continue;
      if (c.q->config.rate_per_s > 0 && c.q->tokens < 1) {
        double wait_s = std::min((1 - c.q->tokens) / c.q->config.rate_per_s, 3600.0);
        Nanos wait = static_cast<Nanos>(wait_s * 1e9) + 1;
        next_token = next_token == 0 ? wait : std::min(next_token, wait);
        continue;
      }
      if (!best || c.q->pass < best->q->pass) best = &c;
    }
    if (!best) break;
    QueueState& q = *best->q;
    // The first ready task (priority, then order) whose function some node can take now; a task
    // whose function's nodes are full waits without holding up the queue (looking 1024 deep).
    auto pick = q.ready.end();
    int looked = 0;
    for (auto r = q.ready.begin(); r != q.ready.end() && looked < 1024; ++r, ++looked) {
      auto a = active_.find(std::get<2>(*r));
      if (a == active_.end()) {
        pick = r;  // stale: dropped below
        break;
      }
      const std::string& fn = a->second.task.function;
      auto running = running_by_function_.find(RunningKey(q.config.name, fn));
      if ((running == running_by_function_.end() ? 0 : running->second) < cap_of(q, fn)) {
        pick = r;
        break;
      }
    }
    if (pick == q.ready.end()) {
      best->cap = q.running;  // nothing of it can start now
      continue;
    }
    std::string id = std::get<2>(*pick);
    q.ready.erase(pick);
    auto a = active_.find(id);
    if (a == active_.end()) continue;
    a->second.ready_seq = 0;
    if (Expired(a->second)) continue;  // expired while it waited for a slot
    Launch(id);
    if (!a->second.running) continue;
    in_flight++;
    pass_now_ = q.pass;  // the virtual time: the pass of the queue that started last
    q.pass += 1.0 / std::max(q.config.weight, 1e-6);
    if (q.config.rate_per_s > 0) q.tokens -= 1;
  }
  // A queue that could not start (its limit, its nodes, its tokens) banks no credit meanwhile:
  // the queues that could start have a pass of at least pass_now_, so this touches only the others.
  for (auto& [name, q] : queues_)
    if (!q.ready.empty()) q.pass = std::max(q.pass, pass_now_);
  if (next_token > 0 && (!wake_armed_ || now + next_token < wake_at_)) {  // a rate-limited queue's next token
    wake_armed_ = true;
    wake_at_ = now + next_token;
    wake_.expires_after(std::chrono::nanoseconds(next_token));  // cancels a later wait
    wake_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
      if (!*alive || ec) return;  // stopped, or replaced by an earlier wait (which is armed)
      wake_armed_ = false;
      Dispatch();
    });
  }
}

void DurableQueue::Queues(const proto::QueueRequest& req, Reply reply) {
  auto describe = [this](QueueState& q, std::map<std::string, int64_t>& waiting) {
    proto::QueueSpec p;
    p.set_name(q.config.name);
    p.set_weight(q.config.weight);
    p.set_concurrency(q.config.concurrency);
    p.set_rate_per_s(q.config.rate_per_s);
    p.set_labels(FormatPairs(q.config.labels));
    p.set_resources(FormatPairs(q.config.resources));
    p.set_ready(static_cast<int64_t>(q.ready.size()));
    p.set_waiting(waiting[q.config.name]);
    p.set_running(q.running);
    p.set_succeeded(q.succeeded);
    p.set_failed(q.failed);
    Request placement = PlacementFor(q.config);
    int slots = 0;
    for (const NodeView* n : nodes_.LiveViews()) slots += Slots(placement, *n);
    p.set_slots(q.config.concurrency > 0 ? std::min(slots, q.config.concurrency) : slots);
    return p;
  };
  std::map<std::string, int64_t> waiting;  // unfinished, not ready, not running
  for (auto& [id, a] : active_)
    if (!a.running && a.ready_seq == 0) {
      QueueNamed(a.task.queue);  // a queue exists from its first task on
      waiting[a.task.queue]++;
    }
  proto::Reply r;
  if (req.op() == proto::QueueRequest::LIST) {
    for (auto& [name, q] : queues_) *r.add_queues() = describe(q, waiting);
    return reply(std::move(r));
  }
  const proto::QueueSpec& spec = req.spec();
  auto fail = [&](std::string why) {
    r.set_error(std::move(why));
    reply(std::move(r));
  };
  if (!ValidName(spec.name(), 64))
    return fail(fmt::format("queue name '{}' must be 1-64 letters, digits, '_', '-' or '.'", spec.name()));
  store::QueueConfig c = queues_.contains(spec.name()) ? queues_[spec.name()].config : store::QueueConfig{};
  c.name = spec.name();
  if (spec.has_weight()) {
    if (!(spec.weight() > 0 && spec.weight() <= 1e6)) return fail("weight must be > 0 and at most 1,000,000");
    c.weight = spec.weight();
  }
  if (spec.has_concurrency()) {
    if (spec.concurrency() < 0) return fail("concurrency must be >= 0 (0: no limit)");
    c.concurrency = spec.concurrency();
  }
  if (spec.has_rate_per_s()) {
    if (!(spec.rate_per_s() == 0 || (spec.rate_per_s() >= 1.0 / 86400 && spec.rate_per_s() <= 1e6)))
      return fail("rate limit must be 0 (no limit) or between 1 a day and 1,000,000 a second");
    c.rate_per_s = spec.rate_per_s();
  }
  if (spec.has_labels()) {
    auto labels = ParseLabels(spec.labels());
    if (!labels) return fail(labels.error().message());
    c.labels = std::move(*labels);
  }
  if (spec.has_resources()) {
    auto amounts = ParseAmounts(spec.resources());
    if (!amounts) return fail(amounts.error().message());
    c.resources = std::move(*amounts);
  }
  c.updated_ns = clock_.WallNs();
  committer_->Run([this, c, reply, describe](store::Store& st) mutable {
    Status status = st.PutQueue(c);
    OnIo([this, c = std::move(c), status, reply = std::move(reply), describe]() mutable {
      proto::Reply r;
      if (!status.ok()) {
        r.set_error("the durable store failed: " + status.message());
        return reply(std::move(r));
      }
      QueueState& q = QueueNamed(c.name);
      q.config = std::move(c);
      q.tokens = std::min(q.tokens, 1.0);
      LOG_INFO("queue {}: weight {:g}, concurrency {}, rate {:g}/s", q.config.name, q.config.weight,
               q.config.concurrency, q.config.rate_per_s);
      std::map<std::string, int64_t> none;
      *r.add_queues() = describe(q, none);
      reply(std::move(r));
      Dispatch();
    });
  });
}

void DurableQueue::LinkParents(const std::string& id) {
  Active& a = active_.at(id);
  std::vector<std::string> stored;  // finished already (or unknown): their end is in the store
  for (const auto& p : a.task.parents) {
    a.parents_left++;
    if (active_.contains(p)) children_.emplace(p, id);
    else stored.push_back(p);
  }
  if (stored.empty()) return;
  committer_->Run([this, id, stored](store::Store& st) {
    std::vector<store::DurableTask> parents;
    for (const auto& p : stored) {
      auto t = st.Get(p);
      store::DurableTask parent;
      parent.id = p;
      if (t && t->has_value()) parent = std::move(**t);
      else parent.state = store::TaskState::kFailure, parent.error = t ? "no such task (purged?)" : t.error().message();
      parents.push_back(std::move(parent));
    }
    OnIo([this, id, parents = std::move(parents)] {
      for (const auto& p : parents) {
        if (!store::IsFinal(p.state)) {  // unfinished after all (submitted meanwhile): wait for its end
          if (active_.contains(p.id)) children_.emplace(p.id, id);
          continue;
        }
        ParentDone(id, p);
      }
    });
  });
}

void DurableQueue::ParentDone(const std::string& child, const store::DurableTask& parent) {
  auto it = active_.find(child);
  if (it == active_.end() || store::IsFinal(it->second.task.state) || it->second.parents_left == 0) return;
  Active& a = it->second;
  if (parent.state != store::TaskState::kSuccess) {
    // The exception's own line ("ValueError: ...") is the last line of a traceback.
    std::string why = parent.error;
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    why = why.substr(why.rfind('\n') + 1);
    Record({child, parent.state == store::TaskState::kRevoked ? store::TaskState::kRevoked : store::TaskState::kFailure,
            a.task.attempt, 0, "",
            fmt::format("its parent task {} ended {}{}{}", parent.id, store::TaskStateName(parent.state),
                        why.empty() ? "" : ": ", why),
            clock_.WallNs()});
    return;
  }
  a.parent_results[parent.id] = {parent.args_format, parent.result};
  if (--a.parents_left > 0) return;
  due_.emplace(a.task.eta_ns, child);
  OnIo([this] { Tick(); });
}

void DurableQueue::Launch(const std::string& id) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second.running || store::IsFinal(it->second.task.state)) return;
  Active& a = it->second;
  QueueState& q = QueueNamed(a.task.queue);
  proto::TaskSpec spec;
  spec.set_task_id(fmt::format("{}#{}", id, a.task.attempt));
  spec.set_name(a.task.function);
  spec.set_durable_function(a.task.function);
  spec.set_args(a.task.args);
  spec.set_args_format(a.task.args_format);
  spec.set_soft_time_limit_s(a.task.soft_time_limit_s);
  spec.set_time_limit_s(a.task.time_limit_s);
  (*spec.mutable_resources())[kCpu] = 1;
  for (const auto& [name, amount] : q.config.resources) (*spec.mutable_resources())[name] = amount;
  for (const auto& [k, v] : q.config.labels) (*spec.mutable_label_selector())[k] = v;
  spec.set_max_retries(kWorkerLossRetries);
  if (!a.task.parents.empty()) {
    spec.set_link(a.task.link);
    for (const auto& p : a.task.parents) {
      auto r = a.parent_results.find(p);
      spec.add_parent_formats(r == a.parent_results.end() ? "" : r->second.first);
      spec.add_parent_results(r == a.parent_results.end() ? "" : r->second.second);
    }
  }
  spec.set_resubmitted(a.loaded);  // an agent may still hold this run from before a restart
  a.loaded = false;
  a.running = true;
  a.task.runs++;
  q.running++;
  running_by_function_[RunningKey(a.task.queue, a.task.function)]++;
  counters_["durable_runs_started"]++;
  tasks_.SubmitDurable(std::move(spec));
}

void DurableQueue::OnRunFinished(const std::string& run_id, const proto::ObjectValue& value) {
  std::string id = run_id.substr(0, run_id.rfind('#'));
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = it->second;
  if (a.running) {
    QueueState& q = QueueNamed(a.task.queue);
    q.running--;
    std::string key = RunningKey(a.task.queue, a.task.function);
    if (--running_by_function_[key] <= 0) running_by_function_.erase(key);
    (value.error() == proto::ERROR_NONE ? q.succeeded : q.failed)++;
  }
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
        double delay = value.has_retry_in_s() && value.retry_in_s() >= 0
                           ? value.retry_in_s()  // the task asked (Celery's self.retry(countdown=...))
                           : a.task.retry_backoff_s * std::pow(2.0, std::min(a.task.attempt, 30)) *
                                 std::uniform_real_distribution<double>(0.5, 1.5)(rng);
        delay = std::min(delay, 86400.0);  // at most a day between tries
        u.state = store::TaskState::kRetry;
        u.attempt = a.task.attempt + 1;
        u.eta_ns = now + static_cast<int64_t>(delay * 1e9);
        counters_["durable_retries"]++;
      }
      break;
    default: break;
  }
  // Deferred: we are inside the TaskManager's Finish.
  OnIo([this, u = std::move(u)]() mutable {
    Record(std::move(u));
    Dispatch();  // its slot is free
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
  }
  if (store::IsFinal(u.state)) t.finished_ns = u.at_ns;
  Write(std::move(u));
}

void DurableQueue::Write(store::TaskUpdate u) {
  store::TaskUpdate copy = u;
  committer_->Update({std::move(u)}, [this, copy = std::move(copy)](Status s) mutable {
    OnIo([this, s, u = std::move(copy)]() mutable {
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
      auto [first, last] = children_.equal_range(ended.id);
      std::vector<std::string> children;
      for (auto c = first; c != last; ++c) children.push_back(c->second);
      children_.erase(first, last);
      for (const auto& child : children) ParentDone(child, ended);
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
  info.set_runs(t.runs);
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

void DurableQueue::Remember(proto::DurableTaskInfo info) {
  constexpr size_t kMaxTasks = 10000;
  constexpr size_t kMaxBytes = 64 << 20;
  recent_bytes_ += info.result().size() + info.error().size();
  std::string id = info.id();
  recent_order_.push_back(id);
  recent_[id] = std::move(info);
  while (!recent_order_.empty() && (recent_.size() > kMaxTasks || recent_bytes_ > kMaxBytes)) {
    auto old = recent_.find(recent_order_.front());
    if (old != recent_.end()) {
      recent_bytes_ -= old->second.result().size() + old->second.error().size();
      recent_.erase(old);
    }
    recent_order_.pop_front();
  }
}

void DurableQueue::Get(const proto::DurableGet& request, Reply reply) {
  const std::string& id = request.id();
  auto it = active_.find(id);
  if (it != active_.end()) {
    if (request.wait_s() > 0) {
      Nanos deadline = clock_.BootTimeNs() + static_cast<Nanos>(std::min(request.wait_s(), 3600.0) * 1e9);
      waiters_[id].push_back({std::move(reply), deadline});
      return;
    }
    proto::Reply r;
    *r.mutable_durable() = Info(it->second.task);
    if (it->second.running) r.mutable_durable()->set_state("STARTED");
    reply(std::move(r));
    return;
  }
  if (auto r = recent_.find(id); r != recent_.end() && r->second.finished_ns() >= clock_.WallNs() - result_ttl_ns_) {
    proto::Reply out;  // finished lately: answered from memory, not behind the store's commits
    *out.mutable_durable() = r->second;
    counters_["durable_results_from_memory"]++;
    return reply(std::move(out));
  }
  committer_->Run([this, id, reply](store::Store& s) mutable {
    auto t = s.Get(id);
    OnIo([this, id, reply = std::move(reply), t = std::move(t)] {
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
  committer_->Run([this, filter, reply](store::Store& s) mutable {
    auto tasks = s.List(filter);
    OnIo([this, reply = std::move(reply), tasks = std::move(tasks)] {
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

void DurableQueue::Purge() {
  if (purging_ || clock_.BootTimeNs() < next_purge_) return;
  purging_ = true;
  int64_t before = clock_.WallNs() - result_ttl_ns_;
  committer_->Run([this, before](store::Store& s) {
    auto n = s.PurgeFinished(before, 500);
    if (n && *n > 0) (void)s.Checkpoint();
    OnIo([this, n] {
      purging_ = false;
      bool backlog = n && *n == 500;
      next_purge_ = clock_.BootTimeNs() + (backlog ? Ms(200) : Ms(5000));
      if (n) counters_["durable_purged"] += *n;
      else LOG_WARN("cannot remove old durable tasks: {}", n.error().ToString());
    });
  });
}

void DurableQueue::Tick() {
  FireDue();
  Purge();
  std::vector<store::TaskUpdate> again = std::move(failed_updates_);
  failed_updates_.clear();
  for (auto& u : again) Write(std::move(u));
  int64_t now = clock_.WallNs();
  while (!due_.empty() && due_.begin()->first <= now) {
    std::string id = due_.begin()->second;
    due_.erase(due_.begin());
    MakeReady(id);
  }
  Dispatch();
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
  (*counters)["schedules"] = static_cast<int64_t>(schedules_.size());
  (*counters)["durable_commits"] = committer_->commits();
}

std::string DurableQueue::ValidateFunction(const std::string& fn) {
  size_t colon = fn.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == fn.size())
    return fmt::format("function '{}' must be named 'module:qualname'", fn);
  if (!Registered(fn))
    return fmt::format("no worker registered the task function '{}': start agents with --tasks {} (the module "
                       "that defines it with @corral.task)",
                       fn, fn.substr(0, colon));
  return "";
}

Result<int64_t> DurableQueue::NextSlot(const store::Schedule& s, int64_t after_ns) const {
  if (s.every_s > 0) {
    int64_t period = s.every_s * 1'000'000'000;
    return (after_ns / period + 1) * period;
  }
  auto cron = CronExpr::Parse(s.cron);
  if (!cron) return Err(cron.error());
  return cron->Next(after_ns, s.tz);
}

proto::ScheduleSpec DurableQueue::ScheduleInfo(const store::Schedule& s) const {
  proto::ScheduleSpec p;
  p.set_name(s.name);
  p.set_function(s.function);
  p.set_args_format(s.args_format);
  p.set_cron(s.cron);
  p.set_every_s(s.every_s);
  p.set_tz(s.tz);
  p.set_misfire(s.misfire);
  p.set_queue(s.queue);
  p.set_max_retries(s.max_retries);
  p.set_paused(s.paused);
  p.set_last_slot_ns(s.last_slot_ns);
  if (auto next = NextSlot(s, s.last_slot_ns)) p.set_next_slot_ns(*next);
  return p;
}

void DurableQueue::Fire(const store::Schedule& s, int64_t slot, Reply reply, bool manual) {
  store::DurableTask t;
  t.id = SlotTaskId(s.name, slot);
  t.function = s.function;
  t.args = s.args;
  t.args_format = s.args_format;
  t.queue = s.queue;
  t.priority = s.priority;
  t.max_retries = s.max_retries;
  t.schedule = s.name;
  t.created_ns = t.updated_ns = clock_.WallNs();
  store::ScheduleFire fire{s.name, slot, t.id, t.created_ns, manual};
  committer_->Run([this, fire, t, reply](store::Store& st) mutable {
    auto fired = st.RecordFire(fire, t);
    OnIo([this, fired = std::move(fired), t = std::move(t), fire, reply = std::move(reply)]() mutable {
      proto::Reply r;
      if (!fired) {
        LOG_ERROR("schedule {}: cannot record slot {}: {}", fire.name, fire.slot_ns, fired.error().ToString());
        r.set_error(fired.error().message());
      } else if (!*fired) {
        counters_["schedule_slots_already_fired"]++;  // fired before (a restart, a clock step back)
      } else {
        counters_["schedule_fires"]++;
        LOG_INFO("schedule {} fired (slot {}): task {}", fire.name, fire.slot_ns, t.id);
        r.set_task_id(t.id);
        std::string id = t.id;
        due_.emplace(0, id);
        active_[id] = Active{.task = std::move(t)};
        Tick();
      }
      if (reply) reply(std::move(r));
    });
  });
}

void DurableQueue::FireDue() {
  int64_t now = clock_.WallNs();
  for (auto& [name, s] : schedules_) {
    if (s.paused) continue;
    // Walk the due slots: the on-time ones (within the grace) all fire; of the late ones (the head
    // was down, the clock jumped) the policy decides.
    std::vector<int64_t> on_time;
    std::deque<int64_t> late;  // the latest kMaxCatchUp of them
    int64_t late_count = 0, latest = 0;
    int64_t after = s.last_slot_ns;
    if (s.every_s > 0) {  // jump over whole runs of missed periods
      int64_t period = s.every_s * 1'000'000'000;
      int64_t skip_to = (now - after) / period - kMaxCatchUp - 64;
      if (skip_to > 0) {
        late_count += skip_to;
        after += skip_to * period;
        after -= after % period;
      }
    }
    for (int guard = 0; guard < 1'000'000; ++guard) {
      auto next = NextSlot(s, after);
      if (!next || *next > now) break;
      after = latest = *next;
      if (now - *next > kMisfireGraceNs) {
        late_count++;
        late.push_back(*next);
        if (static_cast<int>(late.size()) > kMaxCatchUp) late.pop_front();
      } else {
        on_time.push_back(*next);
      }
    }
    if (latest == 0) continue;
    std::vector<int64_t> fire;
    if (late_count > 0) {
      if (s.misfire == "run_all") fire.assign(late.begin(), late.end());
      else if (s.misfire == "run_once" && !late.empty()) fire.push_back(late.back());
      counters_["schedule_slots_missed"] += late_count - static_cast<int64_t>(fire.size());
      LOG_WARN("schedule {}: {} slot(s) passed while the head was down or the clock jumped; misfire={} fires {}",
               name, late_count, s.misfire, fire.size());
    }
    fire.insert(fire.end(), on_time.begin(), on_time.end());
    s.last_slot_ns = latest;  // in memory at once: never considered twice
    if (fire.empty() || fire.back() != latest) {
      store::Schedule copy = s;
      committer_->Run([copy](store::Store& st) { (void)st.PutSchedule(copy); });
    }
    for (int64_t slot : fire) Fire(s, slot);
  }
}

void DurableQueue::Schedule(const proto::ScheduleRequest& req, Reply reply) {
  auto fail = [&](std::string why) {
    proto::Reply r;
    r.set_error(std::move(why));
    reply(std::move(r));
  };
  const std::string& name = req.spec().name();
  auto it = schedules_.find(name);
  bool needs_existing = req.op() != proto::ScheduleRequest::LIST && req.op() != proto::ScheduleRequest::ADD;
  if (needs_existing && it == schedules_.end())
    return fail(fmt::format("no schedule named '{}' (see `corral schedule list`)", name));
  int64_t now = clock_.WallNs();
  auto persist_and_reply = [this, reply](store::Schedule s) {
    committer_->Run([this, s, reply](store::Store& st) mutable {
      Status status = st.PutSchedule(s);
      OnIo([this, s, status, reply = std::move(reply)] {
        proto::Reply r;
        if (!status.ok()) r.set_error(status.message());
        else *r.add_schedules() = ScheduleInfo(s);
        reply(std::move(r));
      });
    });
  };
  switch (req.op()) {
    case proto::ScheduleRequest::LIST: {
      proto::Reply r;
      for (const auto& [n, s] : schedules_) *r.add_schedules() = ScheduleInfo(s);
      return reply(std::move(r));
    }
    case proto::ScheduleRequest::ADD: {
      const proto::ScheduleSpec& spec = req.spec();
      if (!ValidName(name, 100)) return fail(fmt::format("schedule name '{}' must be 1-100 letters, digits, '_', '-' or '.'", name));
      if (std::string e = ValidateFunction(spec.function()); !e.empty()) return fail(e);
      if (spec.cron().empty() == (spec.every_s() <= 0)) return fail("give a schedule either cron or every (seconds > 0), not both");
      std::string tz = spec.tz().empty() ? "UTC" : spec.tz();
      if (!spec.cron().empty()) {
        auto cron = CronExpr::Parse(spec.cron());
        if (!cron) return fail(cron.error().message());
        if (Status s = CheckTimeZone(tz); !s.ok()) return fail(s.message());
        if (auto n = cron->Next(now, tz); !n) return fail(n.error().message());
      }
      std::string misfire = spec.misfire().empty() ? "run_once" : spec.misfire();
      if (misfire != "run_once" && misfire != "skip" && misfire != "run_all")
        return fail(fmt::format("misfire '{}' must be run_once, skip or run_all", misfire));
      store::Schedule s;
      s.name = name;
      s.function = spec.function();
      s.args = spec.args();
      s.args_format = spec.args_format().empty() ? "pickle" : spec.args_format();
      s.cron = spec.cron();
      s.every_s = spec.every_s();
      s.tz = tz;
      s.misfire = misfire;
      s.queue = spec.queue().empty() ? "default" : spec.queue();
      s.max_retries = spec.max_retries();
      s.created_ns = it == schedules_.end() ? now : it->second.created_ns;
      s.updated_ns = now;
      s.last_slot_ns = now;  // the first slot is the next one from now
      schedules_[name] = s;
      counters_["schedules_added"]++;
      return persist_and_reply(s);
    }
    case proto::ScheduleRequest::PAUSE:
    case proto::ScheduleRequest::RESUME: {
      store::Schedule& s = it->second;
      bool pause = req.op() == proto::ScheduleRequest::PAUSE;
      if (!pause && s.paused) s.last_slot_ns = std::max(s.last_slot_ns, now);  // slots passed while paused: skipped
      s.paused = pause;
      s.updated_ns = now;
      return persist_and_reply(s);
    }
    case proto::ScheduleRequest::REMOVE: {
      schedules_.erase(it);
      committer_->Run([this, name, reply](store::Store& st) mutable {
        auto deleted = st.DeleteSchedule(name);
        OnIo([deleted, reply = std::move(reply)] {
          proto::Reply r;
          if (!deleted) r.set_error(deleted.error().message());
          reply(std::move(r));
        });
      });
      return;
    }
    case proto::ScheduleRequest::RUN_NOW:
      return Fire(it->second, now, std::move(reply), /*manual=*/true);
    case proto::ScheduleRequest::HISTORY: {
      int limit = req.limit() > 0 ? std::min(req.limit(), 1000) : 20;
      committer_->Run([this, name, limit, reply](store::Store& st) mutable {
        auto fires = st.FireHistory(name, limit);
        proto::Reply r;
        if (!fires) {
          r.set_error(fires.error().message());
        } else {
          for (const auto& f : *fires) {
            proto::ScheduleFire* out = r.add_fires();
            out->set_slot_ns(f.slot_ns);
            out->set_task_id(f.task_id);
            out->set_fired_ns(f.fired_ns);
            auto t = st.Get(f.task_id);
            out->set_state(t && t->has_value() ? store::TaskStateName((*t)->state) : "PURGED");
          }
        }
        OnIo([this, r = std::move(r), reply = std::move(reply)]() mutable {
          for (auto& f : *r.mutable_fires()) {  // fresher in memory for a task in flight
            auto a = active_.find(f.task_id());
            if (a != active_.end()) f.set_state(a->second.running ? "STARTED" : store::TaskStateName(a->second.task.state));
          }
          reply(std::move(r));
        });
      });
      return;
    }
    default: return fail("unknown schedule operation");
  }
}

}  // namespace corral::head
