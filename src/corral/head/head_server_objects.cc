// HeadServer: relaying the bytes of stored objects to readers on nodes that do not hold them.
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

void HeadServer::FailReadsFrom(const std::string& node_id, const std::string& why) {
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
