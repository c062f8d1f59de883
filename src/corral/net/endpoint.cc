#include "corral/net/endpoint.h"

#include <charconv>

namespace corral::net {

bool Endpoint::is_loopback() const {
  return is_unix() || host == "localhost" || host.starts_with("127.") || host == "::1";
}

std::string Endpoint::ToString() const {
  if (is_unix()) return "unix:" + unix_path;
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::string PeerHost(std::string_view peer) {
  if (peer.starts_with('[')) {
    size_t end = peer.find(']');
    if (end != std::string_view::npos) return std::string(peer.substr(1, end - 1));
  }
  size_t colon = peer.rfind(':');
  if (colon != std::string_view::npos && peer.find(':') == colon && !peer.starts_with("unix:"))
    return std::string(peer.substr(0, colon));
  return std::string(peer);
}

Result<Endpoint> ParseEndpoint(std::string_view text, uint16_t default_port) {
  Endpoint ep;
  if (text.starts_with("unix:")) {
    ep.unix_path = std::string(text.substr(5));
    if (ep.unix_path.empty()) return Err(Code::kInvalidArgument, "unix: address without a path");
    return ep;
  }
  std::string_view host = text, port;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string_view::npos)
      return Err(Code::kInvalidArgument, fmt::format("bad address '{}': missing ']'", text));
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.starts_with(":")) port = rest.substr(1);
    else if (!rest.empty())
      return Err(Code::kInvalidArgument, fmt::format("bad address '{}'", text));
  } else if (size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty())
    return Err(Code::kInvalidArgument, fmt::format("bad address '{}': expected HOST:PORT", text));
  ep.host = std::string(host);
  if (port.empty()) {
    if (default_port == 0)
      return Err(Code::kInvalidArgument, fmt::format("address '{}' has no port: expected HOST:PORT", text));
    ep.port = default_port;
    return ep;
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return Err(Code::kInvalidArgument, fmt::format("bad port in '{}'", text));
  ep.port = static_cast<uint16_t>(value);
  return ep;
}

}  // namespace corral::net
