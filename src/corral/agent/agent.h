// Agent: the node's daemon. Registers with the head, heartbeats, runs the tasks the head sends on a
// warm pool of Python workers, and reports results, worker deaths and worker output.
//
// Task intake (OnExecute) does not care who sent the task: today the head; later a driver holding
// a lease on this node's workers.
//
// Local rules: a task starts when its CPUs are free here (a worker blocked in get() gives its CPUs
// back) and an idle worker for its GPU set exists; otherwise it waits in a short local queue (the
// head's prefetch). Workers are started up front (one per CPU) and replaced when they die; more are
// started for GPU sets and for tasks that arrive while others are blocked, up to `max_workers`.
//
// Leases (see lease.h): each heartbeat acknowledgement renews the agent's lease. When the head is
// unreachable the agent keeps running its attempts while the lease lasts, keeps their results, and
// reconnects with backoff and jitter; once the lease runs out it stops them (self-fencing, before
// the head may re-queue them) unless a task asked to keep running through a partition. On
// reconnecting it tells the head which attempts it still holds, then reports what ended meanwhile.
//
// Drain: no new work; queued tasks are handed back at once, running ones may finish until the
// deadline and are then handed back too; with `leave`, the node then leaves the cluster.
// io thread only.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "corral/agent/gpu_allocator.h"
#include "corral/agent/resources_detect.h"
#include "corral/agent/lease.h"
#include "corral/agent/task_logs.h"
#include "corral/agent/node_identity.h"
#include "corral/agent/object_transfer.h"
#include "corral/agent/sleep_inhibitor.h"
#include "corral/agent/worker_processes.h"
#include "corral/base/clock.h"
#include "corral/base/ids.h"
#include "corral/base/resources.h"
#include "corral/net/boot_timer.h"
#include "corral/net/connection.h"
#include "corral/net/listener.h"
#include "corral/node.pb.h"
#include "corral/objects/node_store.h"
#include "corral/worker.pb.h"

namespace corral::agent {

struct AgentOptions {
  net::Endpoint head;
  std::string token;                               // not needed once the node has its certificate
  std::shared_ptr<boost::asio::ssl::context> tls;  // dialling `head` with TLS; null: plaintext
  std::string ca_cert_file;                        // the CA workers verify the head with (CORRAL_CA_CERT)
  std::string node_id;
  std::string state_dir;
  std::string hostname;
  ResourceSet resources;                 // CPU, GPU, memory, custom
  std::vector<int> gpu_ids;              // physical indices handed out for "GPU"
  std::vector<GpuInfo> gpu_devices;      // what NVML said of them, for status
  std::map<std::string, std::string> labels;
  std::string python;                    // worker interpreter
  std::string python_path;               // prepended to the workers' PYTHONPATH
  std::string task_modules;              // comma-separated modules workers import at start (durable tasks)
  int warm_workers = 0;                  // 0: one per CPU
  int max_workers = 0;                   // 0: max(16, 4 x CPUs); workers blocked in get() not counted
  bool exit_when_head_lost = false;      // embedded clusters: the head going away ends the agent
  // Called once, when the node is ready for what it was started to run: the head accepted it and,
  // if workers start up front, acknowledged a heartbeat sent after the first worker connected
  // (so the head knows the node's Python and the durable functions its --tasks modules define).
  std::function<void()> on_registered;
  std::function<void()> on_left;         // called after the node drained and left (default: nothing)
  bool interruptible_only = false;       // take only tasks that tolerate interruption
  bool drain_on_sleep = false;           // hold a logind sleep inhibitor; drain before suspend
  std::string object_store_dir;          // empty: NodeStore::DefaultDir
  uint64_t object_store_memory = 0;      // 0: NodeStore::DefaultCapacity
  std::string spill_dir;                 // empty: <state_dir>/spill
  // The IP address this node serves its objects to other agents on. Empty: the address it reaches
  // the head from. Set for the agent inside the head process, which is then found at the head's host.
  std::string serve_objects_on;
  uint16_t object_port = 0;              // the port it serves objects on; 0: any free one
  // Connects to the head; unset: dial `head` over TCP. The head's own agent gets an in-process stream.
  std::function<void(std::function<void(Result<std::unique_ptr<net::ByteStream>>)>)> connect;
};

class Agent {
 public:
  Agent(boost::asio::io_context& io, AgentOptions options);
  ~Agent();

  // Starts the worker socket and the warm pool, then connects to the head.
  Status Start();
  // Kills the workers and closes connections.
  void Stop();
  // Non-zero when the agent stopped because the head refused it.
  int exit_code() const { return exit_code_; }
  // Starts draining (see above). Without a head to leave, a leaving agent just stops.
  // `on_drained` runs once nothing runs here any more (or the timeout handed the rest back).
  void Drain(std::chrono::milliseconds timeout, bool leave, const std::string& reason,
             std::function<void()> on_drained = nullptr);
  // Takes work again after a drain that did not leave (the machine woke up).
  void Undrain(const std::string& reason);
  bool registered() const { return registered_; }
  // Whether this node has its certificate (it joined the head over TLS).
  bool has_certificate() const { return identity_ && identity_->has_certificate(); }

 private:
  struct Worker;
  struct Pending {
    proto::ExecuteTask task;
    double cpus = 0;
    double gpus = 0;  // whole devices, or a fraction of one (GpuAllocator)
  };

  void ConnectToHead();
  void OnHeadMessage(std::string_view bytes);
  void OnHeadLost(const Status& reason);
  void SendToHead(const proto::AgentToHead& msg);
  void Heartbeat();
  void OnLeaseExpired();
  void OnLeaseRenewed();  // re-arms the expiry timer and publishes the lease to the workers
  void OnNodeCertificate(const std::string& certificate, bool renewal);
  void MaybeRenewCertificate();
  void KeepWorkerToken(const std::string& token);  // state_dir/worker-token
  // Reports the attempt as ended without a result of its own (drain, fencing): the head runs it again.
  void HandBack(const std::string& task_id, uint32_t attempt, const std::string& why);
  void CheckDrained();
  void ArmDrainTimer(std::chrono::steady_clock::time_point deadline);

  void OnExecute(proto::ExecuteTask&& task);
  void OnCancel(const proto::CancelAttempt& cancel);
  // A call on an actor this node runs: straight to its worker, which orders and runs it. `caller`:
  // the connection of a caller that sent it itself (agent_calls.cc), which gets the result first.
  void OnActorCall(proto::ExecuteTask&& task, const std::shared_ptr<net::Connection>& caller = nullptr);
  // Reports an attempt (a call whose actor's worker is gone) as ended with `kind`; `direct`: a call
  // its caller sent here itself (the head may not have recorded it yet).
  void ReportEnded(const std::string& task_id, uint32_t attempt, proto::ErrorKind kind, const std::string& message,
                   bool direct = false);
  // The direct call path (agent_calls.cc): callers the head gave a ticket send an actor's calls
  // here themselves, on a port of their own (NodeInfo.call_address), and get the results from here.
  struct Caller;
  void ServeCalls(const std::string& local_ip);
  void ServeCallsOnThisMachine();
  void OnCallerAccepted(std::unique_ptr<net::ByteStream> stream, bool local);  // local: on call_socket_
  void OnCallerMessage(Caller* caller, std::string_view bytes);
  // A caller's second connection, its result channel: handed to the actor's worker (decision 46).
  void HandOverResults(Caller* channel);
  // The caller left: its result channel is taken back from the worker it was handed to.
  void TakeBackResults(const Caller& c);
  // The head asks which of these direct calls never came (their caller's connection broke): the
  // answer lists them, and they are refused should they still arrive (the head sends them itself).
  void OnProbeCalls(const proto::DirectCalls& probe);
  void OnDropCallers(const proto::DropCallers& drop);
  // Closes the connections of the callers `which` picks (all by default): they ask the head again.
  void CloseCallers(const Status& why, const std::function<bool(const Caller&)>& which = nullptr);
  // Tells a direct call's caller that its result will come from the head instead.
  static void Abandon(const std::weak_ptr<net::Connection>& caller, const std::string& task_id);
  void TryStart();
  Worker* IdleWorker(const std::string& env_key);
  // A busy worker that may take `p` ahead of time (short tasks of the same function), or null.
  bool CpuFree(const Pending& p) const { return p.cpus <= 0 || p.cpus <= cpus_free_ + 1e-9; }  // its CPUs are free
  Worker* PipelineTarget(const Pending& p);
  void Pipeline(Worker* w, Pending&& p);
  void SendTask(Worker* w, Pending&& p, bool pipelined);
  // The worker starts running `p`: what the agent tracks about the running task.
  void BeginTask(Worker* w, const Pending& p, Nanos now);
  // The memory monitor (every 250 ms): stops a task whose worker's resident memory exceeds its
  // memory= request, and, when the machine's available memory falls under 5%, the most recently
  // started task, so the node never swaps itself to death. Either fails with OUT_OF_MEMORY.
  void CheckMemory();
  void StopForMemory(Worker* w, std::string why);
  void ReportCancelled(const std::string& task_id, uint32_t attempt);
  Worker* SpawnWorker(const std::string& env_key);
  std::string WorkerLogPath(const Worker& w) const;  // logs/worker-<id>.log under the state dir
  void OnWorkerAccepted(std::unique_ptr<net::ByteStream> stream);
  void OnWorkerMessage(Worker* w, std::string_view bytes);
  void OnWorkerExit(pid_t pid, const std::string& reason);
  void FinishOnWorker(Worker* w, proto::TaskFinished&& finished);
  // The end of a call the worker took from a caller's call channel (decision 50).
  void FinishChannelCall(Worker* w, proto::TaskFinished&& finished);
  // Whether a direct call (a first attempt) was taken by an actor's worker from a call channel; if
  // not, it is refused there from now on (the worker drops it should it come).
  bool HeldOnChannel(const std::string& task_id);
  // The actors' workers that were handed a channel of `task_id`'s caller.
  std::vector<Worker*> ChannelWorkersOf(const std::string& task_id);
  // A direct call refused from now on on the agent's call connections too.
  void RefuseFromNowOn(const std::string& task_id, uint32_t attempt);
  void ReleaseTask(Worker* w);
  // Reports the queued tasks as failed with `why` (workers cannot start here); `only_startable`:
  // only those a new worker would start now (their CPUs are free), not those waiting for a CPU.
  void FailQueued(const std::string& why, bool only_startable = false);
  // A line of the worker's output, written at `offset` of its log: its task's (the last one a
  // marker named on that stream: _task_output.py), indexed for `corral logs` and sent to the owner.
  void OnWorkerLine(pid_t pid, bool is_stderr, std::string line, int64_t offset);
  // The object store (agent_objects.cc; see objects/node_store.h): the head's deletions, and reads
  // relayed through the head for readers without a store.
  void OnDeleteObjects(const proto::DeleteObjects& request);
  void OnReadObject(const proto::ReadObject& request);
  // Spills run on their own thread (disk writes would stall the node's event loop); the head hears
  // which moved. A deletion that arrives meanwhile is done once the spill ends.
  void OnSpillObjects(const proto::SpillObjects& request);
  void SpillLoop();
  // Serves this node's objects to other agents on `local_ip` (or serve_objects_on), where it
  // listened before or anew: info_.peer_address says where (sent with the Hello).
  void ServeObjects(const std::string& local_ip);
  // The head asks for a copy of an object another node holds: pulled agent to agent.
  void OnPullObject(const proto::PullObject& request);

  boost::asio::io_context& io_;
  AgentOptions options_;
  double cpus_total_ = 0, cpus_free_ = 0;
  GpuAllocator gpus_;
  proto::NodeInfo info_;
  std::string hello_info_;  // info_ as the last hello to the head carried it
  std::string session_id_;
  std::shared_ptr<net::Connection> head_;
  boost::asio::steady_timer heartbeat_timer_;
  boost::asio::steady_timer memory_timer_;
  boost::asio::steady_timer reconnect_timer_;
  uint64_t heartbeat_seq_ = 0;
  std::chrono::milliseconds heartbeat_interval_{1000};
  int startup_failures_ = 0;
  std::string broken_reason_;  // why workers cannot start here, once they failed repeatedly
  int reconnect_attempt_ = 0;
  bool registered_ = false;
  uint64_t ready_seq_ = 0;  // on_registered fires with the ack of this heartbeat; 0: not yet sent
  void MaybeReady();
  void OnSpawnFailed(const Status& why);
  Nanos last_ack_ = 0;  // CLOCK_BOOTTIME of the last heartbeat ack (or the Welcome)
  Lease lease_;
  std::unique_ptr<NodeIdentity> identity_;  // TLS to the head: this node's certificate
  bool renewing_ = false;                   // a renewal request is in flight
  net::BootTimer lease_timer_;
  int64_t* lease_map_ = nullptr;  // state_dir/lease, mapped here and by the workers
  Nanos published_lease_ = 0;
  // Attempt ends that happened while the head was unreachable: reported after re-registering.
  std::deque<proto::AgentToHead> outbox_;
  size_t outbox_bytes_ = 0;
  // Attempt ends sent on the current connection that no heartbeat ack has confirmed yet (the
  // connection may be half-open): moved to the outbox if it fails. An ack for heartbeat N confirms
  // everything sent before N (one ordered stream).
  struct Unacked {
    uint64_t before_heartbeat;  // the next heartbeat's seq when it was sent
    proto::AgentToHead msg;
  };
  std::deque<Unacked> unacked_;
  size_t unacked_bytes_ = 0;
  bool draining_ = false;
  bool leave_after_drain_ = false;
  bool left_ = false;
  std::string drain_reason_;
  boost::asio::steady_timer drain_timer_;
  // A worker that could not even be started (fork or pipe failed: no descriptors or processes
  // left): no other start is tried until this timer fires, and from kMaxStartupFailures such
  // failures in a row on, the queue is failed with the reason (OnSpawnFailed).
  boost::asio::steady_timer spawn_retry_timer_;
  bool spawn_paused_ = false;
  int spawn_failures_ = 0;
  std::function<void()> on_drained_;
  bool sleep_drain_ = false;  // the drain began because the machine is going to sleep
  std::chrono::steady_clock::time_point drain_deadline_;
  std::unique_ptr<SleepInhibitor> sleep_inhibitor_;

  std::optional<objects::NodeStore> store_;
  std::unique_ptr<ObjectTransfer> transfer_;
  uint16_t last_peer_port_ = 0;  // reused when the node serves objects on a new address
  std::string peer_secret_;      // the cluster's, from the Welcome: checks callers' tickets
  std::unique_ptr<net::Listener> call_listener_;
  std::unique_ptr<net::Listener> call_socket_;  // the same, on a Unix socket for callers on this machine
  std::vector<std::shared_ptr<boost::asio::ssl::context>> call_tls_;  // every one made (see ServeCalls)
  std::string call_host_;
  std::unordered_map<Caller*, std::unique_ptr<Caller>> callers_;
  size_t callers_greeting_ = 0;  // connected callers that have not sent a valid hello yet
  uint64_t result_channels_ = 0;  // result channels handed to workers so far (numbers them)
  uint64_t callers_greeted_ = 0;  // callers greeted so far (Caller::greeted_seq)
  std::unordered_set<std::string> calls_refused_;  // "<task id><attempt>" of OnProbeCalls' answers
  std::deque<std::string> calls_refused_order_;    // oldest first, at most kCallsRefusedKept
  std::unordered_set<std::string> callers_dropped_;  // client ids whose token went (OnDropCallers)
  std::thread spill_thread_;
  std::mutex spill_mu_;
  std::condition_variable spill_cv_;
  std::deque<proto::SpillObjects> spill_queue_;  // guarded by spill_mu_
  bool spill_stop_ = false;                      // guarded by spill_mu_
  std::set<std::string> spilling_;               // file names queued or moving (io thread)
  std::set<std::string> delete_after_spill_;
  int heartbeats_since_sweep_ = 0;
  std::unique_ptr<net::Listener> worker_listener_;
  std::unique_ptr<WorkerProcesses> processes_;
  TaskLogs task_logs_;
  std::unordered_map<pid_t, std::unique_ptr<Worker>> workers_;  // by pid
  std::unordered_map<std::string, Worker*> workers_by_id_;
  std::unordered_map<std::string, Worker*> actor_workers_;  // by actor id
  std::deque<Pending> queue_;
  std::unordered_map<std::string, std::string> functions_;       // hash -> pickled function
  std::unordered_map<std::string, Nanos> durations_;             // hash -> average run time
  std::map<std::string, int64_t> counters_;  // sent with every heartbeat
  bool stopped_ = false;
  int exit_code_ = 0;
  const std::string worker_secret_ = Hex(RandomBytes(24));  // what this agent's workers present on its socket
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::agent
