// The read models (projections/views/): folding rules, statistics, restarts and rebuilds,
// on a real event log whose alerts, cases and tickets come from the real rules stage and
// case workflow.
#include "projections/views/views.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "catalogue/kinds.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/rules_stage.h"
#include "projections/stored_event.h"
#include "projections/workflow.h"
#include "rocksdb/db.h"
#include "tests/testing/temp_dir.h"

namespace cityops::views {
namespace {

using kernel::EventLog;
using kernel::Partition;
const absl::Time kT0 = absl::FromUnixSeconds(1'790'000'000);
const char kGrid[] = "310104001001001";

constexpr char kRules[] =
    "name: views-test\n"
    "report_linking: {window: 6h, max_distance_m: 500}\n"
    "rules:\n"
    "  - id: flood\n"
    "    device_kind: flood_gauge\n"
    "    severity: minor\n"
    "    threshold:\n"
    "      raise: {all: [{metric: water_depth_cm, at_least: 15}]}\n"
    "      clear: {all: [{metric: water_depth_cm, below: 10}]}\n"
    "    case:\n"
    "      open_case: true\n"
    "      category: {code: \"E0111\"}\n"
    "      department: water-authority\n"
    "      dispatch_level: street_center\n"
    "      deadlines: {dispatch_within: 10m, handle_within: 1h}\n"
    "      auto_register: true\n"
    "      verification_window: 10m\n";

class World {
 public:
  World() : clock_(kT0) {
    absl::StatusOr<std::unique_ptr<EventLog>> log =
        EventLog::Open({.path = dir_.Sub("log"), .durability = kernel::Durability::kBuffered});
    REQUIRE(log.ok());
    log_ = *std::move(log);
    absl::StatusOr<rules::LoadedRuleSet> loaded = rules::LoadRuleSetText(kRules, "t.yaml");
    REQUIRE(loaded.ok());
    Append(0, rules::RulesetActivatedEvent(*loaded, kT0));
  }

  void Append(uint32_t partition, v1::Event e) {
    kernel::AppendBatch batch{Partition(partition)};
    batch.Add(std::move(e));
    REQUIRE(log_->Append(std::move(batch)).ok());
  }

  void Register(const std::string& id, uint32_t partition,
                absl::Duration interval = absl::Minutes(5)) {
    v1::Event e;
    e.set_stream_id("registry/" + id);
    kernel::SetTimestamp(kT0, e.mutable_event_time());
    v1::DeviceRegistered* r = e.mutable_device_registered();
    r->set_device_id(id);
    r->set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
    r->mutable_grid()->set_grid_code(kGrid);
    r->mutable_grid()->set_street_code("310104001");
    r->mutable_grid()->set_district_code("310104");
    r->mutable_reporting_interval()->set_seconds(absl::ToInt64Seconds(interval));
    Append(partition, std::move(e));
  }

  void Depth(const std::string& id, uint32_t partition, absl::Duration at, double cm,
             double battery = 80) {
    v1::Event e;
    e.set_stream_id("device/" + id);
    kernel::SetTimestamp(kT0 + at, e.mutable_event_time());
    v1::SensorReading* r = e.mutable_reading();
    r->set_device_id(id);
    r->set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
    r->set_reading_id(absl::StrFormat("%d", ++readings_));
    *r->mutable_event_time() = e.event_time();
    r->mutable_flood_gauge()->set_water_depth_cm(cm);
    r->mutable_flood_gauge()->set_battery_pct(battery);
    Append(partition, std::move(e));
  }

  // A device of a catalogue-only kind joins the registry: kind unspecified, kind_id set,
  // no reporting interval of its own (its kind's in the catalogue applies).
  void RegisterKind(const std::string& id, uint32_t partition, const std::string& kind_id) {
    v1::Event e;
    e.set_stream_id("registry/" + id);
    kernel::SetTimestamp(kT0, e.mutable_event_time());
    v1::DeviceRegistered* r = e.mutable_device_registered();
    r->set_device_id(id);
    r->set_kind_id(kind_id);
    r->mutable_grid()->set_grid_code(kGrid);
    r->mutable_grid()->set_street_code("310104001");
    r->mutable_grid()->set_district_code("310104");
    v1::ArchiveValue* site = r->mutable_archive_values()->add_fields();
    site->set_name("site");
    site->set_value("kitchen");
    Append(partition, std::move(e));
  }

  // A reading of a catalogue-only kind by metric names, as ingest stores it.
  void Values(const std::string& id, uint32_t partition, const std::string& kind_id,
              absl::Duration at, const std::vector<std::pair<std::string, double>>& numbers) {
    v1::Event e;
    e.set_stream_id("device/" + id);
    kernel::SetTimestamp(kT0 + at, e.mutable_event_time());
    v1::SensorReading* r = e.mutable_reading();
    r->set_device_id(id);
    r->set_kind_id(kind_id);
    r->set_reading_id(absl::StrFormat("%d", ++readings_));
    *r->mutable_event_time() = e.event_time();
    for (const auto& [name, number] : numbers) {
      v1::MetricValue* v = r->mutable_values()->add_values();
      v->set_name(name);
      v->set_number(number);
    }
    v1::MetricValue* alarm = r->mutable_values()->add_values();
    alarm->set_name("alarm");
    alarm->set_flag(false);
    Append(partition, std::move(e));
  }

  void Tick(uint32_t partition, absl::Duration at) {
    v1::Event e;
    e.set_stream_id("clock");
    e.mutable_clock_tick();
    kernel::SetTimestamp(kT0 + at, e.mutable_event_time());
    Append(partition, std::move(e));
  }

  void Rules() {
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open({.log = log_.get()});
    REQUIRE(stage.ok());
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  }

  absl::StatusOr<projections::CommandResult> Command(projections::CommandKind kind,
                                                     const std::string& id, absl::Duration at) {
    clock_.Set(kT0 + at);
    projections::CaseWorkflow workflow({.log = log_.get(), .clock = &clock_, .partitions = 2});
    projections::CaseCommand c;
    c.kind = kind;
    c.case_id = id;
    c.actor.set_user("wang.street");
    c.actor.mutable_unit()->set_level(v1::GRID_LEVEL_STREET_CENTER);
    c.actor.mutable_unit()->set_code("310104001");
    if (kind == projections::CommandKind::kHandle) {  // The water authority's district crew.
      c.actor.set_user("crew.water");
      c.actor.mutable_unit()->set_level(v1::GRID_LEVEL_DISTRICT_CENTER);
      c.actor.mutable_unit()->set_code("310104");
      c.actor.mutable_unit()->set_department("water-authority");
    }
    c.department = "water-authority";
    c.result = "pumped";
    c.note = "hurry";
    return workflow.Execute(c);
  }

  // A hotline report of road water in the grid, by the street center.
  absl::StatusOr<projections::CommandResult> Report(const std::string& id, absl::Duration at,
                                                    const std::string& category = "E0111") {
    clock_.Set(kT0 + at);
    projections::CaseWorkflow workflow({.log = log_.get(), .clock = &clock_, .partitions = 2});
    projections::CaseCommand c;
    c.kind = projections::CommandKind::kReport;
    c.actor.set_user("wang.street");
    c.actor.mutable_unit()->set_level(v1::GRID_LEVEL_STREET_CENTER);
    c.actor.mutable_unit()->set_code("310104001");
    c.report.set_case_id(id);
    c.report.set_source(v1::CASE_SOURCE_HOTLINE_12345);
    c.report.mutable_grid()->set_grid_code(kGrid);
    c.report.mutable_category()->set_code(category);
    c.report.set_description("water on the road");
    return workflow.Execute(c);
  }

  std::unique_ptr<Projections> Views(const std::string& name, size_t commit_every = 50'000,
                                     std::function<void()> while_querying = nullptr) {
    absl::StatusOr<std::unique_ptr<Projections>> p =
        Projections::Open(ViewOptions(name, commit_every, std::move(while_querying)));
    REQUIRE(p.ok());
    return *std::move(p);
  }

  ProjectionOptions ViewOptions(const std::string& name, size_t commit_every = 50'000,
                                std::function<void()> while_querying = nullptr) {
    ProjectionOptions o;
    o.log = log_.get();
    o.dir = dir_.Sub(name);
    o.commit_every = commit_every;
    o.while_querying_for_testing = std::move(while_querying);
    return o;
  }

  EventLog& log() { return *log_; }

 private:
  testing::TempDir dir_;
  kernel::ManualClock clock_;
  std::unique_ptr<EventLog> log_;
  int readings_ = 0;
};

// Opens a read-model database with RocksDB itself, for a test to change what cityops wrote.
void EditDatabase(const std::string& dir, const std::function<void(rocksdb::DB&)>& edit) {
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::Options(), dir, &db).ok());
  std::unique_ptr<rocksdb::DB> owned(db);
  edit(*db);
}

// A flood in two gauges of one grid: alerts, cases, tickets, commands, ticks.
void Scenario(World& w) {
  w.Register("g1", 0);
  w.Register("g2", 1);
  w.Depth("u9", 1, absl::Minutes(1), 3);  // Never registered.
  for (int m = 0; m <= 30; m += 5) {
    w.Depth("g1", 0, absl::Minutes(m), m < 10 ? 2 : 20);
    w.Depth("g2", 1, absl::Minutes(m), 2);
  }
  w.Rules();
  REQUIRE(w.Command(projections::CommandKind::kUrge, "iot-flood-g1-1", absl::Minutes(31)).ok());
  REQUIRE(w.Command(projections::CommandKind::kDispatch, "iot-flood-g1-1", absl::Minutes(32)).ok());
  w.Tick(0, absl::Minutes(40));
  w.Tick(1, absl::Minutes(40));
  w.Rules();
}

TEST_CASE("devices, alerts, cases and tickets fold from the log", "[views]") {
  World w;
  Scenario(w);
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());

  absl::StatusOr<std::optional<v1::DeviceView>> g1 = views->GetDevice("g1");
  REQUIRE(g1.ok());
  REQUIRE(g1->has_value());
  CHECK((*g1)->registered());
  CHECK((*g1)->online());
  CHECK((*g1)->readings() == 7);
  CHECK((*g1)->battery_pct() == 80);
  CHECK((*g1)->last_reading().flood_gauge().water_depth_cm() == 20);
  // Fewer readings than the window: all of them, newest first.
  REQUIRE((*g1)->recent_readings_size() == 7);
  CHECK((*g1)->recent_readings(0).reading_id() == (*g1)->last_reading().reading_id());
  CHECK((*g1)->recent_readings(0).event_time().seconds() >
        (*g1)->recent_readings(6).event_time().seconds());
  CHECK((*g1)->active_alerts_size() == 1);
  CHECK((*g1)->alert_severity() != v1::SEVERITY_UNSPECIFIED);
  absl::StatusOr<std::optional<v1::DeviceView>> u9 = views->GetDevice("u9");
  REQUIRE(u9.ok());
  REQUIRE(u9->has_value());
  CHECK_FALSE((*u9)->registered());
  // u9 was last seen at 1 min with the default 5-minute interval: offline by 40 min.
  CHECK_FALSE((*u9)->online());

  absl::StatusOr<std::optional<v1::AlertView>> alert = views->GetAlert("al-flood-g1-1");
  REQUIRE(alert.ok());
  REQUIRE(alert->has_value());
  CHECK((*alert)->active());
  CHECK((*alert)->case_id() == "iot-flood-g1-1");

  absl::StatusOr<std::optional<v1::CaseView>> c = views->GetCase("iot-flood-g1-1");
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->stage() == v1::CASE_STAGE_DISPATCHED);
  CHECK((*c)->urges() == 1);
  CHECK((*c)->ticket_ids_size() == 1);

  absl::StatusOr<Page<v1::TicketView>> tickets = views->ListTickets(10);
  REQUIRE(tickets.ok());
  REQUIRE(tickets->items.size() == 1);
  CHECK(tickets->items[0].ticket().case_id() == "iot-flood-g1-1");

  absl::StatusOr<std::optional<v1::RulesetActivated>> rules = views->ActiveRuleSet();
  REQUIRE(rules.ok());
  REQUIRE(rules->has_value());
  CHECK((*rules)->name() == "views-test");
}

TEST_CASE("a report linked into an open case says so, is counted there, and points there",
          "[views]") {
  World w;
  Scenario(w);
  REQUIRE(w.Report("hot-1", absl::Minutes(41)).ok());
  w.Tick(0, absl::Minutes(42));
  w.Tick(1, absl::Minutes(42));
  w.Rules();
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<std::optional<v1::CaseView>> report = views->GetCase("hot-1");
  REQUIRE(report.ok());
  REQUIRE(report->has_value());
  CHECK((*report)->linked_to() == "iot-flood-g1-1");
  CHECK_FALSE((*report)->opened());
  absl::StatusOr<std::optional<v1::CaseView>> target = views->GetCase("iot-flood-g1-1");
  REQUIRE(target.ok());
  REQUIRE(target->has_value());
  REQUIRE((*target)->linked_reports_size() == 1);
  CHECK((*target)->linked_reports(0) == "hot-1");
  absl::StatusOr<v1::Statistics> s = views->GetStatistics();
  REQUIRE(s.ok());
  CHECK(s->cases_total() == 1);  // The report counts in the case it joined.
  // Commands on the report say where to act instead of "retry shortly" forever.
  absl::StatusOr<projections::CommandResult> urge =
      w.Command(projections::CommandKind::kUrge, "hot-1", absl::Minutes(43));
  REQUIRE_FALSE(urge.ok());
  CHECK(urge.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(urge.status().message()), Catch::Contains("act on case iot-flood-g1-1"));
}

TEST_CASE("statistics are kept incrementally and add up", "[views]") {
  World w;
  Scenario(w);
  // The case was registered at 10 min with 10 minutes to dispatch: yellow at 20, red at
  // 30, then dispatched at 32 (light reset), and verified/closed by its rule later.
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<v1::Statistics> s = views->GetStatistics();
  REQUIRE(s.ok());
  CHECK(s->cases_total() == 1);
  REQUIRE(s->by_source_size() == 1);
  CHECK(s->by_source(0).key() == "CASE_SOURCE_IOT_RULE");
  REQUIRE(s->by_stage_size() == 1);
  CHECK(s->by_stage(0).key() == "CASE_STAGE_DISPATCHED");
  CHECK(s->by_street(0).key() == "310104001");
  CHECK(s->urged() == 1);
  CHECK(s->overdue_yellow() == 0);
  CHECK(s->overdue_red() == 0);
  CHECK(s->devices_total() == 3);
  CHECK(s->devices_unregistered() == 1);
  CHECK(s->devices_online() == 2);
  CHECK(s->alerts_active() == 1);
  CHECK(s->tickets_total() == 1);
  CHECK(s->closed() == 0);
  CHECK(s->close_rate() == 0);

  // Handle it and let the water go: the rule verifies and closes it.
  REQUIRE(w.Command(projections::CommandKind::kHandle, "iot-flood-g1-1", absl::Minutes(41)).ok());
  w.Depth("g1", 0, absl::Minutes(45), 2);
  w.Tick(0, absl::Minutes(60));
  w.Tick(1, absl::Minutes(60));
  w.Rules();
  REQUIRE(views->CatchUp().ok());
  s = views->GetStatistics();
  REQUIRE(s.ok());
  CHECK(s->closed() == 1);
  CHECK(s->close_rate() == 1);
  CHECK(s->closed_on_time() == 0);  // It went red while waiting for dispatch.
  CHECK(s->on_time_close_rate() == 0);
  CHECK(s->handled_at_street_level() == 1);
  CHECK(s->alerts_active() == 0);
  CHECK(s->mean_time_in_stage_size() == 5);
}

TEST_CASE("restarts at random points end where one run ends", "[views]") {
  World w;
  Scenario(w);
  std::unique_ptr<Projections> once = w.Views("once");
  REQUIRE(once->CatchUp().ok());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> expected = once->Dump();
  REQUIRE(expected.ok());

  std::mt19937_64 rng(7);
  for (int round = 0; round < 5; ++round) {
    const std::string name = absl::StrFormat("restarts-%d", round);
    for (int step = 0; step < 8; ++step) {
      // Reopen and fold a few events at a time, then drop the object as a crash would.
      std::unique_ptr<Projections> p = w.Views(name, 1 + rng() % 7);
      for (uint64_t k = rng() % 4; k > 0; --k) {
        REQUIRE(p->CatchUp().ok());
      }
    }
    std::unique_ptr<Projections> p = w.Views(name);
    REQUIRE(p->CatchUp().ok());
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> got = p->Dump();
    REQUIRE(got.ok());
    CHECK(*got == *expected);
  }
}

TEST_CASE("a rebuild beside the live models equals them, while appends and queries go on",
          "[views][slow]") {
  World w;
  Scenario(w);
  std::unique_ptr<Projections> live = w.Views("live", 500);
  REQUIRE(live->CatchUp().ok());
  std::atomic<bool> done{false};
  std::atomic<int> failed_queries{0};
  std::atomic<int> queries{0};
  std::thread runner([&] { CHECK(live->Run().ok()); });
  std::thread reader([&] {
    while (!done.load()) {
      failed_queries += !live->GetStatistics().ok();
      failed_queries += !live->GetDevice("g1").ok();
      ++queries;
    }
  });
  std::thread writer([&] {
    for (int i = 0; i < 3000; ++i)
      w.Depth(absl::StrFormat("x%d", i % 50), i % 2, absl::Minutes(40), 1);
  });
  const uint64_t before = live->generation();
  REQUIRE(live->Rebuild().ok());
  CHECK(live->generation() == before + 1);
  writer.join();
  done = true;
  reader.join();
  live->Stop();
  runner.join();
  REQUIRE(live->CatchUp().ok());
  CHECK(failed_queries == 0);
  CHECK(queries > 0);
  std::unique_ptr<Projections> fresh = w.Views("fresh");
  REQUIRE(fresh->CatchUp().ok());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> a = live->Dump();
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> b = fresh->Dump();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->size() > 50);
  CHECK(*a == *b);
  for (const PartitionLag& lag : live->Lag()) CHECK(lag.lag == 0);
}

TEST_CASE("late readings keep the newest reading in front and last_seen where it was", "[views]") {
  World w;
  w.Register("g1", 0);
  w.Depth("g1", 0, absl::Minutes(30), 7, /*battery=*/70);
  w.Depth("g1", 0, absl::Minutes(40), 9, /*battery=*/69);
  // Buffered while the gauge was offline, delivered late.
  w.Depth("g1", 0, absl::Minutes(35), 8, /*battery=*/71);
  w.Depth("g1", 0, absl::Minutes(10), 5, /*battery=*/75);
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<std::optional<v1::DeviceView>> g1 = views->GetDevice("g1");
  REQUIRE(g1.ok());
  REQUIRE(g1->has_value());
  const v1::DeviceView& d = **g1;
  CHECK(d.readings() == 4);
  CHECK(kernel::FromTimestamp(d.last_seen()) == kT0 + absl::Minutes(40));
  CHECK(d.last_reading().flood_gauge().water_depth_cm() == 9);
  CHECK(d.battery_pct() == 69);
  REQUIRE(d.recent_readings_size() == 4);
  std::vector<double> depths;
  for (const v1::SensorReading& r : d.recent_readings()) {
    depths.push_back(r.flood_gauge().water_depth_cm());
  }
  CHECK(depths == std::vector<double>{9, 8, 7, 5});  // Newest first, by event time.
  CHECK(d.recent_readings(0).reading_id() == d.last_reading().reading_id());
  // A full window drops a reading older than all it keeps.
  World full;
  full.Register("g1", 0);
  for (int m = 1; m <= static_cast<int>(kRecentReadings); ++m) {
    full.Depth("g1", 0, absl::Minutes(10 * m), m);
  }
  full.Depth("g1", 0, absl::Minutes(1), 99);   // Older than every kept reading.
  full.Depth("g1", 0, absl::Minutes(15), 42);  // Between the oldest two.
  std::unique_ptr<Projections> v2 = full.Views("views");
  REQUIRE(v2->CatchUp().ok());
  absl::StatusOr<std::optional<v1::DeviceView>> f1 = v2->GetDevice("g1");
  REQUIRE(f1.ok());
  REQUIRE(f1->has_value());
  REQUIRE((*f1)->recent_readings_size() == static_cast<int>(kRecentReadings));
  CHECK((*f1)->recent_readings(0).flood_gauge().water_depth_cm() == kRecentReadings);
  // The 15-minute one now is among the newest eight; the 10-minute one is not.
  CHECK((*f1)->recent_readings(kRecentReadings - 2).flood_gauge().water_depth_cm() == 2);
  CHECK((*f1)->recent_readings(kRecentReadings - 1).flood_gauge().water_depth_cm() == 42);
}

TEST_CASE("a case lists the readings that raised its alerts", "[views]") {
  World w;
  Scenario(w);
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<std::optional<v1::AlertView>> alert = views->GetAlert("al-flood-g1-1");
  REQUIRE(alert.ok());
  REQUIRE(alert->has_value());
  REQUIRE((*alert)->raised().readings_size() > 0);
  absl::StatusOr<std::optional<v1::CaseView>> c = views->GetCase("iot-flood-g1-1");
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  REQUIRE((*c)->readings_size() == (*alert)->raised().readings_size());
  for (int i = 0; i < (*c)->readings_size(); ++i) {
    CHECK((*c)->readings(i).sequence() == (*alert)->raised().readings(i).sequence());
  }
}

TEST_CASE("a swapped-out generation is deleted when the last query using it ends", "[views]") {
  World w;
  Scenario(w);
  std::unique_ptr<Projections> views;
  bool rebuilt = false;
  std::string old_dir;
  auto during_query = [&] {
    if (rebuilt) return;
    rebuilt = true;
    // A rebuild swaps generations while this query still reads the old one.
    REQUIRE(views->Rebuild().ok());
    CHECK(std::filesystem::exists(old_dir));
  };
  views = w.Views("views", 50'000, during_query);
  old_dir = w.ViewOptions("views").dir + "/gen-1";
  REQUIRE(views->CatchUp().ok());
  REQUIRE(std::filesystem::exists(old_dir));
  absl::StatusOr<std::optional<v1::DeviceView>> g1 = views->GetDevice("g1");
  REQUIRE(rebuilt);
  REQUIRE(g1.ok());  // Read from the old generation, intact.
  REQUIRE(g1->has_value());
  CHECK((*g1)->readings() == 7);
  CHECK_FALSE(std::filesystem::exists(old_dir));  // Gone with its last user.
  CHECK(std::filesystem::exists(w.ViewOptions("views").dir + "/gen-2"));
  CHECK(views->generation() == 2);
}

TEST_CASE("folding nothing writes nothing", "[views]") {
  World w;
  Scenario(w);
  const std::string gen = w.ViewOptions("views").dir + "/gen-1";
  auto latest = [&] {
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::Options(), gen, &db).ok());
    const uint64_t seq = db->GetLatestSequenceNumber();
    delete db;
    return seq;
  };
  { REQUIRE(w.Views("views")->CatchUp().ok()); }
  const uint64_t before = latest();
  {
    std::unique_ptr<Projections> views = w.Views("views");
    for (int i = 0; i < 3; ++i) REQUIRE(views->CatchUp().ok());
  }
  CHECK(latest() == before);
}

TEST_CASE("a damaged read model names its directory and says to delete it", "[views]") {
  World w;
  Scenario(w);
  const std::string root = w.ViewOptions("views").dir;
  { REQUIRE(w.Views("views")->CatchUp().ok()); }
  EditDatabase(root + "/gen-1", [](rocksdb::DB& db) {
    REQUIRE(db.Put(rocksdb::WriteOptions(), "d/g1", "\xff\xff not a view").ok());
  });
  absl::StatusOr<std::unique_ptr<Projections>> reopened = Projections::Open(w.ViewOptions("views"));
  REQUIRE_FALSE(reopened.ok());
  CHECK(reopened.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(reopened.status().message()), Catch::Contains(root + "/gen-1") &&
                                                           Catch::Contains("d/g1") &&
                                                           Catch::Contains("delete " + root));
}

TEST_CASE("the default reporting intervals agree with the default rule set's", "[views]") {
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
  REQUIRE(loaded.ok());
  int checked = 0;
  for (const v1::Rule& r : loaded->rule_set.rules()) {
    if (!r.has_absence()) continue;
    INFO(r.id());
    CHECK(catalogue::KindTable::BuiltIn()->Find(r.device_kind())->reporting_interval ==
          kernel::FromDurationProto(r.absence().default_interval()));
    ++checked;
  }
  CHECK(checked == static_cast<int>(catalogue::KindTable::BuiltIn()->kinds().size()));
}

TEST_CASE("a device of a catalogue-only kind is a device like any other", "[views][catalogue]") {
  World w;
  w.RegisterKind("gas1", 0, "gas_detector");
  w.Values("gas1", 0, "gas_detector", absl::Minutes(1), {{"gas_lel_pct", 2}, {"battery_pct", 71}});
  w.Values("gas1", 0, "gas_detector", absl::Minutes(31), {{"gas_lel_pct", 3}, {"battery_pct", 70}});
  // Heard from by a reading alone, never registered.
  w.Values("noise1", 1, "noise_meter", absl::Minutes(2), {{"noise_leq_dba", 64}});
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<std::optional<v1::DeviceView>> gas = views->GetDevice("gas1");
  REQUIRE(gas.ok());
  REQUIRE(gas->has_value());
  const v1::DeviceView& d = **gas;
  CHECK(d.kind_id() == "gas_detector");
  CHECK(d.kind() == v1::DEVICE_KIND_UNSPECIFIED);
  CHECK(d.registered());
  CHECK(d.registration().archive_values().fields(0).value() == "kitchen");
  CHECK(d.online());
  CHECK(d.readings() == 2);
  CHECK(d.battery_pct() == 70);
  CHECK(d.last_reading().values().values(1).name() == "battery_pct");
  CHECK(d.recent_readings_size() == 2);
  CHECK(kernel::FromTimestamp(d.last_seen()) == kT0 + absl::Minutes(31));
  absl::StatusOr<std::optional<v1::DeviceView>> noise = views->GetDevice("noise1");
  REQUIRE(noise.ok());
  REQUIRE(noise->has_value());
  CHECK((*noise)->kind_id() == "noise_meter");
  CHECK_FALSE((*noise)->registered());

  // Listed by kind id; the typed kinds by theirs.
  DeviceFilter gas_detectors;
  gas_detectors.kind_id = "gas_detector";
  absl::StatusOr<Page<v1::DeviceView>> listed = views->ListDevices(gas_detectors, 10);
  REQUIRE(listed.ok());
  REQUIRE(listed->items.size() == 1);
  CHECK(listed->items[0].device_id() == "gas1");

  // The catalogue gives a gas detector 30 minutes: offline after three, that is 90 minutes
  // after its last reading (at 31 min), and not a moment before.
  w.Tick(0, absl::Minutes(31 + 89));
  REQUIRE(views->CatchUp().ok());
  gas = views->GetDevice("gas1");
  REQUIRE(gas.ok());
  CHECK((*gas)->online());
  absl::StatusOr<v1::Statistics> stats = views->GetStatistics();
  REQUIRE(stats.ok());
  CHECK(stats->devices_online() == 2);
  w.Tick(0, absl::Minutes(31 + 90));
  REQUIRE(views->CatchUp().ok());
  gas = views->GetDevice("gas1");
  REQUIRE(gas.ok());
  CHECK_FALSE((*gas)->online());
  stats = views->GetStatistics();
  REQUIRE(stats.ok());
  CHECK(stats->devices_total() == 2);
  CHECK(stats->devices_online() == 1);
  CHECK(stats->devices_unregistered() == 1);

  // A restart reads the device back with its kind; a rebuild folds the same.
  views.reset();
  views = w.Views("views");
  gas = views->GetDevice("gas1");
  REQUIRE(gas.ok());
  CHECK((*gas)->kind_id() == "gas_detector");
  std::unique_ptr<Projections> fresh = w.Views("fresh");
  REQUIRE(fresh->CatchUp().ok());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> a = views->Dump();
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> b = fresh->Dump();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == *b);
}

TEST_CASE("typed devices carry their kind's catalogue id", "[views][catalogue]") {
  World w;
  w.Register("g1", 0);
  w.Depth("g2", 1, absl::Minutes(1), 3);
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  for (const char* id : {"g1", "g2"}) {
    absl::StatusOr<std::optional<v1::DeviceView>> d = views->GetDevice(id);
    REQUIRE(d.ok());
    REQUIRE(d->has_value());
    CHECK((*d)->kind_id() == "flood_gauge");
    CHECK((*d)->kind() == v1::DEVICE_KIND_FLOOD_GAUGE);
  }
}

TEST_CASE("the catalogue of the latest rule set activation sets the reporting intervals",
          "[views][catalogue]") {
  World w;
  // Without a catalogue in the activation, the built-in one is in force.
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<v1::ActivatedCatalogue> in_force = views->CatalogueInForce();
  REQUIRE(in_force.ok());
  CHECK(in_force->catalogue().kinds_size() == 10);
  CHECK(in_force->source_path() == catalogue::kDefaultCatalogueFile);

  // A city whose gas detectors report every 10 minutes.
  v1::Catalogue city = catalogue::KindTable::BuiltIn()->catalogue();
  city.set_name("test city");
  for (v1::DeviceKindSpec& k : *city.mutable_kinds()) {
    if (k.id() == "gas_detector") k.mutable_reporting_interval()->set_seconds(600);
  }
  absl::StatusOr<rules::LoadedRuleSet> loaded = rules::LoadRuleSetText(kRules, "t.yaml");
  REQUIRE(loaded.ok());
  v1::Event activation = rules::RulesetActivatedEvent(*loaded, kT0 + absl::Seconds(1));
  v1::ActivatedCatalogue* c = activation.mutable_ruleset_activated()->mutable_catalogue();
  *c->mutable_catalogue() = city;
  c->set_sha256("0123");
  c->set_source_path("/etc/cityops/city.yaml");
  w.Append(0, std::move(activation));
  w.RegisterKind("gas1", 0, "gas_detector");
  w.Values("gas1", 0, "gas_detector", absl::Minutes(1), {{"gas_lel_pct", 2}});
  w.Tick(0, absl::Minutes(1 + 29));
  REQUIRE(views->CatchUp().ok());
  in_force = views->CatalogueInForce();
  REQUIRE(in_force.ok());
  CHECK(in_force->catalogue().name() == "test city");
  CHECK(in_force->source_path() == "/etc/cityops/city.yaml");
  absl::StatusOr<std::optional<v1::DeviceView>> gas = views->GetDevice("gas1");
  REQUIRE(gas.ok());
  CHECK((*gas)->online());
  // Read back after a restart, the catalogue still gives 10 minutes.
  views.reset();
  views = w.Views("views");
  w.Tick(0, absl::Minutes(1 + 30));
  REQUIRE(views->CatchUp().ok());
  gas = views->GetDevice("gas1");
  REQUIRE(gas.ok());
  CHECK_FALSE((*gas)->online());
}

TEST_CASE("stored envelopes decode as the parsed events read", "[views][stored_event]") {
  std::vector<v1::Event> events;
  {
    v1::Event e;
    e.set_stream_id("device/310104900100001");
    kernel::SetTimestamp(kT0 + absl::Nanoseconds(123), e.mutable_event_time());
    e.mutable_provenance()->mutable_kafka()->set_topic("cityops.readings");
    v1::SensorReading* r = e.mutable_reading();
    r->set_device_id("310104900100001");
    r->set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
    r->mutable_flood_gauge()->set_water_depth_cm(12.5);
    r->mutable_flood_gauge()->set_battery_pct(66.5);
    events.push_back(e);
    r->set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
    r->mutable_manhole_cover()->set_tilt_deg(3);
    r->mutable_manhole_cover()->set_battery_pct(12);
    events.push_back(e);
    r->mutable_elevator()->add_fault_codes(7);  // No battery.
    r->set_kind(v1::DEVICE_KIND_ELEVATOR);
    kernel::SetTimestamp(absl::FromUnixSeconds(-5), e.mutable_event_time());  // Negative.
    events.push_back(e);
    // A catalogue-only kind by metric names: the battery is the number named battery_pct.
    r->set_kind(v1::DEVICE_KIND_UNSPECIFIED);
    r->set_kind_id("gas_detector");
    v1::MetricValues* values = r->mutable_values();
    values->add_values()->set_name("alarm");
    values->mutable_values(0)->set_flag(true);
    values->add_values()->set_name("battery_pct");
    values->mutable_values(1)->set_number(43.5);
    events.push_back(e);
    values->mutable_values(1)->set_flag(false);  // Not a number: no battery.
    events.push_back(e);
  }
  {
    v1::Event e;
    e.set_stream_id("ticket/c-T1");
    e.set_stream_version(3);
    e.mutable_provenance()->set_stage("rules");
    e.mutable_provenance()->set_idempotency_key("rules/ticket/c-T1");
    e.mutable_ticket_issued()->set_ticket_id("c-T1");
    events.push_back(e);                                         // No event time at all.
    e.mutable_provenance()->mutable_actor()->set_user("zhang");  // Actor replaces stage.
    events.push_back(e);
  }
  for (const v1::Event& e : events) {
    INFO(e.ShortDebugString());
    const std::string bytes = e.SerializeAsString();
    projections::StoredEnvelope env;
    REQUIRE(projections::DecodeEnvelope(bytes, &env));
    CHECK(env.stream_id == e.stream_id());
    CHECK(env.has_event_time == e.has_event_time());
    CHECK(env.event_time == kernel::FromTimestamp(e.event_time()));
    CHECK(env.provenance_stage == e.provenance().stage());
    CHECK(env.payload == e.payload_case());
    if (e.has_reading()) {
      CHECK(env.payload_bytes == e.reading().SerializeAsString());
      projections::ReadingHeader h;
      REQUIRE(projections::DecodeReadingHeader(env.payload_bytes, &h));
      CHECK(h.device_id == e.reading().device_id());
      CHECK(h.kind == e.reading().kind());
      CHECK(h.kind_id == e.reading().kind_id());
      double battery = -1;
      const bool has = projections::DecodeBatteryPct(h, &battery);
      if (e.reading().has_flood_gauge()) {
        CHECK(has);
        CHECK(battery == e.reading().flood_gauge().battery_pct());
      } else if (e.reading().has_manhole_cover()) {
        CHECK(has);
        CHECK(battery == e.reading().manhole_cover().battery_pct());
      } else if (e.reading().has_values() && e.reading().values().values(1).has_number()) {
        CHECK(has);
        CHECK(battery == e.reading().values().values(1).number());
      } else {
        CHECK_FALSE(has);
      }
    }
    // Every truncation is either still a valid prefix of fields or refused, never read
    // past its end.
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      projections::StoredEnvelope partial;
      v1::Event parsed;
      const bool decoded = projections::DecodeEnvelope(bytes.substr(0, cut), &partial);
      CHECK(decoded == parsed.ParseFromString(bytes.substr(0, cut)));
    }
  }
  // Fields in another order than protobuf writes them, and unknown fields, are fine.
  v1::Event time_only;
  kernel::SetTimestamp(kT0, time_only.mutable_event_time());
  v1::Event rest = events[0];
  rest.clear_event_time();
  const std::string reordered =
      rest.SerializeAsString() + std::string("\xf8\x07\x01", 3) + time_only.SerializeAsString();
  projections::StoredEnvelope env;
  REQUIRE(projections::DecodeEnvelope(reordered, &env));
  CHECK(env.event_time == kT0);
  CHECK(env.payload == v1::Event::kReading);
  CHECK_FALSE(projections::DecodeEnvelope(std::string("\x1a\x7f"
                                                      "abc",
                                                      5),
                                          &env));
}

TEST_CASE("listings filter and page", "[views]") {
  World w;
  Scenario(w);
  for (int i = 0; i < 25; ++i) w.Register(absl::StrFormat("p%02d", i), i % 2);
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());
  DeviceFilter registered_gauges;
  registered_gauges.kind_id = "flood_gauge";
  registered_gauges.grid_prefix = "310104001";
  std::vector<std::string> ids;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<Page<v1::DeviceView>> page = views->ListDevices(registered_gauges, 10, token);
    REQUIRE(page.ok());
    for (const v1::DeviceView& d : page->items) ids.push_back(d.device_id());
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  CHECK(ids.size() == 27);  // g1, g2 and p00..p24; not the unregistered u9.
  CHECK(pages == 3);
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  DeviceFilter unregistered_only;
  unregistered_only.unregistered_only = true;
  absl::StatusOr<Page<v1::DeviceView>> unregistered = views->ListDevices(unregistered_only, 10);
  REQUIRE(unregistered.ok());
  REQUIRE(unregistered->items.size() == 1);
  CHECK(unregistered->items[0].device_id() == "u9");
  CaseFilter by_stage;
  by_stage.stage = v1::CASE_STAGE_DISPATCHED;
  absl::StatusOr<Page<v1::CaseView>> dispatched = views->ListCases(by_stage, 10);
  REQUIRE(dispatched.ok());
  CHECK(dispatched->items.size() == 1);
  by_stage.stage = v1::CASE_STAGE_CLOSED;
  absl::StatusOr<Page<v1::CaseView>> closed = views->ListCases(by_stage, 10);
  REQUIRE(closed.ok());
  CHECK(closed->items.empty());
  AlertFilter active_only;
  active_only.active_only = true;
  absl::StatusOr<Page<v1::AlertView>> active = views->ListAlerts(active_only, 10);
  REQUIRE(active.ok());
  CHECK(active->items.size() == 1);
}

TEST_CASE("cases list newest reported first and tickets newest issued first, page by page",
          "[views]") {
  World w;
  Scenario(w);  // iot-flood-g1-1, reported at 10 min, dispatched at 32.
  // Reported in an order that is neither their ids' nor their log order's; each of its
  // own category, so none is linked into another.
  REQUIRE(w.Report("R-b", absl::Minutes(50), "A0101").ok());
  REQUIRE(w.Report("R-c", absl::Minutes(41), "A0102").ok());
  REQUIRE(w.Report("R-a", absl::Minutes(45), "A0103").ok());
  w.Rules();  // Opens them.
  for (const auto& [id, at] : {std::pair{"R-a", 60}, {"R-c", 61}, {"R-b", 70}}) {
    REQUIRE(w.Command(projections::CommandKind::kRegister, id, absl::Minutes(at)).ok());
  }
  // Dispatched in yet another order; the rules stage issues each one's ticket at its own
  // time, which only readings and clock ticks move.
  for (const auto& [id, at] : {std::pair{"R-b", 72}, {"R-c", 75}, {"R-a", 80}}) {
    REQUIRE(w.Command(projections::CommandKind::kDispatch, id, absl::Minutes(at)).ok());
    w.Tick(0, absl::Minutes(at));
    w.Tick(1, absl::Minutes(at));
    w.Rules();
  }
  std::unique_ptr<Projections> views = w.Views("views");
  REQUIRE(views->CatchUp().ok());

  auto all_cases = [&](size_t page_size) {
    std::vector<std::string> ids;
    std::string token;
    do {
      absl::StatusOr<Page<v1::CaseView>> page = views->ListCases({}, page_size, token);
      REQUIRE(page.ok());
      for (const v1::CaseView& c : page->items) ids.push_back(c.case_id());
      token = page->next_page_token;
    } while (!token.empty());
    return ids;
  };
  const std::vector<std::string> newest_first = {"R-b", "R-a", "R-c", "iot-flood-g1-1"};
  CHECK(all_cases(10) == newest_first);
  CHECK(all_cases(1) == newest_first);
  // A filter keeps the order.
  CaseFilter dispatched;
  dispatched.stage = v1::CASE_STAGE_DISPATCHED;
  absl::StatusOr<Page<v1::CaseView>> page = views->ListCases(dispatched, 2);
  REQUIRE(page.ok());
  REQUIRE(page->items.size() == 2);
  CHECK(page->items[0].case_id() == "R-b");
  CHECK(page->items[1].case_id() == "R-a");
  // A case is still found by its id, with everything folded into it.
  absl::StatusOr<std::optional<v1::CaseView>> c = views->GetCase("R-c");
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->stage() == v1::CASE_STAGE_DISPATCHED);
  CHECK((*c)->reported_time().seconds() == absl::ToUnixSeconds(kT0 + absl::Minutes(41)));
  absl::StatusOr<std::optional<v1::CaseView>> none = views->GetCase("R-z");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  std::vector<std::string> cases_of_tickets;
  std::string token;
  do {
    absl::StatusOr<Page<v1::TicketView>> tickets = views->ListTickets(1, token);
    REQUIRE(tickets.ok());
    for (const v1::TicketView& t : tickets->items) cases_of_tickets.push_back(t.ticket().case_id());
    token = tickets->next_page_token;
  } while (!token.empty());
  CHECK(cases_of_tickets == std::vector<std::string>{"R-a", "R-c", "R-b", "iot-flood-g1-1"});
}

TEST_CASE("read models of an older layout are rebuilt from the log, not read", "[views]") {
  World w;
  Scenario(w);
  const std::string root = w.ViewOptions("views").dir;
  { REQUIRE(w.Views("views")->CatchUp().ok()); }
  // What cityops before layout 2 wrote: no layout record, cases by id.
  EditDatabase(root + "/gen-1", [](rocksdb::DB& db) {
    REQUIRE(db.Delete(rocksdb::WriteOptions(), "v/layout").ok());
    REQUIRE(db.Put(rocksdb::WriteOptions(), "c/iot-flood-g1-1", "\xff\xff old").ok());
  });
  std::unique_ptr<Projections> views = w.Views("views");
  CHECK(views->generation() == 2);
  CHECK_FALSE(std::filesystem::exists(root + "/gen-1"));
  REQUIRE(views->CatchUp().ok());
  absl::StatusOr<std::optional<v1::CaseView>> c = views->GetCase("iot-flood-g1-1");
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->stage() == v1::CASE_STAGE_DISPATCHED);
  std::unique_ptr<Projections> fresh = w.Views("fresh");
  REQUIRE(fresh->CatchUp().ok());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> a = views->Dump();
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> b = fresh->Dump();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == *b);
  // Opened again, the rebuilt generation is read as it is.
  views.reset();
  CHECK(w.Views("views")->generation() == 2);
}

}  // namespace
}  // namespace cityops::views
