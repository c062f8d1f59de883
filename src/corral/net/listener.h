// Listener: accepts connections on a TCP port (optionally TLS) or a Unix socket and hands each
// accepted ByteStream to a callback. TLS handshakes run before the callback, bounded by a deadline,
// so a peer that connects and says nothing costs a socket for at most that long.
//
// A TLS listener looks at each connection's first byte: a TLS handshake record (0x16) gets the
// handshake; anything else is a plaintext peer, accepted as plaintext only where AllowPlaintext
// says so for its address (a head lets processes on its own machine in over loopback), otherwise
// sent the refusal (a message it can read: "this port needs TLS") and closed, with a log line.
// Connections still sorting or in their TLS handshake are capped (256 in all, 32 per address, an
// IPv6 /64 counting as one address; loopback is not counted, so the machine's own processes get
// in during a flood): more are closed at once, so slow handshakes cannot hold unbounded sockets.
// io thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "corral/net/stream.h"

namespace corral::net {

// `address` with an IPv4-mapped IPv6 address ("::ffff:127.0.0.1") turned back into IPv4.
asio::ip::address Unmapped(const asio::ip::address& address);

class Listener {
 public:
  using AcceptHandler = std::function<void(std::unique_ptr<ByteStream>)>;

  // Binds and listens. For TCP, port 0 picks a free port (see endpoint()).
  static Result<std::unique_ptr<Listener>> Listen(asio::io_context& io, const Endpoint& endpoint,
                                                  std::shared_ptr<asio::ssl::context> tls = nullptr);
  ~Listener();

  void Start(AcceptHandler on_accept);
  // TLS listeners: which plaintext peers to accept, and what the others are sent before closing.
  void AllowPlaintext(std::function<bool(const asio::ip::address&)> allow, std::string refusal) {
    allow_plaintext_ = std::move(allow);
    plaintext_refusal_ = std::move(refusal);
  }
  // TLS listeners: handshakes from now on present what `tls` holds (a rotated certificate). The
  // previous context stays alive for the connections made with it.
  void SetTls(std::shared_ptr<asio::ssl::context> tls) {
    retired_tls_.push_back(std::move(tls_));
    tls_ = std::move(tls);
  }
  void Stop();
  // The bound endpoint (with the real port when 0 was asked for).
  const Endpoint& endpoint() const { return bound_; }

 private:
  Listener(asio::io_context& io) : io_(io), tcp_(io), local_(io) {}
  void AcceptTcp();
  void AcceptUnix();
  // TLS listener: peeks at the first byte, then handshakes, accepts plaintext, or refuses.
  void Sort(std::shared_ptr<asio::ip::tcp::socket> socket, std::shared_ptr<void> slot);
  // A place among the connections being sorted (released when its last holder lets go), or null
  // when there are too many.
  std::shared_ptr<void> TakeHandshakeSlot(asio::ip::tcp::socket& socket);
  static constexpr size_t kMaxHandshakes = 256;
  static constexpr size_t kMaxHandshakesPerAddress = 32;
  struct HandshakeCounts {
    size_t total = 0;
    std::unordered_map<std::string, size_t> by_address;
  };
  std::shared_ptr<HandshakeCounts> handshakes_ = std::make_shared<HandshakeCounts>();
  int64_t handshakes_refused_ = 0;
  void Refuse(std::shared_ptr<asio::ip::tcp::socket> socket, std::shared_ptr<asio::steady_timer> timer,
              std::shared_ptr<void> slot);

  asio::io_context& io_;
  asio::ip::tcp::acceptor tcp_;
  asio::local::stream_protocol::acceptor local_;
  std::shared_ptr<asio::ssl::context> tls_;
  std::vector<std::shared_ptr<asio::ssl::context>> retired_tls_;
  Endpoint bound_;
  AcceptHandler on_accept_;
  std::function<bool(const asio::ip::address&)> allow_plaintext_;
  std::string plaintext_refusal_;
  int64_t plaintext_refused_ = 0;  // counted for the log's sake
  int64_t handshakes_failed_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::net
