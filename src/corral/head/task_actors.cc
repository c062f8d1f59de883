// TaskManager's actors: creation tasks that stay running, and the calls that go to them.
#include <algorithm>

#include <fmt/ranges.h>

#include "corral/base/log.h"
#include "corral/head/task_manager.h"

namespace corral::head {
namespace {

const char* StateName(int state) {
  static const char* kNames[] = {"PENDING", "ALIVE", "RESTARTING", "DEAD"};
  return kNames[state];
}

std::string Describe(const proto::ActorSpec& spec, const std::string& id) {
  std::string who = spec.class_name().empty() ? std::string("actor") : spec.class_name();
  if (!spec.name().empty()) return fmt::format("actor {} '{}' ({})", who, Printable(spec.name()), Hex(id));
  return fmt::format("actor {} ({})", who, Hex(id));
}

}  // namespace

bool TaskManager::MayUseActor(const ClientSession& client, const Actor& actor) const {
  // Not by the id's client prefix: a client picks its own id, and a detached actor's creator may be gone.
  return client.may_touch_any || IsWorkerToken(client.token_id) || client.token_id == actor.owner_token;
}

std::string TaskManager::AdmitActorTask(ClientSession* client, const std::string& id, Task& task,
                                        const proto::TaskSpec& spec, proto::ErrorKind* kind) {
  if (spec.has_actor()) {
    *kind = proto::RUNTIME;
    if (spec.actor_id() != id) return "an actor's creation must carry its own task id as the actor id";
    if (!spec.durable_function().empty()) return "an actor cannot be a durable task";
    std::pair<std::string, std::string> key{spec.actor().namespace_(), spec.actor().name()};
    if (!key.second.empty() && actor_names_.contains(key))
      return fmt::format("an actor named '{}' already exists in namespace '{}'; pick another name, get it with "
                         "corral.get_actor(), or pass get_if_exists=True",
                         Printable(key.second), Printable(key.first));
    task.actor = true;
    Actor& a = actors_[id];
    a.spec = spec.actor();
    a.owner_token = client->token_id;
    a.max_restarts = spec.max_retries();
    for (const auto& [k, v] : spec.resources()) a.resources.Set(k, v);
    if (!key.second.empty()) actor_names_[key] = id;
    Count("actors_created");
    return "";
  }
  *kind = proto::ACTOR_DIED;
  auto it = actors_.find(spec.actor_id());
  if (it == actors_.end())
    return fmt::format("{} calls actor {}, which the head does not know (it ended long ago, or the head restarted)",
                       Printable(spec.name()), Hex(spec.actor_id()));
  if (!MayUseActor(*client, it->second)) {
    Count("actor_calls_refused");
    return fmt::format("{} calls actor {}, which belongs to a client with another token", Printable(spec.name()),
                       Hex(spec.actor_id()));
  }
  const auto& methods = it->second.spec.methods();
  if (std::find(methods.begin(), methods.end(), spec.method()) == methods.end())
    return fmt::format("{} has no method '{}' (its methods: {})", Describe(it->second.spec, it->first),
                       Printable(spec.method()), fmt::join(methods, ", "));
  task.actor_call = true;
  Actor& a = it->second;
  uint64_t seq = a.next_seq++;
  a.seq[IdKey(id)] = seq;
  a.pending.emplace(seq, IdKey(id));  // its place in line, kept while it waits for its arguments
  Count("actor_calls_submitted");
  return "";
}

void TaskManager::EnqueueCall(const std::string& id, Task& task) {
  bool was_running = task.state == TaskState::kDispatched;  // a retry
  task.state = TaskState::kQueued;
  std::string actor_id = ActorOf(task);
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) {
    Finish(id, ErrorValue(id, proto::ACTOR_DIED, fmt::format("actor {} is gone", Hex(actor_id))));
    return;
  }
  Actor& a = it->second;
  if (was_running) a.running--;
  EndDirect(actor_id, a, id, task);  // (a retry: it has its place in line again)
  bool direct = task.direct;
  task.direct = false;
  if (a.state == Actor::State::kDead) {
    // A direct call whose end came before its record ran before the actor died (its caller holds
    // a lone call's record a few ms, decision 47): that end stands, not the death.
    if (direct && direct_early_.contains(id) && MarkDirect(id, task, a)) return;
    proto::ObjectValue v = a.death;
    Finish(id, std::move(v));
    return;
  }
  if (direct && MarkDirect(id, task, a)) return;
  auto s = a.seq.find(IdKey(id));
  if (s != a.seq.end()) a.pending.emplace(s->second, IdKey(id));  // a retry: back to its place
  PumpActor(actor_id, a);
}

void TaskManager::EndDirect(const std::string& actor_id, Actor& a, const std::string& id, Task& task) {
  if (!task.direct_recorded) return;
  task.direct_recorded = false;
  auto d = a.direct_running.find(id.substr(0, 8));
  if (d == a.direct_running.end() || --d->second > 0) return;
  a.direct_running.erase(d);
  if (!a.pending.empty()) QueuePump(actor_id, a);  // its caller's calls held behind it may go
}

bool TaskManager::MarkDirect(const std::string& id, Task& task, Actor& a) {
  Node* node = nodes_.Find(DirectNodeOf(task));
  if (node == nullptr) return false;
  if (auto s = a.seq.find(IdKey(id)); s != a.seq.end()) a.pending.erase(s->second);  // (its place stays for a retry)
  // While it runs, its caller's later calls that come through the head (this one was lost or
  // handed back, its node went away) wait: they could reach the worker before it (PumpActor).
  a.direct_running[id.substr(0, 8)]++;
  task.direct_recorded = true;
  task.state = TaskState::kDispatched;
  task.node = node->view.id;
  node->tasks.insert(id);
  a.running++;
  Count("actor_calls_direct");
  MarkStarted(id, task, *node);
  if (auto e = direct_early_.find(id); e != direct_early_.end()) {
    DirectEarly early = std::move(e->second);
    direct_early_.erase(e);
    if (Node* from = nodes_.Find(early.node)) OnTaskFinished(from, std::move(early.finished));
  } else if (node->state == NodeState::kDead || node->state == NodeState::kLeft) {
    Requeue(id, task, node, node->state == NodeState::kDead ? "died" : "left");  // (what a death did to its calls)
  }
  return true;
}

void TaskManager::DirectLost(ClientSession* client, const proto::DirectLost& lost) {
  std::map<std::string, proto::HeadToAgent> probes;  // by node
  for (const auto& id : lost.task_ids()) {
    auto t = tasks_.find(id);
    if (t == tasks_.end() || !OwnsId(client, id) || !t->second.actor_call || t->second.state == TaskState::kFinished)
      continue;
    if (!lost.worker_died().empty()) {
      // Sent on the call channel of an actor's worker that then exited (decision 50): ended as the
      // calls it had taken are (the agent reports those itself; the later of the two is stale).
      Task& task = t->second;
      if (task.attempt != 0 || !(task.direct || task.direct_recorded)) continue;
      Node* node = nodes_.Find(task.direct ? DirectNodeOf(task) : task.node.str());
      if (!node) continue;  // (its death ends it)
      proto::TaskFinished died;
      died.set_task_id(id);
      died.set_direct(true);
      died.set_node_id(node->view.id);
      died.mutable_result()->set_error(proto::WORKER_DIED);
      died.mutable_result()->set_message(lost.worker_died());
      Count("direct_calls_died_on_channels");
      OnTaskFinished(node, std::move(died));
      continue;
    }
    std::string node = t->second.direct ? DirectNodeOf(t->second) : t->second.node.str();  // (not recorded yet: where sent)
    if (node.empty()) continue;
    proto::DirectCalls* probe = probes[node].mutable_probe_calls();
    probe->add_task_ids(id);
    probe->add_attempts(t->second.attempt);
  }
  for (auto& [node_id, msg] : probes) {
    Node* node = nodes_.Find(node_id);
    if (node && node->conn) {
      node->conn->Send(msg);
    } else if (node) {  // asked when it registers again (or its death re-queues them)
      proto::DirectCalls& kept = direct_probes_[node_id];
      kept.mutable_task_ids()->MergeFrom(msg.probe_calls().task_ids());
      kept.mutable_attempts()->MergeFrom(msg.probe_calls().attempts());
    }
  }
}

void TaskManager::OnCallsNotHeld(Node* node, const proto::DirectCalls& not_held) {
  for (int i = 0; i < not_held.task_ids_size() && i < not_held.attempts_size(); ++i) {
    const std::string& id = not_held.task_ids(i);
    auto t = tasks_.find(id);
    if (t == tasks_.end() || t->second.state == TaskState::kFinished || t->second.attempt != not_held.attempts(i) ||
        direct_early_.contains(id))
      continue;  // it ended there (its report came first), or moved on
    Task& task = t->second;
    if (task.direct) {
      if (DirectNodeOf(task) != node->view.id) continue;
      task.direct = false;  // never came: sent from here when its turn comes
      Count("direct_calls_lost");
    } else if (task.state == TaskState::kDispatched && task.node == node->view.id && task.actor_call) {
      Count("direct_calls_lost");
      ReleaseResources(id, task, node);
      if (task.cancel_requested)  // (its owner left, or cancelled it): it never ran
        Finish(id, ErrorValue(id, proto::CANCELLED, fmt::format("call {} was cancelled", NameOf(id, task))));
      else
        Retry(id, task, "its caller's connection to the node broke before the call arrived", /*failure=*/false);
    }
  }
}

void TaskManager::KeepEarlyEnd(Node* node, proto::TaskFinished&& finished) {
  Nanos now = Now();
  std::string id = finished.task_id();
  direct_early_order_.emplace_back(now, id);
  direct_early_[id] = DirectEarly{node->view.id, std::move(finished), now};
  Count("direct_call_ends_early");
  ExpireEarlyEnds(now);
}

void TaskManager::ExpireEarlyEnds(Nanos now) {
  // Oldest first: past their time, or past the cap (a caller that never submits what it sends).
  while (!direct_early_order_.empty() && (now - direct_early_order_.front().first > kDirectEarlyKeep ||
                                          direct_early_.size() > kDirectEarlyMax)) {
    auto e = direct_early_.find(direct_early_order_.front().second);
    if (e != direct_early_.end() && e->second.at == direct_early_order_.front().first) {
      if (Node* from = nodes_.Find(e->second.node)) DiscardStoredResult(from, e->second.finished);
      direct_early_.erase(e);
      Count("direct_call_ends_expired");
    }
    direct_early_order_.pop_front();
  }
  // Entries used meanwhile leave their place in line behind: dropped once they outnumber the rest.
  if (direct_early_order_.size() > 4 * direct_early_.size() + 1024) {
    std::erase_if(direct_early_order_, [&](const auto& entry) {
      auto e = direct_early_.find(entry.second);
      return e == direct_early_.end() || e->second.at != entry.first;
    });
  }
}

void TaskManager::ActorNotThere(const std::string& id, const Task& task, Node* node) {
  auto it = actors_.find(ActorOf(task));
  if (it == actors_.end() || it->second.state != Actor::State::kAlive || it->second.node != node->view.id) return;
  it->second.state = Actor::State::kPending;
  Count("actor_calls_handed_back");
}

bool TaskManager::CallMayRetry(const std::string& id, const Task& task) const {
  auto it = actors_.find(ActorOf(task));
  return it != actors_.end() && it->second.state != Actor::State::kDead && it->second.kill_reason.empty();
}

void TaskManager::PumpActor(const std::string& actor_id, Actor& a) {
  if (a.state != Actor::State::kAlive || !a.kill_reason.empty()) return;  // (a stopping actor takes no more)
  if (a.pumping) {  // reached again from a call finishing inside this pump: after it, in order
    QueuePump(actor_id, a);
    return;
  }
  Node* node = nodes_.Find(a.node);
  // A node that is away gets them when it registers again (ResumeActorsOn), or is declared dead.
  if (!node || !node->conn || node->state == NodeState::kDead || node->state == NodeState::kLeft) return;
  std::vector<std::string> held_back;  // callers with a call waiting for its arguments
  std::vector<std::string> ready;
  for (auto it = a.pending.begin(); it != a.pending.end();) {
    auto t = tasks_.find(it->second);
    if (t == tasks_.end() || t->second.state == TaskState::kFinished) {
      it = a.pending.erase(it);
      continue;
    }
    std::string id = it->second.str();
    std::string caller = id.substr(0, 8);
    bool held = std::find(held_back.begin(), held_back.end(), caller) != held_back.end() ||
                a.direct_running.contains(caller);
    // An argument being rebuilt (its node died) is waited for again, as for a task.
    if (!held && t->second.state == TaskState::kQueued && t->second.has_deps)
      WaitAgainForArguments(id, t->second, DepsOf(t->second));
    if (held || t->second.state != TaskState::kQueued) {
      if (!held) held_back.push_back(caller);
      ++it;
      continue;
    }
    it = a.pending.erase(it);
    ready.push_back(std::move(id));
  }
  // Sent after the walk: a send that fails finishes the call, which may finish others in the line.
  a.pumping = true;
  for (const auto& id : ready) {
    auto t = tasks_.find(id);
    if (t != tasks_.end() && t->second.state == TaskState::kQueued && !AdoptHeldCall(id, t->second, a, node))
      DispatchCall(id, t->second, a, node);
  }
  a.pumping = false;
}

void TaskManager::ResumeActorsOn(Node* node) {
  if (auto p = direct_probes_.find(node->view.id); p != direct_probes_.end()) {
    proto::HeadToAgent msg;
    *msg.mutable_probe_calls() = std::move(p->second);
    direct_probes_.erase(p);
    if (node->conn) node->conn->Send(msg);
  }
  for (auto& [id, a] : actors_)
    if (a.node == node->view.id && a.state == Actor::State::kAlive) PumpActor(id, a);
}

void TaskManager::QueuePump(const std::string& id, Actor& a) {
  if (std::exchange(a.pump_queued, true)) return;
  actors_to_pump_.push_back(id);
}

void TaskManager::PumpWaitingActors() {
  std::vector<std::string> ids = std::move(actors_to_pump_);
  actors_to_pump_.clear();
  for (const auto& id : ids)
    if (auto a = actors_.find(id); a != actors_.end()) {
      a->second.pump_queued = false;
      PumpActor(id, a->second);
    }
}

bool TaskManager::AdoptHeldCall(const std::string& id, Task& task, Actor& a, Node* node) {
  if (!task.resubmitted || task.attempt != 0) return false;
  auto o = orphans_.find(id);
  if (o == orphans_.end() || o->second.node != node->view.id) return false;
  Orphan orphan = std::move(o->second);
  orphans_.erase(o);
  task.state = TaskState::kDispatched;
  task.node = node->view.id;
  task.attempt = orphan.attempt;
  node->tasks.insert(id);
  a.running++;
  Count("attempts_adopted_after_restart");
  ReportHeldResult(node, id, orphan);
  return true;
}

void TaskManager::DispatchCall(const std::string& id, Task& task, Actor& a, Node* node) {
  task.state = TaskState::kDispatched;
  task.node = node->view.id;
  node->tasks.insert(id);
  a.running++;
  proto::HeadToAgent msg;
  proto::ExecuteTask* ex = msg.mutable_execute();
  *ex->mutable_spec() = SpecOf(id, task);
  ex->mutable_spec()->clear_owner_id();
  if (std::optional<size_t> bytes = SendWithArguments(msg, node)) {
    ReleaseResources(id, task, node);
    Finish(id, ErrorValue(id, proto::RUNTIME,
                          fmt::format("call {} with its arguments is {} bytes, over the {}-byte limit of one "
                                      "message; pass fewer or smaller values (or put() them)",
                                      ex->spec().name(), *bytes, net::kDefaultMaxFrameBytes)));
    return;
  }
  Count("actor_calls_dispatched");
  MarkStarted(id, task, *node);
}

void TaskManager::OnActorReady(Node* node, const proto::ActorReady& ready, bool pump) {
  auto t = tasks_.find(ready.actor_id());
  auto a = actors_.find(ready.actor_id());
  if (t == tasks_.end() || a == actors_.end() || !t->second.actor || t->second.state != TaskState::kDispatched ||
      t->second.attempt != ready.attempt() || t->second.node != node->view.id) {
    // After a head restart, before its creation was sent again: kept for when it is taken over.
    if (auto o = orphans_.find(ready.actor_id());
        o != orphans_.end() && o->second.node == node->view.id && o->second.attempt == ready.attempt())
      o->second.actor_ready = true;
    else
      Count("stale_actor_ready_ignored");
    return;
  }
  Actor& actor = a->second;
  actor.state = Actor::State::kAlive;
  actor.node = node->view.id;
  actor.pid = ready.pid();
  actor.ready_attempt = ready.attempt();
  LOG_INFO("{} is ready on node {} (pid {}, attempt {})", Describe(actor.spec, a->first), ShortHex(node->view.id),
           ready.pid(), ready.attempt());
  if (!pump) {
    QueuePump(a->first, actor);
    return;
  }
  PumpActor(a->first, actor);
  if (actor.collect) MaybeCollectActor(a->first);
}

void TaskManager::OnActorRestarting(const std::string& id, bool failure) {
  auto a = actors_.find(id);
  if (a == actors_.end()) return;
  a->second.state = Actor::State::kRestarting;
  if (!failure) return;
  a->second.restarts++;
  Count("actor_restarts");
  LOG_INFO("{} restarts (restart {})", Describe(a->second.spec, id), CountOf(a->second.restarts, a->second.max_restarts));
}

void TaskManager::OnActorTaskFinished(const std::string& id, Task& task, proto::ObjectValue& value,
                                      std::vector<std::pair<std::string, proto::ObjectValue>>& work) {
  if (task.actor_call) {
    std::string actor_id = ActorOf(task);
    auto it = actors_.find(actor_id);
    if (it == actors_.end()) return;
    Actor& a = it->second;
    if (task.state == TaskState::kDispatched)
      a.running--;
    else
      QueuePump(actor_id, a);  // it may have held back its caller's later calls
    if (auto s = a.seq.find(IdKey(id)); s != a.seq.end()) {
      a.pending.erase(s->second);
      a.seq.erase(s);
    }
    EndDirect(actor_id, a, id, task);
    switch (value.error()) {
      case proto::WORKER_DIED:
      case proto::NODE_DIED:
      case proto::OUT_OF_MEMORY:
        if (a.state == Actor::State::kDead) {  // what killed it says more than how the call ended
          value = a.death;
          break;
        }
        value.set_message(fmt::format("{} died before {} returned: {}", Describe(a.spec, actor_id),
                                      SpecOf(id, task).name(), value.message()));
        value.set_error(proto::ACTOR_DIED);
        break;
      default: break;
    }
    if (a.collect) MaybeCollectActor(actor_id);
    return;
  }
  auto it = actors_.find(id);
  if (it == actors_.end()) return;
  Actor& a = it->second;
  a.state = Actor::State::kDead;
  std::string why;
  if (value.error() == proto::ERROR_NONE)
    why = "it exited";
  else if (value.error() == proto::TASK_ERROR)
    why = "its constructor raised: " + value.message();
  else if (!a.kill_reason.empty())
    why = a.kill_reason;
  else
    why = value.message();
  if (value.error() != proto::TASK_ERROR && value.error() != proto::ERROR_NONE &&
      value.error() != proto::CANCELLED && a.restarts >= a.max_restarts)
    why += fmt::format(" (restarts used: {})", CountOf(a.restarts, a.max_restarts));
  a.death_cause = why;
  // Its calls get the constructor's exception itself, or ActorDiedError saying why.
  a.death = value.error() == proto::TASK_ERROR
                ? value
                : ErrorValue("", proto::ACTOR_DIED, fmt::format("{} is dead: {}", Describe(a.spec, id), why));
  LOG_INFO("{} died: {}", Describe(a.spec, id), Printable(why));
  Count("actors_died");
  if (!a.spec.name().empty()) {
    auto n = actor_names_.find({a.spec.namespace_(), a.spec.name()});
    if (n != actor_names_.end() && n->second == id) actor_names_.erase(n);
  }
  for (const auto& [seq, call] : a.pending) {
    auto t = tasks_.find(call);
    if (t == tasks_.end() || t->second.state == TaskState::kFinished || t->second.state == TaskState::kDispatched)
      continue;
    proto::ObjectValue v = a.death;
    work.emplace_back(call.str(), std::move(v));
  }
  a.pending.clear();
  DropContained(id);  // handles and refs among its constructor's arguments: no restart needs them
  // A detached actor whose creator is gone: nobody will release its end (its value goes once sent).
  if (a.spec.detached() && !clients_.contains(id.substr(0, 8))) {
    task.released = true;
    if (auto o = objects_.find(id); o != objects_.end()) o->second.released = true;
  }
  dead_actors_.push_back(id);
  while (dead_actors_.size() > kDeadActorsKept) {
    actors_.erase(dead_actors_.front());  // (calls still running there fail as for any gone actor)
    dead_actors_.pop_front();
  }
}

void TaskManager::StopActor(const std::string& id, std::string reason, bool restart) {
  auto t = tasks_.find(id);
  auto a = actors_.find(id);
  if (t == tasks_.end() || a == actors_.end() || t->second.state == TaskState::kFinished) return;
  Task& task = t->second;
  Actor& actor = a->second;
  LOG_INFO("{}: {}", Describe(actor.spec, id), Printable(reason));
  if (restart) {  // (one not running now is restarting or starting already)
    if (task.state == TaskState::kDispatched) {
      actor.restart_on_kill = true;
      actor.restart_reason = reason;
      CancelAttempt(nodes_.Find(task.node.view()), id, task.attempt, /*force=*/true);
    }
    return;
  }
  actor.kill_reason = std::move(reason);
  if (task.state != TaskState::kDispatched) {
    Finish(id, ErrorValue(id, proto::CANCELLED, actor.kill_reason));
    return;
  }
  task.cancel_requested = task.cancel_force = true;
  CancelAttempt(nodes_.Find(task.node.view()), id, task.attempt, /*force=*/true);
}

void TaskManager::MaybeCollectActor(const std::string& id) {
  auto t = tasks_.find(id);
  auto a = actors_.find(id);
  if (t == tasks_.end() || a == actors_.end() || !t->second.actor || t->second.state == TaskState::kFinished ||
      a->second.spec.detached())
    return;
  if (auto o = objects_.find(id); o != objects_.end()) {
    const Object& obj = o->second;
    if (!obj.released || obj.pinned || obj.dependents > 0 || obj.containers > 0 || obj.borrows > 0) return;
  } else if (!t->second.released) {
    return;
  }
  Actor& actor = a->second;
  actor.collect = true;
  if (!actor.pending.empty() || actor.running > 0) return;  // once its calls are done
  Count("actors_collected");
  StopActor(id, "no handle to it remains", /*restart=*/false);
}

void TaskManager::FillActor(const std::string& id, const Actor& a, proto::ActorInfo* out) const {
  out->set_actor_id(id);
  out->set_state(StateName(static_cast<int>(a.state)));
  out->set_node_id(a.node);
  if (const Node* n = nodes_.Find(a.node)) out->set_hostname(n->info.hostname());
  out->set_pid(a.state == Actor::State::kAlive ? a.pid : 0);
  out->set_restarts(a.restarts);
  out->set_max_restarts(a.max_restarts);
  out->set_death_cause(a.death_cause);
  for (const auto& [name, units] : a.resources.units()) (*out->mutable_resources())[name] = a.resources.Get(name);
  *out->mutable_spec() = a.spec;
  out->set_pending_calls(static_cast<int64_t>(a.pending.size()));
  out->set_running_calls(a.running);
}

void TaskManager::FillActors(google::protobuf::RepeatedPtrField<proto::ActorInfo>* out, bool include_dead) const {
  std::map<std::string, const Actor*> sorted;  // by id: creation order within a client
  for (const auto& [id, a] : actors_)
    if (include_dead || a.state != Actor::State::kDead) sorted.emplace(id, &a);
  for (const auto& [id, a] : sorted) FillActor(id, *a, out->Add());
}

Status TaskManager::HandleActorRequest(ClientSession* client, const proto::ActorRequest& request,
                                       proto::Reply* reply) {
  switch (request.op()) {
    case proto::ActorRequest::GET: {
      auto n = actor_names_.find({request.namespace_(), request.name()});
      if (n == actor_names_.end())
        return MakeStatus(Code::kNotFound, "no live actor named '{}' in namespace '{}'", Printable(request.name()),
                          Printable(request.namespace_()));
      const Actor& a = actors_.at(n->second);
      if (!MayUseActor(*client, a))
        return MakeStatus(Code::kPermissionDenied, "actor '{}' belongs to a client with another token",
                          Printable(request.name()));
      FillActor(n->second, a, reply->add_actors());
      return Status::Ok();
    }
    case proto::ActorRequest::KILL: {
      auto a = actors_.find(request.actor_id());
      if (a == actors_.end()) return MakeStatus(Code::kNotFound, "no actor {}", Hex(request.actor_id()));
      if (!MayUseActor(*client, a->second))
        return MakeStatus(Code::kPermissionDenied, "actor {} belongs to a client with another token",
                          Hex(request.actor_id()));
      Count("actors_killed");
      StopActor(a->first,
                request.restart() ? "its worker was killed by corral.kill(no_restart=False)" : "killed by corral.kill()",
                request.restart());
      return Status::Ok();
    }
    case proto::ActorRequest::ROUTE: {  // (the head server adds the ticket)
      auto a = actors_.find(request.actor_id());
      if (a == actors_.end()) return MakeStatus(Code::kNotFound, "no actor {}", Hex(request.actor_id()));
      if (!MayUseActor(*client, a->second))
        return MakeStatus(Code::kPermissionDenied, "actor {} belongs to a client with another token",
                          Hex(request.actor_id()));
      const Actor& actor = a->second;
      Node* node = nodes_.Find(actor.node);
      // Only to a ready actor on a node that is there: otherwise calls wait at the head, in order.
      if (actor.state == Actor::State::kAlive && actor.kill_reason.empty() && node && node->conn &&
          node->state == NodeState::kAlive && !node->info.call_address().empty()) {
        reply->mutable_route()->set_node_id(actor.node);
        reply->mutable_route()->set_address(node->info.call_address());
        reply->mutable_route()->set_socket(node->info.call_socket());
        reply->mutable_route()->set_host_key(node->info.host_key());
      } else if (actor.state != Actor::State::kDead && (!node || !node->info.call_address().empty())) {
        reply->mutable_route()->set_pending(true);
      }
      return Status::Ok();
    }
    case proto::ActorRequest::LIST: {
      FillActors(reply->mutable_actors(), request.include_dead());
      auto* list = reply->mutable_actors();  // those this client may use
      for (int i = list->size() - 1; i >= 0; --i) {
        auto a = actors_.find(list->Get(i).actor_id());
        if (a == actors_.end() || !MayUseActor(*client, a->second)) list->DeleteSubrange(i, 1);
      }
      return Status::Ok();
    }
    default: return MakeStatus(Code::kInvalidArgument, "unknown actor request");
  }
}

}  // namespace corral::head
