// The daemon (`cityops serve`) as a process: start, readiness, clean stops, a second
// daemon on the same directory, signals, and restarts that lose and double nothing.
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/embedded_kafka.h"
#include "ingest/record_producer.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "kernel/yaml_proto.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/rules_stage.h"
#include "projections/views/views.h"
#include "sim/city.h"
#include "sim/publisher.h"
#include "sim/simulator.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/kafka_client.h"
#include "tests/testing/metric_sample.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/text_file.h"
#include "tests/testing/wait.h"
#include "tests/testing/water_tanks.h"

namespace cityops {
namespace {

using testing::Count;
using testing::ReadFile;

using testing::DaemonProcess;

TEST_CASE("a second daemon on the same data directory refuses to start and says why",
          "[daemon][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess first(data, DaemonProcess::Config(data));
  REQUIRE(first.WaitReady());
  DaemonProcess second(data, DaemonProcess::Config(data));
  const int status = second.WaitExit();
  INFO(second.log());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(second.log().find("is in use by process") != std::string::npos);
  CHECK(second.log().find("stopped cleanly") == std::string::npos);
  const int first_status = first.Stop(SIGTERM);
  INFO(first.log());
  CHECK(WIFEXITED(first_status));
  CHECK(WEXITSTATUS(first_status) == 0);
}

// The digest of the active rule set as the API shows it, once the read models have it.
std::string ActiveRulesDigest(int port) {
  const testing::HttpReply r = testing::Get(port, "/api/v1/rules", testing::kViewerToken);
  if (r.status != 200) return "";
  v1::RulesetActivated active;
  if (!google::protobuf::util::JsonStringToMessage(r.body, &active).ok()) return "";
  return active.sha256();
}

std::string WaitForDigest(int port, const std::string& not_this) {
  std::string digest;
  testing::WaitUntil(
      [&] {
        digest = ActiveRulesDigest(port);
        return !digest.empty() && digest != not_this;
      },
      absl::Seconds(30), absl::Milliseconds(100));
  return digest;
}

TEST_CASE("SIGHUP reloads the rule set file, a broken file leaves the active rules running",
          "[daemon][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string rules = dir.Sub("rules.yaml");
  const std::string original = ReadFile(std::string(CITYOPS_SOURCE_DIR) + "/rules/default.yaml");
  REQUIRE(!original.empty());
  std::ofstream(rules) << original;
  DaemonProcess d(data, DaemonProcess::Config(data) + "rules: {file: " + rules + "}\n");
  REQUIRE(d.WaitReady());
  const std::string first = WaitForDigest(d.port(), "");
  REQUIRE(!first.empty());

  // An edited rule set: SIGHUP activates it.
  std::string edited = original;
  const size_t at = edited.find("hold_for: 30s");
  REQUIRE(at != std::string::npos);
  edited.replace(at, 13, "hold_for: 45s");
  std::ofstream(rules, std::ios::trunc) << edited;
  d.Signal(SIGHUP);
  const std::string second = WaitForDigest(d.port(), first);
  CHECK(second != first);

  // A broken one: refused with file and line; the edited rules stay active.
  std::ofstream(rules, std::ios::trunc) << edited << "\n  - id: broken\n    severity: loud\n";
  d.Signal(SIGHUP);
  testing::WaitUntil([&] { return d.log().find("was not reloaded") != std::string::npos; },
                     absl::Seconds(10), absl::Milliseconds(100));
  INFO(d.log());
  CHECK(d.log().find("the rule set was not reloaded, the active one stays") != std::string::npos);
  CHECK(d.log().find(rules + ":") != std::string::npos);
  CHECK(testing::Get(d.port(), "/healthz").status == 200);
  CHECK(ActiveRulesDigest(d.port()) == second);

  // The API's reload does the same as SIGHUP, for admins.
  std::ofstream(rules, std::ios::trunc) << original;
  const testing::HttpReply reload =
      testing::Post(d.port(), "/api/v1/rules/reload", testing::kAdminToken, "");
  CHECK(reload.status == 200);
  v1::ReloadRulesResponse reloaded;
  REQUIRE(google::protobuf::util::JsonStringToMessage(reload.body, &reloaded).ok());
  CHECK(reloaded.activated());
  CHECK(reloaded.sha256() == first);
  CHECK(testing::Post(d.port(), "/api/v1/rules/reload", testing::kSupervisorToken, "").status ==
        403);
  CHECK(WaitForDigest(d.port(), second) == first);
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

TEST_CASE("an admin takes a backup of the running daemon's log, and it opens", "[daemon][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string backups = dir.Sub("backups");
  {
    DaemonProcess off(data, DaemonProcess::Config(data));
    REQUIRE(off.WaitReady());
    const testing::HttpReply r =
        testing::Post(off.port(), "/api/v1/backups", testing::kAdminToken, "");
    CHECK(r.status == 409);
    CHECK(r.body.find("set backups.dir") != std::string::npos);
    CHECK(WEXITSTATUS(off.Stop(SIGTERM)) == 0);
  }
  DaemonProcess d(data, DaemonProcess::Config(data) + "backups: {dir: " + backups + "}\n");
  REQUIRE(d.WaitReady());
  CHECK(testing::Post(d.port(), "/api/v1/backups", testing::kOperatorToken, "").status == 403);
  const testing::HttpReply r = testing::Post(d.port(), "/api/v1/backups", testing::kAdminToken, "");
  REQUIRE(r.status == 201);
  v1::BackupResponse taken;
  REQUIRE(google::protobuf::util::JsonStringToMessage(r.body, &taken).ok());
  CHECK(taken.path().rfind(backups + "/cityops-", 0) == 0);
  // The copy opens while the daemon keeps the original, and holds the rule set it
  // activated at start.
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> copy =
      kernel::EventLog::Open({.path = taken.path(), .create_if_missing = false});
  REQUIRE(copy.ok());
  CHECK((*copy)->NextSequence(kernel::Partition(0)).value() >= 1);
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

TEST_CASE("serve --validate checks a configuration and prints it, or names the bad line",
          "[daemon]") {
  testing::TempDir dir;
  const std::string good = dir.Sub("good.yaml");
  testing::WritePrivateFile(good, "data_dir: /var/lib/cityops\n" + testing::TestTokensYaml());
  {
    testing::ChildProcess p({CITYOPS_BINARY, "serve", "--config", good, "--validate"},
                            dir.Sub("good.err"));
    p.ReadToEnd();
    const int status = p.Wait();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(p.output().find(good + ": valid") != std::string::npos);
    CHECK(p.output().find("data_dir: \"/var/lib/cityops\"") != std::string::npos);
    CHECK(p.output().find(testing::kAdminToken) == std::string::npos);
    CHECK(p.output().find("rule set 'default'") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists("/var/lib/cityops"));  // Nothing was started.
  }
  const std::string bad = dir.Sub("bad.yaml");
  std::ofstream(bad) << "data_dir: x\nhttp:\n  port: 99999\n";
  testing::ChildProcess p({CITYOPS_BINARY, "serve", "--config", bad, "--validate"},
                          dir.Sub("bad.err"));
  p.ReadToEnd();
  const int status = p.Wait();
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(ReadFile(dir.Sub("bad.err")) ==
        "cityops: " + bad +
            ":3:3: port 99999 is out of range; use 1 to 65535, or 0 for any "
            "free port\n");
}

// A Kafka cluster of the test's own, which outlives the daemons it serves (to the
// daemon it is a real broker: its topics survive a daemon's restart).
std::unique_ptr<ingest::EmbeddedKafka> StartCluster() {
  absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> kafka =
      ingest::EmbeddedKafka::Start({.brokers = 1,
                                    .topics = {{"cityops.readings", 2},
                                               {"cityops.reports", 2},
                                               {"cityops.devices", 2},
                                               {"cityops.deadletter", 1},
                                               {"cityops.tickets", 2}}});
  REQUIRE(kafka.ok());
  return *std::move(kafka);
}

// A daemon configuration against `bootstrap`. No clock ticks within the test's time
// (1 min of quiet): the events' own times alone move the rules, so that a run with
// restarts and a replay can be compared event for event.
std::string ClusterConfig(const std::string& data, const std::string& bootstrap) {
  return absl::StrCat("data_dir: ", data,
                      "\n"
                      "kafka:\n"
                      "  bootstrap_servers: \"",
                      bootstrap,
                      "\"\n"
                      "  properties:\n"
                      "    - {name: session.timeout.ms, value: \"6000\"}\n"
                      "    - {name: heartbeat.interval.ms, value: \"1000\"}\n"
                      "    - {name: log_level, value: \"3\"}\n"
                      "http: {port: 0}\n"
                      "ingest: {clock_tick_interval: 1m}\n",
                      testing::TestTokensYaml());
}

// The stages' lag from /readyz: ingest (Kafka records not yet stored), rules, views.
std::map<std::string, uint64_t> Lags(int port) {
  const testing::HttpReply r = testing::Get(port, "/readyz");
  std::map<std::string, uint64_t> out;
  v1::HealthResponse h;
  if (r.status != 200 || !google::protobuf::util::JsonStringToMessage(r.body, &h).ok()) {
    return out;
  }
  for (const v1::StageHealth& s : h.stages()) out[s.name()] = s.lag();
  return out;
}

// Waits until ingest, the rules stage and the read models have nothing left to do.
bool WaitCaughtUp(int port, absl::Duration timeout) {
  int quiet = 0;
  return testing::WaitUntil(
      [&] {
        const std::map<std::string, uint64_t> lags = Lags(port);
        const bool idle = lags.size() >= 3 && lags.at("ingest") == 0 && lags.at("views") == 0;
        quiet = idle ? quiet + 1 : 0;
        return quiet >= 10;  // Idle for a second: the outbox has had its turn too.
      },
      timeout, absl::Milliseconds(100));
}

TEST_CASE("a daemon killed mid-ingest with SIGKILL and SIGTERM loses and doubles nothing",
          "[daemon][slow]") {
  testing::TempDir dir;
  auto kafka = StartCluster();
  const std::string data = dir.Sub("data");
  const std::string config = ClusterConfig(data, kafka->bootstrap_servers());

  // The city publishes while the daemon is killed and restarted: registrations first,
  // then three hours of a typhoon, paced so that ingest is busy when the kills come.
  sim::CityOptions city_options;
  city_options.seed = 11;
  city_options.devices = 600;
  city_options.districts = 1;
  city_options.streets_per_district = 3;
  const sim::City city = sim::GenerateCity(city_options);
  std::atomic<bool> published{false};
  absl::Status publish_status;
  std::thread publisher([&] {
    absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
        ingest::RecordProducer::Create(kafka->bootstrap_servers());
    if (!producer.ok()) {
      publish_status = producer.status();
      published = true;
      return;
    }
    sim::SimulatorOptions options;
    options.scenario = sim::Scenario::kTyphoon;
    options.seed = 11;
    options.start = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now() - absl::Hours(3)));
    sim::Simulator simulator(city, options);
    sim::PublishOptions publish;
    publish.duration = absl::Hours(3);
    publish.rate = 15'000;
    absl::StatusOr<sim::PublishStats> stats = sim::PublishToKafka(simulator, **producer, publish);
    publish_status = stats.status();
    published = true;
  });

  std::mt19937 rng(20261124);
  auto pause = [&] { absl::SleepFor(absl::Milliseconds(500 + rng() % 2000)); };
  int kills = 0;
  for (int signal : {SIGKILL, SIGTERM, SIGKILL}) {
    DaemonProcess d(data, config);
    REQUIRE(d.WaitReady());
    pause();
    const int status = d.Stop(signal);
    INFO(d.log());
    if (signal == SIGTERM) {
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
      CHECK(d.log().find("stopped cleanly") != std::string::npos);
    } else {
      CHECK(WIFSIGNALED(status));
    }
    ++kills;
  }
  publisher.join();
  REQUIRE(publish_status.ok());
  {
    DaemonProcess d(data, config);
    REQUIRE(d.WaitReady());
    REQUIRE(WaitCaughtUp(d.port(), absl::Seconds(120)));
    CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
  }
  CHECK(kills == 3);

  absl::StatusOr<std::unique_ptr<kernel::EventLog>> opened =
      kernel::EventLog::Open({.path = data, .create_if_missing = false});
  REQUIRE(opened.ok());
  kernel::EventLog& log = **opened;

  // Every reading published is in the log exactly once.
  std::map<std::pair<std::string, std::string>, int> in_log;
  std::set<std::string> tickets_in_log;
  for (const auto& events : testing::AllEvents(log)) {
    for (const v1::Event& e : events) {
      if (e.has_reading()) ++in_log[{e.reading().device_id(), e.reading().reading_id()}];
      if (e.has_ticket_issued()) tickets_in_log.insert(e.ticket_issued().ticket_id());
    }
  }
  size_t published_readings = 0;
  for (const testing::ConsumedRecord& r :
       testing::ReadTopic(kafka->bootstrap_servers(), "cityops.readings", 2)) {
    v1::SensorReading reading;
    REQUIRE(reading.ParseFromString(r.value));
    ++published_readings;
    INFO(reading.device_id() << " " << reading.reading_id());
    CHECK(in_log[{reading.device_id(), reading.reading_id()}] == 1);
  }
  CHECK(in_log.size() == published_readings);
  CHECK(published_readings > 50'000);

  // The rules stage derived exactly what one uninterrupted run derives from the same
  // inputs, up to where it stands.
  std::map<uint32_t, uint64_t> checkpoint;
  for (kernel::Partition p : log.Partitions()) {
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        log.StoredCheckpoint(p, rules::kRulesCheckpoint);
    REQUIRE(cp.ok());
    REQUIRE(cp->has_value());
    checkpoint[p.value()] = (*cp)->next.value();
  }
  {
    absl::StatusOr<std::unique_ptr<kernel::EventLog>> replay = kernel::EventLog::Open(
        {.path = dir.Sub("replay"), .durability = kernel::Durability::kBuffered});
    REQUIRE(replay.ok());
    testing::CopyInputs(log, **replay, checkpoint);
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open({.log = replay->get()});
    REQUIRE(stage.ok());
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
    const auto live = testing::NormalizedDerived(log);
    const auto again = testing::NormalizedDerived(**replay);
    size_t derived = 0;
    REQUIRE(live.size() == again.size());
    for (size_t p = 0; p < live.size(); ++p) {
      INFO("partition " << p);
      REQUIRE(live[p].size() == again[p].size());
      for (size_t i = 0; i < live[p].size(); ++i) CHECK(live[p][i] == again[p][i]);
      derived += live[p].size();
    }
    CHECK(derived > 100);
  }

  // The read models equal a rebuild from sequence 0.
  {
    absl::StatusOr<std::unique_ptr<views::Projections>> views =
        views::Projections::Open({.log = &log, .dir = data + "/views"});
    REQUIRE(views.ok());
    REQUIRE((*views)->CatchUp().ok());
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> live = (*views)->Dump();
    REQUIRE(live.ok());
    REQUIRE((*views)->Rebuild().ok());
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> rebuilt = (*views)->Dump();
    REQUIRE(rebuilt.ok());
    REQUIRE(live->size() == rebuilt->size());
    for (size_t i = 0; i < live->size(); ++i) {
      INFO((*live)[i].first);
      CHECK((*live)[i] == (*rebuilt)[i]);
    }
  }

  // Every ticket was published, in log order per case, and none twice.
  std::map<std::string, int> published_tickets;
  std::map<std::string, std::vector<std::string>> by_case;
  for (const testing::ConsumedRecord& r :
       testing::ReadTopic(kafka->bootstrap_servers(), "cityops.tickets", 2)) {
    v1::TicketIssued t;
    REQUIRE(t.ParseFromString(r.value));
    ++published_tickets[t.ticket_id()];
    CHECK(r.key == t.case_id());
    by_case[t.case_id()].push_back(t.ticket_id());
  }
  CHECK(!tickets_in_log.empty());
  CHECK(published_tickets.size() == tickets_in_log.size());
  for (const std::string& id : tickets_in_log) {
    INFO("ticket " << id);
    CHECK(published_tickets[id] == 1);
  }
  for (const auto& [case_id, ids] : by_case) {
    INFO("case " << case_id);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
  }
}

TEST_CASE(
    "Kafka going away: /readyz 503 with the reason, cityops_kafka_connected 0, no consumer "
    "lag, one log line each way, back: ready again and no reading lost",
    "[daemon][slow]") {
  testing::TempDir dir;
  auto kafka = StartCluster();
  const std::string data = dir.Sub("data");
  // Quick reconnects, and a session that outlives the outage (no rebalance needed).
  const std::string config = absl::StrCat("data_dir: ", data,
                                          "\n"
                                          "kafka:\n"
                                          "  bootstrap_servers: \"",
                                          kafka->bootstrap_servers(),
                                          "\"\n"
                                          "  properties:\n"
                                          "    - {name: session.timeout.ms, value: \"30000\"}\n"
                                          "    - {name: heartbeat.interval.ms, value: \"1000\"}\n"
                                          "    - {name: reconnect.backoff.ms, value: \"100\"}\n"
                                          "    - {name: reconnect.backoff.max.ms, value: \"500\"}\n"
                                          "    - {name: log_level, value: \"3\"}\n"
                                          "http: {port: 0}\n"
                                          "ingest: {clock_tick_interval: 1m}\n",
                                          testing::TestTokensYaml());
  DaemonProcess d(data, config);
  REQUIRE(d.WaitReady());
  const int port = d.port();
  auto metrics = [&] { return testing::Get(port, "/metrics").body; };
  auto readings_stored = [&] {
    return testing::MetricSample(metrics(), "cityops_ingest_events_total{kind=\"reading\"}");
  };

  testing::TestProducer producer(kafka->bootstrap_servers());
  int produced = 0;
  auto produce = [&](int n) {
    for (int i = 0; i < n; ++i, ++produced) {
      v1::SensorReading r;
      r.set_device_id(absl::StrFormat("31010401%08d", produced % 50));
      r.set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
      r.set_reading_id(absl::StrFormat("r%d", produced));
      kernel::SetTimestamp(absl::Now(), r.mutable_event_time());
      r.mutable_manhole_cover()->set_tilt_deg(1.5);
      r.mutable_manhole_cover()->set_well_water_level_m(0.4);
      r.mutable_manhole_cover()->set_battery_pct(88);
      producer.Produce("cityops.readings", {r.device_id(), r.SerializeAsString(), {}});
    }
  };
  produce(400);
  producer.Flush();
  REQUIRE(testing::WaitUntil([&] { return readings_stored() == 400; }, absl::Seconds(30),
                             absl::Milliseconds(100)));
  CHECK(testing::MetricSample(metrics(), "cityops_kafka_connected") == 1);
  CHECK(testing::MetricSample(metrics(), "cityops_kafka_seconds_since_last_receive") >= 0);
  CHECK(testing::MetricSample(metrics(), "cityops_kafka_seconds_since_last_receive") < 5);

  // The broker goes away; readings keep coming (they wait in the producer meanwhile).
  const absl::Time down_at = absl::Now();
  REQUIRE(kafka->SetBrokerDown(1).ok());
  produce(300);
  testing::HttpReply ready;
  REQUIRE(testing::WaitUntil(
      [&] {
        ready = testing::Get(port, "/readyz");
        return ready.status == 503;
      },
      absl::Seconds(15), absl::Milliseconds(100)));
  const absl::Duration noticed = absl::Now() - down_at;
  INFO(ready.body);
  v1::HealthResponse h;
  REQUIRE(google::protobuf::util::JsonStringToMessage(ready.body, &h).ok());
  CHECK(h.status() == "unavailable");
  CHECK_THAT(h.reason(), Catch::Contains("kafka: no broker reachable for"));
  CHECK_THAT(h.reason(), Catch::Contains("(bootstrap " + kafka->bootstrap_servers() + ")"));
  CHECK_THAT(h.reason(), Catch::Contains("ingest paused, readings wait in Kafka"));
  bool ingest_disconnected = false;
  for (const v1::StageHealth& s : h.stages()) {
    if (s.name() == "ingest") ingest_disconnected = s.state() == "disconnected";
  }
  CHECK(ingest_disconnected);
  CHECK(testing::Get(port, "/healthz").status == 200);  // Alive all the same.
  const std::string during = metrics();
  INFO(during);
  CHECK(testing::MetricSample(during, "cityops_kafka_connected") == 0);
  CHECK(testing::MetricSample(during, "cityops_ready") == 0);
  CHECK(during.find("cityops_consumer_lag{") == std::string::npos);  // Unknown, not 0.
  CHECK(testing::WaitUntil([&] { return Count(d.log(), "ingest lost the cluster") == 1; },
                           absl::Seconds(5), absl::Milliseconds(100)));
  // Down for a few seconds more, as /readyz counts them: librdkafka retries meanwhile, and
  // nothing more is logged about it.
  REQUIRE(testing::WaitUntil(
      [&] {
        v1::HealthResponse later;
        const testing::HttpReply r = testing::Get(port, "/readyz");
        if (!google::protobuf::util::JsonStringToMessage(r.body, &later).ok()) return false;
        const std::string prefix = "kafka: no broker reachable for ";
        if (later.reason().rfind(prefix, 0) != 0) return false;
        return std::stoi(later.reason().substr(prefix.size())) >= 3;
      },
      absl::Seconds(15), absl::Milliseconds(100)));
  CHECK(testing::MetricSample(metrics(), "cityops_kafka_seconds_since_last_receive") >= 3);
  CHECK(testing::MetricSample(metrics(), "cityops_kafka_connected") == 0);

  // Back: ready again, every reading ingested.
  REQUIRE(kafka->SetBrokerUp(1).ok());
  const absl::Time up_at = absl::Now();
  REQUIRE(testing::WaitUntil([&] { return testing::Get(port, "/readyz").status == 200; },
                             absl::Seconds(30), absl::Milliseconds(100)));
  const absl::Duration recovered = absl::Now() - up_at;
  CHECK(testing::MetricSample(metrics(), "cityops_kafka_connected") == 1);
  producer.Flush();
  CHECK(testing::WaitUntil([&] { return readings_stored() == 700; }, absl::Seconds(30),
                           absl::Milliseconds(100)));
  CHECK(metrics().find("cityops_consumer_lag{") != std::string::npos);
  const std::string log_text = d.log();
  INFO(log_text);
  CHECK(Count(log_text, "ingest lost the cluster") == 1);
  CHECK(Count(log_text, "ingest reaches the cluster again after") == 1);
  WARN("outage noticed after " << absl::FormatDuration(noticed) << ", recovery after "
                               << absl::FormatDuration(recovered));
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);

  absl::StatusOr<std::unique_ptr<kernel::EventLog>> opened =
      kernel::EventLog::Open({.path = data, .create_if_missing = false});
  REQUIRE(opened.ok());
  const auto in_log = testing::ReadingCounts(**opened);
  CHECK(in_log.size() == static_cast<size_t>(produced));
  for (const auto& [id, n] : in_log) {
    INFO(id.first << " " << id.second);
    CHECK(n == 1);
  }
}

TEST_CASE(
    "a kind that no code mentions, added to the catalogue with a rule, is published through "
    "Kafka and opens a case, shows on the map and counts in the statistics",
    "[daemon][catalogue][slow]") {
  testing::TempDir dir;
  auto kafka = StartCluster();
  const std::string data = dir.Sub("data");
  // The shipped catalogue and rules, each with one entry more: rooftop water tanks.
  const std::string catalogue = testing::CatalogueYamlWithWaterTanks();
  const std::string catalogue_path = dir.Sub("tanks.yaml");
  std::ofstream(catalogue_path) << catalogue;
  const std::string rules_path = dir.Sub("rules.yaml");
  std::ofstream(rules_path) << ReadFile(std::string(CITYOPS_SOURCE_DIR) + "/rules/default.yaml")
                            << "\n"
                               "  - id: tank.overflow\n"
                               "    description: Rooftop water tank overflowing\n"
                               "    device_kind: water_tank\n"
                               "    severity: major\n"
                               "    threshold:\n"
                               "      raise: {any: [{metric: level_pct, at_least: 98}, {metric: "
                               "overflow, equals: \"true\"}]}\n"
                               "      hold_for: 2m\n"
                               "    case:\n"
                               "      open_case: true\n"
                               "      category: {code: \"E0111\", name: \"Road waterlogging\"}\n"
                               "      department: water-authority\n"
                               "      dispatch_level: street_center\n"
                               "      deadlines: {register_within: 30m, dispatch_within: 30m, "
                               "handle_within: 4h, verify_within: 1h30m, close_within: 4h}\n"
                               "      auto_register: true\n"
                               "      verification_window: 10m\n";
  // Clock ticks every 200 ms: the rules stage takes up a reading once the other, quiet
  // partition has passed its time.
  std::string config = ClusterConfig(data, kafka->bootstrap_servers());
  const size_t tick = config.find("clock_tick_interval: 1m");
  REQUIRE(tick != std::string::npos);
  config.replace(tick, 23, "clock_tick_interval: 200ms");
  DaemonProcess d(data, config + "catalogue: {file: " + catalogue_path +
                            "}\nrules: {file: " + rules_path + "}\n");
  REQUIRE(d.WaitReady());

  absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
      ingest::RecordProducer::Create(kafka->bootstrap_servers());
  REQUIRE(producer.ok());
  v1::DeviceRegistered reg;
  reg.set_device_id("tank-1");
  reg.set_kind_id("water_tank");
  reg.set_name("Rooftop tank, block 3");
  reg.mutable_grid()->set_grid_code("310104001001001");
  reg.mutable_grid()->set_street_code("310104001");
  reg.mutable_grid()->set_district_code("310104");
  reg.mutable_location()->set_latitude_deg(31.19);
  reg.mutable_location()->set_longitude_deg(121.44);
  REQUIRE((*producer)->Produce("cityops.devices", "tank-1", reg.SerializeAsString()).ok());
  const absl::Time t0 = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())) - absl::Minutes(10);
  int n = 0;
  for (double level : {97.0, 99.0, 99.5, 99.8}) {
    v1::SensorReading r;
    r.set_device_id("tank-1");
    r.set_kind_id("water_tank");
    r.set_reading_id(absl::StrCat("tank-1:", n));
    kernel::SetTimestamp(t0 + absl::Minutes(2 * n++), r.mutable_event_time());
    v1::MetricValue* v = r.mutable_values()->add_values();
    v->set_name("level_pct");
    v->set_number(level);
    REQUIRE((*producer)->Produce("cityops.readings", "tank-1", r.SerializeAsString()).ok());
  }
  REQUIRE((*producer)->Flush(absl::Seconds(10)).ok());

  // The rule opened a case for the tank.
  std::string cases;
  if (!testing::WaitUntil(
          [&] {
            cases =
                testing::Get(d.port(), "/api/v1/cases?page_size=1000", testing::kViewerToken).body;
            return cases.find("tank-1") != std::string::npos;
          },
          absl::Seconds(60), absl::Milliseconds(200))) {
    FAIL("no case for tank-1 within a minute; the daemon's log:\n" << d.log());
  }
  INFO(cases);
  CHECK(cases.find("tank.overflow") != std::string::npos);
  // On the map and in the device list of its kind.
  const std::string map = testing::Get(d.port(), "/api/v1/map", testing::kViewerToken).body;
  CHECK(map.find("\"tank-1\"") != std::string::npos);
  CHECK(map.find("\"water_tank\"") != std::string::npos);
  const testing::HttpReply devices =
      testing::Get(d.port(), "/api/v1/devices?kind=water_tank", testing::kViewerToken);
  CHECK(devices.status == 200);
  CHECK(devices.body.find("\"tank-1\"") != std::string::npos);
  // And in the statistics: the device, online, its alert and its case.
  v1::Statistics stats;
  REQUIRE(google::protobuf::util::JsonStringToMessage(
              testing::Get(d.port(), "/api/v1/statistics", testing::kViewerToken).body, &stats)
              .ok());
  CHECK(stats.devices_total() == 1);
  CHECK(stats.devices_online() == 1);
  CHECK(stats.alerts_active() == 1);
  CHECK(stats.cases_total() == 1);
  // The catalogue in force names it, for the big screen.
  const std::string served =
      testing::Get(d.port(), "/api/v1/catalogue", testing::kViewerToken).body;
  CHECK(served.find("二次供水水箱") != std::string::npos);
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

// A reading of `kind` by metric names that satisfies `raise` (its first condition, for an
// `any` set): each value halfway between the threshold and the metric's physical bound.
v1::SensorReading Alarming(const catalogue::Kind& kind, const rules::CompiledConditionSet& raise) {
  v1::SensorReading r;
  r.set_kind_id(kind.id);
  for (const rules::CompiledCondition& c : raise.conditions) {
    const catalogue::KindMetric& m = *c.metric.metric;
    double x = c.operand;
    switch (c.op) {
      case rules::Op::kAbove:
      case rules::Op::kAtLeast:
        x = (c.operand + m.max) / 2;
        break;
      case rules::Op::kBelow:
      case rules::Op::kAtMost:
        x = (m.min + c.operand) / 2;
        break;
      case rules::Op::kEquals:
        break;
    }
    v1::MetricValue* v = r.mutable_values()->add_values();
    v->set_name(m.name);
    switch (m.type) {
      case v1::METRIC_TYPE_FLAG:
        v->set_flag(x != 0);
        break;
      case v1::METRIC_TYPE_CODE:
        v->set_code(static_cast<int64_t>(x));
        break;
      case v1::METRIC_TYPE_COUNTER:
        v->set_count(static_cast<uint64_t>(std::ceil(x)));
        break;
      default:
        v->set_number(x);
    }
    if (!raise.all) break;
  }
  return r;
}

TEST_CASE(
    "every kind of the shipped catalogue goes from Kafka through decode, the default "
    "rules and the read models to the API",
    "[daemon][catalogue][slow]") {
  testing::TempDir dir;
  auto kafka = StartCluster();
  const std::string data = dir.Sub("data");

  // The default rules, where for each kind the first rule on its readings (a threshold,
  // or a fault code) that watches a device registered without archive data raises at
  // once: the test cannot wait out holds of up to half an hour in readings of the wall
  // clock's time.
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
  REQUIRE(loaded.ok());
  absl::StatusOr<std::unique_ptr<rules::CompiledRuleSet>> compiled =
      rules::CompiledRuleSet::Compile(loaded->rule_set, catalogue::KindTable::BuiltIn());
  REQUIRE(compiled.ok());
  auto blank = [](const v1::DeviceFilter& f) {
    return !f.urban() && !f.underpass() && !f.low_lying() && f.owners().empty() &&
           !f.has_min_age_years() && !f.has_min_height_m();
  };
  v1::RuleSet walked = loaded->rule_set;
  walked.set_name("walk");
  std::map<std::string, const rules::CompiledRule*> chosen;  // By kind id.
  for (const catalogue::Kind& kind : (*compiled)->kinds().kinds()) {
    for (int i : (*compiled)->RulesFor(kind.index)) {
      const rules::CompiledRule& r = (*compiled)->rules()[i];
      if ((r.type == rules::RuleType::kThreshold || r.type == rules::RuleType::kFaultCode) &&
          blank(r.rule->applies_to())) {
        chosen[kind.id] = &r;
        v1::Rule* w = walked.mutable_rules(i);
        if (r.type == rules::RuleType::kFaultCode) {
          w->mutable_fault_code()->clear_hold_for();
        } else {
          w->mutable_threshold()->clear_hold_for();
        }
        break;
      }
    }
    INFO("kind " << kind.id);
    REQUIRE(chosen.count(kind.id) == 1);  // Each kind's default rules test its readings.
  }
  const std::string rules_path = dir.Sub("walk.yaml");
  std::ofstream(rules_path) << kernel::ProtoToYaml(walked);
  std::string config = ClusterConfig(data, kafka->bootstrap_servers());
  const size_t tick = config.find("clock_tick_interval: 1m");
  REQUIRE(tick != std::string::npos);
  config.replace(tick, 23, "clock_tick_interval: 200ms");
  DaemonProcess d(data, config + "rules: {file: " + rules_path + "}\n");
  if (!d.WaitReady()) FAIL("the daemon did not start:\n" << d.log());

  absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
      ingest::RecordProducer::Create(kafka->bootstrap_servers());
  REQUIRE(producer.ok());
  // One device of each kind, sent as integrators send any kind: by its kind id, with its
  // metrics by name. Registered first: an unregistered device is watched as the variant
  // that needs the most attention, which the chosen rules' filters may not be.
  std::vector<std::string> ids;
  for (const catalogue::Kind& kind : (*compiled)->kinds().kinds()) {
    const std::string id = absl::StrCat("walk-", kind.id);
    ids.push_back(id);
    v1::DeviceRegistered reg;
    reg.set_device_id(id);
    reg.set_kind_id(kind.id);
    reg.set_name(kind.spec->name().en());
    reg.mutable_grid()->set_grid_code("310104001001001");
    reg.mutable_grid()->set_street_code("310104001");
    reg.mutable_grid()->set_district_code("310104");
    reg.mutable_location()->set_latitude_deg(31.19);
    reg.mutable_location()->set_longitude_deg(121.44);
    REQUIRE((*producer)->Produce("cityops.devices", id, reg.SerializeAsString()).ok());
  }
  REQUIRE((*producer)->Flush(absl::Seconds(10)).ok());
  REQUIRE(testing::WaitUntil(
      [&] {
        for (const std::string& id : ids) {
          if (testing::Get(d.port(), "/api/v1/devices/" + id, testing::kViewerToken).status !=
              200) {
            return false;
          }
        }
        return true;
      },
      absl::Seconds(30), absl::Milliseconds(200)));
  for (const catalogue::Kind& kind : (*compiled)->kinds().kinds()) {
    const rules::CompiledRule* rule = chosen.at(kind.id);
    const std::string id = absl::StrCat("walk-", kind.id);
    v1::SensorReading r = Alarming(kind, rule->raise);
    if (rule->type == rules::RuleType::kFaultCode) {
      v1::MetricValue* codes = r.mutable_values()->add_values();
      codes->set_name(rule->codes_metric);
      codes->add_codes(rule->codes.front());
    }
    r.set_device_id(id);
    r.set_reading_id(absl::StrCat(id, ":1"));
    kernel::SetTimestamp(absl::Now(), r.mutable_event_time());
    REQUIRE((*producer)->Produce("cityops.readings", id, r.SerializeAsString()).ok());
  }
  REQUIRE((*producer)->Flush(absl::Seconds(10)).ok());

  // Every device raised an alert of its kind's rule and is on the map with its kind.
  v1::Statistics stats;
  const bool all_raised = testing::WaitUntil(
      [&] {
        const testing::HttpReply r =
            testing::Get(d.port(), "/api/v1/statistics", testing::kViewerToken);
        return r.status == 200 &&
               google::protobuf::util::JsonStringToMessage(r.body, &stats).ok() &&
               stats.alerts_active() >= ids.size();
      },
      absl::Seconds(60), absl::Milliseconds(200));
  INFO(stats.ShortDebugString());
  CHECK(all_raised);
  CHECK(stats.devices_total() == ids.size());
  const std::string map = testing::Get(d.port(), "/api/v1/map", testing::kViewerToken).body;
  for (const catalogue::Kind& kind : (*compiled)->kinds().kinds()) {
    const std::string id = absl::StrCat("walk-", kind.id);
    INFO("kind " << kind.id);
    const testing::HttpReply device =
        testing::Get(d.port(), "/api/v1/devices/" + id, testing::kViewerToken);
    REQUIRE(device.status == 200);
    v1::DeviceDetail detail;
    REQUIRE(google::protobuf::util::JsonStringToMessage(device.body, &detail).ok());
    const v1::DeviceView& view = detail.device();
    CHECK(view.kind_id() == kind.id);
    CHECK(view.kind() == kind.typed);
    INFO(view.ShortDebugString());
    CHECK(view.active_alerts_size() >= 1);
    CHECK(view.last_reading().values().values_size() >= 1);
    CHECK(map.find("\"" + id + "\"") != std::string::npos);
  }
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

}  // namespace
}  // namespace cityops
