#include "api/metrics_text.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cityops::api {

namespace {

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// Bucket bounds as plain decimals ("0.00025", "10"), as Prometheus clients write them.
std::string SecondsOfMicros(int64_t micros) {
  std::string s = absl::StrFormat("%d.%06d", micros / 1'000'000, micros % 1'000'000);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// Label values escape backslash, double quote and newline.
void AppendLabels(const Labels& labels, std::string* out) {
  if (labels.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, labels[i].first, "=\"");
    for (char c : labels[i].second) {
      if (c == '\\') {
        out->append("\\\\");
      } else if (c == '"') {
        out->append("\\\"");
      } else if (c == '\n') {
        out->append("\\n");
      } else {
        out->push_back(c);
      }
    }
    out->push_back('"');
  }
  out->push_back('}');
}

// HELP text escapes backslash and newline.
std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

MetricsText::Family& MetricsText::Family::Sample(const Labels& labels, double value) {
  samples_ += name_;
  AppendLabels(labels, &samples_);
  absl::StrAppend(&samples_, " ", Number(value), "\n");
  return *this;
}

MetricsText::Family& MetricsText::Family::Histogram(const Labels& labels,
                                                    const kernel::LatencyHistogram::Snapshot& s) {
  for (size_t i = 0; i < s.cumulative.size(); ++i) {
    Labels with_le = labels;
    with_le.emplace_back("le", SecondsOfMicros(kernel::LatencyHistogram::kBoundsMicros[i]));
    samples_ += name_ + "_bucket";
    AppendLabels(with_le, &samples_);
    absl::StrAppend(&samples_, " ", s.cumulative[i], "\n");
  }
  Labels inf = labels;
  inf.emplace_back("le", "+Inf");
  samples_ += name_ + "_bucket";
  AppendLabels(inf, &samples_);
  absl::StrAppend(&samples_, " ", s.count, "\n");
  samples_ += name_ + "_sum";
  AppendLabels(labels, &samples_);
  absl::StrAppend(&samples_, " ", Number(s.sum_seconds), "\n");
  samples_ += name_ + "_count";
  AppendLabels(labels, &samples_);
  absl::StrAppend(&samples_, " ", s.count, "\n");
  return *this;
}

MetricsText::Family& MetricsText::Add(std::string_view name, std::string_view type,
                                      std::string_view help) {
  for (const auto& f : families_) {
    if (f->name_ == name) return *f;
  }
  auto f = std::make_unique<Family>();
  f->name_ = std::string(name);
  f->type_ = std::string(type);
  f->help_ = std::string(help);
  families_.push_back(std::move(f));
  return *families_.back();
}

std::string MetricsText::Render() const {
  std::string out;
  for (const auto& f : families_) {
    absl::StrAppend(&out, "# HELP ", f->name_, " ", EscapeHelp(f->help_), "\n");
    absl::StrAppend(&out, "# TYPE ", f->name_, " ", f->type_, "\n");
    out += f->samples_;
  }
  return out;
}

}  // namespace cityops::api
