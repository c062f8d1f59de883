#include "corral/net/listener.h"

#include <unistd.h>

#include "corral/base/log.h"

namespace corral::net {

Result<std::unique_ptr<Listener>> Listener::Listen(asio::io_context& io, const Endpoint& endpoint,
                                                   std::shared_ptr<asio::ssl::context> tls) {
  std::unique_ptr<Listener> l(new Listener(io));
  l->tls_ = std::move(tls);
  l->bound_ = endpoint;
  ErrorCode ec;
  if (endpoint.is_unix()) {
    ::unlink(endpoint.unix_path.c_str());
    asio::local::stream_protocol::endpoint ep(endpoint.unix_path);
    l->local_.open(ep.protocol(), ec);
    if (!ec) l->local_.bind(ep, ec);
    if (!ec) l->local_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      return Err(Code::kUnavailable, fmt::format("cannot listen on {}: {}", endpoint.ToString(), ec.message()));
    return l;
  }
  auto addr = asio::ip::make_address(endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host, ec);
  if (ec)
    return Err(Code::kInvalidArgument,
               fmt::format("cannot listen on '{}': not an IP address ({})", endpoint.host, ec.message()));
  asio::ip::tcp::endpoint ep(addr, endpoint.port);
  l->tcp_.open(ep.protocol(), ec);
  if (!ec) l->tcp_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) l->tcp_.bind(ep, ec);
  if (!ec) l->tcp_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Err(Code::kUnavailable, fmt::format("cannot listen on {}: {}", endpoint.ToString(), ec.message()));
  l->bound_.port = l->tcp_.local_endpoint().port();
  return l;
}

Listener::~Listener() { Stop(); }

void Listener::Start(AcceptHandler on_accept) {
  on_accept_ = std::move(on_accept);
  if (bound_.is_unix())
    AcceptUnix();
  else
    AcceptTcp();
}

void Listener::Stop() {
  *alive_ = false;
  ErrorCode ignored;
  tcp_.close(ignored);
  local_.close(ignored);
}

void Listener::AcceptUnix() {
  local_.async_accept([this, alive = alive_](const ErrorCode& ec, asio::local::stream_protocol::socket s) {
    if (!*alive) return;
    if (!ec) on_accept_(MakeUnixStream(std::move(s)));
    else if (ec == asio::error::operation_aborted) return;
    AcceptUnix();
  });
}

void Listener::AcceptTcp() {
  tcp_.async_accept([this, alive = alive_](const ErrorCode& ec, asio::ip::tcp::socket s) {
    if (!*alive) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      LOG_WARN("accept failed: {}", ec.message());
      AcceptTcp();
      return;
    }
    TuneTcpSocket(s);
    if (!tls_) {
      on_accept_(MakeTcpStream(std::move(s)));
    } else {
      auto stream = std::make_shared<asio::ssl::stream<asio::ip::tcp::socket>>(std::move(s), *tls_);
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(10));
      timer->async_wait([stream](const ErrorCode& ec) {
        if (!ec) {
          ErrorCode ignored;
          stream->lowest_layer().close(ignored);
        }
      });
      stream->async_handshake(asio::ssl::stream_base::server,
                              [this, alive, stream, timer](const ErrorCode& ec) {
                                timer->cancel();
                                if (!*alive) return;
                                if (ec) {
                                  LOG_WARN("TLS handshake from a client failed: {}", ec.message());
                                  return;
                                }
                                on_accept_(MakeTlsStream(std::move(*stream)));
                              });
    }
    AcceptTcp();
  });
}

}  // namespace corral::net
