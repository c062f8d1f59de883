#include "corral/head/head_server.h"

#include "corral/net/frame.h"
#include "corral/net/pki.h"

#include <openssl/crypto.h>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/base/version.h"
#include <nlohmann/json.hpp>

#include "corral/base/files.h"
#include "corral/head/auth_policy.h"
#include "corral/head/head_peer.h"
#include "corral/head/reply_error.h"
#include "corral/head/status_json.h"
#include "corral/client.pb.h"
#include "corral/node.pb.h"

namespace corral::head {

namespace asio = boost::asio;

HeadServer::HeadServer(asio::io_context& io, HeadOptions options, const Clock& clock)
    : io_(io),
      options_(std::move(options)),
      clock_(clock),
      session_id_(RandomBytes(8)),
      nodes_(clock, options_.liveness),
      tasks_(nodes_, options_.tasks),
      tick_(io) {}

HeadServer::~HeadServer() {
  Stop();
  durable_.reset();  // finishes its queued store work
}

Status HeadServer::Start() {
  std::unique_ptr<store::Store> store;
  if (options_.store_path.empty()) {
    store = store::NewMemoryStore();
  } else {
    auto s = store::OpenSqlite({options_.store_path, true, ""});
    if (!s) return s.error();
    store = std::move(*s);
  }
  auto book = NodeBook::Open(options_.nodes_path);
  if (!book) return book.error();
  book_ = std::move(*book);
  for (const auto& [id, caps] : book_->caps()) nodes_.SetCaps(id, caps);
  auto tokens = TokenStore::Open(options_.tokens_path, options_.token);
  if (!tokens) return tokens.error();
  tokens_ = std::move(*tokens);
  durable_ = std::make_unique<DurableQueue>(
      io_, tasks_, nodes_, std::move(store), clock_,
      DurableQueue::Options{.result_ttl_s = options_.result_ttl_s, .strict_task_names = options_.strict_task_names});
  if (Status s = durable_->Start(); !s.ok())
    return Status(s.code(), "cannot load the durable store " + options_.store_path + ": " + s.message());
  auto l = net::Listener::Listen(io_, options_.listen, options_.tls);
  if (!l) return l.error();
  listener_ = std::move(*l);
  if (options_.tls) {
    // Processes on this machine may come in over loopback without TLS (the local agent, CLI and
    // drivers); any other plaintext peer is told, in a Welcome it can read, that it needs TLS.
    proto::HeadToClient refusal;  // HeadToClient.welcome and HeadToAgent.welcome are both field 1
    refusal.mutable_welcome()->set_error(
        fmt::format("the head at {} accepts only TLS from other machines: connect with its CA "
                    "(--ca-cert or CORRAL_CA_CERT: the ca.crt in its state dir) or its CA's fingerprint "
                    "(--ca-fingerprint or CORRAL_CA_FINGERPRINT, printed by `corral start --head`)",
                    listener_->endpoint().ToString()));
    refusal.mutable_welcome()->set_protocol_version(kProtocolVersion);
    refusal.mutable_welcome()->set_corral_version(CORRAL_VERSION);
    net::FrameBuilder frame;
    frame.AppendMessage(refusal.SerializeAsString());
    listener_->AllowPlaintext(
        [](const boost::asio::ip::address& a) { return net::Unmapped(a).is_loopback(); },
        frame.Take());
  }
  listener_->Start([this](std::unique_ptr<net::ByteStream> s) { OnAccept(std::move(s)); });
  Tick();
  loop_lag_.Start();
  return Status::Ok();
}

void HeadServer::Stop() {
  if (!*alive_) return;
  *alive_ = false;
  if (listener_) listener_->Stop();
  tick_.cancel();
  loop_lag_.Stop();
  for (auto& [p, peer] : peers_) peer->conn->Close(Status(Code::kUnavailable, "head stopping"));
}

void HeadServer::OnAccept(std::unique_ptr<net::ByteStream> stream) {
  std::string address = net::PeerHost(stream->peer());
  size_t& from_address = unauthenticated_by_address_[address];
  if (unauthenticated_ >= options_.max_unauthenticated || from_address >= options_.max_unauthenticated_per_address) {
    if (unauthenticated_refused_++ % 100 == 0)  // a flood must not flood the log too
      LOG_WARN("refused a connection from {}: {} connections ({} from there) have not finished the handshake "
               "({} refused so far)", Printable(address), unauthenticated_, from_address, unauthenticated_refused_);
    if (from_address == 0) unauthenticated_by_address_.erase(address);
    stream->Close();
    return;
  }
  ++from_address;
  ++unauthenticated_;
  auto peer = std::make_unique<Peer>();
  Peer* p = peer.get();
  p->address = std::move(address);
  p->tls = stream->native_ssl() != nullptr;
  if (auto node = ClusterCa::NodeFromSubject(net::VerifiedPeerName(stream->native_ssl()))) p->cert_node = *node;
  net::ConnectionOptions copts;
  copts.handshake_timeout = options_.handshake_timeout;
  copts.max_handshake_frame_bytes = options_.handshake_frame_bytes;
  p->conn = net::Connection::Create(std::move(stream), copts);
  peers_[p] = std::move(peer);
  p->conn->Start([this, p](std::string_view m) { OnMessage(p, m); },
                 [this, p, alive = alive_](const Status& s) {
                   if (*alive) OnClose(p, s);
                 });
}

void HeadServer::OnMessage(Peer* peer, std::string_view bytes) {
  switch (peer->kind) {
    case Peer::kHandshake: {
      // ClientToHead.hello and AgentToHead.hello are both field 1: one parse serves both.
      proto::ClientToHead msg;
      if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || !msg.has_hello()) {
        Refuse(peer, "the first message must be a Hello");
        return;
      }
      OnHello(peer, msg.hello());
      return;
    }
    case Peer::kClient: OnClientMessage(peer, bytes); break;
    case Peer::kAgent: OnAgentMessage(peer, bytes); break;
  }
  ScheduleSoon();
}

void HeadServer::EndHandshake(Peer* peer) {
  if (peer->kind != Peer::kHandshake || peer->address.empty()) return;
  --unauthenticated_;
  auto it = unauthenticated_by_address_.find(peer->address);
  if (it != unauthenticated_by_address_.end() && --it->second == 0) unauthenticated_by_address_.erase(it);
  peer->address.clear();
}

void HeadServer::RefuseToken(Peer* peer) {
  LogAuthFailure(net::PeerHost(peer->conn->peer()), "tcp", "bad token");
  Refuse(peer, "bad token: set CORRAL_TOKEN or CORRAL_TOKEN_FILE to the head's token (printed by "
               "`corral start --head`, stored in its state dir)");
}

void HeadServer::Refuse(Peer* peer, const std::string& why) {
  LOG_WARN("refused connection from {}: {}", peer->conn->peer(), Printable(why));
  proto::HeadToClient reply;  // HeadToClient.welcome and HeadToAgent.welcome are both field 1
  reply.mutable_welcome()->set_error(why);
  reply.mutable_welcome()->set_protocol_version(kProtocolVersion);
  reply.mutable_welcome()->set_corral_version(CORRAL_VERSION);
  peer->conn->Send(reply);
  peer->conn->CloseAfterFlush(Status(Code::kPermissionDenied, why));
}

void HeadServer::OnHello(Peer* peer, const proto::Hello& hello) {
  if (hello.protocol_version() != kProtocolVersion) {
    Refuse(peer, fmt::format("protocol version {} (Corral {}) is not supported by this head, which speaks "
                             "version {} (Corral {}); install the same Corral version on every machine",
                             hello.protocol_version(), hello.corral_version(), kProtocolVersion,
                             CORRAL_VERSION));
    return;
  }
  bool agent = hello.role() == proto::Hello::AGENT;
  // A node that joined but never got its certificate (the Welcome was lost) asks again for the same
  // key: that key is its credential then, not the token it already spent.
  bool redelivery = agent && peer->cert_node.empty() && peer->tls && JoinedWithKey(hello);
  if ((!agent || peer->cert_node.empty()) && !redelivery) {  // a node's certificate is its credential: no token then
    auto who = Authenticate(hello.token());
    if (!who) {
      RefuseToken(peer);
      return;
    }
    if (agent && !Allows(who->role, Role::kAgent) && !Allows(who->role, Role::kJoin)) {
      Refuse(peer, fmt::format("token '{}' has role {}: a node joins with a join token (`corral token create "
                               "--role join`) or an agent token",
                               who->name, RoleName(who->role)));
      return;
    }
    if (!agent && who->role == Role::kJoin) {
      Refuse(peer, fmt::format("token '{}' is a join token: it only adds a node (`corral start --address ... "
                               "--join-token`); clients need a read, submit or admin token",
                               who->name));
      return;
    }
    peer->token = std::move(*who);
  }
  EndHandshake(peer);
  peer->conn->MarkHandshakeDone();
  proto::HeadToClient reply;
  proto::Welcome* w = reply.mutable_welcome();
  w->set_protocol_version(kProtocolVersion);
  w->set_corral_version(CORRAL_VERSION);
  w->set_session_id(session_id_);
  w->set_heartbeat_interval_ms(static_cast<uint64_t>(options_.liveness.heartbeat_interval / 1'000'000));
  w->set_lease_ms(static_cast<uint64_t>(options_.liveness.EffectiveLease() / 1'000'000));
  if (agent) {
    OnAgentHello(peer, hello, reply);
    return;
  }
  OnClientHello(peer, hello, reply);
}

void HeadServer::OnAgentHello(Peer* peer, const proto::Hello& hello, proto::HeadToClient& welcome) {
  if (!AdmitAgent(peer, hello, welcome)) return;
  const std::string& id = hello.node().node_id();
  if (Node* old = nodes_.Find(id)) {
    // Whatever an old connection of this node still says or does (even closing) no longer counts.
    for (auto& [p, other] : peers_)
      if (other->node == old && p != peer) {
        other->node = nullptr;
        other->conn->Close(Status(Code::kAborted, "node registered again"));
      }
  }
  bool resumed = false;
  peer->kind = Peer::kAgent;
  proto::NodeInfo info = hello.node();
  info.set_address(peer->conn->peer());  // where it connects from now (laptops move)
  // What it says of itself is shown in logs, `corral status` and JSON: made printable once, here.
  info.set_hostname(Printable(info.hostname()));
  info.set_python_version(Printable(info.python_version()));
  info.set_cloudpickle_version(Printable(info.cloudpickle_version()));
  peer->node = nodes_.Register(info, peer->conn, options_.tasks.prefetch_per_cpu, &resumed);
  peer->worker_token_ns = clock_.WallNs();
  welcome.mutable_welcome()->set_worker_token(
      tokens_->WorkerToken(id, peer->worker_token_ns + options_.worker_credential_ttl.count() * 1'000'000'000));
  welcome.mutable_welcome()->set_peer_secret(peer_secret_);
  peer->conn->Send(welcome);
  TellDroppedCallers(*peer->conn);
  if (resumed) {
    LOG_INFO("node {} reconnected from {} (host {}), holding {} attempt(s)", ShortHex(id), peer->conn->peer(),
             info.hostname(), hello.held_size());
  } else {
    LOG_INFO("node {} joined from {} (host {}): {}", ShortHex(id), peer->conn->peer(), info.hostname(),
             peer->node->view.total.ToString());
  }
  // Also for a node that starts afresh: what it still holds is superseded (or, after a head
  // restart, waits for its task to be resubmitted).
  tasks_.Reconcile(peer->node, hello.held());
  tasks_.ReconcileStore(peer->node, hello.stored_objects(), hello.held());
  tasks_.OnNodesChanged();
}

void HeadServer::OnClientHello(Peer* peer, const proto::Hello& hello, proto::HeadToClient& welcome) {
  peer->kind = Peer::kClient;
  // Ids are 8 bytes: the head finds what a client owns by that prefix of the ids it makes.
  if (!hello.id().empty() && hello.id().size() != 8) return Refuse(peer, "a client id is 8 bytes");
  std::string id = hello.id().empty() ? RandomBytes(8) : hello.id();
  // A session is taken over only by who holds its secret and the token it was made with: the id
  // alone (it is in every task id the client made) proves nothing.
  auto owns = [&](const ClientSession& s) {
    return s.resume_secret.size() == hello.resume_secret().size() &&
           CRYPTO_memcmp(s.resume_secret.data(), hello.resume_secret().data(), s.resume_secret.size()) == 0 &&
           s.token_id == peer->token.id;
  };
  if (auto d = detached_.find(id); d != detached_.end()) {
    if (!owns(*d->second.session))
      return Refuse(peer, "this client id belongs to another session (wrong resume secret or token)");
    peer->session = std::move(d->second.session);  // it came back: its tasks and objects are still here
    detached_.erase(d);
    LOG_INFO("client {} reconnected from {}", Printable(hello.name()), peer->conn->peer());
  } else {
    for (auto& [p, other] : peers_)
      if (p != peer && other->kind == Peer::kClient && other->session && other->session->id == id) {
        if (!owns(*other->session))
          return Refuse(peer, "this client id belongs to another session (wrong resume secret or token)");
        // Its old connection is half-open (the client saw it fail first): take the session over.
        peer->session = std::move(other->session);
        other->conn->Close(Status(Code::kAborted, "client reconnected"));
        break;
      }
  }
  if (!peer->session) {
    peer->session = std::make_shared<ClientSession>();
    peer->session->id = id;
    peer->session->resume_secret = RandomBytes(16);
    peer->session->token_id = peer->token.id;
    peer->session->may_touch_any = peer->token.role == Role::kAdmin;
    tasks_.AddClient(peer->session.get());
  }
  welcome.mutable_welcome()->set_resume_secret(peer->session->resume_secret);
  peer->conn->Send(welcome);
  peer->session->name = Printable(hello.name());
  peer->session->pid = hello.pid();
  peer->session->conn = peer->conn;
  // Values wait in the session (as ids) while its connection is full; what is queued stays
  // within one value of the watermark, and a client that never reads is cut off.
  peer->conn->SetMaxQueuedBytes(net::ConnectionOptions{}.high_watermark_bytes + 2 * net::kDefaultMaxFrameBytes);
  peer->conn->SetDrainHandler([this, peer] {
    if (peer->session) tasks_.SendUnsent(peer->session.get());
    if (peer->paused_for_output) {
      peer->paused_for_output = false;
      if (!clients_paused_) peer->conn->ResumeReading();
    }
  });
  tasks_.SendUnsent(peer->session.get());  // what waited for room before it reconnected
  LOG_DEBUG("client {} connected from {}", peer->session->name, peer->conn->peer());
  UpdateBackpressure();
}

void HeadServer::DetachClient(Peer* peer, bool goodbye) {
  std::shared_ptr<ClientSession> session = std::move(peer->session);
  if (!session) return;
  session->conn.reset();
  if (goodbye || session->process_ended || (tasks_.Owned(session->id) == 0 && session->borrowed.empty() && !tasks_.OwnsGangs(session->id))) {  // nothing to keep for it
    tasks_.RemoveClient(session.get());
    return;
  }
  std::string id = session->id;  // (the right side of `=` is evaluated first)
  detached_[id] = Detached{std::move(session), clock_.BootTimeNs()};
}

void HeadServer::EndWorkerSessions(Node* node, int64_t pid) {
  // A dead process cannot come back for its session: what it owned (actors it created, handles it
  // held) goes now rather than after the grace a driver gets. A session still connected ends when
  // its connection closes (the process is gone: it will), after what it sent last has been read.
  std::string token = "w:" + Hex(node->view.id);
  auto its = [&](const ClientSession& s) { return s.token_id == token && s.pid == pid; };
  for (auto& [p, peer] : peers_)
    if (peer->kind == Peer::kClient && peer->session && its(*peer->session)) peer->session->process_ended = true;
  for (auto it = detached_.begin(); it != detached_.end();) {
    if (its(*it->second.session)) {
      tasks_.RemoveClient(it->second.session.get());
      it = detached_.erase(it);
    } else {
      ++it;
    }
  }
}

void HeadServer::OnClientMessage(Peer* peer, std::string_view bytes) {
  proto::ClientToHead msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    peer->conn->Close(Status(Code::kInvalidArgument, "malformed message from client"));
    return;
  }
  ClientSession* s = peer->session.get();
  if (!s) return;  // taken over by a newer connection of the same client
  auto need = RequiredRole(msg);
  if (!need) {
    peer->conn->Close(Status(Code::kInvalidArgument, "unexpected message from client"));
    return;
  }
  if (!Allows(peer->token.role, *need)) return Deny(peer, msg, need);
  switch (msg.msg_case()) {
    case proto::ClientToHead::kSubmit: tasks_.Submit(s, std::move(*msg.mutable_submit())); break;
    case proto::ClientToHead::kPut: tasks_.Put(s, std::move(*msg.mutable_put())); break;
    case proto::ClientToHead::kSubscribe: tasks_.Subscribe(s, msg.subscribe()); break;
    case proto::ClientToHead::kRelease: tasks_.Release(s, msg.release()); break;
    case proto::ClientToHead::kCancel: tasks_.Cancel(s, msg.cancel()); break;
    case proto::ClientToHead::kDirectLost: tasks_.DirectLost(s, msg.direct_lost()); break;
    case proto::ClientToHead::kRequest: HandleRequest(peer, msg.request()); break;
    case proto::ClientToHead::kGoodbye:
      DetachClient(peer, /*goodbye=*/true);
      return;
    default:
      peer->conn->Close(Status(Code::kInvalidArgument, "unexpected message from client"));
      return;
  }
  if (!clients_paused_ && tasks_.unfinished_tasks() > options_.max_unfinished_tasks) UpdateBackpressure();
  if (!peer->conn->has_room() && !peer->paused_for_output) {
    peer->paused_for_output = true;  // it is not reading its results: stop reading its submissions
    peer->conn->PauseReading();
  }
}

void HeadServer::OnAgentMessage(Peer* peer, std::string_view bytes) {
  proto::AgentToHead msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    peer->conn->Close(Status(Code::kInvalidArgument, "malformed message from agent"));
    return;
  }
  Node* node = peer->node;
  if (!node) return;  // superseded by a newer registration
  switch (msg.msg_case()) {
    case proto::AgentToHead::kHeartbeat: {
      if (node->state == NodeState::kDead || node->state == NodeState::kLeft) break;  // it must register again
      nodes_.Heartbeat(node);
      node->counters = msg.heartbeat().counters();
      proto::HeadToAgent ack;
      ack.mutable_heartbeat_ack()->set_seq(msg.heartbeat().seq());
      ack.mutable_heartbeat_ack()->set_lease_ms(static_cast<uint64_t>(options_.liveness.EffectiveLease() / 1'000'000));
      int64_t ttl_ns = options_.worker_credential_ttl.count() * 1'000'000'000;
      if (int64_t now = clock_.WallNs(); now - peer->worker_token_ns >= ttl_ns / 2) {
        peer->worker_token_ns = now;
        ack.mutable_heartbeat_ack()->set_worker_token(tokens_->WorkerToken(node->view.id, now + ttl_ns));
      }
      peer->conn->Send(ack);
      break;
    }
    case proto::AgentToHead::kDraining:
      LOG_INFO("node {} {}: {}", ShortHex(node->view.id),
               msg.draining().stopped() ? "takes work again" : "is draining", msg.draining().reason());
      nodes_.SetDraining(node, !msg.draining().stopped());
      tasks_.OnNodesChanged();
      break;
    case proto::AgentToHead::kLeaving:
      LOG_INFO("node {} left the cluster: {}", ShortHex(node->view.id), Printable(msg.leaving().reason()));
      nodes_.MarkLeft(node);
      tasks_.OnNodeDead(node, "left the cluster");
      break;
    case proto::AgentToHead::kFinished: tasks_.OnTaskFinished(node, std::move(*msg.mutable_finished())); break;
    case proto::AgentToHead::kBlocked: tasks_.OnBlocked(node, msg.blocked()); break;
    case proto::AgentToHead::kLog: tasks_.OnLog(node, std::move(*msg.mutable_log())); break;
    case proto::AgentToHead::kRenewCertificate: RenewNodeCertificate(peer, msg.renew_certificate()); break;
    case proto::AgentToHead::kObjectChunk: OnObjectChunk(peer, std::move(*msg.mutable_object_chunk())); break;
    case proto::AgentToHead::kTaskLog: OnTaskLog(peer, std::move(*msg.mutable_task_log())); break;
    case proto::AgentToHead::kObjectsSpilled: tasks_.OnObjectsSpilled(node, msg.objects_spilled()); break;
    case proto::AgentToHead::kObjectPulled: OnObjectPulled(peer, msg.object_pulled()); break;
    case proto::AgentToHead::kActorReady: tasks_.OnActorReady(node, msg.actor_ready()); break;
    case proto::AgentToHead::kCallsNotHeld: tasks_.OnCallsNotHeld(node, msg.calls_not_held()); break;
    case proto::AgentToHead::kWorkerExited: EndWorkerSessions(node, msg.worker_exited()); break;
    case proto::AgentToHead::kUpdate:
      msg.mutable_update()->set_address(node->info.address());
      nodes_.Update(node, msg.update());
      tasks_.OnNodesChanged();
      break;
    default:
      peer->conn->Close(Status(Code::kInvalidArgument, "unexpected message from agent"));
      return;
  }
  UpdateBackpressure();
}

void HeadServer::HandleRequest(Peer* peer, const proto::Request& request) {
  proto::HeadToClient msg;
  proto::Reply* reply = msg.mutable_reply();
  reply->set_request_id(request.request_id());
  if (request.has_nodes()) {
    proto::ClusterStatus st = BuildStatus();
    reply->mutable_nodes()->Swap(st.mutable_nodes());
  } else if (request.has_status()) {
    *reply->mutable_status() = BuildStatus();
  } else if (request.has_drain()) {
    if (Status s = Drain(request.drain()); !s.ok()) SetError(*reply, s);
  } else if (request.has_token()) {
    HandleTokenRequest(request.token(), reply);
  } else if (request.has_node()) {
    HandleNodeRequest(request.node(), reply);
  } else if (request.has_certs()) {
    HandleCertsRequest(request.certs(), reply);
  } else if (request.has_put_stored()) {
    if (!peer->session) {
      SetError(*reply, Status(Code::kFailedPrecondition, "not a client session"));
    } else {
      const std::string& id = request.put_stored().id();
      tasks_.Put(peer->session.get(), proto::ObjectValue(request.put_stored()));
      if (auto refused = tasks_.PutRefusal(id)) {
        SetError(*reply, *refused);
        tasks_.ForgetRefusedPut(peer->session.get(), id);
      }
    }
  } else if (request.has_add_copy()) {
    Status s = peer->session ? tasks_.AddCopy(peer->session.get(), request.add_copy())
                             : Status(Code::kFailedPrecondition, "not a client session");
    if (!s.ok()) SetError(*reply, s);
  } else if (request.has_fetch_object()) {
    FetchObject(peer, request);  // answered when the node that holds it does
    return;
  } else if (request.has_contain_refs()) {
    Status s = peer->session ? tasks_.ContainRefs(peer->session.get(), request.contain_refs())
                             : Status(Code::kFailedPrecondition, "not a client session");
    if (!s.ok()) SetError(*reply, s);
  } else if (request.has_actor()) {
    Status s = peer->session ? tasks_.HandleActorRequest(peer->session.get(), request.actor(), reply)
                             : Status(Code::kFailedPrecondition, "not a client session");
    if (!s.ok()) SetError(*reply, s);
    if (s.ok() && reply->has_route() && !reply->route().node_id().empty()) {
      if (RememberRouted(peer->token.id, peer->session->id))
        reply->mutable_route()->set_ticket(net::CallTicket(peer_secret_, request.actor().actor_id(), peer->session->id));
      else
        reply->clear_route();  // (no route: through the head)
    }
  } else if (request.has_gang()) {
    Status s = peer->session ? tasks_.HandleGangRequest(peer->session.get(), request.gang(), reply)
                             : Status(Code::kFailedPrecondition, "not a client session");
    if (!s.ok()) SetError(*reply, s);
  } else if (request.has_borrow_refs()) {
    if (peer->session) tasks_.BorrowRefs(peer->session.get(), request.borrow_refs());
  } else if (request.has_task_log() && peer->token.role == Role::kWorker) {
    SetError(*reply, Status(Code::kPermissionDenied, "a task's code may not read other tasks' output"));
  } else if (request.has_task_log()) {
    ReadTaskLog(request.task_log().task_id(), request.task_log().offset(),  // as the user typed it
                [conn = peer->conn, rid = request.request_id()](Result<proto::TaskLog> log) {
                  proto::HeadToClient out;
                  out.mutable_reply()->set_request_id(rid);
                  if (log) *out.mutable_reply()->mutable_task_log() = std::move(*log);
                  else SetError(*out.mutable_reply(), log.error());
                  conn->Send(out);
                });
    return;
  } else if (request.has_pull_to_node()) {
    PullToNode(peer, request);  // answered when the copy is there
    return;
  } else if (request.has_durable_submit() || request.has_durable_get() || request.has_durable_list() ||
             request.has_durable_cancel() || request.has_schedule() || request.has_queue() ||
             request.has_durable_progress() || request.has_durable_forget() || request.has_durable_store()) {
    // Answered later (after the store commits, or when the task ends).
    auto respond = [conn = peer->conn, rid = request.request_id()](proto::Reply r) {
      r.set_request_id(rid);
      proto::HeadToClient out;
      *out.mutable_reply() = std::move(r);
      conn->Send(out);
    };
    if (request.has_durable_submit())
      durable_->Submit(request.durable_submit(), std::move(respond));
    else if (request.has_durable_get())
      durable_->Get(request.durable_get(), std::move(respond));
    else if (request.has_durable_list())
      durable_->List(request.durable_list(), Allows(peer->token.role, Role::kSubmit), std::move(respond));
    else if (request.has_schedule())
      durable_->Schedule(request.schedule(), std::move(respond));
    else if (request.has_queue())
      durable_->Queues(request.queue(), std::move(respond));
    else if (request.has_durable_forget())
      durable_->Forget(request.durable_forget(), std::move(respond));
    else if (request.has_durable_store())
      durable_->StoreValue(request.durable_store(), std::move(respond));
    else if (request.has_durable_progress())
      durable_->Progress(request.durable_progress(), WorkerNode(peer->token), std::move(respond));
    else
      durable_->Cancel(request.durable_cancel(), std::move(respond));
    return;
  } else {
    SetError(*reply, Status(Code::kInvalidArgument, "unknown request"));
  }
  peer->conn->Send(msg);
}

std::string HeadServer::WorkerNode(const TokenInfo& token) {
  if (token.role != Role::kWorker) return "";
  auto node = FromHex(std::string_view(token.id).substr(2));  // "w:<node hex>"
  return node ? *node : std::string(1, '\0');  // (a worker token names its node: never empty)
}

Result<TokenInfo> HeadServer::Authenticate(std::string_view token) {
  auto who = tokens_->Authenticate(token, clock_.WallNs());
  if (who && who->role == Role::kWorker) {
    auto node = FromHex(std::string_view(who->id).substr(2));  // "w:<node hex>"
    if (!node || book_->revoked(*node))
      return Err(Code::kPermissionDenied, "the workers of a revoked node");
  }
  return who;
}

void HeadServer::Deny(Peer* peer, const proto::ClientToHead& msg, std::optional<Role> need) {
  std::string why = need ? fmt::format("token '{}' has role {}; this needs {} (`corral token create --role {}`)",
                                       peer->token.name, RoleName(peer->token.role), RoleName(*need), RoleName(*need))
                         : std::string("unknown message or operation");
  if (messages_denied_++ % 100 == 0)  // a client looping on a denied call must not flood the log
    LOG_WARN("denied a message from {} ({} so far): {}", peer->conn->peer(), messages_denied_, why);
  Status status(need ? Code::kPermissionDenied : Code::kInvalidArgument, why);
  proto::HeadToClient out;
  switch (msg.msg_case()) {
    case proto::ClientToHead::kRequest: {
      proto::Reply* r = out.mutable_reply();
      r->set_request_id(msg.request().request_id());
      SetError(*r, status);
      break;
    }
    case proto::ClientToHead::kSubmit:  // its value is the refusal
    case proto::ClientToHead::kPut:
      out.mutable_ready()->set_id(msg.has_submit() ? msg.submit().task_id() : msg.put().id());
      out.mutable_ready()->set_error(proto::RUNTIME);
      out.mutable_ready()->set_message(why);
      break;
    default: out.mutable_notice()->set_text(why); break;
  }
  peer->conn->Send(out);
}

proto::ClusterStatus HeadServer::BuildStatus(bool count_tasks) {
  proto::ClusterStatus st;
  Nanos now = clock_.BootTimeNs();
  for (Node* n : nodes_.All()) {
    proto::NodeStatus* ns = st.add_nodes();
    *ns->mutable_info() = n->info;
    // What the node counts as: its advertised resources under the operator's caps.
    for (auto& [k, v] : *ns->mutable_info()->mutable_resources()) v = n->view.total.Get(k);
    ns->set_state(NodeStateName(n->state));
    for (const auto& [k, u] : n->view.available.units())
      if (!IsGangResource(k)) (*ns->mutable_available())[k] = n->view.available.Get(k);  // gangs: shown on their own
    ns->set_last_heartbeat_age_s(static_cast<double>(now - n->last_heartbeat) / 1e9);
    ns->set_running_tasks(static_cast<int64_t>(n->tasks.size()));
    ns->set_connected(n->connected);
    ns->set_draining(n->draining);
    TaskManager::StoreUsage used = tasks_.StoreUsageOf(n->view.id);
    ns->set_object_store_used(used.bytes);
    ns->set_object_store_objects(used.objects);
    ns->set_object_store_spilled(used.spilled);
    *ns->mutable_counters() = n->counters;
  }
  tasks_.FillStatus(&st, count_tasks);
  st.set_address(endpoint().ToString());
  auto& c = *st.mutable_counters()->mutable_values();
  auto& net = net::GlobalNetCounters();
  c["net_frames_sent"] = net.frames_sent;
  c["net_messages_sent"] = net.messages_sent;
  c["net_frames_received"] = net.frames_received;
  c["net_messages_received"] = net.messages_received;
  c["net_bytes_sent"] = net.bytes_sent;
  c["net_bytes_received"] = net.bytes_received;
  c["net_connections_opened"] = net.connections_opened;
  c["net_connections_closed_with_error"] = net.connections_closed_with_error;
  c["clients_paused"] = clients_paused_;
  c["messages_denied"] = messages_denied_;
  std::map<std::string, int64_t> durable;
  if (durable_) durable_->FillCounters(&durable);
  if (durable_)
    for (const auto& fn : durable_->WaitingForWorkers())
      st.add_infeasible(fmt::format("durable tasks of {}: no connected node's workers registered it; they wait "
                                    "for one (start an agent with --tasks {})",
                                    fn, fn.substr(0, fn.find(':'))));
  for (const auto& [k, v] : durable) c[k] = v;
  return st;
}

Status HeadServer::Drain(const proto::DrainRequest& request) {
  std::vector<Node*> matches;
  for (Node* n : nodes_.All()) {
    if (n->state == NodeState::kDead || n->state == NodeState::kLeft) continue;
    std::string hex = Hex(n->view.id);
    if (!request.node().empty() && (hex.starts_with(request.node()) || n->info.hostname() == request.node()))
      matches.push_back(n);
  }
  if (matches.empty())
    return MakeStatus(Code::kNotFound, "no live node matches '{}': give a node id (or its first hex digits) or a "
                      "hostname from `corral status`", Printable(request.node()));
  if (matches.size() > 1)
    return MakeStatus(Code::kFailedPrecondition, "'{}' matches {} nodes; give more of the node id",
                      Printable(request.node()), matches.size());
  Node* n = matches[0];
  if (!n->connected || !n->conn)
    return MakeStatus(Code::kFailedPrecondition, "node {} is not connected; it cannot be drained until it is back",
                      ShortHex(n->view.id));
  nodes_.SetDraining(n, true);
  proto::HeadToAgent msg;
  msg.mutable_drain()->set_timeout_ms(static_cast<uint64_t>(std::max(0.0, request.timeout_s()) * 1000));
  msg.mutable_drain()->set_leave(request.leave());
  msg.mutable_drain()->set_reason("corral drain");
  n->conn->Send(msg);
  LOG_INFO("draining node {} ({}), up to {:.0f}s for its running tasks", ShortHex(n->view.id), n->info.hostname(),
           request.timeout_s());
  return Status::Ok();
}

void HeadServer::OnClose(Peer* peer, const Status& reason) {
  EndHandshake(peer);
  auto owned = std::move(peers_[peer]);
  peers_.erase(peer);
  if (peer->kind == Peer::kAgent && peer->node) {
    Node* n = peer->node;
    if (n->state != NodeState::kDead && n->state != NodeState::kLeft) {
      LOG_WARN("lost the connection to node {} ({}); its {} task(s) stay assigned while its lease lasts: "
               "it is declared dead if it has not come back {:.1f}s after its last heartbeat",
               ShortHex(n->view.id), reason.ToString(), n->tasks.size(),
               static_cast<double>(options_.liveness.dead_after) / 1e9);
    }
    nodes_.Disconnected(n);
    FailReadsFrom(n->view.id, "its node disconnected");
    FailLogReadsFrom(n->view.id, "its node disconnected");
  } else if (peer->kind == Peer::kClient) {
    if (peer->session) LOG_DEBUG("client {} left: {}", peer->session->name, reason.ToString());
    DetachClient(peer, /*goodbye=*/false);
  } else if (reason.code() != Code::kUnavailable) {
    LOG_WARN("connection from {} closed before the handshake: {}", peer->conn->peer(), reason.ToString());
  }
  ScheduleSoon();
  // The peer must outlive handlers already queued on the io thread.
  asio::post(io_, [owned = std::move(owned)] {});
}

void HeadServer::ScheduleSoon() {
  if (schedule_posted_) return;
  schedule_posted_ = true;
  asio::post(io_, [this, alive = alive_] {
    if (!*alive) return;
    schedule_posted_ = false;
    tasks_.Schedule();
    UpdateBackpressure();
  });
}

void HeadServer::UpdateBackpressure() {
  size_t n = tasks_.unfinished_tasks();
  bool pause = clients_paused_ ? n > options_.max_unfinished_tasks * 9 / 10 : n > options_.max_unfinished_tasks;
  if (pause == clients_paused_) return;
  clients_paused_ = pause;
  if (pause) LOG_INFO("{} unfinished tasks: not reading new submissions until some finish", n);
  for (auto& [p, peer] : peers_) {
    if (peer->kind != Peer::kClient) continue;
    if (pause)
      peer->conn->PauseReading();
    else if (!peer->paused_for_output)
      peer->conn->ResumeReading();
  }
}

void HeadServer::Tick() {
  for (Node* dead : nodes_.Tick()) {
    tasks_.OnNodeDead(dead, "stopped sending heartbeats");
    if (dead->conn) dead->conn->Close(Status(Code::kAborted, "declared dead"));
  }
  Nanos now = clock_.BootTimeNs();
  for (auto it = detached_.begin(); it != detached_.end();) {
    if (now - it->second.since < options_.liveness.dead_after) {
      ++it;
      continue;
    }
    LOG_INFO("client {} did not come back within {:.1f}s: its unfinished tasks are cancelled", it->second.session->name,
             static_cast<double>(options_.liveness.dead_after) / 1e9);
    tasks_.RemoveClient(it->second.session.get());
    it = detached_.erase(it);
  }
  if (durable_) durable_->Tick();
  if (now - tokens_checked_ >= Ms(1000)) {
    tokens_checked_ = now;
    CloseDeadTokens();
  }
  tasks_.Schedule();
  UpdateBackpressure();
  tick_.expires_after(std::chrono::milliseconds(200));
  tick_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) Tick();
  });
}

}  // namespace corral::head
