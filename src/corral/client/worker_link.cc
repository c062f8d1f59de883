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
  link->spin_ = options.spin;
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
  if (link->has_timer_ || link->results_fd_ >= 0) link->StartTicker();
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
  return Status::Ok();
}

void WorkerLink::StartTicker() {
  // Every 50 ms: the fence follows the agent's renewed lease, and results held for a pipelining
  // caller go if they have waited (the call after them runs long), their reports after them. (A
  // frame begun here is finished within 20 ms or its channel closed: the fence must not wait.)
  watchdog_ = std::thread([this] {
    while (!stop_.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      {
        std::lock_guard lock(fence_mu_);
        if (fence_current_) UpdateFence(true);
      }
      if (ReportsDue()) {  // (reports wait only behind held results)
        WriteHeld(std::chrono::milliseconds(20));
        (void)FlushReports();  // (an agent that is gone shows in NextTask)
      }
    }
  });
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

Result<ssize_t> WorkerLink::InBuffer::Read(int fd, int flags, size_t chunk,
                                           const std::function<void(std::string_view)>& on_message) {
  size_t want = std::max(buffered + chunk, decoder.pending_frame_bytes());
  if (buf.size() < want) buf.resize(want);
  ssize_t n = recv(fd, buf.data() + buffered, buf.size() - buffered, flags);
  if (n <= 0) return n;
  buffered += static_cast<size_t>(n);
  auto used = decoder.Decode(std::string_view(buf.data(), buffered), on_message);
  if (!used) return Err(used.error());
  if (*used > 0) std::memmove(buf.data(), buf.data() + *used, buffered - *used);
  buffered -= *used;
  if (buffered == 0 && buf.size() > (4u << 20)) std::string().swap(buf);  // (after a large argument)
  return n;
}

Result<std::string> WorkerLink::ReadMessage() {
  auto keep = [this](std::string_view m) { messages_.emplace_back(m); };
  while (messages_.empty()) {
    auto n = in_.Read(fd_, 0, 65536, keep);
    if (!n) return Err(n.error());
    if (*n < 0 && errno == EINTR) continue;
    if (*n <= 0) return Err(Code::kUnavailable, *n == 0 ? "the agent closed the connection" : strerror(errno));
  }
  std::string out = std::move(messages_.front());
  messages_.pop_front();
  queued_.store(messages_.size(), std::memory_order_relaxed);
  return out;
}

namespace {

constexpr auto kReportAge = std::chrono::milliseconds(1);
constexpr size_t kHeldResults = 64;
constexpr std::chrono::milliseconds kFinishWithin{2000};  // a frame begun on a channel (the ticker: 20 ms)
}  // namespace

void WorkerLink::PrepareCall(const proto::ExecuteTask& task, uint64_t channel, bool from_channel) {
  const proto::TaskSpec& spec = task.spec();
  {
    std::lock_guard lock(fence_mu_);
    bool keep = spec.keep_running_on_partition();
    if (spec.has_actor()) actor_keep_running_ = keep;  // its calls follow the actor's choice
    else if (!spec.actor_id().empty()) keep = actor_keep_running_;
    UpdateFence(!keep);
  }
  if (spec.has_actor()) actor_id_ = spec.actor_id();
  if (channel != 0 && results_fd_ >= 0) {
    std::lock_guard results(results_mu_);
    call_channels_[spec.task_id()] = {channel, from_channel};
  }
  hop_trace::Mark(hop_trace::kWorkerGotCall);
}

Result<proto::ExecuteTask> WorkerLink::NextTask(uint32_t* seq) {
  reader_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  for (;;) {
    while (!messages_.empty()) {
      std::string bytes = std::move(messages_.front());
      messages_.pop_front();
      queued_.store(messages_.size() + channel_calls_.size(), std::memory_order_relaxed);
      proto::AgentToWorker msg;
      if (!msg.ParseFromString(bytes)) return Err(Code::kInvalidArgument, "malformed message from the agent");
      if (!msg.has_execute()) continue;
      if (held_channel_ != 0) SendHeldResults();  // (before another caller's call runs)
      ++agent_seq_;
      if (seq) *seq = agent_seq_;
      PrepareCall(msg.execute(), msg.execute().result_channel(), false);
      return std::move(*msg.mutable_execute());
    }
    if (!channel_calls_.empty()) {
      auto& [n, task] = channel_calls_.front();
      uint32_t s = kChannelSeq | (++channel_seq_ & ~kChannelSeq);
      CallTable::Claimed claimed = table_->Claim(task.spec().task_id(), s);
      if (claimed == CallTable::Claimed::kFull) {  // the agent frees entries as it reads our reports
        if (Status st = FlushReports(); !st.ok()) return Err(st);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      proto::ExecuteTask call = std::move(task);
      uint64_t from = n;
      channel_calls_.pop_front();
      queued_.store(messages_.size() + channel_calls_.size(), std::memory_order_relaxed);
      if (claimed == CallTable::Claimed::kRefused) continue;  // the head sends it itself
      if (held_channel_ != 0 && held_channel_ != from) SendHeldResults();
      if (seq) *seq = s;
      call.set_result_channel(from);
      PrepareCall(call, from, true);
      return call;
    }
    if (Status st = Fill(/*wait=*/true); !st.ok()) return Err(st);
  }
}

Status WorkerLink::Fill(bool wait) {
  if (results_fd_ < 0) {  // the agent alone: wait on its socket
    auto bytes = ReadMessage();
    if (!bytes) return bytes.error();
    messages_.push_front(std::move(*bytes));
    return Status::Ok();
  }
  SendHeldResults();
  std::vector<pollfd> fds;
  std::vector<std::pair<uint64_t, std::shared_ptr<Channel>>> channels;
  auto spin_until = std::chrono::steady_clock::now() + spin_;
  for (bool spinning = spin_.count() > 0;;) {
    fds.assign({pollfd{fd_, POLLIN, 0}, pollfd{results_fd_, POLLIN, 0}});
    channels.clear();
    {
      std::lock_guard lock(results_mu_);
      for (auto& [n, c] : channels_)
        if (c->calls) {
          channels.emplace_back(n, c);
          fds.push_back(pollfd{c->fd, POLLIN, 0});
        }
    }
    if (channels.empty()) spinning = false;  // (no caller to wait for so eagerly)
    int ready = poll(fds.data(), fds.size(), spinning || !wait ? 0 : -1);
    if (ready < 0 && errno != EINTR) return Status(Code::kUnavailable, std::string("poll: ") + strerror(errno));
    if (ready > 0) {
      if (fds[0].revents) {
        auto n = in_.Read(fd_, MSG_DONTWAIT, 65536, [this](std::string_view m) { messages_.emplace_back(m); });
        if (!n) return n.error();
        if (*n == 0 || (*n < 0 && errno != EINTR && errno != EAGAIN))
          return Status(Code::kUnavailable, *n == 0 ? "the agent closed the connection" : strerror(errno));
      }
      if (fds[1].revents) {
        std::lock_guard lock(results_mu_);
        ReceiveChannels();
      }
      for (size_t i = 0; i < channels.size(); ++i)
        if (fds[i + 2].revents && !ReadChannel(channels[i].first, *channels[i].second)) {
          std::lock_guard lock(results_mu_);
          if (auto it = channels_.find(channels[i].first); it != channels_.end() && it->second == channels[i].second)
            channels_.erase(it);
          shutdown(channels[i].second->fd, SHUT_RDWR);
          ChannelClosed(channels[i].first);  // (its caller hands its calls back to the head)
        }
    }
    bool got = !messages_.empty() || !channel_calls_.empty();
    queued_.store(messages_.size() + channel_calls_.size(), std::memory_order_relaxed);
    if (got || !wait) return Status::Ok();
    if (spinning && std::chrono::steady_clock::now() >= spin_until) spinning = false;
  }
}

bool WorkerLink::ReadChannel(uint64_t n, Channel& c) {
  bool ok = true;
  auto got = c.in.Read(c.fd, MSG_DONTWAIT, 16384, [&](std::string_view bytes) {
    proto::CallerToAgent msg;
    if (!ok || !msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || !msg.has_call()) {
      ok = false;
      return;
    }
    // As the agent checks a call on its own connection: only this actor's calls, under the caller's
    // ids, first attempts, arguments inline.
    const proto::TaskSpec& spec = msg.call().spec();
    bool stored = std::any_of(msg.call().deps().begin(), msg.call().deps().end(),
                              [](const proto::ObjectValue& v) { return v.stored_size() > 0; });
    if (actor_id_.empty() || spec.actor_id() != actor_id_ || spec.has_actor() || spec.task_id() == actor_id_ ||
        spec.task_id().size() != CallTable::kIdBytes || !spec.task_id().starts_with(c.client_id) ||
        spec.task_id().size() <= c.client_id.size() || spec.attempt() != 0 || stored) {
      ok = false;
      return;
    }
    channel_calls_.emplace_back(n, std::move(*msg.mutable_call()));
  });
  if (!got || !ok || *got == 0) return false;
  return *got > 0 || errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK;
}

Status WorkerLink::Write(const google::protobuf::MessageLite& msg) {
  net::FrameBuilder b;
  size_t n = msg.ByteSizeLong();
  msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(b.AppendMessage(n)));
  return SendFrame(b.Take());
}

Status WorkerLink::Finish(const proto::TaskFinished& finished) {
  hop_trace::Mark(hop_trace::kWorkerFinish);
  {
    std::lock_guard lock(fence_mu_);
    if (!actor_) UpdateFence(false);
  }
  proto::WorkerToAgent msg;
  *msg.mutable_finished() = finished;
  CallChannel call;
  if (results_fd_ >= 0 && DeliverToCaller(finished, &call)) msg.mutable_finished()->set_delivered(true);
  if (call.from_channel) {
    msg.mutable_finished()->set_channel(call.n);
    // A result held for a pipelining caller: its report goes with the others, after the results
    // (SendHeldResults). A result written now is reported now, so a worker killed after the write
    // leaves its end unreported for two sends at most (decision 46): the agent would end it with
    // the worker, and the head run it again.
    if (call.held) {
      QueueReport(msg);
      return Status::Ok();
    }
  }
  hop_trace::Mark(hop_trace::kWorkerWrites);
  if (Status st = FlushReports(); !st.ok()) return st;
  return Write(msg);
}

void WorkerLink::QueueReport(const google::protobuf::MessageLite& msg) {
  std::lock_guard lock(reports_mu_);  // (sent with the held results, or by the ticker when due)
  if (reports_.empty()) oldest_report_ = std::chrono::steady_clock::now();
  size_t n = msg.ByteSizeLong();
  msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(reports_.AppendMessage(n)));
}

bool WorkerLink::ReportsDue() {
  std::lock_guard lock(reports_mu_);
  return !reports_.empty() && std::chrono::steady_clock::now() - oldest_report_ > kReportAge;
}

Status WorkerLink::FlushReports() {
  std::string frame;
  {
    std::lock_guard lock(reports_mu_);
    if (reports_.empty()) return Status::Ok();
    frame = reports_.Take();
  }
  return SendFrame(frame);
}

Status WorkerLink::SendFrame(const std::string& frame) {
  std::lock_guard lock(write_mu_);
  for (size_t off = 0; off < frame.size();) {
    ssize_t w = send(fd_, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status(Code::kUnavailable, std::string("the agent is gone: ") + strerror(errno));
    }
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

void WorkerLink::ReceiveChannels() {
  net::ReceiveTaggedFds(results_fd_, [this](uint64_t n, int fd, std::string_view client_id) {
    if (n == CallTable::kHandOverTag) {
      if (fd >= 0 && !table_)
        if (auto t = CallTable::Map(fd)) table_ = std::make_unique<CallTable>(std::move(*t));
      if (fd >= 0) close(fd);
      return;
    }
    if (auto old = channels_.find(n); old != channels_.end()) {  // (a number alone: the agent took it back)
      shutdown(old->second->fd, SHUT_RDWR);  // (calls unread there are its caller's to hand back)
      channels_.erase(old);
    }
    if (fd < 0) return;
    auto channel = std::make_shared<Channel>();
    channel->fd = fd;
    channel->client_id = client_id;
    // With the table (and a caller named) the caller may send its calls here: it is told so first.
    if (table_ && !client_id.empty()) {
      proto::AgentToCaller welcome;
      welcome.set_welcome(true);
      net::FrameBuilder b;
      b.AppendMessage(welcome.SerializeAsString());
      std::string frame = b.Take();
      channel->calls = send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL) ==
                       static_cast<ssize_t>(frame.size());
    }
    channels_[n] = std::move(channel);
  });
}

bool WorkerLink::DeliverToCaller(const proto::TaskFinished& finished, CallChannel* found) {
  constexpr uint32_t kTakeBackEvery = 64;  // deliveries between looks at the agent's take-backs
  std::shared_ptr<Channel> channel;
  uint64_t n;
  {
    std::lock_guard lock(results_mu_);
    auto call = call_channels_.find(finished.task_id());
    if (call == call_channels_.end()) return false;
    *found = call->second;
    n = call->second.n;
    call_channels_.erase(call);
    // Calls already queued here: a caller that pipelines them through the agent, whose results the
    // agent sends many to a frame. Written here, each would cost a send of its own (and the agent's
    // report one too). A call that came on its channel goes back there.
    if (!found->from_channel && queued_.load(std::memory_order_relaxed) > 0) return false;
    // A channel is handed over before the first call that names it; the take-backs of callers that
    // left are read now and then (they hold nothing up: the caller closed its end).
    auto it = channels_.find(n);
    // (NextTask's thread only: the channels it waits on are those it took in.)
    bool reader = std::this_thread::get_id() == reader_.load(std::memory_order_relaxed);
    if (reader && (it == channels_.end() || ++deliveries_ % kTakeBackEvery == 0)) {
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
  size_t size = out.ByteSizeLong();
  std::lock_guard turn(channel->write_mu);
  out.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(channel->held.AppendMessage(size)));
  // A caller that pipelines on its channel: while its next call waits here, results are held and
  // leave many to a frame (by NextTask's thread only, which sends them before it runs another
  // caller's call or waits again).
  if (found->from_channel && std::this_thread::get_id() == reader_.load(std::memory_order_relaxed) &&
      messages_.empty() && !channel_calls_.empty() && channel_calls_.front().first == n &&
      channel->held.message_count() < kHeldResults) {
    found->held = true;
    held_channel_ = n;
    return true;
  }
  hop_trace::Mark(hop_trace::kWorkerWritesToCaller);
  bool must = channel->held.message_count() > 1;  // (results held before this one were reported delivered)
  return WriteChannel(*channel, n, channel->held.Take(), must, kFinishWithin);
}

void WorkerLink::SendHeldResults() {
  WriteHeld(kFinishWithin);
  held_channel_ = 0;
  (void)FlushReports();  // (their reports, after them; an agent that is gone shows in NextTask)
}

void WorkerLink::WriteHeld(std::chrono::milliseconds finish_within) {
  std::vector<std::pair<uint64_t, std::shared_ptr<Channel>>> holding;
  {
    std::lock_guard lock(results_mu_);
    for (auto& [n, c] : channels_) holding.emplace_back(n, c);
  }
  for (auto& [n, c] : holding) {
    std::lock_guard turn(c->write_mu);
    if (!c->held.empty()) WriteChannel(*c, n, c->held.Take(), /*must=*/true, finish_within);
  }
}

bool WorkerLink::WriteChannel(Channel& channel, uint64_t n, const std::string& frame, bool must,
                              std::chrono::milliseconds finish_within) {
  // Without waiting: a caller that reads nothing gets its results from the agent. Once part of a
  // frame is in, the rest must follow (the stream would be garbage otherwise): waited for up to a
  // deadline for the whole frame, then the channel is closed (the caller drops the part) and the
  // agent sends the result. Only this channel's writers wait meanwhile. A frame that `must` go
  // (results held, already reported delivered) is waited for from its first byte; if it cannot
  // go, the channel is closed and its caller asks the head for them (DirectLost).
  auto deadline = std::chrono::steady_clock::now() + finish_within;
  size_t off = 0;
  while (off < frame.size()) {
    ssize_t w = send(channel.fd, frame.data() + off, frame.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
      off += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    bool would_block = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (would_block && off == 0 && !must) return false;  // nothing written: the channel stays
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
  if (channel.calls) ChannelClosed(n);
  return false;
}

void WorkerLink::ChannelClosed(uint64_t n) {
  proto::WorkerToAgent msg;
  msg.set_channel_closed(n);
  (void)Write(msg);  // (an agent that is gone shows in NextTask)
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
