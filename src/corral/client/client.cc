#include "corral/client/client.h"

#include "corral/base/files.h"

#include <unistd.h>

#include <cstdio>

#include "corral/base/hop_trace.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/base/version.h"

namespace corral::client {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

Clock::time_point DeadlineFor(double timeout_s) {
  if (timeout_s < 0) return Clock::time_point::max();
  return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
}

std::string MajorMinor(const std::string& v) {
  size_t a = v.find('.');
  if (a == std::string::npos) return v;
  size_t b = v.find('.', a + 1);
  return b == std::string::npos ? v : v.substr(0, b);
}

constexpr size_t kReleaseBatch = 512;

}  // namespace

Client::Client(const ClientOptions& options)
    : options_(options),
      client_id_(RandomBytes(8)),
      python_minor_(MajorMinor(options.python_version)),
      reads_(std::make_unique<ReadWatcher>(options.direct_spin)) {}

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  RaiseOpenFilesLimit();  // a connection per actor called directly
  std::unique_ptr<Client> c(new Client(options));
  Status s = c->Handshake();
  if (!s.ok()) return Err(s);
  return c;
}

Client::~Client() {
  if (io_->in_forked_child()) {
    // Objects shared with the parent's IO thread: leave them alone.
    new std::shared_ptr<net::Connection>(conn_.load());
    new std::thread(std::move(reconnect_thread_));  // a parent's thread: not joinable or detachable here
    new std::vector<std::thread>(std::move(router_threads_));
    io_.release();
    reads_.release();
    return;
  }
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
    cv_.notify_all();
    route_cv_.notify_all();
  }
  if (reconnect_thread_.joinable()) reconnect_thread_.join();
  for (auto& t : router_threads_) t.join();  // (their waits end on shutting_down_)
  FlushReleases();
  auto c = conn();
  if (c && !c->closed()) {
    proto::ClientToHead bye;
    bye.mutable_goodbye();
    c->Send(bye);
    c->CloseAfterFlush(Status(Code::kCancelled, "client closing"));
    // Give the IO thread a moment to send what is queued (releases) before it stops.
    auto deadline = Clock::now() + std::chrono::milliseconds(200);
    while (!c->closed() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  io_->Stop();   // no handler runs after this (io handlers use the watcher: OnAgentClose)
  reads_.reset();  // no agent's message is read after this
  c.reset();
  conn_.store(nullptr);  // its timers need the io_context, which goes last
  direct_.clear();       // (so do the connections to agents)
  io_.reset();
}

Status Client::Handshake() {
  auto c = Dial();
  if (!c) return c.error();
  std::lock_guard lock(mu_);
  conn_.store(*c);
  pending_.store(nullptr);
  return Status::Ok();
}

Result<std::shared_ptr<net::Connection>> Client::Dial() {
  std::unique_ptr<net::ByteStream> stream;
  Status dial_status;
  bool dialed = false;
  net::Dial(io_->io(), options_.head, options_.tls, options_.connect_timeout,
            [&](Result<std::unique_ptr<net::ByteStream>> r) {
              std::lock_guard lock(mu_);
              if (r) stream = std::move(*r);
              else dial_status = r.error();
              dialed = true;
              cv_.notify_all();
            });
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return dialed; });
    welcome_.reset();
  }
  if (!stream)
    return Err(dial_status.code(), dial_status.message() + "; is the head running? (`corral status`)");
  net::ConnectionOptions copts;
  copts.direct_writes = true;
  copts.late_delay = options_.late_record;
  copts.keep_unsent = true;  // (UnsentRecords)
  auto c = net::Connection::Create(std::move(stream), copts);
  net::Connection* raw = c.get();
  // Not yet the connection calls use: until published, only the handshake (and a replay) use it.
  pending_.store(raw);
  asio::post(io_->io(), [this, c, raw] {
    c->Start([this, raw](std::string_view m) { OnMessage(raw, m); },
             [this, raw](const Status& s) { OnClose(raw, s); });
  });
  proto::ClientToHead hello;
  proto::Hello* h = hello.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_corral_version(CORRAL_VERSION);
  h->set_python_version(options_.python_version);
  h->set_cloudpickle_version(options_.cloudpickle_version);
  std::string token = options_.token;
  if (!options_.token_file.empty()) {
    if (auto t = ReadFile(options_.token_file); t && !t->empty()) token = t->substr(0, t->find('\n'));
  }
  h->set_token(token);
  h->set_role(proto::Hello::CLIENT);
  h->set_name(options_.name);
  h->set_id(client_id_);
  {
    std::lock_guard lock(mu_);
    h->set_resume_secret(resume_secret_);
  }
  h->set_pid(getpid());
  c->Send(hello);
  std::unique_lock lock(mu_);
  if (!cv_.wait_until(lock, Clock::now() + options_.connect_timeout,
                      [&] { return welcome_.has_value() || c->closed() || shutting_down_; })) {
    lock.unlock();
    c->Close(Status(Code::kDeadlineExceeded, "no welcome"));
    return Err(Code::kDeadlineExceeded, "the head did not answer the handshake in time");
  }
  if (welcome_ && !welcome_->ok()) return Err(*welcome_);
  if (!welcome_ || c->closed())
    return Err(closed_reason_.ok() ? Status(Code::kUnavailable, "the head closed the connection") : closed_reason_);
  return c;
}

void Client::OnMessage(net::Connection* from, std::string_view bytes) {
  auto current = conn();
  if (current.get() != from && pending_.load() != from) return;  // a connection already replaced
  proto::HeadToClient msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    from->Close(Status(Code::kInvalidArgument, "malformed message from the head"));
    return;
  }
  switch (msg.msg_case()) {
    case proto::HeadToClient::kWelcome: {
      std::lock_guard lock(mu_);
      if (msg.welcome().error().empty()) {
        welcome_ = Status::Ok();
        session_ = msg.welcome().session_id();
        resume_secret_ = msg.welcome().resume_secret();
        from->MarkHandshakeDone();
      } else {
        welcome_ = Status(Code::kPermissionDenied, "the head refused the connection: " + msg.welcome().error());
      }
      cv_.notify_all();
      break;
    }
    case proto::HeadToClient::kReady: {
      auto value = std::make_shared<proto::ObjectValue>(std::move(*msg.mutable_ready()));
      std::lock_guard lock(mu_);
      if (value->error() == proto::RECONSTRUCTING) {  // lost with its node; the new value follows
        ready_.erase(value->id());
        break;
      }
      OnValueLocked(std::move(value));
      break;
    }
    case proto::HeadToClient::kReply: {
      std::lock_guard lock(mu_);
      auto it = replies_.find(msg.reply().request_id());
      if (it != replies_.end()) {
        it->second = std::move(*msg.mutable_reply());
        cv_.notify_all();
      }
      break;
    }
    case proto::HeadToClient::kLog: {
      const proto::LogLine& l = msg.log();
      if (!l.item_id().empty()) {  // a generator's value, not a line
        std::lock_guard lock(mu_);
        // Kept while the generator's result is referenced here (DropRefLocked forgets them).
        auto r = refs_.find(l.task_id());
        if (r == refs_.end() || r->second <= 0) break;
        auto& items = items_[l.task_id()];
        if (l.item_index() > items.size()) break;  // they come in order: no gap to fill
        if (items.size() <= l.item_index()) items.resize(l.item_index() + 1);
        items[l.item_index()] = l.item_id();
        cv_.notify_all();
        break;
      }
      if (!options_.print_logs) break;
      std::string line = fmt::format("({} pid={} node={}) {}\n", l.task_name(), l.pid(), ShortHex(l.node_id()),
                                     l.text());
      std::fwrite(line.data(), 1, line.size(), l.stderr() ? stderr : stdout);
      std::fflush(l.stderr() ? stderr : stdout);
      break;
    }
    case proto::HeadToClient::kNotice: {
      if (!options_.print_logs) break;
      std::string line = fmt::format("corral: {}\n", msg.notice().text());
      std::fwrite(line.data(), 1, line.size(), stderr);
      break;
    }
    default: break;
  }
}

void Client::OnValueLocked(ObjectPtr value) {
  const std::string& id = value->id();
  unfinished_.erase(id);
  cancels_.erase(id);
  EndCallLocked(id);
  auto r = refs_.find(id);
  if ((r != refs_.end() && r->second > 0) || subscribed_.erase(id)) {
    ready_[id] = std::move(value);
    cv_.notify_all();
  }
}

void Client::EndCallLocked(const std::string& id) {
  auto call = calls_.find(id);
  if (call == calls_.end()) return;  // not an actor call
  if (auto d = direct_.find(call->second); d != direct_.end() && !d->second.End(id) && d->second.via_head > 0) {
    DirectActor& actor = d->second;
    // The last call through the head of an actor that was not ready: it may be now.
    if (--actor.via_head == 0 && actor.next_route == std::chrono::steady_clock::time_point::max())
      actor.next_route = {};
  }
  calls_.erase(call);
}

void Client::OnClose(net::Connection* from, const Status& reason) {
  std::lock_guard lock(mu_);
  cv_.notify_all();  // a handshake waiting on this connection sees it closed
  if (conn().get() != from) return;
  if (closed_ || reconnecting_) return;
  Status lost(Code::kUnavailable,
              "lost the connection to the head at " + options_.head.ToString() + ": " + reason.message());
  bool established = welcome_.has_value() && welcome_->ok();
  if (!options_.reconnect || shutting_down_ || !established || io_->in_forked_child()) {
    closed_ = true;
    closed_reason_ = lost;
    return;
  }
  reconnecting_ = true;
  connections_lost_++;  // requests waiting for an answer on it give up
  if (options_.print_logs)
    std::fprintf(stderr, "corral: %s; reconnecting for up to %llds\n", lost.message().c_str(),
                 static_cast<long long>(options_.reconnect_for.count() / 1000));
  if (reconnect_thread_.joinable()) reconnect_thread_.detach();  // it has finished: it set reconnecting_ false
  reconnect_thread_ = std::thread([this, lost] { ReconnectLoop(lost); });
}

Status Client::Send(const proto::ClientToHead& msg, net::Urgency urgency) {
  auto c = conn();
  auto lost = [&] {
    std::lock_guard lock(mu_);
    if (closed_) return closed_reason_;
    // Reconnecting: what matters (puts, submissions, subscriptions) is replayed on the new connection.
    if (reconnecting_ || (options_.reconnect && !shutting_down_)) return Status::Ok();
    return Status(Code::kUnavailable, "the connection to the head at " + options_.head.ToString() + " closed");
  };
  if (!c->has_room() && !c->WaitForRoom(Clock::time_point::max())) return lost();
  if (!c->Send(msg, urgency)) {
    if (c->closed()) return lost();
    return Status(Code::kResourceExhausted,
                  fmt::format("message of {} bytes exceeds the {} byte limit of one message", msg.ByteSizeLong(),
                              net::kDefaultMaxFrameBytes));
  }
  return Status::Ok();
}

int Client::RegisterFunction(const std::string& name, const std::string& hash, const std::string& pickled,
                             const std::map<std::string, double>& resources,
                             const std::map<std::string, std::string>& label_selector, uint32_t max_retries,
                             bool interruptible, bool keep_running_on_partition, const proto::ActorSpec* actor,
                             const std::string& gang_id, int gang_member) {
  proto::TaskSpec spec;
  if (actor) *spec.mutable_actor() = *actor;
  if (!gang_id.empty()) {
    spec.set_gang_id(gang_id);
    spec.set_gang_member(gang_member);
  }
  spec.set_name(name);
  spec.set_function_hash(hash);
  spec.set_function(pickled);
  for (const auto& [k, v] : resources)
    if (v > 0) (*spec.mutable_resources())[k] = v;
  for (const auto& [k, v] : label_selector) (*spec.mutable_label_selector())[k] = v;
  spec.set_max_retries(max_retries);
  spec.set_interruptible(interruptible);
  spec.set_keep_running_on_partition(keep_running_on_partition);
  spec.set_python_version(python_minor_);
  spec.set_cloudpickle_major(options_.cloudpickle_version.substr(0, options_.cloudpickle_version.find('.')));
  spec.set_owner_id(client_id_);
  std::lock_guard lock(mu_);
  functions_.push_back(std::move(spec));
  return static_cast<int>(functions_.size() - 1);
}

Result<std::string> Client::Submit(int function, std::string args, const std::vector<std::string>& deps) {
  // The first submission of a function carries it; none may overtake that one on the way out.
  std::lock_guard submit_lock(submit_mu_);
  proto::ClientToHead msg;
  proto::TaskSpec* spec = msg.mutable_submit();
  {
    std::lock_guard lock(mu_);
    if (function < 0 || function >= static_cast<int>(functions_.size()))
      return Err(Code::kInvalidArgument, "unknown function handle");
    const proto::TaskSpec& tmpl = functions_[function];
    // Copy everything but the pickled function, which travels once per connection.
    spec->set_name(tmpl.name());
    spec->set_function_hash(tmpl.function_hash());
    *spec->mutable_resources() = tmpl.resources();
    *spec->mutable_label_selector() = tmpl.label_selector();
    spec->set_max_retries(tmpl.max_retries());
    spec->set_interruptible(tmpl.interruptible());
    spec->set_keep_running_on_partition(tmpl.keep_running_on_partition());
    spec->set_python_version(tmpl.python_version());
    spec->set_cloudpickle_major(tmpl.cloudpickle_major());
    if (tmpl.has_actor()) *spec->mutable_actor() = tmpl.actor();
    if (!tmpl.gang_id().empty()) {
      spec->set_gang_id(tmpl.gang_id());
      spec->set_gang_member(tmpl.gang_member());
    }
    if (shipped_.insert(tmpl.function_hash()).second) spec->set_function(tmpl.function());
  }
  return SendTask(msg, std::move(args), deps);
}

Result<std::string> Client::SubmitCall(const std::string& actor_id, const std::string& name, const std::string& method,
                                       std::string args, const std::vector<std::string>& deps, uint32_t max_retries,
                                       const std::string& concurrency_group, bool direct) {
  hop_trace::Mark(hop_trace::kCallerSubmit);
  std::lock_guard submit_lock(submit_mu_);
  proto::ClientToHead msg;
  proto::TaskSpec* spec = msg.mutable_submit();
  spec->set_name(name);
  spec->set_actor_id(actor_id);
  spec->set_method(method);
  spec->set_concurrency_group(concurrency_group);
  spec->set_max_retries(max_retries);
  spec->set_python_version(python_minor_);
  std::shared_ptr<net::Connection> agent;
  std::vector<ObjectPtr> dep_values;
  if (direct && options_.direct_actor_calls) {
    std::string node;
    agent = DirectRoute(actor_id, deps, &node, &dep_values);
    if (agent) spec->set_direct_node(node);
  }
  return SendTask(msg, std::move(args), deps, agent.get(), dep_values);
}

Result<std::string> Client::SendTask(proto::ClientToHead& msg, std::string args, const std::vector<std::string>& deps,
                                     net::Connection* agent, const std::vector<ObjectPtr>& dep_values) {
  proto::TaskSpec* spec = msg.mutable_submit();
  std::string id;
  bool is_call = !spec->actor_id().empty() && !spec->has_actor();
  {
    std::lock_guard lock(mu_);
    if (closed_) return Err(closed_reason_);
    spec->set_nested(options_.in_worker);
    id = MakeTaskId(client_id_, ++next_task_);
    owned_.insert(id);
    refs_[id]++;  // the handle the caller is about to create
    if (is_call) {  // its place in its actor's line: through the head, until it is sent straight on
      calls_[id] = spec->actor_id();
      direct_[spec->actor_id()].via_head++;
    }
  }
  spec->set_task_id(id);
  if (spec->has_actor()) spec->set_actor_id(id);  // an actor is named by its creation task
  spec->set_args(std::move(args));
  for (const auto& d : deps) spec->add_deps(d);
  std::optional<proto::CallerToAgent> direct;
  if (agent) {
    direct.emplace();
    proto::ExecuteTask* ex = direct->mutable_call();
    *ex->mutable_spec() = *spec;
    for (const auto& v : dep_values) *ex->add_deps() = *v;
    if (direct->ByteSizeLong() + 64 > net::kDefaultMaxFrameBytes) direct.reset();  // the head says why
  }
  if (!direct) spec->clear_direct_node();
  // A direct call goes to its agent first and its record to the head after, so the record is off
  // the call's path (the head keeps an end reported before the record until it comes).
  // Whatever this client says of the call later (DirectLost, a cancel) goes on the head's
  // connection behind the record.
  // The client's only call under way leaves at once (nothing would join it in a frame; corked, it
  // waited for the get() that flushes it, and the io thread woke for the cork's timer), and its
  // record waits (kLate) for the next message to the head, or a moment: a head woken for it while
  // the actor runs the call would take the core the call needs (the head and the actor's worker
  // share one on a small machine, decision 47). One of many calls in flight is corked with the
  // others, and so is its record.
  Status s;
  if (direct) {
    bool alone;
    {
      std::lock_guard lock(mu_);
      recording_ = id;
      alone = calls_.size() == 1;
    }
    SendDirect(spec->actor_id(), id, agent, *direct, alone ? net::Urgency::kNow : net::Urgency::kSoon);
    bool late = alone && options_.late_record.count() > 0;
    s = Send(msg, late ? net::Urgency::kLate : net::Urgency::kSoon);
    hop_trace::Mark(hop_trace::kCallerRecorded);
    bool lost;
    {
      std::lock_guard lock(mu_);
      recording_.clear();
      lost = !lost_direct_.empty();
    }
    if (lost)
      if (auto head = conn()) SendLostDirect(*head);
  } else {
    s = Send(msg, net::Urgency::kSoon);
  }
  std::lock_guard lock(mu_);
  if (!s.ok() && direct) {
    // The head never got its record, but the call is on its way to the actor and its result comes
    // from the agent: it was submitted.
    auto d = direct_.find(spec->actor_id());
    if (d != direct_.end() && d->second.sent.contains(id)) s = Status::Ok();
  }
  if (!s.ok()) {
    EndCallLocked(id);
    owned_.erase(id);
    refs_.erase(id);
    if (!spec->function().empty()) shipped_.erase(spec->function_hash());
    return Err(s);
  }
  if (options_.reconnect && !ready_.contains(id)) {
    spec->clear_function();  // a replay sends it again from the template
    spec->clear_direct_node();  // (and through the head: the agent's held attempts are taken over)
    unfinished_.emplace(id, std::move(*spec));
  }
  return id;
}

std::string Client::NewObjectId() {
  std::lock_guard lock(mu_);
  return MakeTaskId(client_id_, ++next_task_);
}

Result<std::string> Client::Put(std::string data) {
  proto::ObjectValue v;
  v.set_id(NewObjectId());
  v.set_data(std::move(data));
  return PutValue(std::move(v));
}

Result<std::string> Client::PutStored(const std::string& id, uint64_t size, const std::string& node) {
  proto::Request req;
  proto::ObjectValue* v = req.mutable_put_stored();
  v->set_id(id);
  v->set_stored_size(size);
  v->add_locations(node);
  auto local = std::make_shared<proto::ObjectValue>(*v);
  {
    std::lock_guard lock(mu_);
    if (closed_) return Err(closed_reason_);
    owned_.insert(id);
    refs_[id]++;
  }
  auto reply = Request(std::move(req), 60);  // answered once the head recorded it (or refused it)
  std::lock_guard lock(mu_);
  if (!reply) {
    owned_.erase(id);
    refs_.erase(id);
    ready_.erase(id);  // the refusal the head sent as its value
    return Err(reply.error());
  }
  ready_[id] = std::move(local);
  return id;
}

Result<std::string> Client::PutValue(proto::ObjectValue&& value) {
  std::lock_guard submit_lock(submit_mu_);  // not during a replay (it would miss this value)
  proto::ClientToHead msg;
  proto::ObjectValue* v = msg.mutable_put();
  std::string id = value.id();
  {
    std::lock_guard lock(mu_);
    if (closed_) return Err(closed_reason_);
    owned_.insert(id);
    refs_[id]++;
  }
  *v = std::move(value);
  auto local = std::make_shared<proto::ObjectValue>(*v);
  Status s = Send(msg, net::Urgency::kSoon);
  std::lock_guard lock(mu_);
  if (!s.ok()) {
    owned_.erase(id);
    refs_.erase(id);
    return Err(s);
  }
  ready_[id] = std::move(local);
  return id;
}

Status Client::PrepareWait(const std::vector<std::string>& ids) {
  // Objects we neither hold nor own: ask the head to send them when ready.
  proto::ClientToHead sub;
  {
    std::lock_guard lock(mu_);
    for (const auto& id : ids)
      if (!ready_.contains(id) && !owned_.contains(id) && subscribed_.insert(id).second)
        sub.mutable_subscribe()->add_ids(id);
  }
  if (sub.has_subscribe()) CORRAL_RETURN_IF_ERROR(Send(sub));
  std::vector<std::shared_ptr<net::Connection>> agents;  // direct calls must not sit in a cork
  bool only_direct = true;  // (then the head's records of them may wait for their batch)
  {
    std::lock_guard lock(mu_);
    for (const auto& [actor, d] : direct_)
      if (d.conn && !d.sent.empty()) agents.push_back(d.conn);
    for (const auto& id : ids)
      if (!ready_.contains(id) && !DirectCallLocked(id)) only_direct = false;
  }
  if (!only_direct) conn()->Flush();  // submissions being waited for must not sit in the cork
  for (const auto& a : agents) a->Flush();
  return Status::Ok();
}

Result<std::vector<ObjectPtr>> Client::Get(const std::vector<std::string>& ids, double timeout_s) {
  // Counted while we wait, so a value arriving for a handle nobody counts (a ref that came inside a
  // pickled value) is kept until we have it, and dropped after.
  HoldWhileWaiting(ids);
  auto result = GetHeld(ids, timeout_s);
  EndWaiting(ids);
  return result;
}

Result<std::vector<ObjectPtr>> Client::GetHeld(const std::vector<std::string>& ids, double timeout_s) {
  hop_trace::Mark(hop_trace::kCallerGet);
  auto deadline = DeadlineFor(timeout_s);
  if (Status s = PrepareWait(ids); !s.ok()) return Err(s);
  std::unique_lock lock(mu_);
  size_t missing_at = 0;
  auto all_ready = [&] {
    for (; missing_at < ids.size(); ++missing_at)
      if (!ready_.contains(ids[missing_at])) return false;
    return true;
  };
  if (!WaitFor(lock, ids, deadline, [&] { return all_ready() || closed_; })) {  // reconnects wait on
    size_t n = 0;
    for (const auto& id : ids) n += ready_.contains(id);
    return Err(Code::kDeadlineExceeded,
               fmt::format("get() timed out: {} of {} objects ready after {}s", n, ids.size(), timeout_s));
  }
  if (!all_ready()) return Err(closed_reason_);
  std::vector<ObjectPtr> out;
  out.reserve(ids.size());
  for (const auto& id : ids) out.push_back(ready_[id]);
  hop_trace::Mark(hop_trace::kCallerGetReturns);
  return out;
}

Result<std::vector<bool>> Client::Wait(const std::vector<std::string>& ids, size_t num_returns, double timeout_s) {
  HoldWhileWaiting(ids);
  auto result = WaitHeld(ids, num_returns, timeout_s);
  EndWaiting(ids);
  return result;
}

Result<std::vector<bool>> Client::WaitHeld(const std::vector<std::string>& ids, size_t num_returns,
                                           double timeout_s) {
  auto deadline = DeadlineFor(timeout_s);
  if (Status s = PrepareWait(ids); !s.ok()) return Err(s);
  std::unique_lock lock(mu_);
  auto count = [&] {
    size_t n = 0;
    for (const auto& id : ids) n += ready_.contains(id);
    return n;
  };
  WaitFor(lock, ids, deadline, [&] { return count() >= num_returns || closed_; });
  if (closed_ && count() < num_returns) return Err(closed_reason_);
  std::vector<bool> out;
  out.reserve(ids.size());
  for (const auto& id : ids) out.push_back(ready_.contains(id));
  return out;
}

Result<std::optional<std::string>> Client::GeneratorItem(const std::string& task_id, size_t index,
                                                         double timeout_s) {
  auto deadline = DeadlineFor(timeout_s);
  if (Status s = PrepareWait({task_id}); !s.ok()) return Err(s);
  std::unique_lock lock(mu_);
  auto told = [&]() -> const std::string* {
    auto it = items_.find(task_id);
    if (it == items_.end() || it->second.size() <= index || it->second[index].empty()) return nullptr;
    return &it->second[index];
  };
  cv_.wait_until(lock, deadline, [&] { return told() || ready_.contains(task_id) || closed_; });
  if (const std::string* id = told()) return std::optional<std::string>(*id);
  if (closed_ && !ready_.contains(task_id)) return Err(closed_reason_);
  return std::optional<std::string>();
}

void Client::AddRef(const std::string& id) {
  std::lock_guard lock(mu_);
  refs_[id]++;
}

bool Client::DropRefLocked(const std::string& id) {
  auto it = refs_.find(id);
  if (it == refs_.end() || --it->second > 0) return false;
  refs_.erase(it);
  ready_.erase(id);
  items_.erase(id);
  subscribed_.erase(id);
  if (!owned_.erase(id)) return false;
  pending_release_.push_back(id);
  return true;
}

void Client::AfterDrops(bool released) {
  if (!released) return;
  bool flush = false, arm = false;
  {
    std::lock_guard lock(mu_);
    if (pending_release_.size() >= kReleaseBatch)
      flush = true;
    else if (!release_timer_armed_)
      arm = release_timer_armed_ = true;
  }
  if (flush) {
    FlushReleases();
  } else if (arm && !io_->in_forked_child()) {
    // The first release of a batch: send the batch a little later.
    auto timer = std::make_shared<asio::steady_timer>(io_->io(), std::chrono::milliseconds(20));
    timer->async_wait([this, timer](const boost::system::error_code& ec) {
      if (!ec) FlushReleases();
    });
  }
}

void Client::Release(const std::string& id) {
  bool released;
  {
    std::lock_guard lock(mu_);
    released = DropRefLocked(id);
  }
  AfterDrops(released);
}

void Client::HoldWhileWaiting(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  for (const auto& id : ids) refs_[id]++;
}

void Client::EndWaiting(const std::vector<std::string>& ids) {
  bool released = false;
  {
    std::lock_guard lock(mu_);
    for (const auto& id : ids) released |= DropRefLocked(id);
  }
  AfterDrops(released);
}

bool Client::reconnecting() const {
  std::lock_guard lock(mu_);
  return reconnecting_;
}

void Client::FlushReleases() {
  proto::ClientToHead msg, unborrow;
  {
    std::lock_guard lock(mu_);
    release_timer_armed_ = false;
    if (closed_ || reconnecting_) return;  // reconnecting: sent after the replay
    for (auto& id : pending_release_) msg.mutable_release()->add_ids(std::move(id));
    pending_release_.clear();
    for (auto& id : pending_unborrow_) unborrow.mutable_release()->add_ids(std::move(id));
    pending_unborrow_.clear();
    if (unborrow.has_release()) unborrow.mutable_release()->set_borrowed(true);
    for (const auto* m : {&msg, &unborrow})
      if (m->has_release()) RememberRelease(m->release());
  }
  // Never blocks: releases only shrink the head's memory.
  for (const auto* m : {&msg, &unborrow})
    if (m->has_release()) conn()->Send(*m, net::Urgency::kSoon);
}

void Client::RememberRelease(const proto::Release& release) {
  constexpr size_t kRecentCap = 4096;  // messages (each may name many ids)
  recent_releases_.push_back(release);
  if (recent_releases_.size() > kRecentCap) recent_releases_.pop_front();
}

void Client::Pin(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    if (!owned_.contains(id)) return;
  }
  proto::ClientToHead msg;
  msg.mutable_release()->add_ids(id);
  msg.mutable_release()->set_pin(true);
  {
    std::lock_guard lock(mu_);
    RememberRelease(msg.release());
    if (reconnecting_) return;  // sent again after the replay, with the other recent ones
  }
  conn()->Send(msg);
}

void Client::Unborrow(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    pending_unborrow_.push_back(id);
  }
  AfterDrops(true);  // sent with the next batch of releases (after a replay, when reconnecting)
}

Status Client::Cancel(const std::string& task_id, bool force) {
  proto::ClientToHead msg;
  msg.mutable_cancel()->set_task_id(task_id);
  msg.mutable_cancel()->set_force(force);
  {
    std::lock_guard lock(mu_);
    if (unfinished_.contains(task_id)) cancels_[task_id] = cancels_[task_id] || force;
    if (reconnecting_) return Status::Ok();  // the head hears it after the replay (which may resubmit the task)
  }
  return Send(msg);
}

Result<proto::Reply> Client::Request(proto::Request request, double timeout_s) {
  auto deadline = DeadlineFor(timeout_s);
  uint64_t rid, generation;
  {
    // A request is answered on the connection it went out on: wait out a reconnect first.
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return !reconnecting_ || closed_ || shutting_down_; });
    rid = next_request_++;
    replies_[rid];
    generation = connections_lost_;
  }
  request.set_request_id(rid);
  proto::ClientToHead msg;
  *msg.mutable_request() = std::move(request);
  Status s = Send(msg);
  std::unique_lock lock(mu_);
  if (s.ok())
    cv_.wait_until(lock, deadline, [&] {
      return replies_[rid].has_value() || closed_ || connections_lost_ != generation || shutting_down_;
    });
  auto reply = std::move(replies_[rid]);
  replies_.erase(rid);
  if (!s.ok()) return Err(s);
  if (!reply && !closed_ && connections_lost_ != generation)
    return Err(Code::kUnavailable, "lost the connection to the head before it answered; ask again");
  if (!reply) return Err(closed_ ? closed_reason_ : Status(Code::kDeadlineExceeded, "the head did not answer in time"));
  if (!reply->error().empty()) {
    // The head's code says whether asking again can help (UNAVAILABLE: its store failed).
    uint32_t code = reply->error_code();
    bool known = code > 0 && code <= static_cast<uint32_t>(Code::kInternal);
    return Err(known ? static_cast<Code>(code) : Code::kInvalidArgument, reply->error());
  }
  return std::move(*reply);
}

}  // namespace corral::client
