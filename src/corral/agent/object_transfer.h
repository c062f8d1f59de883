// ObjectTransfer: moves stored objects between nodes, agent to agent. The head only says who holds
// what (and tells the node that needs a value to pull it); the bytes go from the holder's store
// straight into the puller's store, never through the head.
//
// Each agent serves its store on a TCP port (its `peer_address`, on the interface it reaches the
// head by) and pulls from the others. Every connection is TLS 1.3 keyed by a pre-shared key: the
// cluster's peer secret, which the head gives each agent when it registers (Welcome.peer_secret).
// So only agents of this cluster connect, and every 16 KiB record on the wire is encrypted and
// authenticated (AES-GCM): a damaged or forged byte fails the transfer, which is its checksum. No
// certificates are involved, so a loopback cluster and a TLS one work the same way.
//
// Protocol after the handshake (little-endian), one request at a time on a connection:
//   request: u32 id length | u32 attempt | u64 offset | u64 length | id
//   reply:   u64 object size | u64 length that follows | u32 error length | u32 0 | error | bytes
// An object is named by its id and attempt (NodeStore::FileName): a request cannot name a path.
//
// A pull writes `<name>.tmp.<agent pid>` in the store, then renames it (a reader never sees part of
// a value). When a source fails mid-way, the next source continues from the offset reached.
//
// Threads: one accepting thread, one per served connection (at most kMaxServed at once), and at
// most kMaxPulls pulling threads; pulls beyond that wait their turn. Completions are posted to the
// io_context. SetSecret, Pull and Stop may be called from any thread; Listen, port and host from
// the owner's thread only.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "corral/base/status.h"

struct ssl_ctx_st;
struct ssl_st;
using SSL_CTX = ssl_ctx_st;

namespace corral::agent {

struct TlsConn;  // one TLS connection on a blocking socket (object_transfer.cc)

struct PullSource {
  std::string node_id;
  std::string host;
  uint16_t port = 0;
};

struct PullJob {
  std::string id;
  uint32_t attempt = 0;
  uint64_t size = 0;
  std::vector<PullSource> sources;  // tried in order
};

struct PullResult {
  Status status;                        // ok: the object is in the store under its name
  std::vector<std::string> missing_on;  // sources that answered they do not hold it
  uint64_t bytes = 0;                   // bytes received (over every source tried)
};

class ObjectTransfer {
 public:
  static constexpr int kMaxServed = 64;
  static constexpr int kMaxPulls = 4;

  // Serves files of `store_dir` (else `spill_dir`, where spilled values are); pulls into `store_dir`.
  ObjectTransfer(boost::asio::io_context& io, std::string store_dir, std::string spill_dir);
  ~ObjectTransfer();
  ObjectTransfer(const ObjectTransfer&) = delete;
  ObjectTransfer& operator=(const ObjectTransfer&) = delete;

  // Listens on `host` (an IP address or name; port 0: any free one) instead of where it listened
  // before (listening nowhere if it fails). Returns the port.
  Result<uint16_t> Listen(const std::string& host, uint16_t port = 0);
  uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  // The cluster's peer secret (from the head). Until it is set, nothing is served or pulled.
  void SetSecret(std::string secret);
  // Pulls `job` into the store; `done` runs on the io_context.
  void Pull(PullJob job, std::function<void(PullResult)> done);
  // Bytes sent to other agents since the start.
  uint64_t bytes_served() const { return served_bytes_.load(std::memory_order_relaxed); }
  // Stops listening, ends every connection and waits for the threads.
  void Stop();

 private:
  struct Conn;
  void AcceptLoop(int listen_fd, int stop_fd);
  void Serve(int fd);
  void RunPull(PullJob job, std::function<void(PullResult)> done);
  // Pulls what is left of `job` (from *received on) from one source into the file `file`.
  Status PullFrom(const PullSource& source, const PullJob& job, int file, uint64_t* received, bool* missing);
  // Reads the object's bytes from *received on into `file`.
  Status Receive(TlsConn& conn, const PullJob& job, int file, uint64_t* received);
  void StopListening();
  bool Track(int fd);  // false once stopping
  bool stopping() const;
  void Untrack(int fd);
  std::string secret() const;
  static unsigned ServerPsk(ssl_st* ssl, const char* identity, unsigned char* psk, unsigned max_len);
  static unsigned ClientPsk(ssl_st* ssl, const char* hint, char* identity, unsigned max_identity,
                            unsigned char* psk, unsigned max_len);

  boost::asio::io_context& io_;
  const std::string store_dir_, spill_dir_;
  SSL_CTX* server_ctx_ = nullptr;
  SSL_CTX* client_ctx_ = nullptr;
  std::string host_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread accept_thread_;
  std::atomic<uint64_t> served_bytes_{0};
  std::atomic<uint64_t> pull_seq_{0};  // makes each pull's partial file name its own

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::string secret_;                  // guarded by mu_
  std::set<int> fds_;                   // guarded by mu_: sockets of served and pulling threads
  int threads_ = 0;                     // guarded by mu_: served connections and pulls running
  int served_ = 0;                      // guarded by mu_
  int pulls_ = 0;                       // guarded by mu_
  std::deque<std::pair<PullJob, std::function<void(PullResult)>>> waiting_;  // guarded by mu_
  bool stopping_ = false;               // guarded by mu_
};

}  // namespace corral::agent
