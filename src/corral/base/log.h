// Logging: one line per event, "2026-11-26T15:04:05.123Z I head] message", to stderr or a file.
// Thread-safe. The level comes from CORRAL_LOG_LEVEL (debug, info, warning, error) or SetLogLevel.
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
