#include "analysis/stats.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "analysis/progress.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/evaluation.h"

namespace cityops::analysis {

namespace {

std::string Time(const google::protobuf::Timestamp& t, absl::TimeZone zone) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Ez", kernel::FromTimestamp(t), zone);
}

// The UTC offset an RFC 3339 time was written with ("...Z", "...+08:00"), so that the
// report speaks the user's local time; UTC when there is none.
absl::TimeZone ZoneOf(const std::string& rfc3339) {
  if (rfc3339.size() < 6) return absl::UTCTimeZone();
  const std::string tail = rfc3339.substr(rfc3339.size() - 6);
  int hours = 0, minutes = 0;
  if ((tail[0] == '+' || tail[0] == '-') && tail[3] == ':' &&
      absl::SimpleAtoi(tail.substr(1, 2), &hours) &&
      absl::SimpleAtoi(tail.substr(4, 2), &minutes)) {
    const int seconds = (hours * 60 + minutes) * 60;
    return absl::FixedTimeZone(tail[0] == '-' ? -seconds : seconds);
  }
  return absl::UTCTimeZone();
}

std::string Count(uint64_t n) { return WithThousands(n); }

std::string Rate(bool has, double rate) {
  return has ? absl::StrFormat("%.1f %%", 100 * rate) : std::string("n/a");
}

std::string Dur(const google::protobuf::Duration& d, uint64_t count) {
  return count == 0 ? std::string("-") : HumanDuration(kernel::FromDurationProto(d));
}

std::string StageLabel(v1::CaseStage stage) {
  switch (stage) {
    case v1::CASE_STAGE_DISCOVERED:
      return "discovered (to register)";
    case v1::CASE_STAGE_REGISTERED:
      return "registered (to dispatch)";
    case v1::CASE_STAGE_DISPATCHED:
      return "dispatched (to handle)";
    case v1::CASE_STAGE_HANDLED:
      return "handled (to verify)";
    case v1::CASE_STAGE_VERIFIED:
      return "verified (to close)";
    default:
      return v1::CaseStage_Name(stage);
  }
}

// A table with a left-aligned first column (and last, if `text_last`), the others
// right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header, bool text_last = false) : text_last_(text_last) {
    rows_.push_back(std::move(header));
  }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out, const std::string& indent = "  ") const {
    std::vector<size_t> width;
    for (const auto& row : rows_) {
      if (width.size() < row.size()) width.resize(row.size(), 0);
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    for (const auto& row : rows_) {
      std::string line = indent;
      for (size_t i = 0; i < row.size(); ++i) {
        if (i == 0) {
          line += row[i] + std::string(width[i] - row[i].size(), ' ');
        } else if (text_last_ && i + 1 == row.size()) {
          line += "  " + row[i];
        } else {
          line += "  " + std::string(width[i] - row[i].size(), ' ') + row[i];
        }
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out << line << "\n";
    }
  }

 private:
  bool text_last_;
  std::vector<std::vector<std::string>> rows_;
};

absl::StatusOr<std::unique_ptr<kernel::EventLog>> OpenLog(const std::string& data_dir) {
  kernel::EventLogOptions options;
  options.path = data_dir;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(options);
  if (absl::IsNotFound(log.status())) {
    return absl::NotFoundError(absl::StrFormat(
        "no event log at %s: check --data-dir (a copy made by 'cityops log backup', or a "
        "copied data directory's log)",
        data_dir));
  }
  if (absl::IsFailedPrecondition(log.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        log.status().message(),
        ". stats reads a copy of a log: take one with 'cityops log backup --data-dir ", data_dir,
        " --to COPY' once the daemon is stopped (or POST /api/v1/backups while it runs), or ask "
        "the running daemon: GET /api/v1/statistics?from=...&to=...&by=..."));
  }
  return log;
}

}  // namespace

std::string StatsJson(const v1::Evaluation& evaluation) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(evaluation, &out, options).ok()) return "{}";
  return out;
}

void PrintStatsTable(const v1::Evaluation& e, std::ostream& out, absl::TimeZone zone) {
  const v1::EvaluationFigures& f = e.total();
  out << "Evaluation of grid management, " << Time(e.from(), zone) << " to " << Time(e.to(), zone)
      << "\n";
  out << "scope: " << (e.scope().empty() ? "the whole city" : e.scope())
      << (e.department().empty() ? "" : ", cases dispatched to " + e.department()) << " ("
      << Count(e.cases_read()) << " cases read)\n\n";

  Table totals({"figure", "value", "what it counts (docs/analysis.md)"}, /*text_last=*/true);
  auto row = [&](const char* name, const std::string& value, const char* what) {
    totals.Add({name, value, what});
  };
  row("found", Count(f.found()), "cases discovered in the period (发现)");
  row("filed", Count(f.filed()), "cases registered in the period (立案)");
  row("due", Count(f.due()), "cases with a stage deadline in the period");
  row("closed", Count(f.closed()), "cases closed in the period (结案)");
  row("close rate", Rate(f.has_close_rate(), f.close_rate()),
      "of the cases found, closed by the end");
  row("on-time close rate", Rate(f.has_on_time_close_rate(), f.on_time_close_rate()),
      "of the cases closed, never yellow or red");
  row("yellow lights", Count(f.yellow_lights()), "deadlines passed (黄灯)");
  row("red lights", Count(f.red_lights()), "twice the allowance passed (红灯)");
  row("urges", Count(f.urges()), "urges given (催办)");
  row("escalations", Count(f.escalations()), "cases handed to the level above");
  row("quick at street level", Count(f.handled_at_street_level()),
      "cases handled at street level or below");
  row("dispatched by district", Count(f.dispatched_by_district()),
      "cases dispatched by a district center");
  row("open at the end", Count(f.open()), "cases not closed when the period ends");
  row("  of them yellow", Count(f.open_yellow()), "their current stage is yellow");
  row("  of them red", Count(f.open_red()), "their current stage is red");
  totals.Print(out);

  out << "\nTime in each stage, cases closed in the period (" << Count(f.handling_time().count())
      << ")\n";
  Table stages({"stage", "mean", "p50", "p90"});
  for (const v1::StageTime& s : f.stage_times()) {
    const uint64_t n = s.time().count();
    stages.Add({StageLabel(s.stage()), Dur(s.time().mean(), n), Dur(s.time().p50(), n),
                Dur(s.time().p90(), n)});
  }
  const v1::DurationSummary& h = f.handling_time();
  stages.Add({"discovered to closed", Dur(h.mean(), h.count()), Dur(h.p50(), h.count()),
              Dur(h.p90(), h.count())});
  stages.Print(out);

  if (!e.by().empty()) {
    out << "\nBy " << e.by() << ", worst on-time close rate first\n";
    Table groups({e.by(), "found", "filed", "due", "closed", "close", "on time", "yellow", "red",
                  "urges", "escal.", "open", "open Y", "open R", "mean handling"});
    for (const v1::EvaluationGroup& g : e.groups()) {
      const v1::EvaluationFigures& x = g.figures();
      groups.Add({g.name(), Count(x.found()), Count(x.filed()), Count(x.due()), Count(x.closed()),
                  Rate(x.has_close_rate(), x.close_rate()),
                  Rate(x.has_on_time_close_rate(), x.on_time_close_rate()),
                  Count(x.yellow_lights()), Count(x.red_lights()), Count(x.urges()),
                  Count(x.escalations()), Count(x.open()), Count(x.open_yellow()),
                  Count(x.open_red()), Dur(x.handling_time().mean(), x.handling_time().count())});
    }
    if (e.groups().empty()) {
      out << "  (no case contributes to the period)\n";
    } else {
      groups.Print(out);
    }
  }

  const v1::HotlineSeries& hot = e.hotline();
  const bool hourly = kernel::FromDurationProto(hot.bucket()) < absl::Hours(24);
  out << "\n12345 hotline cases found, by category, per " << (hourly ? "hour" : "day") << "\n";
  if (hot.categories().empty()) {
    out << "  (none in the period)\n";
    return;
  }
  // Rows are the time buckets; columns the categories, most cases first (at most 8, the
  // rest summed as "other").
  constexpr int kColumns = 8;
  const int shown = std::min(kColumns, hot.categories_size());
  std::vector<std::string> header = {hourly ? "hour starting" : "day starting"};
  for (int c = 0; c < shown; ++c) header.push_back(hot.categories(c).category().code());
  const bool other = hot.categories_size() > shown;
  if (other) header.push_back("other");
  header.push_back("total");
  Table series(header);
  std::vector<std::string> totals_row = {"total"};
  for (int b = 0; b < hot.bucket_starts_size(); ++b) {
    std::vector<std::string> r = {
        absl::FormatTime("%Y-%m-%d %H:%M", kernel::FromTimestamp(hot.bucket_starts(b)), zone)};
    uint64_t sum = 0, rest = 0;
    for (int c = 0; c < hot.categories_size(); ++c) {
      const uint64_t n = hot.categories(c).counts(b);
      sum += n;
      if (c < shown) {
        r.push_back(Count(n));
      } else {
        rest += n;
      }
    }
    if (other) r.push_back(Count(rest));
    r.push_back(Count(sum));
    series.Add(std::move(r));
  }
  uint64_t all = 0, rest = 0;
  for (int c = 0; c < hot.categories_size(); ++c) {
    all += hot.categories(c).total();
    if (c < shown) {
      totals_row.push_back(Count(hot.categories(c).total()));
    } else {
      rest += hot.categories(c).total();
    }
  }
  if (other) totals_row.push_back(Count(rest));
  totals_row.push_back(Count(all));
  series.Add(std::move(totals_row));
  series.Print(out);
  std::vector<std::string> names;
  for (int c = 0; c < shown; ++c) {
    const v1::CaseCategory& cat = hot.categories(c).category();
    if (!cat.name().empty()) names.push_back(absl::StrCat(cat.code(), " ", cat.name()));
  }
  if (!names.empty()) out << "  categories: " << absl::StrJoin(names, "; ") << "\n";
}

absl::Status RunStats(const StatsOptions& options, std::ostream& out, std::ostream& progress_out) {
  absl::StatusOr<absl::Time> from = ParseTimeFlag("--from", options.from);
  if (!from.ok()) return from.status();
  absl::StatusOr<absl::Time> to = ParseTimeFlag("--to", options.to);
  if (!to.ok()) return to.status();
  if (*to <= *from) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--to %s is not after --from %s: give a period that ends after it starts",
                        options.to, options.from));
  }
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = OpenLog(options.data_dir);
  if (!log.ok()) return log.status();

  StopScope stop;
  Progress progress(progress_out, {.what = "stats", .unit = "cases"});
  projections::EvaluationRequest request;
  request.from = *from;
  request.to = *to;
  request.by = options.by;
  request.scope = options.scope;
  request.department = options.department;
  request.on_case = [&](uint64_t, uint64_t total) {
    if (progress.done() == 0) progress.SetTotal(total);
    progress.Advance(1);
    return !stop.requested();
  };
  absl::StatusOr<v1::Evaluation> evaluation = projections::Evaluate(**log, request);
  if (absl::IsCancelled(evaluation.status())) {
    return StopScope::Stopped(absl::StrCat(evaluation.status().message(), "; nothing printed"));
  }
  if (!evaluation.ok()) {
    return absl::Status(evaluation.status().code(),
                        absl::StrCat("stats: ", evaluation.status().message()));
  }
  progress.Finish();
  if (options.json) {
    out << StatsJson(*evaluation) << "\n";
  } else {
    PrintStatsTable(*evaluation, out, ZoneOf(options.from));
  }
  return absl::OkStatus();
}

}  // namespace cityops::analysis
