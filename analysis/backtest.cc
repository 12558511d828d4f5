#include "analysis/backtest.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "kernel/proto_time.h"
#include "nlohmann/json.hpp"
#include "projections/derived_diff.h"

namespace cityops::analysis {
namespace fs = std::filesystem;
namespace {

std::string District(const v1::GridRef& grid) {
  return grid.district_code().empty() ? "(none)" : grid.district_code();
}

std::string Deterministic(const google::protobuf::Message& m) {
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&coded);
  coded.Trim();
  return bytes;
}

// What one log derived in the period, by identity.
struct Derived {
  struct Entry {
    BacktestItem item;
    std::string bytes;  // The payload without references: equal bytes = the same outcome.
  };
  std::map<std::string, Entry> alerts;
  std::map<std::string, Entry> cases;
  std::map<std::string, uint64_t> tickets_by_department;
  std::map<std::pair<std::string, std::string>, absl::Time> first_alert;  // (device, rule)
};

absl::Status Collect(const kernel::EventLog& log, absl::Time from, absl::Time to,
                     const std::string& what, const BacktestOptions& options, Derived* out) {
  std::ostream null_stream(nullptr);
  uint64_t total = 0;
  for (kernel::Partition p : log.Partitions()) total += log.NextSequence(p).value();
  Progress progress(options.progress != nullptr ? *options.progress : null_stream,
                    {.what = what, .total = total, .style = options.progress_style});
  v1::Event event;
  absl::Status failure;
  for (kernel::Partition p : log.Partitions()) {
    absl::Status scan =
        log.Scan(p, kernel::Sequence(0), [&](kernel::Sequence seq, std::string_view value) {
          progress.Advance();
          if (absl::Status s = kernel::EventLog::ParseEvent({p, seq}, value, &event); !s.ok()) {
            failure = s;
            return false;
          }
          if (!projections::IsDerivedEvent(event)) return true;
          const absl::Time t = kernel::FromTimestamp(event.event_time());
          if (t < from || t > to) return true;
          if (event.has_alert_raised()) {
            v1::AlertRaised a = event.alert_raised();
            a.clear_readings();  // Positions of the readings differ between logs; ids do not.
            Derived::Entry& e = out->alerts[a.alert_id()];
            e.item = {.id = a.alert_id(),
                      .rule_id = a.rule_id(),
                      .device_id = a.device_id(),
                      .district = District(a.grid()),
                      .category = "",
                      .time = t,
                      .detail = absl::StrFormat("%s %g (threshold %g), %s", a.metric(), a.value(),
                                                a.threshold(), v1::Severity_Name(a.severity()))};
            e.bytes = Deterministic(a);
            auto [it, first] = out->first_alert.try_emplace({a.device_id(), a.rule_id()}, t);
            if (!first) it->second = std::min(it->second, t);
          } else if (event.has_case_opened()) {
            const v1::CaseOpened& c = event.case_opened();
            Derived::Entry& e = out->cases[c.case_id()];
            e.item = {
                .id = c.case_id(),
                .rule_id = c.rule_id(),
                .device_id = c.device_id(),
                .district = District(c.grid()),
                .category = c.category().code(),
                .time = t,
                .detail = absl::StrFormat("%s %s, %s, %s", c.category().code(), c.category().name(),
                                          c.department(), v1::Severity_Name(c.severity()))};
            e.bytes = Deterministic(c);
          } else if (event.has_ticket_issued()) {
            ++out->tickets_by_department[event.ticket_issued().department()];
          }
          return true;
        });
    if (!scan.ok()) return scan;
    if (!failure.ok()) return failure;
    if (StopRequested()) return StopScope::Stopped("no report was written");
  }
  progress.Finish();
  return absl::OkStatus();
}

bool ByTime(const BacktestItem& a, const BacktestItem& b) {
  return std::tie(a.time, a.id) < std::tie(b.time, b.id);
}

// Sets recorded against backtest: totals, groups, and the differing items.
void Diff(const std::map<std::string, Derived::Entry>& recorded,
          const std::map<std::string, Derived::Entry>& backtest, bool by_category,
          BacktestCount* total, std::map<std::string, BacktestCount>* by_first,
          std::map<std::string, BacktestCount>* by_district, std::vector<BacktestItem>* added,
          std::vector<BacktestItem>* removed, std::vector<BacktestItem>* changed) {
  auto group = [&](const BacktestItem& item) -> BacktestCount& {
    return (*by_first)[by_category ? item.category : item.rule_id];
  };
  for (const auto& [id, r] : recorded) {
    ++total->recorded;
    ++group(r.item).recorded;
    ++(*by_district)[r.item.district].recorded;
    auto it = backtest.find(id);
    if (it == backtest.end()) {
      ++total->removed;
      ++group(r.item).removed;
      ++(*by_district)[r.item.district].removed;
      removed->push_back(r.item);
    } else if (it->second.bytes != r.bytes) {
      ++total->changed;
      ++group(r.item).changed;
      ++(*by_district)[r.item.district].changed;
      BacktestItem item = it->second.item;
      item.detail = absl::StrCat(r.item.detail, " -> ", it->second.item.detail);
      changed->push_back(std::move(item));
    }
  }
  for (const auto& [id, b] : backtest) {
    ++total->backtest;
    ++group(b.item).backtest;
    ++(*by_district)[b.item.district].backtest;
    if (recorded.contains(id)) continue;
    ++total->added;
    ++group(b.item).added;
    ++(*by_district)[b.item.district].added;
    added->push_back(b.item);
  }
}

void Truncate(std::vector<BacktestItem>* items, size_t n) {
  std::sort(items->begin(), items->end(), ByTime);
  if (items->size() > n) items->resize(n);
}

std::string Time(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return "";
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<BacktestReport> Backtest(const BacktestOptions& options) {
  if (options.from > options.to) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--from %s is after --to %s; give a period that runs forward",
                        Time(options.from), Time(options.to)));
  }
  std::error_code ec;
  std::string into = options.keep;
  bool remove_after = false;
  if (into.empty()) {
    const fs::path temp = fs::temp_directory_path(ec);
    into = absl::StrCat((ec ? fs::path("/tmp") : temp).string(), "/cityops-backtest-", ::getpid(),
                        "-", absl::ToUnixNanos(absl::Now()));
    remove_after = true;
  }
  ReplayOptions replay_options;
  replay_options.from = options.data_dir;
  replay_options.into = into;
  replay_options.to.time = options.to;
  replay_options.rule_set = options.rule_set;
  replay_options.progress = options.progress;
  replay_options.progress_style = options.progress_style;

  BacktestReport report;
  report.rule_set_name = options.rule_set.rule_set.name();
  report.rule_set_sha256 = options.rule_set.sha256;
  report.from = options.from;
  report.to = options.to;
  absl::StatusOr<ReplayResult> replayed = Replay(replay_options);
  if (!replayed.ok()) return replayed.status();
  report.replay = std::move(*replayed);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ignored;
      if (!dir.empty()) fs::remove_all(dir, ignored);
    }
  } cleanup{remove_after ? into : ""};

  absl::StatusOr<std::unique_ptr<kernel::EventLog>> recorded_log =
      OpenRecordedLog(options.data_dir);
  if (!recorded_log.ok()) return recorded_log.status();
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> backtest_log = OpenRecordedLog(into);
  if (!backtest_log.ok()) return backtest_log.status();
  StopScope stop;
  Derived recorded;
  Derived backtest;
  if (absl::Status s = Collect(**recorded_log, options.from, options.to, "reading what happened",
                               options, &recorded);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Collect(**backtest_log, options.from, options.to, "reading the backtest",
                               options, &backtest);
      !s.ok()) {
    return s;
  }

  Diff(recorded.alerts, backtest.alerts, /*by_category=*/false, &report.alerts,
       &report.alerts_by_rule, &report.alerts_by_district, &report.added_alerts,
       &report.removed_alerts, &report.changed_alerts);
  Diff(recorded.cases, backtest.cases, /*by_category=*/true, &report.cases,
       &report.cases_by_category, &report.cases_by_district, &report.added_cases,
       &report.removed_cases, &report.changed_cases);
  for (auto* items : {&report.added_alerts, &report.removed_alerts, &report.changed_alerts,
                      &report.added_cases, &report.removed_cases, &report.changed_cases}) {
    Truncate(items, options.examples);
  }
  for (const auto& [department, n] : recorded.tickets_by_department) {
    report.tickets_by_department[department].recorded = n;
  }
  for (const auto& [department, n] : backtest.tickets_by_department) {
    report.tickets_by_department[department].backtest = n;
  }

  BacktestReport::FirstAlerts& f = report.first_alerts;
  std::vector<absl::Duration> shifts;
  for (const auto& [key, t] : recorded.first_alert) {
    auto it = backtest.first_alert.find(key);
    if (it == backtest.first_alert.end()) {
      ++f.only_recorded;
      continue;
    }
    ++f.both;
    const absl::Duration shift = it->second - t;
    shifts.push_back(shift);
    if (shift < absl::ZeroDuration()) {
      ++f.earlier;
      f.max_earlier = std::max(f.max_earlier, -shift);
    } else if (shift > absl::ZeroDuration()) {
      ++f.later;
    } else {
      ++f.same;
    }
  }
  for (const auto& [key, t] : backtest.first_alert) {
    if (!recorded.first_alert.contains(key)) ++f.only_backtest;
  }
  if (!shifts.empty()) {
    std::nth_element(shifts.begin(), shifts.begin() + shifts.size() / 2, shifts.end());
    f.median_shift = shifts[shifts.size() / 2];
  }
  return report;
}

void PrintBacktest(const BacktestReport& r, std::ostream& out) {
  out << absl::StrFormat("backtest of rule set '%s' (sha256 %s)", r.rule_set_name,
                         r.rule_set_sha256.substr(0, 12));
  if (!Time(r.from).empty() || !Time(r.to).empty()) {
    out << absl::StrFormat(" from %s to %s", Time(r.from).empty() ? "the start" : Time(r.from),
                           Time(r.to).empty() ? "the end" : Time(r.to));
  }
  out << absl::StrFormat(": %s inputs replayed, %s events derived in %s\n",
                         WithThousands(r.replay.inputs), WithThousands(r.replay.derived),
                         HumanDuration(r.replay.copy_time + r.replay.derive_time));
  if (r.NoDifference()) {
    out << absl::StrFormat("no difference: the same %s alerts and %s cases as recorded\n",
                           WithThousands(r.alerts.recorded), WithThousands(r.cases.recorded));
  }
  auto table = [&](const std::string& title, const std::string& key,
                   const std::map<std::string, BacktestCount>& rows, const BacktestCount& total) {
    out << "\n" << title << "\n";
    out << absl::StrFormat("  %-30s %9s %9s %8s %8s %8s\n", key, "recorded", "backtest", "added",
                           "removed", "changed");
    for (const auto& [name, c] : rows) {
      out << absl::StrFormat("  %-30s %9d %9d %8d %8d %8d\n", name, c.recorded, c.backtest, c.added,
                             c.removed, c.changed);
    }
    out << absl::StrFormat("  %-30s %9d %9d %8d %8d %8d\n", "total", total.recorded, total.backtest,
                           total.added, total.removed, total.changed);
  };
  table("alerts by rule", "rule", r.alerts_by_rule, r.alerts);
  table("alerts by district", "district", r.alerts_by_district, r.alerts);
  table("cases by category", "category", r.cases_by_category, r.cases);
  table("cases by district", "district", r.cases_by_district, r.cases);

  out << "\ntickets issued by the rules, per department\n";
  out << absl::StrFormat("  %-30s %9s %9s\n", "department", "recorded", "backtest");
  for (const auto& [department, c] : r.tickets_by_department) {
    out << absl::StrFormat("  %-30s %9d %9d\n", department, c.recorded, c.backtest);
  }

  const BacktestReport::FirstAlerts& f = r.first_alerts;
  out << "\nfirst alert of each device and rule\n";
  out << absl::StrFormat(
      "  in both runs %d: earlier in the backtest %d, later %d, at the same time %d; median "
      "shift %s, largest lead %s\n",
      f.both, f.earlier, f.later, f.same, absl::FormatDuration(f.median_shift),
      absl::FormatDuration(f.max_earlier));
  out << absl::StrFormat("  only recorded %d, only in the backtest %d\n", f.only_recorded,
                         f.only_backtest);

  auto list = [&](const std::string& title, const std::vector<BacktestItem>& items,
                  uint64_t total) {
    if (items.empty()) return;
    out << absl::StrFormat("\n%s (%d; the first %d)\n", title, total, items.size());
    for (const BacktestItem& i : items) {
      out << absl::StrFormat("  %s  %-40s %-16s %s\n", Time(i.time), i.id, i.device_id, i.detail);
    }
  };
  list("alerts added", r.added_alerts, r.alerts.added);
  list("alerts removed", r.removed_alerts, r.alerts.removed);
  list("alerts changed", r.changed_alerts, r.alerts.changed);
  list("cases added", r.added_cases, r.cases.added);
  list("cases removed", r.removed_cases, r.cases.removed);
  list("cases changed", r.changed_cases, r.cases.changed);
}

std::string BacktestJson(const BacktestReport& r) {
  using Json = nlohmann::ordered_json;
  auto count = [](const BacktestCount& c) {
    return Json{{"recorded", c.recorded},
                {"backtest", c.backtest},
                {"added", c.added},
                {"removed", c.removed},
                {"changed", c.changed}};
  };
  auto groups = [&](const std::map<std::string, BacktestCount>& rows) {
    Json out = Json::object();
    for (const auto& [name, c] : rows) out[name] = count(c);
    return out;
  };
  auto items = [](const std::vector<BacktestItem>& list) {
    Json out = Json::array();
    for (const BacktestItem& i : list) {
      out.push_back(Json{{"id", i.id},
                         {"time", Time(i.time)},
                         {"rule_id", i.rule_id},
                         {"device_id", i.device_id},
                         {"district", i.district},
                         {"category", i.category},
                         {"detail", i.detail}});
    }
    return out;
  };
  const BacktestReport::FirstAlerts& f = r.first_alerts;
  Json root{{"rule_set", r.rule_set_name},
            {"rule_set_sha256", r.rule_set_sha256},
            {"from", Time(r.from)},
            {"to", Time(r.to)},
            {"inputs", r.replay.inputs},
            {"derived", r.replay.derived},
            {"no_difference", r.NoDifference()},
            {"alerts", count(r.alerts)},
            {"alerts_by_rule", groups(r.alerts_by_rule)},
            {"alerts_by_district", groups(r.alerts_by_district)},
            {"cases", count(r.cases)},
            {"cases_by_category", groups(r.cases_by_category)},
            {"cases_by_district", groups(r.cases_by_district)},
            {"tickets_by_department", Json::object()},
            {"first_alerts", Json{{"both", f.both},
                                  {"earlier", f.earlier},
                                  {"later", f.later},
                                  {"same", f.same},
                                  {"only_recorded", f.only_recorded},
                                  {"only_backtest", f.only_backtest},
                                  {"median_shift_seconds", absl::ToDoubleSeconds(f.median_shift)},
                                  {"max_earlier_seconds", absl::ToDoubleSeconds(f.max_earlier)}}},
            {"added_alerts", items(r.added_alerts)},
            {"removed_alerts", items(r.removed_alerts)},
            {"changed_alerts", items(r.changed_alerts)},
            {"added_cases", items(r.added_cases)},
            {"removed_cases", items(r.removed_cases)},
            {"changed_cases", items(r.changed_cases)}};
  for (const auto& [department, c] : r.tickets_by_department) {
    root["tickets_by_department"][department] =
        Json{{"recorded", c.recorded}, {"backtest", c.backtest}};
  }
  return root.dump(2);
}

}  // namespace cityops::analysis
