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
    } else if (auto slot = TakeHandshakeSlot(s)) {
      Sort(std::make_shared<asio::ip::tcp::socket>(std::move(s)), std::move(slot));
    } else {
      ErrorCode ignored;
      s.close(ignored);
    }
    AcceptTcp();
  });
}

asio::ip::address Unmapped(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  return address;
}

std::shared_ptr<void> Listener::TakeHandshakeSlot(asio::ip::tcp::socket& socket) {
  ErrorCode ec;
  auto remote = socket.remote_endpoint(ec);
  asio::ip::address a = Unmapped(remote.address());
  // This machine's own processes are not held up by a flood from outside.
  if (!ec && a.is_loopback()) return std::make_shared<int>(0);
  std::string ip = ec ? "?" : a.to_string();
  if (!ec && a.is_v6()) {  // one IPv6 host has a whole /64: count it as one address
    auto bytes = a.to_v6().to_bytes();
    for (size_t i = 8; i < bytes.size(); ++i) bytes[i] = 0;
    ip = asio::ip::address_v6(bytes).to_string() + "/64";
  }
  auto counts = handshakes_;
  size_t& from_ip = counts->by_address[ip];
  if (counts->total >= kMaxHandshakes || from_ip >= kMaxHandshakesPerAddress) {
    if (from_ip == 0) counts->by_address.erase(ip);
    if (handshakes_refused_++ % 100 == 0)
      LOG_WARN("refused a connection from {}: {} connections ({} from there) are still in their TLS handshake "
               "({} refused so far)", ip, counts->total, from_ip, handshakes_refused_);
    return nullptr;
  }
  ++from_ip;
  ++counts->total;
  // Freed when the last step of this connection's sorting or handshake lets go of it.
  struct Slot {
    std::shared_ptr<HandshakeCounts> counts;
    std::string ip;
    ~Slot() {
      --counts->total;
      if (auto it = counts->by_address.find(ip); it != counts->by_address.end() && --it->second == 0)
        counts->by_address.erase(it);
    }
  };
  auto slot = std::make_shared<Slot>();  // (built in place: a moved-from copy would count down too)
  slot->counts = std::move(counts);
  slot->ip = std::move(ip);
  return slot;
}

void Listener::Sort(std::shared_ptr<asio::ip::tcp::socket> socket, std::shared_ptr<void> slot) {
  // One deadline for the first byte and the handshake: a silent peer costs a socket for 10 s.
  auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(10));
  timer->async_wait([socket](const ErrorCode& ec) {
    if (ec) return;
    ErrorCode ignored;
    socket->close(ignored);
  });
  socket->async_wait(asio::ip::tcp::socket::wait_read, [this, alive = alive_, socket, timer, slot](const ErrorCode& ec) {
    if (!*alive || ec) return;
    unsigned char first = 0;
    ErrorCode peek_error;
    size_t n = socket->receive(asio::buffer(&first, 1), asio::ip::tcp::socket::message_peek, peek_error);
    if (peek_error || n == 0) {  // closed before saying anything
      timer->cancel();
      socket->close(peek_error);
      return;
    }
    if (first != 0x16) {
      ErrorCode ep_error;
      auto remote = socket->remote_endpoint(ep_error);
      if (!ep_error && allow_plaintext_ && allow_plaintext_(remote.address())) {
        timer->cancel();
        on_accept_(MakeTcpStream(std::move(*socket)));
        return;
      }
      if (plaintext_refused_++ % 100 == 0)  // a scanner must not flood the log
        LOG_WARN("a plaintext connection from {} to the TLS port {}: refused (clients on other machines "
                 "connect with TLS and the cluster's CA; {} so far)",
                 ep_error ? "?" : Endpoint{remote.address().to_string(), remote.port(), ""}.ToString(), bound_.port,
                 plaintext_refused_);
      Refuse(socket, timer, slot);
      return;
    }
    auto stream = std::make_shared<asio::ssl::stream<asio::ip::tcp::socket>>(std::move(*socket), *tls_);
    timer->async_wait([stream](const ErrorCode& ec) {  // the deadline now closes the TLS stream's socket
      if (ec) return;
      ErrorCode ignored;
      stream->lowest_layer().close(ignored);
    });
    stream->async_handshake(asio::ssl::stream_base::server, [this, alive, stream, timer, slot](const ErrorCode& ec) {
      timer->cancel();
      if (!*alive) return;
      if (ec) {
        if (handshakes_failed_++ % 100 == 0)
          LOG_WARN("TLS handshake from a client failed: {} ({} so far)", ec.message(), handshakes_failed_);
        return;
      }
      on_accept_(MakeTlsStream(std::move(*stream)));
    });
  });
}

void Listener::Refuse(std::shared_ptr<asio::ip::tcp::socket> socket, std::shared_ptr<asio::steady_timer> timer,
                      std::shared_ptr<void> slot) {
  // Say why, stop sending, and read what the peer sent until it closes (closing with unread input
  // would reset the connection, and the peer could lose the answer).
  auto text = std::make_shared<std::string>(plaintext_refusal_);
  asio::async_write(*socket, asio::buffer(*text), [socket, timer, text, slot](const ErrorCode& ec, size_t) {
    ErrorCode ignored;
    if (ec) {
      timer->cancel();
      socket->close(ignored);
      return;
    }
    socket->shutdown(asio::socket_base::shutdown_send, ignored);
    auto sink = std::make_shared<std::array<char, 4096>>();
    auto drain = std::make_shared<std::function<void()>>();
    *drain = [socket, timer, sink, drain, slot]() {
      socket->async_read_some(asio::buffer(*sink), [socket, timer, sink, drain, slot](const ErrorCode& ec, size_t) {
        if (!ec) return (*drain)();
        timer->cancel();
        ErrorCode ignored;
        socket->close(ignored);
        *drain = nullptr;  // breaks the cycle
      });
    };
    (*drain)();
  });
}

}  // namespace corral::net
