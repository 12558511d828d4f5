#include "daemon/demo.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "catalogue/catalogue.h"
#include "catalogue/kinds.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/logging.h"
#include "daemon/rule_activation.h"
#include "ingest/record_producer.h"
#include "kernel/clock.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "projections/rules/compile.h"
#include "projections/views/views.h"
#include "projections/workflow.h"
#include "sim/city.h"
#include "sim/publisher.h"
#include "sim/simulator.h"
#include "spdlog/spdlog.h"

namespace cityops::daemon {

namespace {

// Backpressure on the simulator, in records behind on one partition (about 130 bytes
// each, against the embedded cluster's 5 MiB per partition).
constexpr int64_t kPauseAtLag = 20'000;
constexpr int64_t kResumeAtLag = 5'000;

// A token for this run: 24 random bytes from the kernel, as hex. Not part of any
// simulation, so not seeded.
std::string NewToken() {
  unsigned char bytes[24] = {};
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)!::read(fd, bytes, sizeof(bytes));
    ::close(fd);
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

v1::ApiToken Token(const std::string& user, v1::Role role, v1::GridLevel level,
                   const std::string& code, const std::string& department = "") {
  v1::ApiToken t;
  t.set_token(NewToken());
  t.set_user(user);
  t.set_role(role);
  t.mutable_unit()->set_level(level);
  t.mutable_unit()->set_code(code);
  t.mutable_unit()->set_department(department);
  return t;
}

// The departments cases go to under `rule_set`: its rules' and categories', and
// city-management, which the simulated crew dispatches reports of no category to. Sorted.
std::vector<std::string> Departments(const v1::RuleSet& rule_set) {
  std::set<std::string> out = {"city-management"};
  for (const v1::Rule& r : rule_set.rules()) {
    if (!r.case_().department().empty()) out.insert(r.case_().department());
  }
  for (const v1::CategoryPolicy& c : rule_set.categories()) {
    if (!c.department().empty()) out.insert(c.department());
  }
  return {out.begin(), out.end()};
}

// The latest event time in the log: a new run's simulated time starts after it.
absl::Time LogEnd(const kernel::EventLog& log) {
  absl::Time end = absl::InfinitePast();
  for (kernel::Partition p : log.Partitions()) {
    std::optional<kernel::Sequence> last = log.LastSequence(p);
    if (!last) continue;
    absl::StatusOr<std::vector<v1::Event>> events = log.Read(p, *last, 1);
    if (events.ok() && !events->empty()) {
      end = std::max(end, kernel::FromTimestamp(events->front().event_time()));
    }
  }
  return end;
}

// The operator of the unit at `level` that serves `grid`: "district.310104", ...
v1::Actor OperatorAt(v1::GridLevel level, const v1::GridRef& grid) {
  v1::Actor a;
  a.set_role(v1::ROLE_OPERATOR);
  a.mutable_unit()->set_level(level);
  switch (level) {
    case v1::GRID_LEVEL_CITY_CENTER:
      a.mutable_unit()->set_code("city");
      a.set_user("city.center");
      return a;
    case v1::GRID_LEVEL_DISTRICT_CENTER:
      a.mutable_unit()->set_code(grid.district_code());
      a.set_user("district." + grid.district_code());
      return a;
    case v1::GRID_LEVEL_RESIDENTIAL_STATION:
      a.mutable_unit()->set_code(grid.grid_code());
      a.set_user("station." + grid.grid_code());
      return a;
    default:
      a.mutable_unit()->set_level(v1::GRID_LEVEL_STREET_CENTER);
      a.mutable_unit()->set_code(grid.street_code());
      a.set_user("street." + grid.street_code());
      return a;
  }
}

v1::Actor StreetCenter(const v1::GridRef& grid) {
  return OperatorAt(v1::GRID_LEVEL_STREET_CENTER, grid);
}

// The operator of a grid unit (the one that verifies and closes a case).
v1::Actor OperatorOf(const v1::OrgUnit& unit) {
  v1::Actor a;
  a.set_role(v1::ROLE_OPERATOR);
  *a.mutable_unit() = unit;
  switch (unit.level()) {
    case v1::GRID_LEVEL_CITY_CENTER:
      a.set_user("city.center");
      break;
    case v1::GRID_LEVEL_DISTRICT_CENTER:
      a.set_user("district." + unit.code());
      break;
    case v1::GRID_LEVEL_RESIDENTIAL_STATION:
      a.set_user("station." + unit.code());
      break;
    default:
      a.set_user("street." + unit.code());
      break;
  }
  return a;
}

// The crew of `department`, which handles that department's cases (处置). One crew per
// department for the whole city, a city-center crew unit: the departments come from the
// rule set (plus city-management for reports), not from a roster, and a city-level crew
// serves every grid of whatever city the simulator made, whose districts a per-district
// roster would have to follow. The handling is attributed to the department all the same.
v1::Actor CrewOf(const std::string& department) {
  v1::Actor a;
  a.set_user("crew." + department);
  a.set_role(v1::ROLE_OPERATOR);
  a.mutable_unit()->set_level(v1::GRID_LEVEL_CITY_CENTER);
  a.mutable_unit()->set_code("city");
  a.mutable_unit()->set_department(department);
  return a;
}

// What the demo's crew does with one case: a fixed plan from the case id, so that a run
// is reproducible from its log.
struct Plan {
  double handle_after = 0;  // Of the handling allowance; 0 = never handled.
  double act_after = 0.2;   // Of an allowance, for registering, dispatching, verifying.
  bool verification_passes = true;
};

Plan PlanFor(const std::string& case_id, uint64_t seed) {
  std::mt19937_64 rng(absl::HashOf(case_id, seed));
  std::uniform_real_distribution<double> unit(0, 1);
  Plan p;
  const double roll = unit(rng);
  if (roll < 0.6) {
    p.handle_after = 0.3 + 0.6 * unit(rng);  // On time.
  } else if (roll < 0.88) {
    p.handle_after = 1.1 + 0.8 * unit(rng);  // Late: yellow.
  } else {
    p.handle_after = 0;  // Not handled: red, urged.
  }
  p.act_after = 0.1 + 0.5 * unit(rng);
  p.verification_passes = unit(rng) < 0.85;
  return p;
}

}  // namespace

class Demo::Impl {
 public:
  explicit Impl(const DemoOptions& options)
      : options_(options), clock_(absl::Now(), options.acceleration) {}

  absl::Status Start(std::ostream* announce) {
    if (!IsLoopbackAddress(options_.listen_address) && !options_.allow_plaintext) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "refusing to start: the demo serves plain HTTP, and --listen %s is not a loopback "
          "address: its tokens would cross the network unencrypted. Use --listen 127.0.0.1 "
          "(the default), or pass --allow-plaintext to accept that; `cityops serve` with "
          "http.tls serves HTTPS",
          options_.listen_address));
    }
    v1::ServeConfig config = DefaultServeConfig();
    config.set_data_dir(options_.data_dir);
    config.mutable_kafka()->set_embedded_partitions(static_cast<int32_t>(options_.partitions));
    config.mutable_http()->set_listen_address(options_.listen_address);
    config.mutable_http()->set_port(options_.port);
    config.mutable_http()->set_allow_plaintext(options_.allow_plaintext);
    *config.mutable_logging() = options_.logging;
    if (config.logging().level().empty()) config.mutable_logging()->set_level("info");
    if (config.logging().format().empty()) config.mutable_logging()->set_format("text");
    // Ticks carry simulated time: a reading is some wall milliseconds on its way to
    // Kafka, which the acceleration stretches. Half a wall second of slack keeps it
    // ahead of the ticks (and the ticks within a minute of simulated time at 120x).
    kernel::ToDurationProto(
        std::max(absl::Seconds(2), absl::Milliseconds(500) * options_.acceleration),
        config.mutable_ingest()->mutable_clock_tick_delay());
    const v1::ApiToken viewer =
        Token("demo.viewer", v1::ROLE_VIEWER, v1::GRID_LEVEL_CITY_CENTER, "city");
    const v1::ApiToken supervisor =
        Token("demo.supervisor", v1::ROLE_SUPERVISOR, v1::GRID_LEVEL_CITY_CENTER, "city");
    const v1::ApiToken admin =
        Token("demo.admin", v1::ROLE_ADMIN, v1::GRID_LEVEL_CITY_CENTER, "city");
    *config.add_tokens() = viewer;
    *config.add_tokens() = supervisor;
    *config.add_tokens() = admin;
    // A city-wide crew token per department, to handle (处置) cases by hand (--no-crew):
    // grid units' tokens do not (projections/workflow.h).
    absl::StatusOr<rules::LoadedRuleSet> rule_set =
        LoadConfiguredRuleSet(config.rules().file(), config.catalogue().file());
    if (!rule_set.ok()) return rule_set.status();
    std::vector<v1::ApiToken> crews;
    for (const std::string& department : Departments(rule_set->rule_set)) {
      crews.push_back(Token("crew." + department, v1::ROLE_OPERATOR, v1::GRID_LEVEL_CITY_CENTER,
                            "city", department));
      *config.add_tokens() = crews.back();
    }

    sim::CityOptions city;
    city.seed = options_.seed;
    city.devices = options_.devices;
    // The configured catalogue's kinds, the catalogue-only ones on top of the typed.
    absl::StatusOr<catalogue::LoadedCatalogue> loaded =
        catalogue::LoadConfiguredCatalogue(config.catalogue().file());
    if (!loaded.ok()) return loaded.status();
    city.kinds = catalogue::KindTable::FromCatalogue(loaded->catalogue);
    city_ = sim::GenerateCity(city);
    if (!sim::ParseScenario(options_.scenario, &scenario_)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown scenario '%s'; use normal, typhoon or elevator-wave", options_.scenario));
    }

    DaemonOptions daemon;
    daemon.config = config;
    daemon.clock = &clock_;
    daemon.announce = announce;
    absl::StatusOr<std::unique_ptr<Daemon>> started = Daemon::Start(daemon);
    if (!started.ok()) return started.status();
    daemon_ = *std::move(started);

    // Simulated time continues after whatever the data directory holds.
    start_ = std::max(absl::Now(), LogEnd(daemon_->log()));
    start_ = absl::FromUnixSeconds(absl::ToUnixSeconds(start_));

    if (announce != nullptr) {
      const std::string base = absl::StrFormat(
          "http://%s:%d/",
          options_.listen_address == "0.0.0.0" ? "127.0.0.1" : options_.listen_address,
          daemon_->http_port());
      std::string crew_tokens;
      for (const v1::ApiToken& t : crews) {
        absl::StrAppend(&crew_tokens, crew_tokens.empty() ? "" : ", ", t.unit().department(), " ",
                        t.token());
      }
      *announce << "dashboard: " << base << "#token=" << viewer.token() << "\n"
                << "tokens: viewer " << viewer.token() << ", supervisor " << supervisor.token()
                << ", admin " << admin.token() << "\n"
                << "crew tokens (handle the department's cases): " << crew_tokens << "\n"
                << absl::StrFormat(
                       "demo: %s scenario, %d devices, simulated time from %s at %gx; Ctrl-C "
                       "stops it",
                       sim::ScenarioName(scenario_), city_.devices.size(),
                       absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", start_, absl::UTCTimeZone()),
                       options_.acceleration)
                << std::endl;
    }
    simulator_thread_ = std::thread([this] { Simulate(); });
    if (options_.crew) crew_thread_ = std::thread([this] { Crew(); });
    return absl::OkStatus();
  }

  absl::Status Wait() {
    // The simulator and the crew use the daemon: they stop before it shuts down.
    while (!stop_.load() && !daemon_->Stopping()) absl::SleepFor(absl::Milliseconds(100));
    stop_.store(true);
    if (simulator_thread_.joinable()) simulator_thread_.join();
    if (crew_thread_.joinable()) crew_thread_.join();
    daemon_->RequestStop();
    const absl::Status daemon_status = daemon_->Wait();
    absl::MutexLock lock(&mu_);
    if (!daemon_status.ok()) return daemon_status;
    return failure_;
  }

  void RequestStop() { stop_.store(true); }

 private:
  void Fail(absl::Status s) {
    spdlog::error("demo: {}", s.ToString());
    {
      absl::MutexLock lock(&mu_);
      if (failure_.ok()) failure_ = s;
    }
    RequestStop();
  }

  // Publishes the simulated city into the embedded cluster until the demo stops.
  void Simulate() {
    // Publish only once ingest owns the partitions: the embedded topics are new, and a
    // position stored by an earlier run must meet an empty topic to be recognized as such.
    while (!stop_.load() && !daemon_->Ready()) absl::SleepFor(absl::Milliseconds(100));
    if (stop_.load()) return;
    absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
        ingest::RecordProducer::Create(daemon_->kafka_bootstrap());
    if (!producer.ok()) return Fail(producer.status());
    sim::SimulatorOptions sim_options;
    sim_options.scenario = scenario_;
    sim_options.seed = options_.seed;
    sim_options.start = start_;
    sim::Simulator simulator(city_, sim_options);
    sim::PublishOptions publish;
    publish.duration = absl::Hours(24 * 365);  // Until the demo stops.
    publish.acceleration = options_.acceleration;
    // The embedded cluster keeps only about 5 MiB per partition: the city must not run
    // ahead of ingest by more than that, or records would be lost (and ingest would stop,
    // loudly). When ingest falls behind, simulated time waits for it.
    publish.wait_while_behind = [this] {
      if (daemon_->MaxConsumerLag() < kPauseAtLag) return;
      clock_.Pause();
      // Said once at info level; it happens whenever the machine is busy.
      spdlog::log(waits_++ == 0 ? spdlog::level::info : spdlog::level::debug,
                  "demo: ingest is {} records behind; the simulation waits for it (this machine "
                  "cannot keep up with --acceleration {} for {} devices)",
                  daemon_->MaxConsumerLag(), options_.acceleration, city_.devices.size());
      while (!stop_.load() && daemon_->MaxConsumerLag() > kResumeAtLag) {
        absl::SleepFor(absl::Milliseconds(50));
      }
      clock_.Resume();
    };
    clock_.Start(start_);
    simulating_.store(true);
    absl::StatusOr<sim::PublishStats> stats =
        sim::PublishToKafka(simulator, **producer, publish, &stop_);
    if (!stats.ok()) return Fail(stats.status());
    spdlog::info("demo: the simulator published {} registrations and {} readings", stats->devices,
                 stats->readings);
  }

  // The simulated crew: works the cases once a second of wall time.
  void Crew() {
    const projections::CaseWorkflow::Options wf{
        .log = &daemon_->log(), .clock = &clock_, .partitions = options_.partitions};
    projections::CaseWorkflow workflow(wf);
    std::mt19937_64 rng(options_.seed ^ 0xc0ffee);
    absl::Time next_report = absl::InfinitePast();
    uint64_t reports = 0;
    while (!stop_.load()) {
      absl::SleepFor(absl::Seconds(1));
      if (!simulating_.load()) continue;
      const absl::Time now = clock_.Now();
      if (next_report == absl::InfinitePast()) next_report = now + absl::Minutes(5);
      // A report every 10 to 30 simulated minutes about a random grid: a 12345 call filed
      // by its district center, or a patrol's report filed by its street center.
      while (now >= next_report && !stop_.load()) {
        const sim::Grid& grid = city_.grids[rng() % city_.grids.size()];
        static constexpr const char* kCategories[][2] = {
            {"0103", "Manhole cover damaged or missing"},
            {"E0111", "Road waterlogging"},
            {"0501", "Residential building issue"},
            {"9102", "Elevator fault"}};
        const auto& category = kCategories[rng() % 4];
        projections::CaseCommand report;
        report.kind = projections::CommandKind::kReport;
        report.report.set_case_id(
            absl::StrFormat("rpt-%d-%d", options_.seed, absl::ToUnixSeconds(next_report)));
        report.report.set_source(rng() % 3 == 0 ? v1::CASE_SOURCE_STREET_PATROL
                                                : v1::CASE_SOURCE_HOTLINE_12345);
        report.report.mutable_grid()->set_grid_code(grid.code);
        report.report.mutable_location()->set_latitude_deg(grid.latitude_deg);
        report.report.mutable_location()->set_longitude_deg(grid.longitude_deg);
        report.report.mutable_category()->set_code(category[0]);
        report.report.mutable_category()->set_name(category[1]);
        report.report.set_description(
            absl::StrFormat("%s reported near grid %s", category[1], grid.code));
        report.report.set_reporter(absl::StrFormat("12345-%d", ++reports));
        v1::GridRef ref;
        ref.set_grid_code(grid.code);
        ref.set_street_code(grid.code.substr(0, 9));
        ref.set_district_code(grid.code.substr(0, 6));
        // The district center takes the hotline's calls; a patrol files with its street
        // center. Whoever files a case verifies and closes it.
        report.actor = report.report.source() == v1::CASE_SOURCE_HOTLINE_12345
                           ? OperatorAt(v1::GRID_LEVEL_DISTRICT_CENTER, ref)
                           : StreetCenter(ref);
        report.request_id = report.report.case_id();
        Act(workflow, report);
        next_report += absl::Minutes(10 + static_cast<int>(rng() % 21));
      }
      WorkCases(workflow, now);
    }
  }

  void Act(projections::CaseWorkflow& workflow, const projections::CaseCommand& command) {
    absl::StatusOr<projections::CommandResult> r = workflow.Execute(command);
    if (!r.ok() && !absl::IsFailedPrecondition(r.status()) && !absl::IsAborted(r.status())) {
      spdlog::warn("demo crew: {} {}: {}", projections::CommandName(command.kind),
                   command.case_id.empty() ? command.report.case_id() : command.case_id,
                   r.status().ToString());
    }
  }

  // One pass over the open cases, by the read models (which may lag a little: the
  // workflow checks every command against the case's own events anyway).
  void WorkCases(projections::CaseWorkflow& workflow, absl::Time now) {
    std::vector<v1::CaseView> open;
    for (v1::CaseStage stage :
         {v1::CASE_STAGE_DISCOVERED, v1::CASE_STAGE_REGISTERED, v1::CASE_STAGE_DISPATCHED,
          v1::CASE_STAGE_HANDLED, v1::CASE_STAGE_VERIFIED}) {
      if (!CollectCases(stage, &open)) return;
    }
    for (const v1::CaseView& c : open) {
      if (stop_.load()) return;
      const Plan plan = PlanFor(c.case_id(), options_.seed);
      const absl::Time entered = kernel::FromTimestamp(c.stage_time());
      const absl::Duration allowance =
          c.has_deadline() ? kernel::FromTimestamp(c.deadline().due_time()) - entered
                           : absl::Hours(1);
      projections::CaseCommand command;
      command.case_id = c.case_id();
      command.request_id =
          absl::StrFormat("crew-%s-%d-%d", c.case_id(), c.version(), static_cast<int>(c.stage()));
      const bool iot = c.source() == v1::CASE_SOURCE_IOT_RULE;
      if (c.overdue() == v1::OVERDUE_LEVEL_RED && c.urges() == 0) {
        command.kind = projections::CommandKind::kUrge;
        command.actor.set_user("district." + c.grid().district_code());
        command.actor.set_role(v1::ROLE_SUPERVISOR);
        command.actor.mutable_unit()->set_level(v1::GRID_LEVEL_DISTRICT_CENTER);
        command.actor.mutable_unit()->set_code(c.grid().district_code());
        command.note = "red light: report progress within the hour";
        command.request_id = "crew-urge-" + c.case_id();
        Act(workflow, command);
        continue;
      }
      command.actor = StreetCenter(c.grid());
      switch (c.stage()) {
        case v1::CASE_STAGE_DISCOVERED:
          // IoT cases whose rule registers them are the rule's to register.
          if ((iot && c.auto_register()) || now < entered + allowance * plan.act_after) continue;
          command.kind = projections::CommandKind::kRegister;
          command.actor = OperatorAt(c.level(), c.grid());
          break;
        case v1::CASE_STAGE_REGISTERED:
          // The level that dispatches the case (district cases: the district center).
          if (now < entered + allowance * plan.act_after) continue;
          command.kind = projections::CommandKind::kDispatch;
          command.actor = OperatorAt(c.level(), c.grid());
          command.department = c.department().empty() ? "city-management" : c.department();
          break;
        case v1::CASE_STAGE_DISPATCHED:
          if (plan.handle_after == 0 || now < entered + allowance * plan.handle_after) continue;
          command.kind = projections::CommandKind::kHandle;
          command.actor = CrewOf(c.dispatched_department());
          command.result = "fixed on site; photos attached to the ticket";
          break;
        case v1::CASE_STAGE_HANDLED:
          if (iot || now < entered + allowance * plan.act_after) continue;
          command.kind = projections::CommandKind::kVerify;
          command.actor = OperatorOf(projections::VerifyingUnit(c));
          command.passed = plan.verification_passes || c.failed_verifications() > 0;
          if (!command.passed) command.note = "still not right on re-inspection";
          break;
        case v1::CASE_STAGE_VERIFIED:
          if (iot || now < entered + allowance * plan.act_after) continue;
          command.kind = projections::CommandKind::kClose;
          command.actor = OperatorOf(projections::VerifyingUnit(c));
          break;
        default:
          continue;
      }
      Act(workflow, command);
    }
  }

  // Appends every case in `stage` to `out`; false if the read models could not be read.
  bool CollectCases(v1::CaseStage stage, std::vector<v1::CaseView>* out) {
    views::CaseFilter f;
    f.stage = stage;
    std::string token;
    do {
      absl::StatusOr<views::Page<v1::CaseView>> page = daemon_->views().ListCases(f, 1000, token);
      if (!page.ok()) return false;
      for (v1::CaseView& c : page->items) out->push_back(std::move(c));
      token = page->next_page_token;
    } while (!token.empty());
    return true;
  }

  const DemoOptions options_;
  kernel::ScaledClock clock_;
  sim::City city_;
  sim::Scenario scenario_ = sim::Scenario::kTyphoon;
  absl::Time start_;
  std::unique_ptr<Daemon> daemon_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> simulating_{false};
  uint64_t waits_ = 0;  // Simulator thread only.
  std::thread simulator_thread_;
  std::thread crew_thread_;
  absl::Mutex mu_;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<Demo>> Demo::Start(const DemoOptions& options,
                                                  std::ostream* announce) {
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status s = impl->Start(announce); !s.ok()) return s;
  return std::unique_ptr<Demo>(new Demo(std::move(impl)));
}

Demo::Demo(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Demo::~Demo() {
  impl_->RequestStop();
  (void)impl_->Wait();
}
absl::Status Demo::Wait() { return impl_->Wait(); }
void Demo::RequestStop() { impl_->RequestStop(); }

}  // namespace cityops::daemon
