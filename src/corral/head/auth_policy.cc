#include "corral/head/auth_policy.h"

namespace corral::head {

std::optional<Role> RequiredRole(const proto::Request& request) {
  switch (request.what_case()) {
    case proto::Request::kNodes:
    case proto::Request::kStatus:
    case proto::Request::kTaskLog:
    case proto::Request::kDurableGet:
    case proto::Request::kDurableList: return Role::kRead;
    case proto::Request::kDurableSubmit:
    case proto::Request::kDurableCancel:
    case proto::Request::kDurableForget:
    case proto::Request::kDurableStore:
    case proto::Request::kFetchObject:
    case proto::Request::kPutStored:
    case proto::Request::kAddCopy:
    case proto::Request::kPullToNode:
    case proto::Request::kContainRefs:
    case proto::Request::kBorrowRefs: return Role::kSubmit;  // as a subscription: the owner's rules apply
    case proto::Request::kDurableProgress: return Role::kWorker;  // a run reports on itself
    case proto::Request::kDrain:
    case proto::Request::kToken:
    case proto::Request::kNode:
    case proto::Request::kCerts: return Role::kAdmin;
    case proto::Request::kSchedule:
      switch (request.schedule().op()) {
        case proto::ScheduleRequest::LIST:
        case proto::ScheduleRequest::HISTORY: return Role::kRead;
        case proto::ScheduleRequest::ADD:
        case proto::ScheduleRequest::PAUSE:
        case proto::ScheduleRequest::RESUME:
        case proto::ScheduleRequest::REMOVE:
        case proto::ScheduleRequest::RUN_NOW: return Role::kSubmit;
        default: return std::nullopt;
      }
    case proto::Request::kActor:
      switch (request.actor().op()) {
        case proto::ActorRequest::GET:
        case proto::ActorRequest::LIST: return Role::kRead;
        case proto::ActorRequest::KILL:
        case proto::ActorRequest::ROUTE: return Role::kSubmit;  // (a route is for calling it)  // and the owner's rules (TaskManager::KillActor)
        default: return std::nullopt;
      }
    case proto::Request::kGang:
      switch (request.gang().op()) {
        case proto::GangRequest::GET:
        case proto::GangRequest::LIST: return Role::kRead;
        case proto::GangRequest::CREATE:
        case proto::GangRequest::REMOVE: return Role::kSubmit;  // and the owner's rules (TaskManager::RemoveGang)
        default: return std::nullopt;
      }
    case proto::Request::kQueue:
      switch (request.queue().op()) {
        case proto::QueueRequest::LIST: return Role::kRead;
        case proto::QueueRequest::SET: return Role::kAdmin;
        default: return std::nullopt;
      }
    default: return std::nullopt;
  }
}

std::optional<Role> RequiredRole(const proto::ClientToHead& message) {
  switch (message.msg_case()) {
    case proto::ClientToHead::kSubmit:
    case proto::ClientToHead::kPut:
    case proto::ClientToHead::kSubscribe:
    case proto::ClientToHead::kRelease:
    case proto::ClientToHead::kCancel:
    case proto::ClientToHead::kDirectLost: return Role::kSubmit;
    case proto::ClientToHead::kGoodbye: return Role::kRead;
    case proto::ClientToHead::kRequest: return RequiredRole(message.request());
    default: return std::nullopt;  // hello is the handshake's, not a message after it
  }
}

}  // namespace corral::head
