// HttpServer: the head's HTTP face (REST API under /api/v1/, /metrics, the dashboard), on the
// head's own io_context with Boost.Beast: no thread per connection.
//
// Every request goes through one gate: the Host header must name this server (a web page on
// another site cannot reach it through DNS rebinding); then, unless its route is public,
// `Authorization: Bearer <token>` or a dashboard session cookie (web_sessions.h; POST
// /api/v1/login makes one) must carry a live token (compared in constant time; a failure is
// a 401 logged by LogAuthFailure, the one line fail2ban matches, also for paths that do not exist),
// and the token's role must be the one its route names (else 403). A state-changing request
// (not GET or HEAD) made with a session cookie must also carry the session's X-CSRF-Token and, if
// the browser sent an Origin, come from this server's origin (else 403): another site's page can
// neither read the token nor forge the header. Every route names its role. Errors are JSON:
// {"error": {"status": 404, "message": "..."}}. Bodies are capped (413 beyond). Nothing a client
// sends can end the head: strings from it are made safe before they reach JSON or the log, and an
// exception from a handler becomes a 500 for that request. A request's body is read only after the
// Host and token checks passed. With `tls`, every connection is HTTPS. io thread only.
#pragma once

#include <optional>

#include "corral/head/token_store.h"
#include "corral/head/web_sessions.h"

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include "corral/base/status.h"
#include "corral/net/endpoint.h"

namespace corral::head {

struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // without the query
  std::map<std::string, std::string> query;    // decoded
  std::map<std::string, std::string> params;   // from the route pattern: {id}
  std::string body;
  std::string content_type;
  std::string peer;                            // ip:port, [v6]:port
  std::string peer_ip;                         // the address alone
  bool authenticated = false;                  // it came with a live token or session (also on public routes)
  std::string session_id;                      // set when it came with a dashboard session
  std::string who;                             // the name of the token it came with
  Role role = Role::kRead;                     // and its role
};

// What a request may authenticate with.
struct HttpCredentials {
  std::string authorization;  // "Bearer <token>"
  std::string cookie;         // the Cookie header
  std::string csrf;           // X-CSRF-Token
  std::string origin;         // Origin
};

// "a=1&b=x%20y" as a map, decoded ('+' is a space): a URL's query, or a form's body.
std::map<std::string, std::string> ParseQuery(std::string_view q);

struct HttpResponse {
  int status = 200;
  std::string body;                            // JSON unless content_type says otherwise
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // more: Set-Cookie
  // A server-sent event stream (text/event-stream): the connection stays open and gets what
  // HttpServer::Publish sends, while its credentials stay good.
  bool event_stream = false;

  static HttpResponse Json(int status, std::string body) { return Text(status, std::move(body), "application/json"); }
  static HttpResponse Text(int status, std::string body, std::string content_type) {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    r.content_type = std::move(content_type);
    return r;
  }
  // {"error": {"status": N, "message": "..."}}
  static HttpResponse Error(int status, const std::string& message);
};

using HttpRespond = std::function<void(HttpResponse)>;
// A handler answers through `respond`, now or later (after a store commit), exactly once.
using HttpHandler = std::function<void(const HttpRequest&, HttpRespond)>;

struct HttpOptions {
  net::Endpoint listen;
  std::string token;  // accepted as admin when `authenticate` is unset (tests, the fuzz target)
  // Who presents a bearer token; kPermissionDenied when nobody.
  std::function<Result<TokenInfo>(std::string_view token)> authenticate;
  std::set<std::string> allowed_hosts;  // Host header values (without port) accepted; loopback names always
  size_t max_body_bytes = 8u << 20;
  // Connections open at once from one address (more are closed at once), and how failed logins
  // from one address (not loopback) are slowed: after `free_failures` in ten minutes, each next 401
  // waits 100 ms, doubling, up to 2 s.
  size_t max_connections_per_address = 32;
  int free_failures = 5;
  // HTTPS: the context each new connection is served with (asked anew, so a rotated certificate
  // is used from then on); unset or null: plain HTTP.
  std::function<std::shared_ptr<boost::asio::ssl::context>()> tls;
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, HttpOptions options);
  ~HttpServer();

  // `pattern`: a path whose segments may be {name}, e.g. "/api/v1/tasks/{id}". `need`: the role
  // a token needs; nullopt: public (no token: health checks only).
  void Route(const std::string& method, const std::string& pattern, std::optional<Role> need, HttpHandler handler);
  Status Start();
  void Stop();
  // Every route: (method, pattern, role it needs; nullopt public). For the auth matrix test.
  std::vector<std::tuple<std::string, std::string, std::optional<Role>>> routes() const;
  const net::Endpoint& endpoint() const { return endpoint_; }
  // Open HTTP connections (for /metrics), and requests answered so far.
  size_t open_connections() const;
  int64_t requests() const { return requests_; }
  // One request as raw bytes, through the same parsing, gate and routes as a connection's (for the
  // fuzz target and tests). `respond` gets exactly one answer, now or later on the io thread.
  void HandleRaw(std::string_view raw, const std::string& peer_ip, HttpRespond respond);
  // Sends an event to every open event stream (`event: <event>`, `data: <data>`, one line of JSON;
  // one copy shared by all of them).
  // Streams whose token was revoked or whose session ended are closed instead.
  void Publish(std::string_view event, std::string_view data);
  size_t event_streams() const;
  // Whether the request's route needs no token.
  bool IsPublic(const HttpRequest& request) const;
  // The session cookie's name (WebSessions::kSecureCookie over HTTPS).
  std::string_view CookieName() const { return options_.tls ? WebSessions::kSecureCookie : WebSessions::kCookie; }
  WebSessions& sessions() { return sessions_; }

 private:
  template <typename Stream>
  struct Session;
  // An open event stream (a Session that answered with event_stream).
  struct EventSink {
    virtual ~EventSink() = default;
    virtual void Push(std::shared_ptr<const std::string> chunk) = 0;
    virtual void End() = 0;
    HttpCredentials credentials;
  };
  struct RouteEntry {
    std::string method;
    std::vector<std::string> segments;
    std::optional<Role> need;
    HttpHandler handler;
  };
  void Accept();
  // Dispatch, with an exception from a handler turned into a 500 for that request.
  void Serve(const HttpRequest& request, const std::string& host, const HttpCredentials& credentials,
             HttpRespond respond);
  void Dispatch(const HttpRequest& request, const std::string& host, const HttpCredentials& credentials,
                HttpRespond respond);
  // The gate a request passes before its body is read: its Host, and a live token unless its route
  // is public (whether the token's role suffices is decided with the body, in Dispatch). Either
  // `refuse` or `go_on` is called once.
  void Admit(const HttpRequest& request, const std::string& host, const HttpCredentials& credentials,
             HttpRespond refuse, std::function<void()> go_on);
  std::optional<HttpResponse> CheckHost(const std::string& host) const;
  // The route for the request's method and path (`path_matched`: some route has that path).
  const RouteEntry* Match(const HttpRequest& request, std::map<std::string, std::string>* params,
                          bool* path_matched) const;
  // Who presents these credentials: a bearer token, else a session cookie (`session_id` set).
  Result<TokenInfo> Who(const HttpCredentials& credentials, std::string* session_id = nullptr);
  Result<TokenInfo> WhoByToken(std::string_view token);
  // A 401 (logged for fail2ban; slowed after repeated failures from one address).
  void RefuseLogin(const HttpRequest& request, const HttpCredentials& credentials, HttpRespond respond);
  // Why a state-changing request that came with a session is refused (CSRF), if it is.
  std::optional<HttpResponse> CheckCsrf(const HttpRequest& request, const std::string& host,
                                        const HttpCredentials& credentials, const std::string& session_id);
  // POST /api/v1/login, POST /api/v1/logout, GET /api/v1/session.
  void RouteSessions();

  boost::asio::io_context& io_;
  HttpOptions options_;
  net::Endpoint endpoint_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<RouteEntry> routes_;
  // Open connections per peer address; shared with the sessions, which may outlive the server.
  std::shared_ptr<std::unordered_map<std::string, size_t>> connections_by_address_ =
      std::make_shared<std::unordered_map<std::string, size_t>>();
  struct Failures {
    int count = 0;
    std::chrono::steady_clock::time_point last;
  };
  std::unordered_map<std::string, Failures> failures_;  // failed logins by peer address
  int64_t connections_refused_ = 0;
  int64_t requests_ = 0;
  // How long the 401 for `peer_ip` waits (it just failed once more).
  std::chrono::milliseconds FailureDelay(const std::string& peer_ip);
  WebSessions sessions_;
  std::vector<std::weak_ptr<EventSink>> streams_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
