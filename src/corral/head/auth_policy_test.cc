// Every message a client can send has a role in the policy, read from the protocol's own
// descriptors: a new message type or operation without an entry in the table below fails here.
#include "corral/head/auth_policy.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace corral::head {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Sets field `f` of `m` (a oneof member) to a default value.
void SetMember(Message* m, const FieldDescriptor* f) {
  const auto* r = m->GetReflection();
  if (f->type() == FieldDescriptor::TYPE_MESSAGE) r->MutableMessage(m, f);
  else if (f->type() == FieldDescriptor::TYPE_BOOL) r->SetBool(m, f, true);
  else FAIL() << "unexpected member type of " << f->full_name();
}

const std::map<std::string, Role> kClientMessages = {
    {"submit", Role::kSubmit}, {"put", Role::kSubmit},     {"subscribe", Role::kSubmit},
    {"release", Role::kSubmit}, {"cancel", Role::kSubmit}, {"goodbye", Role::kRead},
    {"direct_lost", Role::kSubmit},
};
const std::map<std::string, Role> kRequests = {
    {"nodes", Role::kRead},          {"status", Role::kRead},          {"task_log", Role::kRead},          {"durable_get", Role::kRead},
    {"durable_list", Role::kRead},   {"durable_submit", Role::kSubmit}, {"durable_cancel", Role::kSubmit},
    {"durable_progress", Role::kWorker}, {"durable_forget", Role::kSubmit}, {"durable_store", Role::kSubmit},
    {"fetch_object", Role::kSubmit}, {"put_stored", Role::kSubmit}, {"add_copy", Role::kSubmit}, {"pull_to_node", Role::kSubmit},
    {"contain_refs", Role::kSubmit}, {"borrow_refs", Role::kSubmit},
    {"drain", Role::kAdmin},         {"token", Role::kAdmin},           {"node", Role::kAdmin},
    {"certs", Role::kAdmin},
};
const std::map<std::string, Role> kScheduleOps = {
    {"LIST", Role::kRead},     {"HISTORY", Role::kRead},  {"ADD", Role::kSubmit},    {"PAUSE", Role::kSubmit},
    {"RESUME", Role::kSubmit}, {"REMOVE", Role::kSubmit}, {"RUN_NOW", Role::kSubmit},
};
const std::map<std::string, Role> kQueueOps = {{"LIST", Role::kRead}, {"SET", Role::kAdmin}};
const std::map<std::string, Role> kActorOps = {
    {"GET", Role::kRead}, {"LIST", Role::kRead}, {"KILL", Role::kSubmit}, {"ROUTE", Role::kSubmit}};
const std::map<std::string, Role> kGangOps = {
    {"GET", Role::kRead}, {"LIST", Role::kRead}, {"CREATE", Role::kSubmit}, {"REMOVE", Role::kSubmit}};

TEST(AuthPolicy, EveryClientMessageHasItsRole) {
  const auto* oneof = proto::ClientToHead::descriptor()->FindOneofByName("msg");
  for (int i = 0; i < oneof->field_count(); ++i) {
    const FieldDescriptor* f = oneof->field(i);
    if (f->name() == "hello" || f->name() == "request") continue;  // the handshake; requests below
    ASSERT_TRUE(kClientMessages.contains(f->name())) << "no role for ClientToHead." << f->name();
    proto::ClientToHead m;
    SetMember(&m, f);
    EXPECT_EQ(RequiredRole(m), kClientMessages.at(f->name())) << f->name();
  }
}

TEST(AuthPolicy, EveryRequestAndOperationHasItsRole) {
  const auto* oneof = proto::Request::descriptor()->FindOneofByName("what");
  for (int i = 0; i < oneof->field_count(); ++i) {
    const FieldDescriptor* f = oneof->field(i);
    if (f->name() == "schedule" || f->name() == "queue" || f->name() == "actor" || f->name() == "gang")
      continue;  // per operation, below
    ASSERT_TRUE(kRequests.contains(f->name())) << "no role for Request." << f->name();
    proto::ClientToHead m;
    SetMember(m.mutable_request(), f);
    EXPECT_EQ(RequiredRole(m), kRequests.at(f->name())) << f->name();
  }
  const auto* ops = proto::ScheduleRequest::Op_descriptor();
  for (int i = 0; i < ops->value_count(); ++i) {
    ASSERT_TRUE(kScheduleOps.contains(ops->value(i)->name())) << "no role for schedule " << ops->value(i)->name();
    proto::Request r;
    r.mutable_schedule()->set_op(static_cast<proto::ScheduleRequest::Op>(ops->value(i)->number()));
    EXPECT_EQ(RequiredRole(r), kScheduleOps.at(ops->value(i)->name()));
  }
  const auto* qops = proto::QueueRequest::Op_descriptor();
  for (int i = 0; i < qops->value_count(); ++i) {
    ASSERT_TRUE(kQueueOps.contains(qops->value(i)->name())) << "no role for queue " << qops->value(i)->name();
    proto::Request r;
    r.mutable_queue()->set_op(static_cast<proto::QueueRequest::Op>(qops->value(i)->number()));
    EXPECT_EQ(RequiredRole(r), kQueueOps.at(qops->value(i)->name()));
  }
  const auto* aops = proto::ActorRequest::Op_descriptor();
  for (int i = 0; i < aops->value_count(); ++i) {
    ASSERT_TRUE(kActorOps.contains(aops->value(i)->name())) << "no role for actor " << aops->value(i)->name();
    proto::Request r;
    r.mutable_actor()->set_op(static_cast<proto::ActorRequest::Op>(aops->value(i)->number()));
    EXPECT_EQ(RequiredRole(r), kActorOps.at(aops->value(i)->name()));
  }
  const auto* gops = proto::GangRequest::Op_descriptor();
  for (int i = 0; i < gops->value_count(); ++i) {
    ASSERT_TRUE(kGangOps.contains(gops->value(i)->name())) << "no role for gang " << gops->value(i)->name();
    proto::Request r;
    r.mutable_gang()->set_op(static_cast<proto::GangRequest::Op>(gops->value(i)->number()));
    EXPECT_EQ(RequiredRole(r), kGangOps.at(gops->value(i)->name()));
  }
}

TEST(AuthPolicy, UnknownMessagesNeedARoleNobodyHas) {
  EXPECT_EQ(RequiredRole(proto::ClientToHead{}), std::nullopt);  // nothing set
  EXPECT_EQ(RequiredRole(proto::Request{}), std::nullopt);
  proto::Request r;
  r.mutable_schedule()->set_op(static_cast<proto::ScheduleRequest::Op>(99));
  EXPECT_EQ(RequiredRole(r), std::nullopt);
}

TEST(AuthPolicy, RolesIncludeTheLesserOnes) {
  EXPECT_TRUE(Allows(Role::kAdmin, Role::kAgent));
  EXPECT_TRUE(Allows(Role::kAgent, Role::kAgent));
  EXPECT_TRUE(Allows(Role::kRead, Role::kRead));
  EXPECT_TRUE(Allows(Role::kSubmit, Role::kRead));
  EXPECT_FALSE(Allows(Role::kRead, Role::kSubmit));
  EXPECT_FALSE(Allows(Role::kSubmit, Role::kAdmin));
  EXPECT_FALSE(Allows(Role::kSubmit, Role::kAgent));
  EXPECT_FALSE(Allows(Role::kAgent, Role::kAdmin));
  EXPECT_FALSE(Allows(Role::kAgent, Role::kSubmit));  // its workers have their own credential
  EXPECT_FALSE(Allows(Role::kAgent, Role::kRead));
  EXPECT_TRUE(Allows(Role::kWorker, Role::kSubmit));  // nested tasks
}

TEST(AuthPolicy, AJoinTokenOnlyJoins) {
  for (Role need : {Role::kRead, Role::kSubmit, Role::kAdmin, Role::kAgent, Role::kWorker})
    EXPECT_FALSE(Allows(Role::kJoin, need)) << RoleName(need);
  EXPECT_TRUE(Allows(Role::kJoin, Role::kJoin));
  EXPECT_TRUE(Allows(Role::kAgent, Role::kJoin));
  EXPECT_TRUE(Allows(Role::kAdmin, Role::kJoin));
  EXPECT_FALSE(Allows(Role::kSubmit, Role::kJoin));
  EXPECT_FALSE(Allows(Role::kWorker, Role::kJoin));
}

}  // namespace
}  // namespace corral::head
