// DurableQueue: results kept or removed on request (Celery's forget() and GroupResult.save()).
#include "corral/head/durable_queue.h"

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

}  // namespace corral::head
