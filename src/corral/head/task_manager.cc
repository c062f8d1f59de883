#include "corral/head/task_manager.h"

#include "corral/base/ids.h"
#include "corral/base/log.h"

namespace corral::head {

proto::ObjectValue TaskManager::ErrorValue(const std::string& id, proto::ErrorKind kind, std::string message) {
  proto::ObjectValue v;
  v.set_id(id);
  v.set_error(kind);
  v.set_message(std::move(message));
  return v;
}

void TaskManager::AddClient(ClientSession* client) { clients_[client->id] = client; }

void TaskManager::RemoveClient(ClientSession* client) {
  clients_.erase(client->id);
  RemoveGangsOf(client->id, client->name);
  if (Owned(client->id) > 0) {
    // What it owns is found by its id (the prefix of every id it made), not kept in a set per
    // client: this walk, when an owner leaves, is cheaper than a set entry for each of its tasks.
    std::vector<std::string> owned;
    for (const auto& [key, task] : tasks_)
      if (!task.durable && key.view().starts_with(client->id)) owned.push_back(key.str());  // (see OwnerOf)
    for (const auto& [key, obj] : objects_)
      if (obj.owner == client->id && !tasks_.contains(key)) owned.push_back(key.str());
    for (const auto& id : owned) {
      auto t = tasks_.find(id);
      if (t != tasks_.end() && t->second.state != TaskState::kFinished) {
        if (t->second.actor) {
          auto a = actors_.find(id);
          if (a != actors_.end() && a->second.spec.detached()) continue;  // outlives its creator
          if (a != actors_.end()) a->second.kill_reason = fmt::format("its creator ({}) exited", client->name);
        }
        proto::Cancel c;
        c.set_task_id(id);
        c.set_force(true);
        Cancel(client, c);
      }
      if (t = tasks_.find(id); t != tasks_.end()) t->second.released = true;
      auto o = objects_.find(id);
      if (o != objects_.end()) {
        o->second.released = true;
        o->second.pinned = false;
        TryFree(id);
      }
    }
    // Its calls running on actors may be direct ones their agent never got (it left between its
    // two sends): their nodes are asked, and one never got ends cancelled (OnCallsNotHeld).
    proto::DirectLost unsure;
    for (const auto& id : owned)
      if (auto t = tasks_.find(id); t != tasks_.end() && t->second.actor_call && t->second.state == TaskState::kDispatched)
        unsure.add_task_ids(id);
    if (unsure.task_ids_size() > 0) DirectLost(client, unsure);
  }
  std::unordered_map<std::string, int> borrowed = std::move(client->borrowed);
  client->borrowed.clear();
  for (const auto& [id, n] : borrowed)
    if (auto o = objects_.find(id); o != objects_.end()) {
      o->second.borrows -= n;
      TryFree(id);
    }
  for (const auto& hash : client->functions) DropFunction(hash);
  client->functions.clear();
}

void TaskManager::DropFunction(const std::string& hash) {
  auto it = functions_.find(hash);
  if (it == functions_.end() || --it->second.uses > 0) return;
  functions_.erase(it);
  Count("functions_forgotten");
  proto::HeadToAgent msg;
  msg.mutable_forget_functions()->add_hashes(hash);
  for (Node* n : nodes_.All())
    if (n->shipped_functions.erase(hash) && n->conn) n->conn->Send(msg);
}

void TaskManager::SendToClient(const std::string& client_id, const proto::HeadToClient& msg) {
  auto it = clients_.find(client_id);
  if (it != clients_.end() && it->second->conn) it->second->conn->Send(msg);
}


void TaskManager::Notice(const std::string& task_id, const std::string& owner, const std::string& text) {
  proto::HeadToClient msg;
  msg.mutable_notice()->set_task_id(task_id);
  msg.mutable_notice()->set_text(text);
  SendToClient(owner, msg);
}

TaskManager::Object* TaskManager::ObjectFor(const std::string& id) {
  if (auto o = objects_.find(id); o != objects_.end()) return &o->second;
  auto t = tasks_.find(id);
  if (t == tasks_.end()) return nullptr;
  // Finished tasks keep their entry while they are kept; this one is not finished yet.
  Object& obj = objects_[id];
  obj.owner = OwnerOf(id, t->second);
  obj.has_task = true;
  obj.released = t->second.released;
  return &obj;
}

void TaskManager::Cancel(ClientSession* client, const proto::Cancel& request) {
  const std::string& id = request.task_id();
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  Task& task = it->second;
  if (!client->may_touch_any && OwnerOf(id, task) != client->id) {
    Count("cancels_refused_not_owner");  // another client's task (its id is no secret)
    if (!client->id.empty())
      Notice(id, client->id, fmt::format("cancel of task {} refused: it belongs to another client (an admin token "
                                         "may cancel any task)", Hex(id)));
    return;
  }
  switch (task.state) {
    case TaskState::kFinished:
      return;
    case TaskState::kWaitingDeps:
    case TaskState::kQueued:
      // A direct call not recorded yet may be running where its caller sent it.
      if (task.direct) CancelAttempt(nodes_.Find(DirectNodeOf(task)), id, task.attempt, request.force());
      Finish(id, ErrorValue(id, proto::CANCELLED, fmt::format("task {} was cancelled", NameOf(id, task))));
      return;
    case TaskState::kDispatched: {
      task.cancel_requested = true;
      task.cancel_force = task.cancel_force || request.force();
      CancelAttempt(nodes_.Find(task.node.view()), id, task.attempt, request.force());
      return;
    }
  }
}

void TaskManager::Enqueue(const std::string& id, Task& task) {
  if (task.actor_call) return EnqueueCall(id, task);
  if (task.resubmitted && task.attempt == 0 && grace_ && AdoptOrPark(id, task)) return;
  if (task.state == TaskState::kWaitingDeps) {  // its arguments are ready: its wait for a node starts now
    journal_.Ready(task.journal, id);
    task.since = Now();
  }
  task.state = TaskState::kQueued;
  SchedClass& cls = *task.cls;
  cls.queue.push_back(id);
  if (!cls.infeasible.empty() && !task.told_infeasible) {
    task.told_infeasible = true;
    Notice(id, OwnerOf(id, task),
           fmt::format("{} {} cannot be scheduled: it {}. It stays pending until such a node joins.",
                       task.actor ? "actor" : "task", NameOf(id, task), cls.infeasible));
  }
  dirty_ = true;
}

void TaskManager::Schedule() {
  if (!actors_to_pump_.empty()) PumpWaitingActors();  // (before the grace's end drops orphans they may adopt)
  if (grace_ && !InGrace()) EndGrace();
  if (!direct_early_order_.empty()) ExpireEarlyEnds(Now());
  if (!dirty_ && !nodes_changed_) return;
  // Gangs first: one waiting for room takes it before single tasks fill it again.
  bool reserved = gangs_.HasPending() && gangs_.ReservePending();
  bool recheck = nodes_changed_ || reserved;
  dirty_ = nodes_changed_ = false;
  const auto& views = nodes_.LiveViews();
  for (auto cit = classes_.begin(); cit != classes_.end();) {
    SchedClass& cls = cit->second;
    if (!cls.gang_id.empty()) {
      const GangBook::Gang* g = gangs_.Find(cls.gang_id);
      if (!g) {  // removed while these waited (e.g. a result being rebuilt): they cannot run
        std::vector<std::string> queued;
        for (const auto& key : cls.queue) queued.push_back(key.str());
        cls.queue.clear();
        for (const auto& tid : queued)
          if (auto t = tasks_.find(tid); t != tasks_.end() && t->second.state == TaskState::kQueued)
            Finish(tid, ErrorValue(tid, proto::CANCELLED,
                                   fmt::format("{} cannot run: its gang {} was removed", NameOf(tid, t->second),
                                               ShortHex(cls.gang_id))));
      } else if (g->state == GangBook::State::kPending) {  // waits for its gang, without a word of infeasibility
        ++cit;
        continue;
      }
    }
    if (!cls.infeasible.empty() && !recheck) {
      ++cit;
      continue;
    }
    cls.infeasible.clear();
    while (!cls.queue.empty()) {
      auto tit = tasks_.find(cls.queue.front());
      if (tit == tasks_.end() || tit->second.state != TaskState::kQueued) {
        cls.queue.pop_front();  // cancelled or finished while queued
        continue;
      }
      std::string id = cls.queue.front().str();
      std::vector<std::string> deps = tit->second.has_deps ? DepsOf(tit->second) : std::vector<std::string>();
      if (WaitAgainForArguments(id, tit->second, deps)) {  // one is being rebuilt
        cls.queue.pop_front();
        continue;
      }
      Placement p = Place(cls.request, views, LargestHolder(deps));
      if (p.kind == Placement::kWait) break;
      if (p.kind == Placement::kInfeasible) {
        cls.infeasible = p.reason;
        for (const auto& key : cls.queue) {
          auto t = tasks_.find(key);
          if (t == tasks_.end() || t->second.told_infeasible || t->second.state != TaskState::kQueued) continue;
          t->second.told_infeasible = true;
          std::string tid = key.str(), name = NameOf(tid, t->second);
          LOG_WARN("task {} is infeasible: it {}", Printable(name), p.reason);
          Notice(tid, OwnerOf(tid, t->second),
                 fmt::format("{} {} cannot be scheduled: it {}. It stays pending until such a node joins.",
                             t->second.actor ? "actor" : "task", name, p.reason));
        }
        break;
      }
      cls.queue.pop_front();
      Dispatch(id, tit->second, nodes_.Find(p.node->id), p.prefetch);
    }
    if (cls.queue.empty() && cls.unfinished == 0)
      cit = classes_.erase(cit);
    else
      ++cit;
  }
}

bool TaskManager::WaitAgainForArguments(const std::string& id, Task& task, const std::vector<std::string>& deps) {
  for (const auto& dep : deps) {
    auto d = objects_.find(dep);
    if (d == objects_.end() || d->second.ready) continue;
    d->second.waiting.push_back(id);
    task.unresolved++;
  }
  if (task.unresolved == 0) return false;
  task.state = TaskState::kWaitingDeps;
  return true;
}

void TaskManager::Dispatch(const std::string& id, Task& task, Node* node, bool prefetch) {
  task.state = TaskState::kDispatched;
  task.node = node->view.id;
  node->view.available.Subtract(task.cls->request.resources);
  if (prefetch) node->view.prefetched++;
  node->tasks.insert(id);
  proto::HeadToAgent msg;
  proto::ExecuteTask* ex = msg.mutable_execute();
  *ex->mutable_spec() = SpecOf(id, task);
  ex->mutable_spec()->clear_owner_id();  // the head routes what comes back; nodes need not know the client
  const ResourceSet& request = task.cls->resources;  // the agent counts what the task asks, gang or not
  for (const auto& [name, units] : request.units()) (*ex->mutable_spec()->mutable_resources())[name] = request.Get(name);
  if (task.function && node->shipped_functions.insert(task.function->hash).second) {
    ex->mutable_spec()->set_function(task.function->pickled);
    Count("functions_shipped_to_nodes");
  }
  if (std::optional<size_t> bytes = SendWithArguments(msg, node)) {
    ReleaseResources(id, task, node);
    if (task.function) node->shipped_functions.erase(task.function->hash);
    Finish(id, ErrorValue(id, proto::RUNTIME,
                          fmt::format("task {} with its arguments is {} bytes, over the {}-byte limit of one "
                                      "message; pass fewer or smaller values",
                                      ex->spec().name(), *bytes, net::kDefaultMaxFrameBytes)));
    return;
  }
  Count("tasks_dispatched");
  MarkStarted(id, task, *node);
}

std::optional<size_t> TaskManager::SendWithArguments(proto::HeadToAgent& msg, Node* node) {
  proto::ExecuteTask* ex = msg.mutable_execute();
  for (const auto& dep : ex->spec().deps()) {
    auto d = objects_.find(dep);
    if (d != objects_.end()) {
      *ex->add_deps() = d->second.value;
      Touch(d->second);
    }
  }
  size_t bytes = msg.ByteSizeLong();
  if (bytes + 64 > net::kDefaultMaxFrameBytes || !node->conn->Send(msg)) return bytes;
  return std::nullopt;
}

void TaskManager::ReleaseResources(const std::string& id, Task& task, Node* node) {
  if (!node) return;
  if (task.actor_call) {  // its actor holds the resources
    node->tasks.erase(id);
    return;
  }
  if (task.blocked) {
    node->view.available.Subtract(CpuPart(task.cls->request.resources));
    task.blocked = false;
  }
  node->view.available.Add(task.cls->request.resources);
  if (node->view.prefetched > 0) node->view.prefetched--;
  node->tasks.erase(id);
  dirty_ = true;
}

void TaskManager::OnTaskFinished(Node* node, proto::TaskFinished&& finished) {
  auto it = tasks_.find(finished.task_id());
  if (auto o = orphans_.find(finished.task_id());
      o != orphans_.end() && o->second.node == node->view.id && o->second.attempt == finished.attempt()) {
    if (it == tasks_.end() || it->second.state != TaskState::kDispatched) {
      // Its task is not resubmitted yet, or waits for its dependencies: keep the result for then.
      o->second.result = std::move(*finished.mutable_result());
      return;
    }
    orphans_.erase(o);
  }
  if (finished.direct()) {
    // Only an actor call a caller sent that node may end this way (a ticket holder names the id).
    if (it != tasks_.end() && (!it->second.actor_call || (!it->second.direct && it->second.node != node->view.id))) {
      Count("direct_reports_refused");
      return;
    }
    if (it == tasks_.end() || (it->second.direct && it->second.state != TaskState::kFinished)) {
      KeepEarlyEnd(node, std::move(finished));  // the call itself is not recorded yet
      return;
    }
  }
  if (it == tasks_.end() || it->second.state == TaskState::kFinished) {
    // Finished (and perhaps freed) already: a report sent again after a connection failed, or one
    // from before a head restart that no owner resubmitted. Its stored result goes unless it is
    // the value the head holds there (the value may have been freed, or rebuilt elsewhere).
    Count("duplicate_reports_ignored");
    DiscardStoredResult(node, finished);
    return;
  }
  if (it->second.state != TaskState::kDispatched ||
      it->second.attempt != finished.attempt() || it->second.node != node->view.id) {
    Count("stale_results_discarded");
    DiscardStoredResult(node, finished);
    LOG_INFO("discarded a result for task {} attempt {} from node {}: not the current attempt",
             ShortHex(finished.task_id()), finished.attempt(), ShortHex(node->view.id));
    return;
  }
  Task& task = it->second;
  const std::string& id = finished.task_id();
  task.direct_delivered = finished.delivered();
  ReleaseResources(id, task, node);
  proto::ObjectValue* result = finished.mutable_result();
  result->set_id(finished.task_id());
  if (result->stored_size() > 0) {  // in this node's store, under this attempt (the head's record, not the worker's)
    result->clear_locations();
    result->add_locations(node->view.id);
    result->set_stored_attempt(finished.attempt());
    if (task.durable) {
      DeleteOn(node->view.id, finished.task_id(), finished.attempt());
      *result = ErrorValue(finished.task_id(), proto::RUNTIME, "a durable task's result cannot be a stored value");
    }
  }
  if (task.actor && result->error() == proto::CANCELLED && !task.cancel_requested)
    if (auto a = actors_.find(id); a != actors_.end() && std::exchange(a->second.restart_on_kill, false)) {
      result->set_error(proto::WORKER_DIED);  // kill(no_restart=False): a crash, restarted while it may be
      result->set_message(a->second.restart_reason.empty() ? "its worker was killed by corral.kill(no_restart=False)"
                                                           : std::exchange(a->second.restart_reason, ""));
    }
  if (result->error() == proto::HANDED_BACK && !task.cancel_requested) {
    if (task.actor_call) ActorNotThere(id, task, node);  // wait for it to be ready there, or its end
    LOG_INFO("node {} handed back task {} ({}): {}", ShortHex(node->view.id), ShortHex(id),
             Printable(NameOf(id, task)), Printable(result->message()));
    Retry(finished.task_id(), task, result->message(), /*failure=*/false);
    return;
  }
  if ((result->error() == proto::WORKER_DIED || result->error() == proto::OUT_OF_MEMORY) &&
      !task.cancel_requested && task.attempt < task.max_retries && (!task.actor_call || CallMayRetry(id, task))) {
    Retry(finished.task_id(), task, result->message());
    return;
  }
  // (A cancelled actor call's own error stays: an async call reports the CancelledError it was given.)
  if (task.cancel_requested && result->error() != proto::ERROR_NONE &&
      !(task.actor_call && result->error() == proto::TASK_ERROR)) {
    *result = ErrorValue(finished.task_id(), proto::CANCELLED,
                         fmt::format("task {} was cancelled while running", NameOf(id, task)));
    task.direct_delivered = false;  // not what its caller was sent
  }
  Finish(finished.task_id(), std::move(*result));
}

std::string TaskManager::NodeRunning(const std::string& task_id) const {
  auto it = tasks_.find(task_id);
  return it == tasks_.end() ? "" : it->second.node.str();
}

void TaskManager::Retry(const std::string& id, Task& task, const std::string& why, bool failure) {
  task.attempt++;  // a new attempt: results of the old one are void
  task.node.clear();
  task.since = Now();
  if (failure) {
    Count("tasks_retried");
    task.series->retried++;
    journal_.Retrying(task.journal, id, why);
    Notice(id, OwnerOf(id, task),
           task.actor ? fmt::format("actor {} died: {}; restarting it (restart {})", NameOf(id, task), why,
                                    CountOf(task.attempt, task.max_retries))
                      : fmt::format("{} {} failed: {}; retrying (attempt {})", task.actor_call ? "call" : "task",
                                    NameOf(id, task), why,
                                    CountOf(task.attempt + 1, task.max_retries == UINT32_MAX ? UINT32_MAX
                                                                                             : task.max_retries + 1)));
  } else {
    if (task.max_retries != UINT32_MAX) task.max_retries++;  // not the task's failure: costs no retry (-1: none counted)
    Count("tasks_handed_back");
  }
  if (task.durable && on_durable_rerun) on_durable_rerun(id);
  if (task.actor) OnActorRestarting(id, failure);
  Enqueue(id, task);
}

void TaskManager::Requeue(const std::string& id, Task& task, Node* node, const std::string& why) {
  ReleaseResources(id, task, node);
  std::string msg = fmt::format("node {} ({}) {} while running {}", ShortHex(node->view.id),
                                node->info.hostname(), why, NameOf(id, task));
  if (!task.cancel_requested && task.attempt < task.max_retries && (!task.actor_call || CallMayRetry(id, task)))
    Retry(id, task, msg);
  else
    Finish(id, ErrorValue(id, task.cancel_requested ? proto::CANCELLED : proto::NODE_DIED, msg));
}

void TaskManager::OnNodeDead(Node* node, const std::string& why) {
  std::vector<std::string> ids = ActorsFirst(node->tasks);
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it != tasks_.end()) Requeue(id, it->second, node, why);
  }
  node->tasks.clear();
  node->shipped_functions.clear();
  LoseStoredOn(node, why);
  for (const auto& gang_id : gangs_.NodeGone(node->view.id))  // the rest of it runs on nothing reserved now
    StopInGang(gang_id, fmt::format("node {} ({}) under its gang died: the gang is released and reserved again",
                                    ShortHex(node->view.id), node->info.hostname()),
               /*removing=*/false);
  nodes_changed_ = true;
}

void TaskManager::CancelAttempt(Node* node, const std::string& task_id, uint32_t attempt, bool force) {
  if (!node || !node->conn) return;
  proto::HeadToAgent msg;
  msg.mutable_cancel()->set_task_id(task_id);
  msg.mutable_cancel()->set_attempt(attempt);
  msg.mutable_cancel()->set_force(force);
  node->conn->Send(msg);
}

void TaskManager::OnBlocked(Node* node, const proto::Blocked& blocked) {
  auto it = tasks_.find(blocked.task_id());
  if (it == tasks_.end() || it->second.state == TaskState::kFinished) {
    // Finished (and perhaps freed) already: a report sent again after a connection failed, or one
    // from before a head restart that no owner resubmitted.
    Count("duplicate_reports_ignored");
    return;
  }
  if (it->second.state != TaskState::kDispatched || it->second.node != node->view.id)
    return;
  Task& task = it->second;
  if (blocked.blocked() == task.blocked) return;
  task.blocked = blocked.blocked();
  if (task.blocked)
    node->view.available.Add(CpuPart(task.cls->request.resources));
  else
    node->view.available.Subtract(CpuPart(task.cls->request.resources));
  dirty_ = true;
}

void TaskManager::OnLog(Node* node, proto::LogLine&& line) {
  // Shown to the owner of the task the line is for, and only if this node was given that task:
  // an agent cannot write into another client's output.
  auto task = tasks_.find(line.task_id());
  if (task == tasks_.end() || task->second.node != node->view.id) {
    Count("log_lines_refused");
    return;
  }
  auto it = clients_.find(OwnerOf(line.task_id(), task->second));
  if (it == clients_.end() || !it->second->conn) return;
  if (!it->second->conn->has_room()) {
    Count("log_lines_dropped");  // its owner does not keep up: its output is not worth its memory
    return;
  }
  line.set_node_id(node->view.id);
  proto::HeadToClient msg;
  *msg.mutable_log() = std::move(line);
  it->second->conn->Send(msg);
}

void TaskManager::Finish(const std::string& id, proto::ObjectValue value) {
  // A worklist: failing a task fails the tasks waiting on it, and so on.
  std::vector<std::pair<std::string, proto::ObjectValue>> work;
  work.emplace_back(id, std::move(value));
  while (!work.empty()) {
    auto [tid, val] = std::move(work.back());
    work.pop_back();
    auto tit = tasks_.find(tid);
    if (tit == tasks_.end() || tit->second.state == TaskState::kFinished) continue;
    Task& task = tit->second;
    if (task.actor || task.actor_call) OnActorTaskFinished(tid, task, val, work);
    bool durable = task.durable;
    // A stored result can be rebuilt by running its task again if its node dies (lineage): the
    // spec (with its resources) and the function stay while the result does.
    bool lineage = val.stored_size() > 0 && !durable && val.error() == proto::ERROR_NONE && task.function;
    if (lineage) {
      proto::TaskSpec spec = SpecOf(tid, task);
      const Request& r = task.cls->request;
      const ResourceSet& own = task.cls->resources;
      for (const auto& [name, units] : own.units()) (*spec.mutable_resources())[name] = own.Get(name);
      spec.mutable_label_selector()->insert(r.label_selector.begin(), r.label_selector.end());
      KeepSpec(task, spec, /*with_request=*/true);
    }
    std::vector<std::string> deps;
    if (task.has_deps) deps = DepsOf(task);
    if (task.state == TaskState::kDispatched)
      task.series->duration.Observe(static_cast<double>(Now() - task.since) / 1e9);
    task.state = TaskState::kFinished;
    task.parked = false;
    task.cls->unfinished--;
    task.cls = nullptr;  // the class may go once no unfinished task needs it
    --unfinished_;
    if (!lineage) DropFunctionOf(task);
    switch (val.error()) {
      case proto::ERROR_NONE: Count("tasks_succeeded"); task.series->succeeded++; break;
      case proto::CANCELLED: Count("tasks_cancelled"); task.series->cancelled++; break;
      default: Count("tasks_failed"); task.series->failed++; break;
    }
    journal_.Ended(task.journal, tid,
                   val.error() == proto::ERROR_NONE ? TaskJournal::State::kFinished
                   : val.error() == proto::CANCELLED ? TaskJournal::State::kCancelled
                                                     : TaskJournal::State::kFailed,
                   val.error() == proto::ERROR_NONE ? std::string_view() : std::string_view(val.message()),
                   nodes_.clock().WallNs());
    val.set_id(tid);
    // Dependencies no longer needed by this task.
    for (const auto& dep : deps) {
      auto d = objects_.find(dep);
      if (d == objects_.end()) continue;
      d->second.dependents--;
      std::erase(d->second.waiting, IdKey(tid));
      TryFree(dep);
    }
    if (!lineage) std::string().swap(task.spec);  // drop the arguments: nothing runs it again
    if (durable && on_durable_finished) on_durable_finished(tid, val);
    Object* found = ObjectFor(tid);
    if (found == nullptr) {  // cannot be: its task is in the table
      DropStored(val);
      continue;
    }
    Object& obj = *found;
    obj.ready = true;
    obj.value = std::move(val);
    object_bytes_ += static_cast<int64_t>(obj.value.data().size());
    AddStored(obj.value);
    Touch(obj);
    if (obj.value.stored_size() > 0)  // a result is never refused: older values make room
      if (Node* n = nodes_.Find(obj.value.locations(0))) MakeRoom(n, 0);
    // Pushed to its owner unasked, and to those who subscribed.
    auto send_to = [&](const std::string& client_id) {
      if (auto c = clients_.find(client_id); c != clients_.end()) SendValue(c->second, obj.value);
    };
    // (A direct call's owner had it from the agent, unless it asked again: its connection there broke.)
    if (!task.direct_delivered) send_to(obj.owner);
    for (const auto& sub : obj.subscribers)
      if (sub != obj.owner || task.direct_delivered) send_to(sub);
    obj.subscribers.clear();
    std::vector<IdKey> waiting = std::move(obj.waiting);
    obj.waiting.clear();
    bool failed = obj.value.error() != proto::ERROR_NONE;
    for (const auto& w : waiting) {
      auto wit = tasks_.find(w);
      if (wit == tasks_.end() || wit->second.state != TaskState::kWaitingDeps) continue;
      if (failed) {
        work.emplace_back(w.str(), obj.value);
      } else if (--wit->second.unresolved == 0) {
        Enqueue(w.str(), wit->second);
      }
    }
    TryFree(tid);
  }
}

std::pair<int64_t, double> TaskManager::QueuedTasks() const {
  int64_t queued = 0;
  Nanos oldest = 0;
  for (const auto& [key, cls] : classes_) {
    queued += static_cast<int64_t>(cls.queue.size());
    // The front may be a task that ended (cancelled) or left (dispatched) and is not popped yet.
    size_t looked = 0;
    for (const IdKey& front : cls.queue) {
      if (++looked > 16) break;
      auto t = tasks_.find(front);
      if (t == tasks_.end() || t->second.state != TaskState::kQueued) continue;
      if (oldest == 0 || t->second.since < oldest) oldest = t->second.since;
      break;
    }
  }
  return {queued, oldest == 0 ? 0.0 : static_cast<double>(Now() - oldest) / 1e9};
}

void TaskManager::FillStatus(proto::ClusterStatus* status, bool count_tasks) const {
  auto& by_state = *status->mutable_tasks_by_state();
  if (count_tasks)
    for (const auto& [id, task] : tasks_) by_state[TaskStateName(task.state)]++;
  for (const auto& [key, cls] : classes_) {
    if (cls.infeasible.empty()) continue;
    std::string name;
    bool actor = false;  // (a class holds tasks or actor creations alike: their requests match)
    for (const auto& tid : cls.queue)
      if (auto t = tasks_.find(tid); t != tasks_.end()) {
        name = NameOf(tid.str(), t->second);
        actor = t->second.actor;
        break;
      }
    status->add_infeasible(fmt::format("{} {} like {}: it {}", cls.queue.size(), actor ? "actor(s)" : "task(s)", name,
                                       cls.infeasible));
  }
  FillActors(status->mutable_actors(), /*include_dead=*/false);
  gangs_.FillAll(status->mutable_gangs());
  auto& counters = *status->mutable_counters()->mutable_values();
  for (const auto& [k, v] : counters_) counters[k] = v;
  counters["objects_held"] = static_cast<int64_t>(objects_.size());
  counters["unfinished_tasks"] = static_cast<int64_t>(unfinished_);
  counters["peak_unfinished_tasks"] = static_cast<int64_t>(peak_unfinished_);
  counters["functions_known"] = static_cast<int64_t>(functions_.size());
  counters["object_bytes"] = object_bytes_;
}

}  // namespace corral::head
