// Listener: accepts connections on a TCP port (optionally TLS) or a Unix socket and hands each
// accepted ByteStream to a callback. TLS handshakes run before the callback, bounded by a deadline,
// so a peer that connects and says nothing costs a socket for at most that long.
// io thread only.
#pragma once

#include <functional>
#include <memory>

#include "corral/net/stream.h"

namespace corral::net {

class Listener {
 public:
  using AcceptHandler = std::function<void(std::unique_ptr<ByteStream>)>;

  // Binds and listens. For TCP, port 0 picks a free port (see endpoint()).
  static Result<std::unique_ptr<Listener>> Listen(asio::io_context& io, const Endpoint& endpoint,
                                                  std::shared_ptr<asio::ssl::context> tls = nullptr);
  ~Listener();

  void Start(AcceptHandler on_accept);
  void Stop();
  // The bound endpoint (with the real port when 0 was asked for).
  const Endpoint& endpoint() const { return bound_; }

 private:
  Listener(asio::io_context& io) : io_(io), tcp_(io), local_(io) {}
  void AcceptTcp();
  void AcceptUnix();

  asio::io_context& io_;
  asio::ip::tcp::acceptor tcp_;
  asio::local::stream_protocol::acceptor local_;
  std::shared_ptr<asio::ssl::context> tls_;
  Endpoint bound_;
  AcceptHandler on_accept_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::net
