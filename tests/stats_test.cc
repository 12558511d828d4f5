// `cityops stats` and GET /api/v1/statistics?from=&to=&by=&scope= (projections/evaluation.h,
// analysis/stats.h): on a log made in process by the real rules stage and case workflow —
// three days of hotline and patrol reports and flood-gauge cases in two districts, worked
// by street and district operators (register, dispatch, escalate, verify with failures,
// close, urge) and the departments' district crews (handle) while deadlines pass and
// light cases — the figures of several
// periods equal the ones this test counts itself from the log's raw events (a plain
// EventLog::Scan); breakdowns partition the totals; the API answers what the library
// does; and every bad argument gets an error that says what to do.
#include "analysis/stats.h"

#include <httplib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "analysis/progress.h"
#include "api/http_server.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/evaluation.h"
#include "projections/rules/compile.h"
#include "projections/rules/rules_stage.h"
#include "projections/views/views.h"
#include "projections/workflow.h"
#include "tests/testing/temp_dir.h"

namespace cityops {
namespace {

using kernel::EventLog;
using kernel::Partition;
using projections::CommandKind;

const absl::Time kT0 = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21T14:13:20Z
constexpr uint32_t kPartitions = 2;
constexpr char kViewerToken[] = "viewer-token-0123456789";

constexpr char kRules[] = R"(name: stats-test
report_linking: {window: 6h, max_distance_m: 500}
categories:
  - category: {code: "A0101", name: "Road damage"}
    department: road-bureau
    deadlines: {register_within: 30m, dispatch_within: 30m, handle_within: 2h, verify_within: 1h, close_within: 1h}
  - category: {code: "B0201", name: "Noise"}
    department: environment-bureau
    deadlines: {register_within: 1h, dispatch_within: 1h, handle_within: 4h, verify_within: 2h, close_within: 2h}
  - category: {code: "E0111", name: "Road waterlogging"}
    department: water-authority
    deadlines: {register_within: 30m, dispatch_within: 30m, handle_within: 4h, verify_within: 1h, close_within: 1h}
default_deadlines: {register_within: 2h, dispatch_within: 4h, handle_within: 1d, verify_within: 1d, close_within: 1d}
rules:
  - id: flood
    device_kind: flood_gauge
    severity: minor
    threshold:
      raise: {all: [{metric: water_depth_cm, at_least: 15}]}
      clear: {all: [{metric: water_depth_cm, below: 10}]}
    case:
      open_case: true
      category: {code: "E0111", name: "Road waterlogging"}
      department: water-authority
      dispatch_level: street_center
      deadlines: {dispatch_within: 10m, handle_within: 1h}
      auto_register: true
      verification_window: 10m
)";

// Where the reports come from: four grids of three streets in two districts.
const std::vector<std::string> kGrids = {"310104001001001", "310104001002003", "310104002001001",
                                         "310105003001002"};
const char kGaugeGrid[] = "310105003002001";  // Flood gauges; no random report goes there.
const std::vector<std::string> kCategories = {"A0101", "B0201", "E0111", "X9999"};

std::string DepartmentOf(const std::string& category) {
  if (category == "A0101") return "road-bureau";
  if (category == "B0201") return "environment-bureau";  // The slow one.
  if (category == "E0111") return "water-authority";
  return "parks-bureau";
}

v1::Actor Operator(v1::GridLevel level, const std::string& code, const std::string& user,
                   v1::Role role = v1::ROLE_OPERATOR) {
  v1::Actor a;
  a.set_user(user);
  a.set_role(role);
  a.mutable_unit()->set_level(level);
  a.mutable_unit()->set_code(code);
  return a;
}
v1::Actor StreetOperator(const std::string& grid) {
  return Operator(v1::GRID_LEVEL_STREET_CENTER, grid.substr(0, 9), "street." + grid.substr(6, 3));
}
v1::Actor DistrictOperator(const std::string& grid) {
  return Operator(v1::GRID_LEVEL_DISTRICT_CENTER, grid.substr(0, 6),
                  "district." + grid.substr(0, 6));
}
// The crew of `department` for the grid's district: it handles (处置) the department's
// cases there.
v1::Actor Crew(const std::string& department, const std::string& grid) {
  v1::Actor a = Operator(v1::GRID_LEVEL_DISTRICT_CENTER, grid.substr(0, 6),
                         "crew." + department + "." + grid.substr(0, 6));
  a.mutable_unit()->set_department(department);
  return a;
}

// A log like a live one: readings, ticks and reports in, the rules stage deriving, people
// acting through the workflow, in time order. Scheduled actions run at their times; before
// each, every partition ticks to that time and the rules stage catches up, so deadlines
// light cases exactly when they pass.
class City {
 public:
  City() : clock_(kT0) {
    absl::StatusOr<std::unique_ptr<EventLog>> log =
        EventLog::Open({.path = dir_.Sub("log"), .durability = kernel::Durability::kBuffered});
    REQUIRE(log.ok());
    log_ = *std::move(log);
    absl::StatusOr<rules::LoadedRuleSet> loaded = rules::LoadRuleSetText(kRules, "stats.yaml");
    REQUIRE(loaded.ok());
    Append(0, rules::RulesetActivatedEvent(*loaded, kT0));
    for (int g = 0; g < 3; ++g) RegisterGauge(absl::StrFormat("gauge-%d", g), g % kPartitions);
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open({.log = log_.get(), .partitions = kPartitions});
    REQUIRE(stage.ok());
    stage_ = *std::move(stage);
    workflow_ = std::make_unique<projections::CaseWorkflow>(projections::CaseWorkflow::Options{
        .log = log_.get(), .clock = &clock_, .partitions = kPartitions});
    Play();
  }

  // The log, opened again if Close() let it go.
  EventLog& log() {
    if (log_ == nullptr) {
      absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open({.path = dir_.Sub("log")});
      REQUIRE(log.ok());
      log_ = *std::move(log);
    }
    return *log_;
  }
  kernel::ManualClock& clock() { return clock_; }
  std::string log_dir() const { return dir_.Sub("log"); }
  std::string views_dir() const { return dir_.Sub("views"); }
  absl::Time end() const { return end_; }
  // Closes the log (the analyst's copy is then free for `RunStats`).
  void Close() {
    stage_.reset();
    workflow_.reset();
    log_.reset();
  }

 private:
  struct Action {
    absl::Time at;
    int order;  // Ties in scheduling order.
    std::function<void()> run;
    bool operator>(const Action& o) const { return at != o.at ? at > o.at : order > o.order; }
  };

  void At(absl::Time t, std::function<void()> run) {
    queue_.push({t, next_order_++, std::move(run)});
  }

  absl::Duration Minutes(int lo, int hi) {
    return absl::Minutes(std::uniform_int_distribution<int>(lo, hi)(rng_));
  }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  void Append(uint32_t partition, v1::Event e) {
    kernel::AppendBatch batch{Partition(partition)};
    batch.Add(std::move(e));
    REQUIRE(log_->Append(std::move(batch)).ok());
  }

  void RegisterGauge(const std::string& id, uint32_t partition) {
    v1::Event e;
    e.set_stream_id("registry/" + id);
    kernel::SetTimestamp(kT0, e.mutable_event_time());
    v1::DeviceRegistered* r = e.mutable_device_registered();
    r->set_device_id(id);
    r->set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
    r->mutable_grid()->set_grid_code(kGaugeGrid);
    r->mutable_grid()->set_street_code(std::string(kGaugeGrid).substr(0, 9));
    r->mutable_grid()->set_district_code(std::string(kGaugeGrid).substr(0, 6));
    r->mutable_reporting_interval()->set_seconds(600);
    Append(partition, std::move(e));
  }

  void Depth(const std::string& id, uint32_t partition, double cm) {
    v1::Event e;
    e.set_stream_id("device/" + id);
    kernel::SetTimestamp(clock_.Now(), e.mutable_event_time());
    v1::SensorReading* r = e.mutable_reading();
    r->set_device_id(id);
    r->set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
    r->set_reading_id(absl::StrFormat("r%d", ++readings_));
    *r->mutable_event_time() = e.event_time();
    r->mutable_flood_gauge()->set_water_depth_cm(cm);
    r->mutable_flood_gauge()->set_battery_pct(90);
    Append(partition, std::move(e));
  }

  // Every partition's time moves to `t`; the rules stage lights what fell due.
  void MoveTo(absl::Time t) {
    clock_.Set(t);
    for (uint32_t p = 0; p < kPartitions; ++p) {
      v1::Event e;
      e.set_stream_id("clock");
      e.mutable_clock_tick();
      kernel::SetTimestamp(t, e.mutable_event_time());
      Append(p, std::move(e));
    }
    REQUIRE(stage_->CatchUp(/*drain=*/true).ok());
  }

  absl::StatusOr<projections::CommandResult> Do(CommandKind kind, const std::string& id,
                                                const v1::Actor& actor) {
    projections::CaseCommand c;
    c.kind = kind;
    c.case_id = id;
    c.actor = actor;
    c.department = department_[id];
    c.result = "done";
    c.note = "see to it";
    c.reason = "needs the district";
    c.passed = true;
    return workflow_->Execute(c);
  }

  void Must(CommandKind kind, const std::string& id, const v1::Actor& actor) {
    absl::StatusOr<projections::CommandResult> r = Do(kind, id, actor);
    INFO(projections::CommandName(kind) << " " << id << ": " << r.status());
    REQUIRE(r.ok());
  }

  void Report(int n, absl::Time t) {
    const std::string id = absl::StrFormat("r-%03d", n);
    const std::string grid = kGrids[n % kGrids.size()];
    const std::string category =
        kCategories[std::uniform_int_distribution<size_t>(0, kCategories.size() - 1)(rng_)];
    department_[id] = DepartmentOf(category);
    grid_[id] = grid;
    At(t, [this, id, grid, category] {
      projections::CaseCommand c;
      c.kind = CommandKind::kReport;
      c.actor = StreetOperator(grid);
      c.report.set_case_id(id);
      c.report.set_source(Chance(0.7) ? v1::CASE_SOURCE_HOTLINE_12345
                                      : v1::CASE_SOURCE_STREET_PATROL);
      c.report.mutable_grid()->set_grid_code(grid);
      c.report.mutable_category()->set_code(category);
      c.report.set_description("reported");
      REQUIRE(workflow_->Execute(c).ok());
      // The rules stage opens it as time moves on; the street registers it.
      At(clock_.Now() + Minutes(5, 75), [this, id] { Register(id); });
    });
  }

  void Register(const std::string& id) {
    // A report of the same category as an open case in its grid joined that case: it is
    // handled there (and counted there), so nobody registers it.
    absl::StatusOr<v1::CaseView> view = workflow_->Load(id);
    REQUIRE(view.ok());
    if (!view->linked_to().empty()) return;
    Must(CommandKind::kRegister, id, StreetOperator(grid_[id]));
    At(clock_.Now() + Minutes(5, 80), [this, id] { Dispatch(id, /*escalated=*/false); });
  }

  void Dispatch(const std::string& id, bool escalated) {
    const std::string& grid = grid_[id];
    if (!escalated && Chance(0.15)) {  // The street cannot solve it: to the district.
      Must(CommandKind::kEscalate, id, StreetOperator(grid));
      At(clock_.Now() + Minutes(10, 60), [this, id] { Dispatch(id, /*escalated=*/true); });
      return;
    }
    Must(CommandKind::kDispatch, id,
         escalated || Chance(0.25) ? DistrictOperator(grid) : StreetOperator(grid));
    Handle(id);
  }

  void Handle(const std::string& id) {
    // The environment bureau drags: often past its 4 h, and gets urged.
    const bool slow = department_[id] == "environment-bureau";
    const absl::Duration after = slow ? Minutes(120, 560) : Minutes(20, 150);
    if (after > absl::Hours(3)) {
      At(clock_.Now() + absl::Hours(3), [this, id] {
        Must(CommandKind::kUrge, id,
             Operator(v1::GRID_LEVEL_DISTRICT_CENTER, grid_[id].substr(0, 6), "chief",
                      v1::ROLE_SUPERVISOR));
      });
    }
    At(clock_.Now() + after, [this, id] {
      Must(CommandKind::kHandle, id, Crew(department_[id], grid_[id]));
      At(clock_.Now() + Minutes(10, 80), [this, id] { Verify(id); });
    });
  }

  void Verify(const std::string& id) {
    projections::CaseCommand c;
    c.kind = CommandKind::kVerify;
    c.case_id = id;
    c.actor = StreetOperator(grid_[id]);  // The originator: the reporting street center.
    c.passed = !Chance(0.15);
    c.note = "still broken";
    REQUIRE(workflow_->Execute(c).ok());
    if (!c.passed) {
      Handle(id);
      return;
    }
    At(clock_.Now() + Minutes(10, 90),
       [this, id] { Must(CommandKind::kClose, id, StreetOperator(grid_[id])); });
  }

  // A flood at a gauge: the rule opens and registers the case; the street dispatches it
  // and the water authority's crew handles it; the water goes down and the rule verifies
  // and closes it.
  void Flood(int gauge, absl::Time t, bool linked_report) {
    const std::string device = absl::StrFormat("gauge-%d", gauge);
    const uint32_t p = gauge % kPartitions;
    At(t, [this, device, p] { Depth(device, p, 25); });
    At(t + absl::Minutes(2), [this, device] {
      const std::string id = FindCase(device);
      department_[id] = "water-authority";
      grid_[id] = kGaugeGrid;
      Must(CommandKind::kDispatch, id, StreetOperator(kGaugeGrid));
    });
    if (linked_report) {
      // A citizen calls about the same water: the report joins the IoT case.
      At(t + absl::Minutes(5), [this] {
        projections::CaseCommand c;
        c.kind = CommandKind::kReport;
        c.actor = StreetOperator(kGaugeGrid);
        c.report.set_case_id("r-linked");
        c.report.set_source(v1::CASE_SOURCE_HOTLINE_12345);
        c.report.mutable_grid()->set_grid_code(kGaugeGrid);
        c.report.mutable_category()->set_code("E0111");
        REQUIRE(workflow_->Execute(c).ok());
      });
    }
    At(t + absl::Minutes(40), [this, device] {
      Must(CommandKind::kHandle, FindCase(device), Crew("water-authority", kGaugeGrid));
    });
    At(t + absl::Minutes(45), [this, device, p] { Depth(device, p, 4); });
    At(t + absl::Minutes(60), [this, device, p] { Depth(device, p, 3); });
  }

  // The open IoT case of `device`.
  std::string FindCase(const std::string& device) {
    std::string found;
    REQUIRE(log_->ListStreams("case/iot-",
                              [&](std::string_view id, kernel::StreamVersion) {
                                if (id.find(device) != std::string_view::npos)
                                  found = std::string(id.substr(5));
                                return true;
                              })
                .ok());
    REQUIRE(!found.empty());
    return found;
  }

  void Play() {
    // 60 reports over three days, more by day than by night.
    for (int n = 0; n < 60; ++n) {
      Report(n, kT0 + absl::Minutes(std::uniform_int_distribution<int>(10, 3 * 24 * 60)(rng_)));
    }
    Flood(0, kT0 + absl::Hours(5), /*linked_report=*/true);
    Flood(1, kT0 + absl::Hours(30), false);
    Flood(2, kT0 + absl::Hours(60), false);
    end_ = kT0 + absl::Hours(80);
    while (!queue_.empty() && queue_.top().at < end_) {
      Action a = queue_.top();
      queue_.pop();
      MoveTo(a.at);
      a.run();
    }
    MoveTo(end_);
  }

  testing::TempDir dir_;
  kernel::ManualClock clock_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<rules::RulesStage> stage_;
  std::unique_ptr<projections::CaseWorkflow> workflow_;
  std::mt19937_64 rng_{16};
  std::priority_queue<Action, std::vector<Action>, std::greater<Action>> queue_;
  int next_order_ = 0;
  int readings_ = 0;
  std::map<std::string, std::string> department_, grid_;
  absl::Time end_;
};

// ------------------------------------------------------------------------------------------
// The figures, counted by this test from the raw events (docs/analysis.md, "stats").

struct Counted {
  uint64_t found = 0, filed = 0, due = 0, closed = 0, closed_on_time = 0, found_closed = 0;
  uint64_t yellow = 0, red = 0, urges = 0, escalations = 0, street = 0, district = 0;
  uint64_t open = 0, open_yellow = 0, open_red = 0;
  std::vector<absl::Duration> handling;
  std::map<int, std::vector<absl::Duration>> stage;
};

absl::Duration NearestRank(std::vector<absl::Duration> d, double p) {
  std::sort(d.begin(), d.end());
  size_t r = static_cast<size_t>(std::ceil(p / 100 * static_cast<double>(d.size())));
  r = std::max<size_t>(r, 1);
  return d[r - 1];
}

// Equal to the nanosecond the protobuf Duration keeps.
bool Close(absl::Duration a, absl::Duration b) {
  return absl::AbsDuration(a - b) < absl::Nanoseconds(1);
}

absl::Duration Mean(const std::vector<absl::Duration>& d) {
  absl::Duration sum;
  for (absl::Duration x : d) sum += x;
  return sum / static_cast<int64_t>(d.size());
}

struct Expected {
  Counted total;
  std::map<std::string, Counted> by;                     // Group key -> figures.
  std::map<std::string, std::vector<uint64_t>> hotline;  // Category -> per-bucket counts.
};

absl::Duration Allowance(const v1::StageDeadlines& d, v1::CaseStage stage) {
  const google::protobuf::Duration* a = nullptr;
  if (stage == v1::CASE_STAGE_DISCOVERED) a = &d.register_within();
  if (stage == v1::CASE_STAGE_REGISTERED) a = &d.dispatch_within();
  if (stage == v1::CASE_STAGE_DISPATCHED) a = &d.handle_within();
  if (stage == v1::CASE_STAGE_HANDLED) a = &d.verify_within();
  if (stage == v1::CASE_STAGE_VERIFIED) a = &d.close_within();
  return a == nullptr ? absl::ZeroDuration() : kernel::FromDurationProto(*a);
}

Expected Count(const EventLog& log, absl::Time from, absl::Time to, const std::string& by) {
  // Every case event of the log, by case, in stream order.
  std::map<std::string, std::map<uint64_t, v1::Event>> cases;
  for (Partition p : log.Partitions()) {
    REQUIRE(log.Scan(p, kernel::Sequence(0),
                     [&](kernel::Sequence seq, std::string_view value) {
                       v1::Event e;
                       REQUIRE(EventLog::ParseEvent({p, seq}, value, &e).ok());
                       if (e.stream_id().rfind("case/", 0) == 0) {
                         cases[e.stream_id()][e.stream_version()] = e;
                       }
                       return true;
                     })
                .ok());
  }
  const bool hourly = to - from < absl::Hours(48);
  const absl::Duration bucket = hourly ? absl::Hours(1) : absl::Hours(24);
  const size_t buckets = static_cast<size_t>(absl::Ceil(to - from, bucket) / bucket);
  auto in = [&](absl::Time t) { return t >= from && t < to; };

  Expected out;
  for (const auto& [stream, events] : cases) {
    Counted c;
    bool exists = false, linked = false, closed = false, ever_overdue = false;
    bool any_street = false, any_district = false, any_filed = false, any_due = false;
    absl::Time discovered;
    std::string grid, category, department;
    v1::CaseSource source = v1::CASE_SOURCE_UNSPECIFIED;
    v1::GridLevel level = v1::GRID_LEVEL_UNSPECIFIED;
    v1::StageDeadlines deadlines;
    v1::CaseStage stage = v1::CASE_STAGE_UNSPECIFIED;
    absl::Time entered;
    v1::OverdueLevel light = v1::OVERDUE_LEVEL_UNSPECIFIED;  // Of the current stage.
    std::vector<std::pair<v1::CaseStage, absl::Time>> entries;
    auto enter = [&](v1::CaseStage s, absl::Time t) {
      stage = s;
      entered = t;
      light = v1::OVERDUE_LEVEL_UNSPECIFIED;
      if (s != v1::CASE_STAGE_CLOSED) entries.emplace_back(s, t);
    };
    for (const auto& [version, e] : events) {
      const absl::Time t = kernel::FromTimestamp(e.event_time());
      if (t >= to) continue;
      switch (e.payload_case()) {
        case v1::Event::kCaseReported:
          exists = true;
          discovered = t;
          grid = e.case_reported().grid().grid_code();
          category = e.case_reported().category().code();
          source = e.case_reported().source();
          enter(v1::CASE_STAGE_DISCOVERED, t);
          break;
        case v1::Event::kCaseOpened:
          level = e.case_opened().dispatch_level();
          deadlines = e.case_opened().deadlines();
          if (!exists) {
            exists = true;
            discovered = t;
            grid = e.case_opened().grid().grid_code();
            category = e.case_opened().category().code();
            source = e.case_opened().source();
            enter(v1::CASE_STAGE_DISCOVERED, t);
          }
          break;
        case v1::Event::kCaseRegistered:
          any_filed |= in(t);
          enter(v1::CASE_STAGE_REGISTERED, t);
          break;
        case v1::Event::kCaseDispatched: {
          department = e.case_dispatched().department();
          const v1::GridLevel who =
              e.provenance().has_actor() ? e.provenance().actor().unit().level() : level;
          any_district |= in(t) && who == v1::GRID_LEVEL_DISTRICT_CENTER;
          enter(v1::CASE_STAGE_DISPATCHED, t);
          break;
        }
        case v1::Event::kCaseHandled:
          any_street |= in(t) && level <= v1::GRID_LEVEL_STREET_CENTER;
          enter(v1::CASE_STAGE_HANDLED, t);
          break;
        case v1::Event::kCaseVerified:
          enter(e.case_verified().passed() ? v1::CASE_STAGE_VERIFIED : v1::CASE_STAGE_DISPATCHED,
                t);
          break;
        case v1::Event::kCaseClosed:
          if (in(t)) {
            c.closed = 1;
            c.closed_on_time = ever_overdue ? 0 : 1;
            c.handling.push_back(kernel::FromDurationProto(e.case_closed().total_handling_time()));
            for (const v1::StageDuration& d : e.case_closed().stage_durations()) {
              c.stage[d.stage()].push_back(kernel::FromDurationProto(d.duration()));
            }
          }
          closed = true;
          enter(v1::CASE_STAGE_CLOSED, t);
          break;
        case v1::Event::kCaseUrged:
          c.urges += in(t);
          break;
        case v1::Event::kCaseEscalated:
          c.escalations += in(t);
          level = e.case_escalated().to_level();
          enter(v1::CASE_STAGE_REGISTERED, t);
          break;
        case v1::Event::kCaseOverdue:
          ever_overdue = true;
          light = std::max(light, e.case_overdue().level());
          c.yellow += in(t) && e.case_overdue().level() == v1::OVERDUE_LEVEL_YELLOW;
          c.red += in(t) && e.case_overdue().level() == v1::OVERDUE_LEVEL_RED;
          break;
        case v1::Event::kCaseLinked:
          linked |= e.case_linked().has_into_case_id();
          break;
        default:
          break;
      }
    }
    if (!exists || linked) continue;
    // A deadline falls in the period: a stage entered at t with allowance a is due at t + a.
    for (const auto& [s, t] : entries) {
      const absl::Duration a = Allowance(deadlines, s);
      any_due |= a > absl::ZeroDuration() && in(t + a);
    }
    (void)entered;
    c.found = in(discovered);
    c.filed = any_filed;
    c.due = any_due;
    c.found_closed = c.found && closed;
    c.street = any_street;
    c.district = any_district;
    c.open = !closed;
    c.open_yellow = !closed && light == v1::OVERDUE_LEVEL_YELLOW;
    c.open_red = !closed && light == v1::OVERDUE_LEVEL_RED;
    const bool any = c.found || c.filed || c.due || c.closed || c.street || c.district || c.open ||
                     c.yellow || c.red || c.urges || c.escalations;
    if (!any) continue;
    auto add = [](Counted& to_, const Counted& x) {
      to_.found += x.found;
      to_.filed += x.filed;
      to_.due += x.due;
      to_.closed += x.closed;
      to_.closed_on_time += x.closed_on_time;
      to_.found_closed += x.found_closed;
      to_.yellow += x.yellow;
      to_.red += x.red;
      to_.urges += x.urges;
      to_.escalations += x.escalations;
      to_.street += x.street;
      to_.district += x.district;
      to_.open += x.open;
      to_.open_yellow += x.open_yellow;
      to_.open_red += x.open_red;
      to_.handling.insert(to_.handling.end(), x.handling.begin(), x.handling.end());
      for (const auto& [s, d] : x.stage)
        to_.stage[s].insert(to_.stage[s].end(), d.begin(), d.end());
    };
    add(out.total, c);
    std::string key;
    if (by == "department") key = department;
    if (by == "district") key = grid.substr(0, 6);
    if (by == "category") key = category;
    if (by == "source") {
      key = source == v1::CASE_SOURCE_HOTLINE_12345   ? "hotline_12345"
            : source == v1::CASE_SOURCE_IOT_RULE      ? "iot_rule"
            : source == v1::CASE_SOURCE_STREET_PATROL ? "street_patrol"
                                                      : "other";
    }
    if (!by.empty()) add(out.by[key], c);
    if (c.found && source == v1::CASE_SOURCE_HOTLINE_12345) {
      std::vector<uint64_t>& counts = out.hotline[category];
      counts.resize(buckets);
      ++counts[static_cast<size_t>((discovered - from) / bucket)];
    }
  }
  return out;
}

void RequireEqual(const Counted& want, const v1::EvaluationFigures& got) {
  CHECK(got.found() == want.found);
  CHECK(got.filed() == want.filed);
  CHECK(got.due() == want.due);
  CHECK(got.closed() == want.closed);
  CHECK(got.closed_on_time() == want.closed_on_time);
  CHECK(got.found_closed() == want.found_closed);
  CHECK(got.has_close_rate() == (want.found > 0));
  if (want.found > 0) {
    CHECK(got.close_rate() == Approx(static_cast<double>(want.found_closed) / want.found));
  }
  CHECK(got.has_on_time_close_rate() == (want.closed > 0));
  if (want.closed > 0) {
    CHECK(got.on_time_close_rate() ==
          Approx(static_cast<double>(want.closed_on_time) / want.closed));
  }
  CHECK(got.yellow_lights() == want.yellow);
  CHECK(got.red_lights() == want.red);
  CHECK(got.urges() == want.urges);
  CHECK(got.escalations() == want.escalations);
  CHECK(got.handled_at_street_level() == want.street);
  CHECK(got.dispatched_by_district() == want.district);
  CHECK(got.open() == want.open);
  CHECK(got.open_yellow() == want.open_yellow);
  CHECK(got.open_red() == want.open_red);
  CHECK(got.handling_time().count() == want.handling.size());
  if (!want.handling.empty()) {
    CHECK(Close(kernel::FromDurationProto(got.handling_time().mean()), Mean(want.handling)));
    CHECK(kernel::FromDurationProto(got.handling_time().p50()) == NearestRank(want.handling, 50));
    CHECK(kernel::FromDurationProto(got.handling_time().p90()) == NearestRank(want.handling, 90));
  }
  REQUIRE(got.stage_times_size() == 5);
  for (const v1::StageTime& s : got.stage_times()) {
    INFO("stage " << v1::CaseStage_Name(s.stage()));
    auto it = want.stage.find(s.stage());
    const std::vector<absl::Duration> d =
        it == want.stage.end() ? std::vector<absl::Duration>() : it->second;
    CHECK(s.time().count() == d.size());
    if (d.empty()) continue;
    CHECK(Close(kernel::FromDurationProto(s.time().mean()), Mean(d)));
    CHECK(kernel::FromDurationProto(s.time().p50()) == NearestRank(d, 50));
    CHECK(kernel::FromDurationProto(s.time().p90()) == NearestRank(d, 90));
  }
}

absl::StatusOr<v1::Evaluation> Evaluate(const EventLog& log, absl::Time from, absl::Time to,
                                        const std::string& by = "") {
  projections::EvaluationRequest r;
  r.from = from;
  r.to = to;
  r.by = by;
  return projections::Evaluate(log, r);
}

City& TheCity() {
  // Destroyed at exit, which removes its directory.
  static const std::unique_ptr<City> city = std::make_unique<City>();
  return *city;
}

struct Period {
  const char* name;
  absl::Time from, to;
};
std::vector<Period> Periods() {
  return {{"the whole log", kT0 - absl::Hours(1), kT0 + absl::Hours(81)},
          {"the second day", kT0 + absl::Hours(24), kT0 + absl::Hours(48)},
          {"36 hours from the first evening", kT0 + absl::Hours(6), kT0 + absl::Hours(42)},
          {"the third day and after", kT0 + absl::Hours(48), kT0 + absl::Hours(96)}};
}

TEST_CASE("stats over a period equal the figures counted from the log's raw events", "[stats]") {
  City& city = TheCity();
  for (const Period& period : Periods()) {
    INFO("period: " << period.name);
    absl::StatusOr<v1::Evaluation> e = Evaluate(city.log(), period.from, period.to);
    REQUIRE(e.ok());
    const Expected want = Count(city.log(), period.from, period.to, "");
    RequireEqual(want.total, e->total());
    // The hotline's categories over time.
    const absl::Duration bucket = kernel::FromDurationProto(e->hotline().bucket());
    CHECK(bucket == (period.to - period.from < absl::Hours(48) ? absl::Hours(1) : absl::Hours(24)));
    CHECK(kernel::FromTimestamp(e->hotline().bucket_starts(0)) == period.from);
    std::map<std::string, std::vector<uint64_t>> got;
    for (const v1::HotlineCategorySeries& s : e->hotline().categories()) {
      got[s.category().code()] = {s.counts().begin(), s.counts().end()};
      uint64_t sum = 0;
      for (uint64_t n : s.counts()) sum += n;
      CHECK(sum == s.total());
    }
    CHECK(got == want.hotline);
  }
}

TEST_CASE("the log is realistic: every figure is exercised", "[stats]") {
  const Expected all = Count(TheCity().log(), kT0 - absl::Hours(1), kT0 + absl::Hours(81), "");
  CHECK(all.total.found >= 40);  // 60 reports and 3 floods, less those that joined a case.
  CHECK(all.total.closed >= 30);
  CHECK(all.total.closed_on_time > 0);
  CHECK(all.total.closed_on_time < all.total.closed);
  CHECK(all.total.yellow > 0);
  CHECK(all.total.red > 0);
  CHECK(all.total.urges > 0);
  CHECK(all.total.escalations > 0);
  CHECK(all.total.street > 0);
  CHECK(all.total.district > 0);
  CHECK(all.total.open > 0);
  CHECK(all.total.due > 0);
  CHECK(all.hotline.size() >= 3);
  // The citizen's call about the flood joined the gauge's case instead of opening one.
  absl::StatusOr<std::vector<v1::Event>> linked =
      TheCity().log().ReadStream("case/r-linked", kernel::StreamVersion(1), 100);
  REQUIRE(linked.ok());
  bool joined = false;
  for (const v1::Event& e : *linked)
    joined |= e.has_case_linked() && e.case_linked().has_into_case_id();
  CHECK(joined);
}

TEST_CASE("breakdowns by department, district, category and source partition the totals",
          "[stats]") {
  City& city = TheCity();
  const Period period = Periods()[0];
  for (const std::string by : {"department", "district", "category", "source", "unit", "street"}) {
    INFO("by " << by);
    absl::StatusOr<v1::Evaluation> e = Evaluate(city.log(), period.from, period.to, by);
    REQUIRE(e.ok());
    REQUIRE(e->groups_size() > 1);
    uint64_t found = 0, filed = 0, due = 0, closed = 0, on_time = 0, yellow = 0, red = 0;
    uint64_t urges = 0, escalations = 0, open = 0, open_red = 0, handled = 0;
    for (const v1::EvaluationGroup& g : e->groups()) {
      const v1::EvaluationFigures& f = g.figures();
      found += f.found();
      filed += f.filed();
      due += f.due();
      closed += f.closed();
      on_time += f.closed_on_time();
      yellow += f.yellow_lights();
      red += f.red_lights();
      urges += f.urges();
      escalations += f.escalations();
      open += f.open();
      open_red += f.open_red();
      handled += f.handling_time().count();
    }
    const v1::EvaluationFigures& t = e->total();
    CHECK(found == t.found());
    CHECK(filed == t.filed());
    CHECK(due == t.due());
    CHECK(closed == t.closed());
    CHECK(on_time == t.closed_on_time());
    CHECK(yellow == t.yellow_lights());
    CHECK(red == t.red_lights());
    CHECK(urges == t.urges());
    CHECK(escalations == t.escalations());
    CHECK(open == t.open());
    CHECK(open_red == t.open_red());
    CHECK(handled == t.handling_time().count());
    // And each group is what the test counts for it.
    if (by == "department" || by == "district" || by == "category" || by == "source") {
      const Expected want = Count(city.log(), period.from, period.to, by);
      REQUIRE(static_cast<size_t>(e->groups_size()) == want.by.size());
      for (const v1::EvaluationGroup& g : e->groups()) {
        INFO("group " << g.key());
        REQUIRE(want.by.contains(g.key()));
        RequireEqual(want.by.at(g.key()), g.figures());
      }
    }
  }
}

TEST_CASE("by department, the one that drags comes first (worst on-time close rate)", "[stats]") {
  const Period period = Periods()[0];
  absl::StatusOr<v1::Evaluation> e =
      Evaluate(TheCity().log(), period.from, period.to, "department");
  REQUIRE(e.ok());
  REQUIRE(e->groups_size() >= 4);
  // The environment bureau handles late by design (see City::Handle).
  CHECK(e->groups(0).key() == "environment-bureau");
  for (int i = 1; i < e->groups_size(); ++i) {
    const v1::EvaluationFigures& a = e->groups(i - 1).figures();
    const v1::EvaluationFigures& b = e->groups(i).figures();
    if (a.has_on_time_close_rate() && b.has_on_time_close_rate()) {
      CHECK(a.on_time_close_rate() <= b.on_time_close_rate());
    } else {
      CHECK((a.has_on_time_close_rate() || !b.has_on_time_close_rate()));
    }
  }
}

TEST_CASE("cityops stats prints the table and the same figures as JSON", "[stats]") {
  City& city = TheCity();
  const Period period = Periods()[1];
  absl::StatusOr<v1::Evaluation> direct =
      Evaluate(city.log(), period.from, period.to, "department");
  REQUIRE(direct.ok());
  city.Close();
  analysis::StatsOptions options;
  options.data_dir = city.log_dir();
  options.from = absl::FormatTime(absl::RFC3339_full, period.from, absl::UTCTimeZone());
  options.to = absl::FormatTime(absl::RFC3339_full, period.to, absl::UTCTimeZone());
  options.by = "department";
  std::ostringstream table, progress;
  REQUIRE(analysis::RunStats(options, table, progress).ok());
  CHECK(table.str().find("By department, worst on-time close rate first") != std::string::npos);
  CHECK(table.str().find("environment-bureau") != std::string::npos);
  CHECK(table.str().find("12345 hotline cases found, by category, per hour") != std::string::npos);
  CHECK(progress.str().find("stats: ") != std::string::npos);
  CHECK(progress.str().find("cases in") != std::string::npos);

  options.json = true;
  std::ostringstream json;
  REQUIRE(analysis::RunStats(options, json, progress).ok());
  v1::Evaluation parsed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json.str(), &parsed).ok());
  CHECK(google::protobuf::util::MessageDifferencer::Equals(parsed, *direct));
}

TEST_CASE("GET /api/v1/statistics with a period answers what the library does", "[stats][api]") {
  City& city = TheCity();
  absl::StatusOr<std::unique_ptr<views::Projections>> views =
      views::Projections::Open({.log = &city.log(), .dir = city.views_dir()});
  REQUIRE(views.ok());
  REQUIRE((*views)->CatchUp().ok());
  projections::CaseWorkflow workflow({.log = &city.log(), .clock = &city.clock()});
  api::Backend backend;
  backend.log = &city.log();
  backend.views = views->get();
  backend.workflow = &workflow;
  backend.clock = &city.clock();
  backend.health = [](bool) {
    v1::HealthResponse h;
    h.set_status("ok");
    return h;
  };
  api::ServerOptions options;
  options.dashboard = false;
  v1::ApiToken token;
  token.set_token(kViewerToken);
  token.set_user("analyst");
  token.set_role(v1::ROLE_VIEWER);
  token.mutable_unit()->set_level(v1::GRID_LEVEL_CITY_CENTER);
  token.mutable_unit()->set_code("city");
  options.tokens.push_back(token);
  absl::StatusOr<std::unique_ptr<api::HttpServer>> server =
      api::HttpServer::Start(options, backend);
  REQUIRE(server.ok());
  httplib::Client client("127.0.0.1", (*server)->port());
  const httplib::Headers auth = {{"Authorization", std::string("Bearer ") + kViewerToken}};
  auto get = [&](const std::string& path) {
    httplib::Result r = client.Get(path, auth);
    REQUIRE(r);
    return *r;
  };

  SECTION("without parameters it answers as before: the counters, no evaluation") {
    httplib::Response r = get("/api/v1/statistics");
    CHECK(r.status == 200);
    CHECK(r.body.find("evaluation") == std::string::npos);
    CHECK(r.body.find("casesTotal") != std::string::npos);
  }
  SECTION("with from, to and by it adds the library's figures") {
    for (const Period& period : Periods()) {
      for (const std::string by : {"", "department", "district"}) {
        INFO(period.name << " by '" << by << "'");
        const std::string path =
            absl::StrFormat("/api/v1/statistics?from=%s&to=%s%s",
                            absl::FormatTime(absl::RFC3339_full, period.from, absl::UTCTimeZone()),
                            absl::FormatTime(absl::RFC3339_full, period.to, absl::UTCTimeZone()),
                            by.empty() ? "" : "&by=" + by);
        httplib::Response r = get(path);
        REQUIRE(r.status == 200);
        v1::Statistics s;
        REQUIRE(google::protobuf::util::JsonStringToMessage(r.body, &s).ok());
        absl::StatusOr<v1::Evaluation> direct = Evaluate(city.log(), period.from, period.to, by);
        REQUIRE(direct.ok());
        CHECK(google::protobuf::util::MessageDifferencer::Equals(s.evaluation(), *direct));
        CHECK(s.cases_total() > 0);  // The counters are still there.
      }
    }
  }
  SECTION("over the whole log the evaluation agrees with the read models' counters") {
    absl::StatusOr<v1::Statistics> counters = (*views)->GetStatistics();
    REQUIRE(counters.ok());
    absl::StatusOr<v1::Evaluation> e = Evaluate(city.log(), Periods()[0].from, Periods()[0].to);
    REQUIRE(e.ok());
    CHECK(e->total().found() == counters->cases_total());
    CHECK(e->total().closed() == counters->closed());
    CHECK(e->total().closed_on_time() == counters->closed_on_time());
    CHECK(e->total().open_yellow() == counters->overdue_yellow());
    CHECK(e->total().open_red() == counters->overdue_red());
    CHECK(e->total().open() == counters->cases_total() - counters->closed());
  }
  SECTION("by alone evaluates from the log's start to now (the daemon's clock)") {
    httplib::Response r = get("/api/v1/statistics?by=department&scope=310104");
    REQUIRE(r.status == 200);
    v1::Statistics s;
    REQUIRE(google::protobuf::util::JsonStringToMessage(r.body, &s).ok());
    CHECK(kernel::FromTimestamp(s.evaluation().to()) == city.clock().Now());
    CHECK(kernel::FromTimestamp(s.evaluation().from()) <= kT0);
    CHECK(s.evaluation().scope() == "310104");
    CHECK(s.evaluation().groups_size() > 0);
  }
  SECTION("bad parameters are 400 or 404 with a message that says what to do") {
    httplib::Response r = get("/api/v1/statistics?by=weather");
    CHECK(r.status == 400);
    CHECK(r.body.find("use one of district, street, department") != std::string::npos);
    r = get("/api/v1/statistics?from=2026-09-23T00:00:00Z&to=2026-09-22T00:00:00Z");
    CHECK(r.status == 400);
    CHECK(r.body.find("is not after 'from'") != std::string::npos);
    r = get("/api/v1/statistics?from=yesterday");
    CHECK(r.status == 400);
    CHECK(r.body.find("RFC 3339") != std::string::npos);
    r = get("/api/v1/statistics?scope=310199");
    CHECK(r.status == 404);
    CHECK(r.body.find("310104, 310105") != std::string::npos);
    r = get("/api/v1/statistics?department=fire-brigade");
    CHECK(r.status == 404);
    CHECK(r.body.find("environment-bureau") != std::string::npos);
    r = get("/api/v1/statistics?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z");
    CHECK(r.status == 400);
    CHECK(r.body.find("before the log") != std::string::npos);
    r = get("/api/v1/statistics?period=week");
    CHECK(r.status == 400);
    CHECK(r.body.find("unknown query parameter 'period'") != std::string::npos);
  }
  (*server)->Stop();
}

TEST_CASE("stats refuses bad arguments with what to do", "[stats]") {
  City& city = TheCity();
  analysis::StatsOptions options;
  options.data_dir = city.log_dir();
  options.from = "2026-09-22T00:00:00Z";
  options.to = "2026-09-23T00:00:00Z";
  std::ostringstream out, progress;

  SECTION("a log another process (or this one) holds") {
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(s.message()), Catch::Contains("in use") &&
                                             Catch::Contains("cityops log backup") &&
                                             Catch::Contains("GET /api/v1/statistics"));
    return;
  }
  city.Close();
  SECTION("--to before --from") {
    options.to = "2026-09-21T00:00:00Z";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()),
               Catch::Contains("--to 2026-09-21T00:00:00Z is not after --from"));
  }
  SECTION("a time that is not RFC 3339") {
    options.from = "22.9.2026";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("--from '22.9.2026' is not an RFC 3339"));
  }
  SECTION("a period before the log") {
    options.from = "2026-01-01T00:00:00Z";
    options.to = "2026-02-01T00:00:00Z";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kOutOfRange);
    CHECK_THAT(std::string(s.message()),
               Catch::Contains("lies before the log, which covers 2026-09-21T14:13:20Z") &&
                   Catch::Contains("choose a period within it"));
  }
  SECTION("a period after the log") {
    options.from = "2027-01-01T00:00:00Z";
    options.to = "2027-02-01T00:00:00Z";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kOutOfRange);
    CHECK_THAT(std::string(s.message()), Catch::Contains("lies after the log"));
  }
  SECTION("an unknown --by") {
    options.by = "weather";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()),
               Catch::Contains("cannot break the figures down by 'weather': use one of district, "
                               "street, department, unit, category, source"));
  }
  SECTION("a scope that is no place code") {
    options.scope = "xuhui";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("give a district (6 digits"));
  }
  SECTION("a unit (scope) that is not in the log") {
    options.scope = "310199001";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(s.message()),
               Catch::Contains("no case and no registered device") &&
                   Catch::Contains("the districts in this log are 310104, 310105"));
  }
  SECTION("a scope with devices but no cases is a place, with zero figures") {
    options.scope = kGaugeGrid;
    options.from = "2026-09-21T15:00:00Z";
    options.to = "2026-09-21T16:00:00Z";
    REQUIRE(analysis::RunStats(options, out, progress).ok());
  }
  SECTION("an unknown department") {
    options.department = "fire-brigade";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(s.message()), Catch::Contains("never dispatched to department "
                                                         "'fire-brigade'") &&
                                             Catch::Contains("environment-bureau"));
  }
  SECTION("no log at all") {
    options.data_dir = city.log_dir() + "-missing";
    absl::Status s = analysis::RunStats(options, out, progress);
    CHECK(s.code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(s.message()), Catch::Contains("no event log at"));
  }
  SECTION("Ctrl-C stops it and prints nothing") {
    analysis::StopScope outer;  // Stands for the signal handler of the running command.
    analysis::RequestStop();
    absl::Status s = analysis::RunStats(options, out, progress);
    analysis::ClearStopRequest();
    CHECK(s.code() == absl::StatusCode::kCancelled);
    CHECK_THAT(std::string(s.message()), Catch::Contains("nothing printed"));
  }
  CHECK(out.str().empty() == (options.scope != kGaugeGrid));
}

TEST_CASE("the daemon's cache of case events gives the same figures and follows new events",
          "[stats]") {
  City& city = TheCity();
  const Period period = Periods()[0];
  for (size_t capacity : {size_t{500'000}, size_t{40}}) {  // All cached; mostly read each time.
    INFO("cache of " << capacity << " events");
    projections::CaseStreamCache cache(capacity);
    projections::EvaluationRequest r;
    r.from = period.from;
    r.to = period.to;
    r.by = "department";
    absl::StatusOr<v1::Evaluation> plain = projections::Evaluate(city.log(), r);
    REQUIRE(plain.ok());
    r.cache = &cache;
    for (int round = 0; round < 2; ++round) {
      absl::StatusOr<v1::Evaluation> cached = projections::Evaluate(city.log(), r);
      REQUIRE(cached.ok());
      CHECK(google::protobuf::util::MessageDifferencer::Equals(*cached, *plain));
    }
    CHECK(cache.events() > 0);
    CHECK(cache.events() <= capacity);
    // A supervisor urges an open case: the next answer has one urge more.
    std::string open_case;
    REQUIRE(city.log()
                .ListStreams("case/r-",
                             [&](std::string_view id, kernel::StreamVersion) {
                               absl::StatusOr<std::vector<v1::Event>> e =
                                   city.log().ReadStream(id, kernel::StreamVersion(1), 100);
                               bool closed = false, linked = false;
                               for (const v1::Event& x : *e) {
                                 closed |= x.has_case_closed();
                                 linked |= x.has_case_linked();
                               }
                               if (!closed && !linked) open_case = std::string(id.substr(5));
                               return open_case.empty();
                             })
                .ok());
    REQUIRE(!open_case.empty());
    projections::CaseWorkflow workflow({.log = &city.log(), .clock = &city.clock()});
    projections::CaseCommand urge;
    urge.kind = CommandKind::kUrge;
    urge.case_id = open_case;
    urge.actor = Operator(v1::GRID_LEVEL_CITY_CENTER, "city", "chief", v1::ROLE_SUPERVISOR);
    urge.note = "today";
    REQUIRE(workflow.Execute(urge).ok());
    absl::StatusOr<v1::Evaluation> after = projections::Evaluate(city.log(), r);
    REQUIRE(after.ok());
    CHECK(after->total().urges() == plain->total().urges() + 1);
    r.cache = nullptr;
    absl::StatusOr<v1::Evaluation> fresh = projections::Evaluate(city.log(), r);
    REQUIRE(fresh.ok());
    CHECK(google::protobuf::util::MessageDifferencer::Equals(*after, *fresh));
  }
}

TEST_CASE("a department filter keeps only its cases", "[stats]") {
  City& city = TheCity();
  projections::EvaluationRequest r;
  r.from = Periods()[0].from;
  r.to = Periods()[0].to;
  r.by = "department";
  absl::StatusOr<v1::Evaluation> all = projections::Evaluate(city.log(), r);
  REQUIRE(all.ok());
  r.department = "environment-bureau";
  absl::StatusOr<v1::Evaluation> one = projections::Evaluate(city.log(), r);
  REQUIRE(one.ok());
  REQUIRE(one->groups_size() == 1);
  CHECK(one->groups(0).key() == "environment-bureau");
  for (const v1::EvaluationGroup& g : all->groups()) {
    if (g.key() != "environment-bureau") continue;
    CHECK(google::protobuf::util::MessageDifferencer::Equals(g.figures(), one->total()));
  }
}

}  // namespace
}  // namespace cityops
