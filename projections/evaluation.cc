#include "projections/evaluation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cityops/v1/views.pb.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "projections/workflow.h"

namespace cityops::projections {

namespace {

constexpr int kStages = v1::CASE_STAGE_CLOSED;  // DISCOVERED..VERIFIED have times: 1..5.
constexpr size_t kListedChoices = 12;           // Known codes listed in a NOT_FOUND message.

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

bool In(absl::Time t, absl::Time from, absl::Time to) { return t >= from && t < to; }

std::string DistrictOf(const v1::GridRef& g) {
  if (!g.district_code().empty()) return g.district_code();
  return g.grid_code().substr(0, std::min<size_t>(6, g.grid_code().size()));
}

std::string StreetOf(const v1::GridRef& g) {
  if (!g.street_code().empty()) return g.street_code();
  return g.grid_code().size() >= 9 ? g.grid_code().substr(0, 9) : std::string();
}

std::string ShortEnumName(const std::string& full, std::string_view prefix) {
  std::string name = full;
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

// The unit that dispatches the case now (its level, moved up by escalations), serving
// the case's grid.
v1::OrgUnit DispatchingUnit(const v1::CaseView& view) {
  v1::OrgUnit unit;
  unit.set_level(view.level());
  switch (view.level()) {
    case v1::GRID_LEVEL_CITY_CENTER:
      unit.set_code("city");
      break;
    case v1::GRID_LEVEL_DISTRICT_CENTER:
      unit.set_code(DistrictOf(view.grid()));
      break;
    case v1::GRID_LEVEL_STREET_CENTER:
      unit.set_code(StreetOf(view.grid()));
      break;
    case v1::GRID_LEVEL_RESIDENTIAL_STATION:
      unit.set_code(view.grid().grid_code());
      break;
    default:
      break;
  }
  return unit;
}

// The group of a case in breakdown `by`, from the case as it stood at the period's end.
std::pair<std::string, std::string> GroupOf(const std::string& by, const v1::CaseView& view) {
  if (by == "district") {
    const std::string d = DistrictOf(view.grid());
    return {d, d.empty() ? "(no grid)" : d};
  }
  if (by == "street") {
    const std::string s = StreetOf(view.grid());
    return {s, s.empty() ? "(no grid)" : s};
  }
  if (by == "department") {
    const std::string& d = view.dispatched_department();
    return {d, d.empty() ? "(not dispatched)" : d};
  }
  if (by == "unit") {
    if (view.level() == v1::GRID_LEVEL_UNSPECIFIED) return {"", "(no unit yet)"};
    const v1::OrgUnit unit = DispatchingUnit(view);
    return {absl::StrFormat("%s/%s", ShortEnumName(v1::GridLevel_Name(unit.level()), "GRID_LEVEL_"),
                            unit.code()),
            UnitName(unit)};
  }
  if (by == "category") {
    const v1::CaseCategory& c = view.category();
    return {c.code(), c.name().empty() ? c.code() : absl::StrFormat("%s %s", c.code(), c.name())};
  }
  // source
  const std::string s = ShortEnumName(v1::CaseSource_Name(view.source()), "CASE_SOURCE_");
  return {s, s};
}

// What one case contributes.
struct CaseFigures {
  bool found = false, filed = false, due = false, closed = false, closed_on_time = false;
  bool found_closed = false, handled_at_street_level = false, dispatched_by_district = false;
  bool open = false, open_yellow = false, open_red = false;
  uint64_t yellow_lights = 0, red_lights = 0, urges = 0, escalations = 0;
  std::optional<absl::Duration> handling_time;
  absl::Duration stage_time[kStages] = {};

  bool Any() const {
    return found || filed || due || closed || handled_at_street_level || dispatched_by_district ||
           open || yellow_lights > 0 || red_lights > 0 || urges > 0 || escalations > 0;
  }
};

// Figures summed over cases, with the durations kept for the percentiles.
struct Tally {
  uint64_t found = 0, filed = 0, due = 0, closed = 0, closed_on_time = 0, found_closed = 0;
  uint64_t yellow_lights = 0, red_lights = 0, urges = 0, escalations = 0;
  uint64_t handled_at_street_level = 0, dispatched_by_district = 0;
  uint64_t open = 0, open_yellow = 0, open_red = 0;
  std::vector<absl::Duration> stage_times[kStages];
  std::vector<absl::Duration> handling_times;

  void Add(const CaseFigures& c) {
    found += c.found;
    filed += c.filed;
    due += c.due;
    closed += c.closed;
    closed_on_time += c.closed_on_time;
    found_closed += c.found_closed;
    yellow_lights += c.yellow_lights;
    red_lights += c.red_lights;
    urges += c.urges;
    escalations += c.escalations;
    handled_at_street_level += c.handled_at_street_level;
    dispatched_by_district += c.dispatched_by_district;
    open += c.open;
    open_yellow += c.open_yellow;
    open_red += c.open_red;
    if (c.handling_time) {
      handling_times.push_back(*c.handling_time);
      for (int s = v1::CASE_STAGE_DISCOVERED; s < kStages; ++s) {
        stage_times[s].push_back(c.stage_time[s]);
      }
    }
  }

  static void Summarize(std::vector<absl::Duration>& d, v1::DurationSummary* out) {
    out->set_count(d.size());
    if (d.empty()) return;
    std::sort(d.begin(), d.end());
    absl::Duration sum;
    for (absl::Duration x : d) sum += x;
    // Nearest rank: the smallest value with at least p% of the values at or below it.
    auto rank = [&](double p) {
      const size_t r = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(d.size())));
      return d[std::clamp<size_t>(r, 1, d.size()) - 1];
    };
    kernel::ToDurationProto(sum / static_cast<int64_t>(d.size()), out->mutable_mean());
    kernel::ToDurationProto(rank(50), out->mutable_p50());
    kernel::ToDurationProto(rank(90), out->mutable_p90());
  }

  v1::EvaluationFigures ToProto() {
    v1::EvaluationFigures f;
    f.set_found(found);
    f.set_filed(filed);
    f.set_due(due);
    f.set_closed(closed);
    f.set_closed_on_time(closed_on_time);
    f.set_found_closed(found_closed);
    if (found > 0) f.set_close_rate(static_cast<double>(found_closed) / static_cast<double>(found));
    if (closed > 0) {
      f.set_on_time_close_rate(static_cast<double>(closed_on_time) / static_cast<double>(closed));
    }
    f.set_yellow_lights(yellow_lights);
    f.set_red_lights(red_lights);
    f.set_urges(urges);
    f.set_escalations(escalations);
    for (int s = v1::CASE_STAGE_DISCOVERED; s < kStages; ++s) {
      v1::StageTime* st = f.add_stage_times();
      st->set_stage(static_cast<v1::CaseStage>(s));
      Summarize(stage_times[s], st->mutable_time());
    }
    Summarize(handling_times, f.mutable_handling_time());
    f.set_handled_at_street_level(handled_at_street_level);
    f.set_dispatched_by_district(dispatched_by_district);
    f.set_open(open);
    f.set_open_yellow(open_yellow);
    f.set_open_red(open_red);
    return f;
  }
};

// Worst first: the lowest on-time close rate (groups without closes after those with),
// then the most red and yellow open cases, then by key.
bool Worse(const v1::EvaluationGroup& a, const v1::EvaluationGroup& b) {
  const v1::EvaluationFigures& x = a.figures();
  const v1::EvaluationFigures& y = b.figures();
  if (x.has_on_time_close_rate() != y.has_on_time_close_rate()) return x.has_on_time_close_rate();
  if (x.has_on_time_close_rate() && x.on_time_close_rate() != y.on_time_close_rate()) {
    return x.on_time_close_rate() < y.on_time_close_rate();
  }
  if (x.open_red() != y.open_red()) return x.open_red() > y.open_red();
  if (x.open_yellow() != y.open_yellow()) return x.open_yellow() > y.open_yellow();
  return a.key() < b.key();
}

bool ValidScope(const std::string& scope) {
  const size_t n = scope.size();
  if (n != 6 && n != 9 && n != 12 && n != 15) return false;
  return std::all_of(scope.begin(), scope.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string Listed(const std::set<std::string>& known) {
  if (known.empty()) return "(none)";
  std::vector<std::string> shown;
  for (const std::string& k : known) {
    if (shown.size() == kListedChoices) break;
    shown.push_back(k);
  }
  std::string out = absl::StrJoin(shown, ", ");
  if (known.size() > shown.size()) {
    absl::StrAppendFormat(&out, " and %d more", known.size() - shown.size());
  }
  return out;
}

// True if a registered device of the log is in `scope` (its latest registration).
absl::StatusOr<bool> DeviceInScope(const kernel::EventLog& log, const std::string& scope,
                                   std::set<std::string>* districts) {
  std::vector<std::pair<std::string, kernel::StreamVersion>> devices;
  absl::Status listed =
      log.ListStreams("registry/", [&](std::string_view id, kernel::StreamVersion version) {
        devices.emplace_back(std::string(id), version);
        return true;
      });
  if (!listed.ok()) return listed;
  for (const auto& [id, version] : devices) {
    absl::StatusOr<std::vector<v1::Event>> last = log.ReadStream(id, version, 1);
    if (!last.ok()) return last.status();
    if (last->empty() || !last->front().has_device_registered()) continue;
    const v1::GridRef& grid = last->front().device_registered().grid();
    if (grid.grid_code().rfind(scope, 0) == 0) return true;
    if (!DistrictOf(grid).empty()) districts->insert(DistrictOf(grid));
  }
  return false;
}

}  // namespace

absl::Status CaseStreamCache::Read(const kernel::EventLog& log, const std::string& stream,
                                   kernel::StreamVersion version, std::vector<v1::Event>* out) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(stream);
  const size_t cached = it == streams_.end() ? 0 : it->second.size();
  out->clear();
  if (cached > version.value()) {  // Never for an append-only stream; read it afresh.
    events_ -= cached;
    streams_.erase(it);
    return Read(log, stream, version, out);
  }
  out->resize(cached);
  for (size_t i = 0; i < cached; ++i) {
    if (!(*out)[i].ParseFromString(it->second[i])) {
      return absl::InternalError(
          absl::StrFormat("cached event %d of %s does not parse", i, stream));
    }
  }
  if (cached == version.value()) return absl::OkStatus();
  absl::StatusOr<std::vector<v1::Event>> fresh =
      log.ReadStream(stream, kernel::StreamVersion(cached + 1), version.value() - cached);
  if (!fresh.ok()) return fresh.status();
  const bool keep = events_ + fresh->size() <= max_events_;
  std::vector<std::string>* kept = keep ? &streams_[stream] : nullptr;
  for (v1::Event& e : *fresh) {
    if (kept != nullptr) kept->push_back(e.SerializeAsString());
    out->push_back(std::move(e));
  }
  if (keep) events_ += fresh->size();
  return absl::OkStatus();
}

size_t CaseStreamCache::events() const {
  absl::MutexLock lock(&mu_);
  return events_;
}

const std::vector<std::string>& EvaluationBreakdowns() {
  static const auto* names = new std::vector<std::string>{"district", "street",   "department",
                                                          "unit",     "category", "source"};
  return *names;
}

absl::StatusOr<LogTimeRange> EventTimeRange(const kernel::EventLog& log) {
  LogTimeRange range;
  for (kernel::Partition p : log.Partitions()) {
    absl::StatusOr<std::vector<v1::Event>> first = log.Read(p, kernel::Sequence(0), 1);
    if (!first.ok()) return first.status();
    std::optional<kernel::Sequence> last_seq = log.LastSequence(p);
    if (first->empty() || !last_seq) continue;
    absl::StatusOr<std::vector<v1::Event>> last = log.Read(p, *last_seq, 1);
    if (!last.ok()) return last.status();
    if (last->empty()) continue;
    range.empty = false;
    range.first = std::min(range.first, kernel::FromTimestamp(first->front().event_time()));
    range.last = std::max(range.last, kernel::FromTimestamp(last->front().event_time()));
  }
  return range;
}

absl::StatusOr<v1::Evaluation> Evaluate(const kernel::EventLog& log,
                                        const EvaluationRequest& request) {
  const std::vector<std::string>& breakdowns = EvaluationBreakdowns();
  if (!request.by.empty() &&
      std::find(breakdowns.begin(), breakdowns.end(), request.by) == breakdowns.end()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot break the figures down by '%s': use one of %s", request.by,
                        absl::StrJoin(breakdowns, ", ")));
  }
  if (!request.scope.empty() && !ValidScope(request.scope)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "scope '%s' is not a place: give a district (6 digits, e.g. 310104), street (9), "
        "community (12) or grid code (15 digits)",
        request.scope));
  }
  if (request.to <= request.from) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the period ends (%s) before it starts (%s): give an end after the start",
                        Rfc3339(request.to), Rfc3339(request.from)));
  }
  absl::StatusOr<LogTimeRange> range = EventTimeRange(log);
  if (!range.ok()) return range.status();
  if (range->empty) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the log at %s has no events: there is nothing to evaluate yet", log.path()));
  }
  const absl::Time from =
      request.from == absl::InfinitePast()
          ? absl::FromUnixSeconds(absl::ToUnixSeconds(range->first) / 3600 * 3600)
          : request.from;
  const absl::Time to =
      request.to == absl::InfiniteFuture() ? range->last + absl::Nanoseconds(1) : request.to;
  if (to <= from) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the period ends (%s) before it starts (%s): give an end after the start",
                        Rfc3339(to), Rfc3339(from)));
  }
  if (to <= range->first || from > range->last) {
    return absl::OutOfRangeError(absl::StrFormat(
        "the period %s to %s lies %s the log, which covers %s to %s: choose a period within it",
        Rfc3339(from), Rfc3339(to), to <= range->first ? "before" : "after", Rfc3339(range->first),
        Rfc3339(range->last)));
  }

  std::vector<std::pair<std::string, kernel::StreamVersion>> streams;
  absl::Status listed =
      log.ListStreams(kCaseStreamPrefix, [&](std::string_view id, kernel::StreamVersion version) {
        streams.emplace_back(std::string(id), version);
        return true;
      });
  if (!listed.ok()) return listed;

  const bool hourly = to - from < absl::Hours(48);
  const absl::Duration bucket = hourly ? absl::Hours(1) : absl::Hours(24);
  const size_t buckets = static_cast<size_t>(absl::Ceil(to - from, bucket) / bucket);
  struct HotlineCategory {
    v1::CaseCategory category;
    uint64_t total = 0;
    std::vector<uint64_t> counts;
  };
  std::map<std::string, HotlineCategory> hotline;

  Tally total;
  std::map<std::string, std::pair<std::string, Tally>> groups;  // key -> (name, tally)
  std::set<std::string> departments, districts;
  bool scope_seen = false;
  uint64_t done = 0;

  std::vector<v1::Event> events;
  for (const auto& [stream, version] : streams) {
    if (request.cache != nullptr) {
      if (absl::Status s = request.cache->Read(log, stream, version, &events); !s.ok()) return s;
    } else {
      absl::StatusOr<std::vector<v1::Event>> read =
          log.ReadStream(stream, kernel::StreamVersion(1), version.value());
      if (!read.ok()) return read.status();
      events = *std::move(read);
    }
    v1::CaseView view;
    CaseFigures c;
    std::map<int, absl::Time> deadlines;  // History entry -> its stage's due time.
    for (const v1::Event& e : events) {
      if (e.has_case_dispatched()) departments.insert(e.case_dispatched().department());
      const absl::Time t = kernel::FromTimestamp(e.event_time());
      if (t >= to) continue;  // The case as it stood at the period's end.
      const bool in = t >= from;
      switch (e.payload_case()) {
        case v1::Event::kCaseRegistered:
          c.filed |= in;
          break;
        case v1::Event::kCaseDispatched: {
          const v1::GridLevel by =
              e.provenance().has_actor() ? e.provenance().actor().unit().level() : view.level();
          c.dispatched_by_district |= in && by == v1::GRID_LEVEL_DISTRICT_CENTER;
          break;
        }
        case v1::Event::kCaseHandled:
          c.handled_at_street_level |= in && view.level() != v1::GRID_LEVEL_UNSPECIFIED &&
                                       view.level() <= v1::GRID_LEVEL_STREET_CENTER;
          break;
        case v1::Event::kCaseClosed:
          if (in) {
            c.closed = true;
            c.closed_on_time = view.worst_overdue() == v1::OVERDUE_LEVEL_UNSPECIFIED;
            const v1::CaseClosed& closed = e.case_closed();
            c.handling_time = kernel::FromDurationProto(closed.total_handling_time());
            for (const v1::StageDuration& d : closed.stage_durations()) {
              if (d.stage() >= v1::CASE_STAGE_DISCOVERED && d.stage() < kStages) {
                c.stage_time[d.stage()] += kernel::FromDurationProto(d.duration());
              }
            }
          }
          break;
        case v1::Event::kCaseUrged:
          c.urges += in;
          break;
        case v1::Event::kCaseEscalated:
          c.escalations += in;
          break;
        case v1::Event::kCaseOverdue:
          if (e.case_overdue().level() == v1::OVERDUE_LEVEL_YELLOW) c.yellow_lights += in;
          if (e.case_overdue().level() == v1::OVERDUE_LEVEL_RED) c.red_lights += in;
          break;
        default:
          break;
      }
      if (absl::Status s = ApplyCaseEvent(e, &view); !s.ok()) {
        return absl::DataLossError(
            absl::StrFormat("case stream %s in %s does not fold: %s; restore the log from a backup",
                            stream, log.path(), s.message()));
      }
      if (view.has_deadline() && view.history_size() > 0) {
        deadlines[view.history_size() - 1] = kernel::FromTimestamp(view.deadline().due_time());
      }
    }
    ++done;
    if (request.on_case && !request.on_case(done, streams.size())) {
      return absl::CancelledError(
          absl::StrFormat("stopped after %d of %d cases", done, streams.size()));
    }
    // Not there yet at the period's end, or a report that joined another case (it counts
    // there, as one of its linked reports).
    if (view.history_size() == 0 || !view.linked_to().empty()) continue;
    if (!DistrictOf(view.grid()).empty()) districts.insert(DistrictOf(view.grid()));
    if (!request.scope.empty()) {
      if (view.grid().grid_code().rfind(request.scope, 0) != 0) continue;
      scope_seen = true;
    }
    if (!request.department.empty() && view.dispatched_department() != request.department) {
      continue;
    }
    c.found = In(kernel::FromTimestamp(view.reported_time()), from, to);
    c.found_closed = c.found && view.stage() == v1::CASE_STAGE_CLOSED;
    for (const auto& [entry, due] : deadlines) c.due |= In(due, from, to);
    c.open = view.stage() != v1::CASE_STAGE_CLOSED;
    c.open_yellow = c.open && view.overdue() == v1::OVERDUE_LEVEL_YELLOW;
    c.open_red = c.open && view.overdue() == v1::OVERDUE_LEVEL_RED;
    if (!c.Any()) continue;
    total.Add(c);
    if (!request.by.empty()) {
      auto [key, name] = GroupOf(request.by, view);
      auto& group = groups[key];
      group.first = name;
      group.second.Add(c);
    }
    if (c.found && view.source() == v1::CASE_SOURCE_HOTLINE_12345) {
      HotlineCategory& h = hotline[view.category().code()];
      if (h.counts.empty()) {
        h.counts.resize(buckets);
        h.category = view.category();
      }
      const size_t b =
          static_cast<size_t>((kernel::FromTimestamp(view.reported_time()) - from) / bucket);
      ++h.counts[std::min(b, buckets - 1)];
      ++h.total;
    }
  }

  if (!request.scope.empty() && !scope_seen) {
    absl::StatusOr<bool> device = DeviceInScope(log, request.scope, &districts);
    if (!device.ok()) return device.status();
    if (!*device) {
      return absl::NotFoundError(absl::StrFormat(
          "no case and no registered device of the log at %s is in '%s': check the code; the "
          "districts in this log are %s",
          log.path(), request.scope, Listed(districts)));
    }
  }
  if (!request.department.empty() && !departments.contains(request.department)) {
    return absl::NotFoundError(absl::StrFormat(
        "no case of the log at %s was ever dispatched to department '%s': check the name; "
        "the departments in this log are %s",
        log.path(), request.department, Listed(departments)));
  }

  v1::Evaluation out;
  kernel::SetTimestamp(from, out.mutable_from());
  kernel::SetTimestamp(to, out.mutable_to());
  out.set_scope(request.scope);
  out.set_department(request.department);
  out.set_by(request.by);
  out.set_cases_read(done);
  *out.mutable_total() = total.ToProto();
  for (auto& [key, group] : groups) {
    v1::EvaluationGroup* g = out.add_groups();
    g->set_key(key);
    g->set_name(group.first);
    *g->mutable_figures() = group.second.ToProto();
  }
  std::sort(out.mutable_groups()->begin(), out.mutable_groups()->end(), Worse);
  v1::HotlineSeries* h = out.mutable_hotline();
  kernel::ToDurationProto(bucket, h->mutable_bucket());
  for (size_t b = 0; b < buckets; ++b) {
    kernel::SetTimestamp(from + static_cast<int64_t>(b) * bucket, h->add_bucket_starts());
  }
  std::vector<const HotlineCategory*> categories;
  for (const auto& [code, c] : hotline) categories.push_back(&c);
  std::stable_sort(
      categories.begin(), categories.end(),
      [](const HotlineCategory* a, const HotlineCategory* b) { return a->total > b->total; });
  for (const HotlineCategory* c : categories) {
    v1::HotlineCategorySeries* s = h->add_categories();
    *s->mutable_category() = c->category;
    s->set_total(c->total);
    for (uint64_t n : c->counts) s->add_counts(n);
  }
  return out;
}

}  // namespace cityops::projections
