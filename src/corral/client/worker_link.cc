#include "corral/client/worker_link.h"

#include <unistd.h>

#include "corral/base/ids.h"
#include "corral/base/version.h"
#include "corral/worker.pb.h"

namespace corral::client {

namespace asio = boost::asio;

Result<std::unique_ptr<WorkerLink>> WorkerLink::Connect(const WorkerLinkOptions& options) {
  std::unique_ptr<WorkerLink> link(new WorkerLink());
  auto ep = net::ParseEndpoint("unix:" + options.socket_path);
  if (!ep) return Err(ep.error());
  std::unique_ptr<net::ByteStream> stream;
  Status dial_status;
  bool dialed = false;
  WorkerLink* l = link.get();
  net::Dial(l->io_->io(), *ep, nullptr, std::chrono::seconds(10), [&](Result<std::unique_ptr<net::ByteStream>> r) {
    std::lock_guard lock(l->mu_);
    if (r) stream = std::move(*r);
    else dial_status = r.error();
    dialed = true;
    l->cv_.notify_all();
  });
  {
    std::unique_lock lock(l->mu_);
    l->cv_.wait(lock, [&] { return dialed; });
  }
  if (!stream) return Err(dial_status);
  l->conn_ = net::Connection::Create(std::move(stream));
  asio::post(l->io_->io(), [l] {
    l->conn_->Start([l](std::string_view m) { l->OnMessage(m); },
                    [l](const Status& s) {
                      std::lock_guard lock(l->mu_);
                      l->closed_ = true;
                      l->closed_reason_ = s;
                      l->cv_.notify_all();
                    });
  });
  proto::WorkerToAgent hello;
  proto::Hello* h = hello.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_corral_version(CORRAL_VERSION);
  h->set_python_version(options.python_version);
  h->set_cloudpickle_version(options.cloudpickle_version);
  h->set_token(options.token);
  h->set_role(proto::Hello::WORKER);
  std::string raw_id;
  FromHex(options.worker_id, &raw_id);
  h->set_id(raw_id);
  h->set_pid(getpid());
  l->conn_->Send(hello);
  std::unique_lock lock(l->mu_);
  l->cv_.wait_for(lock, std::chrono::seconds(10), [&] { return l->welcomed_ || l->closed_; });
  if (!l->welcomed_)
    return Err(Code::kUnavailable, "the agent did not accept this worker: " + l->closed_reason_.ToString());
  return link;
}

WorkerLink::~WorkerLink() {
  if (io_->in_forked_child()) {
    io_.release();
    new std::shared_ptr<net::Connection>(std::move(conn_));
    return;
  }
  if (conn_) conn_->Close(Status(Code::kCancelled, "worker exiting"));
  io_.reset();
}

void WorkerLink::OnMessage(std::string_view bytes) {
  proto::AgentToWorker msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    conn_->Close(Status(Code::kInvalidArgument, "malformed message from the agent"));
    return;
  }
  std::lock_guard lock(mu_);
  if (msg.has_welcome()) {
    welcomed_ = true;
    conn_->MarkHandshakeDone();
  } else if (msg.has_execute()) {
    tasks_.push_back(std::move(*msg.mutable_execute()));
  }
  cv_.notify_all();
}

Result<proto::ExecuteTask> WorkerLink::NextTask() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !tasks_.empty() || closed_; });
  if (tasks_.empty()) return Err(Code::kUnavailable, "the agent closed the connection: " + closed_reason_.ToString());
  proto::ExecuteTask t = std::move(tasks_.front());
  tasks_.pop_front();
  return t;
}

Status WorkerLink::Finish(const proto::TaskFinished& finished) {
  proto::WorkerToAgent msg;
  *msg.mutable_finished() = finished;
  if (!conn_->Send(msg)) return Status(Code::kUnavailable, "the agent is gone");
  return Status::Ok();
}

Status WorkerLink::Blocked(const std::string& task_id, bool blocked) {
  proto::WorkerToAgent msg;
  msg.mutable_blocked()->set_task_id(task_id);
  msg.mutable_blocked()->set_blocked(blocked);
  if (!conn_->Send(msg)) return Status(Code::kUnavailable, "the agent is gone");
  return Status::Ok();
}

}  // namespace corral::client
