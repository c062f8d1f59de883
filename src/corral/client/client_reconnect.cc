// Client's reconnection (client.h): dialling the head again after the connection dropped, and
// sending again what a restarted head may have lost (values this client holds, unfinished tasks,
// subscriptions).
#include <random>

#include "corral/base/log.h"
#include "corral/client/client.h"
#include "corral/net/frame.h"

namespace corral::client {

using Clock = std::chrono::steady_clock;

void Client::ReconnectLoop(Status reason) {
  auto give_up = Clock::now() + options_.reconnect_for;
  std::vector<proto::ClientToHead> unsent_records = UnsentRecords();
  std::string previous_session, previous_secret;
  {
    std::lock_guard lock(mu_);
    previous_session = session_;
    previous_secret = resume_secret_;
  }
  std::mt19937 rng(std::random_device{}());
  int attempt = 0;
  Status last = reason;
  auto fail = [&](Status why) {  // mu_ held
    reconnecting_ = false;
    closed_ = true;
    closed_reason_ = std::move(why);
    cv_.notify_all();
  };
  while (true) {
    double backoff = std::min(5.0, 0.1 * (1 << std::min(attempt++, 6)));
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    auto delay = std::chrono::milliseconds(static_cast<int64_t>(backoff * 1000 * jitter(rng)));
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_until(lock, std::min(give_up, Clock::now() + delay), [&] { return shutting_down_; }))
        return fail(Status(Code::kCancelled, "client closing"));
      if (Clock::now() >= give_up)
        return fail(Status(Code::kUnavailable,
                           fmt::format("lost the connection to the head at {} and could not reconnect within {}s "
                                       "({}); is the head running? (`corral status`)",
                                       options_.head.ToString(), options_.reconnect_for.count() / 1000,
                                       last.message())));
    }
    auto c = Dial();
    if (!c) {
      last = c.error();
      if (last.code() == Code::kPermissionDenied) {  // refused: retrying cannot help
        std::lock_guard lock(mu_);
        return fail(last);
      }
      continue;
    }
    // Replay on the new connection, then make it the one every call uses. Submissions and puts
    // wait for the replay (submit_mu_), so none overtakes what it depends on. The same head (it
    // kept this client's session) needs only the subscriptions again.
    std::unique_lock submit_lock(submit_mu_);
    bool same_head;
    {
      std::lock_guard lock(mu_);
      // The same head that kept our session (it hands back the same secret): a head that forgot
      // it (we were away past its grace) has forgotten our functions and values too.
      same_head = session_ == previous_session && resume_secret_ == previous_secret;
    }
    if (!same_head) ForgetDirect();  // its routes and tickets are of the old head's run
    // (A restarted head gets every unfinished call in the replay; the same head ignores a record
    // it has, should an attempt that failed have sent some.)
    if (same_head)
      for (const auto& m : unsent_records) (*c)->Send(m, net::Urgency::kSoon);
    if (!Replay(**c, same_head)) {
      last = Status(Code::kUnavailable, "the connection closed during the replay");
      continue;
    }
    {
      std::lock_guard lock(mu_);
      conn_.store(*c);
      pending_.store(nullptr);
    }
    submit_lock.unlock();
    // Subscriptions made while the replay ran went to the old connection: make them again.
    proto::ClientToHead sub;
    {
      std::lock_guard lock(mu_);
      for (const auto& id : subscribed_) sub.mutable_subscribe()->add_ids(id);
    }
    if (sub.has_subscribe()) (*c)->Send(sub);
    SendLostDirect(**c);  // (and direct calls lost while the replay ran)
    std::lock_guard lock(mu_);
    if ((*c)->closed()) {  // lost again already; its close was not taken as ours while reconnecting
      last = Status(Code::kUnavailable, "the connection closed right after the replay");
      continue;
    }
    // After the replay (a cancel may name a task the replay just sent again): every cancel of a
    // task still unfinished, whether made while disconnected or sent on the connection that died;
    // to the same head, releases and pins sent lately on that connection; then those made since.
    for (const auto& [task_id, force] : cancels_) {
      if (!unfinished_.contains(task_id)) continue;
      proto::ClientToHead m;
      m.mutable_cancel()->set_task_id(task_id);
      m.mutable_cancel()->set_force(force);
      (*c)->Send(m);
    }
    if (same_head) {
      for (const auto& r : recent_releases_) {
        proto::ClientToHead m;
        *m.mutable_release() = r;
        (*c)->Send(m);
      }
    }
    recent_releases_.clear();
    proto::ClientToHead held;
    for (auto& id : pending_release_) held.mutable_release()->add_ids(std::move(id));
    pending_release_.clear();
    if (held.has_release()) {
      RememberRelease(held.release());
      (*c)->Send(held);
    }
    if (!pending_unborrow_.empty() && same_head) {  // a new head run knows no borrows
      proto::ClientToHead unborrow;
      for (auto& id : pending_unborrow_) unborrow.mutable_release()->add_ids(std::move(id));
      unborrow.mutable_release()->set_borrowed(true);
      RememberRelease(unborrow.release());
      (*c)->Send(unborrow);
    }
    pending_unborrow_.clear();
    reconnecting_ = false;
    reconnects_++;
    if (options_.print_logs)
      std::fprintf(stderr, "corral: reconnected to the head at %s%s\n", options_.head.ToString().c_str(),
                   same_head ? "" : " (it restarted: unfinished tasks were sent again)");
    cv_.notify_all();
    return;  // nothing after this touches the client: a new loss may start another thread at once
  }
}

std::vector<proto::ClientToHead> Client::UnsentRecords() {
  std::vector<proto::ClientToHead> records;
  auto old = conn();
  if (!old) return records;
  std::string unsent = old->TakeUnsent();
  net::FrameDecoder decoder;
  (void)decoder.Decode(unsent, [&](std::string_view m) {  // (whole frames we made: no error to expect)
    proto::ClientToHead msg;
    if (msg.ParseFromArray(m.data(), static_cast<int>(m.size())) && msg.has_submit() &&
        !msg.submit().direct_node().empty())
      records.push_back(std::move(msg));
  });
  return records;
}

bool Client::Replay(net::Connection& c, bool subscriptions_only) {
  std::vector<proto::ClientToHead> msgs;
  proto::ClientToHead sub;
  {
    std::unique_lock lock(mu_);
    if (subscriptions_only) {
      for (const auto& [id, spec] : unfinished_) sub.mutable_subscribe()->add_ids(id);
      for (const auto& id : subscribed_) sub.mutable_subscribe()->add_ids(id);
      if (sub.has_subscribe()) c.Send(sub);
      lock.unlock();
      SendLostDirect(c);  // direct calls lost meanwhile
      c.Flush();
      return !c.closed();
    }
    shipped_.clear();
    for (const auto& [id, create] : gangs_) {  // before the tasks placed in them (answers are not awaited)
      proto::ClientToHead m;
      *m.mutable_request()->mutable_gang() = create;
      msgs.push_back(std::move(m));
    }
    std::map<std::string, const proto::TaskSpec*> templates;
    for (const auto& f : functions_) templates[f.function_hash()] = &f;
    // Values this client owns and still holds (its puts, and results it has), and its unfinished
    // tasks, in the order they were first sent (ids sort in that order): a restarted head needs
    // the values before the tasks that take them.
    std::set<std::string> values;
    for (const auto& id : owned_)
      if (ready_.contains(id)) values.insert(id);
    auto value = values.begin();
    auto task = unfinished_.begin();
    while (value != values.end() || task != unfinished_.end()) {
      proto::ClientToHead m;
      if (task == unfinished_.end() || (value != values.end() && *value < task->first)) {
        *m.mutable_put() = *ready_[*value];
        ++value;
      } else {
        proto::TaskSpec* spec = m.mutable_submit();
        *spec = task->second;
        spec->set_resubmitted(true);
        if (shipped_.insert(spec->function_hash()).second) {
          auto t = templates.find(spec->function_hash());
          if (t != templates.end()) spec->set_function(t->second->function());
        }
        sub.mutable_subscribe()->add_ids(task->first);
        ++task;
      }
      msgs.push_back(std::move(m));
    }
    for (const auto& id : subscribed_) sub.mutable_subscribe()->add_ids(id);
  }
  for (const auto& m : msgs) {
    while (!c.has_room()) {
      if (!c.WaitForRoom(Clock::now() + std::chrono::milliseconds(100)) && c.closed()) return false;
      std::lock_guard lock(mu_);
      if (shutting_down_) return false;
    }
    if (!c.Send(m, net::Urgency::kSoon)) return false;
  }
  if (sub.has_subscribe()) c.Send(sub);
  SendLostDirect(c);  // after the calls themselves: a restarted head learns of them first
  c.Flush();
  return !c.closed();
}

void Client::RememberGang(const proto::GangRequest& create) {
  std::lock_guard lock(mu_);
  gangs_[create.gang_id()] = create;
}

void Client::ForgetGang(const std::string& gang_id) {
  std::lock_guard lock(mu_);
  gangs_.erase(gang_id);
}

}  // namespace corral::client
