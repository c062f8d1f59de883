// TaskManager's intake: a submitted task checked (its function, its arguments, its actor or gang),
// counted (metrics, journal), put in its scheduling class, and kept compactly (KeepSpec, SpecOf).
#include <openssl/sha.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <cstring>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/task_manager.h"

namespace corral::head {
namespace {

std::string ClassKey(const proto::TaskSpec& spec) {
  std::string key;
  std::map<std::string, double> res(spec.resources().begin(), spec.resources().end());
  for (const auto& [k, v] : res) key += fmt::format("{}={};", k, v);
  key += "|";
  std::map<std::string, std::string> sel(spec.label_selector().begin(), spec.label_selector().end());
  for (const auto& [k, v] : sel) key += fmt::format("{}={};", k, v);
  key += "|" + spec.python_version() + "|" + spec.cloudpickle_major();
  if (spec.interruptible()) key += "|i";
  if (!spec.durable_function().empty()) key += "|d:" + spec.durable_function();
  if (spec.has_actor()) key += "|actor";  // never prefetched: an actor holds its resources for good
  if (!spec.gang_id().empty()) key += fmt::format("|g:{}:{}", Hex(spec.gang_id()), spec.gang_member());
  return key;
}

}  // namespace

bool TaskManager::HashMatches(const std::string& pickled, const std::string& hash) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(pickled.data()), pickled.size(), md);
  return hash.size() == 16 && std::memcmp(md, hash.data(), 16) == 0;
}

void TaskManager::Submit(ClientSession* client, proto::TaskSpec&& spec) {
  std::string id = spec.task_id();
  if (id.empty()) return;
  if (!OwnsId(client, id)) {  // ids are predictable: another client's next one must not be taken
    Count("submissions_refused_foreign_id");
    return;
  }
  if (tasks_.contains(id) || objects_.contains(id)) return;  // a resubmission of the same task
  if (!client->id.empty()) spec.clear_queue();  // only the durable queue names a run's queue (metrics labels)
  if (!client->id.empty() && !spec.durable_function().empty()) {
    Count("submissions_refused_durable_function");  // durable runs come from the durable queue only
    return;
  }
  Count("tasks_submitted");
  if (!spec.function().empty() && !HashMatches(spec.function(), spec.function_hash())) {
    // Registered under another function's hash, it would run in place of that one for every client.
    Count("functions_refused_bad_hash");
    proto::ObjectValue refused = ErrorValue(id, proto::RUNTIME,
                                            fmt::format("the function of task {} does not match its hash (SHA-256, "
                                                        "first 16 bytes): refused; is this client's Corral the "
                                                        "head's version?",
                                                        Printable(spec.name())));
    SendValue(client, refused);
    return;
  }
  if (!spec.function().empty()) {
    Function& f = functions_[spec.function_hash()];
    if (f.pickled.empty()) {
      f.hash = spec.function_hash();
      f.name = spec.name();
      f.pickled = std::move(*spec.mutable_function());
    }
    if (client->functions.insert(spec.function_hash()).second) f.uses++;
    spec.clear_function();
  }
  owned_[client->id]++;
  Task& task = tasks_[id];
  task.durable = !spec.durable_function().empty();
  auto function = functions_.find(spec.function_hash());
  // Metrics and journal names: looked up once per function (its tasks reuse them), else per task.
  Function* fn = nullptr;
  if (spec.queue().empty() && function != functions_.end() && function->second.name == spec.name()) {
    fn = &function->second;
    if (!fn->series) fn->series = &metrics_.For(spec.name(), "");
    if (!fn->journal_name) fn->journal_name = journal_.Intern(spec.name());
  }
  task.series = fn ? fn->series : &metrics_.For(spec.name(), spec.queue());
  task.series->submitted++;
  task.since = Now();
  task.journal = journal_.Submitted(id, fn ? fn->journal_name : nullptr, spec.name(), spec.queue(), spec.args().size(),
                                    spec.deps_size(), spec.deps_size() > 0, nodes_.clock().WallNs());
  std::string refusal;
  proto::ErrorKind kind = proto::RUNTIME;
  if (spec.has_actor() || !spec.actor_id().empty()) refusal = AdmitActorTask(client, id, task, spec, &kind);
  // (A resubmission after a head restart goes the usual way: the agent's held attempts are taken over.)
  task.direct = task.actor_call && !spec.direct_node().empty() && !spec.resubmitted();
  if (refusal.empty() && !spec.gang_id().empty()) refusal = AdmitGangTask(*client, spec);
  SchedClass& cls = ClassFor(spec);
  cls.unfinished++;
  task.cls = &cls;
  peak_unfinished_ = std::max(peak_unfinished_, ++unfinished_);
  // Refuse what cannot run before counting dependencies, so nothing is counted that is not undone.
  if (!refusal.empty()) {
  } else if (!task.durable && !task.actor_call && function == functions_.end()) {
    refusal = fmt::format("the head does not know the function of task {}; it was not sent with the first "
                          "submission on this connection",
                          spec.name());
  } else {
    for (const auto& dep : spec.deps()) {
      bool refused = false;
      // An argument is read like a get: passing another token's object to a task would hand over its value.
      if (ReadableObject(*client, dep, &refused) == nullptr) {
        if (refused) Count("reads_refused_foreign_object");
        kind = proto::OBJECT_LOST;
        refusal = fmt::format("argument object {} of {} is not known to the head (it was freed, or its owner "
                              "exited), or belongs to a client with another token",
                              Hex(dep), spec.name());
        break;
      }
    }
  }
  if (!task.durable && !task.actor_call && refusal.empty()) {
    task.function = &function->second;
    task.function->uses++;
  }
  if (!refusal.empty()) {
    spec.clear_deps();
    KeepSpec(task, spec);
    Finish(id, ErrorValue(id, kind, std::move(refusal)));
    return;
  }
  proto::ObjectValue failed_dep;
  for (const auto& dep : spec.deps()) {
    Object& d = *ObjectFor(dep);
    d.dependents++;
    if (d.ready) {
      if (d.value.error() != proto::ERROR_NONE && failed_dep.id().empty()) {
        failed_dep = d.value;
        failed_dep.set_id(id);
      }
    } else {
      d.waiting.push_back(id);
      task.unresolved++;
    }
  }
  KeepSpec(task, spec);
  if (!failed_dep.id().empty()) {
    Finish(id, std::move(failed_dep));
    return;
  }
  if (task.unresolved == 0) Enqueue(id, task);
}

void TaskManager::KeepSpec(Task& task, proto::TaskSpec& spec, bool with_request) {
  if (task.function) {  // the function's entry has them (the name unless this task has its own)
    if (spec.name() == task.function->name) spec.clear_name();
    spec.clear_function_hash();
  }
  task.attempt = spec.attempt();
  task.max_retries = spec.max_retries();
  task.resubmitted = spec.resubmitted();
  task.has_deps = spec.deps_size() > 0;
  spec.clear_task_id();
  spec.clear_owner_id();
  spec.clear_attempt();
  spec.clear_max_retries();
  spec.clear_function();
  if (!with_request) {
    spec.clear_resources();
    spec.clear_label_selector();
  }
  task.spec = spec.SerializeAsString();
}

proto::TaskSpec TaskManager::SpecOf(const std::string& id, const Task& task) const {
  proto::TaskSpec spec;
  spec.ParseFromString(task.spec);  // written by KeepSpec: it parses
  spec.set_task_id(id);
  spec.set_owner_id(OwnerOf(id, task));
  spec.set_attempt(task.attempt);
  spec.set_max_retries(task.max_retries);
  if (task.function) {
    if (spec.name().empty()) spec.set_name(task.function->name);
    spec.set_function_hash(task.function->hash);
  }
  return spec;
}

std::string TaskManager::CountOf(uint32_t n, uint32_t limit) {
  return limit == UINT32_MAX ? fmt::format("{}, no limit", n) : fmt::format("{} of {}", n, limit);
}

std::vector<std::string> TaskManager::BytesFieldOf(const Task& task, int field) {
  // Reads that field alone: a task's end or an actor call's routing needs no more of its spec.
  std::vector<std::string> out;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(task.spec.data()),
                                            static_cast<int>(task.spec.size()));
  using Wire = google::protobuf::internal::WireFormatLite;
  while (uint32_t tag = in.ReadTag()) {
    if (Wire::GetTagFieldNumber(tag) == field && Wire::GetTagWireType(tag) == Wire::WIRETYPE_LENGTH_DELIMITED) {
      if (!Wire::ReadBytes(&in, &out.emplace_back())) break;
    } else if (!Wire::SkipField(&in, tag)) {
      break;
    }
  }
  return out;
}

std::string TaskManager::NameOf(const std::string& id, const Task& task) const {
  return SpecOf(id, task).name();
}

TaskManager::SchedClass& TaskManager::ClassFor(const proto::TaskSpec& spec) {
  auto [cit, fresh] = classes_.try_emplace(ClassKey(spec));
  SchedClass& cls = cit->second;
  if (fresh) {
    for (const auto& [k, v] : spec.resources()) cls.resources.Set(k, v);
    cls.request.resources = cls.resources;
    if (!spec.gang_id().empty()) {
      cls.gang_id = spec.gang_id();
      cls.request.resources = GangRequestFor(spec.gang_id(), spec.gang_member(), cls.resources);
    }
    cls.request.label_selector.insert(spec.label_selector().begin(), spec.label_selector().end());
    cls.request.python = spec.python_version();
    cls.request.cloudpickle_major = spec.cloudpickle_major();
    cls.request.interruptible = spec.interruptible();
    cls.request.durable_function = spec.durable_function();
    cls.request.no_prefetch = spec.has_actor();
  }
  return cls;
}

void TaskManager::SubmitDurable(proto::TaskSpec&& spec) {
  ClientSession nobody;  // durable runs belong to no client: their result goes to the durable queue
  nobody.id = "";
  nobody.may_touch_any = true;  // the head's own submission (its arguments are the queue's)
  std::string id = spec.task_id();
  Submit(&nobody, std::move(spec));
  if (auto t = tasks_.find(id); t != tasks_.end()) t->second.released = true;  // nobody holds it: freed once finished
  if (auto o = objects_.find(id); o != objects_.end()) {
    o->second.released = true;
    TryFree(id);
  }
}




}  // namespace corral::head
