#include "corral/base/resources.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace corral {
namespace {

constexpr double kScale = 10000.0;

int64_t ToUnits(double amount) { return static_cast<int64_t>(std::llround(amount * kScale)); }
double FromUnits(int64_t units) { return static_cast<double>(units) / kScale; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Result<double> ParseNumber(std::string_view s) {
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v))
    return Err(Code::kInvalidArgument, fmt::format("'{}' is not a number", s));
  return v;
}

}  // namespace

void ResourceSet::Set(const std::string& name, double amount) {
  int64_t u = ToUnits(amount);
  if (u == 0)
    units_.erase(name);
  else
    units_[name] = u;
}

double ResourceSet::Get(const std::string& name) const {
  auto it = units_.find(name);
  return it == units_.end() ? 0.0 : FromUnits(it->second);
}

bool ResourceSet::Contains(const ResourceSet& request) const {
  for (const auto& [name, need] : request.units_) {
    if (need <= 0) continue;
    auto it = units_.find(name);
    if (it == units_.end() || it->second < need) return false;
  }
  return true;
}

void ResourceSet::Add(const ResourceSet& other) {
  for (const auto& [name, u] : other.units_) {
    int64_t& mine = units_[name];
    mine += u;
    if (mine == 0) units_.erase(name);
  }
}

void ResourceSet::Subtract(const ResourceSet& other) {
  for (const auto& [name, u] : other.units_) {
    int64_t& mine = units_[name];
    mine -= u;
    if (mine == 0) units_.erase(name);
  }
}

double ResourceSet::UtilizationAfter(const ResourceSet& request, const ResourceSet& total) const {
  double worst = 0;
  for (const auto& [name, need] : request.units_) {
    auto t = total.units_.find(name);
    if (t == total.units_.end() || t->second <= 0) continue;
    auto f = units_.find(name);
    int64_t free = f == units_.end() ? 0 : f->second;
    double used = static_cast<double>(t->second - free + need) / static_cast<double>(t->second);
    worst = std::max(worst, used);
  }
  return worst;
}

std::string ResourceSet::ToString() const {
  std::string out;
  for (const auto& [name, u] : units_) {
    if (!out.empty()) out += ", ";
    if (name == kMemory)
      out += fmt::format("{}={}", name, FormatBytes(FromUnits(u)));
    else
      out += fmt::format("{}={:g}", name, FromUnits(u));
  }
  return out.empty() ? "{}" : out;
}

Result<int64_t> ParseMemory(std::string_view text) {
  std::string_view s = Trim(text);
  static const std::pair<std::string_view, double> kSuffixes[] = {
      {"KiB", 1024.0}, {"MiB", 1024.0 * 1024}, {"GiB", 1024.0 * 1024 * 1024},
      {"TiB", 1024.0 * 1024 * 1024 * 1024}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
      {"K", 1024.0}, {"M", 1024.0 * 1024}, {"G", 1024.0 * 1024 * 1024}, {"B", 1.0}};
  double mult = 1;
  for (const auto& [suffix, m] : kSuffixes) {
    if (s.size() > suffix.size() && s.ends_with(suffix)) {
      s.remove_suffix(suffix.size());
      mult = m;
      break;
    }
  }
  auto n = ParseNumber(Trim(s));
  if (!n || *n < 0)
    return Err(Code::kInvalidArgument,
               fmt::format("bad memory size '{}': use a number of bytes or e.g. 512MiB, 4GiB", text));
  return static_cast<int64_t>(*n * mult);
}

Result<std::map<std::string, std::string>> ParseLabels(std::string_view text) {
  std::map<std::string, std::string> out;
  std::string_view rest = text;
  while (!Trim(rest).empty()) {
    size_t comma = rest.find(',');
    std::string_view item = Trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || Trim(item.substr(0, eq)).empty())
      return Err(Code::kInvalidArgument,
                 fmt::format("bad item '{}' in '{}': expected name=value[,name=value]", item, text));
    out[std::string(Trim(item.substr(0, eq)))] = std::string(Trim(item.substr(eq + 1)));
  }
  return out;
}

Result<std::map<std::string, double>> ParseAmounts(std::string_view text) {
  auto labels = ParseLabels(text);
  if (!labels) return Err(labels.error());
  std::map<std::string, double> out;
  for (const auto& [name, value] : *labels) {
    auto v = ParseNumber(value);
    if (!v || *v < 0)
      return Err(Code::kInvalidArgument,
                 fmt::format("bad amount '{}={}': expected a non-negative number", name, value));
    out[name] = *v;
  }
  return out;
}

namespace {
template <typename M>
std::string JoinPairs(const M& m) {
  std::string out;
  for (const auto& [k, v] : m) out += fmt::format("{}{}={}", out.empty() ? "" : ",", k, v);
  return out;
}
}  // namespace

std::string FormatPairs(const std::map<std::string, std::string>& pairs) { return JoinPairs(pairs); }
std::string FormatPairs(const std::map<std::string, double>& amounts) { return JoinPairs(amounts); }

Result<double> ParseRate(std::string_view text) {
  std::string_view t = Trim(text);
  double per = 1;
  if (size_t slash = t.find('/'); slash != std::string_view::npos) {
    std::string_view unit = Trim(t.substr(slash + 1));
    if (unit == "s") per = 1;
    else if (unit == "m") per = 60;
    else if (unit == "h") per = 3600;
    else return Err(Code::kInvalidArgument, fmt::format("bad rate '{}': the unit after '/' is s, m or h", text));
    t = Trim(t.substr(0, slash));
  }
  auto n = ParseNumber(t);
  if (!n || *n < 0) return Err(Code::kInvalidArgument, fmt::format("bad rate '{}': expected e.g. 10/s, 100/m, 5/h", text));
  return *n / per;
}

std::string FormatBytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (bytes >= 1024 && i < 4) {
    bytes /= 1024;
    ++i;
  }
  return i == 0 ? fmt::format("{:.0f}B", bytes) : fmt::format("{:.1f}{}", bytes, kUnits[i]);
}

}  // namespace corral
