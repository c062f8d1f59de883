#include "corral/head/web_sessions.h"

#include <algorithm>

#include "corral/base/ids.h"

namespace corral::head {

std::string WebSessions::Create(std::string token) {
  auto now = std::chrono::steady_clock::now();
  std::erase_if(sessions_, [&](const auto& s) {
    return now - s.second.last_used > idle_ || now - s.second.created > kLifetime;
  });
  if (sessions_.size() >= max_) {
    auto oldest = std::min_element(sessions_.begin(), sessions_.end(), [](const auto& a, const auto& b) {
      return a.second.last_used < b.second.last_used;
    });
    sessions_.erase(oldest);
  }
  std::string id = Hex(RandomBytes(32));
  sessions_[id] = Session{std::move(token), Hex(RandomBytes(32)), now, now};
  return id;
}

WebSessions::Session* WebSessions::Find(std::string_view id) {
  auto it = sessions_.find(std::string(id));
  if (it == sessions_.end()) return nullptr;
  auto now = std::chrono::steady_clock::now();
  if (now - it->second.last_used > idle_ || now - it->second.created > kLifetime) {
    sessions_.erase(it);
    return nullptr;
  }
  it->second.last_used = now;
  return &it->second;
}

}  // namespace corral::head
