// `cityops state --at` (analysis/state_at.h): the read models folded as of a moment of a
// finished log equal the live read models captured at that moment while the log was
// being written; and every mistake a user can make gets a message saying what to do.
//
// The live run: a seeded typhoon over a small city, appended in five-minute batches as
// ingest would (readings on their device's partition, a clock tick on every partition at
// the batch's end), the rules stage and the read models caught up after each batch, and
// people's commands (urge, handle) through the case workflow between batches. At each
// chosen moment T the batch ends exactly at T (readings up to and including T, ticks at
// T), so the live read models then hold exactly the events dated up to T: that is the
// capture. At the end, the read models folded as of each T from the final log must give
// the same answers.
#include "analysis/state_at.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "analysis/progress.h"
#include "google/protobuf/util/message_differencer.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/rules_stage.h"
#include "projections/views/views.h"
#include "projections/workflow.h"
#include "sim/city.h"
#include "sim/simulator.h"
#include "tests/testing/small_city.h"
#include "tests/testing/temp_dir.h"

namespace cityops {
namespace {

using analysis::CityState;
using google::protobuf::util::MessageDifferencer;
using kernel::EventLog;
using kernel::Partition;

constexpr uint32_t kPartitions = 4;
constexpr char kReadings[] = "cityops.readings";

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

// Equal, or the first difference, named.
void RequireSame(const CityState& live, const CityState& as_of) {
  INFO("as of " << Rfc3339(live.at) << ", scope '" << live.scope << "'");
  std::string diff;
  MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  CHECK(d.Compare(live.statistics, as_of.statistics));
  CHECK(diff == "");
  REQUIRE(live.open_cases.size() == as_of.open_cases.size());
  for (size_t i = 0; i < live.open_cases.size(); ++i) {
    diff.clear();
    INFO("case " << live.open_cases[i].case_id());
    CHECK(d.Compare(live.open_cases[i], as_of.open_cases[i]));
    CHECK(diff == "");
  }
  REQUIRE(live.active_alerts.size() == as_of.active_alerts.size());
  for (size_t i = 0; i < live.active_alerts.size(); ++i) {
    diff.clear();
    INFO("alert " << live.active_alerts[i].raised().alert_id());
    CHECK(d.Compare(live.active_alerts[i], as_of.active_alerts[i]));
    CHECK(diff == "");
  }
  REQUIRE(live.devices.size() == as_of.devices.size());
  for (size_t i = 0; i < live.devices.size(); ++i) {
    INFO("devices of kind " << v1::DeviceKind_Name(live.devices[i].kind));
    CHECK(live.devices[i].kind == as_of.devices[i].kind);
    CHECK(live.devices[i].kind_id == as_of.devices[i].kind_id);
    CHECK_FALSE(live.devices[i].kind_id.empty());
    CHECK(live.devices[i].online == as_of.devices[i].online);
    CHECK(live.devices[i].offline == as_of.devices[i].offline);
  }
}

// Points $TMPDIR (where state --at puts its scratch read models) at `dir` while it lives.
class ScopedTmpdir {
 public:
  explicit ScopedTmpdir(const std::string& dir) {
    const char* old = std::getenv("TMPDIR");
    if (old != nullptr) saved_ = old;
    std::filesystem::create_directories(dir);
    ::setenv("TMPDIR", dir.c_str(), 1);
  }
  ~ScopedTmpdir() {
    if (saved_) {
      ::setenv("TMPDIR", saved_->c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
  }
  ScopedTmpdir(const ScopedTmpdir&) = delete;
  ScopedTmpdir& operator=(const ScopedTmpdir&) = delete;

 private:
  std::optional<std::string> saved_;
};

// The live city: a log written batch by batch, with the rules stage and the read models
// following it.
class LiveCity {
 public:
  explicit LiveCity(uint64_t seed)
      : city_(sim::GenerateCity(testing::SmallCity(seed, 240))),
        simulator_(city_, {.scenario = sim::Scenario::kTyphoon, .seed = seed}),
        clock_(simulator_.start()) {
    absl::StatusOr<std::unique_ptr<EventLog>> log =
        EventLog::Open({.path = dir_.Sub("log"), .durability = kernel::Durability::kBuffered});
    REQUIRE(log.ok());
    log_ = *std::move(log);
    absl::StatusOr<rules::LoadedRuleSet> rules =
        rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
    REQUIRE(rules.ok());
    std::vector<kernel::AppendBatch> batches = Batches();
    batches[0].Add(rules::RulesetActivatedEvent(*rules, simulator_.start()));
    for (size_t i = 0; i < city_.devices.size(); ++i) {
      v1::DeviceRegistered reg = city_.Registration(i);
      v1::Event e;
      e.set_stream_id("registry/" + reg.device_id());
      kernel::SetTimestamp(simulator_.start(), e.mutable_event_time());
      const uint32_t p = PartitionOf(reg.device_id());
      *e.mutable_device_registered() = std::move(reg);
      batches[p].Add(std::move(e));
    }
    REQUIRE(log_->AppendAll(std::move(batches)).ok());
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open({.log = log_.get()});
    REQUIRE(stage.ok());
    rules_ = *std::move(stage);
    absl::StatusOr<std::unique_ptr<views::Projections>> views =
        views::Projections::Open({.log = log_.get(), .dir = dir_.Sub("views")});
    REQUIRE(views.ok());
    views_ = *std::move(views);
  }

  // Appends every reading dated up to `until` (inclusive) and a clock tick at `until` on
  // every partition, then (unless told not to) runs the rules stage and the read models
  // over them.
  void AdvanceTo(absl::Time until, bool run_stages = true) {
    std::vector<kernel::AppendBatch> batches = Batches();
    v1::SensorReading reading;
    while (simulator_.Next(until + absl::Nanoseconds(1), &reading)) {
      const uint32_t p = PartitionOf(reading.device_id());
      ingest::FillReadingEvent(reading, kReadings, static_cast<int32_t>(p), offsets_[p]++, false,
                               batches[p].AddNew());
    }
    for (uint32_t p = 0; p < kPartitions; ++p) {
      v1::Event* tick = batches[p].AddNew();
      tick->set_stream_id("clock");
      tick->mutable_clock_tick();
      kernel::SetTimestamp(until, tick->mutable_event_time());
      batches[p].SetSourcePosition(kReadings, static_cast<int32_t>(p),
                                   kernel::KafkaOffset(offsets_[p]));
    }
    REQUIRE(log_->AppendAll(std::move(batches)).ok());
    now_ = until;
    if (!run_stages) return;
    REQUIRE(rules_->CatchUp(/*drain=*/true).ok());
    REQUIRE(views_->CatchUp().ok());
  }

  // People at work between batches: of the first two open cases, one is urged by a
  // city-center supervisor and the other (if dispatched) handled by its department's
  // city-wide crew, a second after the log's current time (so that nothing they do is
  // dated at a moment already captured).
  void PeopleAct() {
    clock_.Set(now_ + absl::Seconds(1));
    projections::CaseWorkflow workflow(
        {.log = log_.get(), .clock = &clock_, .partitions = kPartitions});
    views::CaseFilter open;
    absl::StatusOr<views::Page<v1::CaseView>> cases = views_->ListCases(open, 50);
    REQUIRE(cases.ok());
    int acted = 0;
    for (const v1::CaseView& c : cases->items) {
      if (!c.opened() || c.stage() == v1::CASE_STAGE_CLOSED || !c.linked_to().empty()) continue;
      projections::CaseCommand command;
      command.case_id = c.case_id();
      command.actor.set_user("li.supervisor");
      command.actor.set_role(v1::ROLE_SUPERVISOR);
      command.actor.mutable_unit()->set_level(v1::GRID_LEVEL_CITY_CENTER);
      command.request_id = absl::StrFormat("test-%d-%s", ++requests_, c.case_id());
      if (c.stage() == v1::CASE_STAGE_DISPATCHED && acted == 1) {
        command.kind = projections::CommandKind::kHandle;
        command.actor.set_user("crew." + c.dispatched_department());
        command.actor.set_role(v1::ROLE_OPERATOR);
        command.actor.mutable_unit()->set_code("city");
        command.actor.mutable_unit()->set_department(c.dispatched_department());
        command.result = "pumped out, road reopened";
      } else {
        command.kind = projections::CommandKind::kUrge;
        command.note = "typhoon: hurry";
      }
      absl::StatusOr<projections::CommandResult> r = workflow.Execute(command);
      if (r.ok()) {
        ++(command.kind == projections::CommandKind::kUrge ? urged_ : handled_);
        last_acted_case_ = c.case_id();
      }
      if (++acted == 2) break;
    }
    REQUIRE(rules_->CatchUp(/*drain=*/true).ok());
    REQUIRE(views_->CatchUp().ok());
  }

  absl::StatusOr<CityState> Capture(std::string_view scope) const {
    return analysis::ReadCityState(*views_, now_, scope);
  }

  EventLog* log() { return log_.get(); }
  void CloseLog() {
    views_.reset();
    rules_.reset();
    log_.reset();
  }
  std::string LogDir() const { return dir_.Sub("log"); }
  std::string Sub(const std::string& name) const { return dir_.Sub(name); }
  absl::Time start() const { return simulator_.start(); }
  const sim::City& city() const { return city_; }
  int urged() const { return urged_; }
  int handled() const { return handled_; }
  const std::string& last_acted_case() const { return last_acted_case_; }

 private:
  static uint32_t PartitionOf(const std::string& device_id) {
    return static_cast<uint32_t>(
        ingest::KafkaPartitionFor(device_id, static_cast<int32_t>(kPartitions)));
  }
  static std::vector<kernel::AppendBatch> Batches() {
    std::vector<kernel::AppendBatch> batches;
    for (uint32_t p = 0; p < kPartitions; ++p) batches.emplace_back(Partition(p));
    return batches;
  }

  testing::TempDir dir_;
  sim::City city_;
  sim::Simulator simulator_;
  kernel::ManualClock clock_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<rules::RulesStage> rules_;
  std::unique_ptr<views::Projections> views_;
  std::vector<int64_t> offsets_ = std::vector<int64_t>(kPartitions, 0);
  absl::Time now_;
  int requests_ = 0;
  int urged_ = 0;
  int handled_ = 0;
  std::string last_acted_case_;
};

struct Captured {
  CityState city;
  CityState scoped;
};

TEST_CASE("state --at T equals the read models captured live at T during a simulated typhoon",
          "[state_at]") {
  LiveCity live(/*seed=*/16);
  const absl::Time start = live.start();
  // Between the five-minute batches (people act right after a batch, so a moment on a
  // batch's end would see the rules stage's answers to them dated at that very moment,
  // appended after the capture); one with a fraction of a second.
  const std::vector<absl::Time> moments = {
      start + absl::Minutes(37), start + absl::Minutes(78) + absl::Milliseconds(30'500),
      start + absl::Minutes(126), start + absl::Minutes(171) + absl::Seconds(13)};
  const absl::Time end = start + absl::Hours(3);
  // A street of the city, for the scoped answers.
  const std::string street = live.city().Registration(0).grid().street_code();
  REQUIRE(!street.empty());

  std::vector<Captured> captured;
  size_t next = 0;
  for (absl::Time t = start + absl::Minutes(5); t <= end;) {
    const absl::Time until = next < moments.size() ? std::min(t, moments[next]) : t;
    live.AdvanceTo(until);
    if (next < moments.size() && until == moments[next]) {
      absl::StatusOr<CityState> city = live.Capture("");
      REQUIRE(city.ok());
      absl::StatusOr<CityState> scoped = live.Capture(street);
      REQUIRE(scoped.ok());
      captured.push_back({*std::move(city), *std::move(scoped)});
      ++next;
      continue;  // Then on to the grid point.
    }
    live.PeopleAct();
    t += absl::Minutes(5);
  }
  REQUIRE(captured.size() == moments.size());
  // People did act, and the typhoon gave the captures something to compare.
  CHECK(live.urged() > 0);
  CHECK(live.handled() > 0);
  size_t open_cases = 0, alerts = 0, lights = 0, offline = 0;
  for (const Captured& c : captured) {
    open_cases += c.city.open_cases.size();
    alerts += c.city.active_alerts.size();
    lights += c.city.statistics.overdue_yellow() + c.city.statistics.overdue_red();
    for (const CityState::Devices& d : c.city.devices) offline += d.offline;
  }
  CHECK(open_cases > 0);
  CHECK(alerts > 0);
  CHECK(lights > 0);
  CHECK(offline > 0);

  // The final log, folded as of each moment.
  for (size_t i = 0; i < moments.size(); ++i) {
    const std::string dir = live.Sub(absl::StrCat("as-of-", i));
    absl::StatusOr<std::unique_ptr<views::Projections>> views =
        analysis::FoldAsOf(live.log(), moments[i], dir);
    REQUIRE(views.ok());
    absl::StatusOr<CityState> city = analysis::ReadCityState(**views, moments[i], "");
    REQUIRE(city.ok());
    RequireSame(captured[i].city, *city);
    absl::StatusOr<CityState> scoped = analysis::ReadCityState(**views, moments[i], street);
    REQUIRE(scoped.ok());
    RequireSame(captured[i].scoped, *scoped);
  }

  // The command itself, on the closed log: the same figures as JSON, no scratch left.
  const std::string acted = live.last_acted_case();
  REQUIRE(!acted.empty());
  live.CloseLog();
  const std::string tmp = live.Sub("tmp");
  std::ostringstream out, err;
  {
    ScopedTmpdir scratch(tmp);
    REQUIRE(analysis::StateAtCommand(
                {.data_dir = live.LogDir(), .at = Rfc3339(moments[2]), .json = true}, out, err)
                .ok());
  }
  CHECK(out.str() == analysis::CityStateJson(captured[2].city) + "\n");
  CHECK(std::filesystem::is_empty(tmp));

  // The table, and a case's history with who acted.
  out.str("");
  REQUIRE(analysis::StateAtCommand({.data_dir = live.LogDir(),
                                    .at = Rfc3339(moments[3]),
                                    .scope = street,
                                    .keep = live.Sub("kept")},
                                   out, err)
              .ok());
  CHECK(absl::StrContains(out.str(), "open cases in scope:"));
  CHECK(absl::StrContains(out.str(), "devices in scope:"));
  CHECK(std::filesystem::exists(live.Sub("kept") + "/CURRENT"));
  out.str("");
  REQUIRE(analysis::StateAtCommand(
              {.data_dir = live.LogDir(), .at = Rfc3339(end), .case_id = acted}, out, err)
              .ok());
  CHECK(absl::StrContains(out.str(), "case " + acted));
  CHECK(absl::StrContains(out.str(), "timeline:"));
  CHECK(absl::StrContains(out.str(), "li.supervisor (supervisor, city center)"));
  CHECK(absl::StrContains(out.str(), "rules"));
}

TEST_CASE("state --at refuses a time before the log, an unknown case and a locked log",
          "[state_at]") {
  LiveCity live(/*seed=*/3);
  live.AdvanceTo(live.start() + absl::Minutes(30));
  std::ostringstream out, err;

  // Locked: the live city holds the log.
  absl::Status s = analysis::StateAtCommand(
      {.data_dir = live.LogDir(), .at = Rfc3339(live.start() + absl::Minutes(10))}, out, err);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(s.message(), "in use"));
  CHECK(absl::StrContains(s.message(), "cityops log backup --data-dir " + live.LogDir()));
  live.CloseLog();

  s = analysis::StateAtCommand(
      {.data_dir = live.LogDir(), .at = Rfc3339(live.start() - absl::Hours(1))}, out, err);
  CHECK(s.code() == absl::StatusCode::kOutOfRange);
  CHECK(absl::StrContains(s.message(), "before the log's first event"));
  CHECK(absl::StrContains(s.message(), "give a time in that range"));

  s = analysis::StateAtCommand({.data_dir = live.LogDir(), .at = "yesterday"}, out, err);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(s.message(), "--at 'yesterday' is not an RFC 3339 time"));

  s = analysis::StateAtCommand({.data_dir = live.LogDir(),
                                .at = Rfc3339(live.start() + absl::Minutes(20)),
                                .case_id = "no-such-case"},
                               out, err);
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(s.message(), "holds no case 'no-such-case'"));

  s = analysis::StateAtCommand({.data_dir = live.Sub("nowhere"), .at = Rfc3339(live.start())}, out,
                               err);
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(s.message(), "no event log at"));

  // After the log's end: answered, with a warning naming the log's range.
  err.str("");
  s = analysis::StateAtCommand(
      {.data_dir = live.LogDir(), .at = Rfc3339(live.start() + absl::Hours(5))}, out, err);
  CHECK(s.ok());
  CHECK(absl::StrContains(err.str(), "is after the log's last event"));

  // After the log's end, time is the moment's, not the last event's: three reporting
  // intervals of silence later every device is offline (no tick says so in the log).
  {
    absl::StatusOr<std::unique_ptr<EventLog>> log =
        EventLog::Open({.path = live.LogDir(), .create_if_missing = false});
    REQUIRE(log.ok());
    const absl::Time late = live.start() + absl::Hours(30);
    absl::StatusOr<std::unique_ptr<views::Projections>> views =
        analysis::FoldAsOf(log->get(), late, live.Sub("late"));
    REQUIRE(views.ok());
    absl::StatusOr<CityState> state = analysis::ReadCityState(**views, late, "");
    REQUIRE(state.ok());
    REQUIRE(!state->devices.empty());
    for (const CityState::Devices& d : state->devices) {
      INFO(v1::DeviceKind_Name(d.kind));
      CHECK(d.online == 0);
      CHECK(d.offline > 0);
    }
    CHECK(state->statistics.devices_online() == 0);
  }

  // Ctrl-C while folding: CANCELLED, nothing printed, no scratch left behind.
  {
    const std::string tmp = live.Sub("tmp-stopped");
    ScopedTmpdir scratch(tmp);
    analysis::StopScope ctrl_c;  // Held, so that the run's own scope keeps the request.
    analysis::RequestStop();
    std::ostringstream stopped_out;
    s = analysis::StateAtCommand(
        {.data_dir = live.LogDir(), .at = Rfc3339(live.start() + absl::Minutes(20))}, stopped_out,
        err);
    analysis::ClearStopRequest();
    CHECK(s.code() == absl::StatusCode::kCancelled);
    CHECK(absl::StrContains(s.message(), "stopped by request"));
    CHECK(stopped_out.str().empty());
    CHECK(std::filesystem::is_empty(tmp));
  }

  // --keep must be a new directory.
  std::filesystem::create_directories(live.Sub("full"));
  { std::ofstream(live.Sub("full") + "/x") << "x"; }
  s = analysis::StateAtCommand({.data_dir = live.LogDir(),
                                .at = Rfc3339(live.start() + absl::Minutes(20)),
                                .keep = live.Sub("full")},
                               out, err);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(s.message(), "is not empty"));
}

TEST_CASE("state --at --case refuses a case reported after the moment", "[state_at]") {
  LiveCity live(/*seed=*/16);
  for (int m = 5; m <= 60; m += 5) live.AdvanceTo(live.start() + absl::Minutes(m));
  absl::StatusOr<analysis::CityState> state = live.Capture("");
  REQUIRE(state.ok());
  REQUIRE(!state->open_cases.empty());
  const v1::CaseView& c = state->open_cases.front();
  const absl::Time reported = kernel::FromTimestamp(c.reported_time());
  absl::StatusOr<v1::CaseDetail> before =
      analysis::CaseAsOf(*live.log(), c.case_id(), reported - absl::Seconds(1));
  CHECK(before.status().code() == absl::StatusCode::kNotFound);
  CHECK(absl::StrContains(before.status().message(), "give a later --at"));
  absl::StatusOr<v1::CaseDetail> at = analysis::CaseAsOf(*live.log(), c.case_id(), reported);
  REQUIRE(at.ok());
  CHECK(at->timeline_size() >= 1);
  CHECK(kernel::FromTimestamp(at->as_of()) == reported);
}

TEST_CASE("state --at warns when the rules stage had not processed the log as far as the moment",
          "[state_at]") {
  LiveCity live(/*seed=*/5);
  live.AdvanceTo(live.start() + absl::Minutes(10));
  live.AdvanceTo(live.start() + absl::Minutes(20), /*run_stages=*/false);
  live.CloseLog();
  std::ostringstream out, err;
  REQUIRE(
      analysis::StateAtCommand(
          {.data_dir = live.LogDir(), .at = Rfc3339(live.start() + absl::Minutes(15))}, out, err)
          .ok());
  CHECK(absl::StrContains(err.str(), "the rules stage has processed partition"));
  CHECK(absl::StrContains(err.str(), "run 'cityops replay --data-dir " + live.LogDir()));
  // Before what the stage left unprocessed, nothing is missing: no warning.
  err.str("");
  REQUIRE(analysis::StateAtCommand(
              {.data_dir = live.LogDir(), .at = Rfc3339(live.start() + absl::Minutes(9))}, out, err)
              .ok());
  CHECK(!absl::StrContains(err.str(), "rules stage"));
}

}  // namespace
}  // namespace cityops
