#include "corral/client/worker_link.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "corral/base/hop_trace.h"
#include "corral/base/ids.h"
#include "corral/base/version.h"
#include "corral/client.pb.h"
#include "corral/net/fd_passing.h"
#include "corral/worker.pb.h"

namespace corral::client {

Result<std::unique_ptr<WorkerLink>> WorkerLink::Connect(const WorkerLinkOptions& options) {
  std::unique_ptr<WorkerLink> link(new WorkerLink());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.socket_path.size() >= sizeof addr.sun_path)
    return Err(Code::kInvalidArgument, "agent socket path too long: " + options.socket_path);
  std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
  link->fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (link->fd_ < 0 || connect(link->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Err(Code::kUnavailable,
               fmt::format("cannot connect to the agent at {}: {}", options.socket_path, strerror(errno)));
  proto::WorkerToAgent hello;
  proto::Hello* h = hello.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_corral_version(CORRAL_VERSION);
  h->set_python_version(options.python_version);
  h->set_cloudpickle_version(options.cloudpickle_version);
  h->set_token(options.token);
  h->set_role(proto::Hello::WORKER);
  auto raw_id = FromHex(options.worker_id);
  if (!raw_id) return Err(Code::kInvalidArgument, "the worker id '" + options.worker_id + "' is not hex");
  h->set_id(*raw_id);
  h->set_pid(getpid());
  for (const auto& f : options.task_functions) h->add_task_functions(f);
  if (options.results_fd >= 0) {
    link->results_fd_ = options.results_fd;
    if (auto node = FromHex(options.node_id)) link->node_id_ = *node;
  }
  if (Status s = link->Write(hello); !s.ok()) return Err(s);
  auto first = link->ReadMessage();
  if (!first) return Err(Code::kUnavailable, "the agent did not accept this worker: " + first.error().message());
  proto::AgentToWorker welcome;
  if (!welcome.ParseFromString(*first) || !welcome.has_welcome())
    return Err(Code::kUnavailable, "the agent did not answer with a welcome");
  if (!options.lease_file.empty()) {
    if (Status s = link->StartFence(options.lease_file); !s.ok()) return Err(s);
  }
  return link;
}

Status WorkerLink::StartFence(const std::string& lease_file) {
  int fd = open(lease_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status(Code::kUnavailable, fmt::format("cannot open the lease file {}: {}", lease_file, strerror(errno)));
  void* p = mmap(nullptr, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return Status(Code::kUnavailable, fmt::format("cannot map the lease file {}: {}", lease_file, strerror(errno)));
  lease_ = static_cast<const int64_t*>(p);
  sigevent ev{};
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGKILL;
  if (timer_create(CLOCK_BOOTTIME, &ev, &timer_) != 0)
    return Status(Code::kUnavailable, fmt::format("cannot create the lease timer: {}", strerror(errno)));
  has_timer_ = true;
  watchdog_ = std::thread([this] {
    while (!stop_.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard lock(fence_mu_);
      if (fence_current_) UpdateFence(true);
    }
  });
  return Status::Ok();
}

void WorkerLink::UpdateFence(bool fenced) {
  if (!has_timer_) return;
  fence_current_ = fenced;
  int64_t expiry = fenced ? __atomic_load_n(lease_, __ATOMIC_RELAXED) : 0;
  if (expiry < 0) expiry = 0;  // no lease granted yet: nothing to fence against
  if (expiry == armed_at_) return;
  itimerspec when{};  // all zero disarms
  when.it_value.tv_sec = static_cast<time_t>(expiry / 1'000'000'000);
  when.it_value.tv_nsec = static_cast<long>(expiry % 1'000'000'000);
  // Cannot fail with a valid timer and a normalised time; an expiry already past kills at once,
  // which is the fence doing its job.
  if (timer_settime(timer_, TIMER_ABSTIME, &when, nullptr) == 0) armed_at_ = expiry;
}

WorkerLink::~WorkerLink() {
  stop_ = true;
  if (watchdog_.joinable()) watchdog_.join();
  if (has_timer_) timer_delete(timer_);
  if (lease_) munmap(const_cast<int64_t*>(lease_), sizeof(int64_t));
  if (fd_ >= 0) close(fd_);
  if (results_fd_ >= 0) close(results_fd_);
}

WorkerLink::Channel::~Channel() {
  if (fd >= 0) close(fd);
}

Result<std::string> WorkerLink::ReadMessage() {
  while (messages_.empty()) {
    // buf_ keeps its size (grown, never zeroed again): bytes [0, buffered_) are read, not decoded.
    size_t want = std::max(buffered_ + 65536, decoder_.pending_frame_bytes());
    if (buf_.size() < want) buf_.resize(want);
    ssize_t n = recv(fd_, buf_.data() + buffered_, buf_.size() - buffered_, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return Err(Code::kUnavailable, n == 0 ? "the agent closed the connection" : strerror(errno));
    }
    buffered_ += static_cast<size_t>(n);
    auto used = decoder_.Decode(std::string_view(buf_.data(), buffered_),
                                [this](std::string_view m) { messages_.emplace_back(m); });
    if (!used) return Err(used.error());
    if (*used > 0) std::memmove(buf_.data(), buf_.data() + *used, buffered_ - *used);
    buffered_ -= *used;
    if (buffered_ == 0 && buf_.size() > (4u << 20)) std::string().swap(buf_);  // (after a large argument)
  }
  std::string out = std::move(messages_.front());
  messages_.pop_front();
  queued_.store(messages_.size(), std::memory_order_relaxed);
  return out;
}

Result<proto::ExecuteTask> WorkerLink::NextTask() {
  for (;;) {
    auto bytes = ReadMessage();
    if (!bytes) return Err(bytes.error());
    proto::AgentToWorker msg;
    if (!msg.ParseFromString(*bytes)) return Err(Code::kInvalidArgument, "malformed message from the agent");
    if (msg.has_execute()) {
      const proto::TaskSpec& spec = msg.execute().spec();
      {
        std::lock_guard lock(fence_mu_);
        bool keep = spec.keep_running_on_partition();
        if (spec.has_actor()) actor_keep_running_ = keep;  // its calls follow the actor's choice
        else if (!spec.actor_id().empty()) keep = actor_keep_running_;
        UpdateFence(!keep);
      }
      if (uint64_t channel = msg.execute().result_channel(); channel != 0 && results_fd_ >= 0) {
        std::lock_guard results(results_mu_);
        call_channels_[spec.task_id()] = channel;
      }
      hop_trace::Mark(hop_trace::kWorkerGotCall);
      return std::move(*msg.mutable_execute());
    }
  }
}

Status WorkerLink::Write(const google::protobuf::MessageLite& msg) {
  net::FrameBuilder b;
  size_t n = msg.ByteSizeLong();
  msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(b.AppendMessage(n)));
  std::string frame = b.Take();
  std::lock_guard lock(write_mu_);
  size_t off = 0;
  while (off < frame.size()) {
    ssize_t w = send(fd_, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status(Code::kUnavailable, std::string("the agent is gone: ") + strerror(errno));
    }
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status WorkerLink::Finish(const proto::TaskFinished& finished) {
  hop_trace::Mark(hop_trace::kWorkerFinish);
  {
    std::lock_guard lock(fence_mu_);
    if (!actor_) UpdateFence(false);
  }
  proto::WorkerToAgent msg;
  *msg.mutable_finished() = finished;
  if (results_fd_ >= 0 && DeliverToCaller(finished)) msg.mutable_finished()->set_delivered(true);
  hop_trace::Mark(hop_trace::kWorkerWrites);
  return Write(msg);
}

void WorkerLink::ReceiveChannels() {
  net::ReceiveTaggedFds(results_fd_, [this](uint64_t n, int fd) {
    channels_.erase(n);  // (a number alone: the agent took it back, its caller left)
    if (fd < 0) return;
    auto channel = std::make_shared<Channel>();
    channel->fd = fd;
    channels_[n] = std::move(channel);
  });
}

bool WorkerLink::DeliverToCaller(const proto::TaskFinished& finished) {
  constexpr uint32_t kTakeBackEvery = 64;  // deliveries between looks at the agent's take-backs
  std::shared_ptr<Channel> channel;
  uint64_t n;
  {
    std::lock_guard lock(results_mu_);
    auto call = call_channels_.find(finished.task_id());
    if (call == call_channels_.end()) return false;
    n = call->second;
    call_channels_.erase(call);
    // Calls already queued here: a caller that pipelines them, whose results the agent sends many
    // to a frame. Written here, each would cost a send of its own (and the agent's report one too).
    if (queued_.load(std::memory_order_relaxed) > 0) return false;
    // A channel is handed over before the first call that names it; the take-backs of callers that
    // left are read now and then (they hold nothing up: the caller closed its end).
    auto it = channels_.find(n);
    if (it == channels_.end() || ++deliveries_ % kTakeBackEvery == 0) {
      ReceiveChannels();
      it = channels_.find(n);
    }
    if (it == channels_.end()) return false;
    channel = it->second;
  }
  proto::AgentToCaller out;  // as the agent would have relayed it
  proto::TaskFinished* f = out.mutable_finished();
  *f = finished;
  f->set_node_id(node_id_);
  f->set_direct(true);
  net::FrameBuilder b;
  size_t size = out.ByteSizeLong();
  out.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(b.AppendMessage(size)));
  std::string frame = b.Take();
  hop_trace::Mark(hop_trace::kWorkerWritesToCaller);
  std::lock_guard turn(channel->write_mu);
  return WriteChannel(*channel, n, frame);
}

bool WorkerLink::WriteChannel(Channel& channel, uint64_t n, const std::string& frame) {
  // Without waiting: a caller that reads nothing gets its results from the agent. Once part of a
  // frame is in, the rest must follow (the stream would be garbage otherwise): waited for up to a
  // deadline for the whole frame, then the channel is closed (the caller drops the part) and the
  // agent sends the result. Only this channel's writers wait meanwhile.
  constexpr auto kFinishWithin = std::chrono::seconds(2);
  auto deadline = std::chrono::steady_clock::now() + kFinishWithin;
  size_t off = 0;
  while (off < frame.size()) {
    ssize_t w = send(channel.fd, frame.data() + off, frame.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
      off += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    bool would_block = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (would_block && off == 0) return false;  // nothing written: the channel stays
    if (!would_block) break;                   // broken: the caller left
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd p{channel.fd, POLLOUT, 0};
    if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) break;
  }
  if (off == frame.size()) return true;
  std::lock_guard lock(results_mu_);  // (later calls of this caller's go through the agent)
  if (auto it = channels_.find(n); it != channels_.end() && it->second.get() == &channel) channels_.erase(it);
  shutdown(channel.fd, SHUT_RDWR);  // (a writer holding it still sees it broken; closed with the last)
  return false;
}

Status WorkerLink::ActorReady(const std::string& actor_id, uint32_t attempt) {
  {
    std::lock_guard lock(fence_mu_);
    actor_ = true;
    UpdateFence(!actor_keep_running_);
  }
  proto::WorkerToAgent msg;
  msg.mutable_actor_ready()->set_actor_id(actor_id);
  msg.mutable_actor_ready()->set_attempt(attempt);
  return Write(msg);
}

Status WorkerLink::GeneratorItem(const std::string& task_id, uint32_t index, const std::string& object_id) {
  proto::WorkerToAgent msg;
  proto::GeneratorItem* item = msg.mutable_item();
  item->set_task_id(task_id);
  item->set_index(index);
  item->set_object_id(object_id);
  return Write(msg);
}

Status WorkerLink::Blocked(const std::string& task_id, bool blocked) {
  proto::WorkerToAgent msg;
  msg.mutable_blocked()->set_task_id(task_id);
  msg.mutable_blocked()->set_blocked(blocked);
  return Write(msg);
}

}  // namespace corral::client
