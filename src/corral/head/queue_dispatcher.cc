#include "corral/head/queue_dispatcher.h"

#include <algorithm>

#include "corral/base/log.h"
#include "corral/head/reply_error.h"

namespace corral::head {

QueueDispatcher::QueueDispatcher(boost::asio::io_context& io, NodeRegistry& nodes, const Clock& clock,
                                 store::GroupCommitter& committer, Launch launch)
    : nodes_(nodes), clock_(clock), committer_(committer), launch_(std::move(launch)), wake_(io), guard_(io) {}

bool QueueDispatcher::ValidName(const std::string& n, size_t max) {
  if (n.empty() || n.size() > max) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') return false;
  return true;
}

std::string QueueDispatcher::RunningKey(const std::string& queue, const std::string& function) {
  return queue + '\0' + function;
}

QueueDispatcher::Queue& QueueDispatcher::Named(const std::string& name) {
  auto [it, added] = queues_.try_emplace(name);
  if (added) {
    it->second.config.name = name;
    it->second.pass = pass_now_;
  }
  return it->second;
}

void QueueDispatcher::Load(std::vector<store::QueueConfig> configs) {
  for (auto& c : configs) Named(c.name).config = std::move(c);
}

void QueueDispatcher::Prune(const std::unordered_set<std::string>& in_use) {
  size_t before = queues_.size();
  std::erase_if(queues_, [&](const auto& entry) {
    const auto& [name, q] = entry;
    return name != "default" && q.config.updated_ns == 0 && q.ready.empty() && q.running == 0 &&
           !in_use.contains(name);
  });
  forgotten_ += static_cast<int64_t>(before - queues_.size());
}

void QueueDispatcher::FillCounters(std::map<std::string, int64_t>* counters) const {
  (*counters)["queues_forgotten"] = forgotten_;
}

Request QueueDispatcher::PlacementFor(const store::QueueConfig& config) {
  Request r;
  r.resources.Set(kCpu, 1);
  for (const auto& [name, amount] : config.resources) r.resources.Set(name, amount);
  r.label_selector = config.labels;
  return r;
}

uint64_t QueueDispatcher::Add(const std::string& queue, int priority, const std::string& id,
                              const std::string& function) {
  Queue& q = Named(queue);
  if (q.ready.empty()) q.pass = std::max(q.pass, pass_now_);  // no credit for idle time
  uint64_t seq = next_seq_++;
  q.ready.emplace(std::pair{-priority, seq}, Entry{id, function, clock_.BootTimeNs()});
  return seq;
}

std::vector<QueueDispatcher::Figures> QueueDispatcher::QueueFigures() const {
  std::vector<Figures> out;
  Nanos now = clock_.BootTimeNs();
  for (const auto& [name, q] : queues_) {
    Figures f{name, static_cast<int64_t>(q.ready.size()), q.running, 0, q.config.concurrency, q.config.weight};
    // Within a priority, entries are in the order they became ready: the first of each is its oldest.
    Nanos oldest = 0;
    for (auto it = q.ready.begin(); it != q.ready.end();
         it = q.ready.lower_bound({it->first.first + 1, 0}))
      if (oldest == 0 || it->second.ready_at < oldest) oldest = it->second.ready_at;
    if (oldest != 0) f.oldest_ready_s = static_cast<double>(now - oldest) / 1e9;
    out.push_back(std::move(f));
  }
  return out;
}

void QueueDispatcher::Remove(const std::string& queue, int priority, uint64_t seq) {
  if (auto q = queues_.find(queue); q != queues_.end()) q->second.ready.erase({-priority, seq});
}

void QueueDispatcher::Started(const std::string& queue, const std::string& function) {
  Named(queue).running++;
  running_by_function_[RunningKey(queue, function)]++;
}

void QueueDispatcher::Ended(const std::string& queue, const std::string& function, bool succeeded) {
  Queue& q = Named(queue);
  q.running--;
  std::string key = RunningKey(queue, function);
  if (--running_by_function_[key] <= 0) running_by_function_.erase(key);
  (succeeded ? q.succeeded : q.failed)++;
}

void QueueDispatcher::Dispatch() {
  const auto& views = nodes_.LiveViews();
  Nanos now = clock_.BootTimeNs();
  // How many runs the nodes can take at once, per (queue placement [+ function]): the slots of the
  // nodes that fit it, plus one prefetched per such node. Cached for this call.
  std::map<std::pair<const Queue*, std::string>, int> caps;
  auto cap_of = [&](const Queue& q, const std::string& function) {
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
    Queue* q;
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
      // Tokens add up in small doubles (0.1 per 10 ms tick at 10/s sums to 0.9999999999999999):
      // a token short by rounding is a whole one, or each start would slip a tick.
      if (c.q->config.rate_per_s > 0 && c.q->tokens < 1 - 1e-9) {
        double wait_s = std::min((1 - c.q->tokens) / c.q->config.rate_per_s, 3600.0);
        Nanos wait = static_cast<Nanos>(wait_s * 1e9) + 1;
        next_token = next_token == 0 ? wait : std::min(next_token, wait);
        continue;
      }
      if (!best || c.q->pass < best->q->pass) best = &c;
    }
    if (!best) break;
    Queue& q = *best->q;
    // The first ready task (priority, then order) whose function some node can take now; a task
    // whose function's nodes are full waits without holding up the queue (looking 1024 deep).
    auto pick = q.ready.end();
    int looked = 0;
    for (auto r = q.ready.begin(); r != q.ready.end() && looked < 1024; ++r, ++looked) {
      auto running = running_by_function_.find(RunningKey(q.config.name, r->second.function));
      if ((running == running_by_function_.end() ? 0 : running->second) < cap_of(q, r->second.function)) {
        pick = r;
        break;
      }
    }
    if (pick == q.ready.end()) {
      best->cap = q.running;  // nothing of it can start now
      continue;
    }
    std::string id = std::move(pick->second.id);
    q.ready.erase(pick);
    if (!launch_(id)) continue;  // expired while it waited for a slot, or gone
    in_flight++;
    pass_now_ = q.pass;  // the virtual time: the pass of the queue that started last
    q.pass += 1.0 / std::max(q.config.weight, 1e-6);
    if (q.config.rate_per_s > 0) q.tokens = std::max(0.0, q.tokens - 1);
  }
  // A queue that could not start (its limit, its nodes, its tokens) banks no credit meanwhile:
  // the queues that could start have a pass of at least pass_now_, so this touches only the others.
  for (auto& [name, q] : queues_)
    if (!q.ready.empty()) q.pass = std::max(q.pass, pass_now_);
  if (next_token > 0) WakeIn(now, next_token);
}

void QueueDispatcher::WakeIn(Nanos now, Nanos after) {
  if (wake_armed_ && now + after >= wake_at_) return;  // an earlier wait is armed
  wake_armed_ = true;
  wake_at_ = now + after;
  wake_.expires_after(std::chrono::nanoseconds(after));  // cancels a later wait
  wake_.async_wait([this, alive = guard_.alive()](const boost::system::error_code& ec) {
    if (!*alive || ec) return;  // stopped, or replaced by an earlier wait (which is armed)
    wake_armed_ = false;
    Dispatch();
  });
}

proto::QueueSpec QueueDispatcher::Describe(Queue& q, int64_t waiting) {
  proto::QueueSpec p;
  p.set_name(q.config.name);
  p.set_weight(q.config.weight);
  p.set_concurrency(q.config.concurrency);
  p.set_rate_per_s(q.config.rate_per_s);
  p.set_labels(FormatPairs(q.config.labels));
  p.set_resources(FormatPairs(q.config.resources));
  p.set_ready(static_cast<int64_t>(q.ready.size()));
  p.set_waiting(waiting);
  p.set_running(q.running);
  p.set_succeeded(q.succeeded);
  p.set_failed(q.failed);
  Request placement = PlacementFor(q.config);
  int slots = 0;
  for (const NodeView* n : nodes_.LiveViews()) slots += Slots(placement, *n);
  p.set_slots(q.config.concurrency > 0 ? std::min(slots, q.config.concurrency) : slots);
  return p;
}

void QueueDispatcher::Handle(const proto::QueueRequest& req, const std::map<std::string, int64_t>& waiting,
                             Reply reply) {
  proto::Reply r;
  if (req.op() == proto::QueueRequest::LIST) {
    for (const auto& [name, n] : waiting) Named(name);  // a queue exists from its first task on
    for (auto& [name, q] : queues_) {
      auto w = waiting.find(name);
      *r.add_queues() = Describe(q, w == waiting.end() ? 0 : w->second);
    }
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
  committer_.Run([this, c, reply](store::Store& st) mutable {
    Status status = st.PutQueue(c);
    guard_.Post([this, c = std::move(c), status, reply = std::move(reply)]() mutable {
      proto::Reply r;
      if (!status.ok()) {
        SetError(r, StoreFailed(status));
        return reply(std::move(r));
      }
      Queue& q = Named(c.name);
      q.config = std::move(c);
      q.tokens = std::min(q.tokens, 1.0);
      LOG_INFO("queue {}: weight {:g}, concurrency {}, rate {:g}/s", q.config.name, q.config.weight,
               q.config.concurrency, q.config.rate_per_s);
      *r.add_queues() = Describe(q, 0);
      reply(std::move(r));
      Dispatch();
    });
  });
}

}  // namespace corral::head
