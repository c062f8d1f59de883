// Cron expressions and their next fire time in a time zone.
//
// Syntax (as Vixie cron and croniter): five fields, minute hour day-of-month month day-of-week.
// Each is `*`, a number, a range `a-b`, a list `a,b,c`, with an optional step `*/15` or `1-30/5`.
// Months may be jan..dec, weekdays sun..sat (0 and 7 are Sunday). When both day-of-month and
// day-of-week are restricted (as Vixie cron: the field does not start with '*'), a day matches if
// either does: "0 0 1,15 * mon" is the 1st, the 15th and every Monday; "0 0 */2 * mon" is odd
// days that are Mondays. Macros: @yearly (@annually),
// @monthly, @weekly, @daily (@midnight), @hourly.
//
// Times are wall-clock times in the schedule's zone (IANA names, from the system's tz database).
// Daylight-saving policy:
//   - a slot in a gap (02:30 on a night the clocks jump from 02:00 to 03:00) fires once, at the end
//     of the gap (03:00 local); several slots in one gap fire once together;
//   - a slot in a repeated hour (01:30 on a night the clocks fall back from 02:00 to 01:00) fires
//     once, at its first occurrence.
#pragma once

#include <bitset>
#include <cstdint>
#include <string>

#include "corral/base/status.h"

namespace corral {

class CronExpr {
 public:
  // A clear error for anything malformed ("cron '61 * * * *': minute 61 is out of range 0-59").
  static Result<CronExpr> Parse(const std::string& text);

  // The first slot strictly after `after_ns` (UTC, ns since the epoch), in zone `tz`. Errors: an
  // unknown zone; an expression that never matches (February 30th).
  Result<int64_t> Next(int64_t after_ns, const std::string& tz) const;

  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;      // 1..31
  std::bitset<13> months_;    // 1..12
  std::bitset<7> weekdays_;   // 0..6, Sunday = 0
  bool day_restricted_ = false;
  bool weekday_restricted_ = false;
};

// Whether `tz` names a zone this machine knows; the error says what was wrong.
Status CheckTimeZone(const std::string& tz);

}  // namespace corral
