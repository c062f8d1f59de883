// WorkerLink: a Python worker's connection to its agent over the agent's Unix socket.
//
// Synchronous on purpose: the worker's main thread reads its next task straight from the socket
// (NextTask, which the binding calls with the GIL released) and writes results straight to it, so
// no IO thread sits between the agent and the task and no thread hand-off is paid per task. The
// agent sends a worker nothing while it runs a task, so nobody needs to read then.
// Finish() and Blocked() may be called from any thread (writes are serialised); NextTask() from
// one thread at a time.
//
// Lease fence: the agent publishes its lease expiry (CLOCK_BOOTTIME ns) in a small file that the
// worker maps. While a task runs that must stop with the lease (all but keep_running_on_partition
// ones), a kernel timer on CLOCK_BOOTTIME is armed at the expiry and delivers SIGKILL to this
// process when it passes. The kernel ends the worker then whether it runs, is stopped (SIGSTOP of
// the whole node, as a closing laptop lid does) or the machine was suspended: no thread of a frozen
// process has to win a race after it thaws. A thread re-arms the timer when the agent renews the
// lease (it polls the mapped expiry every 50 ms, far inside the lease).
//
// Result channels (decision 46): the agent hands the worker, over a socket pair it made at spawn
// (results_fd), the connections of callers on its machine that asked for their results there. A
// direct call that names one has its result written to the caller on it at once, and the agent is
// told it was (TaskFinished.delivered), so the result skips the agent's relay. A channel that
// would block or broke leaves the result to the agent, as before.
//
// Call channels (decision 50): with the first channel the agent hands over a CallTable (tag 0).
// The worker then welcomes each channel's caller on it, and from then on reads calls there too:
// NextTask waits on the agent's connection, the hand-over socket and every channel at once
// (spinning a moment first, while callers are connected), claims each channel call in the table
// before it runs (a call the agent refused is dropped), and reports its end to the agent with the
// channel's number, batched (the caller already has the result).
#pragma once

#include <time.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <thread>
#include <unordered_map>
#include <vector>
#include <memory>
#include <mutex>
#include <string>

#include "corral/base/call_table.h"
#include "corral/common.pb.h"
#include "corral/net/frame.h"

namespace corral::client {

struct WorkerLinkOptions {
  std::string socket_path;
  std::string worker_id;  // hex, given by the agent in the environment
  std::string token;
  std::string python_version;
  std::string cloudpickle_version;
  std::string lease_file;  // the agent's published lease; empty: no watchdog
  std::vector<std::string> task_functions;  // durable task functions this worker registered
  // The agent's socket pair end that hands over result channels (-1: none); the link's from now
  // on. Close-on-exec already: worker.py sets that before any task code runs.
  int results_fd = -1;
  std::string node_id;      // hex: this node, named in results written to callers
  // How long NextTask keeps looking for a caller's next call before it sleeps (CORRAL_WORKER_SPIN_US).
  std::chrono::microseconds spin{0};
};

class WorkerLink {
 public:
  static Result<std::unique_ptr<WorkerLink>> Connect(const WorkerLinkOptions& options);
  ~WorkerLink();

  // Seqs of calls taken from call channels have this bit set; the agent's (it numbers what it sends,
  // and so does the worker) never reach it.
  static constexpr uint32_t kChannelSeq = 0x80000000u;

  // Waits for the next task. An error means the agent is gone: the worker should exit. `seq`: the
  // number a cancel names it by.
  Result<proto::ExecuteTask> NextTask(uint32_t* seq = nullptr);
  Status Finish(const proto::TaskFinished& finished);
  Status Blocked(const std::string& task_id, bool blocked);
  // The running task or actor call `task_id` yielded its value `index`, stored as `object_id`: its
  // owner gets the ref now, before the task ends (Client::GeneratorItem).
  Status GeneratorItem(const std::string& task_id, uint32_t index, const std::string& object_id);
  // The actor's constructor returned: the worker is the actor's until it dies. The lease fence stays
  // armed from now on (the actor's creation runs for its whole life), not only during calls.
  Status ActorReady(const std::string& actor_id, uint32_t attempt);

 private:
  // What was read from a socket and not yet decoded.
  struct InBuffer {
    net::FrameDecoder decoder;
    std::string buf;  // keeps its size (grown, shrunk after a large message): [0, buffered) read
    size_t buffered = 0;
    // One recv (with `flags`); each whole message decoded goes to on_message. The recv's count (0:
    // the peer closed; below 0: errno), or the decoder's error (the stream is garbage).
    Result<ssize_t> Read(int fd, int flags, size_t chunk, const std::function<void(std::string_view)>& on_message);
  };

  WorkerLink() = default;
  // Reads until at least one whole message is queued.
  Result<std::string> ReadMessage();
  Status Write(const google::protobuf::MessageLite& msg);
  struct CallChannel {
    uint64_t n = 0;
    bool from_channel = false;  // the call came on it (else from the agent, its result to go there)
    bool held = false;          // (DeliverToCaller) its result waits with others, not written yet
  };
  // Writes `finished` to its call's caller on the result channel, if the call has one that takes
  // it now; true if the caller got all of it. `*call`: the call's channel, if it has one.
  bool DeliverToCaller(const proto::TaskFinished& finished, CallChannel* call);
  // A result channel: its socket (closed with the last holder) and its writers' turn; and, once a
  // call channel, what the reading thread (NextTask's) has read of its caller's calls.
  struct Channel {
    int fd = -1;
    std::mutex write_mu;  // one frame at a time
    std::string client_id;  // the caller's (the agent checked its ticket)
    bool calls = false;     // welcomed: calls may come on it
    net::FrameBuilder held;  // under write_mu: results not sent yet (a caller pipelining here)
    InBuffer in;            // from the caller (NextTask's thread)
    ~Channel();
  };
  // Takes in the channels the agent handed over and lets go of those it took back. Under results_mu_.
  void ReceiveChannels();
  // NextTask's thread: reads what is there now (everything when `wait`, waiting for something
  // first) from the agent, the hand-over socket and the call channels.
  Status Fill(bool wait);
  // Reads channel `n` now; false if it is done (closed, or it sent what it may not).
  bool ReadChannel(uint64_t n, Channel& channel);
  // Reports of calls whose results were held for a pipelining caller: sent after those results
  // (SendHeldResults, or the ticker once the oldest is kReportAge old). FlushReports sends them now.
  void QueueReport(const google::protobuf::MessageLite& msg);
  Status FlushReports();
  bool ReportsDue();
  Status SendFrame(const std::string& frame);  // to the agent, whole
  void PrepareCall(const proto::ExecuteTask& task, uint64_t channel, bool from_channel);
  // Writes `frame` whole on `channel` (its write_mu held), or closes it if it would have to wait
  // past a deadline; false if the caller did not get the frame.
  bool WriteChannel(Channel& channel, uint64_t n, const std::string& frame, bool must,
                    std::chrono::milliseconds finish_within);
  // Tells the agent this worker closed call channel `n` (decision 50).
  void ChannelClosed(uint64_t n);
  // NextTask's thread, before it waits or runs another caller's call: sends the results held for
  // pipelining callers, then their reports.
  void SendHeldResults();
  // Writes every channel's held results (any thread).
  void WriteHeld(std::chrono::milliseconds finish_within);

  Status StartFence(const std::string& lease_file);
  void StartTicker();  // the fence's and the reports' thread
  // Arms the kill timer at the published expiry while a fenced task runs, disarms it otherwise.
  void UpdateFence(bool fenced);

  int fd_ = -1;
  const int64_t* lease_ = nullptr;           // mapped from the agent's lease file
  std::mutex fence_mu_;
  bool fence_current_ = false;               // guarded by fence_mu_: a task runs that must stop with the lease
  bool actor_ = false;                       // guarded by fence_mu_: an actor lives here (fenced throughout)
  bool actor_keep_running_ = false;          // guarded by fence_mu_: ...unless it keeps running through a partition
  int64_t armed_at_ = 0;                     // guarded by fence_mu_: the expiry the timer is set to, 0: disarmed
  timer_t timer_{};                          // the kill timer (the kernel numbers them from 0)
  bool has_timer_ = false;                   // false: no fence
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
  InBuffer in_;                      // from the agent
  std::deque<std::string> messages_; // decoded, not yet handed out
  std::atomic<size_t> queued_{0};    // messages_.size(), for other threads
  std::mutex write_mu_;
  int results_fd_ = -1;
  std::chrono::microseconds spin_{0};
  uint32_t agent_seq_ = 0;            // NextTask's thread: tasks the agent sent (it counts them too)
  uint32_t channel_seq_ = 0;          // NextTask's thread: calls taken from call channels
  std::string actor_id_;              // NextTask's thread: the actor this worker hosts, once it does
  std::atomic<std::thread::id> reader_;  // the thread that calls NextTask
  std::deque<std::pair<uint64_t, proto::ExecuteTask>> channel_calls_;  // NextTask's thread: read, not yet claimed
  uint64_t held_channel_ = 0;         // NextTask's thread: the channel whose results it holds (0: none)
  std::unique_ptr<CallTable> table_;  // set once under results_mu_ (before any channel can carry calls)
  std::mutex reports_mu_;
  net::FrameBuilder reports_;         // guarded by reports_mu_
  std::chrono::steady_clock::time_point oldest_report_;  // guarded by reports_mu_
  std::string node_id_;                                 // raw bytes
  // Held briefly (never while writing to a caller): threaded and async actors finish calls on
  // other threads, and NextTask registers calls under it.
  std::mutex results_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Channel>> channels_;  // guarded by results_mu_: by number
  std::unordered_map<std::string, CallChannel> call_channels_;  // guarded by results_mu_: calls running, by task id
  uint32_t deliveries_ = 0;                                  // guarded by results_mu_
};

}  // namespace corral::client
