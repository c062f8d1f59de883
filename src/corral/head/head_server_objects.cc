// HeadServer: getting stored objects to readers on nodes that do not hold them. A reader on a node
// with a store asks for a pull: that node's agent copies the value from a holder's agent, agent to
// agent (the head only says who holds it). A reader on a machine without an agent (a driver
// elsewhere) gets the bytes part by part, read by a holder and relayed by the head.
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/head/head_peer.h"
#include "corral/head/reply_error.h"
#include "corral/objects/node_store.h"

namespace corral::head {

void HeadServer::FetchObject(Peer* peer, const proto::Request& request) {
  const proto::FetchObject& fetch = request.fetch_object();
  auto fail = [&](const Status& why) {
    proto::HeadToClient out;
    out.mutable_reply()->set_request_id(request.request_id());
    SetError(*out.mutable_reply(), why);
    peer->conn->Send(out);
  };
  if (!peer->session) return fail(Status(Code::kFailedPrecondition, "not a client session"));
  auto value = tasks_.StoredForRead(peer->session.get(), fetch.id());
  if (!value) return fail(value.error());
  Node* holder = nullptr;
  for (const auto& id : (*value)->locations())
    if (Node* n = nodes_.Find(id); n && n->conn && n->state == NodeState::kAlive) {
      holder = n;
      break;
    }
  if (holder == nullptr)
    return fail(MakeStatus(Code::kUnavailable, "no node holding object {} is connected now", Hex(fetch.id())));
  uint64_t rid = ++next_read_;
  pending_reads_[rid] = PendingRead{peer->conn, request.request_id(), holder->view.id, fetch.id(),
                                    (*value)->stored_attempt()};
  proto::HeadToAgent msg;
  proto::ReadObject* read = msg.mutable_read_object();
  read->set_request_id(rid);
  read->mutable_object()->set_id(fetch.id());
  read->mutable_object()->set_attempt((*value)->stored_attempt());
  read->set_offset(fetch.offset());
  read->set_length(std::min<uint64_t>(fetch.length(), objects::kMaxChunkBytes));
  holder->conn->Send(msg);
}

void HeadServer::OnObjectChunk(Peer* peer, proto::ObjectChunk&& chunk) {
  auto it = pending_reads_.find(chunk.request_id());
  if (it == pending_reads_.end() || !peer->node || it->second.node != peer->node->view.id) return;
  PendingRead read = std::move(it->second);
  pending_reads_.erase(it);
  auto conn = read.reader.lock();
  if (!conn) return;
  proto::HeadToClient out;
  proto::Reply* reply = out.mutable_reply();
  reply->set_request_id(read.request_id);
  if (!chunk.error().empty()) {
    SetError(*reply, Status(Code::kNotFound, chunk.error()));
    tasks_.DropMissingCopy(peer->node, read.object, read.attempt);
  } else {
    reply->set_chunk(std::move(*chunk.mutable_data()));
    reply->set_object_size(chunk.total_size());
    reply->set_chunk_crc32(chunk.crc32());
  }
  conn->Send(out);
}

void HeadServer::PullToNode(Peer* peer, const proto::Request& request) {
  const proto::PullToNode& pull = request.pull_to_node();
  auto answer = [&](const Status& status) {
    proto::HeadToClient out;
    out.mutable_reply()->set_request_id(request.request_id());
    if (!status.ok()) SetError(*out.mutable_reply(), status);
    peer->conn->Send(out);
  };
  if (!peer->session) return answer(Status(Code::kFailedPrecondition, "not a client session"));
  Node* node = nodes_.Find(pull.node());
  if (node == nullptr || !node->conn || node->state != NodeState::kAlive || node->info.peer_address().empty())
    return answer(MakeStatus(Code::kFailedPrecondition, "node {} cannot take objects from other nodes now",
                             ShortHex(pull.node())));
  auto value = tasks_.PrepareCopy(peer->session.get(), pull.id(), node);
  if (!value) return answer(value.error());
  if (*value == nullptr) return answer(Status::Ok());  // it is there already
  const proto::ObjectValue& v = **value;
  if (auto it = pulling_.find({node->view.id, pull.id()});
      it != pulling_.end() && pending_pulls_[it->second].attempt == v.stored_attempt()) {
    pending_pulls_[it->second].readers.emplace_back(peer->conn, request.request_id());
    return;
  }  // (a pull of an attempt since rebuilt is left to fail; this one starts anew)
  proto::HeadToAgent msg;
  proto::PullObject* order = msg.mutable_pull_object();
  for (const auto& id : v.locations())
    if (Node* n = nodes_.Find(id); n && n != node && n->conn && n->state == NodeState::kAlive &&
                                   !n->info.peer_address().empty()) {
      proto::PeerSource* source = order->add_sources();
      source->set_node_id(id);
      source->set_address(n->info.peer_address());
    }
  if (order->sources().empty())
    return answer(MakeStatus(Code::kUnavailable, "no node holding object {} is connected now", Hex(pull.id())));
  uint64_t rid = ++next_read_;
  order->set_request_id(rid);
  order->mutable_object()->set_id(pull.id());
  order->mutable_object()->set_attempt(v.stored_attempt());
  order->set_size(v.stored_size());
  PendingPull& pending = pending_pulls_[rid];
  pending = PendingPull{node->view.id, pull.id(), v.stored_attempt(), {}};
  pending.readers.emplace_back(peer->conn, request.request_id());
  pulling_[{node->view.id, pull.id()}] = rid;
  node->conn->Send(msg);
}

void HeadServer::OnObjectPulled(Peer* peer, const proto::ObjectPulled& pulled) {
  auto it = pending_pulls_.find(pulled.request_id());
  if (it == pending_pulls_.end() || !peer->node || it->second.node != peer->node->view.id) return;
  PendingPull pull = std::move(it->second);
  pending_pulls_.erase(it);
  if (auto p = pulling_.find({pull.node, pull.object}); p != pulling_.end() && p->second == pulled.request_id())
    pulling_.erase(p);
  for (const auto& id : pulled.missing_on())
    if (Node* n = nodes_.Find(id)) tasks_.DropMissingCopy(n, pull.object, pull.attempt);
  Status status;
  if (!pulled.error().empty()) {
    status = Status(pulled.no_room() ? Code::kResourceExhausted : Code::kUnavailable,
                    fmt::format("node {} could not copy object {}: {}", ShortHex(pull.node), Hex(pull.object),
                                pulled.error()));
  } else if (!tasks_.RecordCopy(pull.object, pull.attempt, peer->node)) {
    status = MakeStatus(Code::kNotFound, "object {} was freed or rebuilt while it was copied", Hex(pull.object));
  }
  for (auto& [reader, request_id] : pull.readers)
    if (auto conn = reader.lock()) {
      proto::HeadToClient out;
      out.mutable_reply()->set_request_id(request_id);
      if (!status.ok()) SetError(*out.mutable_reply(), status);
      conn->Send(out);
    }
}

void HeadServer::FailReadsFrom(const std::string& node_id, const std::string& why) {
  for (auto it = pending_pulls_.begin(); it != pending_pulls_.end();) {
    if (it->second.node != node_id) {
      ++it;
      continue;
    }
    for (auto& [reader, request_id] : it->second.readers)
      if (auto conn = reader.lock()) {
        proto::HeadToClient out;
        out.mutable_reply()->set_request_id(request_id);
        SetError(*out.mutable_reply(), MakeStatus(Code::kUnavailable, "copying object {} to node {}: {}",
                                                  Hex(it->second.object), ShortHex(node_id), why));
        conn->Send(out);
      }
    pulling_.erase({it->second.node, it->second.object});
    it = pending_pulls_.erase(it);
  }
  for (auto it = pending_reads_.begin(); it != pending_reads_.end();) {
    if (it->second.node != node_id) {
      ++it;
      continue;
    }
    if (auto conn = it->second.reader.lock()) {
      proto::HeadToClient out;
      out.mutable_reply()->set_request_id(it->second.request_id);
      SetError(*out.mutable_reply(),
               MakeStatus(Code::kUnavailable, "reading object {}: {}", Hex(it->second.object), why));
      conn->Send(out);
    }
    it = pending_reads_.erase(it);
  }
}

}  // namespace corral::head
