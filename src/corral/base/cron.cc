#include "corral/base/cron.h"

#include <date/tz.h>

#include <array>
#include <cctype>
#include <chrono>
#include <sstream>
#include <vector>

namespace corral {
namespace {

using namespace std::chrono;

struct Field {
  const char* name;
  int lo, hi;
  const char* const* names;  // lowercase, indexed from `lo`; null: numbers only
};
const char* const kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
const char* const kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
const Field kFields[] = {
    {"minute", 0, 59, nullptr}, {"hour", 0, 23, nullptr},         {"day of month", 1, 31, nullptr},
    {"month", 1, 12, kMonthNames}, {"day of week", 0, 7, kDayNames},
};

Result<int> ParseValue(const std::string& expr, const Field& f, std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (f.names) {
    int count = f.hi - f.lo + 1 - (f.lo == 0 ? 1 : 0);  // weekdays: 7 names for 0..7
    for (int i = 0; i < count; ++i)
      if (s == f.names[i]) return f.lo + i;
  }
  if (s.empty() || s.size() > 3 || !std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(c); }))
    return Err(Code::kInvalidArgument, fmt::format("cron '{}': '{}' is not a valid {}", expr, s, f.name));
  int v = std::stoi(s);
  if (v < f.lo || v > f.hi)
    return Err(Code::kInvalidArgument,
               fmt::format("cron '{}': {} {} is out of range {}-{}", expr, f.name, v, f.lo, f.hi));
  return v;
}

// Sets the bits of `out` (indexed by value) that `text` selects.
Status ParseField(const std::string& expr, const Field& f, const std::string& text, std::vector<bool>& out) {
  out.assign(f.hi + 1, false);
  std::stringstream parts(text);
  std::string part;
  while (std::getline(parts, part, ',')) {
    if (part.empty()) return MakeStatus(Code::kInvalidArgument, "cron '{}': empty item in the {} field", expr, f.name);
    int step = 1;
    if (size_t slash = part.find('/'); slash != std::string::npos) {
      std::string st = part.substr(slash + 1);
      if (st.empty() || st.size() > 3 || !std::all_of(st.begin(), st.end(), [](char c) { return std::isdigit(c); }) ||
          std::stoi(st) == 0)
        return MakeStatus(Code::kInvalidArgument, "cron '{}': step '{}' in the {} field must be a positive number", expr,
                          st, f.name);
      step = std::stoi(st);
      part = part.substr(0, slash);
    }
    int lo, hi;
    if (part == "*") {
      lo = f.lo;
      hi = f.hi == 7 ? 6 : f.hi;  // weekdays: 7 is Sunday again
    } else if (size_t dash = part.find('-'); dash != std::string::npos) {
      auto a = ParseValue(expr, f, part.substr(0, dash));
      if (!a) return a.error();
      auto b = ParseValue(expr, f, part.substr(dash + 1));
      if (!b) return b.error();
      lo = *a;
      hi = *b;
      if (lo > hi)
        return MakeStatus(Code::kInvalidArgument, "cron '{}': range {} in the {} field runs backwards", expr, part, f.name);
    } else {
      auto a = ParseValue(expr, f, part);
      if (!a) return a.error();
      lo = *a;
      hi = step > 1 ? (f.hi == 7 ? 6 : f.hi) : *a;  // "5/15" means 5-max/15, as Vixie cron
    }
    for (int v = lo; v <= hi; v += step) out[v] = true;
  }
  return Status::Ok();
}

}  // namespace

Result<CronExpr> CronExpr::Parse(const std::string& input) {
  std::string text = input;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.erase(0, 1);
  static const std::pair<const char*, const char*> kMacros[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},
  };
  std::string body = text;
  if (!text.empty() && text[0] == '@') {
    body.clear();
    for (const auto& [name, expansion] : kMacros)
      if (text == name) body = expansion;
    if (body.empty())
      return Err(Code::kInvalidArgument, fmt::format("cron '{}': unknown macro; use @yearly, @monthly, @weekly, "
                                                     "@daily, @hourly or five fields",
                                                     input));
  }
  std::stringstream in(body);
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.size() != 5)
    return Err(Code::kInvalidArgument,
               fmt::format("cron '{}': expected 5 fields (minute hour day-of-month month day-of-week), got {}", input,
                           fields.size()));
  CronExpr e;
  e.text_ = text;
  std::vector<bool> bits;
  for (int i = 0; i < 5; ++i) {
    CORRAL_RETURN_IF_ERROR_R(ParseField(input, kFields[i], fields[i], bits));
    for (int v = 0; v < static_cast<int>(bits.size()); ++v) {
      if (!bits[v]) continue;
      switch (i) {
        case 0: e.minutes_.set(v); break;
        case 1: e.hours_.set(v); break;
        case 2: e.days_.set(v); break;
        case 3: e.months_.set(v); break;
        case 4: e.weekdays_.set(v % 7); break;
      }
    }
  }
  // As Vixie cron (and croniter): a day field is unrestricted when it starts with '*' ("*", "*/2").
  e.day_restricted_ = fields[2][0] != '*';
  e.weekday_restricted_ = fields[4][0] != '*';
  return e;
}

Status CheckTimeZone(const std::string& tz) {
  try {
    date::locate_zone(tz);
    return Status::Ok();
  } catch (const std::exception&) {
    return Status(Code::kInvalidArgument,
                  fmt::format("unknown time zone '{}': use an IANA name such as 'UTC', 'Europe/Berlin' or 'Asia/Dhaka'", tz));
  }
}

Result<int64_t> CronExpr::Next(int64_t after_ns, const std::string& tz) const {
  const date::time_zone* zone;
  try {
    zone = date::locate_zone(tz);
  } catch (const std::exception&) {
    return Err(CheckTimeZone(tz));
  }
  auto after = sys_seconds(duration_cast<seconds>(nanoseconds(after_ns)));
  if (nanoseconds(after_ns) < duration_cast<nanoseconds>(after.time_since_epoch())) after -= seconds(1);  // floor
  // Walk local wall-clock time, skipping whole months, days and hours that cannot match.
  auto local = date::floor<minutes>(zone->to_local(after)) + minutes(1);
  auto day_ok = [&](date::local_days d) {
    date::year_month_day ymd(d);
    bool dom = days_[static_cast<unsigned>(ymd.day())];
    bool dow = weekdays_[date::weekday(d).c_encoding()];
    if (day_restricted_ && weekday_restricted_) return dom || dow;
    return dom && dow;
  };
  for (int guard = 0; guard < 2'000'000; ++guard) {
    auto day = date::floor<date::days>(local);
    date::year_month_day ymd(day);
    if (ymd.year() > date::year(9999)) break;
    if (!months_[static_cast<unsigned>(ymd.month())]) {
      local = date::local_days((ymd.year() / ymd.month() / 1) + date::months(1));
      continue;
    }
    if (!day_ok(day)) {
      local = day + date::days(1);
      continue;
    }
    date::hh_mm_ss<minutes> hm(local - day);
    int h = static_cast<int>(hm.hours().count()), m = static_cast<int>(hm.minutes().count());
    if (!hours_[h]) {
      local = day + hours(h + 1);
      continue;
    }
    if (!minutes_[m]) {
      local += minutes(1);
      continue;
    }
    // A matching wall-clock time: where is it in UTC?
    date::local_info info = zone->get_info(date::local_seconds(local));
    sys_seconds at;
    if (info.result == date::local_info::nonexistent)
      at = info.second.begin;  // in a gap: the moment the gap ends
    else
      at = sys_seconds((date::local_seconds(local) - info.first.offset).time_since_epoch());  // unique, or the first of two
    if (at > after) return duration_cast<nanoseconds>(at.time_since_epoch()).count();
    local += minutes(1);  // a slot at or before `after` (the repeated hour, a gap already passed)
  }
  return Err(Code::kInvalidArgument, fmt::format("cron '{}' never matches a date (like February 30th)", text_));
}

}  // namespace corral
