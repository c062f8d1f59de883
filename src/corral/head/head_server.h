// HeadServer: the head process's network face. Accepts connections, runs the handshake (protocol
// version, token), and routes messages from clients and agents to the NodeRegistry and the
// TaskManager. Runs entirely on one io thread; nothing here blocks.
//
// Clients that lose their connection without saying goodbye keep their tasks and objects for a
// dead threshold (a laptop's Wi-Fi drops; a driver reconnects after a head restart): reconnecting
// under the same client id takes the session back. Agents likewise keep their tasks (see
// NodeRegistry) and reconcile them when they register again.
//
// Backpressure: while more than `max_unfinished_tasks` are in the system, the head stops reading
// from clients (their bounded send queues then make submitters wait); it also stops reading from a
// client that is not reading its results.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <set>

#include "corral/base/ids.h"
#include "corral/head/cluster_ca.h"
#include "corral/head/durable_queue.h"
#include "corral/head/loop_lag.h"
#include "corral/head/node_book.h"
#include "corral/head/node_registry.h"
#include "corral/head/task_manager.h"
#include "corral/head/token_store.h"
#include "corral/net/listener.h"

namespace corral::head {

class MetricsText;

struct HeadOptions {
  net::Endpoint listen;
  std::string token;                 // the built-in admin token
  std::string tokens_path;           // the other tokens (tokens.json); empty: none can be made
  std::string nodes_path;            // what is kept about nodes (nodes.json, see NodeBook); empty: not kept
  // Issues node certificates (joins, renewals) and rotates the head's; null: nodes cannot join with
  // a certificate. With `tls`, the head serves ca->server_context() (a certificate rotation
  // replaces it).
  std::shared_ptr<ClusterCa> ca;
  // How long a node's workers' credential is valid; a fresh one goes to the agent at half of it.
  std::chrono::seconds worker_credential_ttl{86400};
  LivenessConfig liveness;
  TaskManagerOptions tasks;
  size_t max_unfinished_tasks = 2'000'000;
  std::chrono::milliseconds handshake_timeout{10000};  // a peer must finish the handshake by then
  // Connections that have not finished the handshake: at most this many in all and from one
  // address; more are closed at once. Until the handshake a frame may carry at most
  // `handshake_frame_bytes`, so unauthenticated peers hold at most about
  // max_unauthenticated x handshake_frame_bytes of the head's memory.
  size_t max_unauthenticated = 256;
  size_t max_unauthenticated_per_address = 32;
  size_t handshake_frame_bytes = 64u << 10;
  std::shared_ptr<boost::asio::ssl::context> tls;  // null: plain TCP
  std::string store_path;            // the durable store (SQLite); empty: in memory, lost with the head
  int64_t result_ttl_s = 7 * 86400;  // finished durable tasks are kept this long
  bool strict_task_names = false;    // refuse durable tasks whose function no worker registered
};

class HeadServer {
 public:
  HeadServer(boost::asio::io_context& io, HeadOptions options, const Clock& clock = SystemClock());
  ~HeadServer();

  Status Start();
  void Stop();
  const net::Endpoint& endpoint() const { return listener_->endpoint(); }
  // Serves a connection that did not come through the listener (an in-process agent). io thread.
  void Adopt(std::unique_ptr<net::ByteStream> stream) { OnAccept(std::move(stream)); }
  // `count_tasks`: tasks_by_state, a walk of the whole task table (the dashboard's snapshot, once a
  // second, counts what it shows another way).
  proto::ClusterStatus BuildStatus(bool count_tasks = true);
  // Tells the node's agent to drain. NOT_FOUND: no live node matches; FAILED_PRECONDITION: it
  // is ambiguous or not connected.
  Status Drain(const proto::DrainRequest& request);
  DurableQueue& durable() { return *durable_; }  // after Start()
  TokenStore& tokens() { return *tokens_; }       // after Start()
  // Who presents `token` now: the token store's answer, also refusing the workers of revoked
  // nodes. For every way in (TCP and HTTP).
  Result<TokenInfo> Authenticate(std::string_view token);
  // The node a worker credential belongs to ("" for any other token).
  static std::string WorkerNode(const TokenInfo& token);
  // Revokes the token named `name`; every connection that presented it is closed at once.
  Result<TokenInfo> RevokeToken(const std::string& name);
  const Clock& clock() const { return clock_; }
  const std::string& session_id() const { return session_id_; }
  // Output of a recent task (by the id a user gives: TaskJournal::Resolve) from `offset` bytes on,
  // read from the log files of the node that ran it (head_server_logs.cc). `done` once, maybe later.
  void ReadTaskLog(const std::string& task, uint64_t offset, std::function<void(Result<proto::TaskLog>)> done);
  const TaskManager& tasks() const { return tasks_; }
  // The cluster's metrics in Prometheus' text format (head_server_metrics.cc).
  void WriteMetrics(MetricsText& out);

 private:
  struct Peer;
  void OnAccept(std::unique_ptr<net::ByteStream> stream);
  void OnMessage(Peer* peer, std::string_view bytes);
  void OnHello(Peer* peer, const proto::Hello& hello);
  void OnClientMessage(Peer* peer, std::string_view bytes);
  void OnAgentMessage(Peer* peer, std::string_view bytes);
  void OnClose(Peer* peer, const Status& reason);
  void Refuse(Peer* peer, const std::string& why);
  void RefuseToken(Peer* peer);
  void EndHandshake(Peer* peer);  // no longer counted as unauthenticated
  void HandleRequest(Peer* peer, const proto::Request& request);
  void HandleTokenRequest(const proto::TokenRequest& request, proto::Reply* reply);
  void HandleNodeRequest(const proto::NodeRequest& request, proto::Reply* reply);
  void HandleCertsRequest(const proto::CertsRequest& request, proto::Reply* reply);
  // Answers an agent's request for a new certificate (its own is nearing its end).
  void RenewNodeCertificate(Peer* peer, const std::string& request_pem);
  // Whether `hello` may register its node over `peer`, and as whom; on a join, issues the node's
  // certificate into `welcome`. Refuses the peer (and returns false) otherwise.
  bool AdmitAgent(Peer* peer, const proto::Hello& hello, proto::HeadToClient& welcome);
  // Whether `hello` asks for a certificate for the key its node joined with (a lost Welcome).
  bool JoinedWithKey(const proto::Hello& hello) const;
  // The peer's token lacks the role `message` needs: it is told so (and nothing is done).
  void Deny(Peer* peer, const proto::ClientToHead& message, std::optional<Role> need);
  // Closes connections whose token was revoked or has expired.
  void CloseDeadTokens();
  // Agents close these clients' direct-call connections and refuse them from then on.
  void DropCallers(const std::vector<std::string>& client_ids);
  void TellDroppedCallers(net::Connection& agent);  // all of them, to an agent that registered
  std::set<std::string> dropped_callers_;           // this head run's, at most kDroppedCallersKept
  static constexpr size_t kDroppedCallersKept = 4096;
  // Whether a route may go to `client_id` under `token_id`, recorded if so. A ticket and the
  // connection it opens outlive the client's session here, so a token revoked or expired drops
  // every client routed under it, gone or not. Tokens that never end (admin, node certificates)
  // are not recorded; past kRoutedPerToken clients a token gets no more routes (its clients' calls
  // go through the head): none of its clients is ever forgotten.
  bool RememberRouted(const std::string& token_id, const std::string& client_id);
  std::vector<std::string> ForgetRouted(const std::string& token_id);  // that token's, now dropped
  std::unordered_map<std::string, std::unordered_set<std::string>> routed_;  // token id -> client ids
  std::set<std::string> routed_full_;  // tokens at kRoutedPerToken (warned of once)
  static constexpr size_t kRoutedPerToken = 65536;
  void OnAgentHello(Peer* peer, const proto::Hello& hello, proto::HeadToClient& welcome);
  void OnClientHello(Peer* peer, const proto::Hello& hello, proto::HeadToClient& welcome);
  // The client's connection is gone: forget it now (goodbye) or after the grace.
  void DetachClient(Peer* peer, bool goodbye);
  // One of `node`'s worker processes ended: the client sessions it opened end as on goodbye, once
  // their connection has closed (at once for those already away).
  void EndWorkerSessions(Node* node, int64_t pid);
  // A reader not on a node holding a stored object asks for its bytes part by part; the head asks a
  // node that holds it and relays the answer (head_server_objects.cc).
  void FetchObject(Peer* peer, const proto::Request& request);
  void OnObjectChunk(Peer* peer, proto::ObjectChunk&& chunk);
  // A reader needs a stored value on its node: that node's agent pulls it from a holder's agent
  // (head_server_objects.cc). One pull per node and value; later readers wait for the same one.
  void PullToNode(Peer* peer, const proto::Request& request);
  void OnObjectPulled(Peer* peer, const proto::ObjectPulled& pulled);
  // The node's connection closed: its unanswered reads and the pulls it was doing fail.
  void FailReadsFrom(const std::string& node_id, const std::string& why);
  void OnTaskLog(Peer* peer, proto::TaskLog&& log);
  void FailLogReadsFrom(const std::string& node_id, const std::string& why);
  void ScheduleSoon();
  void Tick();
  void UpdateBackpressure();

  boost::asio::io_context& io_;
  HeadOptions options_;
  const Clock& clock_;
  std::string session_id_;
  std::unique_ptr<net::Listener> listener_;
  NodeRegistry nodes_;
  TaskManager tasks_;
  std::unique_ptr<DurableQueue> durable_;
  std::optional<TokenStore> tokens_;
  int64_t messages_denied_ = 0;  // a token's role was not enough
  std::optional<NodeBook> book_;  // caps, revoked ids, joined ids (nodes.json)
  Nanos tokens_checked_ = 0;
  std::unordered_map<Peer*, std::unique_ptr<Peer>> peers_;
  size_t unauthenticated_ = 0;
  std::unordered_map<std::string, size_t> unauthenticated_by_address_;
  int64_t unauthenticated_refused_ = 0;
  struct Detached {
    std::shared_ptr<ClientSession> session;
    Nanos since = 0;
  };
  std::unordered_map<std::string, Detached> detached_;  // by client id
  struct PendingRead {
    std::weak_ptr<net::Connection> reader;
    uint64_t request_id = 0;  // the reader's
    std::string node;         // asked
    std::string object;
    uint32_t attempt = 0;
  };
  std::unordered_map<uint64_t, PendingRead> pending_reads_;  // by the head's request id
  uint64_t next_read_ = 0;
  struct PendingPull {
    std::string node;  // pulling
    std::string object;
    uint32_t attempt = 0;
    std::vector<std::pair<std::weak_ptr<net::Connection>, uint64_t>> readers;  // and their request ids
  };
  std::unordered_map<uint64_t, PendingPull> pending_pulls_;          // by the head's request id
  std::map<std::pair<std::string, std::string>, uint64_t> pulling_;  // (node, object) -> request id
  struct PendingLog {
    std::string node;  // asked
    std::string task;
    std::function<void(Result<proto::TaskLog>)> done;
  };
  std::unordered_map<uint64_t, PendingLog> pending_logs_;  // by the head's request id (next_read_)
  const std::string peer_secret_ = RandomBytes(32);  // Welcome.peer_secret
  boost::asio::steady_timer tick_;
  LoopLag loop_lag_{io_};
  bool schedule_posted_ = false;
  bool clients_paused_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
