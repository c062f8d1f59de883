#include "corral/head/metrics_text.h"

#include <cmath>

#include <fmt/format.h>

namespace corral::head {
namespace {

void AppendEscaped(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void AppendNumber(std::string& out, double v) {
  if (std::isnan(v)) out += "NaN";
  else if (std::isinf(v)) out += v > 0 ? "+Inf" : "-Inf";
  else if (v == std::floor(v) && std::fabs(v) < 1e15) fmt::format_to(std::back_inserter(out), "{}", static_cast<int64_t>(v));
  else fmt::format_to(std::back_inserter(out), "{}", v);
}

}  // namespace

void MetricsText::Family(std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void MetricsText::Sample(std::string_view name, const MetricLabels& labels, double value) {
  Write(name, labels, {}, {}, value);
}

void MetricsText::Histogram(std::string_view name, const MetricLabels& labels, const corral::Histogram& h) {
  std::string bucket = fmt::format("{}_bucket", name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    std::string le;
    AppendNumber(le, h.bounds()[i]);
    Write(bucket, labels, "le", le, static_cast<double>(cumulative));
  }
  Write(bucket, labels, "le", "+Inf", static_cast<double>(h.count()));
  Write(fmt::format("{}_sum", name), labels, {}, {}, h.sum());
  Write(fmt::format("{}_count", name), labels, {}, {}, static_cast<double>(h.count()));
}

void MetricsText::Write(std::string_view name, const MetricLabels& labels, std::string_view extra_label,
                        std::string_view extra_value, double value) {
  out_ += name;
  if (!labels.empty() || !extra_label.empty()) {
    out_ += '{';
    bool first = true;
    auto add = [&](std::string_view k, std::string_view v) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      AppendEscaped(out_, v);
      out_ += '"';
    };
    for (const auto& [k, v] : labels) add(k, v);
    if (!extra_label.empty()) add(extra_label, extra_value);
    out_ += '}';
  }
  out_ += ' ';
  AppendNumber(out_, value);
  out_ += '\n';
}

std::string_view LabelCap::Admit(std::string_view value) {
  if (auto it = seen_.find(value); it != seen_.end()) return *it;
  if (seen_.size() >= max_) return "other";
  return *seen_.emplace(value).first;
}

}  // namespace corral::head
