// A real HeadServer in this process, a real client::Client, and a fake agent driven by hand over a
// real connection: the handshake (token, protocol version) and result fencing, without Python.
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "corral/base/version.h"
#include "corral/client/client.h"
#include "corral/head/auth_policy.h"
#include "corral/head/head_server.h"
#include "corral/node.pb.h"

namespace corral {
namespace {

// The first 16 bytes of the SHA-256 of "pickled": the hash a client registers that function under.
const std::string kPickledHash = std::string("\x23\x9f\x78\x17\xed\x1c\xbd\x6e\xe3\x89\x3f\x84\x2b\x7f\x6d\x5f", 16);

using namespace std::chrono_literals;
namespace asio = boost::asio;

// The head on its own io thread.
struct HeadFixture {
  asio::io_context io;
  std::unique_ptr<head::HeadServer> head;
  std::thread thread;
  std::string address;

  // `tokens_path`: where tokens made with head->tokens() are kept ("": none can be made).
  explicit HeadFixture(head::LivenessConfig liveness = {}, std::string tokens_path = "") {
    head::HeadOptions o;
    o.listen = *net::ParseEndpoint("127.0.0.1:0");
    o.token = "secret";
    o.liveness = liveness;
    o.tokens_path = std::move(tokens_path);
    head = std::make_unique<head::HeadServer>(io, o);
    EXPECT_TRUE(head->Start().ok());
    address = head->endpoint().ToString();
    thread = std::thread([this] { io.run(); });
  }
  ~HeadFixture() {
    asio::post(io, [this] { head->Stop(); io.stop(); });
    thread.join();
  }
};

// A peer that speaks the agent (or client) protocol by hand and records what the head sends it.
template <typename In>
struct FakePeer {
  asio::io_context io;
  std::shared_ptr<net::Connection> conn;
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<In> inbox;
  bool closed = false;

  explicit FakePeer(const std::string& address) {
    std::promise<void> dialed;
    net::Dial(io, *net::ParseEndpoint(address), nullptr, 5s, [&](Result<std::unique_ptr<net::ByteStream>> r) {
      EXPECT_TRUE(r.has_value());
      conn = net::Connection::Create(std::move(*r));
      conn->Start(
          [this](std::string_view m) {
            In msg;
            ASSERT_TRUE(msg.ParseFromArray(m.data(), static_cast<int>(m.size())));
            if (msg.has_welcome() && msg.welcome().error().empty()) conn->MarkHandshakeDone();
            std::lock_guard lock(mu);
            inbox.push_back(std::move(msg));
            cv.notify_all();
          },
          [this](const Status&) {
            std::lock_guard lock(mu);
            closed = true;
            cv.notify_all();
          });
      dialed.set_value();
    });
    thread = std::thread([this] { io.run_for(30s); });
    dialed.get_future().wait();
  }
  ~FakePeer() {
    conn->Close(Status(Code::kCancelled, "test over"));
    io.stop();
    thread.join();
  }
  void Send(const google::protobuf::MessageLite& msg) { conn->Send(msg); }
  In Next(std::chrono::milliseconds wait = 10s) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, wait, [&] { return !inbox.empty() || closed; });
    if (inbox.empty()) return {};
    auto m = std::move(inbox.front());
    inbox.pop_front();
    return m;
  }
};

using FakeAgent = FakePeer<proto::HeadToAgent>;
using FakeClient = FakePeer<proto::HeadToClient>;

proto::AgentToHead AgentHello(const std::string& token, uint32_t protocol = kProtocolVersion) {
  proto::AgentToHead msg;
  proto::Hello* h = msg.mutable_hello();
  h->set_protocol_version(protocol);
  h->set_token(token);
  h->set_role(proto::Hello::AGENT);
  proto::NodeInfo* n = h->mutable_node();
  n->set_node_id("node-one");
  n->set_hostname("fake");
  (*n->mutable_resources())["CPU"] = 1;
  n->set_python_version("3.11.7");
  return msg;
}

// A client's Hello with `token` under client id `id`.
proto::ClientToHead ClientHello(const std::string& token, const std::string& id) {
  proto::ClientToHead hello;
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_token(token);
  hello.mutable_hello()->set_role(proto::Hello::CLIENT);
  hello.mutable_hello()->set_id(id);
  return hello;
}

// A submission of task `task_id`: function "pickled" (under its real hash), one CPU.
proto::ClientToHead Submission(const std::string& task_id) {
  proto::ClientToHead m;
  proto::TaskSpec* spec = m.mutable_submit();
  spec->set_task_id(task_id);
  spec->set_name("f");
  spec->set_function_hash(kPickledHash);
  spec->set_function("pickled");
  (*spec->mutable_resources())["CPU"] = 1;
  return m;
}

client::ClientOptions ClientFor(const std::string& address, const std::string& token) {
  client::ClientOptions o;
  o.head = *net::ParseEndpoint(address);
  o.token = token;
  o.name = "test";
  o.python_version = "3.11.7";
  o.connect_timeout = 5000ms;
  o.print_logs = false;
  return o;
}

TEST(HeadHandshake, RefusesBadTokenWithReason) {
  HeadFixture head;
  auto c = client::Client::Connect(ClientFor(head.address, "wrong"));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), Code::kPermissionDenied);
  EXPECT_NE(c.error().message().find("bad token"), std::string::npos) << c.error().message();
  EXPECT_TRUE(client::Client::Connect(ClientFor(head.address, "secret")).has_value());
}

TEST(HeadHandshake, RefusesOtherProtocolVersion) {
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret", kProtocolVersion + 7));
  proto::HeadToAgent reply = agent.Next();
  ASSERT_TRUE(reply.has_welcome());
  EXPECT_NE(reply.welcome().error().find("protocol version"), std::string::npos) << reply.welcome().error();
}

TEST(HeadFencing, StaleAttemptResultIsDiscarded) {
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret"));
  ASSERT_TRUE(agent.Next().has_welcome());

  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  int fn = (*c)->RegisterFunction("f", kPickledHash, "pickled", {{"CPU", 1}}, {}, 0);
  auto id = (*c)->Submit(fn, "args", {});
  ASSERT_TRUE(id.has_value());
  ASSERT_TRUE((*c)->Get({}, 0).has_value());  // flushes the corked submission

  proto::HeadToAgent exec = agent.Next();
  ASSERT_TRUE(exec.has_execute());
  EXPECT_EQ(exec.execute().spec().task_id(), *id);
  EXPECT_EQ(exec.execute().spec().function(), "pickled");  // first time on this node
  EXPECT_EQ(exec.execute().spec().attempt(), 0u);

  proto::AgentToHead stale;
  stale.mutable_finished()->set_task_id(*id);
  stale.mutable_finished()->set_attempt(5);
  stale.mutable_finished()->mutable_result()->set_data("from a superseded attempt");
  agent.Send(stale);
  proto::AgentToHead good;
  good.mutable_finished()->set_task_id(*id);
  good.mutable_finished()->set_attempt(0);
  good.mutable_finished()->mutable_result()->set_data("ok");
  agent.Send(good);

  auto values = (*c)->Get({*id}, 10);
  ASSERT_TRUE(values.has_value()) << values.error().ToString();
  EXPECT_EQ((*values)[0]->data(), "ok");
  proto::Request req;
  req.set_status(true);
  auto reply = (*c)->Request(req, 10);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status().counters().values().at("stale_results_discarded"), 1);
  EXPECT_EQ(reply->status().counters().values().at("tasks_succeeded"), 1);
}

TEST(HeadFunctions, AFunctionSentUnderAnotherFunctionsHashIsRefused) {
  // Registered under another function's hash, it would run in place of that one for every client
  // that sends only the hash (functions are shipped once, then named by hash).
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret"));
  ASSERT_TRUE(agent.Next().has_welcome());
  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value());
  int fn = (*c)->RegisterFunction("f", kPickledHash, "something else", {{"CPU", 1}}, {}, 0);
  auto id = (*c)->Submit(fn, "args", {});
  ASSERT_TRUE(id.has_value());
  auto values = (*c)->Get({*id}, 10);
  ASSERT_TRUE(values.has_value()) << values.error().ToString();
  EXPECT_EQ((*values)[0]->error(), proto::RUNTIME);
  EXPECT_NE((*values)[0]->message().find("does not match its hash"), std::string::npos) << (*values)[0]->message();
  EXPECT_FALSE(agent.Next(300ms).has_execute());  // nothing was dispatched
}

TEST(HeadScheduling, OtherPythonVersionIsInfeasibleWithReason) {
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret"));
  ASSERT_TRUE(agent.Next().has_welcome());
  auto options = ClientFor(head.address, "secret");
  options.python_version = "3.12.1";
  auto c = client::Client::Connect(options);
  ASSERT_TRUE(c.has_value());
  int fn = (*c)->RegisterFunction("f", kPickledHash, "pickled", {{"CPU", 1}}, {}, 0);
  ASSERT_TRUE((*c)->Submit(fn, "args", {}).has_value());
  ASSERT_TRUE((*c)->Get({}, 0).has_value());
  proto::Request req;
  req.set_status(true);
  for (int i = 0; i < 100; ++i) {
    auto reply = (*c)->Request(req, 10);
    ASSERT_TRUE(reply.has_value());
    if (reply->status().infeasible_size() > 0) {
      EXPECT_NE(reply->status().infeasible(0).find("Python 3.12"), std::string::npos)
          << reply->status().infeasible(0);
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
  FAIL() << "the task was never reported infeasible";
}


// A task dispatched to the fake agent; returns its id.
std::string SubmitOne(client::Client& c, uint32_t max_retries = 0) {
  int fn = c.RegisterFunction("f", kPickledHash, "pickled", {{"CPU", 1}}, {}, max_retries);
  auto id = c.Submit(fn, "args", {});
  EXPECT_TRUE(id.has_value());
  EXPECT_TRUE(c.Get({}, 0).has_value());  // flushes the corked submission
  return *id;
}

proto::AgentToHead Finished(const std::string& id, uint32_t attempt, const std::string& data,
                            proto::ErrorKind error = proto::ERROR_NONE) {
  proto::AgentToHead msg;
  msg.mutable_finished()->set_task_id(id);
  msg.mutable_finished()->set_attempt(attempt);
  msg.mutable_finished()->mutable_result()->set_data(data);
  msg.mutable_finished()->mutable_result()->set_error(error);
  return msg;
}

int64_t Counter(client::Client& c, const std::string& name) {
  proto::Request req;
  req.set_status(true);
  auto reply = c.Request(req, 10);
  EXPECT_TRUE(reply.has_value());
  auto& values = reply->status().counters().values();
  return values.contains(name) ? values.at(name) : 0;
}

TEST(HeadReconnect, AgentThatComesBackHoldingItsAttemptKeepsIt) {
  HeadFixture head;
  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value());
  std::string id;
  {
    FakeAgent agent(head.address);
    agent.Send(AgentHello("secret"));
    ASSERT_TRUE(agent.Next().has_welcome());
    id = SubmitOne(**c);
    ASSERT_TRUE(agent.Next().has_execute());
  }  // the connection drops; the node keeps its task while its lease may last
  FakeAgent again(head.address);
  proto::AgentToHead hello = AgentHello("secret");
  proto::HeldAttempt* held = hello.mutable_hello()->add_held();
  held->set_task_id(id);
  held->set_attempt(0);
  held->set_finished(true);
  again.Send(hello);
  ASSERT_TRUE(again.Next().has_welcome());
  again.Send(Finished(id, 0, "done while away"));
  auto values = (*c)->Get({id}, 10);
  ASSERT_TRUE(values.has_value()) << values.error().ToString();
  EXPECT_EQ((*values)[0]->data(), "done while away");
  EXPECT_EQ(Counter(**c, "tasks_retried"), 0);
  EXPECT_EQ(Counter(**c, "attempts_lost_while_disconnected"), 0);
}

TEST(HeadReconnect, AgentThatNoLongerHoldsTheAttemptGetsANewOne) {
  // Past the restart grace (a dead threshold after the head started): attempts nobody knows are stopped.
  HeadFixture head(head::LivenessConfig{Ms(1000), Ms(1000), Ms(2000)});
  std::this_thread::sleep_for(2100ms);
  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value());
  std::string id;
  {
    FakeAgent agent(head.address);
    agent.Send(AgentHello("secret"));
    ASSERT_TRUE(agent.Next().has_welcome());
    id = SubmitOne(**c, /*max_retries=*/1);
    ASSERT_TRUE(agent.Next().has_execute());
  }
  FakeAgent again(head.address);
  proto::AgentToHead hello = AgentHello("secret");
  proto::HeldAttempt* held = hello.mutable_hello()->add_held();  // something else, long superseded
  held->set_task_id("not-a-task-here");
  held->set_attempt(3);
  again.Send(hello);
  ASSERT_TRUE(again.Next().has_welcome());
  // Its lease ran out and it stopped the attempt: the head runs the task again (attempt 1), and
  // tells it to stop what it holds that is not current.
  bool saw_cancel = false, saw_execute = false;
  for (int i = 0; i < 2; ++i) {
    proto::HeadToAgent m = again.Next();
    if (m.has_cancel()) {
      EXPECT_EQ(m.cancel().task_id(), "not-a-task-here");
      EXPECT_TRUE(m.cancel().force());
      saw_cancel = true;
    }
    if (m.has_execute()) {
      EXPECT_EQ(m.execute().spec().task_id(), id);
      EXPECT_EQ(m.execute().spec().attempt(), 1u);
      EXPECT_EQ(m.execute().spec().function(), "pickled");  // a new agent process may not have it
      saw_execute = true;
    }
  }
  EXPECT_TRUE(saw_cancel && saw_execute);
  again.Send(Finished(id, 0, "late, from the old attempt"));
  again.Send(Finished(id, 1, "ok"));
  auto values = (*c)->Get({id}, 10);
  ASSERT_TRUE(values.has_value());
  EXPECT_EQ((*values)[0]->data(), "ok");
  EXPECT_EQ(Counter(**c, "attempts_lost_while_disconnected"), 1);
  EXPECT_EQ(Counter(**c, "stale_results_discarded"), 1);
}

TEST(HeadHandBack, AHandedBackTaskRunsAgainWithoutUsingARetry) {
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret"));
  ASSERT_TRUE(agent.Next().has_welcome());
  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value());
  std::string id = SubmitOne(**c, /*max_retries=*/0);
  ASSERT_TRUE(agent.Next().has_execute());
  for (uint32_t attempt = 0; attempt < 3; ++attempt) {  // drained, lease ran out, drained again
    agent.Send(Finished(id, attempt, "", proto::HANDED_BACK));
    proto::HeadToAgent m = agent.Next();
    ASSERT_TRUE(m.has_execute());
    EXPECT_EQ(m.execute().spec().attempt(), attempt + 1);
  }
  agent.Send(Finished(id, 3, "ok"));
  auto values = (*c)->Get({id}, 10);
  ASSERT_TRUE(values.has_value());
  EXPECT_EQ((*values)[0]->data(), "ok");
  EXPECT_EQ(Counter(**c, "tasks_handed_back"), 3);
  EXPECT_EQ(Counter(**c, "tasks_retried"), 0);
}

TEST(HeadDrain, DrainingNodeGetsNoWorkAndLeaving) {
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret"));
  ASSERT_TRUE(agent.Next().has_welcome());
  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value());
  proto::Request drain;
  drain.mutable_drain()->set_node("6e6f64");  // hex of "nod..."
  drain.mutable_drain()->set_timeout_s(5);
  drain.mutable_drain()->set_leave(true);
  ASSERT_TRUE((*c)->Request(drain, 10).has_value());
  proto::HeadToAgent m = agent.Next();
  ASSERT_TRUE(m.has_drain());
  EXPECT_EQ(m.drain().timeout_ms(), 5000u);
  EXPECT_TRUE(m.drain().leave());
  std::string id = SubmitOne(**c);
  proto::AgentToHead leaving;
  leaving.mutable_leaving()->set_reason("drained");
  agent.Send(leaving);
  proto::Request nodes;
  nodes.set_nodes(true);
  std::string state;
  for (int i = 0; i < 100 && state != "left"; ++i) {
    auto r = (*c)->Request(nodes, 10);
    ASSERT_TRUE(r.has_value());
    state = r->nodes(0).state();
    if (state != "left") std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(state, "left");
  auto ready = (*c)->Wait({id}, 1, 0.2);
  ASSERT_TRUE(ready.has_value());
  EXPECT_FALSE((*ready)[0]) << "nothing may run on a draining node";
  proto::Request bad;
  bad.mutable_drain()->set_node("ffff");
  auto r = (*c)->Request(bad, 10);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("no live node matches"), std::string::npos) << r.error().message();
}

TEST(HeadOwnership, AClientCannotTakeAnotherClientsNextTaskId) {
  // Task ids are the client id and a counter: predictable. Submitting (or putting) under another
  // client's id would swallow its real submission and hand it the intruder's result.
  HeadFixture head;
  FakeAgent agent(head.address);
  agent.Send(AgentHello("secret"));
  ASSERT_TRUE(agent.Next().has_welcome());
  FakeClient thief(head.address);
  thief.Send(ClientHello("secret", "thief-01"));
  ASSERT_TRUE(thief.Next().has_welcome());
  for (const char* id : {"victim01\x01", "thief-01\x01"}) thief.Send(Submission(id));
  proto::HeadToAgent exec = agent.Next();  // only its own one is run
  ASSERT_TRUE(exec.has_execute());
  EXPECT_EQ(exec.execute().spec().task_id(), "thief-01\x01");
  EXPECT_FALSE(agent.Next(300ms).has_execute());
  auto c = client::Client::Connect(ClientFor(head.address, "secret"));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(Counter(**c, "submissions_refused_foreign_id"), 1);
}

TEST(HeadOwnership, AnAgentWritesOnlyIntoTheOutputOfTasksItWasGiven) {
  // Log lines were routed by an owner id the agent sent: any agent could write into any client's
  // output. Now the head routes by task, and only from the node it gave that task to.
  HeadFixture head;
  FakeAgent runner(head.address);
  runner.Send(AgentHello("secret"));
  ASSERT_TRUE(runner.Next().has_welcome());
  FakeAgent other(head.address);
  proto::AgentToHead other_hello = AgentHello("secret");
  other_hello.mutable_hello()->mutable_node()->set_node_id("node-two");
  (*other_hello.mutable_hello()->mutable_node()->mutable_resources())["CPU"] = 0;
  other.Send(other_hello);
  ASSERT_TRUE(other.Next().has_welcome());
  FakeClient owner(head.address);
  owner.Send(ClientHello("secret", "owner-02"));
  ASSERT_TRUE(owner.Next().has_welcome());
  owner.Send(Submission("owner-02\x01"));
  proto::HeadToAgent exec = runner.Next();
  ASSERT_TRUE(exec.has_execute());
  EXPECT_TRUE(exec.execute().spec().owner_id().empty()) << "nodes are not told who submitted it";
  auto line = [](const std::string& text) {
    proto::AgentToHead msg;
    msg.mutable_log()->set_task_id("owner-02\x01");
    msg.mutable_log()->set_owner_id("owner-02");  // what an agent used to send; ignored now
    msg.mutable_log()->set_text(text);
    return msg;
  };
  other.Send(line("forged"));
  proto::AgentToHead beat;  // its ack means the head has handled the line before it
  beat.mutable_heartbeat()->set_seq(1);
  other.Send(beat);
  ASSERT_TRUE(other.Next().has_heartbeat_ack());
  runner.Send(line("real"));
  proto::HeadToClient got = owner.Next();
  ASSERT_TRUE(got.has_log());
  EXPECT_EQ(got.log().text(), "real");
  EXPECT_EQ(got.log().node_id(), "node-one");
}

// The TCP side of the auth matrix, over real connections: a client Hello with no, a wrong, a
// revoked, an expired or a join token is refused; with each role, every message type and request
// operation (walked from the protocol's descriptors, so a new one is covered without an entry
// here) is refused exactly where the policy says the role is not enough.
TEST(AuthMatrix, EveryClientMessageIsRefusedOverTcpWhereTheRoleIsNotEnough) {
  std::string path = ::testing::TempDir() + "/corral-auth-matrix-" + std::to_string(getpid()) + ".json";
  unlink(path.c_str());
  HeadFixture head({}, path);
  std::map<head::Role, std::string> tokens;
  std::string revoked, expiring, join;
  std::promise<void> made;
  asio::post(head.io, [&] {
    auto& store = head.head->tokens();
    int64_t now = head.head->clock().WallNs();
    for (head::Role r : {head::Role::kRead, head::Role::kSubmit, head::Role::kAdmin, head::Role::kAgent})
      tokens[r] = *store.Create(std::string("m-") + head::RoleName(r), r, 0, now);
    revoked = *store.Create("m-gone", head::Role::kAdmin, 0, now);
    EXPECT_TRUE(head.head->RevokeToken("m-gone"));
    expiring = *store.Create("m-short", head::Role::kAdmin, 1, now);
    join = *store.Create("m-join", head::Role::kJoin, 0, now);
    made.set_value();
  });
  made.get_future().wait();
  std::this_thread::sleep_for(1100ms);  // "m-short" has expired
  int next_id = 0;
  auto connect = [&](const std::string& token) {
    auto c = std::make_unique<FakeClient>(head.address);
    c->Send(ClientHello(token, fmt::format("mx{:06d}", next_id++)));  // client ids are 8 bytes
    return c;
  };
  for (const std::string& bad : {std::string(""), std::string("wrong"), revoked, expiring, join}) {
    auto c = connect(bad);
    proto::HeadToClient w = c->Next();
    ASSERT_TRUE(w.has_welcome()) << bad;
    EXPECT_FALSE(w.welcome().error().empty()) << "token '" << bad << "' was let in";
  }
  {  // the head finds what a client owns by its 8-byte id: other lengths are refused
    FakeClient c(head.address);
    c.Send(ClientHello(tokens[head::Role::kAdmin], "nine-byte"));
    EXPECT_NE(c.Next().welcome().error().find("a client id is 8 bytes"), std::string::npos);
  }

  // Every message after the handshake: each oneof member, each request, each schedule and queue op.
  std::vector<std::pair<std::string, proto::ClientToHead>> messages;
  auto set_member = [](google::protobuf::Message* m, const google::protobuf::FieldDescriptor* f) {
    if (f->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) m->GetReflection()->MutableMessage(m, f);
    else m->GetReflection()->SetBool(m, f, true);
  };
  const auto* msg_oneof = proto::ClientToHead::descriptor()->FindOneofByName("msg");
  for (int i = 0; i < msg_oneof->field_count(); ++i) {
    const auto* f = msg_oneof->field(i);
    if (f->name() == "hello" || f->name() == "request" || f->name() == "goodbye") continue;  // goodbye ends it
    proto::ClientToHead m;
    set_member(&m, f);
    messages.emplace_back(f->name(), m);
  }
  const auto* what = proto::Request::descriptor()->FindOneofByName("what");
  for (int i = 0; i < what->field_count(); ++i) {
    const auto* f = what->field(i);
    const google::protobuf::EnumDescriptor* ops =
        f->name() == "schedule" ? proto::ScheduleRequest::Op_descriptor()
        : f->name() == "queue"  ? proto::QueueRequest::Op_descriptor()
                                : nullptr;
    for (int op = 0; op < (ops ? ops->value_count() : 1); ++op) {
      proto::ClientToHead m;
      m.mutable_request()->set_request_id(1);
      set_member(m.mutable_request(), f);
      if (f->name() == "schedule")
        m.mutable_request()->mutable_schedule()->set_op(static_cast<proto::ScheduleRequest::Op>(ops->value(op)->number()));
      if (f->name() == "queue")
        m.mutable_request()->mutable_queue()->set_op(static_cast<proto::QueueRequest::Op>(ops->value(op)->number()));
      messages.emplace_back("request." + f->name() + (ops ? "." + ops->value(op)->name() : ""), m);
    }
  }
  ASSERT_GT(messages.size(), 20u);
  for (const auto& [role, token] : tokens) {
    for (const auto& [name, m] : messages) {
      SCOPED_TRACE(std::string(head::RoleName(role)) + " sends " + name);
      auto need = head::RequiredRole(m);
      ASSERT_TRUE(need.has_value());
      auto c = connect(token);
      ASSERT_TRUE(c->Next().has_welcome());
      c->Send(m);
      proto::ClientToHead probe;  // answered after `m` was handled: anything about `m` came before
      probe.mutable_request()->set_request_id(99);
      probe.mutable_request()->set_status(true);
      c->Send(probe);
      bool denied = false;
      for (;;) {
        proto::HeadToClient got = c->Next();
        ASSERT_FALSE(got.ByteSizeLong() == 0) << "no answer to the probe";
        if (got.has_reply() && got.reply().request_id() == 99) break;
        std::string text = got.has_notice() ? got.notice().text()
                           : got.has_ready() ? got.ready().message()
                           : got.has_reply() ? got.reply().error()
                                             : "";
        denied |= text.find("; this needs ") != std::string::npos;
      }
      EXPECT_EQ(denied, !head::Allows(role, *need));
    }
  }
  unlink(path.c_str());
}

TEST(HeadRestart, ResubmittedTaskWaitsForTheAgentThatHoldsItThenRunsAfterTheGrace) {
  // A fresh head is indistinguishable from a restarted one: for a dead threshold it waits for
  // agents to claim resubmitted tasks.
  HeadFixture head(head::LivenessConfig{Ms(1000), Ms(1000), Ms(2000)});
  auto start = std::chrono::steady_clock::now();
  FakeAgent idle(head.address);
  idle.Send(AgentHello("secret"));
  ASSERT_TRUE(idle.Next().has_welcome());

  FakeClient owner(head.address);
  owner.Send(ClientHello("secret", "owner-01"));
  ASSERT_TRUE(owner.Next().has_welcome());
  auto resubmit = [&](const std::string& id) {
    proto::ClientToHead m = Submission(id);
    proto::TaskSpec* spec = m.mutable_submit();
    spec->set_python_version("3.11");
    spec->set_max_retries(3);
    spec->set_resubmitted(true);
    owner.Send(m);
  };
  resubmit("owner-01held");
  // The idle node could run it now, but an agent may still hold it: nothing is dispatched.
  EXPECT_FALSE(idle.Next(300ms).has_execute());

  FakeAgent holder(head.address);
  proto::AgentToHead h = AgentHello("secret");
  h.mutable_hello()->mutable_node()->set_node_id("node-two");
  proto::HeldAttempt* held = h.mutable_hello()->add_held();
  held->set_task_id("owner-01held");
  held->set_attempt(2);
  holder.Send(h);
  ASSERT_TRUE(holder.Next().has_welcome());
  holder.Send(Finished("owner-01held", 2, "finished by the attempt that survived the restart"));
  proto::HeadToClient ready = owner.Next();
  ASSERT_TRUE(ready.has_ready());
  EXPECT_EQ(ready.ready().id(), "owner-01held");
  EXPECT_EQ(ready.ready().data(), "finished by the attempt that survived the restart");
  EXPECT_FALSE(holder.Next(100ms).has_execute()) << "adopted, not run again";

  // Nobody holds this one: it runs once the grace (2 s after the head started) is over.
  resubmit("owner-01lost");
  proto::HeadToAgent exec;
  proto::AgentToHead beat;
  for (int i = 0; i < 50 && !exec.has_execute(); ++i) {
    beat.mutable_heartbeat()->set_seq(i + 1);  // fake agents must stay alive past the grace
    idle.Send(beat);
    holder.Send(beat);
    exec = idle.Next(50ms);
    while (exec.has_heartbeat_ack()) exec = idle.Next(50ms);
    if (!exec.has_execute()) {
      exec = holder.Next(50ms);
      while (exec.has_heartbeat_ack()) exec = holder.Next(50ms);
    }
  }
  ASSERT_TRUE(exec.has_execute());
  EXPECT_EQ(exec.execute().spec().task_id(), "owner-01lost");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 2000ms);
}

}  // namespace
}  // namespace corral
