// The durable queues' dispatch (QueueDispatcher, driven through DurableQueue) with an injected clock:
// priority within a queue, stride shares between
// weighted queues, the concurrency limit, the rate limit and its timer, no credit for idle queues.
// Each node's connection is an in-process stream whose other end the test reads: an ExecuteTask
// arriving there is a start. Runs end when the test reports them finished, as their agent would.
// Also what the Celery facade relies on: names no worker registered yet wait (or are refused by a
// strict head), retries only when a run asks (max_retries -1), the failure's exception kept, and a
// running task's own state.
#include "corral/head/durable_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "corral/net/memory_stream.h"
#include "corral/node.pb.h"

namespace corral::head {
namespace {

using namespace std::chrono_literals;

constexpr char kFunction[] = "jobs:work";

struct Spec {
  std::string id;
  std::string queue = {};
  int priority = 0;
  std::string function = kFunction;
  int max_retries = 0;
};

struct Cluster {
  explicit Cluster(DurableQueue::Options options = {}) {
    queue = std::make_unique<DurableQueue>(io, tasks, nodes, store::NewMemoryStore(), clock, options);
    EXPECT_TRUE(queue->Start().ok());
  }
  ~Cluster() {
    queue.reset();
    for (auto& c : agents) c->Close(Status(Code::kCancelled, "test over"));
    Settle();
  }

  // A node with `cpus` CPUs whose workers registered `functions`; the test reads what it is sent.
  void AddNode(const std::string& id, int cpus, const std::vector<std::string>& functions = {kFunction}) {
    auto [head_end, agent_end] = net::MakeMemoryStreamPair(io.get_executor(), "head", id);
    net::ConnectionOptions o;
    o.handshake_timeout = 0ms;
    auto head_conn = net::Connection::Create(std::move(head_end), o);
    head_conn->Start([](std::string_view) {}, [](const Status&) {});
    auto agent = net::Connection::Create(std::move(agent_end), o);
    agent->Start(
        [this, id](std::string_view m) {
          proto::HeadToAgent msg;
          ASSERT_TRUE(msg.ParseFromArray(m.data(), static_cast<int>(m.size())));
          if (!msg.has_execute()) return;
          const std::string& run = msg.execute().spec().task_id();
          started.push_back(run.substr(0, run.rfind('#')));
          running[started.back()] = {id, msg.execute().spec().attempt(), run};
        },
        [](const Status&) {});
    agents.push_back(agent);
    proto::NodeInfo info;
    info.set_node_id(id);
    (*info.mutable_resources())["CPU"] = cpus;
    info.set_python_version("3.11.7");
    for (const auto& f : functions) info.add_task_functions(f);
    nodes.Register(info, head_conn, 1);
    tasks.OnNodesChanged();
  }

  proto::Reply SetQueue(const std::string& name, double weight, int concurrency = 0, double rate = 0) {
    proto::QueueRequest r;
    r.set_op(proto::QueueRequest::SET);
    r.mutable_spec()->set_name(name);
    r.mutable_spec()->set_weight(weight);
    r.mutable_spec()->set_concurrency(concurrency);
    r.mutable_spec()->set_rate_per_s(rate);
    return Call([&](auto reply) { queue->Queues(r, reply); });
  }

  // Submits tasks in one batch, in this order; the head's reply.
  proto::Reply TrySubmit(const std::vector<Spec>& batch) {
    proto::DurableSubmit s;
    for (const Spec& spec : batch) {
      proto::DurableTaskSpec* t = s.add_tasks();
      t->set_id(spec.id);
      t->set_function(spec.function);
      t->set_queue(spec.queue);
      t->set_priority(spec.priority);
      t->set_max_retries(spec.max_retries);
    }
    proto::Reply r = Call([&](auto reply) { queue->Submit(s, reply); });
    Settle();
    return r;
  }
  void Submit(const std::vector<Spec>& batch) {
    proto::Reply r = TrySubmit(batch);
    EXPECT_TRUE(r.error().empty()) << r.error();
  }
  proto::DurableTaskInfo Get(const std::string& id) {
    proto::DurableGet g;
    g.set_id(id);
    return Call([&](auto reply) { queue->Get(g, reply); }).durable();
  }
  void SubmitMany(const std::string& q, int n, const std::string& prefix) {
    std::vector<Spec> batch;
    for (int i = 0; i < n; ++i) batch.push_back({prefix + std::to_string(i), q});
    Submit(batch);
  }

  // Its agent reports the run of `id` ended: succeeded, unless `result` says otherwise.
  void Finish(const std::string& id, const proto::ObjectValue& result = {}) {
    auto it = running.find(id);
    ASSERT_NE(it, running.end()) << id << " is not running";
    proto::TaskFinished f;
    f.set_task_id(it->second.run);
    f.set_attempt(it->second.attempt);
    *f.mutable_result() = result;
    tasks.OnTaskFinished(nodes.Find(it->second.node), std::move(f));
    running.erase(it);
    Settle();
  }
  // Finishes the run that started first among those still running.
  void FinishOldest() {
    for (const auto& id : started)
      if (running.contains(id)) return Finish(id);
    ADD_FAILURE() << "nothing is running";
  }

  // Runs what is ready on the io loop (and places what the queue launched) until nothing is left.
  void Settle() {
    for (int i = 0; i < 100; ++i) {
      tasks.Schedule();
      io.restart();
      if (io.poll() == 0) return;
    }
  }
  // Runs the io loop until `done`, for at most `deadline` of real time (a reply from the store's
  // thread, a timer's expiry).
  bool RunUntil(const std::function<bool()>& done, std::chrono::milliseconds deadline = 5s) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (!done() && std::chrono::steady_clock::now() < until) {
      tasks.Schedule();
      io.restart();
      io.run_one_for(5ms);
    }
    Settle();
    return done();
  }
  proto::Reply Call(std::function<void(DurableQueue::Reply)> fn) {
    std::optional<proto::Reply> out;
    fn([&](proto::Reply r) { out = std::move(r); });
    EXPECT_TRUE(RunUntil([&] { return out.has_value(); }));
    return out.value_or(proto::Reply{});
  }
  // How many of started[first, last) have ids beginning with `prefix`.
  int Started(const std::string& prefix, size_t first = 0, size_t last = SIZE_MAX) const {
    size_t end = std::min(last, started.size());
    first = std::min(first, end);
    return static_cast<int>(std::count_if(started.begin() + static_cast<std::ptrdiff_t>(first),
                                           started.begin() + static_cast<std::ptrdiff_t>(end),
                                           [&](const std::string& id) { return id.starts_with(prefix); }));
  }

  struct Run {
    std::string node;
    uint32_t attempt;
    std::string run;  // "<id>#<n>"
  };
  FakeClock clock;
  boost::asio::io_context io;
  NodeRegistry nodes{clock, LivenessConfig{}};
  TaskManager tasks{nodes, {}};
  std::unique_ptr<DurableQueue> queue;
  std::vector<std::shared_ptr<net::Connection>> agents;
  std::vector<std::string> started;      // task ids in the order their runs reached a node
  std::map<std::string, Run> running;    // by task id: started and not finished
};

TEST(DurableDispatch, HighestPriorityFirstThenInTheOrderTheyBecameDue) {
  Cluster c;
  c.AddNode("n1", 1);  // two at once: one running, one prefetched
  // Ids sort against submission order, so an order by id would show.
  c.Submit({{"f", "q", 0}, {"e", "q", 5}, {"d", "q", 0}, {"c", "q", 9}, {"b", "q", 5}, {"a", "q", -1}});
  EXPECT_EQ(c.started, (std::vector<std::string>{"c", "e"}));
  while (!c.running.empty()) c.FinishOldest();
  EXPECT_EQ(c.started, (std::vector<std::string>{"c", "e", "b", "f", "d", "a"}));
}

TEST(DurableDispatch, WeightsThreeToOneStartThreeToOneUnderSaturation) {
  Cluster c;
  c.AddNode("n1", 1);
  EXPECT_TRUE(c.SetQueue("heavy", 3).error().empty());
  EXPECT_TRUE(c.SetQueue("light", 1).error().empty());
  std::vector<Spec> batch;
  for (int i = 0; i < 40; ++i) batch.push_back({"light" + std::to_string(i), "light"});
  for (int i = 0; i < 40; ++i) batch.push_back({"heavy" + std::to_string(i), "heavy"});
  c.Submit(batch);
  while (c.started.size() < 40) c.FinishOldest();  // both queues keep tasks ready throughout
  EXPECT_NEAR(c.Started("heavy", 0, 40), 30, 1);
  EXPECT_NEAR(c.Started("light", 0, 40), 10, 1);
}

TEST(DurableDispatch, ConcurrencyLimitIsReachedAndNeverExceeded) {
  Cluster c;
  c.AddNode("n1", 2);
  c.AddNode("n2", 2);  // room for 6 at once: the limit, not the nodes, holds it to 2
  EXPECT_TRUE(c.SetQueue("limited", 1, /*concurrency=*/2).error().empty());
  c.SubmitMany("limited", 8, "t");
  EXPECT_EQ(c.running.size(), 2u);
  for (int finished = 1; finished <= 8; ++finished) {
    c.FinishOldest();
    EXPECT_EQ(c.running.size(), static_cast<size_t>(std::min(2, 8 - finished))) << "after " << finished << " ended";
  }
  EXPECT_EQ(c.started.size(), 8u);
}

TEST(DurableDispatch, RateLimitStartsOnePerTokenWithoutBurstsAndItsTimerWakesDispatch) {
  Cluster c;
  c.AddNode("n1", 64);  // slots are never what holds it back
  EXPECT_TRUE(c.SetQueue("paced", 1, 0, /*rate=*/10).error().empty());
  c.SubmitMany("paced", 40, "t");
  EXPECT_EQ(c.started.size(), 1u) << "one token at first, no burst";
  // Ticks every 50 ms for a second: one more start every other tick (every 100 ms), none between.
  for (int tick = 1; tick <= 20; ++tick) {
    c.clock.Advance(50ms);
    c.queue->Tick();
    c.Settle();
    ASSERT_EQ(c.started.size(), static_cast<size_t>(1 + tick / 2)) << "after " << tick * 50 << " ms";
  }
  // No tick now: only the queue's timer can wake Dispatch for the next token, each time re-armed.
  for (size_t want = 12; want <= 14; ++want) {
    c.clock.Advance(150ms);
    EXPECT_TRUE(c.RunUntil([&] { return c.started.size() >= want; }, 3s)) << "the timer did not start run " << want;
    EXPECT_EQ(c.started.size(), want);
  }
  // A long pause banks at most one token.
  c.clock.Advance(60s);
  c.queue->Tick();
  c.Settle();
  EXPECT_EQ(c.started.size(), 15u);
}

TEST(DurableDispatch, ATaskWhoseFunctionsNodesAreFullDoesNotHoldUpItsQueue) {
  Cluster c;
  c.AddNode("n1", 1, {"jobs:a"});  // two at once of jobs:a
  c.AddNode("n2", 1, {"jobs:b"});  // two at once of jobs:b
  c.Submit({{"a0", "q", 1, "jobs:a"}, {"a1", "q", 1, "jobs:a"}, {"a2", "q", 1, "jobs:a"}, {"b0", "q", 0, "jobs:b"},
            {"b1", "q", 0, "jobs:b"}});
  EXPECT_EQ(c.started, (std::vector<std::string>{"a0", "a1", "b0", "b1"})) << "a2 waits for n1, b0 and b1 go ahead";
  c.Finish("a0");
  EXPECT_EQ(c.started.back(), "a2");
}

// A known defect, reported, disabled until fixed: ticks that fall on the token times start one run
// per tick later. Ten refills of 0.1 token add up to 0.9999999999999999 at 100 ms; the run waits for
// the next tick, whose refill the one-token bucket clips. At 10/s with 10 ms ticks: one per 110 ms.
// (In the head the wake timer fires again a nanosecond later, so there it costs a wake-up.)
TEST(DurableDispatch, TicksOnTheTokenTimesLoseNoTime) {
  Cluster c;
  c.AddNode("n1", 64);
  EXPECT_TRUE(c.SetQueue("paced", 1, 0, /*rate=*/10).error().empty());
  c.SubmitMany("paced", 40, "t");
  for (int ms = 10; ms <= 1050; ms += 10) {
    c.clock.Advance(10ms);
    c.queue->Tick();
    c.Settle();
  }
  EXPECT_EQ(c.started.size(), 11u) << "one at first, then one per 100 ms";
}

TEST(DurableDispatch, AQueueBanksNoCreditWhileIdle) {
  Cluster c;
  c.AddNode("n1", 1);
  EXPECT_TRUE(c.SetQueue("busy", 1).error().empty());
  EXPECT_TRUE(c.SetQueue("idle", 1).error().empty());  // exists from now on, with nothing to run
  c.SubmitMany("busy", 20, "busy");
  while (!c.running.empty()) c.FinishOldest();
  // Both get tasks at once, with the slots free: equal weights alternate from here. Credit for
  // its idle time would give "idle" the next twenty.
  std::vector<Spec> batch;
  for (int i = 0; i < 20; ++i) batch.push_back({"idle" + std::to_string(i), "idle"});
  for (int i = 20; i < 40; ++i) batch.push_back({"busy" + std::to_string(i), "busy"});
  c.Submit(batch);
  while (c.started.size() < 30) c.FinishOldest();
  EXPECT_NEAR(c.Started("idle", 20, 30), 5, 1);
}

TEST(DurableDispatch, AQueueHeldByItsLimitBanksNoCredit) {
  Cluster c;
  c.AddNode("n1", 3);  // four at once; "capped" may use one of them
  EXPECT_TRUE(c.SetQueue("capped", 1, /*concurrency=*/1).error().empty());
  EXPECT_TRUE(c.SetQueue("open", 1).error().empty());
  std::vector<Spec> batch;
  for (int i = 0; i < 40; ++i) batch.push_back({"capped" + std::to_string(i), "capped"});
  for (int i = 0; i < 40; ++i) batch.push_back({"open" + std::to_string(i), "open"});
  c.Submit(batch);
  while (c.started.size() < 20) c.FinishOldest();
  EXPECT_LE(c.Started("capped"), 6) << "held to one at a time, it fell behind";
  EXPECT_TRUE(c.SetQueue("capped", 1, /*concurrency=*/0).error().empty());  // the limit is lifted
  size_t from = c.started.size();
  while (c.started.size() < from + 10) c.FinishOldest();
  EXPECT_NEAR(c.Started("capped", from, from + 10), 5, 1) << "equal weights alternate, no catching up";
}

TEST(DurableDispatch, QueuesNobodyUsesAreForgotten) {
  Cluster c;
  c.AddNode("n1", 2);
  EXPECT_TRUE(c.SetQueue("configured", 2).error().empty());
  std::vector<Spec> batch;
  for (int i = 0; i < 50; ++i) batch.push_back({"t" + std::to_string(i), "minted" + std::to_string(i)});
  c.Submit(batch);
  auto listed = [&] {
    proto::QueueRequest r;
    r.set_op(proto::QueueRequest::LIST);
    return c.Call([&](auto reply) { c.queue->Queues(r, reply); }).queues_size();
  };
  EXPECT_EQ(listed(), 51);  // the configured one and 50 minted by submissions
  c.clock.Advance(61s);
  c.queue->Tick();
  EXPECT_EQ(listed(), 51) << "queues with tasks are kept";
  while (!c.running.empty()) c.FinishOldest();
  EXPECT_TRUE(c.RunUntil([&] {  // every end stored (the committer's thread) and the tasks dropped
    std::map<std::string, int64_t> counters;
    c.queue->FillCounters(&counters);
    return counters["durable_SUCCESS"] == 50;
  }));
  c.clock.Advance(61s);
  c.queue->Tick();
  EXPECT_EQ(listed(), 1) << "only the configured queue remains";
}


proto::ObjectValue Raised(const std::string& pickled, std::optional<double> retry_in_s = std::nullopt) {
  proto::ObjectValue v;
  v.set_error(proto::TASK_ERROR);
  v.set_data(pickled);
  v.set_message("jobs:work raised ValueError\n\nRemote traceback:\nValueError: no\n");
  if (retry_in_s) v.set_retry_in_s(*retry_in_s);
  return v;
}

TEST(DurableDispatch, ANameNoWorkerRegisteredWaitsForOneThatDoes) {
  Cluster c;
  c.AddNode("n1", 1);
  c.Submit({{.id = "t", .function = "jobs:later"}});
  EXPECT_TRUE(c.started.empty());  // n1 did not register it: never sent there
  proto::DurableTaskInfo info = c.Get("t");
  EXPECT_EQ(info.state(), "PENDING");
  EXPECT_NE(info.note().find("waits for a worker that runs jobs:later"), std::string::npos) << info.note();
  EXPECT_EQ(c.queue->WaitingForWorkers(), (std::vector<std::string>{"jobs:later"}));  // in `corral status`
  c.AddNode("n2", 1, {"jobs:later"});
  c.queue->Tick();  // as the head's timer does
  c.Settle();
  EXPECT_EQ(c.started, (std::vector<std::string>{"t"}));
  EXPECT_EQ(c.running["t"].node, "n2");
  EXPECT_EQ(c.Get("t").note(), "");
  EXPECT_TRUE(c.queue->WaitingForWorkers().empty());
}

TEST(DurableDispatch, TasksForANameNoWorkerHasDoNotHoldUpTheirQueue) {
  Cluster c;
  c.AddNode("n1", 1);
  std::vector<Spec> typos;
  for (int i = 0; i < 3000; ++i) typos.push_back({.id = "typo" + std::to_string(i), .priority = 9,
                                                  .function = "jobs:wrok"});
  c.Submit(typos);
  c.Submit({{.id = "real"}});  // behind them in the same queue, at a lower priority
  EXPECT_EQ(c.started, (std::vector<std::string>{"real"}));
}

TEST(DurableDispatch, AStrictHeadRefusesANameNoWorkerRegistered) {
  Cluster c({.strict_task_names = true});
  c.AddNode("n1", 1);
  proto::Reply r = c.TrySubmit({{.id = "t", .function = "jobs:later"}});
  EXPECT_NE(r.error().find("no worker registered the task function 'jobs:later'"), std::string::npos) << r.error();
  EXPECT_FALSE(c.Get("t").found());
  c.Submit({{.id = "u"}});  // a registered one is taken
  EXPECT_EQ(c.started, (std::vector<std::string>{"u"}));
}

TEST(DurableDispatch, MaxRetriesMinusOneRetriesOnlyWhenTheRunAsksAndKeepsTheException) {
  Cluster c;
  c.AddNode("n1", 1);
  c.Submit({{.id = "t", .max_retries = -1}});
  for (int i = 0; i < 5; ++i) {  // more than any default: the run decides
    c.Finish("t", Raised("exc" + std::to_string(i), 0.0));
    EXPECT_EQ(c.Get("t").state(), "RETRY");
    EXPECT_EQ(c.Get("t").result(), "exc" + std::to_string(i));
    c.clock.Advance(1ms);
    c.queue->Tick();
    c.Settle();
    ASSERT_TRUE(c.running.contains("t")) << "retry " << i << " did not start";
  }
  c.Finish("t", Raised("final"));  // a failure that does not ask: final at once
  proto::DurableTaskInfo info = c.Get("t");
  EXPECT_EQ(info.state(), "FAILURE");
  EXPECT_EQ(info.attempt(), 5);
  EXPECT_EQ(info.result(), "final");  // the pickled exception, for the reader to raise
  EXPECT_EQ(info.result_format(), "pickle");
}

TEST(DurableDispatch, MaxRetriesCountsRunsThatDidNotAskToo) {
  Cluster c;
  c.AddNode("n1", 1);
  c.Submit({{.id = "t", .max_retries = 1}});
  c.Finish("t", Raised("one"));
  EXPECT_EQ(c.Get("t").state(), "RETRY");
  c.clock.Advance(std::chrono::seconds(1));
  c.queue->Tick();
  c.Settle();
  c.Finish("t", Raised("two", 0.0));  // asking is not enough once the retries are used
  EXPECT_EQ(c.Get("t").state(), "FAILURE");
}

TEST(DurableDispatch, ARunSetsItsTasksOwnStateWhileItRunsAndOnlyItself) {
  Cluster c;
  c.AddNode("n1", 1);
  c.AddNode("n2", 1);
  c.Submit({{.id = "t"}});
  const std::string run = c.running["t"].run;
  const std::string node = c.running["t"].node, other = node == "n1" ? "n2" : "n1";
  auto progress = [&](const std::string& run_id, const std::string& state, const std::string& from) {
    proto::DurableProgress p;
    p.set_run_id(run_id);
    p.set_state(state);
    p.set_meta("{\"done\": 3}");
    p.set_meta_format("json");
    return c.Call([&](auto reply) { c.queue->Progress(p, from, reply); });
  };
  std::optional<proto::Reply> woken;  // a reader waiting for any change (Celery's on_message)
  proto::DurableGet wait;
  wait.set_id("t");
  wait.set_wait_s(60);
  wait.set_on_change(true);
  wait.set_seen_changes(c.Get("t").changes());  // what the reader saw last: the start
  c.queue->Get(wait, [&](proto::Reply r) { woken = std::move(r); });
  c.Settle();
  EXPECT_FALSE(woken.has_value());
  EXPECT_TRUE(progress(run, "PROGRESS", node).error().empty());
  ASSERT_TRUE(woken.has_value()) << "the waiter hears of the new state at once";
  EXPECT_EQ(woken->durable().state(), "PROGRESS");
  // A change that came before the reader asked again is not waited for: it is answered at once.
  const uint32_t seen = woken->durable().changes();
  EXPECT_TRUE(progress(run, "ALMOST", node).error().empty());
  wait.set_seen_changes(seen);
  woken.reset();
  c.queue->Get(wait, [&](proto::Reply r) { woken = std::move(r); });
  ASSERT_TRUE(woken.has_value());
  EXPECT_EQ(woken->durable().state(), "ALMOST");
  proto::DurableTaskInfo info = c.Get("t");
  EXPECT_EQ(info.state(), "ALMOST");
  EXPECT_EQ(info.result(), "{\"done\": 3}");
  EXPECT_EQ(info.result_format(), "json");
  EXPECT_FALSE(progress(run, "HACKED", other).error().empty()) << "another node's worker";
  EXPECT_FALSE(progress("t#7", "HACKED", "").error().empty()) << "a run that is not the current one";
  EXPECT_FALSE(progress(run, "SUCCESS", node).error().empty()) << "the end is the run's result, not a state";
  EXPECT_FALSE(progress(run, "two words", node).error().empty());
  EXPECT_EQ(c.Get("t").state(), "ALMOST");
  c.Finish("t");
  EXPECT_EQ(c.Get("t").state(), "SUCCESS");
  EXPECT_FALSE(progress(run, "LATE", node).error().empty()) << "the run ended";
}


TEST(DurableDispatch, ForgetRemovesAFinishedTaskOnlyAndAStoredValueReadsBackByItsId) {
  Cluster c;
  c.clock.Advance(std::chrono::hours(1));  // a wall clock past 0: finish times are real
  c.AddNode("n1", 1);
  c.Submit({{.id = "t"}});
  proto::DurableGet g;
  g.set_id("t");
  EXPECT_NE(c.Call([&](auto reply) { c.queue->Forget(g, reply); }).error().find("has not finished"),
            std::string::npos);
  c.Finish("t");
  ASSERT_EQ(c.Get("t").state(), "SUCCESS");
  EXPECT_TRUE(c.Call([&](auto reply) { c.queue->Forget(g, reply); }).durable().found());
  EXPECT_FALSE(c.Get("t").found());
  EXPECT_EQ(c.Get("t").state(), "PENDING");  // as Celery: a forgotten id reads as unknown

  proto::DurableStore v;
  v.set_id("group-1");
  v.set_value("[\"a\", \"b\"]");
  v.set_value_format("json");
  EXPECT_TRUE(c.Call([&](auto reply) { c.queue->StoreValue(v, reply); }).error().empty());
  proto::DurableTaskInfo kept = c.Get("group-1");
  EXPECT_EQ(kept.state(), "SUCCESS");
  EXPECT_EQ(kept.result(), "[\"a\", \"b\"]");
  EXPECT_EQ(kept.function(), "corral:stored");
  EXPECT_NE(c.Call([&](auto reply) { c.queue->StoreValue(v, reply); }).error().find("forget it first"),
            std::string::npos);
  v.set_id("group-2");
  v.set_value_format("pickle");  // its reader would unpickle what any submitter wrote
  EXPECT_NE(c.Call([&](auto reply) { c.queue->StoreValue(v, reply); }).error().find("JSON"), std::string::npos);
  EXPECT_FALSE(c.Get("group-2").found());
}

}  // namespace
}  // namespace corral::head
