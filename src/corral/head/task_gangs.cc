// TaskManager: gangs (gang_book.h) and the tasks and actors placed in them.
#include <fmt/format.h>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/task_manager.h"
#include "corral/head/token_store.h"

namespace corral::head {

Status TaskManager::HandleGangRequest(ClientSession* client, const proto::GangRequest& request, proto::Reply* reply) {
  switch (request.op()) {
    case proto::GangRequest::CREATE: {
      if (client->id.empty()) return MakeStatus(Code::kFailedPrecondition, "only a client may create a gang");
      auto g = gangs_.Create(request, client->id, client->token_id);
      if (!g) return g.error();
      Count("gangs_created");
      dirty_ = true;
      nodes_changed_ = true;  // what is free changed: every class is looked at again
      gangs_.Fill(**g, reply->add_gangs());
      return Status::Ok();
    }
    case proto::GangRequest::GET: {
      const GangBook::Gang* g = gangs_.Find(request.gang_id());
      if (!g) return MakeStatus(Code::kNotFound, "no gang {}: it was removed, or its creator exited", ShortHex(request.gang_id()));
      gangs_.Fill(*g, reply->add_gangs());
      return Status::Ok();
    }
    case proto::GangRequest::LIST:
      gangs_.FillAll(reply->mutable_gangs());
      return Status::Ok();
    case proto::GangRequest::REMOVE: {
      const GangBook::Gang* g = gangs_.Find(request.gang_id());
      if (!g) return Status::Ok();  // removed already: removing is idempotent
      if (!MayUseGang(*client, *g))
        return MakeStatus(Code::kPermissionDenied, "gang {} was made with another token: remove it with that one (or "
                          "an admin token)", ShortHex(g->id));
      RemoveGang(g->id, "it was removed (corral.remove_gang)");
      return Status::Ok();
    }
    default: return MakeStatus(Code::kInvalidArgument, "unknown gang request");
  }
}

bool TaskManager::MayUseGang(const ClientSession& client, const GangBook::Gang& gang) const {
  // By token, not by the creator's session: a detached gang outlives it (as actors do).
  return client.may_touch_any || IsWorkerToken(client.token_id) || client.token_id == gang.owner_token;
}

std::string TaskManager::AdmitGangTask(const ClientSession& client, const proto::TaskSpec& spec) {
  const GangBook::Gang* g = gangs_.Find(spec.gang_id());
  std::string what = fmt::format("{} {}", spec.has_actor() ? "actor" : "task", Printable(spec.name()));
  if (!g && spec.resubmitted())
    return fmt::format("{} cannot run in gang {}: the head restarted, and gangs do not outlive it; create the gang "
                       "again",
                       what, ShortHex(spec.gang_id()));
  if (!g) return fmt::format("{} cannot run in gang {}: it was removed, or its creator exited", what, ShortHex(spec.gang_id()));
  if (!MayUseGang(client, *g))
    return fmt::format("{} cannot run in gang {}: the gang was made with another token", what, ShortHex(g->id));
  ResourceSet own;
  for (const auto& [k, v] : spec.resources()) own.Set(k, v);
  if (Status s = gangs_.CheckFits(*g, spec.gang_member(), own); !s.ok())
    return fmt::format("{} cannot run in gang {}: {}", what, ShortHex(g->id), s.message());
  return "";
}

void TaskManager::StopInGang(const std::string& gang_id, const std::string& why, bool removing) {
  std::vector<std::string> inside;
  for (const auto& [key, task] : tasks_)
    if (task.state != TaskState::kFinished && !task.actor_call && task.cls->gang_id == gang_id)
      inside.push_back(key.str());
  ClientSession head;
  head.may_touch_any = true;
  for (const auto& id : inside) {
    auto t = tasks_.find(id);
    if (t == tasks_.end() || t->second.state == TaskState::kFinished) continue;
    if (t->second.actor) {
      if (removing) {
        if (auto a = actors_.find(id); a != actors_.end()) a->second.kill_reason = why;
      } else {
        StopActor(id, why, /*restart=*/true);  // it waits for its gang, if it has restarts left
        continue;
      }
    }
    if (t->second.state != TaskState::kDispatched) {
      if (removing) Finish(id, ErrorValue(id, proto::CANCELLED, why));  // else it waits for the gang again
      continue;
    }
    proto::Cancel c;
    c.set_task_id(id);
    c.set_force(true);
    Cancel(&head, c);
  }
}

void TaskManager::RemoveGang(const std::string& id_ref, const std::string& why) {
  const std::string gang_id = id_ref;  // a copy: the caller's may be the gang's own, freed below
  const GangBook::Gang* g = gangs_.Find(gang_id);
  if (!g) return;
  std::string message = fmt::format("gang {}{} is gone: {}", ShortHex(gang_id), g->name.empty() ? "" : " (" + g->name + ")", why);
  StopInGang(gang_id, message, /*removing=*/true);
  gangs_.Remove(gang_id);
  Count("gangs_removed");
  LOG_INFO("{}", message);
  dirty_ = true;
  nodes_changed_ = true;
}

void TaskManager::RemoveGangsOf(const std::string& owner, const std::string& name) {
  for (const auto& id : gangs_.OwnedBy(owner)) RemoveGang(id, fmt::format("its creator ({}) exited", name));
}

}  // namespace corral::head
