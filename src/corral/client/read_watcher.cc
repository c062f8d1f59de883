#include "corral/client/read_watcher.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace corral::client {
namespace {

using Clock = std::chrono::steady_clock;
// A waiting reader looks up from its poll this often: the connection may have been closed by
// another thread (which does not wake a poll on its descriptor).
constexpr int kPollSliceMs = 100;

}  // namespace

ReadWatcher::ReadWatcher(std::chrono::microseconds spin) : spin_(spin), pid_(getpid()) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ >= 0 && stop_fd_ >= 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev) != 0) {
      close(epoll_fd_);
      epoll_fd_ = -1;
    }
  }
}

ReadWatcher::~ReadWatcher() {
  if (getpid() != pid_) {  // a forked child: the thread is the parent's; so are the descriptors
    new std::thread(std::move(thread_));
    return;
  }
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t ignored = write(stop_fd_, &one, sizeof one);
    (void)ignored;
    thread_.join();
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

bool ReadWatcher::Watch(const std::shared_ptr<net::Connection>& c) {
  if (epoll_fd_ < 0 || !c->owner_reads()) return false;
  auto w = std::make_shared<Watched>();
  w->conn = c;
  {
    std::lock_guard lock(mu_);
    w->key = next_key_++;
    watched_[c.get()] = w;
    by_key_[w->key] = w;
    if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  }
  bool added = false;
  c->WithReadFd([&](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
    ev.data.u64 = w->key;
    added = epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  });
  if (!added) Forget(c.get());
  return added;
}

void ReadWatcher::Forget(const net::Connection* c) {
  std::shared_ptr<Watched> w;
  {
    std::lock_guard lock(mu_);
    auto it = watched_.find(c);
    if (it == watched_.end()) return;
    w = std::move(it->second);
    watched_.erase(it);
    by_key_.erase(w->key);
  }
  // Out of the set now if still open (a closed descriptor left it by itself).
  w->conn->WithReadFd([&](int fd) { epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr); });
}

std::shared_ptr<ReadWatcher::Watched> ReadWatcher::Find(const net::Connection* c) {
  std::lock_guard lock(mu_);
  auto it = watched_.find(c);
  return it == watched_.end() ? nullptr : it->second;
}

std::shared_ptr<ReadWatcher::Watched> ReadWatcher::FindKey(uint64_t key) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

bool ReadWatcher::Arm(Watched& w, bool armed) {
  return w.conn->WithReadFd([&](int fd) {
    epoll_event ev{};
    // Disarmed, epoll still reports a hang-up or an error: one-shot, it does so once, not on every
    // wait (nor forever, for a socket closed here whose file a forked child still holds open).
    ev.events = armed ? EPOLLIN | EPOLLRDHUP | EPOLLONESHOT : EPOLLONESHOT;
    ev.data.u64 = w.key;
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
  });
}

ReadWatcher::Outcome ReadWatcher::ReadUntil(const net::Connection* c, Clock::time_point deadline,
                                            const std::function<bool()>& done, const net::Connection* also) {
  std::shared_ptr<Watched> w = Find(c);
  if (!w) return Outcome::kClosed;
  std::unique_lock token(w->token, std::try_to_lock);
  if (!token) return Outcome::kBusy;
  std::shared_ptr<Watched> w2 = also ? Find(also) : nullptr;  // (gone: closed, nothing more comes on it)
  std::unique_lock token2 = w2 ? std::unique_lock(w2->token, std::try_to_lock) : std::unique_lock<std::mutex>();
  if (w2 && !token2) return Outcome::kBusy;
  if (w2 && !Arm(*w2, false)) {  // (closed: what it carried was read)
    token2.unlock();
    Forget(also);
    w2 = nullptr;
  }
  Outcome outcome = Outcome::kTimedOut;
  auto start = Clock::now();
  bool spin = spin_.count() > 0 && (w->short_waits || ++w->long_waits % 16 == 0);
  auto spin_until = spin ? start + spin_ : start;
  if (!Arm(*w, false)) {
    outcome = Outcome::kClosed;
  } else {
    for (;;) {
      if (!w->conn->ReadAvailable()) {
        outcome = Outcome::kClosed;
        break;
      }
      if (w2 && !w2->conn->ReadAvailable()) {  // the partner closed: `c` reads on alone
        token2.unlock();
        Forget(also);
        w2 = nullptr;
      }
      if (done()) {
        outcome = Outcome::kDone;
        break;
      }
      auto now = Clock::now();
      if (now >= deadline) break;
      if (now < spin_until) continue;  // (ReadAvailable above reads without waiting)
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      pollfd p[2] = {};
      p[0].events = p[1].events = POLLIN | POLLRDHUP;
      // (A descriptor closed meanwhile may be another socket's by now: polling it costs at most a
      // slice; ReadAvailable checks under the connection's lock.)
      if (!w->conn->WithReadFd([&](int fd) { p[0].fd = fd; })) continue;  // closed: ReadAvailable says so
      nfds_t n = 1;
      if (w2 && w2->conn->WithReadFd([&](int fd) { p[1].fd = fd; })) n = 2;
      poll(p, n, static_cast<int>(std::min<int64_t>(left, kPollSliceMs)));
    }
  }
  if (spin_.count() > 0) {
    w->short_waits = outcome == Outcome::kDone && Clock::now() - start <= spin_;
    if (w->short_waits) w->long_waits = 0;
  }
  if (w2) {
    token2.unlock();
    Arm(*w2, true);
  }
  token.unlock();
  if (outcome == Outcome::kClosed) Forget(c);
  else Arm(*w, true);  // whoever lets go of the reads arms the socket again
  return outcome;
}

void ReadWatcher::Run() {
  std::vector<epoll_event> events(16);
  for (;;) {
    int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      if (key == 0) return;  // stop
      std::shared_ptr<Watched> w = FindKey(key);
      if (!w) continue;
      std::unique_lock token(w->token, std::try_to_lock);
      if (!token) continue;  // a waiting thread reads it, and arms it again when it is done
      bool open = w->conn->ReadAvailable();
      token.unlock();
      if (!open) Forget(w->conn.get());
      else Arm(*w, true);
    }
  }
}

}  // namespace corral::client
