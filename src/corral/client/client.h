// Client: the C++ client core used by the Python SDK (drivers, and workers submitting nested
// tasks) and by the CLI. One persistent connection to the head and one IO thread.
//
// Threading: every public method may be called from any thread; blocking methods (Get, Wait,
// Request, and Submit when the send queue is full) wait on condition variables, so the Python
// binding releases the GIL around them. Results of tasks this client submitted arrive without
// asking (the head pushes them to their owner); other objects are subscribed to on first Get.
// Connections to actors' agents (direct calls) are not read by the IO thread: a Get or Wait whose
// missing values all come from one of them reads it on its own thread, else a watcher thread does
// (read_watcher.h).
//
// Reference counting: AddRef/Release count the live handles (Python ObjectRefs) for each object in
// this process; when the count reaches zero the local copy is dropped and the head is told (batched).
//
// Reconnecting: when the connection drops (the head restarted, a laptop's Wi-Fi went away), the
// client dials again with backoff for up to `reconnect_for`, under the same client id. It then
// sends again what the head may have lost: its put values still referenced, and every task it
// submitted whose result it has not received (marked `resubmitted`; the head ignores ids it still
// has), in submission order, and re-subscribes what it waits for. Values it owns and holds (puts
// and results) are sent again too, for the tasks that take them. Waiting calls go on waiting
// meanwhile; only if the head stays unreachable do they fail. Once the replay is done it sends
// again every cancel of a task still unfinished and, to the same head, the releases and pins sent
// lately: whether made while disconnected or sent on a connection that died before the head read
// them, none is lost.
//
// After fork(): the child must create a new Client; the parent's one is abandoned, not destroyed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <atomic>
#include <functional>
#include <deque>
#include <map>
#include <set>
#include <thread>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "corral/client.pb.h"
#include "corral/client/io_thread.h"
#include "corral/client/read_watcher.h"
#include "corral/net/connection.h"

namespace corral::client {

struct ClientOptions {
  net::Endpoint head;
  std::string token;
  // When set, each handshake (the first and every reconnect) reads the token from this file
  // instead: a worker's credential, which its agent renews.
  std::string token_file;
  std::string name;                 // shown in the head's logs
  std::string python_version;       // "3.11.7"; tasks run only on nodes with the same major.minor
  std::string cloudpickle_version;
  std::chrono::milliseconds connect_timeout{10000};
  bool print_logs = true;           // worker output and notices for our tasks go to stderr
  bool in_worker = false;           // this client submits from inside running tasks
  // Actor calls go straight to the agent running the actor where the head gives a route
  // (client_calls.cc); false: always through the head (CORRAL_DIRECT_ACTOR_CALLS=0).
  bool direct_actor_calls = true;
  // On the actor's machine, direct calls go over its agent's Unix socket (ActorRoute.socket)
  // rather than loopback TCP; false: TCP (CORRAL_CALL_SOCKET=0).
  bool call_socket = true;
  // ...and beside it a result channel, on which the actor's worker writes results itself
  // (decision 46); false: results come through the agent (CORRAL_RESULT_CHANNEL=0).
  bool result_channel = true;
  // ...on which, once the worker welcomes us there, calls go to the worker itself (decision 50);
  // false: calls go to the agent (CORRAL_CALL_CHANNEL=0).
  bool call_channel = true;
  // The head's record of a direct call that is the client's only call under way is held for the
  // client's next message to the head; a record sent this long after it takes it along, and the io
  // thread sends it 4 × this long after at the latest (decision 47); 0: it leaves at once
  // (CORRAL_LATE_RECORD_US).
  std::chrono::microseconds late_record{2000};
  // A thread waiting for direct calls' results polls the agent's socket this long before sleeping,
  // while such waits have been ending within it (read_watcher.h); 0: sleep at once
  // (CORRAL_DIRECT_SPIN_US). 1 ms measured faster on a noisy host, not adopted (decision 49).
  std::chrono::microseconds direct_spin{200};
  bool reconnect = true;            // see above; false: a lost connection fails every call at once
  std::chrono::milliseconds reconnect_for{60000};
  std::shared_ptr<boost::asio::ssl::context> tls;  // null: plaintext (see head_trust.h)
};

using ObjectPtr = std::shared_ptr<const proto::ObjectValue>;

class Client {
 public:
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  ~Client();

  // A function with fixed options, registered once; Submit refers to it by the returned handle.
  int RegisterFunction(const std::string& name, const std::string& hash, const std::string& pickled,
                       const std::map<std::string, double>& resources,
                       const std::map<std::string, std::string>& label_selector, uint32_t max_retries,
                       bool interruptible = false, bool keep_running_on_partition = false,
                       const proto::ActorSpec* actor = nullptr, const std::string& gang_id = "",
                       int gang_member = -1);
  // Submits a task; returns its id (also the id of its result). Waits while the send queue is full.
  // With a function registered with an ActorSpec, this creates an actor: the id is the actor's too.
  Result<std::string> Submit(int function, std::string args, const std::vector<std::string>& deps);
  // A call on an actor: runs `method` on its worker; the id is that of its result. `direct`: it may
  // go straight to the actor's agent (not a generator, whose values come through the head).
  Result<std::string> SubmitCall(const std::string& actor_id, const std::string& name, const std::string& method,
                                 std::string args, const std::vector<std::string>& deps, uint32_t max_retries,
                                 const std::string& concurrency_group, bool direct = true);
  Result<std::string> Put(std::string data);
  // A stored value: the caller wrote `size` bytes to the file named by `id` (from NewObjectId) in
  // the object store of node `node`; the head learns where it is, never its bytes.
  std::string NewObjectId();
  Result<std::string> PutStored(const std::string& id, uint64_t size, const std::string& node);
  // Waits for every id (timeout < 0: forever). Values in the order of `ids`.
  Result<std::vector<ObjectPtr>> Get(const std::vector<std::string>& ids, double timeout_s);
  // Waits until `num_returns` of `ids` are ready or the timeout passes; returns which are ready.
  Result<std::vector<bool>> Wait(const std::vector<std::string>& ids, size_t num_returns, double timeout_s);
  // Generator task `task_id` (submitted here): the id of its value `index` once its worker stored
  // it; nullopt once the task has ended without telling it (read the task's result) or after the
  // timeout. Values are kept while the task's result is referenced here.
  Result<std::optional<std::string>> GeneratorItem(const std::string& task_id, size_t index, double timeout_s);
  void AddRef(const std::string& id);
  void Release(const std::string& id);
  // The reference escaped into a pickled value: keep the object while this client lives.
  void Pin(const std::string& id);
  // Drops one borrowed reference (a ref this process unpickled and registered with the head).
  void Unborrow(const std::string& id);
  Status Cancel(const std::string& task_id, bool force);
  Result<proto::Reply> Request(proto::Request request, double timeout_s);
  // A gang this client created (CREATE, as sent) or removed: a restarted head, which has lost its
  // gangs, is sent the live ones again before the tasks that run in them.
  void RememberGang(const proto::GangRequest& create);
  void ForgetGang(const std::string& gang_id);

  const std::string& client_id() const { return client_id_; }
  bool connected() const {
    auto c = conn();
    return c && !c->closed();
  }
  int reconnects() const { return reconnects_.load(); }
  bool reconnecting() const;

 private:
  // Gives the submission in `msg` its id, arguments and dependencies, and sends it (submit_mu_ held).
  // `agent`: a direct call, sent there first with the values of `dep_values`.
  Result<std::string> SendTask(proto::ClientToHead& msg, std::string args, const std::vector<std::string>& deps,
                               net::Connection* agent = nullptr, const std::vector<ObjectPtr>& dep_values = {});
  // The direct call path (client_calls.cc). An actor's calls go straight to its agent while this
  // client has a connection there (asked for with the head's route) and no call of its to that
  // actor is waiting at the head (they stay in submission order); else through the head.
  struct DirectActor {
    std::shared_ptr<net::Connection> conn;  // to the agent running the actor, greeted
    // Beside conn, on the agent's machine: the result channel, which the agent hands to the actor's
    // worker, and on which that worker writes the results of the calls sent on conn (decision 46).
    std::shared_ptr<net::Connection> results;
    std::string node;                       // that agent's node
    std::unordered_set<std::string> sent;   // calls sent there without a result yet
    // Once the worker welcomed us on `results` (calls may go there, decision 50): of `sent`, those
    // that went there. A call goes there only while every call in `sent` did (one order).
    std::weak_ptr<net::Connection> welcomed_on;  // the result channel whose worker welcomed us
    bool CallsOnChannel() const {  // (`results` is that channel)
      return results && !welcomed_on.owner_before(results) && !results.owner_before(welcomed_on);
    }
    std::unordered_set<std::string> on_channel;
    int via_head = 0;                       // calls through the head (or handed to it) without a result yet
    std::chrono::steady_clock::time_point next_route{};  // when to ask the head for a route again
    bool routing = false;  // queued for a router thread, or being routed there
    std::chrono::seconds route_backoff{0};  // after a failed dial: doubled each time, to kRouteRetry
    // Calls sent there whose results now come from the head: counted with those again.
    bool HandBack(const std::string& id) {
      if (!sent.erase(id)) return false;
      on_channel.erase(id);
      via_head++;
      return true;
    }
    std::vector<std::string> HandBackAll() {
      std::vector<std::string> ids(sent.begin(), sent.end());
      via_head += static_cast<int>(ids.size());
      sent.clear();
      on_channel.clear();
      return ids;
    }
    bool End(const std::string& id) {
      on_channel.erase(id);
      return sent.erase(id) > 0;
    }
  };
  // submit_mu_ held. The connection to use for a call of `actor_id` with arguments `deps` (their
  // values in `dep_values`), or null; when there is none, queues the actor for a router thread,
  // which asks the head for a route and dials it (the call goes through the head meanwhile).
  std::shared_ptr<net::Connection> DirectRoute(const std::string& actor_id, const std::vector<std::string>& deps,
                                               std::string* node, std::vector<ObjectPtr>* dep_values);
  // A router thread: routes what DirectRoute queued, one actor at a time. Up to kMaxRouters run,
  // started as actors queue while every one is busy: an agent that does not answer (a laptop
  // asleep) holds up its own actor's route only.
  void RouteLoop();
  // Asks the head for a route to `actor_id`'s agent and dials it; the connection becomes the
  // actor's (direct_) if the agent took us, else the actor waits for next_route.
  void Route(const std::string& actor_id);
  // With `results` set: the actor's result channel too, where the agent is on this machine.
  std::shared_ptr<net::Connection> DialAgent(const std::string& actor_id, const proto::ActorRoute& route,
                                             std::shared_ptr<net::Connection>* results);
  // Connects to `ep` and greets the agent there; null if it cannot be reached or does not take us,
  // and then `*unreachable` (if given) says whether another way to it is worth a try (false: the
  // greeting never came, or this client is shutting down). `results`: dials a result channel
  // instead, which has no greeting (a refusal closes it; its results then come on the call connection).
  std::shared_ptr<net::Connection> DialAgentAt(const std::string& actor_id, const proto::ActorRoute& route,
                                               const net::Endpoint& ep,
                                               std::shared_ptr<boost::asio::ssl::context> tls, bool* unreachable,
                                               bool results = false);
  // Sends call `id` (its record, with direct_node, goes to the head after) to `agent`, or, if that
  // connection closed meanwhile, puts it in lost_direct_ (the head then sends it).
  void SendDirect(const std::string& actor_id, const std::string& id, net::Connection* agent,
                  const proto::CallerToAgent& call, net::Urgency urgency);
  // A new head (it restarted): connections to agents are dropped; calls sent on them are in the
  // replay, through the head.
  void ForgetDirect();
  // `channel`: `from` itself, when it is a result channel.
  void OnAgentMessage(net::Connection* from, const std::string& actor_id, std::optional<bool>* greeted,
                      const std::weak_ptr<net::Connection>* channel,
                      std::string_view bytes);
  // The agent said the actor's worker exited: the calls sent on its call channel died with it.
  void OnWorkerDied(net::Connection* from, const std::string& actor_id, const std::string& why);
  // Tells the head about lost_direct_ (and subscribes to them); false if the head's connection is down.
  bool SendLostDirect(net::Connection& head);
  void OnAgentClose(net::Connection* from, const std::string& actor_id);
  void OnResultsClose(net::Connection* from, const std::string& actor_id);
  // mu_ held: a direct call's result, from its agent or (on a result channel) the actor's worker.
  void OnDirectResultLocked(proto::TaskFinished& f);
  // mu_ held: the value of `id` arrived (from the head or an agent); takes it if it is wanted.
  void OnValueLocked(ObjectPtr value);
  // mu_ held: the actor `id` was sent to straight, if it is a direct call without a result yet.
  const DirectActor* DirectCallLocked(const std::string& id) const;
  // mu_ held: the connection to the agent that will send every result of `ids` not here yet, if
  // they are direct calls under way there and a waiting thread may read it (ReadWatcher); else null.
  // `results`: the result channel beside it, if there is one (results come on either).
  std::shared_ptr<net::Connection> DirectReplyLocked(const std::vector<std::string>& ids,
                                                     std::shared_ptr<net::Connection>* results) const;
  // mu_ held by `lock`: waits until pred(), closed_ or the deadline, reading the connection of a
  // direct call among `ids` itself where it can; false on the deadline.
  bool WaitFor(std::unique_lock<std::mutex>& lock, const std::vector<std::string>& ids,
               std::chrono::steady_clock::time_point deadline, const std::function<bool()>& pred);
  // mu_ held: call `id` has its result (or was never sent): its actor's line moves on.
  void EndCallLocked(const std::string& id);
  explicit Client(const ClientOptions& options);
  // Dial(), and the new connection becomes current (the first connection).
  Status Handshake();
  // Dials, says Hello and waits for the Welcome; the connection is not published.
  Result<std::shared_ptr<net::Connection>> Dial();
  std::shared_ptr<net::Connection> conn() const { return conn_.load(); }
  void OnMessage(net::Connection* from, std::string_view bytes);
  void OnClose(net::Connection* from, const Status& reason);
  // On the reconnect thread: dials until connected or out of time, then replays.
  void ReconnectLoop(Status reason);
  // Sends again what a restarted head may have lost; false if the connection failed meanwhile.
  bool Replay(net::Connection& c, bool subscriptions_only);
  // The records of direct calls (submissions with direct_node) that the closed connection to the
  // head never wrote: held ones (decision 47), which the same head needs again.
  std::vector<proto::ClientToHead> UnsentRecords();
  Status Send(const proto::ClientToHead& msg, net::Urgency urgency = net::Urgency::kNow);
  void FlushReleases();  // mu_ must not be held
  void RememberRelease(const proto::Release& release);  // mu_ held
  Result<std::string> PutValue(proto::ObjectValue&& value);
  Result<std::vector<ObjectPtr>> GetHeld(const std::vector<std::string>& ids, double timeout_s);
  Result<std::vector<bool>> WaitHeld(const std::vector<std::string>& ids, size_t num_returns, double timeout_s);
  // Subscribes to what this client will not be sent anyway, and flushes corked submissions.
  Status PrepareWait(const std::vector<std::string>& ids);
  void HoldWhileWaiting(const std::vector<std::string>& ids);
  void EndWaiting(const std::vector<std::string>& ids);
  // mu_ held. Drops one count; true if the object went to pending_release_ (the head is to be told).
  bool DropRefLocked(const std::string& id);
  void AfterDrops(bool released);  // mu_ not held

  ClientOptions options_;
  std::string client_id_;
  std::string python_minor_;
  std::unique_ptr<IoThread> io_ = std::make_unique<IoThread>();  // reset first in ~Client
  std::unique_ptr<ReadWatcher> reads_;  // connections to agents (direct calls)
  std::atomic<std::shared_ptr<net::Connection>> conn_;  // replaced on reconnect
  std::atomic<net::Connection*> pending_{nullptr};       // handshaking, not yet published
  std::thread reconnect_thread_;
  std::vector<std::thread> router_threads_;  // RouteLoop; guarded by mu_ (joined at the end)
  size_t routers_idle_ = 0;                  // of those, waiting for an actor to route; guarded by mu_
  std::atomic<int> reconnects_{0};

  std::mutex submit_mu_;  // serialises submissions (see Submit)
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Status> welcome_;                                   // guarded by mu_
  std::string resume_secret_;  // from the head's last Welcome: proves our session is ours; guarded by mu_
  std::string session_;                  // the head's run id, from the Welcome; guarded by mu_
  Status closed_reason_;                                            // guarded by mu_
  bool closed_ = false;                                             // guarded by mu_
  bool reconnecting_ = false;                                       // guarded by mu_
  uint64_t connections_lost_ = 0;                                   // guarded by mu_
  bool shutting_down_ = false;                                      // guarded by mu_
  std::deque<std::string> to_route_;  // actors for the router thread; guarded by mu_
  std::condition_variable route_cv_;  // (with mu_) to_route_ or shutting_down_ changed
  uint64_t route_epoch_ = 0;          // bumped by ForgetDirect; guarded by mu_
  // Submitted tasks without a result yet, by id (ids sort in submission order): for a replay.
  std::map<std::string, proto::TaskSpec> unfinished_;               // guarded by mu_
  uint64_t next_task_ = 0;                                          // guarded by mu_
  std::vector<proto::TaskSpec> functions_;                          // guarded by mu_
  std::unordered_set<std::string> shipped_;                         // guarded by mu_
  std::unordered_map<std::string, ObjectPtr> ready_;                // guarded by mu_
  std::unordered_map<std::string, std::vector<std::string>> items_;  // generator values told: guarded by mu_
  std::unordered_map<std::string, int> refs_;                       // guarded by mu_
  std::unordered_set<std::string> subscribed_;                      // guarded by mu_
  std::map<std::string, proto::GangRequest> gangs_;                  // guarded by mu_: by id, see RememberGang
  std::unordered_set<std::string> owned_;                           // guarded by mu_
  std::vector<std::string> pending_release_;                        // guarded by mu_
  std::vector<std::string> pending_unborrow_;                       // guarded by mu_: borrows dropped
  // Cancels of tasks not finished yet (id -> force), sent again after every reconnect: one sent
  // on a connection that died before the head read it is not lost. Guarded by mu_.
  std::map<std::string, bool> cancels_;
  // Releases and pins sent lately on the current connection (the newest kRecentCap), sent again
  // when the same head takes us back: the old connection may have died with them unread.
  std::deque<proto::Release> recent_releases_;                      // guarded by mu_
  bool release_timer_armed_ = false;                                // guarded by mu_
  uint64_t next_request_ = 1;                                       // guarded by mu_
  std::unordered_map<std::string, DirectActor> direct_;              // by actor id; guarded by mu_
  std::unordered_map<std::string, std::string> calls_;              // unfinished call -> its actor; guarded by mu_
  std::vector<std::string> lost_direct_;  // direct calls whose connection broke, the head not told yet; guarded by mu_
  // Bumped whenever a direct call's result stops being due on its agent's connection (handed back,
  // that connection closed or replaced): a thread reading that connection for its results checks
  // this, not every id it waits for, after each read. Guarded by mu_.
  uint64_t direct_moves_ = 0;
  std::string recording_;  // the direct call sent whose record the head is not sent yet; guarded by mu_
  std::unordered_map<uint64_t, std::optional<proto::Reply>> replies_;  // guarded by mu_
};

}  // namespace corral::client
