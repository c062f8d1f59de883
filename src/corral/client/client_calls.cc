// The direct call path, the caller's side: an actor's calls go straight to the agent running it
// (asked of the head once, with a ticket for that agent), results come back from it, and the head
// is sent each call too, off the path, to keep its records (see agent/agent_calls.cc).
//
// Order: calls from this client to one actor leave in submission order on one connection, or all
// through the head; a call goes direct only while none of its earlier calls waits at the head (nor
// was handed to it), and only with every argument's value here (else it waits at the head for them).
// A connection that breaks with calls unanswered: the head is told (DirectLost), asks the agent
// which never came and sends those itself; the client subscribes to all of them at the head.
// Waiting: a get or wait whose missing results all come from one agent reads that connection on
// its own thread (WaitFor, ReadWatcher).
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "corral/base/hop_trace.h"
#include "corral/base/host_key.h"
#include "corral/base/log.h"
#include "corral/base/version.h"
#include "corral/client/client.h"
#include "corral/net/pki.h"
#include "corral/net/stream.h"

namespace corral::client {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
constexpr auto kRouteRetry = std::chrono::seconds(30);  // how soon to ask again where there was no way
constexpr auto kFirstRouteBackoff = std::chrono::seconds(2);  // ...where the agent did not take us: then doubled
constexpr size_t kMaxRouters = 4;  // router threads per client
constexpr auto kDialTimeout = std::chrono::seconds(2);
constexpr auto kRouteWait = std::chrono::milliseconds(50);  // a submission waits for a route it asked for
constexpr size_t kMaxIdleConnections = 64;  // to agents, kept for actors with no call under way

}  // namespace

std::shared_ptr<net::Connection> Client::DirectRoute(const std::string& actor_id, const std::vector<std::string>& deps,
                                                     std::string* node, std::vector<ObjectPtr>* dep_values) {
  std::unique_lock lock(mu_);
  if (closed_ || reconnecting_) return nullptr;
  DirectActor& d = direct_[actor_id];
  // No connection yet: asked for on a router thread, waited for a moment (a route and a dial
  // take a round trip to the head and one to the agent), and past that moment this call goes
  // through the head: an agent that does not answer (a laptop asleep) holds no submission up.
  if (!d.conn && !d.routing && Clock::now() >= d.next_route) {
    d.routing = true;
    to_route_.push_back(actor_id);
    if (routers_idle_ < to_route_.size() && router_threads_.size() < kMaxRouters)
      router_threads_.emplace_back([this] { RouteLoop(); });
    route_cv_.notify_one();
    if (d.via_head == 0)  // (else this call goes through the head whatever the route)
      cv_.wait_until(lock, Clock::now() + kRouteWait, [&] { return !direct_[actor_id].routing || closed_; });
  }
  DirectActor& now = direct_[actor_id];  // (d may be gone: the lock was let go while waiting)
  if (closed_ || !now.conn || now.via_head > 0) return nullptr;  // (calls at the head: this one queues behind them)
  // Calls on a call channel that closed, not yet handed back: sent to the agent, this one could
  // reach the worker before them; through the head it waits for them.
  if (!now.on_channel.empty() && !now.CallsOnChannel()) return nullptr;
  for (const auto& dep : deps) {  // values at hand, inline (a stored one goes by the head's leave)
    auto v = ready_.find(dep);
    if (v == ready_.end() || v->second->error() != proto::ERROR_NONE || v->second->stored_size() > 0) return nullptr;
    dep_values->push_back(v->second);
  }
  *node = now.node;
  return now.conn;
}

void Client::RouteLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    routers_idle_++;
    route_cv_.wait(lock, [&] { return !to_route_.empty() || shutting_down_; });
    routers_idle_--;
    if (shutting_down_) return;
    std::string actor_id = std::move(to_route_.front());
    to_route_.pop_front();
    lock.unlock();
    Route(actor_id);
    lock.lock();
  }
}

void Client::Route(const std::string& actor_id) {
  // (A client reconnecting to the head: Request waits for that first.)
  proto::Request request;
  request.mutable_actor()->set_op(proto::ActorRequest::ROUTE);
  request.mutable_actor()->set_actor_id(actor_id);
  auto reply = Request(std::move(request), 5.0);
  uint64_t epoch;
  {
    std::lock_guard lock(mu_);
    epoch = route_epoch_;  // (a route from a head that restarted since: its agents refuse its ticket)
  }
  std::shared_ptr<net::Connection> conn, results;
  Clock::time_point next_route{};  // (when none is made)
  bool dial_failed = false;
  if (!reply || reply->route().node_id().empty()) {
    // Not ready yet: asked again once a call through the head has returned (OnValueLocked). No
    // route there (a TLS cluster, a head without routes): asked again much later.
    bool pending = reply && reply->route().pending();
    next_route = pending ? Clock::time_point::max() : Clock::now() + kRouteRetry;
  } else if (conn = DialAgent(actor_id, reply->route(), &results); !conn) {
    dial_failed = true;  // (unreachable from here, or asleep: through the head for a while)
  }
  std::vector<std::shared_ptr<net::Connection>> idle;  // closed outside mu_ (their handlers take it)
  {
    std::lock_guard lock(mu_);
    DirectActor& d = direct_[actor_id];
    d.routing = false;
    cv_.notify_all();  // (a submission waiting for this route)
    if (dial_failed) {
      // A laptop that slept answers again soon after it wakes: 2, 4, 8 ... 30 s between tries.
      d.route_backoff = std::min(kRouteRetry, d.route_backoff.count() == 0 ? kFirstRouteBackoff : 2 * d.route_backoff);
      d.next_route = Clock::now() + d.route_backoff;
    } else if (!conn) {
      d.next_route = next_route;
    } else if (conn->closed() || epoch != route_epoch_) {  // (closed before it was ours; or the head restarted since)
      idle.push_back(std::move(conn));
      if (results) idle.push_back(std::move(results));
    } else {
      d.conn = conn;
      d.results = results;
      d.node = reply->route().node_id();
      d.route_backoff = std::chrono::seconds(0);
      direct_moves_++;
    }
    if (direct_.size() > kMaxIdleConnections) {  // a driver that called many actors: forget the idle ones
      for (auto it = direct_.begin(); it != direct_.end();) {
        if (it->first != actor_id && it->second.sent.empty() && it->second.via_head == 0 && !it->second.routing) {
          if (it->second.conn) idle.push_back(std::move(it->second.conn));
          if (it->second.results) idle.push_back(std::move(it->second.results));
          it = direct_.erase(it);
        } else {
          ++it;
        }
      }
    }
  }
  for (auto& c : idle)
    asio::post(io_->io(), [c] { c->Close(Status(Code::kCancelled, "idle")); });
}

std::shared_ptr<net::Connection> Client::DialAgent(const std::string& actor_id, const proto::ActorRoute& route,
                                                   std::shared_ptr<net::Connection>* results) {
  // ":port" is the agent inside the head process: found at the head's host.
  bool at_head = route.address().starts_with(':');
  auto ep = net::ParseEndpoint(at_head ? "head" + route.address() : route.address());
  if (!ep) return nullptr;
  if (at_head) ep->host = options_.head.host;
  // On the agent's machine (and network and mount namespaces) its Unix socket, in clear: the
  // kernel keeps other users out, and a send costs about half of one on loopback TCP. Its call
  // port only if that socket cannot be reached, is not our user's, or the agent refuses us there
  // (not after a greeting that never came: that agent is not answering).
  static const std::string host_key = HostKey();
  if (options_.call_socket && !route.socket().empty() && !host_key.empty() && route.host_key() == host_key) {
    if (auto local = net::ParseEndpoint(route.socket()); local && local->is_unix()) {
      bool try_port = false;
      if (auto c = DialAgentAt(actor_id, route, *local, nullptr, &try_port)) {
        if (options_.result_channel) *results = DialAgentAt(actor_id, route, *local, nullptr, nullptr, true);
        return c;
      }
      if (!try_port) return nullptr;
    }
  }
  // Off loopback the agent speaks TLS keyed by our ticket (no certificates: decision 38).
  std::shared_ptr<boost::asio::ssl::context> tls;
  if (!ep->is_loopback()) tls = net::MakePskClientContext(net::CallPskIdentity(actor_id, client_id_), route.ticket());
  return DialAgentAt(actor_id, route, *ep, std::move(tls), nullptr);
}

namespace {

// Whether the process at the other end of a Unix socket runs as our user: the ticket goes only to
// it (a path on this machine is only as trustworthy as whoever could create it).
bool PeerIsOurUser(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  return fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid();
}

}  // namespace

std::shared_ptr<net::Connection> Client::DialAgentAt(const std::string& actor_id, const proto::ActorRoute& route,
                                                     const net::Endpoint& ep,
                                                     std::shared_ptr<boost::asio::ssl::context> tls,
                                                     bool* unreachable, bool results) {
  if (unreachable) *unreachable = true;
  std::unique_ptr<net::ByteStream> stream;
  bool dialed = false;
  net::Dial(io_->io(), ep, tls, kDialTimeout, [&](Result<std::unique_ptr<net::ByteStream>> r) {
    std::lock_guard lock(mu_);
    if (r) stream = std::move(*r);
    dialed = true;
    cv_.notify_all();
  });
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return dialed; });
  }
  if (!stream) return nullptr;
  net::ConnectionOptions copts;
  copts.direct_writes = true;
  copts.handshake_timeout = std::chrono::milliseconds(0);  // the greeting is bounded below (kDialTimeout)
  copts.owner_reads = true;  // a thread waiting for a result reads it (ReadWatcher); not in TLS
  auto c = net::Connection::Create(std::move(stream), copts);
  if (ep.is_unix()) {
    bool ours = false;
    if (!c->WithReadFd([&](int fd) { ours = PeerIsOurUser(fd); }) || !ours) {
      LOG_WARN("{} is not a socket of this user's; actor calls go to the agent's TCP port", ep.ToString());
      c->Close(Status(Code::kPermissionDenied, "not our user's socket"));
      return nullptr;
    }
  }
  auto greeted = std::make_shared<std::optional<bool>>();
  asio::post(io_->io(), [this, c, actor_id, greeted, results] {
    net::Connection* raw = c.get();
    if (results) {
      c->Start([this, raw, actor_id, self = std::weak_ptr<net::Connection>(c)](std::string_view m) {
                 OnAgentMessage(raw, actor_id, nullptr, &self, m);
               },
               [this, raw, actor_id](const Status&) { OnResultsClose(raw, actor_id); });
      if (!reads_->Watch(c)) c->Close(Status(Code::kUnavailable, "cannot watch the result channel"));
      return;
    }
    c->Start([this, raw, actor_id, greeted](std::string_view m) { OnAgentMessage(raw, actor_id, greeted.get(), nullptr, m); },
             [this, raw, actor_id, greeted](const Status&) {
               {
                 std::lock_guard lock(mu_);
                 if (!greeted->has_value()) *greeted = false;
                 cv_.notify_all();
               }
               OnAgentClose(raw, actor_id);
             });
    if (c->owner_reads() && !reads_->Watch(c))  // (nothing would read it: through the head instead)
      c->Close(Status(Code::kUnavailable, "cannot watch the connection to the actor's agent"));
  });
  proto::CallerToAgent hello;
  proto::CallHello* h = hello.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_actor_id(actor_id);
  h->set_client_id(client_id_);
  h->set_ticket(route.ticket());
  h->set_results(results);
  c->Send(hello);
  if (results) return c;  // (no greeting: results may come on it from now on)
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, Clock::now() + kDialTimeout, [&] { return greeted->has_value() || shutting_down_; });
  if (greeted->value_or(false)) return c;
  if (unreachable) *unreachable = greeted->has_value() && !shutting_down_;  // refused: try another way
  lock.unlock();
  c->Close(Status(Code::kPermissionDenied, "the actor's agent did not take this caller"));
  return nullptr;
}

void Client::SendDirect(const std::string& actor_id, const std::string& id, net::Connection* agent,
                        const proto::CallerToAgent& call, net::Urgency urgency) {
  // (A call lost here is told to the head once the head has its record: SendTask.)
  std::shared_ptr<net::Connection> channel;
  {
    std::lock_guard lock(mu_);
    DirectActor& d = direct_[actor_id];
    if (ready_.contains(id)) return;  // the head refused it already
    if (d.conn.get() != agent) {  // that connection closed since DirectRoute
      lost_direct_.push_back(id);
      return;
    }
    // To the worker itself once it welcomed us, while no call of ours is on its way through the
    // agent (the two would race); from then on there while the channel lasts.
    if (d.CallsOnChannel() && options_.call_channel && d.on_channel.size() == d.sent.size()) {
      channel = d.results;
      d.on_channel.insert(id);
    }
    d.via_head--;
    d.sent.insert(id);
  }
  hop_trace::Mark(hop_trace::kCallerWrites);
  if (channel ? channel->Send(call, urgency) : agent->Send(call, urgency)) return;
  std::lock_guard lock(mu_);
  auto d = direct_.find(actor_id);
  if (d != direct_.end() && d->second.HandBack(id)) {  // (else OnAgentClose took it already)
    lost_direct_.push_back(id);
    direct_moves_++;
  }
}

const Client::DirectActor* Client::DirectCallLocked(const std::string& id) const {
  auto call = calls_.find(id);
  if (call == calls_.end()) return nullptr;
  auto d = direct_.find(call->second);
  return d != direct_.end() && d->second.sent.contains(id) ? &d->second : nullptr;
}

std::shared_ptr<net::Connection> Client::DirectReplyLocked(const std::vector<std::string>& ids,
                                                           std::shared_ptr<net::Connection>* results) const {
  std::shared_ptr<net::Connection> agent;
  for (const auto& id : ids) {
    if (ready_.contains(id)) continue;
    const DirectActor* d = DirectCallLocked(id);
    if (!d || !d->conn || !d->conn->owner_reads() || (agent && agent != d->conn)) return nullptr;
    agent = d->conn;
    *results = d->results;
  }
  return agent;
}

bool Client::WaitFor(std::unique_lock<std::mutex>& lock, const std::vector<std::string>& ids, Clock::time_point deadline,
                     const std::function<bool()>& pred) {
  while (!pred()) {
    std::shared_ptr<net::Connection> results;
    std::shared_ptr<net::Connection> agent = shutting_down_ ? nullptr : DirectReplyLocked(ids, &results);
    if (!agent) break;
    // Every reply still awaited comes from this agent: read them here rather than be woken by the
    // io thread for each.
    uint64_t moves = direct_moves_;  // (read with the route it vouches for)
    lock.unlock();
    auto outcome = reads_->ReadUntil(agent.get(), deadline, [&] {
      std::lock_guard relock(*lock.mutex());
      return pred() || shutting_down_ || direct_moves_ != moves;  // (then it is asked again above)
    }, results.get());
    lock.lock();
    if (outcome == ReadWatcher::Outcome::kTimedOut) return pred();
    if (outcome != ReadWatcher::Outcome::kDone) break;  // kBusy: its reader hands out what comes.
  }                                                    // kClosed: the calls it carried come from the head.
  return cv_.wait_until(lock, deadline, pred);
}

void Client::ForgetDirect() {
  std::vector<std::shared_ptr<net::Connection>> conns;
  {
    std::lock_guard lock(mu_);
    for (auto& [actor, d] : direct_) {
      d.HandBackAll();  // (in the replay)
      direct_moves_++;
      d.next_route = {};
      if (d.conn) conns.push_back(std::move(d.conn));
      if (d.results) conns.push_back(std::move(d.results));
    }
    lost_direct_.clear();  // (the new head knows them from the replay only)
    route_epoch_++;        // (a route asked of the old head is not taken)
  }
  for (auto& c : conns) c->Close(Status(Code::kCancelled, "the head restarted"));
}

void Client::OnAgentMessage(net::Connection* from, const std::string& actor_id, std::optional<bool>* greeted,
                            const std::weak_ptr<net::Connection>* channel,
                            std::string_view bytes) {
  proto::AgentToCaller msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    from->Close(Status(Code::kInvalidArgument, "malformed message from an agent"));
    return;
  }
  if (msg.has_worker_died()) return OnWorkerDied(from, actor_id, msg.worker_died());
  std::lock_guard lock(mu_);
  auto d = direct_.find(actor_id);
  switch (msg.msg_case()) {
    case proto::AgentToCaller::kWelcome:
    case proto::AgentToCaller::kRefused:
      if (channel && msg.has_welcome()) {  // the actor's worker has our result channel: calls may go there
        if (d != direct_.end()) d->second.welcomed_on = *channel;  // (perhaps before Route made it d.results)
        break;
      }
      if (!greeted) {  // a result channel the agent did not take: its results come on the call connection
        from->Close(Status(Code::kFailedPrecondition, "result channel refused: " + msg.refused()));
        break;
      }
      *greeted = msg.has_welcome();
      cv_.notify_all();
      break;
    case proto::AgentToCaller::kFinished: {
      hop_trace::Mark(hop_trace::kCallerGotResult);
      proto::TaskFinished& f = *msg.mutable_finished();
      if (d == direct_.end() || (d->second.conn.get() != from && d->second.results.get() != from) ||
          !d->second.sent.contains(f.task_id()))
        break;
      auto value = std::make_shared<proto::ObjectValue>(std::move(*f.mutable_result()));
      value->set_id(f.task_id());
      if (value->stored_size() > 0) {  // in that node's store, under this attempt (as the head records it)
        value->clear_locations();
        value->add_locations(f.node_id());
        value->set_stored_attempt(f.attempt());
      }
      OnValueLocked(std::move(value));
      break;
    }
    case proto::AgentToCaller::kAbandoned:  // its result will come from the head
      if (d != direct_.end() && d->second.conn.get() == from && d->second.HandBack(msg.abandoned())) {
        direct_moves_++;
        from->Close(Status(Code::kUnavailable, "the agent could not run a call"));  // ask for a route again
      }
      break;
    default: break;
  }
}

void Client::OnWorkerDied(net::Connection* from, const std::string& actor_id, const std::string& why) {
  // Its calls on the call channel without a result died with the worker, read or not (as in Ray,
  // they count as attempts): the head ends them as it ends calls the worker had taken.
  proto::ClientToHead died, subscribe;
  died.mutable_direct_lost()->set_worker_died(why);
  {
    std::lock_guard lock(mu_);
    auto d = direct_.find(actor_id);
    if (d == direct_.end() || d->second.conn.get() != from) return;
    std::vector<std::string> ids(d->second.on_channel.begin(), d->second.on_channel.end());
    for (const auto& id : ids)
      if (d->second.HandBack(id)) {
        died.mutable_direct_lost()->add_task_ids(id);
        subscribe.mutable_subscribe()->add_ids(id);
      }
    if (ids.empty()) return;
    direct_moves_++;
  }
  auto head = conn();
  if (head && head->Send(died) && head->Send(subscribe)) return;
  std::lock_guard lock(mu_);  // (the head cannot hear it now: they go as lost, sent again at no cost)
  for (const auto& id : died.direct_lost().task_ids()) lost_direct_.push_back(id);
}

void Client::OnResultsClose(net::Connection* from, const std::string& actor_id) {
  // (Its worker exited, or the agent refused it: results come on the call connection.) Calls sent
  // on it without a result wait for the call connection's word: the agent closes that too, after
  // saying whether the worker died (kWorkerDied), when the worker exits or drops the channel; the
  // calls are then handed back to the head (OnAgentClose).
  reads_->Forget(from);
  std::lock_guard lock(mu_);
  auto d = direct_.find(actor_id);
  if (d == direct_.end() || d->second.results.get() != from) return;
  d->second.results.reset();
  direct_moves_++;  // (a thread reading it looks again)
}

void Client::OnAgentClose(net::Connection* from, const std::string& actor_id) {
  reads_->Forget(from);
  {
    std::lock_guard lock(mu_);
    auto d = direct_.find(actor_id);
    if (d == direct_.end() || d->second.conn.get() != from) return;
    d->second.conn.reset();
    if (auto results = std::move(d->second.results))  // (it carried this connection's calls)
      asio::post(io_->io(), [results] { results->Close(Status(Code::kCancelled, "its call connection closed")); });
    d->second.next_route = Clock::now();
    direct_moves_++;
    if (d->second.sent.empty()) return;
    std::vector<std::string> lost = d->second.HandBackAll();
    lost_direct_.insert(lost_direct_.end(), lost.begin(), lost.end());
  }
  if (auto head = conn()) SendLostDirect(*head);  // (else Replay sends them)
}

bool Client::SendLostDirect(net::Connection& head) {
  proto::ClientToHead lost, subscribe;
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    ids.swap(lost_direct_);
    // The call being submitted has no record at the head yet: told after it (SendTask).
    if (auto r = std::find(ids.begin(), ids.end(), recording_); !recording_.empty() && r != ids.end()) {
      lost_direct_.push_back(*r);
      ids.erase(r);
    }
  }
  if (ids.empty()) return true;
  for (const auto& id : ids) {
    lost.mutable_direct_lost()->add_task_ids(id);
    subscribe.mutable_subscribe()->add_ids(id);  // (owned: the head pushes an owner its results, but
  }                                              // not a direct call's it knows the agent sent)
  // Queued, not waited for (the io thread may be the caller).
  if (head.Send(lost) && head.Send(subscribe)) return true;
  std::lock_guard lock(mu_);
  lost_direct_.insert(lost_direct_.end(), ids.begin(), ids.end());
  return false;
}

}  // namespace corral::client
