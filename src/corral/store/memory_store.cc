// MemoryStore: the Store in memory, with the same semantics as SqliteStore (the shared test suite
// holds both to them). For tests, and for heads without a state dir.
#include <algorithm>
#include <tuple>
#include <map>
#include <set>

#include "corral/store/store.h"

namespace corral::store {
namespace {

class MemoryStore final : public Store {
 public:
  Result<std::vector<SubmitResult>> Submit(const std::vector<DurableTask>& tasks) override {
    std::vector<SubmitResult> out;
    for (const auto& t : tasks) {
      if (tasks_.contains(t.id)) {
        out.push_back({t.id, false});
        continue;
      }
      if (!t.idempotency_key.empty()) {
        auto k = keys_.find(t.idempotency_key);
        if (k != keys_.end()) {
          out.push_back({k->second, false});
          continue;
        }
        keys_[t.idempotency_key] = t.id;
      }
      tasks_[t.id] = t;
      out.push_back({t.id, true});
    }
    return out;
  }

  Status Update(const std::vector<TaskUpdate>& updates) override {
    for (const auto& u : updates) {
      auto it = tasks_.find(u.id);
      if (it == tasks_.end()) continue;
      DurableTask& t = it->second;
      t.state = u.state;
      t.attempt = u.attempt;
      t.runs = std::max(t.runs, u.runs);
      if (u.eta_ns > 0) t.eta_ns = u.eta_ns;
      t.result = u.result;
      t.error = u.error;
      t.updated_ns = u.at_ns;
      t.finished_ns = IsFinal(u.state) ? u.at_ns : 0;
    }
    return Status::Ok();
  }

  Result<std::vector<SubmitResult>> Apply(const std::vector<DurableTask>& tasks,
                                          const std::vector<TaskUpdate>& updates) override {
    auto out = Submit(tasks);
    if (out) CORRAL_RETURN_IF_ERROR_R(Update(updates));
    return out;
  }

  Result<std::optional<DurableTask>> Get(const std::string& id) override {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return std::optional<DurableTask>();
    return std::optional<DurableTask>(it->second);
  }

  Result<std::vector<DurableTask>> List(const TaskFilter& f) override {
    std::vector<DurableTask> out;
    for (auto it = tasks_.upper_bound(f.after_id); it != tasks_.end() && static_cast<int>(out.size()) < f.limit; ++it) {
      if (f.state && it->second.state != *f.state) continue;
      if (!f.queue.empty() && it->second.queue != f.queue) continue;
      out.push_back(it->second);
    }
    return out;
  }

  Result<std::vector<DurableTask>> Unfinished() override {
    std::vector<DurableTask> out;
    for (const auto& [id, t] : tasks_)
      if (t.finished_ns == 0) out.push_back(t);
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return std::tie(a.created_ns, a.id) < std::tie(b.created_ns, b.id); });
    return out;
  }

  Result<bool> Forget(const std::string& id) override {
    auto it = tasks_.find(id);
    if (it == tasks_.end() || it->second.finished_ns == 0) return false;
    if (!it->second.idempotency_key.empty()) keys_.erase(it->second.idempotency_key);
    tasks_.erase(it);
    return true;
  }

  Result<int> PurgeFinished(int64_t before_ns, int limit) override {
    std::vector<std::pair<int64_t, std::string>> old;
    for (const auto& [id, t] : tasks_)
      if (t.finished_ns > 0 && t.finished_ns < before_ns) old.emplace_back(t.finished_ns, id);
    std::sort(old.begin(), old.end());
    std::erase_if(fires_, [&](const auto& f) { return f.second.fired_ns < before_ns; });
    int n = 0;
    for (const auto& [at, id] : old) {
      if (n == limit) break;
      if (!tasks_[id].idempotency_key.empty()) keys_.erase(tasks_[id].idempotency_key);
      tasks_.erase(id);
      n++;
    }
    return n;
  }

  Status PutQueue(const QueueConfig& q) override {
    queues_[q.name] = q;
    return Status::Ok();
  }
  Result<std::vector<QueueConfig>> ListQueues() override {
    std::vector<QueueConfig> out;
    for (const auto& [name, q] : queues_) out.push_back(q);
    return out;
  }

  Status PutSchedule(const Schedule& s) override {
    schedules_[s.name] = s;
    return Status::Ok();
  }
  Result<std::optional<Schedule>> GetSchedule(const std::string& name) override {
    auto it = schedules_.find(name);
    if (it == schedules_.end()) return std::optional<Schedule>();
    return std::optional<Schedule>(it->second);
  }
  Result<std::vector<Schedule>> ListSchedules() override {
    std::vector<Schedule> out;
    for (const auto& [name, s] : schedules_) out.push_back(s);
    return out;
  }
  Result<bool> DeleteSchedule(const std::string& name) override {
    std::erase_if(fires_, [&](const auto& f) { return f.first.first == name; });
    return schedules_.erase(name) > 0;
  }

  Result<bool> RecordFire(const ScheduleFire& fire, const DurableTask& task) override {
    auto key = std::make_pair(fire.name, fire.slot_ns);
    if (fires_.contains(key)) return false;
    if (tasks_.contains(task.id)) return Err(Code::kAlreadyExists, "a task with that id is already stored");
    fires_[key] = fire;
    if (auto s = schedules_.find(fire.name); !fire.manual && s != schedules_.end())
      s->second.last_slot_ns = std::max(s->second.last_slot_ns, fire.slot_ns);
    tasks_[task.id] = task;
    return true;
  }
  Result<std::vector<ScheduleFire>> FireHistory(const std::string& name, int limit) override {
    std::vector<ScheduleFire> out;
    for (auto it = fires_.rbegin(); it != fires_.rend() && static_cast<int>(out.size()) < limit; ++it)
      if (it->first.first == name) out.push_back(it->second);
    return out;
  }

  Result<std::vector<std::string>> KnownFunctions() override {
    std::set<std::string> names;
    for (const auto& [id, t] : tasks_) names.insert(t.function);
    for (const auto& [n, s] : schedules_) names.insert(s.function);
    return std::vector<std::string>(names.begin(), names.end());
  }

  Status Checkpoint() override { return Status::Ok(); }

 private:
  std::map<std::string, DurableTask> tasks_;
  std::map<std::string, std::string> keys_;  // idempotency key -> id
  std::map<std::string, Schedule> schedules_;
  std::map<std::string, QueueConfig> queues_;
  std::map<std::pair<std::string, int64_t>, ScheduleFire> fires_;
};

}  // namespace

std::unique_ptr<Store> NewMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace corral::store
