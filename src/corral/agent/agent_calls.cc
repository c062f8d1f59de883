// The direct call path: a caller sends an actor's calls straight to the agent running the actor,
// and gets the results from it, so a call crosses caller -> agent -> worker -> agent -> caller and
// the head is off its path. The caller still submits each call to the head (TaskSpec.direct_node),
// which records it as running here without sending it, and this agent reports each end to the head
// as for any call: the head keeps everything it keeps for a call (ownership of the result, retries
// and restarts, cancel, the actor's collection) off the path of the call itself.
//
// Who may connect: a caller presenting the ticket the head gave it for one actor (ActorRoute), an
// HMAC of the actor and caller ids under the cluster's peer secret. One connection carries one
// caller's calls to one actor; each call must be that actor's and carry an id of that caller's.
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>

#include "corral/agent/agent.h"
#include "corral/agent/agent_worker.h"
#include "corral/base/hop_trace.h"
#include "corral/base/host_key.h"
#include "corral/base/log.h"
#include "corral/base/version.h"
#include "corral/client.pb.h"
#include "corral/net/fd_passing.h"
#include "corral/net/frame.h"
#include "corral/net/pki.h"

namespace corral::agent {
namespace {

constexpr size_t kMaxCallers = 4096;          // connected callers, greeted or not
constexpr size_t kMaxGreeting = 64;           // connected callers that have not sent a valid hello
constexpr size_t kHelloFrameBytes = 4 << 10;  // until the hello checks out
constexpr size_t kCallsRefusedKept = 65536;
constexpr int64_t kChannelRefusalKeepNs = 600'000'000'000;  // a refused call that never came: forgotten after

std::string AttemptKey(const std::string& task_id, uint32_t attempt) {
  std::string key = task_id;
  key.append(reinterpret_cast<const char*>(&attempt), sizeof attempt);
  return key;
}

}  // namespace

void Agent::ServeCalls(const std::string& local_ip) {
  // On loopback calls travel in clear, as the cluster's own connections do there; elsewhere (a
  // head off loopback makes a TLS cluster) in TLS 1.3 keyed by the caller's ticket (decision 38).
  std::string host = options_.serve_objects_on.empty() ? local_ip : options_.serve_objects_on;
  if (host.empty()) return;
  if (!call_listener_ || call_host_ != host) {
    call_listener_.reset();
    std::shared_ptr<boost::asio::ssl::context> tls;
    if (!net::Endpoint{host, 0, ""}.is_loopback()) {
      tls = net::MakePskServerContext([this](const std::string& identity) {
        return net::CallPskKey(peer_secret_, identity);
      });
      call_tls_.push_back(tls);  // kept: a handshake under way on a replaced listener still reads it
    }
    auto l = net::Listener::Listen(io_, net::Endpoint{host, 0, ""}, tls);
    if (!l) {
      LOG_WARN("cannot take actor calls straight from callers on {}: {}; they go through the head", host,
               l.error().message());
      info_.clear_call_address();
      return;
    }
    call_listener_ = std::move(*l);
    call_host_ = host;
    if (tls) {  // a caller in clear is told why, in a message it can read
      proto::AgentToCaller refusal;
      refusal.set_refused("this agent takes actor calls in TLS only (keyed by the head's ticket): use a Corral "
                          "client of the same version");
      net::FrameBuilder frame;
      frame.AppendMessage(refusal.SerializeAsString());
      call_listener_->AllowPlaintext([](const boost::asio::ip::address&) { return false; }, frame.Take());
    }
    call_listener_->Start([this](std::unique_ptr<net::ByteStream> s) { OnCallerAccepted(std::move(s), false); });
  }
  ServeCallsOnThisMachine();
  uint16_t port = call_listener_->endpoint().port;
  // The agent inside the head is found at the head's host, as callers dial it.
  info_.set_call_address(options_.serve_objects_on.empty() ? net::Endpoint{host, port, ""}.ToString()
                                                           : fmt::format(":{}", port));
}

void Agent::ServeCallsOnThisMachine() {
  // A Unix socket in the state directory (mode 0700; the socket itself 0600): callers on this
  // machine, as the same user, skip loopback TCP (a send costs about half). They present the same
  // ticket; the kernel keeps others out.
  if (call_socket_) return;
  std::string path = options_.state_dir + "/calls.sock";
  auto ep = net::ParseEndpoint("unix:" + path);
  std::string key = HostKey();
  if (!ep || key.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) return;
  auto l = net::Listener::Listen(io_, *ep);
  if (!l) {
    LOG_WARN("callers on this machine use the TCP call port: cannot listen on {}: {}", path, l.error().message());
    return;
  }
  ::chmod(path.c_str(), 0600);
  call_socket_ = std::move(*l);
  call_socket_->Start([this](std::unique_ptr<net::ByteStream> s) {
    counters_["callers_on_socket"]++;
    OnCallerAccepted(std::move(s), /*local=*/true);
  });
  info_.set_call_socket("unix:" + path);
  info_.set_host_key(key);
}

void Agent::OnCallerAccepted(std::unique_ptr<net::ByteStream> stream, bool local) {
  if (callers_.size() >= kMaxCallers || callers_greeting_ >= kMaxGreeting || stopped_) {
    counters_["callers_refused_busy"]++;
    stream->Close();
    return;
  }
  auto owned = std::make_unique<Caller>();
  Caller* c = owned.get();
  c->local = local;
  net::ConnectionOptions copts;
  copts.handshake_timeout = std::chrono::seconds(10);
  copts.max_handshake_frame_bytes = kHelloFrameBytes;
  copts.max_queued_bytes = 256u << 20;  // a caller that stops reading its results is dropped
  c->conn = net::Connection::Create(std::move(stream), copts);
  callers_.emplace(c, std::move(owned));
  callers_greeting_++;
  c->conn->Start([this, c](std::string_view m) { OnCallerMessage(c, m); },
                 [this, c, alive = alive_](const Status&) {
                   if (!*alive) return;
                   auto it = callers_.find(c);
                   if (it == callers_.end()) return;
                   if (!c->greeted) callers_greeting_--;
                   TakeBackResults(*c);
                   callers_.erase(it);  // its calls run on; their results go to the head alone
                 });
}

void Agent::OnCallerMessage(Caller* c, std::string_view bytes) {
  proto::CallerToAgent msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    c->conn->Close(Status(Code::kInvalidArgument, "malformed message from a caller"));
    return;
  }
  if (!c->greeted) {
    const proto::CallHello& h = msg.hello();
    std::string expected = peer_secret_.empty() ? "" : net::CallTicket(peer_secret_, h.actor_id(), h.client_id());
    std::string why;
    if (!msg.has_hello())
      why = "the first message must be a hello";
    else if (h.protocol_version() != kProtocolVersion)
      why = fmt::format("protocol version {} (this agent speaks {})", h.protocol_version(), kProtocolVersion);
    else if (expected.empty() || h.ticket().size() != expected.size() ||
             CRYPTO_memcmp(h.ticket().data(), expected.data(), expected.size()) != 0)
      why = "its ticket is not one the head gave for this actor (ask the head for a route again)";
    else if (callers_dropped_.contains(h.client_id()))
      why = "its token was revoked or expired";
    else if (!registered_)
      why = "this agent is away from the head";
    else if (auto w = actor_workers_.find(h.actor_id()); w == actor_workers_.end() || w->second->retired)
      why = "the actor does not run here (ask the head for a route again)";
    if (!why.empty()) {
      counters_["callers_refused"]++;
      proto::AgentToCaller refused;
      refused.set_refused(why);
      c->conn->Send(refused);
      c->conn->Close(Status(Code::kPermissionDenied, why));
      return;
    }
    c->greeted = true;
    c->greeted_seq = ++callers_greeted_;
    callers_greeting_--;
    c->actor_id = h.actor_id();
    c->client_id = h.client_id();
    if (h.results()) {  // (not from inside its connection's own read: handing it over closes it)
      c->results = true;
      boost::asio::post(io_, [this, c, conn = std::weak_ptr<net::Connection>(c->conn), alive = alive_] {
        if (!*alive) return;
        auto it = callers_.find(c);
        if (it != callers_.end() && it->second->conn == conn.lock()) HandOverResults(c);
      });
      return;
    }
    c->conn->MarkHandshakeDone();
    counters_["callers_connected"]++;
    proto::AgentToCaller welcome;
    welcome.set_welcome(true);
    c->conn->Send(welcome);
    return;
  }
  if (!msg.has_call() || c->results) return;  // (nothing but its hello comes on a result channel)
  hop_trace::Mark(hop_trace::kAgentGotCall);
  const proto::TaskSpec& spec = msg.call().spec();
  // Only this actor's calls, under this caller's ids (a caller names its tasks by its own id), a
  // first attempt (the head sends retries), and arguments inline (a stored one is read by the
  // head's leave, which this agent cannot check).
  bool stored = std::any_of(msg.call().deps().begin(), msg.call().deps().end(),
                            [](const proto::ObjectValue& v) { return v.stored_size() > 0; });
  if (spec.actor_id() != c->actor_id || spec.has_actor() || spec.task_id() == spec.actor_id() ||
      !spec.task_id().starts_with(c->client_id) || spec.task_id().size() <= c->client_id.size() ||
      spec.attempt() != 0 || stored) {
    c->conn->Close(Status(Code::kPermissionDenied, "a call this caller may not send here"));
    return;
  }
  // Not while the head cannot hear of it: the head sends it once this node is back. (Past the
  // lease, the fence has stopped the actor's worker, unless it keeps running on a partition.)
  if (!registered_) {
    Abandon(c->conn, spec.task_id());
    counters_["actor_calls_direct_abandoned"]++;
    ReportEnded(spec.task_id(), spec.attempt(), proto::HANDED_BACK,
                fmt::format("node {} ({}) is away from the head", ShortHex(options_.node_id), options_.hostname),
                /*direct=*/true);
    return;
  }
  if (calls_refused_.contains(AttemptKey(spec.task_id(), spec.attempt()))) {
    Abandon(c->conn, spec.task_id());  // the head was told it never came, and sends it itself
    return;
  }
  counters_["actor_calls_direct"]++;
  msg.mutable_call()->set_result_channel(c->result_channel);  // (whatever the caller put there)
  OnActorCall(std::move(*msg.mutable_call()), c->conn);
}

void Agent::HandOverResults(Caller* channel) {
  // The caller's call connection to the same actor, without a channel yet; the actor's worker.
  Caller* calls = nullptr;
  for (const auto& [p, c] : callers_)
    if (c->greeted && !c->results && c->result_channel == 0 && !c->conn->closed() &&
        c->actor_id == channel->actor_id && c->client_id == channel->client_id &&
        (!calls || c->greeted_seq > calls->greeted_seq))  // (the newest)
      calls = c.get();
  auto it = actor_workers_.find(channel->actor_id);
  Worker* w = it == actor_workers_.end() ? nullptr : it->second;
  // Only on this machine's Unix socket: the worker writes in clear, and only a local hop is shorter.
  if (!channel->local || !calls || !w || w->results_fd < 0 || w->retired || !w->conn) {
    counters_["result_channels_refused"]++;
    proto::AgentToCaller refused;  // (its results come on its call connection, as they always could)
    refused.set_refused("no call connection of this caller's, or the actor's worker takes no result channel");
    channel->conn->Send(refused);
    channel->conn->CloseAfterFlush(Status(Code::kFailedPrecondition, "no result channel"));
    return;
  }
  // With the first channel, the table of calls the worker takes from its callers (decision 50); a
  // worker without one writes results only (its callers then send calls here).
  if (!w->call_table) {
    int table_fd = -1;
    if (auto t = CallTable::Create(&table_fd); t && net::SendTaggedFd(w->results_fd, CallTable::kHandOverTag, table_fd)) {
      w->call_table = std::make_unique<CallTable>(std::move(*t));
    } else if (!t) {
      LOG_WARN("actor calls from this machine go through the agent: {}", t.error().message());
    }
    if (table_fd >= 0) ::close(table_fd);
  }
  // From here the worker alone writes on it; this agent lets go of it (`channel` is erased).
  int fd = channel->conn->CloseAndTakeFd(Status::Ok());
  uint64_t n = ++result_channels_;
  bool sent = fd >= 0 && net::SendTaggedFd(w->results_fd, n, fd, channel->client_id);
  if (fd >= 0) ::close(fd);  // (the worker has its own; if it did not go, the caller sees it close)
  if (!sent) {
    counters_["result_channels_refused"]++;
    return;
  }
  counters_["result_channels"]++;
  calls->result_channel = n;
  w->result_channels[n] = calls->client_id;
  w->channel_clients.insert(calls->client_id);
}

void Agent::TakeBackResults(const Caller& c) {
  if (c.result_channel == 0) return;
  auto it = actor_workers_.find(c.actor_id);
  if (it == actor_workers_.end() || !it->second->result_channels.erase(c.result_channel)) return;
  net::SendTaggedFd(it->second->results_fd, c.result_channel, -1);  // (not sent: it goes with the worker)
}

bool Agent::HeldOnChannel(const std::string& task_id) {
  // A call its caller sent on a call channel: the worker took it (its end comes) or, refused in
  // the table now, never will. Asked of every worker its caller had a channel to (the id names the
  // caller, not the actor).
  bool held = false;
  for (Worker* w : ChannelWorkersOf(task_id))
    if (!held) held = w->call_table->Refuse(task_id, SystemClock().BootTimeNs(), kChannelRefusalKeepNs);
  return held;
}

std::vector<Agent::Worker*> Agent::ChannelWorkersOf(const std::string& task_id) {
  std::vector<Worker*> out;
  for (const auto& [actor, w] : actor_workers_)
    if (w->call_table && std::any_of(w->channel_clients.begin(), w->channel_clients.end(),
                                     [&](const std::string& c) { return task_id.starts_with(c); }))
      out.push_back(w);
  return out;
}

void Agent::RefuseFromNowOn(const std::string& task_id, uint32_t attempt) {
  std::string key = AttemptKey(task_id, attempt);
  if (calls_refused_.insert(key).second) calls_refused_order_.push_back(std::move(key));
  while (calls_refused_order_.size() > kCallsRefusedKept) {
    calls_refused_.erase(calls_refused_order_.front());
    calls_refused_order_.pop_front();
  }
}

void Agent::OnProbeCalls(const proto::DirectCalls& probe) {
  proto::AgentToHead answer;
  proto::DirectCalls* not_held = answer.mutable_calls_not_held();
  for (int i = 0; i < probe.task_ids_size() && i < probe.attempts_size(); ++i) {
    const std::string& id = probe.task_ids(i);
    bool held = false;
    for (const auto& [actor, w] : actor_workers_)
      if (auto call = w->actor_calls.find(id); call != w->actor_calls.end() && call->second.attempt == probe.attempts(i))
        held = true;
    if (held || (probe.attempts(i) == 0 && HeldOnChannel(id))) continue;
    // Not here now: it ended (its report went before this answer) or never came. Either way it is
    // refused from now on, so the head may send it itself.
    RefuseFromNowOn(id, probe.attempts(i));
    not_held->add_task_ids(id);
    not_held->add_attempts(probe.attempts(i));
  }
  SendToHead(answer);
}

void Agent::CloseCallers(const Status& why, const std::function<bool(const Caller&)>& which) {
  std::vector<std::shared_ptr<net::Connection>> closing;  // (closing one erases it from callers_)
  for (auto& [c, caller] : callers_)
    if (!which || which(*caller)) closing.push_back(caller->conn);
  for (auto& conn : closing) conn->CloseAfterFlush(why);  // (what was sent to it first: results, abandons)
}

void Agent::OnDropCallers(const proto::DropCallers& drop) {
  std::set<std::string> ids(drop.client_ids().begin(), drop.client_ids().end());
  for (const auto& id : ids) {
    counters_["callers_dropped"]++;
    if (callers_dropped_.size() < kCallsRefusedKept) callers_dropped_.insert(id);
  }
  CloseCallers(Status(Code::kPermissionDenied, "its token was revoked or expired"),
               [&](const Caller& c) { return ids.contains(c.client_id); });
}

void Agent::Abandon(const std::weak_ptr<net::Connection>& caller, const std::string& task_id) {
  if (auto conn = caller.lock()) {
    proto::AgentToCaller msg;
    msg.set_abandoned(task_id);
    conn->Send(msg);
  }
}

}  // namespace corral::agent
