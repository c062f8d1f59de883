// ByteStream: one interface over the three transports a Connection may run on: TCP, TLS over TCP,
// and Unix sockets. Created by a Listener (accept) or by Dial (connect). All methods must be called
// on the stream's io_context thread; handlers run there too.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "corral/base/status.h"
#include "corral/net/endpoint.h"

namespace corral::net {

namespace asio = boost::asio;
using ErrorCode = boost::system::error_code;
using IoHandler = std::function<void(const ErrorCode&, size_t)>;

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  virtual void AsyncReadSome(asio::mutable_buffer buffer, IoHandler handler) = 0;
  // Writes the whole buffer.
  virtual void AsyncWrite(asio::const_buffer buffer, IoHandler handler) = 0;
  virtual void Close() = 0;
  // Writes what the socket takes now without waiting, from any thread, or returns -1 (would block,
  // or not possible for this transport, e.g. TLS). Only when no asynchronous write is in flight.
  virtual ssize_t TryWriteNow(const char* data, size_t n) { return -1; }
  virtual std::string peer() const = 0;
  // The IP address of this end of a TCP connection (the interface it leaves by); empty otherwise.
  virtual std::string local_ip() const { return ""; }
  virtual asio::any_io_executor executor() = 0;
  // The OpenSSL handle (SSL*) of a TLS stream, else null.
  virtual void* native_ssl() { return nullptr; }
  // The socket's descriptor, for its owner's recv(): a stream from OutOfReactor(); else -1.
  virtual int plain_fd() { return -1; }
  // This stream's socket in a stream the io_context does not watch for reads (its owner reads it
  // with recv(), see ConnectionOptions::owner_reads): the io thread is woken for writes that must
  // wait for room only, not for every packet that arrives. TCP and Unix sockets; null for TLS (and
  // then this stream is unchanged). Before any asynchronous operation.
  virtual std::unique_ptr<ByteStream> OutOfReactor() { return nullptr; }
  // Gives the socket up: returns its descriptor, which this stream then neither uses nor closes
  // (its pending operations end with operation_aborted). -1 for TLS, whose state is in-process.
  virtual int Release() { return -1; }
};

// Sets TCP_NODELAY, keepalive (idle 10 s, interval 5 s, 3 probes) and TCP_USER_TIMEOUT (30 s) so
// half-open connections after a suspend are noticed.
void TuneTcpSocket(asio::ip::tcp::socket& socket);

std::unique_ptr<ByteStream> MakeTcpStream(asio::ip::tcp::socket socket);
std::unique_ptr<ByteStream> MakeUnixStream(asio::local::stream_protocol::socket socket);
std::unique_ptr<ByteStream> MakeTlsStream(asio::ssl::stream<asio::ip::tcp::socket> stream);

// Connects to `endpoint`; with `tls` set, runs the TLS client handshake too. `timeout` bounds it all.
void Dial(asio::io_context& io, const Endpoint& endpoint, std::shared_ptr<asio::ssl::context> tls,
          std::chrono::milliseconds timeout,
          std::function<void(Result<std::unique_ptr<ByteStream>>)> done);

}  // namespace corral::net
