#include "corral/head/schedule_book.h"

#include <algorithm>

#include <openssl/sha.h>

#include <deque>

#include "corral/base/cron.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/queue_dispatcher.h"
#include "corral/head/reply_error.h"

namespace corral::head {
namespace {

constexpr int64_t kMisfireGraceNs = 30'000'000'000;
constexpr int kMaxCatchUp = 1000;

// A slot's task id: the same for the same (schedule, slot), so a fire is recognisably one task.
std::string SlotTaskId(const std::string& name, int64_t slot) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  std::string key = name + '\0' + std::to_string(slot);
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  return Hex(std::string(reinterpret_cast<const char*>(digest), 16));
}

}  // namespace

ScheduleBook::ScheduleBook(boost::asio::io_context& io, store::GroupCommitter& committer, const Clock& clock,
                           Hooks hooks)
    : committer_(committer), clock_(clock), hooks_(std::move(hooks)), guard_(io) {}

void ScheduleBook::Load(std::vector<store::Schedule> schedules) {
  for (auto& sc : schedules) {
    std::string name = sc.name;
    schedules_[name] = std::move(sc);
  }
  if (!schedules.empty()) LOG_INFO("{} schedule(s) loaded from the store", schedules.size());
}

void ScheduleBook::FillCounters(std::map<std::string, int64_t>* counters) const {
  for (const auto& [k, v] : counters_) (*counters)[k] = v;
  (*counters)["schedules"] = static_cast<int64_t>(schedules_.size());
}

Result<int64_t> ScheduleBook::NextSlot(const store::Schedule& s, int64_t after_ns) const {
  if (s.every_s > 0) {
    int64_t period = s.every_s * 1'000'000'000;
    return (after_ns / period + 1) * period;
  }
  auto cron = CronExpr::Parse(s.cron);
  if (!cron) return Err(cron.error());
  return cron->Next(after_ns, s.tz);
}

proto::ScheduleSpec ScheduleBook::Info(const store::Schedule& s) const {
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

void ScheduleBook::Fire(const store::Schedule& s, int64_t slot, Reply reply, bool manual) {
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
  committer_.Run([this, fire, t, reply](store::Store& st) mutable {
    auto fired = st.RecordFire(fire, t);
    guard_.Post([this, fired = std::move(fired), t = std::move(t), fire, reply = std::move(reply)]() mutable {
      proto::Reply r;
      if (!fired) {
        LOG_ERROR("schedule {}: cannot record slot {}: {}; trying again", fire.name, fire.slot_ns,
                  fired.error().ToString());
        SetError(r, StoreFailed(fired.error()));
        if (!fire.manual) unrecorded_fires_.emplace_back(fire.name, fire.slot_ns);
      } else if (!*fired) {
        counters_["schedule_slots_already_fired"]++;  // fired before (a restart, a clock step back)
      } else {
        counters_["schedule_fires"]++;
        if (!fire.manual) lag_.Observe(static_cast<double>(clock_.WallNs() - fire.slot_ns) / 1e9);
        LOG_INFO("schedule {} fired (slot {}): task {}", fire.name, fire.slot_ns, t.id);
        r.set_task_id(t.id);
        hooks_.fired(std::move(t));
      }
      if (reply) reply(std::move(r));
    });
  });
}

void ScheduleBook::FireDue() {
  int64_t now = clock_.WallNs();
  for (auto& [name, slot] : std::exchange(unrecorded_fires_, {})) {
    auto s = schedules_.find(name);
    if (s != schedules_.end()) Fire(s->second, slot);
  }
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
    s.last_slot_ns = latest;  // in memory at once: never considered twice (a fire that fails to be stored is retried)
    if (fire.empty() || fire.back() != latest) {
      // Only slots skipped by the misfire policy moved the cursor: if this write is lost, a restart
      // finds them late again and skips them again.
      store::Schedule copy = s;
      committer_.Run([copy](store::Store& st) {
        if (Status st_status = st.PutSchedule(copy); !st_status.ok())
          LOG_WARN("schedule {}: cannot store its cursor: {}", copy.name, st_status.ToString());
      });
    }
    for (int64_t slot : fire) Fire(s, slot);
  }
}

void ScheduleBook::Handle(const proto::ScheduleRequest& req, Reply reply) {
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
  switch (req.op()) {
    case proto::ScheduleRequest::LIST: {
      proto::Reply r;
      for (const auto& [n, s] : schedules_) *r.add_schedules() = Info(s);
      return reply(std::move(r));
    }
    case proto::ScheduleRequest::ADD: {
      const proto::ScheduleSpec& spec = req.spec();
      // Free text, as Celery's beat entries are named ("add every 10", "tasks.ping('world')").
      bool printable = std::all_of(name.begin(), name.end(), [](char c) { return c >= ' ' && c <= '~'; });
      if (name.empty() || name.size() > 200 || !printable || name.front() == ' ' || name.back() == ' ')
        return fail(fmt::format("schedule name '{}' must be 1-200 printable ASCII characters, not starting or ending "
                                "with a space",
                                Printable(name.substr(0, 200))));
      if (Status s = hooks_.validate(spec.function()); !s.ok()) return fail(s.message());
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
      counters_["schedules_added"]++;
      return Persist(std::move(s), std::move(reply));
    }
    case proto::ScheduleRequest::PAUSE:
    case proto::ScheduleRequest::RESUME: {
      store::Schedule s = it->second;
      bool pause = req.op() == proto::ScheduleRequest::PAUSE;
      if (!pause && s.paused) s.last_slot_ns = std::max(s.last_slot_ns, now);  // slots passed while paused: skipped
      s.paused = pause;
      s.updated_ns = now;
      return Persist(std::move(s), std::move(reply));
    }
    case proto::ScheduleRequest::REMOVE: {
      committer_.Run([this, name, reply](store::Store& st) mutable {
        auto deleted = st.DeleteSchedule(name);
        guard_.Post([this, name, deleted, reply = std::move(reply)] {
          proto::Reply r;
          if (!deleted) SetError(r, StoreFailed(deleted.error()));
          else schedules_.erase(name);
          reply(std::move(r));
        });
      });
      return;
    }
    case proto::ScheduleRequest::RUN_NOW:
      return Fire(it->second, now, std::move(reply), /*manual=*/true);
    case proto::ScheduleRequest::HISTORY:
      return History(name, req.limit() > 0 ? std::min(req.limit(), 1000) : 20, std::move(reply));
    default: return fail("unknown schedule operation");
  }
}

void ScheduleBook::Persist(store::Schedule s, Reply reply) {
  // A failed write leaves the schedule as it was, here as after a restart.
  committer_.Run([this, s, reply](store::Store& st) mutable {
    Status status = st.PutSchedule(s);
    guard_.Post([this, s, status, reply = std::move(reply)] {
      proto::Reply r;
      if (!status.ok()) {
        SetError(r, StoreFailed(status));
      } else {
        auto [at, added] = schedules_.try_emplace(s.name, s);
        if (!added) {
          int64_t fired_up_to = at->second.last_slot_ns;  // slots fired meanwhile stay fired
          at->second = s;
          if (!s.paused) at->second.last_slot_ns = std::max(s.last_slot_ns, fired_up_to);
        }
        *r.add_schedules() = Info(at->second);
      }
      reply(std::move(r));
    });
  });
}

void ScheduleBook::History(const std::string& name, int limit, Reply reply) {
  committer_.Run([this, name, limit, reply](store::Store& st) mutable {
    auto fires = st.FireHistory(name, limit);
    proto::Reply r;
    if (!fires) {
      SetError(r, StoreFailed(fires.error()));
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
    guard_.Post([this, r = std::move(r), reply = std::move(reply)]() mutable {
      for (auto& f : *r.mutable_fires())  // fresher in memory for a task in flight
        if (auto state = hooks_.live_state(f.task_id())) f.set_state(*state);
      reply(std::move(r));
    });
  });
}

}  // namespace corral::head
