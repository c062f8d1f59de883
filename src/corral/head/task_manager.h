// TaskManager: the head's task table, object table and scheduling queues.
//
// Every task goes through the one state machine in task_state.h. Tasks are grouped into scheduling
// classes (same resources, label selector and Python); each class is a FIFO, so a task that cannot
// be placed only holds back identical tasks, never different ones. Results ("objects") are kept
// here until the owning client releases them and no pending task still needs them; they are sent
// to the owner as soon as they are ready, and to anyone who subscribed.
//
// Results are accepted only from the task's current attempt on the node it was sent to (fencing):
// anything else is discarded and counted.
//
// After a restart the head knows no tasks; owners resubmit theirs (marked `resubmitted`) and
// agents re-register with the attempts they still hold. For a dead threshold after start
// (the grace), a resubmitted task is matched to the attempt an agent holds instead of being run
// again, and waits for its agent if none has come back yet.
//
// Owned by HeadServer; io thread only. It sends messages through the connections of the Node and
// ClientSession objects it is given, and never blocks.
#pragma once

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "corral/base/ids.h"
#include "corral/head/token_store.h"
#include "corral/client.pb.h"
#include "corral/head/gang_book.h"
#include "corral/head/id_key.h"
#include "corral/head/node_registry.h"
#include "corral/head/task_journal.h"
#include "corral/head/task_metrics.h"
#include "corral/head/task_state.h"
#include "corral/node.pb.h"

namespace corral::head {

// One connected client (driver, CLI, or a worker submitting nested tasks).
struct ClientSession {
  std::string id;
  std::string resume_secret;  // issued by the head; a reconnect must present it to take the session
  std::string token_id;       // the token it authenticated with ("" the admin one, "w:<node>" workers)
  bool may_touch_any = false; // admin: may cancel tasks of other clients
  std::string name;
  int64_t pid = 0;            // as its Hello said: for a worker's session, ended with the worker
  bool process_ended = false; // its worker process ended: the session ends when its connection does
  std::shared_ptr<net::Connection> conn;
  // Values to send once its connection has room (ids: the values stay in the object table), so
  // a client that reads slowly makes the head hold ids, not copies.
  std::deque<std::string> unsent;
  std::unordered_set<std::string> functions;  // hashes of the functions it sent (one use each)
  std::unordered_map<std::string, int> borrowed;  // object id -> references it unpickled and holds
};

struct TaskManagerOptions {
  int prefetch_per_cpu = 1;
  // Bytes of values (puts and results) the head holds at most: a put past it is stored as an
  // OBJECT_STORE_FULL error instead of its value (its get raises). 0: no limit.
  int64_t max_object_bytes = 0;
};

class TaskManager {
 public:
  TaskManager(NodeRegistry& nodes, TaskManagerOptions options)
      : nodes_(nodes), options_(options), grace_until_(nodes.clock().BootTimeNs() + nodes.config().dead_after) {}

  void AddClient(ClientSession* client);
  // The client disconnected: its unfinished tasks are cancelled and its objects freed.
  void RemoveClient(ClientSession* client);

  void Submit(ClientSession* client, proto::TaskSpec&& spec);
  // A run of a durable task (spec.durable_function set; no owning client): when it ends,
  // `on_durable_finished` gets its value and the task and its result are dropped here.
  void SubmitDurable(proto::TaskSpec&& spec);
  std::function<void(const std::string& task_id, const proto::ObjectValue& value)> on_durable_finished;
  // After a head restart, an agent reported holding `task_id`, not submitted (again) yet: the
  // durable queue launches the run at once (it runs already), ahead of its queue's limits.
  std::function<void(const std::string& task_id)> on_orphan_held;
  // A durable run starts again (its worker or node was lost, or it was handed back).
  std::function<void(const std::string& task_id)> on_durable_rerun;
  // A resubmitted durable run turned out to be the one an agent held across the restart: it did
  // not start again.
  std::function<void(const std::string& task_id)> on_durable_adopted;
  void Put(ClientSession* client, proto::ObjectValue&& value);
  // Sends the values of `request.ids` when ready. A client reads its own objects, those of clients
  // with its token, and those workers made (task results travel back to whoever holds their
  // reference); workers and admin tokens read any. Others get an OBJECT_LOST error for that id.
  void Subscribe(ClientSession* client, const proto::Subscribe& request);
  // The direct call path (task_actors.cc): a caller's connection to an agent broke with these of its
  // calls unanswered; their nodes are asked which never came (OnCallsNotHeld), sent from here then.
  void DirectLost(ClientSession* client, const proto::DirectLost& lost);
  void OnCallsNotHeld(Node* node, const proto::DirectCalls& not_held);
  // The client's connection has room again: sends the values that waited for it.
  void SendUnsent(ClientSession* client);
  void Release(ClientSession* client, const proto::Release& request);
  // Borrowing (Ray's ownership rules, kept at the head): an object lives while its owner holds it,
  // while an unfinished task needs it, while a live value contains a reference to it, and while a
  // client that unpickled such a reference (a borrower) holds it.
  Status ContainRefs(ClientSession* client, const proto::ContainRefs& request);
  void BorrowRefs(ClientSession* client, const proto::BorrowRefs& request);
  void Cancel(ClientSession* client, const proto::Cancel& request);

  // Actors (task_actors.cc). An actor is its creation task, dispatched and never finished while the
  // actor lives (it holds the resources; its attempts are the restarts); its calls are tasks
  // without resources that the head sends to the actor's node once it is ready, in submission
  // order per caller. The actor dies when its creation task finishes: killed, out of restarts, its
  // constructor raised, or no handle to it remains (after its pending calls ran).
  void OnActorReady(Node* node, const proto::ActorReady& ready, bool pump = true);
  // GET (by name), KILL and LIST. KILL is allowed to whoever may read the actor's owner's values
  // (its owner, clients with its token, workers, admin).
  Status HandleActorRequest(ClientSession* client, const proto::ActorRequest& request, proto::Reply* reply);
  void FillActors(google::protobuf::RepeatedPtrField<proto::ActorInfo>* out, bool include_dead) const;

  // Gangs (task_gangs.cc, gang_book.h): CREATE, GET, LIST, and REMOVE (allowed to whoever may read
  // the creator's values), which stops the tasks and actors placed in the gang.
  Status HandleGangRequest(ClientSession* client, const proto::GangRequest& request, proto::Reply* reply);
  const GangBook& gangs() const { return gangs_; }
  // Whether the client made gangs that end with it (so its session is kept while it reconnects).
  bool OwnsGangs(const std::string& client_id) const { return !gangs_.OwnedBy(client_id).empty(); }

  void OnTaskFinished(Node* node, proto::TaskFinished&& finished);
  // The id of the node task `task_id` was dispatched to ("" if none).
  std::string NodeRunning(const std::string& task_id) const;
  void OnBlocked(Node* node, const proto::Blocked& blocked);
  void OnLog(Node* node, proto::LogLine&& line);
  // A node joined or changed: infeasible tasks are looked at again.
  void OnNodesChanged() { nodes_changed_ = true; }
  // The node is dead or left: its tasks are re-queued while retries remain, else failed.
  void OnNodeDead(Node* node, const std::string& why);
  // The node registered again before it was declared dead, holding `held` attempts: tasks placed
  // there that it no longer holds are re-queued; attempts it holds that are not current are
  // stopped (or, just after a head restart, kept for their tasks' resubmission).
  void Reconcile(Node* node, const google::protobuf::RepeatedPtrField<proto::HeldAttempt>& held);

  // Places whatever can be placed now. Cheap when nothing changed.
  void Schedule();

  // Stored objects (values in nodes' shared-memory stores, ObjectValue.stored_size > 0): what the
  // head knows each node's store holds, and the value of `id` for a reader of its bytes.
  struct StoreUsage {
    uint64_t bytes = 0;     // in memory (spilling included)
    uint64_t spilling = 0;  // being moved to disk
    uint64_t spilled = 0;   // on disk
    int64_t objects = 0;
    std::string spill_error;  // the last spill failed (a full disk): puts past capacity are refused
  };
  StoreUsage StoreUsageOf(const std::string& node_id) const;
  Result<const proto::ObjectValue*> StoredForRead(ClientSession* client, const std::string& id) const;
  // Why the put of `id` was refused (its value is an error), if it was.
  // The node moved these values to disk (or could not).
  void OnObjectsSpilled(Node* node, const proto::ObjectsSpilled& done);
  // The node (re)registered holding `stored`: copies the head places there that it lacks are
  // dropped (a value left with none is rebuilt or lost), spills whose answer was lost are settled,
  // and values the head does not know there are deleted, except during the head's start-up grace,
  // when drivers may still send again the puts a restarted head forgot, and except results of the
  // attempts the node holds (`held`: their ends are reported after the registration).
  void ReconcileStore(Node* node, const google::protobuf::RepeatedPtrField<proto::StoredObject>& stored,
                      const google::protobuf::RepeatedPtrField<proto::HeldAttempt>& held);
  // A reader wrote a copy of a stored value into its node's store: later readers there use it.
  Status AddCopy(ClientSession* client, const proto::ObjectValue& copy);
  // Whether `node` may take a copy of stored object `id` for `client` (a worker: only its own
  // node), making room there first. Its value, or null when `node` holds it already.
  Result<const proto::ObjectValue*> PrepareCopy(ClientSession* client, const std::string& id, Node* node);
  // `node` now holds a copy of (id, attempt). False when the value is gone or is another attempt's
  // by now: the node is told to delete that file.
  bool RecordCopy(const std::string& id, uint32_t attempt, Node* node);
  // The node answered that it does not have a value the head placed there: that copy is forgotten;
  // the last one makes the value lost (and rebuilt, where it can be).
  void DropMissingCopy(Node* node, const std::string& id, uint32_t attempt);
  // RESOURCE_EXHAUSTED for a full store (put() raises ObjectStoreFullError).
  std::optional<Status> PutRefusal(const std::string& id) const;
  // The client was told its put was refused and keeps nothing of it: neither does the head.
  void ForgetRefusedPut(ClientSession* client, const std::string& id);

  size_t unfinished_tasks() const { return unfinished_; }
  size_t objects_held() const { return objects_.size(); }
  // How many tasks and objects made by the client with this id the head still holds (counted by
  // id, not by session: a value freed after its owner came back under a new session counts).
  size_t Owned(const std::string& client_id) const {
    auto it = owned_.find(client_id);
    return it == owned_.end() ? 0 : it->second;
  }
  void FillStatus(proto::ClusterStatus* status, bool count_tasks = true) const;
  const std::map<std::string, int64_t>& counters() const { return counters_; }
  const TaskMetrics& metrics() const { return metrics_; }
  const TaskJournal& journal() const { return journal_; }
  // Plain tasks queued for a node (not durable runs, which their queues count), and how long the
  // oldest of them has waited (seconds; 0 when none).
  std::pair<int64_t, double> QueuedTasks() const;

 private:
  struct SchedClass;
  struct Function;
  // A task as the head keeps it: a million may be queued, so it is small (decision 31). The spec
  // is kept serialized, less what lives elsewhere: the id (the table's key), the pickled function
  // (functions_), resources and label selector (the class, until the task finishes), the owner
  // (OwnerOf) and the attempt and retry figures (below). SpecOf rebuilds the whole message.
  // A million of these may wait in the queues: bools are bits, the node id is kept in place.
  struct Task {
    std::string spec;
    SchedClass* cls = nullptr;         // never null while unfinished; outlives the task while unfinished
    Function* function = nullptr;      // holds a use of it until finished (or while its result may be rebuilt)
    IdKey node;                        // where dispatched (empty: nowhere)
    uint32_t attempt = 0;
    uint32_t max_retries = 0;
    int32_t unresolved = 0;
    TaskState state = TaskState::kWaitingDeps;
    bool durable : 1 = false;              // a durable queue run (spec.durable_function): owned by no client
    bool resubmitted : 1 = false;
    bool has_deps : 1 = false;
    bool released : 1 = false;             // its owner dropped the result before there was one
    bool blocked : 1 = false;
    bool cancel_requested : 1 = false;
    bool cancel_force : 1 = false;
    bool told_infeasible : 1 = false;
    bool parked : 1 = false;               // resubmitted after a head restart: waits for an agent to claim it
    bool actor : 1 = false;                // an actor's creation: see actors_
    bool actor_call : 1 = false;           // a call on an actor: goes to the actor's node, not a class queue
    bool direct : 1 = false;               // a call its caller sent itself (TaskSpec.direct_node): not sent from here
    bool direct_delivered : 1 = false;     // its result reached its owner from the agent: not pushed again
    bool direct_recorded : 1 = false;      // recorded as running where its caller sent it (Actor::direct_running)
    TaskSeries* series = nullptr;      // its function's and queue's metrics (never null once submitted)
    Nanos since = 0;                   // queued (or re-queued) at; once dispatched, dispatched at
    uint64_t journal = 0;              // its entry's number in journal_
  };
  // An actor, keyed by its creation task's id.
  struct Actor {
    enum class State { kPending, kAlive, kRestarting, kDead };
    proto::ActorSpec spec;
    std::string owner_token;           // the creator's token id: clients with it (and workers, admin) may use it
    State state = State::kPending;
    std::string node;                  // where it runs (or ran last)
    int64_t pid = 0;
    uint32_t ready_attempt = 0;
    uint32_t restarts = 0;
    uint32_t max_restarts = 0;
    ResourceSet resources;
    std::string kill_reason;           // why it is being stopped (kill, its owner left, no handle left)
    bool restart_on_kill = false;      // kill(no_restart=False): the stop counts as a crash
    std::string restart_reason;        // why it was stopped to restart, when not by kill()
    bool collect = false;              // no handle remains: it ends once its calls have
    std::string death_cause;
    proto::ObjectValue death;          // what its calls get once it is dead
    uint64_t next_seq = 0;
    std::map<uint64_t, IdKey> pending; // calls not sent to its worker yet, in submission order
    std::unordered_map<IdKey, uint64_t, IdKey::Hash> seq;  // every unfinished call's place
    int64_t running = 0;               // calls sent to its worker, not finished
    bool pumping = false;              // PumpActor is sending its calls
    bool pump_queued = false;          // in actors_to_pump_
    std::unordered_map<std::string, int> direct_running;  // by caller (id prefix): its direct calls running
  };
  // A pickled function, kept while some client that sent it is connected or an unfinished task
  // needs it; then forgotten here and on the nodes (a client sends it again on its next use).
  struct Function {
    std::string hash;
    std::string name;                  // of the first task that sent it, for messages
    std::string pickled;
    int uses = 0;
    TaskSeries* series = nullptr;            // metrics of its tasks without a queue (set on first use)
    const std::string* journal_name = nullptr;  // its name in journal_ (set on first use)
  };
  // An attempt an agent reported after this head started that no task here knows yet: the head
  // restarted, and the task's owner will resubmit it.
  struct Orphan {
    std::string node;
    uint32_t attempt = 0;
    std::optional<proto::ObjectValue> result;  // it finished while the head was away
    bool actor_ready = false;                  // an actor's creation whose constructor had returned
  };
  // A value, or the place of one to come. An unfinished task's result has an entry only once
  // something needs one (a subscriber, a dependent, a reference in another value): queued tasks
  // cost the task table alone.
  struct Object {
    std::string owner;                 // client id
    bool ready = false;
    bool released = false;             // the owner holds no reference
    bool pinned = false;               // a reference escaped where no one counts it: kept until the owner exits
    bool has_task = false;
    bool spilling = false;             // stored: being moved to its node's disk
    bool spilled = false;              // stored: on its node's disk
    int dependents = 0;                // unfinished tasks listing it as a dependency
    int containers = 0;                // live values that contain a reference to it
    int borrows = 0;                   // references held by borrowers (sum of ClientSession::borrowed)
    std::vector<IdKey> contains;       // objects this value holds references to
    proto::ObjectValue value;
    std::vector<IdKey> waiting;        // tasks waiting for it
    std::vector<std::string> subscribers;
    uint64_t last_used = 0;            // use_clock_ when last handed out: spilling takes the least recent
  };
  struct SchedClass {
    Request request;
    std::deque<IdKey> queue;
    std::string infeasible;            // non-empty: no node can ever fit (until nodes change)
    int unfinished = 0;                // tasks of this class not finished: the class lives while > 0
    ResourceSet resources;             // what its tasks ask (request.resources differ in a gang)
    std::string gang_id;               // its tasks run in this gang's reservation
  };

  // The task's whole spec (parsed from what it keeps).
  proto::TaskSpec SpecOf(const std::string& id, const Task& task) const;
  // Keeps `spec` in `task` (see Task); `with_request`: with its resources and label selector (a
  // finished task kept to rebuild its result has no class any more).
  static void KeepSpec(Task& task, proto::TaskSpec& spec, bool with_request = false);
  // The client that submitted it: its id is the first 8 bytes of its tasks' ids (Submit checks
  // that); a durable run belongs to none ("").
  static std::string OwnerOf(const std::string& id, const Task& task) {
    return task.durable ? std::string() : id.substr(0, 8);
  }
  std::string NameOf(const std::string& id, const Task& task) const;
  // The ids of its arguments.
  static std::vector<std::string> DepsOf(const Task& task) {
    return BytesFieldOf(task, proto::TaskSpec::kDepsFieldNumber);
  }
  // The actor an actor call is for.
  static std::string ActorOf(const Task& task) {
    auto ids = BytesFieldOf(task, proto::TaskSpec::kActorIdFieldNumber);
    return ids.empty() ? std::string() : std::move(ids.back());
  }
  // The node a direct call's caller sent it to ("" for any other task).
  static std::string DirectNodeOf(const Task& task) {
    auto ids = BytesFieldOf(task, proto::TaskSpec::kDirectNodeFieldNumber);
    return ids.empty() ? std::string() : std::move(ids.back());
  }
  // Every value of a `bytes` field of the task's kept spec, read without parsing the rest.
  static std::vector<std::string> BytesFieldOf(const Task& task, int field);
  // "n of limit" for a message, or "n, no limit" where the limit is -1 (stored as its uint32).
  static std::string CountOf(uint32_t n, uint32_t limit);
  // The object entry of `id`; for an unfinished task's result that has none yet, made now.
  // Null if the head knows no such value or task.
  Object* ObjectFor(const std::string& id);
  void Enqueue(const std::string& id, Task& task);
  // A queued task whose argument is not ready any more (its value is being rebuilt) waits for it
  // again instead of being sent without it. True if it waits.
  bool WaitAgainForArguments(const std::string& id, Task& task, const std::vector<std::string>& deps);
  // The scheduling class of tasks like `spec` (made on first use).
  SchedClass& ClassFor(const proto::TaskSpec& spec);
  // The node holding most bytes of the task's stored arguments `deps` ("" if none is stored).
  std::string LargestHolder(const std::vector<std::string>& deps) const;
  void Dispatch(const std::string& id, Task& task, Node* node, bool prefetch);
  // Adds the values of the spec's arguments to `msg` (an ExecuteTask) and sends it to the node; the
  // message's size if it is over the frame limit or could not be sent.
  std::optional<size_t> SendWithArguments(proto::HeadToAgent& msg, Node* node);
  // Actors (task_actors.cc).
  // Submit's part for a creation or a call: an error message if it is refused.
  std::string AdmitActorTask(ClientSession* client, const std::string& id, Task& task, const proto::TaskSpec& spec,
                             proto::ErrorKind* kind);
  // A call whose arguments are ready (or that is to be retried) joins its actor's line.
  void EnqueueCall(const std::string& id, Task& task);
  // Whether a call whose actor's worker died may run again: its actor restarts (it is not dead or
  // being stopped).
  bool CallMayRetry(const std::string& id, const Task& task) const;
  // The node handed back a call: its actor is not (or not yet) running there. Its calls wait for
  // the actor's readiness (or end) instead of going back and forth.
  void ActorNotThere(const std::string& id, const Task& task, Node* node);
  // Sends the actor's ready calls to its node, in order; a caller's call waiting for its arguments
  // holds back that caller's later calls only.
  void PumpActor(const std::string& actor_id, Actor& actor);
  void DispatchCall(const std::string& id, Task& task, Actor& actor, Node* node);
  // A call resubmitted after a head restart whose attempt `node` still holds (an orphan): taken
  // over instead of sent again, so it does not run twice. True if it was.
  bool AdoptHeldCall(const std::string& id, Task& task, Actor& actor, Node* node);
  // Finish's part: a call leaves its actor's line; a creation's end is the actor's death.
  // Calls that cannot run any more go to `work` (Finish's worklist) with their values.
  void OnActorTaskFinished(const std::string& id, Task& task, proto::ObjectValue& value,
                           std::vector<std::pair<std::string, proto::ObjectValue>>& work);
  // The creation task goes back to the queue (restart): its actor waits for the new attempt.
  // `failure`: it counts as a restart (not a hand-back: a drain, an expired lease).
  void OnActorRestarting(const std::string& id, bool failure);
  // Stops the actor: its creation task is cancelled (or, with `restart`, its worker is killed and
  // it restarts while it has restarts left).
  void StopActor(const std::string& id, std::string reason, bool restart);
  // No handle to the actor remains (`id` is its creation): it ends once its calls are done.
  void MaybeCollectActor(const std::string& id);
  void FillActor(const std::string& id, const Actor& actor, proto::ActorInfo* out) const;
  // `ids` with actor creations first: a node's loss restarts (or ends) the actors before their
  // calls are looked at, so no call is sent again to an actor still thought alive there.
  template <typename Ids>
  std::vector<std::string> ActorsFirst(const Ids& ids) const {
    std::vector<std::string> out(ids.begin(), ids.end());
    std::stable_partition(out.begin(), out.end(), [this](const std::string& id) {
      auto t = tasks_.find(id);
      return t != tasks_.end() && t->second.actor;
    });
    return out;
  }
  // The node is back (it registered again): its actors' waiting calls go.
  void ResumeActorsOn(Node* node);
  // Actors whose line changed while a task was finishing (a call left it unsent): looked at again
  // from Schedule, outside Finish.
  void PumpWaitingActors();
  void QueuePump(const std::string& id, Actor& actor);
  bool MayUseActor(const ClientSession& client, const Actor& actor) const;
  void ReleaseResources(const std::string& id, Task& task, Node* node);
  // Why a task or actor asking to run in a gang may not (empty: it may).
  std::string AdmitGangTask(const ClientSession& client, const proto::TaskSpec& spec);
  void RemoveGang(const std::string& gang_id, const std::string& why);
  // Stops what runs in the gang: running tasks are cancelled, actors restarted (they wait for the
  // gang again) or, with `removing`, stopped for good, and queued tasks fail with `why`.
  void StopInGang(const std::string& gang_id, const std::string& why, bool removing);
  bool MayUseGang(const ClientSession& client, const GangBook::Gang& gang) const;
  void RemoveGangsOf(const std::string& owner, const std::string& name);
  // The CPUs of a request: what a task blocked in get() gives back.
  // The CPUs in a request: "CPU", or a gang's ("gang:<id>:<i>:CPU", "gang:<id>:CPU").
  static ResourceSet CpuPart(const ResourceSet& r) {
    ResourceSet out;
    for (const auto& [name, units] : r.units())
      if (name == kCpu || name.ends_with(":CPU")) out.Set(name, r.Get(name));
    return out;
  }
  // Finishes the task with `value` and propagates to dependents and subscribers.
  void Finish(const std::string& id, proto::ObjectValue value);
  // `failure`: counts against the task's retries and tells its owner; else the node handed it back.
  void Retry(const std::string& id, Task& task, const std::string& why, bool failure = true);
  // Takes a dispatched task back from `node`: re-queued while retries remain, else failed.
  void Requeue(const std::string& id, Task& task, Node* node, const std::string& why);
  // A resubmitted task: adopt the attempt an agent still holds, or park it while agents may still
  // come back (a dead threshold after the head started). True if it was not queued.
  bool AdoptOrPark(const std::string& id, Task& task);
  // An adopted orphan that finished while the head was away: its end is handled now.
  void ReportHeldResult(Node* node, const std::string& id, Orphan& orphan);
  bool InGrace() const { return grace_ && nodes_.clock().BootTimeNs() < grace_until_; }
  void EndGrace();
  void CancelAttempt(Node* node, const std::string& task_id, uint32_t attempt, bool force = true);
  void TryFree(const std::string& id);
  // `id`'s value no longer holds the references it contained (a dead actor's constructor
  // arguments, kept for restarts that will not come); each may be freed now.
  void DropContained(const std::string& id);
  void AddStored(const proto::ObjectValue& value);
  // Forgets a stored value's copies and tells their nodes to delete the files (`obj`: its spill state).
  void DropStored(const proto::ObjectValue& value, const Object* obj = nullptr);
  // Spills the least recently used values of the node until `incoming` more bytes fit in its
  // memory (down to 80% of capacity, so spills come in batches). An error if they cannot.
  std::optional<std::string> MakeRoom(Node* node, uint64_t incoming);
  void Touch(Object& obj) { obj.last_used = ++use_clock_; }
  // A spill of `obj` on the node with usage `u` ended (moved to disk, or not).
  void SettleSpill(Object& obj, StoreUsage& u, bool spilled);
  // Tells the node to delete the file; a disconnected node is told when it comes back.
  void DeleteOn(const std::string& node_id, const std::string& id, uint32_t attempt);
  void SendPendingDeletes(Node* node);
  // A result the head does not keep (not the current attempt): its file goes, unless it is the value kept.
  void DiscardStoredResult(Node* node, const proto::TaskFinished& finished);
  // The node's store is gone: values with no other copy are rebuilt by running their tasks again
  // (Reconstruct), or become OBJECT_LOST errors naming it.
  void LoseStoredOn(Node* node, const std::string& why);
  // Runs the finished task `id` again (a new attempt, within its max_retries) after its stored
  // result was lost, first rebuilding arguments that were lost too. False, with `why`, if it cannot.
  bool Reconstruct(const std::string& id, std::string* why, int depth = 0);
  // Lost values (OBJECT_LOST errors now): rebuilt where they can be, else their owners are told.
  void RebuildOrReport(const std::vector<std::string>& lost);
  // Whether `reader` may subscribe to `object` (see Subscribe), or to the value of client `owner`.
  bool MayRead(const ClientSession& reader, const Object& object) const { return MayReadOf(reader, object.owner); }
  bool MayReadOf(const ClientSession& reader, const std::string& owner) const;
  // The entry of `id` if `reader` may read it, made for an unfinished task's result only then
  // (a refused reader makes nothing); null otherwise, with *refused set when it exists.
  Object* ReadableObject(const ClientSession& reader, const std::string& id, bool* refused = nullptr);
  void SendToClient(const std::string& client_id, const proto::HeadToClient& msg);
  // A ready value to a client, now if its connection has room, else once it has (flow control).
  void SendValue(ClientSession* client, const proto::ObjectValue& value);
  void Notice(const std::string& task_id, const std::string& owner, const std::string& text);
  void Count(const char* name, int64_t n = 1) { counters_[name] += n; }
  Nanos Now() const { return nodes_.clock().BootTimeNs(); }
  // The task was sent to `node`: its wait ends and its run begins (metrics, the journal).
  void MarkStarted(const std::string& id, Task& task, const Node& node) {
    Nanos now = Now();
    task.series->started++;
    task.series->wait.Observe(static_cast<double>(now - task.since) / 1e9);
    task.since = now;
    journal_.Started(task.journal, id, node.view.id, nodes_.clock().WallNs());
  }
  // Whether `id` is one `client` may make: ids start with their client's id (MakeTaskId).
  static bool OwnsId(const ClientSession* client, const std::string& id) {
    if (client->id.empty()) return true;  // the durable queue's runs
    std::string prefix = MakeTaskId(client->id, 0).substr(0, 8);
    return id.size() > prefix.size() && id.compare(0, prefix.size(), prefix) == 0;
  }
  // Whether `hash` is the first 16 bytes of the SHA-256 of `pickled` (what clients register under).
  static bool HashMatches(const std::string& pickled, const std::string& hash);
  static proto::ObjectValue ErrorValue(const std::string& id, proto::ErrorKind kind, std::string message);

  NodeRegistry& nodes_;
  TaskManagerOptions options_;
  std::unordered_map<IdKey, Task, IdKey::Hash> tasks_;
  std::unordered_map<IdKey, Object, IdKey::Hash> objects_;
  std::map<std::string, SchedClass> classes_;
  std::unordered_map<std::string, Function> functions_;  // by hash
  // Drops a use; the last one forgets the function here and tells the nodes that have it.
  void DropFunction(const std::string& hash);
  // Drops the use the task holds, if it holds one.
  void DropFunctionOf(Task& task) {
    if (Function* f = std::exchange(task.function, nullptr)) DropFunction(f->hash);
  }
  std::unordered_map<std::string, ClientSession*> clients_;
  std::unordered_map<std::string, size_t> owned_;  // by client id: see Owned
  void Disown(const std::string& owner) {
    if (auto it = owned_.find(owner); it != owned_.end() && --it->second == 0) owned_.erase(it);
  }
  std::map<std::string, int64_t> counters_;
  TaskMetrics metrics_;
  TaskJournal journal_;
  int64_t object_bytes_ = 0;  // sum of objects_[*].value.data().size()
  std::unordered_map<std::string, StoreUsage> store_usage_;  // by node id
  uint64_t use_clock_ = 0;
  std::unordered_map<std::string, proto::DeleteObjects> pending_deletes_;  // by node id, while disconnected
  size_t unfinished_ = 0;
  size_t peak_unfinished_ = 0;
  bool nodes_changed_ = false;
  bool dirty_ = false;
  bool grace_ = true;
  Nanos grace_until_ = 0;
  std::unordered_map<std::string, Orphan> orphans_;
  // Ends of direct calls reported before the head recorded the call as running (the caller's
  // submission and the agent's report travel on different connections): applied when it does,
  // dropped after kDirectEarlyKeep (the caller never submitted it, or it was refused) or past kDirectEarlyMax.
  struct DirectEarly {
    std::string node;
    proto::TaskFinished finished;
    Nanos at = 0;
  };
  std::unordered_map<std::string, DirectEarly> direct_early_;
  std::deque<std::pair<Nanos, std::string>> direct_early_order_;
  static constexpr Nanos kDirectEarlyKeep = 60'000'000'000;  // a minute
  static constexpr size_t kDirectEarlyMax = 65536;
  void KeepEarlyEnd(Node* node, proto::TaskFinished&& finished);
  void ExpireEarlyEnds(Nanos now);
  std::unordered_map<std::string, proto::DirectCalls> direct_probes_;  // by node: for when it registers again
  // A direct call whose turn came: recorded as running where its caller sent it (and ended at once
  // if its end came first). False: that node is unknown here; the call goes the usual way.
  bool MarkDirect(const std::string& id, Task& task, Actor& a);
  // A call recorded by MarkDirect ends or is sent again: its caller's held calls may go.
  void EndDirect(const std::string& actor_id, Actor& a, const std::string& id, Task& task);
  std::unordered_map<std::string, Actor> actors_;                // by id, live and recently dead
  std::map<std::pair<std::string, std::string>, std::string> actor_names_;  // (namespace, name) -> live actor
  std::deque<std::string> dead_actors_;      // oldest first, at most kDeadActorsKept
  std::vector<std::string> actors_to_pump_;  // see PumpWaitingActors (each once: Actor::pump_queued)
  static constexpr size_t kDeadActorsKept = 1000;
  std::vector<std::string> parked_;
  GangBook gangs_{nodes_};
};

}  // namespace corral::head
