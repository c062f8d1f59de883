// The REST API's auth matrix: every route x method, with no token, a wrong one, each role, a
// revoked and an expired token, and a foreign Host header, through a real HeadServer's HTTP gate.
// Every route must be in the table below with the role it needs: a new route without an entry,
// or with another role, fails here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>

#include "corral/base/clock.h"
#include "corral/base/log.h"
#include "corral/head/head_server.h"
#include "corral/head/dashboard.h"
#include "corral/head/http_server.h"
#include "corral/head/rest_api.h"

namespace corral::head {
namespace {

using namespace std::chrono_literals;

const std::map<std::pair<std::string, std::string>, std::optional<Role>> kRoutes = {
    {{"GET", "/api/v1/health"}, std::nullopt},
    {{"GET", "/api/v1/status"}, Role::kRead},
    {{"GET", "/api/v1/nodes"}, Role::kRead},
    {{"GET", "/api/v1/tasks"}, Role::kRead},
    {{"GET", "/api/v1/tasks/{id}"}, Role::kRead},
    {{"GET", "/api/v1/queues"}, Role::kRead},
    {{"GET", "/api/v1/schedules"}, Role::kRead},
    {{"GET", "/api/v1/actors"}, Role::kRead},
    {{"POST", "/api/v1/tasks"}, Role::kSubmit},
    {{"POST", "/api/v1/tasks/{id}/revoke"}, Role::kSubmit},
    {{"POST", "/api/v1/nodes/{node}/drain"}, Role::kAdmin},
    {{"GET", "/metrics"}, Role::kRead},
    // The dashboard's login (http_server_sessions.cc) and its page and data (dashboard.h).
    {{"POST", "/api/v1/login"}, std::nullopt},
    {{"POST", "/api/v1/logout"}, Role::kRead},
    {{"GET", "/api/v1/session"}, std::nullopt},
    {{"GET", "/"}, std::nullopt},
    {{"GET", "/app.js"}, std::nullopt},
    {{"GET", "/app.css"}, std::nullopt},
    {{"GET", "/favicon.svg"}, std::nullopt},
    {{"GET", "/favicon.ico"}, std::nullopt},
    {{"GET", "/api/v1/events"}, Role::kRead},
    {{"GET", "/api/v1/history"}, Role::kRead},
    {{"GET", "/api/v1/runs"}, Role::kRead},
    {{"GET", "/api/v1/runs/{id}"}, Role::kRead},
    {{"GET", "/api/v1/runs/{id}/log"}, Role::kRead},
    {{"GET", "/api/v1/schedules/{name}/history"}, Role::kRead},
};

struct Head {
  explicit Head(int free_failures = 1 << 30) {
    SetLogLevel(LogLevel::kError);
    HeadOptions options;
    options.listen = {"127.0.0.1", 0, ""};
    options.token = "admin-secret";
    options.tokens_path = ::testing::TempDir() + "/corral-rest-auth-" + std::to_string(getpid()) + ".json";
    unlink(options.tokens_path.c_str());
    server = std::make_unique<HeadServer>(io, options, clock);
    EXPECT_TRUE(server->Start().ok());
    HttpOptions ho;
    ho.listen = {"127.0.0.1", 0, ""};
    ho.free_failures = free_failures;
    ho.authenticate = [this](std::string_view t) { return server->tokens().Authenticate(t, clock.WallNs()); };
    http = std::make_unique<HttpServer>(io, ho);
    RegisterRestApi(*http, *server);
    dashboard = std::make_unique<Dashboard>(io, *http, *server);
  }
  ~Head() {
    dashboard.reset();
    server->Stop();
  }
  // The status of `method path` with `token` ("" none) and Host `host`.
  int Status(const std::string& method, const std::string& path, const std::string& token,
             const std::string& host = "127.0.0.1") {
    std::string body = method == "POST" ? "{}" : "";
    std::string raw = method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\n" +
                      (token.empty() ? "" : "Authorization: Bearer " + token + "\r\n") +
                      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\n\r\n" + body;
    int status = 0;
    http->HandleRaw(raw, "192.0.2.7", [&](HttpResponse r) { status = r.status; });
    for (int i = 0; i < 2000 && status == 0; ++i) io.run_for(1ms);
    return status;
  }
  FakeClock clock;
  boost::asio::io_context io;
  std::unique_ptr<HeadServer> server;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<Dashboard> dashboard;
};

// A concrete path for a pattern: {params} filled in.
std::string Concrete(std::string pattern) {
  for (auto [from, to] : {std::pair<std::string, std::string>{"{id}", "0123abcd"}, {"{node}", "0000"}, {"{name}", "nightly"}})
    if (auto at = pattern.find(from); at != std::string::npos) pattern.replace(at, from.size(), to);
  return pattern;
}

TEST(RestAuth, EveryRouteIsInTheTableWithItsRole) {
  Head h;
  auto routes = h.http->routes();
  EXPECT_EQ(routes.size(), kRoutes.size());
  for (const auto& [method, pattern, need] : routes) {
    auto it = kRoutes.find({method, pattern});
    ASSERT_NE(it, kRoutes.end()) << "no entry for " << method << " " << pattern;
    EXPECT_EQ(it->second, need) << method << " " << pattern;
  }
}

TEST(RestAuth, EveryRouteAndMethodRefusesWhatIsNotEnough) {
  Head h;
  std::map<Role, std::string> tokens;
  for (Role r : {Role::kRead, Role::kSubmit, Role::kAdmin, Role::kAgent, Role::kJoin})
    tokens[r] = *h.server->tokens().Create(std::string("t-") + RoleName(r), r, 0, h.clock.WallNs());
  std::string revoked = *h.server->tokens().Create("gone", Role::kAdmin, 0, h.clock.WallNs());
  ASSERT_TRUE(h.server->RevokeToken("gone"));
  std::string expiring = *h.server->tokens().Create("short", Role::kAdmin, 60, h.clock.WallNs());
  h.clock.Advance(61s);
  std::set<std::string> patterns;
  for (const auto& [key, need] : kRoutes) patterns.insert(key.second);
  for (const std::string& pattern : patterns) {
    std::string path = Concrete(pattern);
    for (const char* method : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
      SCOPED_TRACE(std::string(method) + " " + path);
      auto route = kRoutes.find({method, pattern});
      bool routed = route != kRoutes.end();
      bool is_public = routed && !route->second.has_value();
      Role need = routed && route->second ? route->second.value() : Role::kRead;
      if (is_public) {  // public; the login itself wants a token in its body
        EXPECT_EQ(h.Status(method, path, ""), pattern == "/api/v1/login" ? 401 : 200);
        continue;
      }
      // Without a live token nothing is learned, not even whether the method exists.
      for (const std::string& bad : {std::string(""), std::string("wrong"), revoked, expiring})
        EXPECT_EQ(h.Status(method, path, bad), 401) << "token '" << bad << "'";
      EXPECT_EQ(h.Status(method, path, tokens[Role::kAdmin], "evil.example"), 421);
      for (const auto& [role, token] : tokens) {
        int status = h.Status(method, path, token);
        if (!routed) EXPECT_EQ(status, 405) << RoleName(role);
        else if (Allows(role, need)) EXPECT_TRUE(status != 401 && status != 403) << RoleName(role) << ": " << status;
        else EXPECT_EQ(status, 403) << RoleName(role);
      }
      EXPECT_NE(h.Status(method, path, "admin-secret"), 401);  // the built-in admin token
    }
  }
}

TEST(RestAuth, GuessingTokensFromOneAddressGetsSlow) {
  Head h(/*free_failures=*/5);
  auto ask = [&](const std::string& ip) {
    auto status = std::make_shared<int>(0);
    h.http->HandleRaw("GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer guess\r\n\r\n", ip,
                      [status](HttpResponse r) { *status = r.status; });
    return status;
  };
  for (int i = 0; i < 5; ++i) EXPECT_EQ(*ask("192.0.2.9"), 401);  // answered at once
  auto sixth = ask("192.0.2.9");
  h.io.run_for(50ms);
  EXPECT_EQ(*sixth, 0) << "the sixth wrong guess is answered only after a delay";
  for (int i = 0; i < 200 && *sixth == 0; ++i) h.io.run_for(10ms);
  EXPECT_EQ(*sixth, 401);
  EXPECT_EQ(*ask("192.0.2.10"), 401);  // another address is not slowed
  for (int i = 0; i < 10; ++i) EXPECT_EQ(*ask("127.0.0.1"), 401);  // nor this machine's own users
}

}  // namespace
}  // namespace corral::head
