// TaskManager's object table: puts, subscriptions, releases and freeing, and the directory of
// stored objects (values in the nodes' shared-memory stores: the head keeps where they are and
// their sizes, never their bytes).
#include <algorithm>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/task_manager.h"

namespace corral::head {

void TaskManager::SendValue(ClientSession* client, const proto::ObjectValue& value) {
  if (!client->conn) return;
  if (client->unsent.empty() && client->conn->has_room()) {
    proto::HeadToClient msg;
    *msg.mutable_ready() = value;
    client->conn->Send(msg);
    return;
  }
  constexpr size_t kMaxUnsent = 1'000'000;
  if (client->unsent.size() >= kMaxUnsent) {
    client->conn->Close(MakeStatus(Code::kResourceExhausted, "{} values wait for this client, which does not read them",
                                   client->unsent.size()));
    return;
  }
  client->unsent.push_back(value.id());
  Count("values_waiting_for_slow_clients");
}

void TaskManager::SendUnsent(ClientSession* client) {
  while (client && client->conn && !client->unsent.empty() && client->conn->has_room()) {
    std::string id = std::move(client->unsent.front());
    client->unsent.pop_front();
    auto it = objects_.find(id);
    if (it != objects_.end() && !it->second.ready) continue;  // being rebuilt: Finish sends it
    proto::HeadToClient msg;
    if (it != objects_.end() && it->second.ready)
      *msg.mutable_ready() = it->second.value;
    else  // freed meanwhile: its owner released it (and does not wait for it) or left
      *msg.mutable_ready() = ErrorValue(id, proto::OBJECT_LOST,
                                        fmt::format("object {} was freed before it could be sent", Hex(id)));
    client->conn->Send(msg);
  }
}

void TaskManager::Put(ClientSession* client, proto::ObjectValue&& value) {
  std::string id = value.id();
  if (id.empty() || objects_.contains(id) || tasks_.contains(id)) return;  // (a task's result to come)
  if (!OwnsId(client, id)) {
    Count("puts_refused_foreign_id");
    return;
  }
  Object& obj = objects_[id];
  obj.owner = client->id;
  obj.ready = true;
  int64_t bytes = static_cast<int64_t>(value.data().size());
  if (value.stored_size() > 0) {
    // In a node's store: the client wrote the file there; the head keeps where it is.
    Node* node = value.locations_size() == 1 ? nodes_.Find(value.locations(0)) : nullptr;
    std::optional<std::string> full;
    if (node == nullptr || node->state != NodeState::kAlive || value.data().size() > 0) {
      Count("puts_refused_bad_location");
      obj.value = ErrorValue(id, proto::OBJECT_LOST,
                             fmt::format("put of {} refused: it names no live node's object store",
                                         FormatBytes(static_cast<double>(value.stored_size()))));
    } else if ((full = MakeRoom(node, value.stored_size()))) {
      Count("puts_refused_object_store_full");
      DeleteOn(node->view.id, id, value.stored_attempt());
      obj.value = ErrorValue(id, proto::OBJECT_STORE_FULL,
                             fmt::format("put of {} refused: {}", FormatBytes(static_cast<double>(value.stored_size())),
                                         *full));
    } else {
      obj.value = std::move(value);
      AddStored(obj.value);
      Touch(obj);
    }
  } else if (options_.max_object_bytes > 0 && object_bytes_ + bytes > options_.max_object_bytes) {
    Count("puts_refused_object_memory_full");
    obj.value = ErrorValue(id, proto::OBJECT_STORE_FULL,
                           fmt::format("put of {} refused: the head holds {} of values and its limit is {} (corral "
                                       "start --head --object-memory); drop references to values no longer needed",
                                       FormatBytes(static_cast<double>(bytes)),
                                       FormatBytes(static_cast<double>(object_bytes_)),
                                       FormatBytes(static_cast<double>(options_.max_object_bytes))));
  } else {
    obj.value = std::move(value);
  }
  object_bytes_ += static_cast<int64_t>(obj.value.data().size());
  owned_[client->id]++;
  Count("objects_put");
  // The client kept its own copy of the value: the error replaces it there (get raises).
  if (obj.value.error() != proto::ERROR_NONE) SendValue(client, obj.value);
}

void TaskManager::Subscribe(ClientSession* client, const proto::Subscribe& request) {
  for (const auto& id : request.ids()) {
    bool refused = false;
    ReadableObject(*client, id, &refused);  // a result to come gets an entry to wait in
    auto it = objects_.find(id);
    if (refused) {
      Count("reads_refused_foreign_object");
      proto::HeadToClient msg;
      *msg.mutable_ready() = ErrorValue(
          id, proto::OBJECT_LOST,
          fmt::format("object {} is not known to the head, or belongs to a client with another token (an admin "
                      "token reads any)", Hex(id)));
      client->conn->Send(msg);
    } else if (it == objects_.end()) {
      proto::HeadToClient msg;
      *msg.mutable_ready() = ErrorValue(
          id, proto::OBJECT_LOST,
          fmt::format("object {} is not known to the head: it was freed, or its owner exited", Hex(id)));
      client->conn->Send(msg);
    } else if (it->second.ready) {
      Touch(it->second);
      SendValue(client, it->second.value);
    } else {
      it->second.subscribers.push_back(client->id);
    }
  }
}

TaskManager::Object* TaskManager::ReadableObject(const ClientSession& reader, const std::string& id, bool* refused) {
  std::string owner;
  if (auto o = objects_.find(id); o != objects_.end()) owner = o->second.owner;
  else if (auto t = tasks_.find(id); t != tasks_.end()) owner = OwnerOf(id, t->second);
  else return nullptr;
  if (!MayReadOf(reader, owner)) {
    if (refused) *refused = true;
    return nullptr;
  }
  return ObjectFor(id);
}

bool TaskManager::MayReadOf(const ClientSession& reader, const std::string& owner_id) const {
  if (reader.may_touch_any || reader.id == owner_id || IsWorkerToken(reader.token_id)) return true;
  auto owner = clients_.find(owner_id);
  if (owner == clients_.end()) return false;
  // The same token (one user's drivers pass references between them), or made by a worker: task
  // results and values a task put travel back to whoever holds their reference.
  return owner->second->token_id == reader.token_id || IsWorkerToken(owner->second->token_id);
}

void TaskManager::Release(ClientSession* client, const proto::Release& request) {
  if (request.borrowed()) {
    for (const auto& id : request.ids()) {
      auto b = client->borrowed.find(id);
      if (b == client->borrowed.end()) continue;
      if (--b->second == 0) client->borrowed.erase(b);
      if (auto it = objects_.find(id); it != objects_.end()) {
        it->second.borrows--;
        TryFree(id);
      }
    }
    return;
  }
  for (const auto& id : request.ids()) {
    auto it = objects_.find(id);
    if (it == objects_.end()) {  // an unfinished task's result with no entry yet: the task keeps the flag
      auto t = tasks_.find(id);
      if (t == tasks_.end() || OwnerOf(id, t->second) != client->id) continue;
      if (!request.pin()) t->second.released = true;
      else ObjectFor(id)->pinned = true;
      if (t->second.actor) MaybeCollectActor(id);  // its last handle is gone
      continue;
    }
    if (it->second.owner != client->id) continue;
    if (request.pin()) {
      it->second.pinned = true;
    } else {
      it->second.released = true;
      TryFree(id);
    }
  }
}

Status TaskManager::ContainRefs(ClientSession* client, const proto::ContainRefs& request) {
  Object* container = ReadableObject(*client, request.container());
  if (container == nullptr)
    return MakeStatus(Code::kNotFound, "object {} is not known to the head", Hex(request.container()));
  std::unordered_set<std::string> known;
  for (const auto& id : container->contains) known.insert(id.str());
  for (const auto& id : request.ids()) {
    if (id == request.container() || known.contains(id)) continue;
    Object* c = ReadableObject(*client, id);  // (entries are stable: `container` stays valid)
    if (c == nullptr) continue;
    known.insert(id);
    container->contains.push_back(id);
    c->containers++;
  }
  return Status::Ok();
}

void TaskManager::BorrowRefs(ClientSession* client, const proto::BorrowRefs& request) {
  for (const auto& id : request.ids()) {
    Object* obj = ReadableObject(*client, id);
    if (obj == nullptr) continue;
    obj->borrows++;
    client->borrowed[id]++;
  }
}

void TaskManager::TryFree(const std::string& first) {
  // A worklist, not recursion: freeing a value drops the references it held, which may free those
  // in turn, along chains of any length.
  std::vector<std::string> todo{first};
  while (!todo.empty()) {
    std::string id = std::move(todo.back());
    todo.pop_back();
    auto it = objects_.find(id);
    if (it == objects_.end()) continue;
    Object& obj = it->second;
    if (!obj.ready) {
      if (obj.has_task) MaybeCollectActor(id);  // an actor lives while a handle to it does (may free `obj`)
      continue;
    }
    if (!obj.released || obj.pinned || obj.dependents > 0 || obj.containers > 0 || obj.borrows > 0 || !obj.ready)
      continue;
    Disown(obj.owner);
    if (obj.has_task) {
      auto t = tasks_.find(id);
      if (t != tasks_.end()) DropFunctionOf(t->second);
      tasks_.erase(id);
    }
    object_bytes_ -= static_cast<int64_t>(obj.value.data().size());
    DropStored(obj.value, &obj);
    std::vector<IdKey> contains = std::move(obj.contains);
    objects_.erase(it);
    Count("objects_freed");
    for (const auto& inner : contains)  // the references it held
      if (auto c = objects_.find(inner); c != objects_.end()) {
        c->second.containers--;
        todo.push_back(inner.str());
      }
  }
}

void TaskManager::DropContained(const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  std::vector<IdKey> contains = std::move(it->second.contains);
  it->second.contains.clear();
  for (const auto& inner : contains)
    if (auto c = objects_.find(inner); c != objects_.end()) {
      c->second.containers--;
      TryFree(inner.str());
    }
}

// ---- stored objects ----

TaskManager::StoreUsage TaskManager::StoreUsageOf(const std::string& node_id) const {
  auto it = store_usage_.find(node_id);
  return it == store_usage_.end() ? StoreUsage{} : it->second;
}

void TaskManager::AddStored(const proto::ObjectValue& value) {
  for (const auto& node : value.locations()) {
    StoreUsage& u = store_usage_[node];
    u.bytes += value.stored_size();
    u.objects++;
  }
}

void TaskManager::DropStored(const proto::ObjectValue& value, const Object* obj) {
  if (value.stored_size() == 0) return;
  uint64_t size = value.stored_size();
  auto less = [](uint64_t& from, uint64_t n) { from -= std::min(from, n); };
  for (const auto& node : value.locations()) {
    if (auto u = store_usage_.find(node); u != store_usage_.end()) {
      if (obj && obj->spilled) {
        less(u->second.spilled, size);
      } else {
        less(u->second.bytes, size);
        if (obj && obj->spilling) less(u->second.spilling, size);
      }
      u->second.spill_error.clear();  // room may have come free on its disk too
      if (--u->second.objects <= 0) store_usage_.erase(u);
    }
    DeleteOn(node, value.id(), value.stored_attempt());
  }
}

std::optional<std::string> TaskManager::MakeRoom(Node* node, uint64_t incoming) {
  uint64_t capacity = node->info.object_store_capacity();
  StoreUsage& u = store_usage_[node->view.id];
  auto resident = [&] { return u.bytes - std::min(u.bytes, u.spilling); };
  if (capacity == 0 || resident() + incoming <= capacity) return std::nullopt;
  auto full = [&](const std::string& why) {
    return fmt::format("the object store of node {} ({}) holds {} in memory and its capacity is {} (corral start "
                       "--object-store-memory){}; drop references to values no longer needed",
                       ShortHex(node->view.id), node->info.hostname(), FormatBytes(static_cast<double>(resident())),
                       FormatBytes(static_cast<double>(capacity)), why);
  };
  if (incoming > capacity) return full("");
  if (!u.spill_error.empty()) return full(fmt::format(", and spilling to disk failed: {}", u.spill_error));
  if (!node->conn) return full(", and the node is not connected to spill");
  uint64_t target = capacity / 10 * 8 > incoming ? capacity / 10 * 8 - incoming : 0;
  std::vector<std::pair<uint64_t, Object*>> candidates;  // (last used, object) in memory on this node
  for (auto& [id, obj] : objects_) {
    const proto::ObjectValue& v = obj.value;
    if (!obj.ready || v.stored_size() == 0 || obj.spilled || obj.spilling) continue;
    if (std::find(v.locations().begin(), v.locations().end(), node->view.id) == v.locations().end()) continue;
    candidates.emplace_back(obj.last_used, &obj);
  }
  // Extra copies (another node has the value) go before anything is spilled; then least recent first.
  std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
    bool extra_a = a.second->value.locations_size() > 1, extra_b = b.second->value.locations_size() > 1;
    return extra_a != extra_b ? extra_a : a.first < b.first;
  });
  proto::HeadToAgent msg;
  for (auto& [used, obj] : candidates) {
    if (resident() <= target) break;
    proto::ObjectValue& v = obj->value;
    if (v.locations_size() > 1) {  // another node has it: drop this copy rather than spill it
      v.mutable_locations()->erase(std::find(v.mutable_locations()->begin(), v.mutable_locations()->end(),
                                             node->view.id));
      u.bytes -= std::min(u.bytes, v.stored_size());
      u.objects--;
      DeleteOn(node->view.id, v.id(), v.stored_attempt());
      Count("stored_copies_dropped");
      continue;
    }
    obj->spilling = true;
    u.spilling += obj->value.stored_size();
    proto::StoredObject* o = msg.mutable_spill_objects()->add_objects();
    o->set_id(obj->value.id());
    o->set_attempt(obj->value.stored_attempt());
  }
  if (msg.spill_objects().objects_size() > 0 && node->conn) {
    node->conn->Send(msg);
    Count("stored_objects_spill_requested", msg.spill_objects().objects_size());
  }
  if (resident() + incoming > capacity) return full("");
  return std::nullopt;
}

void TaskManager::SettleSpill(Object& obj, StoreUsage& u, bool spilled) {
  uint64_t size = obj.value.stored_size();
  obj.spilling = false;
  u.spilling -= std::min(u.spilling, size);
  if (spilled) {
    obj.spilled = true;
    u.bytes -= std::min(u.bytes, size);
    u.spilled += size;
    Count("stored_objects_spilled");
  }
}

void TaskManager::OnObjectsSpilled(Node* node, const proto::ObjectsSpilled& done) {
  StoreUsage& u = store_usage_[node->view.id];
  auto settle = [&](const proto::StoredObject& o, bool spilled) {
    auto it = objects_.find(o.id());
    if (it != objects_.end() && it->second.spilling) SettleSpill(it->second, u, spilled);  // else freed meanwhile
  };
  for (const auto& o : done.spilled()) settle(o, true);
  for (const auto& o : done.failed()) settle(o, false);
  if (done.failed_size() > 0) {
    u.spill_error = done.error();
    LOG_WARN("node {} could not spill {} value(s): {}", ShortHex(node->view.id), done.failed_size(),
             Printable(done.error()));
  }
}

void TaskManager::ReconcileStore(Node* node, const google::protobuf::RepeatedPtrField<proto::StoredObject>& stored,
                                 const google::protobuf::RepeatedPtrField<proto::HeldAttempt>& held) {
  std::map<std::pair<std::string, uint32_t>, bool> here;  // -> spilled
  for (const auto& o : stored) here[{o.id(), o.attempt()}] = o.spilled();
  std::vector<std::pair<std::string, uint32_t>> missing;
  for (auto& [key, obj] : objects_) {
    const proto::ObjectValue& v = obj.value;
    if (v.stored_size() == 0 || std::find(v.locations().begin(), v.locations().end(), node->view.id) ==
                                    v.locations().end())
      continue;
    std::string id = key.str();
    auto h = here.find({id, v.stored_attempt()});
    // A spill whose answer was lost with a connection: the file says where the value is now.
    if (obj.spilling) SettleSpill(obj, store_usage_[node->view.id], h != here.end() && h->second);
    if (h == here.end()) missing.emplace_back(id, v.stored_attempt());
    else here.erase(h);
  }
  for (const auto& [id, attempt] : missing) DropMissingCopy(node, id, attempt);
  if (InGrace()) return;
  for (const auto& a : held) here.erase({a.task_id(), a.attempt()});  // a result on its way to the head
  for (const auto& [key, spilled] : here) {
    // Not ready yet: a put or a result whose message is still on its way. (The agent lists only
    // values written a while ago, so one just written is not taken for unknown either.)
    if (auto it = objects_.find(key.first); it != objects_.end() && !it->second.ready) continue;
    if (auto t = tasks_.find(key.first); t != tasks_.end() && t->second.state != TaskState::kFinished) continue;
    DeleteOn(node->view.id, key.first, key.second);
    Count("stored_objects_unknown_deleted");
  }
}

void TaskManager::DeleteOn(const std::string& node_id, const std::string& id, uint32_t attempt) {
  Node* node = nodes_.Find(node_id);
  if (node == nullptr || node->state == NodeState::kDead || node->state == NodeState::kLeft)
    return;  // a node that went away took its store with it
  proto::HeadToAgent msg;
  proto::StoredObject* o = msg.mutable_delete_objects()->add_objects();
  o->set_id(id);
  o->set_attempt(attempt);
  if (!node->conn) {  // disconnected for now: told when it comes back
    *pending_deletes_[node_id].add_objects() = *o;
    return;
  }
  node->conn->Send(msg);
  Count("stored_objects_deleted");
}

void TaskManager::SendPendingDeletes(Node* node) {
  auto it = pending_deletes_.find(node->view.id);
  if (it == pending_deletes_.end()) return;
  if (node->conn && node->state != NodeState::kDead) {
    proto::HeadToAgent msg;
    *msg.mutable_delete_objects() = std::move(it->second);
    Count("stored_objects_deleted", msg.delete_objects().objects_size());
    node->conn->Send(msg);
  }
  pending_deletes_.erase(it);
}

void TaskManager::DiscardStoredResult(Node* node, const proto::TaskFinished& finished) {
  if (finished.result().stored_size() == 0) return;
  // The same attempt's file may be the value the task finished with (a duplicate report).
  if (auto o = objects_.find(finished.task_id()); o != objects_.end() && o->second.ready) {
    const proto::ObjectValue& v = o->second.value;
    if (v.stored_attempt() == finished.attempt() &&
        std::find(v.locations().begin(), v.locations().end(), node->view.id) != v.locations().end())
      return;
  }
  DeleteOn(node->view.id, finished.task_id(), finished.attempt());
}

bool TaskManager::Reconstruct(const std::string& id, std::string* why, int depth) {
  auto t = tasks_.find(id);
  auto o = objects_.find(id);
  if (t == tasks_.end() || o == objects_.end()) {
    *why = "it was put, not made by a task (only task results are rebuilt)";
    return false;
  }
  if (t->second.state != TaskState::kFinished || !t->second.function || t->second.spec.empty()) {
    *why = "its task's description was not kept";
    return false;
  }
  Task& task = t->second;
  proto::TaskSpec spec = SpecOf(id, task);
  if (task.attempt >= task.max_retries) {
    *why = fmt::format("re-running its task {} would pass its max_retries ({})", spec.name(), task.max_retries);
    return false;
  }
  if (depth > 100) {
    *why = "its lineage is deeper than 100 tasks";
    return false;
  }
  // Arguments must still be there, or be rebuildable themselves.
  for (const auto& dep : spec.deps()) {
    auto d = objects_.find(dep);
    if (d == objects_.end()) {
      *why = fmt::format("its task {}'s argument {} was freed", spec.name(), Hex(dep));
      return false;
    }
    if (d->second.ready && d->second.value.error() == proto::OBJECT_LOST && d->second.value.stored_size() == 0 &&
        !Reconstruct(dep, why, depth + 1))
      return false;
  }
  Object& obj = o->second;
  obj.ready = false;
  obj.value = proto::ObjectValue();
  obj.value.set_id(id);
  task.attempt++;  // a new file name: the lost one may linger on its node
  task.state = TaskState::kWaitingDeps;
  task.unresolved = 0;
  task.told_infeasible = false;
  task.cancel_requested = task.cancel_force = false;
  task.node.clear();
  SchedClass& cls = ClassFor(spec);
  cls.unfinished++;
  task.cls = &cls;
  peak_unfinished_ = std::max(peak_unfinished_, ++unfinished_);
  for (const auto& dep : spec.deps()) {
    Object& d = objects_[dep];
    d.dependents++;
    if (!d.ready) {
      d.waiting.push_back(id);
      task.unresolved++;
    }
  }
  Count("tasks_reconstructed");
  LOG_INFO("re-running task {} ({}) to rebuild its result, lost with its node", ShortHex(id),
           Printable(spec.name()));
  // Its owner drops the value it holds and waits for the new one.
  if (auto c = clients_.find(obj.owner); c != clients_.end())
    SendValue(c->second, ErrorValue(id, proto::RECONSTRUCTING, "being rebuilt"));
  if (task.unresolved == 0) Enqueue(id, task);
  return true;
}

void TaskManager::LoseStoredOn(Node* node, const std::string& why) {
  store_usage_.erase(node->view.id);
  pending_deletes_.erase(node->view.id);
  std::vector<std::string> lost;
  for (auto& [key, obj] : objects_) {
    proto::ObjectValue& v = obj.value;
    if (!obj.ready || v.stored_size() == 0) continue;
    auto at = std::find(v.locations().begin(), v.locations().end(), node->view.id);
    if (at == v.locations().end()) continue;
    std::string id = key.str();
    v.mutable_locations()->erase(at);
    if (!v.locations().empty()) continue;
    Count("stored_objects_lost");
    obj.spilled = obj.spilling = false;
    v = ErrorValue(id, proto::OBJECT_LOST,
                   fmt::format("object {} ({}) was only in the object store of node {} ({}), which is gone: {}", Hex(id),
                               FormatBytes(static_cast<double>(v.stored_size())), ShortHex(node->view.id),
                               node->info.hostname(), why));
    lost.push_back(id);
  }
  RebuildOrReport(lost);
}

void TaskManager::DropMissingCopy(Node* node, const std::string& id, uint32_t attempt) {
  auto it = objects_.find(id);
  if (it == objects_.end() || !it->second.ready || it->second.value.stored_attempt() != attempt) return;
  Object& obj = it->second;
  proto::ObjectValue& v = obj.value;
  auto at = std::find(v.locations().begin(), v.locations().end(), node->view.id);
  if (v.stored_size() == 0 || at == v.locations().end() || obj.spilling) return;
  v.mutable_locations()->erase(at);
  if (auto u = store_usage_.find(node->view.id); u != store_usage_.end()) {
    uint64_t& from = obj.spilled ? u->second.spilled : u->second.bytes;
    from -= std::min(from, v.stored_size());
    if (--u->second.objects <= 0) store_usage_.erase(u);
  }
  Count("stored_copies_missing");
  LOG_WARN("node {} ({}) does not have object {} the head placed there (its store was emptied: the agent "
           "restarted?)", ShortHex(node->view.id), node->info.hostname(), ShortHex(id));
  if (!v.locations().empty()) return;  // readers go to another copy
  Count("stored_objects_lost");
  obj.spilled = false;
  v = ErrorValue(id, proto::OBJECT_LOST,
                 fmt::format("object {} ({}) is no longer in the object store of node {} ({}), its only holder",
                             Hex(id), FormatBytes(static_cast<double>(v.stored_size())), ShortHex(node->view.id),
                             node->info.hostname()));
  RebuildOrReport({id});
}

void TaskManager::RebuildOrReport(const std::vector<std::string>& lost) {
  // Task results are rebuilt by running their tasks again (their arguments first, if lost too);
  // the rest stay errors, sent to their owners (who may hold the old value, where it was).
  for (const auto& id : lost) {
    auto it = objects_.find(id);
    if (it == objects_.end() || !it->second.ready || it->second.value.error() != proto::OBJECT_LOST) continue;
    std::string cannot;
    if (Reconstruct(id, &cannot)) continue;
    proto::ObjectValue& v = it->second.value;
    v.set_message(v.message() + "; it cannot be rebuilt: " + cannot);
    if (auto c = clients_.find(it->second.owner); c != clients_.end()) SendValue(c->second, v);
  }
}

std::string TaskManager::LargestHolder(const std::vector<std::string>& deps) const {
  if (deps.empty()) return "";
  std::unordered_map<std::string, uint64_t> bytes;
  for (const auto& dep : deps) {
    auto it = objects_.find(dep);
    if (it == objects_.end()) continue;
    for (const auto& node : it->second.value.locations()) bytes[node] += it->second.value.stored_size();
  }
  std::string best;
  uint64_t most = 0;
  for (const auto& [node, n] : bytes)
    if (n > most || (n == most && node < best)) {
      best = node;
      most = n;
    }
  return best;
}

Status TaskManager::AddCopy(ClientSession* client, const proto::ObjectValue& copy) {
  Node* node = copy.locations_size() == 1 ? nodes_.Find(copy.locations(0)) : nullptr;
  auto value = PrepareCopy(client, copy.id(), node);
  if (!value) return value.error();
  if (*value == nullptr) return Status::Ok();  // another reader there was first
  if ((*value)->stored_attempt() != copy.stored_attempt())
    return Status(Code::kFailedPrecondition, "not a copy of this value");
  RecordCopy(copy.id(), copy.stored_attempt(), node);
  return Status::Ok();
}

Result<const proto::ObjectValue*> TaskManager::PrepareCopy(ClientSession* client, const std::string& id, Node* node) {
  auto it = objects_.find(id);
  if (it == objects_.end() || !MayRead(*client, it->second))
    return Err(Code::kNotFound, fmt::format("object {} is not known to the head", Hex(id)));
  Object& obj = it->second;
  const proto::ObjectValue& v = obj.value;
  if (node && IsWorkerToken(client->token_id) && client->token_id != "w:" + Hex(node->view.id))
    return Err(Code::kPermissionDenied, "a worker adds copies on its own node only");
  if (v.error() != proto::ERROR_NONE) return Err(Code::kNotFound, v.message());
  if (!obj.ready || v.stored_size() == 0 || node == nullptr || node->state != NodeState::kAlive)
    return Err(Code::kFailedPrecondition, "not a stored value, or its node is not alive");
  if (std::find(v.locations().begin(), v.locations().end(), node->view.id) != v.locations().end())
    return nullptr;
  if (obj.spilled || obj.spilling || MakeRoom(node, v.stored_size()))
    return Err(Code::kResourceExhausted, "no room for another copy there");
  return &v;
}

bool TaskManager::RecordCopy(const std::string& id, uint32_t attempt, Node* node) {
  auto it = objects_.find(id);
  if (it == objects_.end() || !it->second.ready || it->second.value.stored_attempt() != attempt ||
      it->second.value.error() != proto::ERROR_NONE || it->second.spilling || it->second.spilled) {
    DeleteOn(node->view.id, id, attempt);  // (a spilled value's usage is counted for one node only)
    return false;
  }
  proto::ObjectValue& v = it->second.value;
  if (std::find(v.locations().begin(), v.locations().end(), node->view.id) != v.locations().end()) return true;
  v.add_locations(node->view.id);
  StoreUsage& u = store_usage_[node->view.id];
  u.bytes += v.stored_size();
  u.objects++;
  Count("stored_copies_added");
  return true;
}

void TaskManager::ForgetRefusedPut(ClientSession* client, const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.owner != client->id || it->second.has_task) return;
  Disown(client->id);
  objects_.erase(it);
}

std::optional<Status> TaskManager::PutRefusal(const std::string& id) const {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.value.error() == proto::ERROR_NONE) return std::nullopt;
  const proto::ObjectValue& v = it->second.value;
  return Status(v.error() == proto::OBJECT_STORE_FULL ? Code::kResourceExhausted : Code::kFailedPrecondition,
                v.message());
}

Result<const proto::ObjectValue*> TaskManager::StoredForRead(ClientSession* client, const std::string& id) const {
  auto it = objects_.find(id);
  if (it == objects_.end() || !MayRead(*client, it->second))
    return Err(Code::kNotFound, fmt::format("object {} is not known to the head: it was freed, or its owner exited "
                                            "(or it belongs to a client with another token)", Hex(id)));
  const proto::ObjectValue& v = it->second.value;
  if (v.error() != proto::ERROR_NONE) return Err(Code::kNotFound, v.message());
  if (!it->second.ready || v.stored_size() == 0)
    return Err(Code::kFailedPrecondition, fmt::format("object {} is not a stored value", Hex(id)));
  return &v;
}

}  // namespace corral::head
