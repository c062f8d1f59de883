// The dashboard's login routes: POST /api/v1/login (a token in, a session cookie and a CSRF token
// out), POST /api/v1/logout, GET /api/v1/session (who is logged in, and the CSRF token again for a
// page that was reloaded). See web_sessions.h and the gate in http_server.h.
#include <nlohmann/json.hpp>

#include "corral/base/log.h"
#include "corral/head/http_server.h"
#include "corral/head/status_json.h"

namespace corral::head {
namespace {

// The token a login form or JSON body carries ("" if none).
std::string TokenOf(const HttpRequest& req) {
  if (req.content_type.starts_with("application/json")) {
    nlohmann::json body = ParseUntrustedJson(req.body);
    if (body.is_object() && body.contains("token") && body["token"].is_string()) return body["token"];
    return "";
  }
  auto form = ParseQuery(req.body);  // application/x-www-form-urlencoded: token=...
  auto token = form.find("token");
  return token == form.end() ? "" : token->second;
}

}  // namespace

void HttpServer::RouteSessions() {
  Route("POST", "/api/v1/login", std::nullopt, [this](const HttpRequest& req, HttpRespond respond) {
    std::string token = TokenOf(req);
    auto who = token.empty() ? Result<TokenInfo>(Err(Code::kPermissionDenied, "no token")) : WhoByToken(token);
    if (!who) return RefuseLogin(req, HttpCredentials{token.empty() ? "" : "Bearer ?", "", "", ""}, std::move(respond));
    if (!Allows(who->role, Role::kRead) || who->role == Role::kWorker || who->role == Role::kAgent)
      return respond(HttpResponse::Error(
          403, fmt::format("a {} token cannot log in to the dashboard; use a read, submit or admin token "
                           "(`corral token create --role read`)",
                           RoleName(who->role))));
    std::string id = sessions_.Create(std::move(token));
    nlohmann::json j;
    j["role"] = RoleName(who->role);
    j["name"] = who->name.empty() ? "admin" : who->name;
    j["csrf"] = sessions_.Find(id)->csrf;
    HttpResponse ok = HttpResponse::Json(200, JsonText(j));
    ok.headers.emplace_back("Set-Cookie", fmt::format("{}={}; Path=/; HttpOnly; SameSite=Strict{}", CookieName(),
                                                      id, options_.tls ? "; Secure" : ""));
    LOG_INFO("dashboard login from {} with token '{}' ({})", Printable(req.peer_ip), Printable(j["name"].get<std::string>()),
             RoleName(who->role));
    respond(std::move(ok));
  });
  Route("POST", "/api/v1/logout", Role::kRead, [this](const HttpRequest& req, HttpRespond respond) {
    if (!req.session_id.empty()) sessions_.Remove(req.session_id);
    HttpResponse ok = HttpResponse::Json(200, "{\"logged_out\": true}");
    ok.headers.emplace_back("Set-Cookie", fmt::format("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
                                                      CookieName(), options_.tls ? "; Secure" : ""));
    respond(std::move(ok));
  });
  // Public: the page asks it first, and not being logged in is not a failed login.
  Route("GET", "/api/v1/session", std::nullopt, [this](const HttpRequest& req, HttpRespond respond) {
    nlohmann::json j;
    j["logged_in"] = req.authenticated;
    if (!req.authenticated) return respond(HttpResponse::Json(200, JsonText(j)));
    j["role"] = RoleName(req.role);
    j["name"] = req.who.empty() ? "admin" : req.who;
    WebSessions::Session* s = req.session_id.empty() ? nullptr : sessions_.Find(req.session_id);
    j["csrf"] = s ? nlohmann::json(s->csrf) : nlohmann::json(nullptr);
    respond(HttpResponse::Json(200, JsonText(j)));
  });
}

}  // namespace corral::head
