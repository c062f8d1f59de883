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
  std::lock_guard lock(g_mu);
  std::string line = fmt::format("{}.{:03d}Z {} {}] {}\n", stamp, ts.tv_nsec / 1'000'000,
                                 kLetters[static_cast<int>(level)], g_component, message);
  FILE* out = g_out ? g_out : stderr;
  std::fwrite(line.data(), 1, line.size(), out);
  std::fflush(out);
}

}  // namespace corral
