// ObjectTransfer: agent-to-agent object transfer over TLS 1.3 with the cluster's pre-shared key.
// See object_transfer.h.
#include "corral/agent/object_transfer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <system_error>

#include <boost/asio/post.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/objects/node_store.h"

namespace corral::agent {

// One TLS connection on a blocking socket; owns the SSL, not the socket.
struct TlsConn {
  SSL* ssl = nullptr;
  ~TlsConn() {
    if (ssl) SSL_free(ssl);
  }
  bool ReadExact(void* p, size_t n) { return Whole(SSL_read, static_cast<char*>(p), n); }
  bool WriteAll(const void* p, size_t n) { return Whole(SSL_write, static_cast<const char*>(p), n); }

 private:
  // Calls `op` (SSL_read or SSL_write) until all `n` bytes moved; false if the connection failed.
  template <typename Op, typename Byte>
  bool Whole(Op op, Byte* at, size_t n) {
    while (n > 0) {
      int r = op(ssl, at, static_cast<int>(std::min<size_t>(n, 1 << 30)));
      if (r <= 0) return false;
      at += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
};

namespace {

constexpr char kPskIdentity[] = "corral-peer";
constexpr size_t kBuffer = 1u << 20;   // bytes read from a file or the wire per step
constexpr int kConnectTimeoutS = 10;
constexpr int kIoTimeoutS = 30;        // a silent peer for this long fails the transfer
constexpr int kHandshakeTimeoutS = 10; // the whole handshake, however slowly a peer sends it

// The server side of the handshake, finished within `seconds` in all (a peer that sends a byte at
// a time cannot hold a connection past it).
bool AcceptWithin(SSL* ssl, int fd, int seconds) {
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  bool ok = false;
  for (;;) {
    int r = SSL_accept(ssl);
    if (r == 1) {
      ok = true;
      break;
    }
    int want = SSL_get_error(ssl, r);
    if (want != SSL_ERROR_WANT_READ && want != SSL_ERROR_WANT_WRITE) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, static_cast<short>(want == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
  }
  fcntl(fd, F_SETFL, flags);
  return ok;
}

struct RequestHead {
  uint32_t id_length;
  uint32_t attempt;
  uint64_t offset;
  uint64_t length;
};
struct ReplyHead {
  uint64_t size;
  uint64_t length;
  uint32_t error_length;
  uint32_t not_here;  // 1: the error is that the object is not on this node
};
static_assert(sizeof(RequestHead) == 24 && sizeof(ReplyHead) == 24);

std::string SslError(const char* what) {
  unsigned long e = ERR_get_error();
  char buf[256];
  if (e == 0) return fmt::format("{}: {}", what, errno ? std::strerror(errno) : "connection closed");
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return fmt::format("{}: {}", what, buf);
}

// OpenSSL writes with write(2): a peer that went away would raise SIGPIPE in the process. Blocked
// in the transfer threads, the write fails with EPIPE instead.
void BlockSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void SetTimeouts(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  unsigned user_timeout_ms = static_cast<unsigned>(seconds) * 1000;
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

SSL_CTX* MakeContext(bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
  SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
  if (server) SSL_CTX_set_num_tickets(ctx, 0);
  return ctx;
}

// Connects to host:port within kConnectTimeoutS; -1 with *error set on failure.
int Connect(const PullSource& source, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string port = std::to_string(source.port);
  if (int rc = getaddrinfo(source.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    *error = fmt::format("cannot resolve {}: {}", source.host, gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    SetTimeouts(fd, kConnectTimeoutS);
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      *error = fmt::format("cannot connect to {}:{}: {}", source.host, source.port, std::strerror(errno));
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd >= 0) SetTimeouts(fd, kIoTimeoutS);
  return fd;
}

}  // namespace

ObjectTransfer::ObjectTransfer(boost::asio::io_context& io, std::string store_dir, std::string spill_dir)
    : io_(io), store_dir_(std::move(store_dir)), spill_dir_(std::move(spill_dir)) {
  server_ctx_ = MakeContext(true);
  client_ctx_ = MakeContext(false);
  if (server_ctx_) SSL_CTX_set_psk_server_callback(server_ctx_, &ObjectTransfer::ServerPsk);
  if (client_ctx_) SSL_CTX_set_psk_client_callback(client_ctx_, &ObjectTransfer::ClientPsk);
}

ObjectTransfer::~ObjectTransfer() {
  Stop();
  if (server_ctx_) SSL_CTX_free(server_ctx_);
  if (client_ctx_) SSL_CTX_free(client_ctx_);
}

void ObjectTransfer::SetSecret(std::string secret) {
  std::lock_guard lock(mu_);
  secret_ = std::move(secret);
}

std::string ObjectTransfer::secret() const {
  std::lock_guard lock(mu_);
  return secret_;
}

unsigned ObjectTransfer::ServerPsk(SSL* ssl, const char* identity, unsigned char* psk, unsigned max_len) {
  auto* self = static_cast<ObjectTransfer*>(SSL_get_app_data(ssl));
  if (self == nullptr || identity == nullptr || std::strcmp(identity, kPskIdentity) != 0) return 0;
  std::string secret = self->secret();
  if (secret.empty() || secret.size() > max_len) return 0;
  std::memcpy(psk, secret.data(), secret.size());
  return static_cast<unsigned>(secret.size());
}

unsigned ObjectTransfer::ClientPsk(SSL* ssl, const char*, char* identity, unsigned max_identity,
                                   unsigned char* psk, unsigned max_len) {
  auto* self = static_cast<ObjectTransfer*>(SSL_get_app_data(ssl));
  if (self == nullptr || max_identity < sizeof(kPskIdentity)) return 0;
  std::string secret = self->secret();
  if (secret.empty() || secret.size() > max_len) return 0;
  std::memcpy(identity, kPskIdentity, sizeof(kPskIdentity));
  std::memcpy(psk, secret.data(), secret.size());
  return static_cast<unsigned>(secret.size());
}

// ---- serving ----

Result<uint16_t> ObjectTransfer::Listen(const std::string& host, uint16_t port) {
  if (server_ctx_ == nullptr || client_ctx_ == nullptr) return Err(Code::kInternal, SslError("TLS context"));
  StopListening();
  port_ = 0;
  host_.clear();
  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || found == nullptr)
    return Err(Code::kInvalidArgument, fmt::format("cannot serve objects on '{}': not an address of this machine", host));
  std::memcpy(&addr, found->ai_addr, found->ai_addrlen);
  len = found->ai_addrlen;
  freeaddrinfo(found);
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 64) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    return Err(Code::kUnavailable, fmt::format("cannot serve objects on {}:{}: {}", host, port, std::strerror(err)));
  }
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  host_ = host;
  if (pipe2(stop_pipe_, O_CLOEXEC) != 0) {
    close(fd);
    return Err(Code::kInternal, fmt::format("pipe: {}", std::strerror(errno)));
  }
  listen_fd_ = fd;
  accept_thread_ = std::thread([this, fd, stop = stop_pipe_[0]] { AcceptLoop(fd, stop); });
  return port_;
}

void ObjectTransfer::StopListening() {
  if (!accept_thread_.joinable()) return;
  char c = 0;
  (void)!write(stop_pipe_[1], &c, 1);
  accept_thread_.join();
  close(listen_fd_);
  close(stop_pipe_[0]);
  close(stop_pipe_[1]);
  listen_fd_ = stop_pipe_[0] = stop_pipe_[1] = -1;
}

void ObjectTransfer::AcceptLoop(int listen_fd, int stop_fd) {
  for (;;) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EINTR && errno != ECONNABORTED) poll(nullptr, 0, 100);  // out of descriptors: do not spin
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_ || served_ >= kMaxServed) {
        close(fd);
        continue;
      }
      fds_.insert(fd);
      served_++;
      threads_++;
    }
    auto done = [this, fd] {
      std::lock_guard lock(mu_);
      fds_.erase(fd);
      close(fd);
      served_--;
      threads_--;
      idle_cv_.notify_all();
    };
    try {
      std::thread([this, fd, done] {
        BlockSigpipe();
        Serve(fd);
        done();
      }).detach();
    } catch (const std::system_error&) {  // no thread to be had: this connection is refused
      done();
    }
  }
}

void ObjectTransfer::Serve(int fd) {
  SetTimeouts(fd, kIoTimeoutS);
  TlsConn conn{SSL_new(server_ctx_)};
  if (conn.ssl == nullptr) return;
  SSL_set_app_data(conn.ssl, this);
  SSL_set_fd(conn.ssl, fd);
  if (!AcceptWithin(conn.ssl, fd, kHandshakeTimeoutS)) {  // not one of this cluster's agents
    static std::atomic<int64_t> last_logged{0};
    int64_t now = time(nullptr);
    if (now - last_logged.exchange(now) >= 10)  // at most one line per 10 s: a peer cannot flood the log
      LOG_WARN("refused an object transfer connection: {}", SslError("TLS handshake"));
    return;
  }
  for (;;) {
    RequestHead req{};
    if (!conn.ReadExact(&req, sizeof(req)) || req.id_length == 0 || req.id_length > 64) return;
    std::string id(req.id_length, '\0');
    if (!conn.ReadExact(id.data(), id.size())) return;
    std::string name = objects::NodeStore::FileName(id, req.attempt);
    int file = open((store_dir_ + "/" + name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (file < 0) file = open((spill_dir_ + "/" + name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st{};
    std::string error;
    if (file < 0) error = fmt::format("object {} is not on this node", Hex(id));
    else if (fstat(file, &st) != 0) error = fmt::format("cannot read object {}: {}", Hex(id), std::strerror(errno));
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (error.empty() && req.offset > size) error = fmt::format("offset {} is past the object's {} bytes", req.offset, size);
    ReplyHead reply{size, error.empty() ? std::min(req.length, size - req.offset) : 0,
                    static_cast<uint32_t>(error.size()), file < 0 ? 1u : 0u};
    bool ok = conn.WriteAll(&reply, sizeof(reply)) && conn.WriteAll(error.data(), error.size());
    if (ok && reply.length > 0) {
      // Encrypted straight from the file's pages (stored files never change once named).
      void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, file, 0);
      ok = map != MAP_FAILED;
      for (uint64_t done = 0; ok && done < reply.length;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kBuffer, reply.length - done));
        ok = conn.WriteAll(static_cast<const char*>(map) + req.offset + done, n);
        done += n;
        if (ok) served_bytes_.fetch_add(n, std::memory_order_relaxed);
      }
      if (map != MAP_FAILED) munmap(map, size);
    }
    if (file >= 0) close(file);
    if (!ok) return;
  }
}

// ---- pulling ----

void ObjectTransfer::Pull(PullJob job, std::function<void(PullResult)> done) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (pulls_ >= kMaxPulls) {
      waiting_.emplace_back(std::move(job), std::move(done));
      return;
    }
    pulls_++;
    threads_++;
  }
  std::thread([this, job = std::move(job), done = std::move(done)]() mutable {
    BlockSigpipe();
    for (;;) {
      RunPull(std::move(job), std::move(done));
      std::lock_guard lock(mu_);
      if (stopping_ || waiting_.empty()) {
        pulls_--;
        threads_--;
        idle_cv_.notify_all();
        return;
      }
      job = std::move(waiting_.front().first);
      done = std::move(waiting_.front().second);
      waiting_.pop_front();
    }
  }).detach();
}

void ObjectTransfer::RunPull(PullJob job, std::function<void(PullResult)> done) {
  PullResult result;
  std::string final_path = store_dir_ + "/" + objects::NodeStore::FileName(job.id, job.attempt);
  std::string tmp = fmt::format("{}.tmp.{}.{}", final_path, getpid(), ++pull_seq_);
  // Over a freed file's pages when the store keeps one of about this size (see NodeStore).
  bool pooled = objects::NodeStore::TakePooled(store_dir_, job.size, tmp);
  int fd = open(tmp.c_str(), pooled ? O_RDWR | O_CLOEXEC | O_NOFOLLOW : O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 && pooled && ftruncate(fd, static_cast<off_t>(job.size)) != 0) {
    close(fd);
    fd = -1;
  }
  uint64_t received = 0;
  if (fd < 0) {
    result.status = MakeStatus(Code::kResourceExhausted, "cannot create {}: {}", tmp, std::strerror(errno));
  } else {
    result.status = MakeStatus(Code::kUnavailable, "no node to pull object {} from", Hex(job.id));
    for (const PullSource& source : job.sources) {
      bool missing = false;
      uint64_t before = received;
      Status s = PullFrom(source, job, fd, &received, &missing);
      result.bytes += received - before;
      if (missing) result.missing_on.push_back(source.node_id);
      result.status = s;
      if (s.ok() || s.code() == Code::kResourceExhausted || s.code() == Code::kCancelled || stopping()) break;
      LOG_INFO("pulling object {} from node {} ({}:{}): {}", ShortHex(job.id), ShortHex(source.node_id),
               source.host, source.port, s.message());
    }
    if (close(fd) != 0 && result.status.ok())
      result.status = MakeStatus(Code::kResourceExhausted, "writing {}: {}", tmp, std::strerror(errno));
    if (result.status.ok() && rename(tmp.c_str(), final_path.c_str()) != 0)
      result.status = MakeStatus(Code::kInternal, "cannot rename {}: {}", tmp, std::strerror(errno));
    if (!result.status.ok()) unlink(tmp.c_str());
  }
  boost::asio::post(io_, [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
}

Status ObjectTransfer::PullFrom(const PullSource& source, const PullJob& job, int file, uint64_t* received,
                                bool* missing) {
  std::string error;
  int fd = Connect(source, &error);
  if (fd < 0) return Status(Code::kUnavailable, error);
  if (!Track(fd)) {
    close(fd);
    return Status(Code::kCancelled, "the agent is stopping");
  }
  Status status;
  {
    TlsConn conn{SSL_new(client_ctx_)};
    SSL_set_app_data(conn.ssl, this);
    SSL_set_fd(conn.ssl, fd);
    RequestHead req{static_cast<uint32_t>(job.id.size()), job.attempt, *received, job.size - *received};
    ReplyHead reply{};
    if (SSL_connect(conn.ssl) != 1) {
      status = Status(Code::kUnavailable, SslError("TLS handshake (is it this cluster's agent?)"));
    } else if (!conn.WriteAll(&req, sizeof(req)) || !conn.WriteAll(job.id.data(), job.id.size()) ||
               !conn.ReadExact(&reply, sizeof(reply))) {
      status = Status(Code::kUnavailable, SslError("request"));
    } else if (reply.error_length > 0) {
      error.resize(std::min<uint32_t>(reply.error_length, 4096));
      conn.ReadExact(error.data(), error.size());
      *missing = reply.not_here == 1;
      status = Status(*missing ? Code::kNotFound : Code::kInternal, error);
    } else if (reply.size != job.size || reply.length != job.size - *received) {
      status = MakeStatus(Code::kInternal, "it holds {} bytes of object {}, the head said {}", reply.size,
                          Hex(job.id), job.size);
    } else {
      status = Receive(conn, job, file, received);
    }
  }
  Untrack(fd);
  return status;
}

// Decrypts into a buffer and writes that: on tmpfs, pwrite lands fresh pages faster than a mapping
// would (measured here: 0.6 s per GiB, against 1.0 s for fallocate + MAP_POPULATE).
Status ObjectTransfer::Receive(TlsConn& conn, const PullJob& job, int file, uint64_t* received) {
  auto failed = [&] {
    return MakeStatus(Code::kUnavailable, "{} after {} of {} bytes", SslError("receiving"), *received, job.size);
  };
  auto no_room = [&](int err) {
    return MakeStatus(Code::kResourceExhausted, "no room for object {} ({} bytes) in {}: {}", Hex(job.id), job.size,
                      store_dir_, std::strerror(err));
  };
  std::string buffer(kBuffer, '\0');
  while (*received < job.size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kBuffer, job.size - *received));
    if (!conn.ReadExact(buffer.data(), want)) return failed();
    for (size_t written = 0; written < want;) {
      ssize_t n = pwrite(file, buffer.data() + written, want - written, static_cast<off_t>(*received + written));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return no_room(n < 0 ? errno : ENOSPC);
      written += static_cast<size_t>(n);
    }
    *received += want;
  }
  return Status::Ok();
}

bool ObjectTransfer::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool ObjectTransfer::Track(int fd) {
  std::lock_guard lock(mu_);
  if (stopping_) return false;
  fds_.insert(fd);
  return true;
}

void ObjectTransfer::Untrack(int fd) {
  std::lock_guard lock(mu_);
  fds_.erase(fd);
  close(fd);
}

void ObjectTransfer::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    waiting_.clear();
  }
  StopListening();
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [this] { return threads_ == 0; });
}

}  // namespace corral::agent
