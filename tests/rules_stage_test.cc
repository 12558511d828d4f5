// The rules stage over real parts: a seeded simulator scenario published to the embedded
// Kafka cluster, ingested into a RocksDB log, then the rules stage (live, with restarts
// at random points) and the projections. Checks what the scenario must produce, that a
// replay of the input events into a fresh log derives the same events, and that restarts
// lose and double nothing.
#include "projections/rules/rules_stage.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "cityops/v1/snapshot.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "ingest/embedded_kafka.h"
#include "ingest/envelope.h"
#include "ingest/ingester.h"
#include "ingest/partitioner.h"
#include "ingest/record_producer.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "sim/city.h"
#include "sim/publisher.h"
#include "sim/simulator.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/small_city.h"
#include "tests/testing/temp_dir.h"

namespace cityops::rules {
namespace {

using kernel::EventLog;
using kernel::Partition;
using testing::AllEvents;
using testing::IsDerived;
using testing::NormalizedDerived;

constexpr int kPartitions = 6;

std::unique_ptr<EventLog> OpenLog(const std::string& path) {
  absl::StatusOr<std::unique_ptr<EventLog>> log =
      EventLog::Open({.path = path, .durability = kernel::Durability::kBuffered});
  if (!log.ok()) FAIL(log.status().ToString());
  return *std::move(log);
}

void ActivateDefaultRules(EventLog& log) {
  absl::StatusOr<LoadedRuleSet> loaded = LoadRuleSetText(DefaultRuleSetYaml(), kDefaultRuleSetFile);
  REQUIRE(loaded.ok());
  kernel::AppendBatch batch{Partition(0)};
  batch.Add(RulesetActivatedEvent(*loaded, kernel::FromTimestamp({})));
  REQUIRE(log.Append(std::move(batch)).ok());
}

struct Scenario {
  sim::Scenario scenario = sim::Scenario::kTyphoon;
  absl::Duration duration = absl::Hours(4);
  uint64_t seed = 7;
};

sim::CityOptions SmallCity(uint64_t seed) { return testing::SmallCity(seed, 900); }

// Publishes the scenario to an embedded cluster and ingests all of it into `log`, with
// the rules stage stepping live in a second thread and being restarted at random
// points. Returns the number of restarts.
int IngestWithLiveRules(EventLog& log, const sim::City& city, const Scenario& scenario) {
  absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> kafka =
      ingest::EmbeddedKafka::Start({.brokers = 1,
                                    .topics = {{"cityops.readings", kPartitions},
                                               {"cityops.reports", kPartitions},
                                               {"cityops.devices", kPartitions},
                                               {"cityops.deadletter", 1}}});
  REQUIRE(kafka.ok());
  sim::SimulatorOptions sim_options;
  sim_options.scenario = scenario.scenario;
  sim_options.seed = scenario.seed;
  sim::Simulator simulator(city, sim_options);

  ingest::IngestOptions options;
  options.bootstrap_servers = (*kafka)->bootstrap_servers();
  options.group_id = "rules-stage-test";
  options.clock_tick_interval = absl::ZeroDuration();
  kernel::ManualClock clock(sim_options.start + scenario.duration + absl::Minutes(1));
  options.clock = &clock;
  options.consumer_properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "1000"}};
  absl::StatusOr<std::unique_ptr<ingest::Ingester>> ingester =
      ingest::Ingester::Create(&log, options);
  REQUIRE(ingester.ok());

  std::atomic<bool> done{false};
  std::atomic<int> restarts{0};
  absl::Status stage_status;
  std::thread stage_thread([&] {
    std::mt19937_64 rng(scenario.seed);
    RulesStageOptions stage_options;
    stage_options.log = &log;
    stage_options.partitions = kPartitions;
    stage_options.max_batch_events = 3'000;
    while (!done.load()) {
      absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(stage_options);
      if (!stage.ok()) {
        stage_status = stage.status();
        return;
      }
      // Run a random number of steps, then drop the stage as a crash would.
      const int steps = static_cast<int>(rng() % 40);
      for (int i = 0; i < steps && !done.load(); ++i) {
        absl::StatusOr<size_t> n = (*stage)->Step(/*drain=*/false);
        if (!n.ok()) {
          stage_status = n.status();
          return;
        }
        if (*n == 0) absl::SleepFor(absl::Milliseconds(5));
      }
      ++restarts;
    }
  });

  absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
      ingest::RecordProducer::Create((*kafka)->bootstrap_servers());
  REQUIRE(producer.ok());
  // The devices are registered before they report, as an integrator's device import
  // would be: their registrations are in the log before the first reading is published,
  // so each case knows its grid whatever order the consumer fetches the topics in (a
  // reading from a device not yet registered is handled too, but is another scenario).
  for (size_t i = 0; i < city.devices.size(); ++i) {
    const v1::DeviceRegistered r = city.Registration(i);
    REQUIRE((*producer)->Produce("cityops.devices", r.device_id(), r.SerializeAsString()).ok());
  }
  REQUIRE((*producer)->Flush(absl::Seconds(30)).ok());
  const absl::Time registered_by = absl::Now() + absl::Minutes(1);
  while ((*ingester)->Stats().registrations < city.devices.size()) {
    REQUIRE(absl::Now() < registered_by);
    REQUIRE((*ingester)->PollOnce().ok());
  }
  sim::PublishOptions publish;
  publish.duration = scenario.duration;
  publish.register_devices = false;
  std::atomic<bool> published{false};
  absl::StatusOr<sim::PublishStats> stats;
  std::thread publisher([&] {
    stats = sim::PublishToKafka(simulator, **producer, publish);
    published = true;
  });
  // Until everything published is in the log (the first group join takes seconds).
  const absl::Time deadline = absl::Now() + absl::Minutes(3);
  while (absl::Now() < deadline) {
    absl::StatusOr<size_t> n = (*ingester)->PollOnce();
    REQUIRE(n.ok());
    if (*n > 0 || !published.load()) continue;
    const ingest::IngestStats in = (*ingester)->Stats();
    if (stats.ok() && in.records >= stats->readings + city.devices.size()) break;
  }
  publisher.join();
  done = true;
  stage_thread.join();
  REQUIRE(stage_status.ok());
  REQUIRE(stats.ok());
  const ingest::IngestStats in = (*ingester)->Stats();
  CHECK(in.dead_lettered == 0);
  CHECK(in.readings == stats->readings);
  CHECK(in.registrations == city.devices.size());
  return restarts.load();
}

std::map<std::string, std::vector<v1::Event>> DerivedByType(const EventLog& log) {
  std::map<std::string, std::vector<v1::Event>> out;
  for (const auto& events : AllEvents(log)) {
    for (const v1::Event& e : events) {
      if (!IsDerived(e)) continue;
      const auto* field = v1::Event::descriptor()->FindFieldByNumber(e.payload_case());
      out[field->name()].push_back(e);
    }
  }
  return out;
}

// Covers whose readings in the log say open, the first of them at least two minutes
// before the log's last reading (long past the rule's 30 s hold; the simulator's covers
// stay open once lifted).
std::set<std::string> CoversHeldOpen(const EventLog& log) {
  std::map<std::string, absl::Time> first_open;
  absl::Time last = absl::InfinitePast();
  for (const auto& events : AllEvents(log)) {
    for (const v1::Event& e : events) {
      if (!e.has_reading()) continue;
      const absl::Time t = kernel::FromTimestamp(e.event_time());
      last = std::max(last, t);
      if (e.reading().has_manhole_cover() && e.reading().manhole_cover().cover_open()) {
        first_open.try_emplace(e.reading().device_id(), t);
      }
    }
  }
  std::set<std::string> out;
  for (const auto& [id, t] : first_open) {
    if (t <= last - absl::Minutes(2)) out.insert(id);
  }
  return out;
}

int CountRule(const std::vector<v1::Event>& alerts, std::string_view prefix) {
  int n = 0;
  for (const v1::Event& e : alerts) n += e.alert_raised().rule_id().rfind(prefix, 0) == 0;
  return n;
}

// Appends `city`'s registrations and the scenario's readings from `from` to `to` (time
// since the start) straight to `log`, as ingest would (each on its device's partition,
// in batches of up to 500), without Kafka. Fast enough for tests that are not [slow].
void AppendScenario(EventLog& log, const sim::City& city, sim::Simulator& simulator,
                    absl::Duration to, bool registrations) {
  std::vector<kernel::AppendBatch> batches;
  for (int p = 0; p < kPartitions; ++p) batches.emplace_back(Partition(p));
  auto flush = [&](int p) {
    if (batches[p].empty()) return;
    REQUIRE(log.Append(batches[p]).ok());
    batches[p].Clear();
  };
  auto partition_of = [](const std::string& device) {
    return ingest::KafkaPartitionFor(device, kPartitions);
  };
  if (registrations) {
    for (size_t i = 0; i < city.devices.size(); ++i) {
      v1::Event e;
      v1::DeviceRegistered reg = city.Registration(i);
      e.set_stream_id("registry/" + reg.device_id());
      kernel::SetTimestamp(simulator.start(), e.mutable_event_time());
      const int p = partition_of(reg.device_id());
      *e.mutable_device_registered() = std::move(reg);
      batches[p].Add(std::move(e));
    }
    for (int p = 0; p < kPartitions; ++p) flush(p);
  }
  v1::SensorReading reading;
  while (simulator.Next(simulator.start() + to, &reading)) {
    const int p = partition_of(reading.device_id());
    ingest::FillReadingEvent(reading, "cityops.readings", p, 0, false, batches[p].AddNew());
    if (batches[p].size() == 500) flush(p);
  }
  for (int p = 0; p < kPartitions; ++p) flush(p);
}

// A log holding the default rules and `hours` of a small city's typhoon.
void FillTyphoon(EventLog& log, absl::Duration duration) {
  ActivateDefaultRules(log);
  const sim::City city = sim::GenerateCity(SmallCity(7));
  sim::SimulatorOptions sim_options;
  sim_options.scenario = sim::Scenario::kTyphoon;
  sim_options.seed = 7;
  sim::Simulator simulator(city, sim_options);
  AppendScenario(log, city, simulator, duration, /*registrations=*/true);
}

// A log holding the default rules and four hours of a small city's typhoon, with the
// rule set edited after 150 minutes: the water rules get shorter holds, so every active
// alert of theirs ends and the devices still under water raise again.
void FillTyphoonWithEdit(EventLog& log) {
  ActivateDefaultRules(log);
  const sim::City city = sim::GenerateCity(SmallCity(7));
  sim::SimulatorOptions sim_options;
  sim_options.scenario = sim::Scenario::kTyphoon;
  sim_options.seed = 7;
  sim::Simulator simulator(city, sim_options);
  AppendScenario(log, city, simulator, absl::Minutes(150), /*registrations=*/true);
  std::string yaml(DefaultRuleSetYaml());
  for (std::string_view hold : {"hold_for: 2m", "hold_for: 6m"}) {
    for (size_t at = yaml.find(hold); at != std::string::npos; at = yaml.find(hold, at + 1)) {
      yaml.replace(at, hold.size(), "hold_for: 1m");
    }
  }
  absl::StatusOr<LoadedRuleSet> edited = LoadRuleSetText(yaml, "edited.yaml");
  REQUIRE(edited.ok());
  kernel::AppendBatch batch{Partition(0)};
  batch.Add(RulesetActivatedEvent(*edited, sim_options.start + absl::Minutes(150)));
  REQUIRE(log.Append(std::move(batch)).ok());
  AppendScenario(log, city, simulator, absl::Hours(4), /*registrations=*/false);
}

// The engine's counters (of a stage that processed the whole log itself) and the
// derived events in the log agree: an id reused by the engine would be dropped by the
// log as a duplicate and leave the log short.
void CheckCountersMatchLog(const EventLog& log, const EngineCounters& c) {
  std::map<std::string, std::vector<v1::Event>> derived = DerivedByType(log);
  CHECK(c.alerts_raised == derived["alert_raised"].size());
  CHECK(c.alerts_cleared == derived["alert_cleared"].size());
  CHECK(c.cases_opened == derived["case_opened"].size());
  // A linked report gets a second CaseLinked on its own stream (into_case_id).
  size_t joined = 0;
  for (const v1::Event& e : derived["case_linked"]) joined += !e.case_linked().has_into_case_id();
  CHECK(c.cases_linked == joined);
  CHECK(c.tickets == derived["ticket_issued"].size());
  CHECK(c.overdue == derived["case_overdue"].size());
  CHECK(c.auto_closed == derived["case_closed"].size());
  CHECK(c.alerts_raised > 0);
}

TEST_CASE("a failed append stops the stage until it is reopened, the reopened one loses nothing",
          "[rules]") {
  testing::TempDir dir;
  std::unique_ptr<EventLog> faulty = OpenLog(dir.Sub("faulty"));
  std::unique_ptr<EventLog> clean = OpenLog(dir.Sub("clean"));
  FillTyphoon(*faulty, absl::Hours(3));
  FillTyphoon(*clean, absl::Hours(3));
  {
    RulesStageOptions options;
    options.log = clean.get();
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
    REQUIRE(stage.ok());
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  }
  RulesStageOptions options;
  options.log = faulty.get();
  options.max_batch_events = 2'000;
  // The disk fails on the append of a step that derived alerts and cases.
  int appends = 0;
  uint64_t derived_before = 0;
  RulesStage* running = nullptr;
  options.append_fault = [&]() -> absl::Status {
    ++appends;
    if (running != nullptr && appends > 5 && derived_before == 0 && running->Stats().derived > 0) {
      derived_before = running->Stats().derived;
      return absl::UnavailableError("injected: disk full");
    }
    return absl::OkStatus();
  };
  {
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
    REQUIRE(stage.ok());
    running = stage->get();
    absl::Status failed = (*stage)->CatchUp(/*drain=*/true);
    REQUIRE(derived_before > 0);
    CHECK(failed.code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(failed.message()), Catch::Contains("injected: disk full"));
    // Its engine is past the log now: it must not go on as if the step had been stored.
    absl::StatusOr<size_t> again = (*stage)->Step(/*drain=*/true);
    REQUIRE_FALSE(again.ok());
    CHECK(again.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(again.status().message()), Catch::Contains("reopen"));
    CHECK((*stage)->CatchUp(/*drain=*/true).code() == absl::StatusCode::kFailedPrecondition);
    running = nullptr;
  }
  options.append_fault = nullptr;
  absl::StatusOr<std::unique_ptr<RulesStage>> reopened = RulesStage::Open(options);
  REQUIRE(reopened.ok());
  REQUIRE((*reopened)->CatchUp(/*drain=*/true).ok());
  const std::vector<std::vector<std::string>> a = NormalizedDerived(*faulty);
  const std::vector<std::vector<std::string>> b = NormalizedDerived(*clean);
  REQUIRE(a.size() == b.size());
  for (size_t p = 0; p < a.size(); ++p) {
    INFO("partition " << p);
    CHECK(a[p] == b[p]);
  }
}

// A round of clock ticks at `t`, one per partition in one write, as ingest appends them.
void TickAll(EventLog& log, absl::Time t, int partitions) {
  std::vector<kernel::AppendBatch> round;
  for (int p = 0; p < partitions; ++p) {
    v1::Event e;
    e.set_stream_id("clock");
    kernel::SetTimestamp(t, e.mutable_event_time());
    e.mutable_provenance()->set_stage("ingest.clock");
    e.mutable_clock_tick();
    round.emplace_back(Partition(p)).Add(std::move(e));
  }
  REQUIRE(log.AppendAll(round).ok());
}

uint64_t TotalLag(const RulesStage& stage) {
  uint64_t lag = 0;
  for (const PartitionLag& l : stage.Lag()) lag += l.lag;
  return lag;
}

TEST_CASE(
    "live, an idle stage takes up each round of clock ticks whole (lag 0), and an event "
    "still waits for every quiet partition to pass its time",
    "[rules]") {
  testing::TempDir dir;
  std::unique_ptr<EventLog> log = OpenLog(dir.Sub("log"));
  constexpr int kQuiet = 3;
  ActivateDefaultRules(*log);
  const absl::Time t0 = absl::FromUnixSeconds(1'780'000'000);
  TickAll(*log, t0, kQuiet);
  RulesStageOptions options;
  options.log = log.get();
  options.partitions = kQuiet;
  absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
  REQUIRE(stage.ok());
  const auto step_until_idle = [&] {
    for (;;) {
      absl::StatusOr<size_t> n = (*stage)->Step(/*drain=*/false);
      REQUIRE(n.ok());
      if (*n == 0) return;
    }
  };
  for (int round = 1; round <= 5; ++round) {
    step_until_idle();
    INFO("round " << round);
    CHECK(TotalLag(**stage) == 0);
    TickAll(*log, t0 + absl::Seconds(round), kQuiet);
  }
  step_until_idle();
  CHECK(TotalLag(**stage) == 0);
  const uint64_t processed = (*stage)->Stats().processed;
  CHECK(processed == 1 + 6 * kQuiet);  // The rule set and every tick.

  // A report on the last partition, a second after the last round: the others have not
  // reached its time, so it waits; their next round passes it, and it is taken up.
  const absl::Time reported = t0 + absl::Seconds(6);
  v1::Event report;
  report.set_stream_id("case/R-1");
  kernel::SetTimestamp(reported, report.mutable_event_time());
  report.mutable_provenance()->set_stage("api");
  v1::CaseReported* r = report.mutable_case_reported();
  r->set_case_id("R-1");
  r->mutable_grid()->set_grid_code("310104001001001");
  r->mutable_category()->set_code("E0111");
  kernel::AppendBatch batch{Partition(kQuiet - 1)};
  batch.Add(std::move(report));
  REQUIRE(log->Append(std::move(batch)).ok());
  step_until_idle();
  CHECK(TotalLag(**stage) == 1);
  CHECK((*stage)->Stats().processed == processed);
  TickAll(*log, reported + absl::Milliseconds(500), kQuiet);
  step_until_idle();
  CHECK(TotalLag(**stage) == 0);
  CHECK((*stage)->Stats().processed == processed + 1 + kQuiet);
}

TEST_CASE("the stage's counters cover its own run: replay excluded, and they match the log",
          "[rules]") {
  testing::TempDir dir;
  std::unique_ptr<EventLog> log = OpenLog(dir.Sub("log"));
  FillTyphoon(*log, absl::Hours(3));
  RulesStageOptions options;
  options.log = log.get();
  {
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
    REQUIRE(stage.ok());
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
    const RulesStageStats stats = (*stage)->Stats();
    CHECK(stats.replayed == 0);
    CHECK(stats.processed > 0);
    CheckCountersMatchLog(*log, stats.engine);
  }
  absl::StatusOr<std::unique_ptr<RulesStage>> again = RulesStage::Open(options);
  REQUIRE(again.ok());
  REQUIRE((*again)->CatchUp(/*drain=*/true).ok());
  const RulesStageStats stats = (*again)->Stats();
  CHECK(stats.replayed > 0);
  CHECK(stats.processed == 0);
  CHECK(stats.derived == 0);
  CHECK(stats.engine.alerts_raised == 0);  // Re-derived while replaying: not this run's.
  CHECK(stats.engine.cases_opened == 0);
  CHECK(stats.engine.readings == 0);
}

TEST_CASE("a rule set edited mid-log: new alerts get new ids and the counters match the log",
          "[rules]") {
  testing::TempDir dir;
  std::unique_ptr<EventLog> log = OpenLog(dir.Sub("log"));
  FillTyphoonWithEdit(*log);

  RulesStageOptions options;
  options.log = log.get();
  absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
  REQUIRE(stage.ok());
  // A reused id would be reported by the log as a duplicate: the stage fails (INTERNAL).
  REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  CheckCountersMatchLog(*log, (*stage)->Stats().engine);
  std::set<std::string> ids;
  int second_alerts = 0;
  std::map<std::string, std::vector<v1::Event>> derived = DerivedByType(*log);
  for (const v1::Event& e : derived["alert_raised"]) {
    CHECK(ids.insert(e.alert_raised().alert_id()).second);
    second_alerts += e.alert_raised().alert_id().ends_with("-2");
  }
  CHECK(second_alerts > 0);  // Devices that raised again after the edit.
}

// The derived events of `a` and `b` agree byte for byte, partition by partition.
void CheckSameDerived(const EventLog& a, const EventLog& b) {
  const std::vector<std::vector<std::string>> da = NormalizedDerived(a);
  const std::vector<std::vector<std::string>> db = NormalizedDerived(b);
  REQUIRE(da.size() == db.size());
  size_t total = 0;
  for (size_t p = 0; p < da.size(); ++p) {
    INFO("partition " << p);
    REQUIRE(da[p].size() == db[p].size());
    for (size_t i = 0; i < da[p].size(); ++i) {
      INFO("derived event " << i);
      CHECK(da[p][i] == db[p][i]);
    }
    total += da[p].size();
  }
  CHECK(total > 100);
}

TEST_CASE("typhoon: ingest, live rules with restarts, and a replay that derives the same",
          "[rules][scenario][slow]") {
  testing::TempDir dir;
  const sim::City city = sim::GenerateCity(SmallCity(7));
  std::unique_ptr<EventLog> live = OpenLog(dir.Sub("live"));
  ActivateDefaultRules(*live);
  const int restarts = IngestWithLiveRules(*live, city, Scenario{});
  CHECK(restarts >= 3);
  {
    RulesStageOptions stage_options;
    stage_options.log = live.get();
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(stage_options);
    REQUIRE(stage.ok());
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
    for (const PartitionLag& lag : (*stage)->Lag()) CHECK(lag.lag == 0);
  }

  // What the typhoon must produce.
  std::map<std::string, std::vector<v1::Event>> derived = DerivedByType(*live);
  const std::vector<v1::Event>& alerts = derived["alert_raised"];
  std::set<std::string> low_grids;
  for (const sim::Grid& g : city.grids) {
    if (g.low_lying) low_grids.insert(g.code);
  }
  int waterlogging_low = 0;
  int waterlogging_high = 0;
  for (const v1::Event& e : derived["case_opened"]) {
    if (e.case_opened().category().code() != "E0111") continue;
    (low_grids.contains(e.case_opened().grid().grid_code()) ? waterlogging_low
                                                            : waterlogging_high)++;
  }
  // Per grid, the low-lying ones flood more.
  const double low_rate = static_cast<double>(waterlogging_low) / low_grids.size();
  const double high_rate =
      static_cast<double>(waterlogging_high) / (city.grids.size() - low_grids.size());
  INFO("waterlogging cases: " << waterlogging_low << " in " << low_grids.size()
                              << " low-lying grids, " << waterlogging_high << " in the other "
                              << city.grids.size() - low_grids.size());
  CHECK(waterlogging_low > 0);
  CHECK(low_rate > 1.2 * high_rate);
  CHECK(CountRule(alerts, "curtain-wall.vibration") > 0);
  CHECK(CountRule(alerts, "manhole.well-overflow") > 0);
  CHECK(CountRule(alerts, "flood.road-15cm") > 0);
  // Displaced covers (lifted by the water or failing) raised their alert.
  std::set<std::string> cover_alerts;
  for (const v1::Event& e : alerts) {
    if (e.alert_raised().rule_id().rfind("manhole.cover-open", 0) == 0) {
      cover_alerts.insert(e.alert_raised().device_id());
    }
  }
  const std::set<std::string> held = CoversHeldOpen(*live);
  CHECK(!held.empty());
  for (const std::string& id : held) {
    INFO("cover " << id << " stayed open");
    CHECK(cover_alerts.contains(id));
  }
  // Every dispatch and every failed verification produced exactly one ticket.
  size_t failed = 0;
  for (const v1::Event& e : derived["case_verified"]) failed += !e.case_verified().passed();
  CHECK(derived["ticket_issued"].size() == derived["case_dispatched"].size() + failed);
  std::set<std::string> ticket_ids;
  for (const v1::Event& e : derived["ticket_issued"]) {
    CHECK(ticket_ids.insert(e.ticket_issued().ticket_id()).second);
  }

  // Replay: the input events alone, into a fresh log, derive the same events.
  std::unique_ptr<EventLog> replay = OpenLog(dir.Sub("replay"));
  testing::CopyInputs(*live, *replay);
  {
    RulesStageOptions stage_options;
    stage_options.log = replay.get();
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(stage_options);
    REQUIRE(stage.ok());
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
    // One run from scratch: what its engine derived is what the log holds (a reused id
    // would have been dropped by the log). The live log, restarted at random points,
    // must then hold exactly the same (below): nothing lost, nothing doubled.
    CheckCountersMatchLog(*replay, (*stage)->Stats().engine);
  }
  CheckSameDerived(*live, *replay);
}

TEST_CASE("a normal day: traffic spikes on manhole covers raise nothing",
          "[rules][scenario][slow]") {
  testing::TempDir dir;
  const sim::City city = sim::GenerateCity(SmallCity(11));
  // The readings the simulator will send: covers spiking without being open.
  sim::SimulatorOptions sim_options;
  sim_options.scenario = sim::Scenario::kNormalDay;
  sim_options.seed = 11;
  Scenario scenario{.scenario = sim::Scenario::kNormalDay, .duration = absl::Hours(6), .seed = 11};
  std::set<std::string> opened;
  int spikes = 0;
  {
    sim::Simulator preview(city, sim_options);
    preview.Step(scenario.duration, [&](const v1::SensorReading& r) {
      if (!r.has_manhole_cover()) return;
      if (r.manhole_cover().cover_open()) opened.insert(r.device_id());
      if (r.manhole_cover().tilt_deg() >= 10 && !r.manhole_cover().cover_open()) ++spikes;
    });
  }
  std::unique_ptr<EventLog> log = OpenLog(dir.Sub("log"));
  ActivateDefaultRules(*log);
  IngestWithLiveRules(*log, city, scenario);
  // Covers hardly ever fail on a normal day (2e-4 a day each): so that the check below
  // is not vacuous, one cover really opens after the day and stays open for 3 minutes.
  std::string broken;
  for (size_t i = 0; i < city.devices.size() && broken.empty(); ++i) {
    if (city.devices[i].kind == v1::DEVICE_KIND_MANHOLE_COVER) broken = city.DeviceIdOf(i);
  }
  REQUIRE(!broken.empty());
  opened.insert(broken);
  {
    const Partition p(ingest::KafkaPartitionFor(broken, kPartitions));
    kernel::AppendBatch batch(p);
    for (int s = 0; s <= 180; s += 20) {
      v1::SensorReading r;
      r.set_device_id(broken);
      r.set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
      r.set_reading_id(absl::StrFormat("broken-%d", s));
      kernel::SetTimestamp(sim_options.start + scenario.duration + absl::Seconds(60 + s),
                           r.mutable_event_time());
      r.mutable_manhole_cover()->set_cover_open(true);
      r.mutable_manhole_cover()->set_tilt_deg(35);
      ingest::FillReadingEvent(r, "cityops.readings", static_cast<int32_t>(p.value()), 0, false,
                               batch.AddNew());
    }
    REQUIRE(log->Append(std::move(batch)).ok());
  }
  RulesStageOptions stage_options;
  stage_options.log = log.get();
  absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(stage_options);
  REQUIRE(stage.ok());
  REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  INFO(spikes << " spike readings of 10 degrees or more; " << opened.size() << " covers opened");
  CHECK(spikes > 0);
  std::map<std::string, std::vector<v1::Event>> derived = DerivedByType(*log);
  std::set<std::string> alerted;
  for (const v1::Event& e : derived["alert_raised"]) {
    if (e.alert_raised().rule_id().rfind("manhole.cover-open", 0) != 0) continue;
    alerted.insert(e.alert_raised().device_id());
    CHECK(opened.contains(e.alert_raised().device_id()));
  }
  // Not vacuous: the covers that really opened did alert.
  const std::set<std::string> held = CoversHeldOpen(*log);
  CHECK(held.contains(broken));
  for (const std::string& id : held) {
    INFO("cover " << id << " stayed open");
    CHECK(alerted.contains(id));
  }
}

// ---------------------------------------------------------------------------------------
// Snapshots (issue 12): restart from the engine's stored state, not from all of history.

// Small batches and frequent snapshots, so that a small log sees many of both.
RulesStageOptions SnapshotEvery(EventLog* log, uint64_t events) {
  RulesStageOptions options;
  options.log = log;
  options.max_batch_events = 2'000;
  options.snapshot_every_events = events;
  options.snapshot_interval = absl::InfiniteDuration();
  return options;
}

// One stage that runs over the whole log without a snapshot or a restart.
void DeriveOnce(EventLog& log) {
  RulesStageOptions options = SnapshotEvery(&log, 0);
  options.use_snapshot = false;
  absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
  REQUIRE(stage.ok());
  REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  CHECK((*stage)->Stats().snapshots_written == 0);
}

std::string StoredSnapshot(const EventLog& log) {
  absl::StatusOr<std::optional<std::string>> stored = log.StoredSnapshot(kRulesCheckpoint);
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  return **stored;
}

void StoreSnapshot(EventLog& log, std::string bytes) {
  std::vector<kernel::AppendBatch> none;
  REQUIRE(log.AppendAll(none, kernel::StageSnapshot{kRulesCheckpoint, std::move(bytes)}).ok());
}

TEST_CASE("restarts at snapshots and between them derive byte for byte what one run derives",
          "[rules][snapshot]") {
  testing::TempDir dir;
  std::unique_ptr<EventLog> once = OpenLog(dir.Sub("once"));
  std::unique_ptr<EventLog> restarted = OpenLog(dir.Sub("restarted"));
  FillTyphoonWithEdit(*once);
  FillTyphoonWithEdit(*restarted);
  DeriveOnce(*once);

  const RulesStageOptions options = SnapshotEvery(restarted.get(), 7'000);
  RulesStageOptions from_zero = options;
  from_zero.use_snapshot = false;
  std::mt19937_64 rng(12);
  int at_snapshot = 0;       // Restored, nothing to replay: restarted right after a snapshot.
  int after_snapshot = 0;    // Restored, then replayed the events since.
  int without_snapshot = 0;  // None stored yet: replayed the log.
  uint64_t snapshots = 0;
  for (bool done = false; !done;) {
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
    REQUIRE(stage.ok());
    const RulesStageStats opened = (*stage)->Stats();
    CHECK(opened.snapshot_refused.empty());
    if (!opened.restored_from_snapshot) {
      ++without_snapshot;
    } else {
      ++(opened.replayed == 0 ? at_snapshot : after_snapshot);
      // Restoring and replaying the rest ends in the state a replay from zero reaches.
      absl::StatusOr<std::unique_ptr<RulesStage>> replayed = RulesStage::Open(from_zero);
      REQUIRE(replayed.ok());
      CHECK_FALSE((*replayed)->Stats().restored_from_snapshot);
      absl::StatusOr<std::string> restored_state = (*stage)->Snapshot();
      absl::StatusOr<std::string> replayed_state = (*replayed)->Snapshot();
      REQUIRE(restored_state.ok());
      REQUIRE(replayed_state.ok());
      CHECK(*restored_state == *replayed_state);
    }
    // Run 1 to 6 steps of 2,000 events, then drop the stage as a crash would.
    const int steps = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < steps && !done; ++i) {
      absl::StatusOr<size_t> n = (*stage)->Step(/*drain=*/true);
      REQUIRE(n.ok());
      done = *n == 0;
    }
    snapshots += (*stage)->Stats().snapshots_written;
  }
  INFO(at_snapshot << " restarts at a snapshot, " << after_snapshot << " after one, "
                   << without_snapshot << " before the first; " << snapshots << " snapshots");
  CHECK(at_snapshot > 0);
  CHECK(after_snapshot > 0);
  CHECK(without_snapshot > 0);
  CHECK(snapshots > 5);
  CheckSameDerived(*restarted, *once);
}

TEST_CASE("an engine restored from its exported state exports the same bytes",
          "[rules][snapshot]") {
  testing::TempDir dir;
  std::unique_ptr<EventLog> log = OpenLog(dir.Sub("log"));
  FillTyphoonWithEdit(*log);
  absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(SnapshotEvery(log.get(), 0));
  REQUIRE(stage.ok());
  // Into the storm, past the edit of the rule set: alerts, cases and timers in flight.
  for (int i = 0; i < 60; ++i) REQUIRE((*stage)->Step(/*drain=*/true).ok());
  absl::StatusOr<std::string> bytes = (*stage)->Snapshot();
  REQUIRE(bytes.ok());
  v1::RulesStageSnapshot snapshot;
  REQUIRE(snapshot.ParseFromString(*bytes));
  CHECK(snapshot.format_version() == kRulesSnapshotVersion);
  const v1::RulesEngineState& state = snapshot.engine();
  CHECK(state.devices_size() > 900);  // The devices and the grids' pseudo-devices.
  CHECK(state.cases_size() > 0);
  CHECK(state.timers_size() > 0);
  REQUIRE(state.has_rule_set());
  CHECK(state.rule_set().sequence() > 0);  // The edited rule set, not the first one.
  absl::StatusOr<std::vector<v1::Event>> ruleset = log->Read(
      Partition(state.rule_set().partition()), kernel::Sequence(state.rule_set().sequence()), 1);
  REQUIRE(ruleset.ok());
  REQUIRE(ruleset->size() == 1);

  RulesEngine engine;
  absl::Status restored = engine.RestoreState(state, &ruleset->front());
  INFO(restored.ToString());
  REQUIRE(restored.ok());
  v1::RulesEngineState again;
  REQUIRE(engine.ExportState(&again).ok());
  v1::RulesStageSnapshot round_trip = snapshot;
  *round_trip.mutable_engine() = again;
  std::string round_trip_bytes;
  {
    google::protobuf::io::StringOutputStream stream(&round_trip_bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    round_trip.SerializeToCodedStream(&coded);
  }
  CHECK(round_trip_bytes == *bytes);

  // A rule set other than the one named is not restored from.
  v1::Event wrong = ruleset->front();
  wrong.mutable_ruleset_activated()->set_sha256("0000");
  RulesEngine refused;
  const absl::Status s = refused.RestoreState(state, &wrong);
  CHECK(s.code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(s.message()), Catch::Contains("sha256"));
  CHECK(refused.devices() == 0);  // Left as it was.
}

TEST_CASE("a snapshot that cannot be used is refused, with the reason, and the log replayed",
          "[rules][snapshot]") {
  struct Spoil {
    std::string name;
    std::function<std::string(const std::string&)> spoil;
    std::string reason;
  };
  auto edit = [](std::function<void(v1::RulesStageSnapshot&)> change) {
    return [change](const std::string& bytes) {
      v1::RulesStageSnapshot snapshot;
      if (!snapshot.ParseFromString(bytes))
        throw std::runtime_error("stored snapshot does not parse");
      change(snapshot);
      return snapshot.SerializeAsString();
    };
  };
  const Spoil spoil = GENERATE_COPY(
      Spoil{"a newer format version", edit([](v1::RulesStageSnapshot& s) {
              s.set_format_version(kRulesSnapshotVersion + 1);
            }),
            "written by a newer cityops"},
      Spoil{"damaged bytes",
            [](const std::string& bytes) { return std::string(11, '\xff') + bytes; },
            "not a valid cityops.v1.RulesStageSnapshot"},
      Spoil{"a rule state of a rule that does not exist", edit([](v1::RulesStageSnapshot& s) {
              for (v1::EngineDevice& d : *s.mutable_engine()->mutable_devices()) {
                if (d.rules_size() > 0) {
                  d.mutable_rules(0)->set_rule_index(999);
                  return;
                }
              }
              throw std::runtime_error("no device has a rule state");
            }),
            "inconsistent"},
      Spoil{"a position past the checkpoint", edit([](v1::RulesStageSnapshot& s) {
              s.mutable_partitions(0)->set_next(s.partitions(0).next() + 1'000'000);
            }),
            "past the stage's checkpoint"});
  INFO("the snapshot has " << spoil.name);
  testing::TempDir dir;
  std::unique_ptr<EventLog> once = OpenLog(dir.Sub("once"));
  std::unique_ptr<EventLog> log = OpenLog(dir.Sub("log"));
  FillTyphoon(*once, absl::Hours(3));
  FillTyphoon(*log, absl::Hours(3));
  DeriveOnce(*once);
  const RulesStageOptions options = SnapshotEvery(log.get(), 7'000);
  {
    absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
    REQUIRE(stage.ok());
    for (int i = 0; i < 10; ++i) REQUIRE((*stage)->Step(/*drain=*/true).ok());
    REQUIRE((*stage)->Stats().snapshots_written > 0);
  }
  StoreSnapshot(*log, spoil.spoil(StoredSnapshot(*log)));
  absl::StatusOr<std::unique_ptr<RulesStage>> stage = RulesStage::Open(options);
  REQUIRE(stage.ok());
  const RulesStageStats opened = (*stage)->Stats();
  CHECK_FALSE(opened.restored_from_snapshot);
  CHECK_THAT(opened.snapshot_refused, Catch::Contains(spoil.reason));
  CHECK(opened.replayed >= 20'000);  // Ten steps of 2,000: all of it, from the start.
  REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  CheckSameDerived(*log, *once);
  // Its next snapshot replaced the spoilt one.
  CHECK((*stage)->Stats().snapshots_written > 0);
  v1::RulesStageSnapshot replaced;
  CHECK(replaced.ParseFromString(StoredSnapshot(*log)));
  CHECK(replaced.format_version() == kRulesSnapshotVersion);
}

}  // namespace
}  // namespace cityops::rules
