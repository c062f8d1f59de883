#include "corral/head/http_server.h"

#include <openssl/crypto.h>

#include <deque>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "corral/base/log.h"
#include "corral/head/status_json.h"

namespace corral::head {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kReadTimeout = std::chrono::seconds(30);
constexpr size_t kMaxEventStreams = 64;  // dashboard tabs open at once, all clients together
constexpr size_t kPublicBodyLimit = 16u << 10;  // bodies of requests to public routes (the login)

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// "host:port" or "[v6]:port" -> host
std::string HostOnly(std::string_view host) {
  if (!host.empty() && host[0] == '[') {
    size_t end = host.find(']');
    return std::string(host.substr(0, end == std::string_view::npos ? host.size() : end + 1));
  }
  return std::string(host.substr(0, host.find(':')));
}

// Method, path and query (for routing, before the body is read).
HttpRequest ToRequestLine(const http::request<http::string_body>& req) {
  HttpRequest r;
  r.method = std::string(req.method_string());
  std::string_view target = req.target();
  size_t q = target.find('?');
  r.path = PercentDecode(target.substr(0, q), false);
  if (q != std::string_view::npos) r.query = ParseQuery(target.substr(q + 1));
  return r;
}

HttpRequest ToRequest(http::request<http::string_body>& req, const std::string& peer, const std::string& peer_ip) {
  HttpRequest r = ToRequestLine(req);
  r.body = std::move(req.body());
  r.content_type = std::string(req[http::field::content_type]);
  r.peer = peer;
  r.peer_ip = peer_ip;
  return r;
}

HttpCredentials ToCredentials(const http::request<http::string_body>& req) {
  return HttpCredentials{std::string(req[http::field::authorization]), std::string(req[http::field::cookie]),
                         std::string(req["X-CSRF-Token"]), std::string(req[http::field::origin])};
}

// The value of cookie `name` in a Cookie header ("" if absent).
std::string CookieValue(std::string_view header, std::string_view name) {
  size_t i = 0;
  while (i < header.size()) {
    size_t end = header.find(';', i);
    if (end == std::string_view::npos) end = header.size();
    std::string_view part = header.substr(i, end - i);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.starts_with(name) && part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
    i = end + 1;
  }
  return "";
}

// Whether an Origin header ("http://host:port") names the server the Host header names.
bool SameOrigin(std::string_view origin, std::string_view host) {
  size_t scheme = origin.find("://");
  return scheme != std::string_view::npos && origin.substr(scheme + 3) == host;
}

}  // namespace

std::map<std::string, std::string> ParseQuery(std::string_view q) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i <= q.size()) {
    size_t j = q.find('&', i);
    if (j == std::string_view::npos) j = q.size();
    std::string_view kv = q.substr(i, j - i);
    if (!kv.empty()) {
      size_t eq = kv.find('=');
      out[PercentDecode(kv.substr(0, eq), true)] = eq == std::string_view::npos ? "" : PercentDecode(kv.substr(eq + 1), true);
    }
    i = j + 1;
  }
  return out;
}

HttpResponse HttpResponse::Error(int status, const std::string& message) {
  nlohmann::json j;
  j["error"]["status"] = status;
  j["error"]["message"] = message;
  return Json(status, JsonText(j));
}

struct HttpServer::Impl {
  explicit Impl(asio::io_context& io) : acceptor(io) {}
  tcp::acceptor acceptor;
};

// One connection: read a request's header, pass the gate (Host, token), read its body, answer it;
// repeat while the client keeps the connection alive. `Stream`: beast::tcp_stream, or that under TLS.
template <typename Stream>
struct HttpServer::Session : HttpServer::EventSink, std::enable_shared_from_this<HttpServer::Session<Stream>> {
  template <typename... Args>
  Session(HttpServer* server, tcp::socket socket, Args&&... tls) : server(server), stream(std::move(socket), tls...) {
    beast::error_code ec;
    auto ep = Lowest().socket().remote_endpoint(ec);
    peer_ip = ec ? "?" : ep.address().to_string();
    peer = ec ? "?" : net::Endpoint{peer_ip, ep.port(), ""}.ToString();
  }

  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream); }

  void Begin() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      Read();
    } else {
      Lowest().expires_after(kReadTimeout);
      stream.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return self->Close();  // not TLS, or a certificate it would not take: nothing to say
        self->Read();
      });
    }
  }

  void Read() {
    parser.emplace();
    parser->body_limit(server->options_.max_body_bytes);
    Lowest().expires_after(kReadTimeout);
    http::async_read_header(stream, buffer, *parser, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->OnHeader(ec);
    });
  }

  // Errors of reading; true when the connection is done with.
  bool Failed(beast::error_code ec) {
    if (!ec) return false;
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted) {
      Close();
    } else if (ec == http::error::body_limit) {
      Send(HttpResponse::Error(413, fmt::format("the request body is over the {}-byte limit",
                                                server->options_.max_body_bytes)),
           false);
    } else {
      Send(HttpResponse::Error(400, "malformed HTTP request: " + ec.message()), false);
    }
    return true;
  }

  void OnHeader(beast::error_code ec) {
    Lowest().expires_never();
    if (Failed(ec)) return;
    auto& req = parser->get();
    keep_alive = req.keep_alive();
    version = req.version();
    // The body is read only once the gate let the request through; a refused one is answered and
    // the connection closed, its body never read.
    credentials = ToCredentials(req);
    server->Admit(ToRequest(req, peer, peer_ip), std::string(req[http::field::host]), credentials,
                  [self = this->shared_from_this(), alive = server->alive_](HttpResponse refusal) {
                    if (*alive) self->Send(std::move(refusal), false);
                  },
                  [self = this->shared_from_this()] {
                    if (self->parser->is_done()) return self->OnRead({});
                    // What anyone may send unauthenticated (a login) is small.
                    if (self->server->IsPublic(ToRequestLine(self->parser->get())))
                      self->parser->body_limit(kPublicBodyLimit);
                    self->Lowest().expires_after(kReadTimeout);
                    http::async_read(self->stream, self->buffer, *self->parser,
                                     [self](beast::error_code ec, size_t) { self->OnRead(ec); });
                  });
  }

  void OnRead(beast::error_code ec) {
    Lowest().expires_never();  // the handler may take its time (a store commit); the write gets its own deadline
    if (Failed(ec)) return;
    auto& req = parser->get();
    credentials = ToCredentials(req);
    server->Serve(ToRequest(req, peer, peer_ip), std::string(req[http::field::host]), credentials,
                  [self = this->shared_from_this(), alive = server->alive_](HttpResponse resp) {
                    if (*alive) self->Send(std::move(resp), self->keep_alive);
                  });
  }

  void Send(HttpResponse resp, bool keep) {
    if (resp.event_stream) {
      if (server->event_streams() < kMaxEventStreams) return StartStream();
      resp = HttpResponse::Error(503, "too many open event streams; close some dashboard tabs");
    }
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(resp.status), version ? version : 11);
    res->set(http::field::server, "corral");
    res->set(http::field::content_type, resp.content_type);
    res->set(http::field::cache_control, "no-store");
    res->set("X-Content-Type-Options", "nosniff");
    res->set("X-Frame-Options", "DENY");
    res->set("Referrer-Policy", "no-referrer");
    for (auto& [name, value] : resp.headers) res->insert(name, value);
    if (resp.status == 401) res->set(http::field::www_authenticate, "Bearer realm=\"corral\"");
    res->keep_alive(keep);
    res->body() = std::move(resp.body);
    res->prepare_payload();
    Lowest().expires_after(kReadTimeout);
    http::async_write(stream, *res, [self = this->shared_from_this(), res, keep](beast::error_code ec, size_t) {
      if (ec || !keep) {
        self->Close();
        return;
      }
      self->Read();
    });
  }

  void Close() {
    beast::error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    Lowest().close();
  }

  // The answer was an event stream: its header now, then what Publish sends, until either side ends it.
  void StartStream() {
    Lowest().expires_never();
    server->streams_.push_back(std::weak_ptr<EventSink>(this->shared_from_this()));
    Push(std::make_shared<const std::string>(
        "HTTP/1.1 200 OK\r\nServer: corral\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n: connected\n\n"));
    WatchForClose();
  }

  void WatchForClose() {  // a client that went away ends the stream (a read completes with an error)
    stream.async_read_some(asio::buffer(watch_buf), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec || self->ended) return self->End();
      self->WatchForClose();
    });
  }

  void Push(std::shared_ptr<const std::string> chunk) override {
    if (ended) return;
    outbox_bytes += chunk->size();
    outbox.push_back(std::move(chunk));
    if (outbox_bytes > kMaxOutbox) return End();  // a reader this slow is not reading: let it go
    if (!writing) WriteNext();
  }

  void WriteNext() {
    if (outbox.empty() || ended) {
      writing = false;
      return;
    }
    writing = true;
    asio::async_write(stream, asio::buffer(*outbox.front()), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->outbox_bytes -= self->outbox.front()->size();
      self->outbox.pop_front();
      if (ec) return self->End();
      self->WriteNext();
    });
  }

  void End() override {
    if (std::exchange(ended, true)) return;
    Close();
  }

  ~Session() {
    if (on_gone) on_gone();
  }

  HttpServer* server;
  std::function<void()> on_gone;  // the server's count of connections from this address
  std::shared_ptr<asio::ssl::context> tls_context;  // kept alive for the stream made with it
  Stream stream;
  beast::flat_buffer buffer;
  std::optional<http::request_parser<http::string_body>> parser;
  std::string peer;
  std::string peer_ip;
  bool keep_alive = false;
  unsigned version = 11;
  // An event stream's state.
  static constexpr size_t kMaxOutbox = 16u << 20;
  std::deque<std::shared_ptr<const std::string>> outbox;
  size_t outbox_bytes = 0;
  bool writing = false;
  bool ended = false;
  char watch_buf[512];
};

HttpServer::HttpServer(asio::io_context& io, HttpOptions options)
    : io_(io), options_(std::move(options)), impl_(std::make_unique<Impl>(io)) {
  for (const char* h : {"localhost", "127.0.0.1", "[::1]"}) options_.allowed_hosts.insert(h);
  RouteSessions();
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(const std::string& method, const std::string& pattern, std::optional<Role> need,
                       HttpHandler handler) {
  routes_.push_back({method, Split(pattern), need, std::move(handler)});
}

std::vector<std::tuple<std::string, std::string, std::optional<Role>>> HttpServer::routes() const {
  std::vector<std::tuple<std::string, std::string, std::optional<Role>>> out;
  for (const auto& r : routes_) {
    std::string pattern;
    for (const auto& s : r.segments) pattern += "/" + s;
    out.emplace_back(r.method, pattern.empty() ? "/" : pattern, r.need);
  }
  return out;
}

Status HttpServer::Start() {
  beast::error_code ec;
  auto addr = asio::ip::make_address(options_.listen.host, ec);
  if (ec) return MakeStatus(Code::kInvalidArgument, "HTTP: '{}' is not an IP address", options_.listen.host);
  tcp::endpoint ep(addr, options_.listen.port);
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return MakeStatus(Code::kUnavailable, "HTTP: cannot listen on {}: {} (choose another with --http-port, or -1 for none)",
                      options_.listen.ToString(), ec.message());
  endpoint_ = options_.listen;
  endpoint_.port = a.local_endpoint().port();
  const std::string& h = options_.listen.host;
  options_.allowed_hosts.insert(h.find(':') != std::string::npos ? "[" + h + "]" : h);  // IPv6 as in Host headers
  Accept();
  return Status::Ok();
}

void HttpServer::Stop() {
  if (!*alive_) return;
  *alive_ = false;
  beast::error_code ec;
  impl_->acceptor.close(ec);
}

void HttpServer::Accept() {
  impl_->acceptor.async_accept([this, alive = alive_](beast::error_code ec, tcp::socket socket) {
    if (!*alive) return;
    if (!ec) {
      beast::error_code ep_error;
      auto ep = socket.remote_endpoint(ep_error);
      std::string ip = ep_error ? "?" : ep.address().to_string();
      auto counts = connections_by_address_;
      if ((*counts)[ip] >= options_.max_connections_per_address) {
        if (connections_refused_++ % 100 == 0)
          LOG_WARN("HTTP: refused a connection from {}: {} open from there already ({} refused so far)",
                   Printable(ip), (*counts)[ip], connections_refused_);
        socket.close(ep_error);
      } else {
        (*counts)[ip]++;
        auto gone = [counts, ip] {
          if (--(*counts)[ip] == 0) counts->erase(ip);
        };
        if (auto tls = options_.tls ? options_.tls() : nullptr) {
          auto session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(this, std::move(socket), *tls);
          session->on_gone = std::move(gone);
          session->tls_context = std::move(tls);
          session->Begin();
        } else {
          auto session = std::make_shared<Session<beast::tcp_stream>>(this, std::move(socket));
          session->on_gone = std::move(gone);
          session->Begin();
        }
      }
    }
    Accept();
  });
}

std::chrono::milliseconds HttpServer::FailureDelay(const std::string& peer_ip) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(peer_ip, ec);
  if (!ec && addr.is_loopback()) return std::chrono::milliseconds(0);  // this machine: its own users
  auto now = std::chrono::steady_clock::now();
  if (failures_.size() > 10000) {  // forget old addresses rather than grow; all of them if none is old
    std::erase_if(failures_, [&](const auto& e) { return now - e.second.last > std::chrono::minutes(10); });
    if (failures_.size() > 10000) failures_.clear();
  }
  Failures& f = failures_[peer_ip];
  if (now - f.last > std::chrono::minutes(10)) f.count = 0;
  f.count++;
  f.last = now;
  int over = f.count - options_.free_failures;
  if (over <= 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(std::min<int64_t>(2000, int64_t{100} << std::min(over - 1, 10)));
}

void HttpServer::HandleRaw(std::string_view raw, const std::string& peer_ip, HttpRespond respond) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(options_.max_body_bytes);
  parser.eager(true);
  beast::error_code ec;
  parser.put(asio::buffer(raw.data(), raw.size()), ec);  // bytes past one request are not ours to answer
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec == http::error::body_limit) return respond(HttpResponse::Error(413, "the request body is over the limit"));
  if (ec || !parser.is_done()) return respond(HttpResponse::Error(400, "malformed HTTP request"));
  auto& req = parser.get();
  Serve(ToRequest(req, peer_ip, peer_ip), std::string(req[http::field::host]), ToCredentials(req), std::move(respond));
}

bool HttpServer::IsPublic(const HttpRequest& request) const {
  const RouteEntry* found = Match(request, nullptr, nullptr);
  return found && !found->need;
}

size_t HttpServer::event_streams() const {
  size_t n = 0;
  for (const auto& s : streams_) n += !s.expired();
  return n;
}

void HttpServer::Publish(std::string_view event, std::string_view data) {
  auto chunk = std::make_shared<const std::string>(fmt::format("event: {}\ndata: {}\n\n", event, data));
  for (auto it = streams_.begin(); it != streams_.end();) {
    std::shared_ptr<EventSink> sink = it->lock();
    if (!sink) {
      it = streams_.erase(it);
      continue;
    }
    auto who = Who(sink->credentials);  // a revoked token or an ended session ends its streams
    if (!who || !Allows(who->role, Role::kRead)) {
      sink->End();
      it = streams_.erase(it);
      continue;
    }
    sink->Push(chunk);
    ++it;
  }
}

size_t HttpServer::open_connections() const {
  size_t n = 0;
  for (const auto& [address, count] : *connections_by_address_) n += count;
  return n;
}

void HttpServer::Serve(const HttpRequest& request, const std::string& host, const HttpCredentials& credentials,
                       HttpRespond respond) {
  requests_++;
  auto answered = std::make_shared<bool>(false);
  HttpRespond once = [respond = std::move(respond), answered](HttpResponse r) {
    if (*answered) return;
    *answered = true;
    respond(std::move(r));
  };
  try {
    Dispatch(request, host, credentials, once);
  } catch (const std::exception& e) {
    // A defect, not the client's fault; the head goes on serving everyone else.
    LOG_ERROR("HTTP {} {} from {} failed: {}", Printable(request.method), Printable(request.path), request.peer,
              Printable(e.what()));
    once(HttpResponse::Error(500, "internal error while handling this request; the head's log has the details"));
  }
}

std::optional<HttpResponse> HttpServer::CheckHost(const std::string& host) const {
  if (options_.allowed_hosts.contains(HostOnly(host))) return std::nullopt;
  return HttpResponse::Error(
      421, fmt::format("Host '{}' is not this server's name; start the head with --http-allowed-host {} to accept it",
                       host, HostOnly(host)));
}

const HttpServer::RouteEntry* HttpServer::Match(const HttpRequest& request, std::map<std::string, std::string>* params,
                                                bool* path_matched) const {
  std::vector<std::string> segments = Split(request.path);
  for (const auto& route : routes_) {
    if (route.segments.size() != segments.size()) continue;
    std::map<std::string, std::string> p;
    bool match = true;
    for (size_t i = 0; i < segments.size() && match; ++i) {
      const std::string& s = route.segments[i];
      if (s.size() > 2 && s.front() == '{' && s.back() == '}')
        p[s.substr(1, s.size() - 2)] = segments[i];
      else
        match = s == segments[i];
    }
    if (!match) continue;
    if (path_matched) *path_matched = true;
    if (route.method != request.method) continue;
    if (params) *params = std::move(p);
    return &route;
  }
  return nullptr;
}

Result<TokenInfo> HttpServer::Who(const HttpCredentials& credentials, std::string* session_id) {
  constexpr std::string_view kBearer = "Bearer ";
  if (credentials.authorization.starts_with(kBearer))
    return WhoByToken(std::string_view(credentials.authorization).substr(kBearer.size()));
  std::string id = CookieValue(credentials.cookie, CookieName());
  if (id.empty()) return Err(Code::kPermissionDenied, "no token");
  WebSessions::Session* session = sessions_.Find(id);
  if (!session) return Err(Code::kPermissionDenied, "the dashboard session ended; log in again");
  auto who = WhoByToken(session->token);
  if (!who) {  // revoked or expired since: the session goes with it
    sessions_.Remove(id);
    return who;
  }
  if (session_id) *session_id = id;
  return who;
}

Result<TokenInfo> HttpServer::WhoByToken(std::string_view token) {
  if (options_.authenticate) return options_.authenticate(token);
  if (token.size() == options_.token.size() && CRYPTO_memcmp(token.data(), options_.token.data(), token.size()) == 0)
    return TokenInfo{"", "admin", Role::kAdmin, 0, 0, 0};
  return Err(Code::kPermissionDenied, "wrong token");
}

void HttpServer::RefuseLogin(const HttpRequest& request, const HttpCredentials& credentials, HttpRespond respond) {
  bool session = credentials.authorization.empty() && !CookieValue(credentials.cookie, CookieName()).empty();
  LogAuthFailure(request.peer_ip, "http",
                 fmt::format("{} on {} {}",
                             session                              ? "unknown session"
                             : credentials.authorization.empty() ? "no token"
                                                                  : "wrong token",
                             Printable(request.method), Printable(request.path)));
  HttpResponse refusal = HttpResponse::Error(
      401, session ? "the dashboard session ended (logged out, expired, or its token was revoked); log in again"
           : credentials.authorization.empty()
               ? "missing 'Authorization: Bearer <token>' (a token of this head: `corral token create`, or the admin "
                 "token in its state dir)"
               : "wrong token (revoked, expired, or not this head's)");
  auto delay = FailureDelay(request.peer_ip);
  if (delay.count() == 0) return respond(std::move(refusal));
  // Guessing tokens from one address gets slow; the answer waits on a timer, not the loop.
  auto timer = std::make_shared<asio::steady_timer>(io_, delay);
  timer->async_wait([timer, refusal = std::move(refusal), respond = std::move(respond)](beast::error_code) mutable {
    respond(std::move(refusal));
  });
}

void HttpServer::Admit(const HttpRequest& request, const std::string& host, const HttpCredentials& credentials,
                       HttpRespond refuse, std::function<void()> go_on) {
  if (auto bad = CheckHost(host)) return refuse(std::move(*bad));
  const RouteEntry* found = Match(request, nullptr, nullptr);
  if ((found && !found->need) || Who(credentials)) return go_on();
  RefuseLogin(request, credentials, std::move(refuse));
}

std::optional<HttpResponse> HttpServer::CheckCsrf(const HttpRequest& request, const std::string& host,
                                                  const HttpCredentials& credentials, const std::string& session_id) {
  if (request.method == "GET" || request.method == "HEAD") return std::nullopt;
  if (!credentials.origin.empty() && !SameOrigin(credentials.origin, host))
    return HttpResponse::Error(403, fmt::format("cross-site request refused: it comes from {}, not this server's page",
                                                Printable(credentials.origin)));
  if (session_id.empty()) return std::nullopt;  // a bearer token: a browser never sends one by itself
  WebSessions::Session* s = sessions_.Find(session_id);
  if (!s || credentials.csrf.size() != s->csrf.size() ||
      CRYPTO_memcmp(credentials.csrf.data(), s->csrf.data(), s->csrf.size()) != 0)
    return HttpResponse::Error(403, "missing or wrong X-CSRF-Token: a change made with a dashboard session must "
                                    "carry the token GET /api/v1/session gives (the dashboard does this)");
  return std::nullopt;
}

void HttpServer::Dispatch(const HttpRequest& request, const std::string& host, const HttpCredentials& credentials,
                          HttpRespond respond) {
  // The gate: every request, before routing.
  if (auto bad = CheckHost(host)) return respond(std::move(*bad));
  std::map<std::string, std::string> params;
  bool path_matched = false;
  const RouteEntry* found = Match(request, &params, &path_matched);
  std::string session_id;
  std::optional<TokenInfo> as;
  auto serve = [&] {
    HttpRequest routed = request;
    routed.params = std::move(params);
    routed.session_id = session_id;
    if (as) {
      routed.authenticated = true;
      routed.who = as->name;
      routed.role = as->role;
    }
    found->handler(routed, std::move(respond));
  };
  if (found && !found->need) {  // public; a change (the login) only from this server's own pages
    if (auto bad = CheckCsrf(request, host, credentials, "")) return respond(std::move(*bad));
    if (request.method == "GET")  // who asks, if anyone (the page asks whether it is logged in); never a refusal
      if (auto who = Who(credentials, &session_id)) as = *who;
    return serve();
  }
  // Everything else needs a token, also to learn whether a path exists.
  auto who = Who(credentials, &session_id);
  if (!who) return RefuseLogin(request, credentials, std::move(respond));
  as = *who;
  if (found) {
    if (auto bad = CheckCsrf(request, host, credentials, session_id)) return respond(std::move(*bad));
    if (!Allows(who->role, *found->need)) {
      respond(HttpResponse::Error(403, fmt::format("token '{}' has role {}; {} {} needs {}", who->name,
                                                   RoleName(who->role), request.method, request.path,
                                                   RoleName(*found->need))));
      return;
    }
    return serve();
  }
  if (path_matched) {
    respond(HttpResponse::Error(405, fmt::format("{} is not allowed on {}", request.method, request.path)));
    return;
  }
  respond(HttpResponse::Error(404, fmt::format("no such endpoint: {} (the API lives under /api/v1/)", request.path)));
}

}  // namespace corral::head
