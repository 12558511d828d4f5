#include "analysis/state_at.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "analysis/case_text.h"
#include "analysis/open_log.h"
#include "analysis/progress.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "projections/rules/rules_stage.h"
#include "projections/stored_event.h"

namespace cityops::analysis {

namespace {

namespace fs = std::filesystem;
namespace pb = google::protobuf;

constexpr size_t kPage = 1000;

// A partition's time moves with its readings, clock ticks and reports (as in the rules
// stage and the read models); other events (a rule set activated by hand, a derived
// event) may carry another clock's time and say little about the log's span.
bool MovesTime(const v1::Event& e) {
  return e.has_reading() || e.has_clock_tick() || e.has_case_reported();
}

std::string Rfc3339(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return "-";
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

std::string Json(const pb::Message& m) {
  pb::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!pb::util::MessageToJsonString(m, &out, options).ok()) return "{}";
  return out;
}

std::string Quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string KindName(v1::DeviceKind k) { return ShortName(v1::DeviceKind_Name(k), "DEVICE_KIND_"); }
std::string SeverityName(v1::Severity s) { return ShortName(v1::Severity_Name(s), "SEVERITY_"); }

// Open cases by stage, with their lights: stage -> {green, yellow, red}.
std::map<v1::CaseStage, std::array<uint64_t, 3>> LightsByStage(const CityState& s) {
  std::map<v1::CaseStage, std::array<uint64_t, 3>> out;
  for (const v1::CaseView& c : s.open_cases) {
    std::array<uint64_t, 3>& n = out[c.stage()];
    ++n[c.overdue() == v1::OVERDUE_LEVEL_RED ? 2 : c.overdue() == v1::OVERDUE_LEVEL_YELLOW ? 1 : 0];
  }
  return out;
}

// Active alerts by rule and severity.
std::map<std::pair<std::string, v1::Severity>, uint64_t> AlertsByRule(const CityState& s) {
  std::map<std::pair<std::string, v1::Severity>, uint64_t> out;
  for (const v1::AlertView& a : s.active_alerts)
    ++out[{a.raised().rule_id(), a.raised().severity()}];
  return out;
}

// Removes the scratch read models when it goes (the command's temporary directory).
class ScratchDir {
 public:
  ScratchDir() = default;
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    if (path_.empty() || keep_) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }

  // A fresh directory under $TMPDIR (or /tmp), removed afterwards.
  absl::Status MakeTemporary() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/cityops-state-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot create a temporary directory for the read models (%s): %s; set TMPDIR to a "
          "writable directory with room, or give --keep DIR",
          pattern, std::strerror(errno)));
    }
    path_ = pattern;
    return absl::OkStatus();
  }

  // `dir`, which must not exist or be empty; kept afterwards.
  absl::Status UseKept(const std::string& dir) {
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "--keep %s is not empty; give a new directory for the read models as of --at", dir));
    }
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot create --keep %s: %s; check the path and its permissions", dir, ec.message()));
    }
    path_ = dir;
    keep_ = true;
    return absl::OkStatus();
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool keep_ = false;
};

// Warns when the rules stage had not processed the log as far as `at`: what it derives
// from then on (alerts, cases, lights) is missing from the answer.
void WarnIfRulesBehind(const kernel::EventLog& log, absl::Time at, const std::string& data_dir,
                       std::ostream& err) {
  bool any = false;
  for (kernel::Partition p : log.Partitions()) {
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        log.StoredCheckpoint(p, rules::kRulesCheckpoint);
    if (!cp.ok()) return;
    if (!cp->has_value()) continue;
    any = true;
    if ((*cp)->next >= log.NextSequence(p)) continue;
    absl::StatusOr<std::vector<v1::Event>> next = log.Read(p, (*cp)->next, 1);
    if (!next.ok() || next->empty()) continue;
    const absl::Time from = kernel::FromTimestamp(next->front().event_time());
    if (from > at) continue;
    err << absl::StrFormat(
        "warning: the rules stage has processed partition %d of %s only up to sequence %d "
        "(event time %s): alerts, cases and lights it would derive from then on are missing; "
        "run 'cityops replay --data-dir %s' on this copy first\n",
        p.value(), data_dir, (*cp)->next.value(), Rfc3339(from), data_dir);
  }
  if (!any && !log.Partitions().empty()) {
    err << absl::StrFormat(
        "warning: the rules stage has not run over %s: there are no alerts, cases or lights "
        "to show; run 'cityops replay --data-dir %s' on this copy first\n",
        data_dir, data_dir);
  }
}

void PrintState(const CityState& s, const LogRange& range, size_t rows, std::ostream& out) {
  out << absl::StrFormat("city as of %s%s (the log spans %s .. %s)\n", Rfc3339(s.at),
                         s.scope.empty() ? "" : ", scope " + s.scope, Rfc3339(range.first),
                         Rfc3339(range.last));
  const v1::Statistics& st = s.statistics;
  out << "\nbig screen (the whole city):\n";
  out << absl::StrFormat(
      "  cases %d: closed %d (close rate %.1f %%, on time %.1f %%); open lights yellow %d, red "
      "%d; urged %d; handled at street level %d, dispatched by the district %d\n",
      st.cases_total(), st.closed(), 100 * st.close_rate(), 100 * st.on_time_close_rate(),
      st.overdue_yellow(), st.overdue_red(), st.urged(), st.handled_at_street_level(),
      st.dispatched_by_district());
  out << absl::StrFormat(
      "  devices %d (%d online, %d unregistered); alerts active %d; tickets %d\n",
      st.devices_total(), st.devices_online(), st.devices_unregistered(), st.alerts_active(),
      st.tickets_total());
  if (!s.scope.empty()) {
    for (const auto* counts : {&st.by_district(), &st.by_street()}) {
      for (const v1::Count& c : *counts) {
        if (absl::StartsWith(c.key(), s.scope) || absl::StartsWith(s.scope, c.key())) {
          out << absl::StrFormat("  cases in %s: %d\n", c.key(), c.count());
        }
      }
    }
  }

  out << absl::StrFormat("\nopen cases%s: %d\n", s.scope.empty() ? "" : " in scope",
                         s.open_cases.size());
  std::vector<std::vector<std::string>> table = {{"  STAGE", "CASES", "GREEN", "YELLOW", "RED"}};
  for (const auto& [stage, n] : LightsByStage(s)) {
    table.push_back({"  " + StageName(stage), absl::StrCat(n[0] + n[1] + n[2]), absl::StrCat(n[0]),
                     absl::StrCat(n[1]), absl::StrCat(n[2])});
  }
  if (table.size() > 1) PrintTable(table, out);
  if (!s.open_cases.empty()) {
    // The worst lights first, then newest reported (the read models' order).
    std::vector<const v1::CaseView*> cases;
    for (const v1::CaseView& c : s.open_cases) cases.push_back(&c);
    std::stable_sort(cases.begin(), cases.end(), [](const v1::CaseView* a, const v1::CaseView* b) {
      return a->overdue() > b->overdue();
    });
    table = {{"  ID", "STAGE", "LIGHT", "SOURCE", "CATEGORY", "GRID", "DEPARTMENT",
              "IN STAGE SINCE", "DEADLINE"}};
    for (size_t i = 0; i < cases.size() && i < rows; ++i) {
      const v1::CaseView& c = *cases[i];
      table.push_back({"  " + c.case_id(), StageName(c.stage()), Light(c), SourceName(c.source()),
                       c.category().code(), c.grid().grid_code(),
                       c.department().empty() ? "-" : c.department(), FormatWhen(c.stage_time()),
                       c.has_deadline() ? NextStep(c.deadline()) : "-"});
    }
    PrintTable(table, out);
    if (cases.size() > rows) {
      out << absl::StrFormat("  ... and %d more (--rows N, or --json for all)\n",
                             cases.size() - rows);
    }
  }

  out << absl::StrFormat("\nactive alerts%s: %d\n", s.scope.empty() ? "" : " in scope",
                         s.active_alerts.size());
  table = {{"  RULE", "SEVERITY", "ACTIVE"}};
  for (const auto& [key, n] : AlertsByRule(s)) {
    table.push_back({"  " + key.first, SeverityName(key.second), absl::StrCat(n)});
  }
  if (table.size() > 1) PrintTable(table, out);

  uint64_t online = 0, offline = 0;
  for (const CityState::Devices& d : s.devices) {
    online += d.online;
    offline += d.offline;
  }
  out << absl::StrFormat("\ndevices%s: %d online, %d offline\n", s.scope.empty() ? "" : " in scope",
                         online, offline);
  table = {{"  KIND", "ONLINE", "OFFLINE"}};
  for (const CityState::Devices& d : s.devices) {
    table.push_back({"  " + (d.kind_id.empty() ? KindName(d.kind) : d.kind_id),
                     absl::StrCat(d.online), absl::StrCat(d.offline)});
  }
  if (table.size() > 1) PrintTable(table, out);
}

}  // namespace

absl::StatusOr<CityState> ReadCityState(const views::Projections& views, absl::Time at,
                                        std::string_view scope) {
  CityState s;
  s.at = at;
  s.scope = std::string(scope);
  absl::StatusOr<v1::Statistics> statistics = views.GetStatistics();
  if (!statistics.ok()) return statistics.status();
  s.statistics = *std::move(statistics);

  views::CaseFilter cases;
  cases.grid_prefix = s.scope;
  for (std::string token;;) {
    absl::StatusOr<views::Page<v1::CaseView>> page = views.ListCases(cases, kPage, token);
    if (!page.ok()) return page.status();
    for (v1::CaseView& c : page->items) {
      if (c.opened() && c.stage() != v1::CASE_STAGE_CLOSED && c.linked_to().empty()) {
        s.open_cases.push_back(std::move(c));
      }
    }
    token = page->next_page_token;
    if (token.empty()) break;
  }

  views::AlertFilter alerts;
  alerts.active_only = true;
  for (std::string token;;) {
    absl::StatusOr<views::Page<v1::AlertView>> page = views.ListAlerts(alerts, kPage, token);
    if (!page.ok()) return page.status();
    for (v1::AlertView& a : page->items) {
      if (absl::StartsWith(a.raised().grid().grid_code(), s.scope)) {
        s.active_alerts.push_back(std::move(a));
      }
    }
    token = page->next_page_token;
    if (token.empty()) break;
  }

  views::DeviceFilter devices;
  devices.grid_prefix = s.scope;
  // (typed kind, or after them all for a catalogue-only kind; kind id).
  std::map<std::pair<int, std::string>, CityState::Devices> by_kind;
  for (std::string token;;) {
    absl::StatusOr<views::Page<v1::DeviceView>> page = views.ListDevices(devices, kPage, token);
    if (!page.ok()) return page.status();
    for (const v1::DeviceView& d : page->items) {
      const int order = d.kind() == v1::DEVICE_KIND_UNSPECIFIED ? std::numeric_limits<int>::max()
                                                                : static_cast<int>(d.kind());
      CityState::Devices& n = by_kind[{order, d.kind_id()}];
      n.kind = d.kind();
      n.kind_id = d.kind_id();
      ++(d.online() ? n.online : n.offline);
    }
    token = page->next_page_token;
    if (token.empty()) break;
  }
  for (const auto& [kind, n] : by_kind) s.devices.push_back(n);
  return s;
}

absl::StatusOr<LogRange> RangeOf(const kernel::EventLog& log) {
  constexpr size_t kLook = 256;  // Events read at a partition's end for one that moves time.
  LogRange range;
  for (kernel::Partition p : log.Partitions()) {
    const kernel::Sequence end = log.NextSequence(p);
    range.events += end.value();
    // The first event that moves time: a scan of envelopes from the start (registrations
    // and rule sets come first, dated by other clocks); the partition's first event if
    // none does.
    std::optional<absl::Time> first;
    projections::StoredEnvelope envelope;
    absl::Status scanned =
        log.Scan(p, kernel::Sequence(0), [&](kernel::Sequence seq, std::string_view value) {
          if (!projections::DecodeEnvelope(value, &envelope)) return true;
          if (seq.value() == 0) first = envelope.event_time;
          if (envelope.payload == v1::Event::kReading ||
              envelope.payload == v1::Event::kClockTick ||
              envelope.payload == v1::Event::kCaseReported) {
            first = envelope.event_time;
            return false;
          }
          return true;
        });
    if (!scanned.ok()) return scanned;
    if (first) range.first = std::min(range.first, *first);
    // The last that moves time among the partition's last events, else its last event.
    const uint64_t tail_from = end.value() > kLook ? end.value() - kLook : 0;
    absl::StatusOr<std::vector<v1::Event>> tail = log.Read(p, kernel::Sequence(tail_from), kLook);
    if (!tail.ok()) return tail.status();
    auto last = std::find_if(tail->rbegin(), tail->rend(), MovesTime);
    if (last == tail->rend()) last = tail->rbegin();
    if (last != tail->rend()) {
      range.last = std::max(range.last, kernel::FromTimestamp(last->event_time()));
    }
  }
  return range;
}

absl::StatusOr<std::unique_ptr<views::Projections>> FoldAsOf(kernel::EventLog* log, absl::Time at,
                                                             const std::string& dir,
                                                             const FoldOptions& options) {
  views::ProjectionOptions view_options;
  view_options.log = log;
  view_options.dir = dir;
  view_options.commit_every = options.commit_every;
  view_options.idle_wait = absl::Milliseconds(5);
  view_options.until = at;
  absl::StatusOr<std::unique_ptr<views::Projections>> views =
      views::Projections::Open(view_options);
  if (!views.ok()) return views.status();

  const std::vector<kernel::Partition> partitions = log->Partitions();
  uint64_t total = 0;
  for (kernel::Partition p : partitions) total += log->NextSequence(p).value();
  std::unique_ptr<Progress> progress;
  if (options.progress != nullptr) {
    progress = std::make_unique<Progress>(*options.progress,
                                          ProgressOptions{.what = "state --at", .total = total});
  }
  // The runner folds in its own thread; this one reports progress and watches for Ctrl-C.
  StopScope stop;
  absl::Status run_status;
  absl::Notification ended;
  std::thread runner([&] {
    run_status = (*views)->Run();
    ended.Notify();
  });
  bool stopped = false;
  while (!ended.WaitForNotificationWithTimeout(absl::Milliseconds(20))) {
    const std::vector<views::PartitionLag> lag = (*views)->Lag();
    uint64_t folded = 0;
    bool caught_up = lag.size() == partitions.size();
    for (const views::PartitionLag& l : lag) {
      folded += l.next.value();
      caught_up &= l.lag == 0;
    }
    if (progress != nullptr && folded > progress->done())
      progress->Advance(folded - progress->done());
    if (stop.requested()) stopped = true;
    if (caught_up || stopped) (*views)->Stop();
  }
  runner.join();
  if (!run_status.ok()) return run_status;
  if (stopped) {
    return StopScope::Stopped("the read models as of --at were not finished; nothing was printed");
  }
  // Folded to the end: this sets the time of every partition to `at` (see ProjectionOptions).
  if (absl::Status s = (*views)->CatchUp(); !s.ok()) return s;
  if (progress != nullptr) {
    if (total > progress->done()) progress->Advance(total - progress->done());
    progress->Finish();
  }
  return views;
}

absl::StatusOr<v1::CaseDetail> CaseAsOf(const kernel::EventLog& log, std::string_view case_id,
                                        absl::Time at) {
  const std::string stream = projections::CaseStream(case_id);
  v1::CaseDetail detail;
  v1::CaseView view;
  absl::Time reported = absl::InfiniteFuture();
  for (uint64_t from = 1;;) {
    absl::StatusOr<std::vector<v1::Event>> events =
        log.ReadStream(stream, kernel::StreamVersion(from), kPage);
    if (!events.ok()) return events.status();
    for (v1::Event& e : *events) {
      const absl::Time t = kernel::FromTimestamp(e.event_time());
      reported = std::min(reported, t);
      if (t > at) continue;
      if (absl::Status s = projections::ApplyCaseEvent(e, &view); !s.ok()) return s;
      *detail.add_timeline() = std::move(e);
    }
    if (events->size() < kPage) break;
    from += events->size();
  }
  if (reported == absl::InfiniteFuture()) {
    return absl::NotFoundError(absl::StrFormat(
        "the log %s holds no case '%s'; list the cases open at that time with 'cityops state "
        "--data-dir %s --at %s'",
        log.path(), case_id, log.path(), Rfc3339(at)));
  }
  if (detail.timeline().empty()) {
    return absl::NotFoundError(
        absl::StrFormat("case '%s' was first heard of at %s, after --at %s; give a later --at",
                        case_id, Rfc3339(reported), Rfc3339(at)));
  }
  if (view.stage() == v1::CASE_STAGE_CLOSED) {
    *detail.mutable_time_in_stage() = view.stage_durations();
    *detail.mutable_handling_time() = view.total_handling_time();
  } else {
    const absl::Time now = std::max(at, kernel::FromTimestamp(view.stage_time()));
    for (const v1::StageDuration& d : projections::StageDurations(view, now)) {
      *detail.add_time_in_stage() = d;
    }
    kernel::ToDurationProto(projections::TotalHandlingTime(view, now),
                            detail.mutable_handling_time());
    kernel::SetTimestamp(at, detail.mutable_as_of());
  }
  *detail.mutable_case_() = std::move(view);
  return detail;
}

std::string CityStateJson(const CityState& s) {
  std::string out = "{";
  absl::StrAppend(&out, "\"at\":", Quoted(Rfc3339(s.at)), ",\"scope\":", Quoted(s.scope),
                  ",\"statistics\":", Json(s.statistics));
  absl::StrAppend(&out, ",\"open_cases\":{\"total\":", s.open_cases.size(), ",\"by_stage\":[");
  bool first = true;
  for (const auto& [stage, n] : LightsByStage(s)) {
    absl::StrAppend(&out, first ? "" : ",", "{\"stage\":", Quoted(v1::CaseStage_Name(stage)),
                    ",\"green\":", n[0], ",\"yellow\":", n[1], ",\"red\":", n[2], "}");
    first = false;
  }
  absl::StrAppend(&out, "],\"cases\":[");
  first = true;
  for (const v1::CaseView& c : s.open_cases) {
    absl::StrAppend(&out, first ? "" : ",", Json(c));
    first = false;
  }
  absl::StrAppend(&out, "]},\"active_alerts\":{\"total\":", s.active_alerts.size(),
                  ",\"by_rule\":[");
  first = true;
  for (const auto& [key, n] : AlertsByRule(s)) {
    absl::StrAppend(&out, first ? "" : ",", "{\"rule_id\":", Quoted(key.first),
                    ",\"severity\":", Quoted(v1::Severity_Name(key.second)), ",\"active\":", n,
                    "}");
    first = false;
  }
  absl::StrAppend(&out, "],\"alerts\":[");
  first = true;
  for (const v1::AlertView& a : s.active_alerts) {
    absl::StrAppend(&out, first ? "" : ",", Json(a));
    first = false;
  }
  uint64_t online = 0, offline = 0;
  for (const CityState::Devices& d : s.devices) {
    online += d.online;
    offline += d.offline;
  }
  absl::StrAppend(&out, "]},\"devices\":{\"online\":", online, ",\"offline\":", offline,
                  ",\"by_kind\":[");
  first = true;
  for (const CityState::Devices& d : s.devices) {
    absl::StrAppend(&out, first ? "" : ",", "{\"kind\":", Quoted(v1::DeviceKind_Name(d.kind)),
                    ",\"kind_id\":", Quoted(d.kind_id), ",\"online\":", d.online,
                    ",\"offline\":", d.offline, "}");
    first = false;
  }
  absl::StrAppend(&out, "]}}");
  return out;
}

absl::Status StateAtCommand(const StateAtOptions& options, std::ostream& out, std::ostream& err) {
  absl::StatusOr<absl::Time> at = ParseTimeFlag("--at", options.at);
  if (!at.ok()) return at.status();
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = OpenLogToRead(options.data_dir, "state");
  if (!log.ok()) return log.status();

  absl::StatusOr<LogRange> range = RangeOf(**log);
  if (!range.ok()) return range.status();
  if (range->events == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the log %s is empty: there is no city to show", options.data_dir));
  }
  if (*at < range->first) {
    return absl::OutOfRangeError(absl::StrFormat(
        "--at %s is before the log's first event (%s); the log %s spans %s .. %s: give a time "
        "in that range",
        Rfc3339(*at), Rfc3339(range->first), options.data_dir, Rfc3339(range->first),
        Rfc3339(range->last)));
  }
  if (*at > range->last) {
    err << absl::StrFormat(
        "warning: --at %s is after the log's last event (%s; the log spans %s .. %s): this is "
        "the city as the log leaves it, with devices silent since then counted offline at %s\n",
        Rfc3339(*at), Rfc3339(range->last), Rfc3339(range->first), Rfc3339(range->last),
        Rfc3339(*at));
  }
  WarnIfRulesBehind(**log, *at, options.data_dir, err);

  if (!options.case_id.empty()) {
    absl::StatusOr<v1::CaseDetail> detail = CaseAsOf(**log, options.case_id, *at);
    if (!detail.ok()) return detail.status();
    if (options.json) {
      out << Json(*detail) << "\n";
    } else {
      out << absl::StrFormat("as of %s:\n", Rfc3339(*at));
      PrintCase(*detail, out);
    }
    return absl::OkStatus();
  }

  ScratchDir scratch;
  if (absl::Status s =
          options.keep.empty() ? scratch.MakeTemporary() : scratch.UseKept(options.keep);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<CityState> state;
  {
    absl::StatusOr<std::unique_ptr<views::Projections>> views =
        FoldAsOf(log->get(), *at, scratch.path(), {.progress = &err});
    if (!views.ok()) return views.status();
    state = ReadCityState(**views, *at, options.scope);
  }  // The read models close before their directory goes.
  if (!state.ok()) return state.status();
  if (options.json) {
    out << CityStateJson(*state) << "\n";
  } else {
    PrintState(*state, *range, options.rows, out);
    if (!options.keep.empty()) {
      out << absl::StrFormat("\nread models as of %s kept in %s\n", Rfc3339(*at), options.keep);
    }
  }
  return absl::OkStatus();
}

}  // namespace cityops::analysis
