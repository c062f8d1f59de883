// ScheduleBook: the durable schedules (Celery beat's job, in the head). Schedules live in the
// store; each slot fires once, also across restarts: the store records (schedule, slot) with the
// task it submitted, in one transaction, and a slot's task id is derived from (schedule, slot).
//
// Slots are wall-clock times: cron slots in the schedule's zone (see base/cron.h for DST), `every`
// slots at multiples of the period since the epoch. A slot is late when it is found more than 30 s
// after its time (the head was down, or the clock stepped forward); the misfire policy says what
// late slots do: run_once (default) fires the latest of them once, skip fires none, run_all fires
// each (at most 1000). A clock that steps backward fires nothing twice: slots only move forward
// from the last one fired. Slots that pass while a schedule is paused are skipped. A fire the store
// failed to record is tried again at the next FireDue.
//
// Changes (add, pause, resume, remove) are stored first and take effect here only once stored.
// io thread only; store work runs on the committer's thread.
#pragma once

#include "corral/base/histogram.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "corral/base/clock.h"
#include "corral/client.pb.h"
#include "corral/head/io_guard.h"
#include "corral/store/group_commit.h"

namespace corral::head {

class ScheduleBook {
 public:
  using Reply = std::function<void(proto::Reply)>;
  struct Hooks {
    // kInvalidArgument when the function is not one workers registered.
    std::function<Status(const std::string& function)> validate;
    // A fire is stored together with its task: the task table takes the task (it is due now).
    std::function<void(store::DurableTask task)> fired;
    // The state of an unfinished task in memory, fresher than the store's; nullopt: not in memory.
    std::function<std::optional<std::string>(const std::string& id)> live_state;
  };

  ScheduleBook(boost::asio::io_context& io, store::GroupCommitter& committer, const Clock& clock, Hooks hooks);

  // The stored schedules (a head that starts).
  void Load(std::vector<store::Schedule> schedules);
  // Fires the slots that are due (the misfire policy for late ones). Every tick.
  void FireDue();
  // Add, list, pause, resume, remove, run now, history.
  void Handle(const proto::ScheduleRequest& request, Reply reply);
  size_t size() const { return schedules_.size(); }
  void FillCounters(std::map<std::string, int64_t>* counters) const;
  // How late slots fired (seconds after their nominal time; run-now fires not counted).
  const Histogram& lag() const { return lag_; }

 private:
  Result<int64_t> NextSlot(const store::Schedule& s, int64_t after_ns) const;
  proto::ScheduleSpec Info(const store::Schedule& s) const;
  void Fire(const store::Schedule& s, int64_t slot_ns, Reply reply = nullptr, bool manual = false);
  // Stores `s`, then (only once stored) makes it the schedule here, and answers.
  void Persist(store::Schedule s, Reply reply);
  void History(const std::string& name, int limit, Reply reply);

  store::GroupCommitter& committer_;
  const Clock& clock_;
  Hooks hooks_;
  std::map<std::string, store::Schedule> schedules_;  // by name
  // Slots whose fire the store failed to record: fired again at the next FireDue (a fire is keyed
  // by schedule and slot, so a retry never fires a slot twice).
  std::vector<std::pair<std::string, int64_t>> unrecorded_fires_;
  Histogram lag_;
  std::map<std::string, int64_t> counters_;
  IoGuard guard_;  // last: goes first
};

}  // namespace corral::head
