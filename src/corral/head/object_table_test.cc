// The head's directory of stored objects (TaskManager, task_objects.cc): per-node accounting,
// spilling the least recently used, refusals, and deletions that wait for a disconnected node.
// Each node's connection is an in-process stream whose other end the test reads.
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <map>
#include <string>
#include <vector>

#include "corral/base/clock.h"
#include "corral/head/task_manager.h"
#include "corral/net/memory_stream.h"
#include "corral/node.pb.h"

namespace corral::head {
namespace {

constexpr uint64_t kMiB = 1 << 20;

struct Table {
  FakeClock clock;
  boost::asio::io_context io;
  NodeRegistry nodes{clock, LivenessConfig{}};
  TaskManager tasks{nodes, {}};
  ClientSession driver;
  std::map<std::string, std::vector<proto::HeadToAgent>> sent;  // by node

  Table() {
    driver.id = std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    tasks.AddClient(&driver);
  }
  ~Table() { tasks.RemoveClient(&driver); }

  Node* AddNode(const std::string& id, uint64_t capacity, const std::map<std::string, double>& extra = {}) {
    auto [head_end, agent_end] = net::MakeMemoryStreamPair(io.get_executor(), "head", id);
    net::ConnectionOptions o;
    o.handshake_timeout = std::chrono::milliseconds(0);
    auto head_conn = net::Connection::Create(std::move(head_end), o);
    head_conn->Start([](std::string_view) {}, [](const Status&) {});
    auto agent = net::Connection::Create(std::move(agent_end), o);
    agent->Start(
        [this, id](std::string_view m) {
          proto::HeadToAgent msg;
          ASSERT_TRUE(msg.ParseFromArray(m.data(), static_cast<int>(m.size())));
          sent[id].push_back(msg);
        },
        [](const Status&) {});
    agents.push_back(agent);
    proto::NodeInfo info;
    info.set_node_id(id);
    (*info.mutable_resources())["CPU"] = 1;
    for (const auto& [k, v] : extra) (*info.mutable_resources())[k] = v;
    info.set_object_store_capacity(capacity);
    info.set_python_version("3.11.2");
    return nodes.Register(info, head_conn, 1);
  }
  // A put of `size` bytes written into `node`'s store; its id, and whether the head kept it.
  std::string Put(const std::string& node, uint64_t size, bool* kept = nullptr) {
    std::string id = MakeTaskId(driver.id, ++next);
    proto::ObjectValue v;
    v.set_id(id);
    v.set_stored_size(size);
    v.add_locations(node);
    tasks.Put(&driver, std::move(v));
    if (kept) *kept = !tasks.PutRefusal(id).has_value();
    return id;
  }
  void Release(const std::string& id) {
    proto::Release r;
    r.add_ids(id);
    tasks.Release(&driver, r);
  }
  void Settle() {
    io.restart();
    while (io.poll() > 0) io.restart();
  }
  // The (id) of every object the head told `node` to spill / delete so far.
  std::vector<std::string> Told(const std::string& node, bool spill) {
    Settle();
    std::vector<std::string> out;
    for (const auto& m : sent[node]) {
      const auto& list = spill ? m.spill_objects().objects() : m.delete_objects().objects();
      for (const auto& o : list) out.push_back(o.id());
    }
    return out;
  }

  // The function every test task runs ("pickled f"), under its hash.
  static void SetFunction(proto::TaskSpec& spec) {
    spec.set_function("pickled f");
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(spec.function().data()), spec.function().size(), md);
    spec.set_function_hash(std::string(reinterpret_cast<char*>(md), 16));
  }
  // A task running a registered no-op function with `deps` as arguments; its id.
  std::string Submit(const std::vector<std::string>& deps = {}, const std::map<std::string, double>& extra = {}) {
    proto::TaskSpec spec;
    std::string id = MakeTaskId(driver.id, ++next);
    spec.set_task_id(id);
    spec.set_name("m.f");
    SetFunction(spec);
    spec.set_args("args");
    spec.set_python_version("3.11");
    for (const auto& d : deps) spec.add_deps(d);
    (*spec.mutable_resources())["CPU"] = 1;
    for (const auto& [k, v] : extra) (*spec.mutable_resources())[k] = v;
    spec.set_max_retries(3);
    tasks.Submit(&driver, std::move(spec));
    return id;
  }
  int64_t Counter(const std::string& name) {
    proto::ClusterStatus s;
    tasks.FillStatus(&s);
    return s.counters().values().contains(name) ? s.counters().values().at(name) : 0;
  }
  // What the head sent `node` to run, by task id, and the spec of each.
  std::map<std::string, proto::TaskSpec> Executed(const std::string& node) {
    Settle();
    std::map<std::string, proto::TaskSpec> out;
    for (const auto& m : sent[node])
      if (m.has_execute()) out[m.execute().spec().task_id()] = m.execute().spec();
    return out;
  }
  void Finish(Node* node, const std::string& id) {
    proto::TaskFinished f;
    f.set_task_id(id);
    f.mutable_result()->set_data("value");
    tasks.OnTaskFinished(node, std::move(f));
  }

  // An actor's creation (the registered function as its class); its id.
  std::string CreateActor(uint32_t max_restarts, const std::string& name = "") {
    proto::TaskSpec spec;
    std::string id = MakeTaskId(driver.id, ++next);
    spec.set_task_id(id);
    spec.set_actor_id(id);
    spec.set_name("m.Actor");
    SetFunction(spec);
    spec.set_python_version("3.11");
    spec.set_max_retries(max_restarts);
    spec.mutable_actor()->set_class_name("m.Actor");
    spec.mutable_actor()->set_name(name);
    spec.mutable_actor()->set_namespace_("default");
    spec.mutable_actor()->add_methods("m");
    tasks.Submit(&driver, std::move(spec));
    return id;
  }
  // A call on `actor` by `caller` (this driver when null), waiting for `deps`; its id.
  std::string Call(const std::string& actor, const std::vector<std::string>& deps = {}, ClientSession* caller = nullptr,
                   uint32_t retries = 0, const std::string& method = "m") {
    caller = caller ? caller : &driver;
    proto::TaskSpec spec;
    std::string id = MakeTaskId(caller->id, ++next);
    spec.set_task_id(id);
    spec.set_actor_id(actor);
    spec.set_method(method);
    spec.set_name("m.Actor." + method);
    spec.set_max_retries(retries);
    for (const auto& d : deps) spec.add_deps(d);
    tasks.Submit(caller, std::move(spec));
    return id;
  }
  void Ready(Node* node, const std::string& actor, uint32_t attempt = 0) {
    proto::ActorReady r;
    r.set_actor_id(actor);
    r.set_attempt(attempt);
    tasks.OnActorReady(node, r);
  }
  // Ids of what the head sent `node` to run, in the order sent.
  std::vector<std::string> Order(const std::string& node) {
    Settle();
    std::vector<std::string> out;
    for (const auto& m : sent[node])
      if (m.has_execute()) out.push_back(m.execute().spec().task_id());
    return out;
  }
  proto::ActorInfo Info(const std::string& actor) {
    proto::ActorRequest list;
    list.set_op(proto::ActorRequest::LIST);
    list.set_include_dead(true);
    proto::Reply reply;
    EXPECT_TRUE(tasks.HandleActorRequest(&driver, list, &reply).ok());
    for (const auto& a : reply.actors())
      if (a.actor_id() == actor) return a;
    ADD_FAILURE() << "no such actor";
    return {};
  }

  std::vector<std::shared_ptr<net::Connection>> agents;
  uint64_t next = 0;
};

TEST(ObjectTable, FullStoreSpillsLeastRecentlyUsedAndAccountingReturnsToZero) {
  Table t;
  t.AddNode("n", 24 * kMiB);
  std::string a = t.Put("n", 8 * kMiB), b = t.Put("n", 8 * kMiB);
  proto::Subscribe touch;  // a is read: b becomes the least recently used
  touch.add_ids(a);
  t.tasks.Subscribe(&t.driver, touch);
  bool kept = false;
  std::string c = t.Put("n", 10 * kMiB, &kept);
  EXPECT_TRUE(kept);
  EXPECT_EQ(t.Told("n", true), std::vector<std::string>{b});
  // The agent reports the spill: b's bytes move from memory to disk.
  proto::ObjectsSpilled done;
  done.add_spilled()->set_id(b);
  t.tasks.OnObjectsSpilled(t.nodes.Find("n"), done);
  auto u = t.tasks.StoreUsageOf("n");
  EXPECT_EQ(u.bytes, 18 * kMiB);
  EXPECT_EQ(u.spilled, 8 * kMiB);
  EXPECT_EQ(u.spilling, 0u);
  EXPECT_EQ(u.objects, 3);
  for (const auto& id : {a, b, c}) t.Release(id);
  u = t.tasks.StoreUsageOf("n");
  EXPECT_EQ(u.bytes, 0u);
  EXPECT_EQ(u.spilled, 0u);
  EXPECT_EQ(u.objects, 0);
  auto deleted = t.Told("n", false);
  std::sort(deleted.begin(), deleted.end());
  std::vector<std::string> all{a, b, c};
  std::sort(all.begin(), all.end());
  EXPECT_EQ(deleted, all);
}

TEST(ObjectTable, AValueLargerThanTheStoreOrAfterAFailedSpillIsRefusedAndForgotten) {
  Table t;
  t.AddNode("n", 16 * kMiB);
  bool kept = true;
  std::string huge = t.Put("n", 17 * kMiB, &kept);
  EXPECT_FALSE(kept);
  EXPECT_EQ(t.Told("n", false), std::vector<std::string>{huge});  // its file goes
  size_t owned = t.tasks.Owned(t.driver.id);
  t.tasks.ForgetRefusedPut(&t.driver, huge);
  EXPECT_EQ(t.tasks.Owned(t.driver.id), owned - 1);
  EXPECT_EQ(t.tasks.PutRefusal(huge), std::nullopt);  // forgotten
  std::string a = t.Put("n", 10 * kMiB);
  t.Put("n", 10 * kMiB, &kept);  // asks for a to be spilled
  EXPECT_TRUE(kept);
  proto::ObjectsSpilled failed;
  failed.add_failed()->set_id(a);
  failed.set_error("No space left on device");
  t.tasks.OnObjectsSpilled(t.nodes.Find("n"), failed);
  EXPECT_EQ(t.tasks.StoreUsageOf("n").spilling, 0u);
  std::string refused = t.Put("n", 1 * kMiB, &kept);
  EXPECT_FALSE(kept);
  EXPECT_NE(t.tasks.PutRefusal(refused)->message().find("spilling to disk failed: No space left"), std::string::npos);
}

TEST(ObjectTable, DeletionsForADisconnectedNodeAreSentWhenItComesBack) {
  Table t;
  Node* n = t.AddNode("n", 64 * kMiB);
  std::string a = t.Put("n", kMiB);
  auto conn = n->conn;
  t.nodes.Disconnected(n);
  t.Release(a);
  EXPECT_TRUE(t.Told("n", false).empty());
  EXPECT_EQ(t.tasks.StoreUsageOf("n").bytes, 0u);
  n->conn = conn;  // it registered again before it was declared dead
  t.nodes.Heartbeat(n);
  t.tasks.Reconcile(n, {});
  EXPECT_EQ(t.Told("n", false), std::vector<std::string>{a});
}

}  // namespace
}  // namespace corral::head

namespace corral::head {
namespace {

TEST(ObjectTable, ARegisteringNodeIsReconciledWithWhatItsStoreHolds) {
  Table t;
  Node* n = t.AddNode("n", 64 * kMiB);
  std::string kept = t.Put("n", kMiB), gone = t.Put("n", kMiB);
  google::protobuf::RepeatedPtrField<proto::StoredObject> stored;
  stored.Add()->set_id(kept);
  stored.Add()->set_id("stranger");        // a value the head does not know there
  proto::StoredObject* result = stored.Add();  // a result whose report is on its way
  result->set_id("finishing");
  result->set_attempt(2);
  google::protobuf::RepeatedPtrField<proto::HeldAttempt> held;
  held.Add()->set_task_id("finishing");
  held.Mutable(0)->set_attempt(2);
  // During the head's start-up grace, unknown values are kept (a driver may send its put again).
  t.tasks.ReconcileStore(n, stored, held);
  EXPECT_TRUE(t.Told("n", false).empty());
  auto u = t.tasks.StoreUsageOf("n");
  EXPECT_EQ(u.objects, 1);  // `gone` is not there: that copy is forgotten (the only one: lost)
  EXPECT_EQ(u.bytes, kMiB);
  t.clock.Advance(std::chrono::seconds(3600));
  t.tasks.ReconcileStore(n, stored, held);
  EXPECT_EQ(t.Told("n", false), std::vector<std::string>{"stranger"});
  t.Release(kept);
  t.Release(gone);
}

TEST(IdKey, HoldsSixteenBytesInPlaceAndLongerIdsOnTheHeap) {
  std::string task = MakeTaskId("\x01\x02\x03\x04\x05\x06\x07\x08", 7);
  std::string durable = "report-2026-11-26-with-a-long-name#3";
  IdKey a(task), b(durable), empty;
  EXPECT_EQ(a.view(), task);
  EXPECT_EQ(b.str(), durable);
  EXPECT_TRUE(empty.empty());
  IdKey c = b, d = a;  // copies
  EXPECT_EQ(c, b);
  EXPECT_EQ(IdKey::Hash()(d), IdKey::Hash()(IdKey(task)));
  IdKey e = std::move(c);  // moves take the heap block
  EXPECT_EQ(e.str(), durable);
  EXPECT_TRUE(c.empty());
  e = a;
  d = std::move(b);
  EXPECT_EQ(e.str(), task);
  EXPECT_EQ(d.str(), durable);
  std::unordered_map<IdKey, int, IdKey::Hash> m{{IdKey(task), 1}, {IdKey(durable), 2}};
  EXPECT_EQ(m.at(task), 1);
  EXPECT_EQ(m.at(durable), 2);
  EXPECT_FALSE(m.contains(MakeTaskId("\x01\x02\x03\x04\x05\x06\x07\x08", 8)));
}

TEST(TaskTable, AQueuedTaskHasNoObjectEntryUntilSomethingNeedsOne) {
  Table t;
  std::string a = t.Submit(), b = t.Submit({a});
  EXPECT_EQ(t.Counter("unfinished_tasks"), 2);
  EXPECT_EQ(t.Counter("objects_held"), 1);  // a's result, which b waits for; b has none yet
  t.Release(b);  // its owner drops the result before there is one: it goes when it comes
  Node* n = t.AddNode("n", 0);
  t.tasks.OnNodesChanged();
  t.tasks.Schedule();
  auto ran = t.Executed("n");
  ASSERT_EQ(ran.size(), 1u);
  EXPECT_EQ(ran.begin()->first, a);  // with its whole spec rebuilt from what the head keeps
  EXPECT_EQ(ran[a].name(), "m.f");
  EXPECT_EQ(ran[a].args(), "args");
  EXPECT_EQ(ran[a].function(), "pickled f");
  EXPECT_EQ(ran[a].resources().at("CPU"), 1);
  t.Finish(n, a);
  t.tasks.Schedule();
  ran = t.Executed("n");
  ASSERT_TRUE(ran.contains(b));
  EXPECT_EQ(ran[b].deps_size(), 1);
  EXPECT_EQ(ran[b].deps(0), a);
  t.Finish(n, b);
  EXPECT_EQ(t.Counter("unfinished_tasks"), 0);
  EXPECT_EQ(t.Counter("objects_held"), 1);  // a, which its owner holds; b was freed as it finished
  t.Release(a);
  EXPECT_EQ(t.Counter("objects_held"), 0);
  EXPECT_EQ(t.Counter("functions_known"), 1);  // the driver that sent it is still here
}

TEST(TaskTable, AResultRebuiltAfterItsNodeDiedRunsWithItsTasksResources) {
  Table t;
  Node* n = t.AddNode("n", 64 * kMiB, {{"accel", 1}});
  std::string a = t.Submit({}, {{"accel", 1}});
  t.tasks.OnNodesChanged();
  t.tasks.Schedule();
  ASSERT_TRUE(t.Executed("n").contains(a));
  proto::TaskFinished f;
  f.set_task_id(a);
  f.mutable_result()->set_stored_size(kMiB);  // in n's store: kept to be rebuilt if n goes
  t.tasks.OnTaskFinished(n, std::move(f));
  t.AddNode("plain", 64 * kMiB);
  t.AddNode("m", 64 * kMiB, {{"accel", 1}});
  t.nodes.MarkDead(n);
  t.tasks.OnNodeDead(n, "gone");
  EXPECT_EQ(t.Counter("tasks_reconstructed"), 1);
  t.tasks.Schedule();
  EXPECT_FALSE(t.Executed("plain").contains(a));
  auto ran = t.Executed("m");
  ASSERT_TRUE(ran.contains(a));
  EXPECT_EQ(ran[a].resources().at("accel"), 1);
  EXPECT_EQ(ran[a].attempt(), 1u);
  EXPECT_EQ(ran[a].args(), "args");
  t.Release(a);
}

TEST(TaskTable, EachTaskOfAFunctionKeepsItsOwnName) {
  Table t;
  std::string a = t.Submit();  // named "m.f", as its function's first task
  proto::TaskSpec spec;        // the same function, named by .options(name="step-1")
  std::string c = MakeTaskId(t.driver.id, ++t.next);
  spec.set_task_id(c);
  spec.set_name("step-1");
  spec.set_python_version("3.11");
  unsigned char md[SHA256_DIGEST_LENGTH];
  std::string fn = "pickled f";
  SHA256(reinterpret_cast<const unsigned char*>(fn.data()), fn.size(), md);
  spec.set_function_hash(std::string(reinterpret_cast<char*>(md), 16));
  (*spec.mutable_resources())["CPU"] = 1;
  t.tasks.Submit(&t.driver, std::move(spec));
  t.AddNode("n", 0, {{"CPU", 2}});
  t.tasks.OnNodesChanged();
  t.tasks.Schedule();
  auto ran = t.Executed("n");
  ASSERT_EQ(ran.size(), 2u);
  EXPECT_EQ(ran[a].name(), "m.f");
  EXPECT_EQ(ran[c].name(), "step-1");
  EXPECT_EQ(ran[c].function_hash(), ran[a].function_hash());
}

TEST(TaskTable, WhatAClientOwnsIsCountedByItsIdAcrossSessions) {
  Table t;
  ClientSession other;  // same token: may borrow the driver's values
  other.id = std::string("\x09\x09\x09\x09\x09\x09\x09\x09", 8);
  t.tasks.AddClient(&other);
  std::string p = t.Put("n", 0);  // an inline value (no node needed)
  proto::BorrowRefs borrow;
  borrow.add_ids(p);
  t.tasks.BorrowRefs(&other, borrow);
  t.tasks.RemoveClient(&t.driver);  // gone for good: p lives on, borrowed
  EXPECT_EQ(t.tasks.Owned(t.driver.id), 1u);
  t.tasks.AddClient(&t.driver);  // back under the same id, a new session
  t.Submit();
  proto::Release unborrow;
  unborrow.set_borrowed(true);
  unborrow.add_ids(p);
  t.tasks.Release(&other, unborrow);  // p is freed: the count stays right for the new session
  EXPECT_EQ(t.Counter("objects_held"), 0);
  EXPECT_EQ(t.tasks.Owned(t.driver.id), 1u);
  t.tasks.RemoveClient(&t.driver);  // its queued task is found and cancelled
  EXPECT_EQ(t.Counter("tasks_cancelled"), 1);
  EXPECT_EQ(t.tasks.Owned(t.driver.id), 0u);
  t.tasks.AddClient(&t.driver);
  t.tasks.RemoveClient(&other);
}

TEST(TaskTable, AClientThatMayNotReadAResultMakesNoEntryForIt) {
  Table t;
  std::string a = t.Submit();
  ClientSession stranger;
  stranger.id = std::string("\x07\x07\x07\x07\x07\x07\x07\x07", 8);
  stranger.token_id = "another-token";
  t.tasks.AddClient(&stranger);
  proto::BorrowRefs borrow;
  borrow.add_ids(a);
  t.tasks.BorrowRefs(&stranger, borrow);
  EXPECT_EQ(t.Counter("objects_held"), 0);
  EXPECT_TRUE(stranger.borrowed.empty());
  t.tasks.RemoveClient(&stranger);
}

TEST(TaskTable, AnOwnerLeavingCancelsItsQueuedTasksFoundByTheirIds) {
  Table t;
  std::string a = t.Submit(), b = t.Submit({a});
  t.Submit();
  EXPECT_EQ(t.tasks.Owned(t.driver.id), 3u);
  t.tasks.RemoveClient(&t.driver);
  EXPECT_EQ(t.Counter("unfinished_tasks"), 0);
  EXPECT_EQ(t.Counter("tasks_cancelled"), 3);
  EXPECT_EQ(t.Counter("objects_held"), 0);
  EXPECT_EQ(t.Counter("functions_known"), 0);
  EXPECT_EQ(t.tasks.Owned(t.driver.id), 0u);
  t.tasks.AddClient(&t.driver);  // (the fixture removes it again)
}

TEST(Actors, CallsWaitForTheConstructorThenGoInOrderAndAWaitingArgumentHoldsBackOnlyItsCaller) {
  Table t;
  Node* n = t.AddNode("n", 0);
  ClientSession other;
  other.id = std::string("\x09\x09\x09\x09\x09\x09\x09\x09", 8);
  t.tasks.AddClient(&other);
  std::string actor = t.CreateActor(0);
  t.tasks.OnNodesChanged();
  t.tasks.Schedule();
  ASSERT_EQ(t.Order("n"), std::vector<std::string>{actor});
  std::string dep = t.Submit();  // a task's result, not ready: runs on n too, after the actor's constructor
  std::string c1 = t.Call(actor), c2 = t.Call(actor, {dep}), c3 = t.Call(actor);
  std::string o1 = t.Call(actor, {}, &other), o2 = t.Call(actor, {}, &other);
  EXPECT_EQ(t.Order("n").size(), 1u);  // the constructor has not returned
  EXPECT_EQ(t.Info(actor).state(), "PENDING");
  t.Ready(n, actor);
  EXPECT_EQ(t.Info(actor).state(), "ALIVE");
  EXPECT_EQ(t.Order("n"), (std::vector<std::string>{actor, c1, o1, o2}));  // c3 waits behind c2
  t.tasks.Schedule();
  auto order = t.Order("n");
  ASSERT_EQ(order.back(), dep);
  t.Finish(n, dep);
  EXPECT_EQ(t.Order("n"), (std::vector<std::string>{actor, c1, o1, o2, dep, c2, c3}));
  for (const auto& c : {c1, c2, c3, o1, o2}) t.Finish(n, c);
  EXPECT_EQ(t.Info(actor).running_calls(), 0);
  int64_t unfinished = t.Counter("unfinished_tasks");
  t.Call(actor, {}, nullptr, 0, "__setattr__");  // not one of the class's methods: refused at once
  EXPECT_EQ(t.Counter("unfinished_tasks"), unfinished);
  EXPECT_EQ(t.Order("n").back(), c3);
  t.tasks.RemoveClient(&other);
}

TEST(Actors, AWorkerDeathRestartsTheActorAndRetriesItsCallsInOrderWithinTheirRetries) {
  Table t;
  Node* n = t.AddNode("n", 0);
  std::string actor = t.CreateActor(/*max_restarts=*/1);
  t.tasks.OnNodesChanged();
  t.tasks.Schedule();
  t.Ready(n, actor);
  std::string kept = t.Call(actor, {}, nullptr, /*retries=*/1), lost = t.Call(actor, {}, nullptr, 0);
  std::string later = t.Call(actor, {}, nullptr, 0);
  auto died = [&](const std::string& id, uint32_t attempt) {
    proto::TaskFinished f;
    f.set_task_id(id);
    f.set_attempt(attempt);
    f.mutable_result()->set_error(proto::WORKER_DIED);
    f.mutable_result()->set_message("worker pid 7 killed by signal 9");
    t.tasks.OnTaskFinished(n, std::move(f));
  };
  died(actor, 0);  // the agent reports the creation first, then its calls
  EXPECT_EQ(t.Info(actor).state(), "RESTARTING");
  died(kept, 0);
  died(lost, 0);
  died(later, 0);
  t.tasks.Schedule();
  EXPECT_EQ(t.Order("n").back(), actor);  // the constructor again, as attempt 1
  t.Ready(n, actor, 1);
  auto order = t.Order("n");
  EXPECT_EQ(order.back(), kept);  // only the call with a retry left
  EXPECT_EQ(t.Info(actor).restarts(), 1u);
  EXPECT_EQ(t.Counter("actor_restarts"), 1);
  // The second death uses up the restarts: the actor is dead, and so are calls made after.
  died(actor, 1);
  died(kept, 1);
  EXPECT_EQ(t.Info(actor).state(), "DEAD");
  EXPECT_NE(t.Info(actor).death_cause().find("restarts used: 1 of 1"), std::string::npos);
  t.Call(actor);
  EXPECT_EQ(t.Order("n").back(), kept);  // nothing new was sent for it: it failed at once
  EXPECT_EQ(t.Counter("unfinished_tasks"), 0);
}

TEST(Actors, DirectCallsAreRecordedNotSentTheirEarlyEndsWaitAndLostOnesAreSentFromHere) {
  Table t;
  Node* n = t.AddNode("n", 0);
  std::string actor = t.CreateActor(0);
  t.tasks.OnNodesChanged();
  t.tasks.Schedule();
  t.Ready(n, actor);
  auto direct = [&](std::string id) {  // a call its caller also sent to n's agent
    proto::TaskSpec spec;
    spec.set_task_id(id);
    spec.set_actor_id(actor);
    spec.set_method("m");
    spec.set_name("m.Actor.m");
    spec.set_direct_node(n->view.id);
    t.tasks.Submit(&t.driver, std::move(spec));
    return id;
  };
  auto ended = [&](const std::string& id, uint32_t attempt = 0) {
    proto::TaskFinished f;
    f.set_task_id(id);
    f.set_attempt(attempt);
    f.set_direct(true);
    f.set_delivered(true);
    f.mutable_result()->set_data("value");
    t.tasks.OnTaskFinished(n, std::move(f));
  };
  // What the head pushes to the driver (a direct call's owner had its result from the agent).
  auto [driver_end, head_end] = net::MakeMemoryStreamPair(t.io.get_executor(), "driver", "head");
  std::vector<std::string> pushed;
  std::map<std::string, proto::ErrorKind> pushed_error;
  auto driver = net::Connection::Create(std::move(driver_end));
  driver->Start(
      [&](std::string_view m) {
        proto::HeadToClient msg;
        ASSERT_TRUE(msg.ParseFromArray(m.data(), static_cast<int>(m.size())));
        if (!msg.has_ready()) return;
        pushed.push_back(msg.ready().id());
        pushed_error[msg.ready().id()] = msg.ready().error();
      },
      [](const Status&) {});
  t.driver.conn = net::Connection::Create(std::move(head_end));
  t.driver.conn->Start([](std::string_view) {}, [](const Status&) {});
  std::string c1 = direct(MakeTaskId(t.driver.id, ++t.next));
  EXPECT_EQ(t.Order("n"), std::vector<std::string>{actor});  // recorded as running there, not sent
  EXPECT_EQ(t.Info(actor).running_calls(), 1);
  EXPECT_EQ(t.Counter("actor_calls_direct"), 1);
  // The agent's report may come before the caller's submission (two connections): kept for it.
  std::string c2 = MakeTaskId(t.driver.id, ++t.next);
  ended(c2);
  EXPECT_EQ(t.Counter("direct_call_ends_early"), 1);
  direct(c2);
  EXPECT_EQ(t.Info(actor).running_calls(), 1);  // c2 ended at once; c1 still runs
  t.Settle();
  EXPECT_TRUE(pushed.empty());  // the agent gave the caller c2's result: not sent again
  proto::Subscribe again_please;  // a caller whose connection to the agent broke asks for them
  again_please.add_ids(c2);  // (ended: sent at once)
  again_please.add_ids(c1);  // (running: sent when it ends)
  t.tasks.Subscribe(&t.driver, again_please);
  t.Settle();
  EXPECT_EQ(pushed, std::vector<std::string>{c2});
  // A call whose caller lost its connection to the agent: the agent says it never got it, so the
  // head sends it itself.
  std::string c3 = direct(MakeTaskId(t.driver.id, ++t.next));
  proto::DirectLost lost;
  lost.add_task_ids(c3);
  t.tasks.DirectLost(&t.driver, lost);
  t.Order("n");  // (what was sent arrives)
  auto probes = t.sent["n"];
  ASSERT_FALSE(probes.empty());
  ASSERT_TRUE(probes.back().has_probe_calls());
  EXPECT_EQ(probes.back().probe_calls().task_ids(0), c3);
  t.tasks.OnCallsNotHeld(n, probes.back().probe_calls());
  EXPECT_EQ(t.Counter("direct_calls_lost"), 1);
  // Sent from here, but in its caller's order: after c1, which still runs there (sent directly,
  // it could otherwise reach the worker after the head's copy of a later call).
  EXPECT_EQ(t.Order("n"), std::vector<std::string>{actor});
  ended(c1);
  t.tasks.Schedule();  // (the head server does after every message)
  EXPECT_EQ(t.Order("n"), (std::vector<std::string>{actor, c3}));
  EXPECT_EQ(pushed, (std::vector<std::string>{c2, c1}));
  proto::TaskFinished f3;  // its new attempt, sent by the head (a hand-back: no retry used)
  f3.set_task_id(c3);
  f3.set_attempt(1);
  f3.mutable_result()->set_data("value");
  t.tasks.OnTaskFinished(n, std::move(f3));
  EXPECT_EQ(t.Info(actor).running_calls(), 0);
  t.Settle();
  EXPECT_EQ(pushed.back(), c3);  // sent by the head, so its result too
  // A direct report names only an actor call sent to that node: not the actor's creation.
  ended(actor);
  EXPECT_EQ(t.Counter("direct_reports_refused"), 1);
  EXPECT_EQ(t.Info(actor).state(), "ALIVE");
  // After a head restart a driver sends its calls again as they were: those go the usual way.
  proto::TaskSpec again;
  again.set_task_id(MakeTaskId(t.driver.id, ++t.next));
  again.set_actor_id(actor);
  again.set_method("m");
  again.set_name("m.Actor.m");
  again.set_direct_node(n->view.id);
  again.set_resubmitted(true);
  t.tasks.Submit(&t.driver, proto::TaskSpec(again));
  EXPECT_EQ(t.Order("n").back(), again.task_id());
  t.Finish(n, again.task_id());
  // A later call of the same caller that comes through the head (an earlier one was lost, or the
  // first of them handed back) waits behind its direct calls still running, in its order.
  std::string d1 = direct(MakeTaskId(t.driver.id, ++t.next));
  std::string h1 = t.Call(actor);
  EXPECT_EQ(t.Order("n").back(), again.task_id());  // not sent yet
  ended(d1);
  t.tasks.Schedule();
  EXPECT_EQ(t.Order("n").back(), h1);
  t.Finish(n, h1);
  EXPECT_EQ(t.Counter("unfinished_tasks"), 1);  // the actor's creation alone
  // The actor dies after a call ended there but before the call's record came (a caller holds
  // the record of its only call a few ms): the call's end stands, not the actor's death.
  std::string before_death = MakeTaskId(t.driver.id, ++t.next);
  ended(before_death);
  proto::TaskFinished death;
  death.set_task_id(actor);
  death.mutable_result()->set_error(proto::WORKER_DIED);
  death.mutable_result()->set_message("worker pid 7 killed by signal 9");
  t.tasks.OnTaskFinished(n, std::move(death));
  ASSERT_EQ(t.Info(actor).state(), "DEAD");
  direct(before_death);
  t.Settle();
  EXPECT_FALSE(pushed_error.contains(before_death));  // its caller has the value: nothing pushed
  proto::Subscribe value_please;
  value_please.add_ids(before_death);
  t.tasks.Subscribe(&t.driver, value_please);
  t.Settle();
  ASSERT_TRUE(pushed_error.contains(before_death));
  EXPECT_EQ(pushed_error[before_death], proto::ERROR_NONE);
  t.driver.conn.reset();
}

TEST(Actors, NamesAreUniqueWhileTheActorLivesAndKillFreesThem) {
  Table t;
  t.AddNode("n", 0);
  std::string a = t.CreateActor(0, "svc");
  std::string b = t.CreateActor(0, "svc");  // refused: finished at once with the reason
  EXPECT_EQ(t.Counter("actors_created"), 1);
  proto::ActorRequest get;
  get.set_op(proto::ActorRequest::GET);
  get.set_name("svc");
  get.set_namespace_("default");
  proto::Reply reply;
  ASSERT_TRUE(t.tasks.HandleActorRequest(&t.driver, get, &reply).ok());
  ASSERT_EQ(reply.actors_size(), 1);
  EXPECT_EQ(reply.actors(0).actor_id(), a);
  proto::ActorRequest kill;
  kill.set_op(proto::ActorRequest::KILL);
  kill.set_actor_id(a);
  ASSERT_TRUE(t.tasks.HandleActorRequest(&t.driver, kill, &reply).ok());  // pending: it ends at once
  EXPECT_EQ(t.Info(a).state(), "DEAD");
  EXPECT_EQ(t.tasks.HandleActorRequest(&t.driver, get, &reply).code(), Code::kNotFound);
  (void)b;
}

}  // namespace
}  // namespace corral::head
