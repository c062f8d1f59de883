#include "corral/base/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace corral {
namespace {

std::atomic<int> g_level{-1};
std::mutex g_mu;
std::string g_component = "corral";  // guarded by g_mu
FILE* g_out = nullptr;               // guarded by g_mu; nullptr means stderr

int LevelFromEnv() {
  const char* v = std::getenv("CORRAL_LOG_LEVEL");
  if (!v) return static_cast<int>(LogLevel::kInfo);
  if (!strcmp(v, "debug")) return 0;
  if (!strcmp(v, "warning") || !strcmp(v, "warn")) return 2;
  if (!strcmp(v, "error")) return 3;
  return 1;
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool LogEnabled(LogLevel level) {
  int cur = g_level.load(std::memory_order_relaxed);
  if (cur < 0) {
    cur = LevelFromEnv();
    g_level = cur;
  }
  return static_cast<int>(level) >= cur;
}

void SetLogComponent(std::string_view name) {
  std::lock_guard lock(g_mu);
  g_component = std::string(name);
}

bool SetLogFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) return false;
  std::setvbuf(f, nullptr, _IOLBF, 0);
  std::lock_guard lock(g_mu);
  if (g_out) std::fclose(g_out);
  g_out = f;
  return true;
}

void LogLine(LogLevel level, std::string_view message) {
  static constexpr char kLetters[] = "DIWE";
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  // A message's later lines are indented: none of them can pass for a line of its own.
  std::string body;
  body.reserve(message.size());
  for (char c : message) {
    if (c == '\n') {
      body += "\n    ";
    } else if (c == '\r') {
      body += "\\r";
    } else {
      body += c;
    }
  }
  std::lock_guard lock(g_mu);
  std::string line = fmt::format("{}.{:03d}Z {} {}] {}\n", stamp, ts.tv_nsec / 1'000'000,
                                 kLetters[static_cast<int>(level)], g_component, body);
  FILE* out = g_out ? g_out : stderr;
  std::fwrite(line.data(), 1, line.size(), out);
  std::fflush(out);
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if there is none.
size_t Utf8Length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  unsigned char c1 = byte(i + 1);
  if (n == 3 && ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0))) return 0;  // overlong, surrogates
  if (n == 4 && ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90))) return 0;  // overlong, > U+10FFFF
  return n;
}

}  // namespace

std::string Printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      out += "\\\\";
      ++i;
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
      ++i;
    } else if (size_t n = c >= 0x80 ? Utf8Length(s, i) : 0; n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  return out;
}

namespace {
std::atomic<int64_t> auth_failures_tcp{0}, auth_failures_http{0}, auth_failures_other{0};
std::atomic<int64_t>& AuthFailureCounter(std::string_view transport) {
  return transport == "tcp" ? auth_failures_tcp : transport == "http" ? auth_failures_http : auth_failures_other;
}
}  // namespace

int64_t AuthFailures(std::string_view transport) { return AuthFailureCounter(transport).load(); }

void LogAuthFailure(std::string_view ip, std::string_view transport, std::string_view reason) {
  AuthFailureCounter(transport)++;
  Log(LogLevel::kWarning, "authentication failed from {} via {}: {}", Printable(ip), transport, reason);
}

}  // namespace corral
