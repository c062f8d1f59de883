#include "corral/net/stream.h"

#include "corral/net/endpoint.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

namespace corral::net {
namespace {

template <typename Socket>
class AsioStream : public ByteStream {
 public:
  explicit AsioStream(Socket s) : s_(std::move(s)) {}

  void AsyncReadSome(asio::mutable_buffer buffer, IoHandler handler) override {
    s_.async_read_some(buffer, std::move(handler));
  }
  void AsyncWrite(asio::const_buffer buffer, IoHandler handler) override {
    asio::async_write(s_, buffer, std::move(handler));
  }
  void Close() override {
    ErrorCode ignored;
    Lowest().shutdown(asio::socket_base::shutdown_both, ignored);
    Lowest().close(ignored);
  }
  ssize_t TryWriteNow(const char* data, size_t n) override {
    if constexpr (std::is_same_v<Socket, asio::ssl::stream<asio::ip::tcp::socket>>) {
      return -1;
    } else {
      ssize_t r = ::send(s_.native_handle(), data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      return r < 0 ? -1 : r;
    }
  }
  std::string peer() const override {
    ErrorCode ec;
    auto ep = const_cast<AsioStream*>(this)->Lowest().remote_endpoint(ec);
    if (ec) return "?";
    if constexpr (std::is_same_v<decltype(ep), asio::local::stream_protocol::endpoint>)
      return "unix:" + ep.path();
    else
      return Endpoint{ep.address().to_string(), ep.port(), ""}.ToString();  // "[v6]:port" for IPv6
  }
  std::string local_ip() const override {
    if constexpr (std::is_same_v<Socket, asio::local::stream_protocol::socket>) {
      return "";
    } else {
      ErrorCode ec;
      auto ep = const_cast<AsioStream*>(this)->Lowest().local_endpoint(ec);
      return ec ? "" : ep.address().to_string();
    }
  }
  asio::any_io_executor executor() override { return s_.get_executor(); }
  void* native_ssl() override {
    if constexpr (std::is_same_v<Socket, asio::ssl::stream<asio::ip::tcp::socket>>) return s_.native_handle();
    else return nullptr;
  }
  std::unique_ptr<ByteStream> OutOfReactor() override;
  int Release() override {
    if constexpr (std::is_same_v<Socket, asio::ssl::stream<asio::ip::tcp::socket>>) {
      return -1;
    } else {
      ErrorCode ec;
      int fd = s_.release(ec);
      return ec ? -1 : fd;
    }
  }

 private:
  auto& Lowest() {
    if constexpr (requires { s_.lowest_layer(); }) return s_.lowest_layer();
    else return s_;
  }
  Socket s_;
};

// A socket the io_context does not watch: its owner reads it (recv); writes that must wait for
// room go through a descriptor registered with the io_context only while they wait.
class UnwatchedStream : public ByteStream {
 public:
  UnwatchedStream(asio::any_io_executor executor, int fd, std::string peer, std::string local_ip)
      : executor_(executor), writer_(executor), fd_(fd), peer_(std::move(peer)), local_ip_(std::move(local_ip)) {}
  ~UnwatchedStream() override { Close(); }

  void AsyncReadSome(asio::mutable_buffer, IoHandler handler) override {
    asio::post(executor_, [handler = std::move(handler)] { handler(asio::error::operation_not_supported, 0); });
  }
  void AsyncWrite(asio::const_buffer buffer, IoHandler handler) override {
    ErrorCode ec;
    int copy = fd_ < 0 ? -1 : ::dup(fd_);
    if (copy >= 0) writer_.assign(copy, ec);
    if (copy < 0 || ec) {
      if (copy >= 0) ::close(copy);
      asio::post(executor_, [handler = std::move(handler)] { handler(asio::error::bad_descriptor, 0); });
      return;
    }
    asio::async_write(writer_, buffer, [this, handler = std::move(handler)](const ErrorCode& ec, size_t n) {
      ErrorCode ignored;
      writer_.close(ignored);  // out of the io_context's sight again
      handler(ec, n);
    });
  }
  void Close() override {
    ErrorCode ignored;
    writer_.close(ignored);
    if (fd_ < 0) return;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
  }
  ssize_t TryWriteNow(const char* data, size_t n) override {
    ssize_t r = fd_ < 0 ? -1 : ::send(fd_, data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    return r < 0 ? -1 : r;
  }
  std::string peer() const override { return peer_; }
  std::string local_ip() const override { return local_ip_; }
  asio::any_io_executor executor() override { return executor_; }
  int plain_fd() override { return fd_; }
  int Release() override {
    ErrorCode ignored;
    writer_.close(ignored);
    return std::exchange(fd_, -1);
  }

 private:
  asio::any_io_executor executor_;
  asio::posix::stream_descriptor writer_;  // a duplicate of fd_ while a write waits for room
  int fd_;
  std::string peer_, local_ip_;
};

template <typename Socket>
std::unique_ptr<ByteStream> AsioStream<Socket>::OutOfReactor() {
  if constexpr (std::is_same_v<Socket, asio::ssl::stream<asio::ip::tcp::socket>>) {
    return nullptr;
  } else {
    std::string peer = this->peer(), ip = local_ip();
    ErrorCode ec;
    int fd = s_.release(ec);
    if (ec) return nullptr;
    return std::make_unique<UnwatchedStream>(s_.get_executor(), fd, std::move(peer), std::move(ip));
  }
}

}  // namespace

void TuneTcpSocket(asio::ip::tcp::socket& socket) {
  ErrorCode ec;
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  socket.set_option(asio::socket_base::keep_alive(true), ec);
  int fd = socket.native_handle();
  int idle = 10, interval = 5, count = 3;
  unsigned user_timeout_ms = 30000;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

std::unique_ptr<ByteStream> MakeTcpStream(asio::ip::tcp::socket socket) {
  return std::make_unique<AsioStream<asio::ip::tcp::socket>>(std::move(socket));
}
std::unique_ptr<ByteStream> MakeUnixStream(asio::local::stream_protocol::socket socket) {
  return std::make_unique<AsioStream<asio::local::stream_protocol::socket>>(std::move(socket));
}
std::unique_ptr<ByteStream> MakeTlsStream(asio::ssl::stream<asio::ip::tcp::socket> stream) {
  return std::make_unique<AsioStream<asio::ssl::stream<asio::ip::tcp::socket>>>(std::move(stream));
}

namespace {

// Shared state of one Dial: the timer and the socket being connected; `done` runs exactly once.
struct DialOp : std::enable_shared_from_this<DialOp> {
  DialOp(asio::io_context& io) : timer(io), resolver(io), tcp(io), local(io) {}
  asio::steady_timer timer;
  asio::ip::tcp::resolver resolver;
  asio::ip::tcp::socket tcp;
  asio::local::stream_protocol::socket local;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket>> tls;
  // Held until the handshake ends: the context owns its verify callback (the SSL object keeps
  // only the OpenSSL context, whose callback would be gone).
  std::shared_ptr<asio::ssl::context> tls_context;
  std::function<void(Result<std::unique_ptr<ByteStream>>)> done;
  std::string what;

  void Finish(Result<std::unique_ptr<ByteStream>> r) {
    if (!done) return;
    timer.cancel();
    auto d = std::move(done);
    done = nullptr;
    d(std::move(r));
  }
  void Fail(const ErrorCode& ec) {
    Finish(Err(Code::kUnavailable, fmt::format("cannot connect to {}: {}", what, ec.message())));
  }
};

}  // namespace

void Dial(asio::io_context& io, const Endpoint& endpoint, std::shared_ptr<asio::ssl::context> tls,
          std::chrono::milliseconds timeout,
          std::function<void(Result<std::unique_ptr<ByteStream>>)> done) {
  auto op = std::make_shared<DialOp>(io);
  op->done = std::move(done);
  op->what = endpoint.ToString();
  op->tls_context = tls;
  op->timer.expires_after(timeout);
  op->timer.async_wait([op, timeout](const ErrorCode& ec) {
    if (ec) return;
    ErrorCode ignored;
    op->resolver.cancel();
    op->tcp.close(ignored);
    op->local.close(ignored);
    if (op->tls) op->tls->lowest_layer().close(ignored);
    op->Finish(Err(Code::kDeadlineExceeded,
                   fmt::format("connecting to {} took longer than {} ms", op->what, timeout.count())));
  });
  if (endpoint.is_unix()) {
    op->local.async_connect(asio::local::stream_protocol::endpoint(endpoint.unix_path),
                            [op](const ErrorCode& ec) {
                              if (ec) return op->Fail(ec);
                              op->Finish(MakeUnixStream(std::move(op->local)));
                            });
    return;
  }
  op->resolver.async_resolve(
      endpoint.host, std::to_string(endpoint.port),
      [op, tls](const ErrorCode& ec, asio::ip::tcp::resolver::results_type results) {
        if (ec) return op->Fail(ec);
        asio::async_connect(op->tcp, results, [op, tls](const ErrorCode& ec, const auto&) {
          if (ec) return op->Fail(ec);
          TuneTcpSocket(op->tcp);
          if (!tls) return op->Finish(MakeTcpStream(std::move(op->tcp)));
          op->tls = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket>>(std::move(op->tcp), *tls);
          op->tls->async_handshake(asio::ssl::stream_base::client, [op](const ErrorCode& ec) {
            if (ec)
              return op->Finish(Err(Code::kUnavailable,
                                    fmt::format("TLS handshake with {} failed: {}", op->what, ec.message())));
            op->Finish(MakeTlsStream(std::move(*op->tls)));
          });
        });
      });
}

}  // namespace corral::net
