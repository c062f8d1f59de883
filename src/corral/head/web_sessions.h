// WebSessions: the dashboard's logins. Logging in with a token makes a session: a random id the
// browser keeps in an HttpOnly, SameSite=Strict cookie, and a CSRF token the page keeps in memory
// and sends as X-CSRF-Token with every state-changing request. The token itself stays here and is
// checked again on every use, so revoking it (or its expiry) ends its sessions at once. Sessions
// end after `idle` without use (an open tab's live stream counts as use) and a week after the
// login in any case; at most `max_sessions` are kept (the least recently used goes).
// io thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace corral::head {

class WebSessions {
 public:
  struct Session {
    std::string token;  // the secret it logged in with
    std::string csrf;
    std::chrono::steady_clock::time_point last_used;
    std::chrono::steady_clock::time_point created;
  };

  explicit WebSessions(std::chrono::seconds idle = std::chrono::hours(12), size_t max_sessions = 10000)
      : idle_(idle), max_(max_sessions) {}

  // A new session for `token` (already checked): its id.
  std::string Create(std::string token);
  // The live session with this id (its use noted), or null.
  Session* Find(std::string_view id);
  void Remove(std::string_view id) { sessions_.erase(std::string(id)); }
  size_t size() const { return sessions_.size(); }

  // The cookie's name: over HTTPS with the __Host- prefix, which browsers accept only from this
  // very origin, Secure, for the whole path (no other host of a domain can plant one).
  static constexpr std::string_view kCookie = "corral_session";
  static constexpr std::string_view kSecureCookie = "__Host-corral_session";

 private:
  std::chrono::seconds idle_;
  static constexpr std::chrono::hours kLifetime{24 * 7};
  size_t max_;
  std::unordered_map<std::string, Session> sessions_;
};

}  // namespace corral::head
