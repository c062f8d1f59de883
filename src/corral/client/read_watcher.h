// ReadWatcher: who reads a connection whose reads are left to its owner (ConnectionOptions::
// owner_reads): a thread blocked waiting for a reply that comes on it reads the socket itself
// (ReadUntil), so the reply reaches that thread with no hand-off from another; whenever no such
// thread reads it, the watcher's own thread does (replies nobody waits for yet, the peer closing).
//
// Why: on a machine where waking a thread on another core costs 15-25 us, a sync call whose reply
// goes socket -> io thread -> condition variable -> waiting thread pays two wakes where one will do
// (decision 41). Workers read their agent link the same way (worker_link.h).
//
// How: each socket is in an epoll set of the watcher's, one-shot. The thread that reads a socket
// holds its token; a waiting thread takes it and disarms the socket so the watcher is not woken for
// the reply it reads itself. Whoever lets go of a token arms the socket again (epoll then reports
// at once what arrived meanwhile), so the socket is armed whenever nobody reads it.
//
// A waiting thread first polls its socket without sleeping, for up to the spin given at
// construction, then sleeps in poll(2): a reply that comes within the spin finds the thread
// running, with no wake-up to pay (decision 45). It spins only while the waits on that connection
// have been ending within the spin, so a caller of long calls does not burn a core for nothing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "corral/net/connection.h"

namespace corral::client {

class ReadWatcher {
 public:
  explicit ReadWatcher(std::chrono::microseconds spin = std::chrono::microseconds(0));
  ~ReadWatcher();  // stops the thread (in a forked child, where it does not exist, leaks it)
  ReadWatcher(const ReadWatcher&) = delete;
  ReadWatcher& operator=(const ReadWatcher&) = delete;

  // Watches `c` (Start()ed, with owner_reads()) from now on, until it closes or Forget(). False if
  // it cannot (no epoll set, or the connection closed): then nothing reads it.
  bool Watch(const std::shared_ptr<net::Connection>& c);
  void Forget(const net::Connection* c);

  enum class Outcome {
    kDone,      // done() became true
    kBusy,      // another thread reads it now (its messages reach their handlers all the same)
    kClosed,    // the connection is closed, or not watched here
    kTimedOut,  // the deadline passed first
  };
  // Reads `c` on this thread until done() (checked after each read), the deadline, or its close.
  // With `also` (another watched connection whose messages count for done(): a result channel),
  // reads both; kBusy if another thread reads either. `also` closing ends nothing: `c` reads on.
  Outcome ReadUntil(const net::Connection* c, std::chrono::steady_clock::time_point deadline,
                    const std::function<bool()>& done, const net::Connection* also = nullptr);

 private:
  struct Watched {
    std::shared_ptr<net::Connection> conn;
    uint64_t key = 0;   // its epoll data (0 is the stop event)
    std::mutex token;   // held by the thread reading it
    // Whether the last wait on it ended within the spin, and the waits since one did not (both
    // guarded by token): a wait spins if the last one was short, and every 16th wait tries again.
    bool short_waits = true;
    uint32_t long_waits = 0;
  };
  std::shared_ptr<Watched> Find(const net::Connection* c);
  std::shared_ptr<Watched> FindKey(uint64_t key);
  // Re-arms (one-shot) or disarms the socket in the epoll set; false if the connection closed.
  bool Arm(Watched& w, bool armed);
  void Run();

  const std::chrono::microseconds spin_;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: written to stop the thread
  pid_t pid_;
  std::mutex mu_;
  std::unordered_map<const net::Connection*, std::shared_ptr<Watched>> watched_;  // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<Watched>> by_key_;                 // the same, guarded by mu_
  uint64_t next_key_ = 1;                                                          // guarded by mu_
  std::thread thread_;  // started by the first Watch (guarded by mu_)
};

}  // namespace corral::client
