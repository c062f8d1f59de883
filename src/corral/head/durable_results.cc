// DurableQueue: reading results (Get, answered from memory for the latest ones), waiting for a
// task's end or its next change, and keeping or removing a result on request (Celery's forget()
// and GroupResult.save()).
#include "corral/head/durable_queue.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "corral/base/log.h"
#include "corral/head/reply_error.h"
#include "corral/net/frame.h"

namespace corral::head {

namespace {

constexpr char kStoredFunction[] = "corral:stored";  // what a kept value is listed as

proto::Reply Refused(Code code, std::string why) {
  proto::Reply r;
  SetError(r, Status(code, std::move(why)));
  return r;
}

}  // namespace

void DurableQueue::Forget(const proto::DurableGet& request, Reply reply) {
  const std::string id = request.id();
  // A task whose end is recorded but not yet stored is forgotten after that write (the committer
  // keeps the order).
  if (auto a = active_.find(id); a != active_.end() && !store::IsFinal(a->second.task.state))
    return reply(Refused(Code::kFailedPrecondition,
                         fmt::format("task {} has not finished: revoke it first, then forget it", Printable(id))));
  for (const auto& u : failed_updates_)
    if (u.id == id)  // its end is to be written again: forgetting now would not last
      return reply(Refused(Code::kUnavailable, fmt::format("the end of task {} is not stored yet; try again",
                                                           Printable(id))));
  Unremember(id);
  committer_->Run([this, id, reply = std::move(reply)](store::Store& s) mutable {
    auto gone = s.Forget(id);
    guard_.Post([this, id, reply = std::move(reply), gone = std::move(gone)] {
      proto::Reply r;
      if (!gone) {
        SetError(r, StoreFailed(gone.error()));
      } else {
        Unremember(id);  // (a Get may have brought it back meanwhile)
        if (*gone) counters_["durable_forgotten"]++;
        r.mutable_durable()->set_id(id);
        r.mutable_durable()->set_found(*gone);
        r.mutable_durable()->set_state("PENDING");  // as Celery: a forgotten id reads as unknown
      }
      reply(std::move(r));
    });
  });
}

void DurableQueue::StoreValue(const proto::DurableStore& request, Reply reply) {
  if (request.id().empty() || request.id().size() > 128)
    return reply(Refused(Code::kInvalidArgument, "a stored value needs an id of 1 to 128 bytes"));
  // JSON only: a value anyone with a submit token may store must never be unpickled by its reader.
  if (request.value_format() != "json")
    return reply(Refused(Code::kInvalidArgument, "a stored value is JSON (value_format 'json')"));
  if (request.value().size() + 4096 > net::kDefaultMaxFrameBytes)
    return reply(Refused(Code::kInvalidArgument, "the value is over the frame limit"));
  if (active_.contains(request.id()))
    return reply(Refused(Code::kAlreadyExists, fmt::format("{} is the id of a task", Printable(request.id()))));
  int64_t now = clock_.WallNs();
  store::DurableTask t;
  t.id = request.id();
  t.function = kStoredFunction;
  t.args_format = request.value_format();
  t.state = store::TaskState::kSuccess;
  t.result = request.value();
  t.created_ns = t.updated_ns = t.finished_ns = now;
  committer_->Submit({t}, [this, t, reply = std::move(reply)](Result<std::vector<store::SubmitResult>> r) mutable {
    guard_.Post([this, t = std::move(t), reply = std::move(reply), r = std::move(r)] {
      proto::Reply out;
      if (!r) {
        SetError(out, StoreFailed(r.error()));
      } else if (!(*r)[0].inserted) {
        SetError(out, Status(Code::kAlreadyExists, fmt::format("{} is the id of a stored task or value: forget it "
                                                               "first",
                                                               Printable(t.id))));
      } else {
        counters_["durable_values_stored"]++;
        *out.mutable_durable() = Info(t);
      }
      reply(std::move(out));
    });
  });
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

void DurableQueue::Changed(const std::string& id) {
  auto a = active_.find(id);
  if (a == active_.end()) return;
  a->second.changes++;
  auto w = waiters_.find(id);
  if (w == waiters_.end()) return;
  std::optional<proto::DurableTaskInfo> info;
  std::erase_if(w->second, [&](Waiter& waiter) {
    if (!waiter.on_change) return false;
    if (!info) info = LiveInfo(a->second);
    proto::Reply r;
    *r.mutable_durable() = *info;
    waiter.reply(std::move(r));
    return true;
  });
  if (w->second.empty()) waiters_.erase(w);
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

void DurableQueue::Unremember(const std::string& id) {
  auto it = recent_.find(id);
  if (it == recent_.end()) return;
  recent_bytes_ -= it->second.result().size() + it->second.error().size();
  recent_.erase(it);  // (its place in recent_order_ goes when it comes up)
}

void DurableQueue::Get(const proto::DurableGet& request, Reply reply) {
  const std::string& id = request.id();
  auto it = active_.find(id);
  if (it != active_.end()) {
    // A reader waiting for a change it has not seen yet (one that came between its last reply and
    // this request) is answered at once.
    if (request.wait_s() > 0 && !(request.on_change() && request.seen_changes() < it->second.changes)) {
      Nanos deadline = clock_.BootTimeNs() + static_cast<Nanos>(std::min(request.wait_s(), 3600.0) * 1e9);
      waiters_[id].push_back({std::move(reply), deadline, request.on_change()});
      return;
    }
    proto::Reply r;
    *r.mutable_durable() = LiveInfo(it->second);
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
    guard_.Post([this, id, reply = std::move(reply), t = std::move(t)] {
      proto::Reply r;
      if (!t) {
        SetError(r, StoreFailed(t.error()));
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

void DurableQueue::AnswerExpiredWaiters() {
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
      *r.mutable_durable() = LiveInfo(a->second);
      w->reply(std::move(r));
      w = list.erase(w);
    }
    it = list.empty() ? waiters_.erase(it) : std::next(it);
  }
}

}  // namespace corral::head
