// Logging: one line per event, "2026-11-26T15:04:05.123Z I head] message", to stderr or a file.
// Thread-safe. The level comes from CORRAL_LOG_LEVEL (debug, info, warning, error) or SetLogLevel.
//
// Nothing a peer sends can forge a line: every string that came from outside (paths, names,
// versions, hostnames) goes through Printable() before it is logged, and LogLine indents every
// line after the first of a message, so only Corral itself starts a line with a timestamp.
// Failed authentication, over TCP or HTTP, is logged in one format for fail2ban
// (deploy/fail2ban/): "authentication failed from <ip> via <tcp|http>: <reason>".
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace corral {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// Names the process in every line ("head", "agent", "client").
void SetLogComponent(std::string_view name);
// Appends to `path` instead of stderr. Returns false if the file cannot be opened.
bool SetLogFile(const std::string& path);
void LogLine(LogLevel level, std::string_view message);

// `s` safe to log or show: control bytes, DEL and bytes that are not valid UTF-8 become \xNN
// (and a backslash \\), so the result is one line of valid UTF-8. Valid UTF-8 text is kept.
std::string Printable(std::string_view s);
// The one failure line fail2ban matches. `ip`: the peer's address without port (IPv6 bare).
void LogAuthFailure(std::string_view ip, std::string_view transport, std::string_view reason);
// How many authentication failures LogAuthFailure logged via `transport` ("tcp", "http") in this process.
int64_t AuthFailures(std::string_view transport);

template <typename... Args>
void Log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) {
  if (!LogEnabled(level)) return;
  LogLine(level, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace corral

#define CORRAL_LOG(level, ...) ::corral::Log(::corral::LogLevel::level, __VA_ARGS__)
#define LOG_DEBUG(...) CORRAL_LOG(kDebug, __VA_ARGS__)
#define LOG_INFO(...) CORRAL_LOG(kInfo, __VA_ARGS__)
#define LOG_WARN(...) CORRAL_LOG(kWarning, __VA_ARGS__)
#define LOG_ERROR(...) CORRAL_LOG(kError, __VA_ARGS__)
