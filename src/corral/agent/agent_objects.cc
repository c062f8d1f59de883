// The agent's side of the object store (see agent.h and objects/node_store.h): deletions and
// spills the head asks for, serving the node's objects to other agents and pulling theirs
// (object_transfer.h), and reads relayed through the head for readers without a store.
#include <algorithm>

#include "corral/agent/agent.h"
#include "corral/base/log.h"

namespace corral::agent {

namespace asio = boost::asio;

void Agent::OnDeleteObjects(const proto::DeleteObjects& request) {
  if (!store_) return;
  for (const auto& o : request.objects()) {
    std::string name = objects::NodeStore::FileName(o.id(), o.attempt());
    if (spilling_.contains(name)) delete_after_spill_.insert(name);
    if (store_->Delete(o.id(), o.attempt())) counters_["objects_deleted"]++;
  }
}

void Agent::OnSpillObjects(const proto::SpillObjects& request) {
  if (!store_) return;
  for (const auto& o : request.objects()) spilling_.insert(objects::NodeStore::FileName(o.id(), o.attempt()));
  {
    std::lock_guard lock(spill_mu_);
    spill_queue_.push_back(request);
  }
  spill_cv_.notify_one();
}

void Agent::SpillLoop() {
  while (true) {
    proto::SpillObjects batch;
    {
      std::unique_lock lock(spill_mu_);
      spill_cv_.wait(lock, [&] { return spill_stop_ || !spill_queue_.empty(); });
      if (spill_stop_) return;
      batch = std::move(spill_queue_.front());
      spill_queue_.pop_front();
    }
    proto::AgentToHead msg;
    proto::ObjectsSpilled* done = msg.mutable_objects_spilled();
    for (const auto& o : batch.objects()) {
      Status s = store_->Spill(o.id(), o.attempt());
      if (s.ok()) {
        *done->add_spilled() = o;
      } else if (s.code() != Code::kNotFound) {  // (deleted meanwhile: nothing to report)
        *done->add_failed() = o;
        done->set_error(s.message());
      }
    }
    asio::post(io_, [this, alive = alive_, msg = std::move(msg), batch = std::move(batch)] {
      if (!*alive) return;
      for (const auto& o : batch.objects()) {
        std::string name = objects::NodeStore::FileName(o.id(), o.attempt());
        spilling_.erase(name);
        if (delete_after_spill_.erase(name)) store_->Delete(o.id(), o.attempt());  // freed while it moved
      }
      counters_["objects_spilled"] += msg.objects_spilled().spilled_size();
      if (!msg.objects_spilled().error().empty())
        LOG_WARN("spilling {} value(s) failed: {}", msg.objects_spilled().failed_size(), msg.objects_spilled().error());
      if (head_) head_->Send(msg);
    });
  }
}

void Agent::ServeObjects(const std::string& local_ip) {
  std::string host = options_.serve_objects_on.empty() ? local_ip : options_.serve_objects_on;
  if (!transfer_ || host.empty()) return;
  if (transfer_->port() == 0 || transfer_->host() != host) {
    // The same port as before where it is free: a laptop that moved keeps its number.
    if (transfer_->port() != 0) last_peer_port_ = transfer_->port();
    auto port = transfer_->Listen(host, options_.object_port ? options_.object_port : last_peer_port_);
    if (!port && options_.object_port == 0) port = transfer_->Listen(host, 0);
    if (!port) {
      LOG_WARN("{}: objects here are read through the head instead", port.error().message());
      info_.clear_peer_address();
      return;
    }
    LOG_INFO("serving this node's objects to other agents on {}", net::Endpoint{host, *port, ""}.ToString());
  }
  // The agent inside the head is found at the head's host, as each agent dials it.
  info_.set_peer_address(options_.serve_objects_on.empty()
                             ? net::Endpoint{host, transfer_->port(), ""}.ToString()
                             : fmt::format(":{}", transfer_->port()));
}

void Agent::OnPullObject(const proto::PullObject& request) {
  PullJob job{request.object().id(), request.object().attempt(), request.size(), {}};
  for (const auto& source : request.sources()) {
    // ":port" is the agent inside the head: found at the head's host, as this agent dials it.
    bool at_head = source.address().starts_with(':');
    auto ep = net::ParseEndpoint(at_head ? "head" + source.address() : source.address());
    if (ep) job.sources.push_back({source.node_id(), at_head ? options_.head.host : ep->host, ep->port});
  }
  if (!transfer_) return;
  // A reply is for the connection that asked: after a reconnect the head no longer waits for it.
  std::weak_ptr<net::Connection> asked = head_;
  transfer_->Pull(std::move(job), [this, alive = alive_, asked, request](PullResult r) {
    if (!*alive) return;
    counters_["object_bytes_received"] += static_cast<int64_t>(r.bytes);
    auto conn = asked.lock();
    if (!conn || conn != head_) return;  // the head forgot the request: the next registration lists the copy
    proto::AgentToHead msg;
    proto::ObjectPulled* out = msg.mutable_object_pulled();
    out->set_request_id(request.request_id());
    out->set_bytes(r.bytes);
    for (auto& node : r.missing_on) out->add_missing_on(std::move(node));
    if (!r.status.ok()) {
      out->set_error(r.status.message());
      out->set_no_room(r.status.code() == Code::kResourceExhausted);
    }
    head_->Send(msg);
  });
}

void Agent::OnReadObject(const proto::ReadObject& request) {
  proto::AgentToHead msg;
  proto::ObjectChunk* chunk = msg.mutable_object_chunk();
  chunk->set_request_id(request.request_id());
  uint64_t size = 0;
  auto data = store_ ? store_->Read(request.object().id(), request.object().attempt(), request.offset(),
                                    std::min<uint64_t>(request.length(), objects::kMaxChunkBytes), &size)
                     : Result<std::string>(Err(Code::kNotFound, "this node has no object store"));
  if (data) {
    chunk->set_data(std::move(*data));
    chunk->set_total_size(size);
    chunk->set_crc32(objects::Crc32(chunk->data()));
    counters_["object_bytes_sent"] += static_cast<int64_t>(chunk->data().size());
  } else {
    chunk->set_error(data.error().message());
  }
  if (head_) head_->Send(msg);
}

}  // namespace corral::agent
