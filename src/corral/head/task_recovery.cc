// TaskManager after a disconnection or a restart: a node that registers again is reconciled with
// the attempts it still holds, and just after a head restart, resubmitted tasks adopt the attempts
// re-registering agents hold (or wait for them until the grace ends).
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/task_manager.h"

namespace corral::head {

void TaskManager::Reconcile(Node* node, const google::protobuf::RepeatedPtrField<proto::HeldAttempt>& held) {
  SendPendingDeletes(node);  // values freed while it was away
  std::unordered_map<std::string, const proto::HeldAttempt*> by_id;
  for (const auto& h : held) by_id[h.task_id()] = &h;
  // Placed here, but the agent no longer has it (its lease ran out, or it is a new agent process).
  std::vector<std::string> lost;
  for (const auto& id : node->tasks) {
    auto h = by_id.find(id);
    auto t = tasks_.find(id);
    if (h == by_id.end() || (t != tasks_.end() && h->second->attempt() != t->second.attempt)) lost.push_back(id);
  }
  for (const auto& id : ActorsFirst(lost)) {
    Count("attempts_lost_while_disconnected");
    if (auto t = tasks_.find(id); t != tasks_.end()) Requeue(id, t->second, node, "no longer held the attempt");
  }
  for (const auto& h : held) {
    auto t = tasks_.find(h.task_id());
    if (t != tasks_.end() && t->second.state == TaskState::kDispatched && t->second.node == node->view.id &&
        t->second.attempt == h.attempt()) {
      Task& task = t->second;
      if (h.blocked() != task.blocked) {
        proto::Blocked b;
        b.set_task_id(h.task_id());
        b.set_blocked(h.blocked());
        OnBlocked(node, b);
      }
      // A cancel sent while it was away never reached it.
      if (task.cancel_requested) CancelAttempt(node, h.task_id(), h.attempt(), task.cancel_force);
      continue;  // still the current attempt: it goes on (its result, if it has one, follows)
    }
    // After a (re)start: an attempt of a task not resubmitted yet, or resubmitted and still waiting
    // (parked, or for its dependencies, which are resubmitted too): keep it for that task.
    bool waiting_for_it = t == tasks_.end() ||
                          (t->second.resubmitted && t->second.attempt == 0 &&
                           ((t->second.state == TaskState::kQueued && (t->second.parked || t->second.actor_call)) ||
                            t->second.state == TaskState::kWaitingDeps));  // (a call waits in its actor's line)
    if (InGrace() && waiting_for_it) {
      orphans_[h.task_id()] = Orphan{node->view.id, h.attempt(), std::nullopt, h.actor_ready()};
      if (t != tasks_.end() && t->second.parked) AdoptOrPark(h.task_id(), t->second);
      else if (t == tasks_.end() && on_orphan_held) on_orphan_held(h.task_id());
      continue;
    }
    if (!h.finished()) {
      Count("superseded_attempts_stopped");
      CancelAttempt(node, h.task_id(), h.attempt());
    }
  }
  // Its resources may differ now (a new agent process under the same id): count afresh what it runs.
  node->view.available = node->view.total;
  node->view.available.Subtract(node->reserved_plain);  // (held for gangs, under their own names)
  double cpus = 0;
  for (const auto& id : node->tasks) {
    auto t = tasks_.find(id);
    if (t == tasks_.end() || !t->second.cls || t->second.actor_call) continue;  // (its actor holds the resources)
    node->view.available.Subtract(t->second.cls->request.resources);
    if (t->second.blocked) node->view.available.Add(CpuPart(t->second.cls->request.resources));
    cpus += t->second.cls->request.resources.Get(kCpu);
  }
  node->view.prefetch_limit = static_cast<int>(node->view.total.Get(kCpu)) * options_.prefetch_per_cpu;
  node->view.prefetched = std::max(0, static_cast<int>(cpus - node->view.total.Get(kCpu)));
  dirty_ = true;
  ResumeActorsOn(node);  // calls that waited while it was away
}

bool TaskManager::AdoptOrPark(const std::string& id, Task& task) {
  if (task.state == TaskState::kFinished || task.state == TaskState::kDispatched) return true;
  auto o = orphans_.find(id);
  Node* node = o == orphans_.end() ? nullptr : nodes_.Find(o->second.node);
  if (node && node->state != NodeState::kDead && node->state != NodeState::kLeft) {
    Orphan orphan = std::move(o->second);
    if (!orphan.result) orphans_.erase(o);  // with a result, OnTaskFinished-like handling below
    task.parked = false;
    task.state = TaskState::kDispatched;
    task.node = node->view.id;
    task.attempt = orphan.attempt;
    node->view.available.Subtract(task.cls->request.resources);
    node->tasks.insert(id);
    if (task.function) node->shipped_functions.insert(task.function->hash);  // it ran the function already
    Count("attempts_adopted_after_restart");
    if (task.durable && on_durable_adopted) on_durable_adopted(id);
    if (task.actor && orphan.actor_ready) {  // its worker lives on there, ready: its calls may go
      proto::ActorReady ready;
      ready.set_actor_id(id);
      ready.set_attempt(orphan.attempt);
      // Its calls go from Schedule, once the node's other held attempts (its calls among them) are known.
      OnActorReady(node, ready, /*pump=*/false);
    }
    LOG_INFO("task {} ({}) resubmitted after a restart: node {} still holds attempt {}", ShortHex(id),
             Printable(NameOf(id, task)), ShortHex(node->view.id), orphan.attempt);
    ReportHeldResult(node, id, orphan);
    return true;
  }
  if (!InGrace()) return false;
  if (!task.parked) {
    task.parked = true;
    task.state = TaskState::kQueued;
    parked_.push_back(id);
  }
  return true;
}

void TaskManager::ReportHeldResult(Node* node, const std::string& id, Orphan& orphan) {
  if (!orphan.result) return;
  proto::TaskFinished f;
  f.set_task_id(id);
  f.set_attempt(orphan.attempt);
  *f.mutable_result() = std::move(*orphan.result);
  OnTaskFinished(node, std::move(f));
}

void TaskManager::EndGrace() {
  grace_ = false;
  for (const auto& id : parked_) {
    auto t = tasks_.find(id);
    if (t == tasks_.end() || !t->second.parked || t->second.state != TaskState::kQueued) continue;
    t->second.parked = false;
    Enqueue(id, t->second);
  }
  parked_.clear();
  size_t stopped = 0;
  for (auto it = orphans_.begin(); it != orphans_.end();) {
    // A resubmitted call still in its actor's line keeps its orphan: it is taken over when its
    // turn comes (AdoptHeldCall), not sent again (an actor's calls cannot be stopped alone).
    auto t = tasks_.find(it->first);
    if (t != tasks_.end() && t->second.actor_call && t->second.state != TaskState::kFinished &&
        t->second.state != TaskState::kDispatched) {
      ++it;
      continue;
    }
    if (!it->second.result) {
      Count("superseded_attempts_stopped");
      CancelAttempt(nodes_.Find(it->second.node), it->first, it->second.attempt);
      stopped++;
    }
    it = orphans_.erase(it);
  }
  if (stopped > 0)
    LOG_INFO("{} attempt(s) that agents held across the head restart were not resubmitted: stopped", stopped);
}

}  // namespace corral::head
