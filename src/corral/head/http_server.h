// HttpServer: the head's HTTP face (REST API under /api/v1/; the dashboard and /metrics will use
// it too), on the head's own io_context with Boost.Beast: no thread per connection.
//
// Every request goes through one gate: the Host header must name this server (a web page on
// another site cannot reach it through DNS rebinding); then, unless its route is public,
// `Authorization: Bearer <token>` must carry a live token (compared in constant time; a failure is
// a 401 logged by LogAuthFailure, the one line fail2ban matches, also for paths that do not exist),
// and the token's role must be the one its route names (else 403). Every route names its role. Errors are JSON:
// {"error": {"status": 404, "message": "..."}}. Bodies are capped (413 beyond). Nothing a client
// sends can end the head: strings from it are made safe before they reach JSON or the log, and an
// exception from a handler becomes a 500 for that request. A request's body is read only after the
// Host and token checks passed. With `tls`, every connection is HTTPS. io thread only.
#pragma once

#include <optional>

#include "corral/head/token_store.h"

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
};

struct HttpResponse {
  int status = 200;
  std::string body;                            // JSON unless content_type says otherwise
  std::string content_type = "application/json";

  static HttpResponse Json(int status, std::string body) { return {status, std::move(body), "application/json"}; }
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

 private:
  template <typename Stream>
  struct Session;
  struct RouteEntry {
    std::string method;
    std::vector<std::string> segments;
    std::optional<Role> need;
    HttpHandler handler;
  };
  void Accept();
  // Dispatch, with an exception from a handler turned into a 500 for that request.
  void Serve(const HttpRequest& request, const std::string& host, const std::string& authorization,
             HttpRespond respond);
  void Dispatch(const HttpRequest& request, const std::string& host, const std::string& authorization,
                HttpRespond respond);
  // The gate a request passes before its body is read: its Host, and a live token unless its route
  // is public (whether the token's role suffices is decided with the body, in Dispatch). Either
  // `refuse` or `go_on` is called once.
  void Admit(const HttpRequest& request, const std::string& host, const std::string& authorization,
             HttpRespond refuse, std::function<void()> go_on);
  std::optional<HttpResponse> CheckHost(const std::string& host) const;
  // The route for the request's method and path (`path_matched`: some route has that path).
  const RouteEntry* Match(const HttpRequest& request, std::map<std::string, std::string>* params,
                          bool* path_matched) const;
  Result<TokenInfo> Who(std::string_view authorization);
  // A 401 (logged for fail2ban; slowed after repeated failures from one address).
  void RefuseLogin(const HttpRequest& request, const std::string& authorization, HttpRespond respond);

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
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
