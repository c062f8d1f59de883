#include "corral/base/cron.h"

#include <gtest/gtest.h>

#include <ctime>

namespace corral {
namespace {

// "2026-03-08 06:59:00" (UTC) -> ns since the epoch.
int64_t Utc(const char* text) {
  std::tm tm{};
  EXPECT_NE(strptime(text, "%Y-%m-%d %H:%M:%S", &tm), nullptr) << text;
  return static_cast<int64_t>(timegm(&tm)) * 1'000'000'000;
}

std::string Show(int64_t ns) {
  std::time_t t = ns / 1'000'000'000;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
  return buf;
}

std::string NextUtc(const char* expr, const char* tz, const char* after) {
  auto e = CronExpr::Parse(expr);
  EXPECT_TRUE(e.has_value()) << e.error().message();
  auto n = e->Next(Utc(after), tz);
  EXPECT_TRUE(n.has_value()) << n.error().message();
  return n ? Show(*n) : "";
}

struct Case {
  const char* expr;
  const char* tz;
  const char* after;     // UTC
  const char* expected;  // UTC
  const char* why;
};

TEST(Cron, NextFireTable) {
  const Case cases[] = {
      {"*/15 * * * *", "UTC", "2026-11-26 10:07:00", "2026-11-26 10:15:00", "step"},
      {"*/15 * * * *", "UTC", "2026-11-26 10:15:00", "2026-11-26 10:30:00", "strictly after"},
      {"0 2 * * *", "Asia/Dhaka", "2026-11-26 00:00:00", "2026-11-26 20:00:00", "02:00 in UTC+6"},
      {"0 9 * * mon-fri", "UTC", "2026-11-27 10:00:00", "2026-11-30 09:00:00", "Friday after 9 -> Monday"},
      {"0 0 1 1 *", "UTC", "2026-06-01 00:00:00", "2027-01-01 00:00:00", "yearly"},
      {"@monthly", "UTC", "2026-01-31 12:00:00", "2026-02-01 00:00:00", "macro"},
      {"0 0 29 2 *", "UTC", "2026-03-01 00:00:00", "2028-02-29 00:00:00", "leap day"},
      {"0 12 13 * 5", "UTC", "2026-11-26 00:00:00", "2026-11-27 12:00:00", "dom OR dow when both restricted"},
      {"0 0 */2 * mon", "UTC", "2026-11-26 00:00:00", "2026-12-07 00:00:00",
       "a day field starting with '*' is not restricted (Vixie): odd days that are Mondays"},
      {"0 0 1-31 * mon", "UTC", "2026-11-26 00:00:00", "2026-11-27 00:00:00", "but 1-31 is: any day OR Monday"},
      {"30 4 1,15 * *", "UTC", "2026-11-02 00:00:00", "2026-11-15 04:30:00", "list"},
      {"0 0 * * 7", "UTC", "2026-11-26 00:00:00", "2026-11-29 00:00:00", "7 is Sunday"},
      {"5/20 * * * *", "UTC", "2026-11-26 10:06:00", "2026-11-26 10:25:00", "a/step means a-max/step"},
      // New York springs forward on 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC).
      {"30 2 * * *", "America/New_York", "2026-03-08 06:00:00", "2026-03-08 07:00:00",
       "02:30 does not exist: fires when the gap ends (03:00 EDT)"},
      {"30 2 * * *", "America/New_York", "2026-03-08 07:00:00", "2026-03-09 06:30:00", "and once only"},
      {"*/15 2 * * *", "America/New_York", "2026-03-08 06:50:00", "2026-03-08 07:00:00", "four slots in a gap fire once"},
      {"*/15 2 * * *", "America/New_York", "2026-03-08 07:00:00", "2026-03-09 06:00:00", "...and not again that night"},
      // New York falls back on 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens twice.
      {"30 1 * * *", "America/New_York", "2026-11-01 04:00:00", "2026-11-01 05:30:00", "first 01:30 (EDT)"},
      {"30 1 * * *", "America/New_York", "2026-11-01 05:30:00", "2026-11-02 06:30:00", "not the second 01:30 (EST)"},
      {"0 3 * * *", "Europe/Berlin", "2026-03-29 00:00:00", "2026-03-29 01:00:00", "03:00 CEST right after the gap"},
      // Berlin falls back on 2026-10-25 at 01:00 UTC: 03:00 CEST -> 02:00 CET; 02:00-03:00 happens twice.
      {"0 * * * *", "Europe/Berlin", "2026-10-24 23:30:00", "2026-10-25 00:00:00", "hourly: 02:00 CEST, the first 02:00"},
      {"0 * * * *", "Europe/Berlin", "2026-10-25 00:00:00", "2026-10-25 02:00:00",
       "...then 03:00 CET: the second 02:00 (CET) is a repeat and does not fire"},
  };
  for (const Case& c : cases) EXPECT_EQ(NextUtc(c.expr, c.tz, c.after), c.expected) << c.expr << " in " << c.tz << ": " << c.why;
}

TEST(Cron, MalformedExpressionsAreClearErrors) {
  const std::pair<const char*, const char*> bad[] = {
      {"61 * * * *", "minute 61 is out of range 0-59"},
      {"* * * *", "expected 5 fields"},
      {"* 24 * * *", "hour 24 is out of range 0-23"},
      {"*/0 * * * *", "must be a positive number"},
      {"10-5 * * * *", "runs backwards"},
      {"* * * foo *", "'foo' is not a valid month"},
      {"@sometimes", "unknown macro"},
      {"1,,2 * * * *", "empty item"},
  };
  for (const auto& [expr, message] : bad) {
    auto e = CronExpr::Parse(expr);
    ASSERT_FALSE(e.has_value()) << expr;
    EXPECT_NE(e.error().message().find(message), std::string::npos) << e.error().message();
    EXPECT_NE(e.error().message().find(expr), std::string::npos) << "the error quotes the expression";
  }
}

TEST(Cron, UnknownZoneAndImpossibleDates) {
  auto e = CronExpr::Parse("0 0 * * *");
  ASSERT_TRUE(e.has_value());
  auto n = e->Next(Utc("2026-01-01 00:00:00"), "Mars/Olympus_Mons");
  ASSERT_FALSE(n.has_value());
  EXPECT_NE(n.error().message().find("unknown time zone 'Mars/Olympus_Mons'"), std::string::npos);
  EXPECT_TRUE(CheckTimeZone("Asia/Dhaka").ok());
  auto feb30 = CronExpr::Parse("0 0 30 2 *");
  ASSERT_TRUE(feb30.has_value());
  auto never = feb30->Next(Utc("2026-01-01 00:00:00"), "UTC");
  ASSERT_FALSE(never.has_value());
  EXPECT_NE(never.error().message().find("never matches"), std::string::npos);
}

}  // namespace
}  // namespace corral
