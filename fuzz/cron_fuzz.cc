// Fuzz target for cron expressions and time zones (schedules come from any submit token): parsing
// arbitrary text and asking for the next slots must never crash or loop; a slot found is always
// after the time asked from. Input: zone name, a newline, the expression.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "corral/base/cron.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nl = input.find('\n');
  std::string tz = nl == std::string_view::npos ? "UTC" : std::string(input.substr(0, nl));
  std::string expr(nl == std::string_view::npos ? input : input.substr(nl + 1));
  auto cron = corral::CronExpr::Parse(expr);
  if (!cron) return 0;
  if (!corral::CheckTimeZone(tz).ok()) tz = "UTC";
  int64_t at = 1'700'000'000'000'000'000;
  for (int i = 0; i < 4; ++i) {
    auto next = cron->Next(at, tz);
    if (!next) return 0;
    if (*next <= at) {
      std::fprintf(stderr, "cron_fuzz: '%s' in %s: next slot %lld is not after %lld\n", expr.c_str(), tz.c_str(),
                   static_cast<long long>(*next), static_cast<long long>(at));
      std::abort();
    }
    at = *next;
  }
  return 0;
}
