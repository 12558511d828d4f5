// The daemon (daemon/daemon.h) in process, its event log on a file system that runs out
// of space (tests/testing/fault_fs.h), fed by a Kafka cluster of the test's own: what an
// operator sees while the disk is full, and that the daemon resumes by itself.
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cityops/v1/api.pb.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/embedded_kafka.h"
#include "kernel/event_log.h"
#include "kernel/event_log_testing.h"
#include "kernel/proto_time.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/fault_fs.h"
#include "tests/testing/kafka_client.h"
#include "tests/testing/metric_sample.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace cityops {
namespace {

v1::HealthResponse Readyz(int port, int* status) {
  const testing::HttpReply r = testing::Get(port, "/readyz");
  *status = r.status;
  v1::HealthResponse h;
  (void)google::protobuf::util::JsonStringToMessage(r.body, &h);
  return h;
}

TEST_CASE(
    "a daemon whose disk fills up: /readyz 503 disk full, cityops_log_disk_full 1, commands "
    "503 while reads go on, and with space back ready again by itself, every reading stored once",
    "[daemon][slow]") {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> kafka =
      ingest::EmbeddedKafka::Start({.brokers = 1,
                                    .topics = {{"cityops.readings", 2},
                                               {"cityops.reports", 2},
                                               {"cityops.devices", 2},
                                               {"cityops.deadletter", 1},
                                               {"cityops.tickets", 2}}});
  REQUIRE(kafka.ok());
  const std::string data = dir.Sub("data");
  const std::string yaml = absl::StrCat("data_dir: ", data, "\nkafka:\n  bootstrap_servers: \"",
                                        (*kafka)->bootstrap_servers(),
                                        "\"\n"
                                        "  properties:\n"
                                        "    - {name: session.timeout.ms, value: \"6000\"}\n"
                                        "    - {name: heartbeat.interval.ms, value: \"1000\"}\n"
                                        "    - {name: log_level, value: \"3\"}\n"
                                        "http: {port: 0}\n"
                                        "ingest: {clock_tick_interval: 1m}\n",
                                        testing::TestTokensYaml());
  absl::StatusOr<v1::ServeConfig> config = daemon::ParseServeConfig(yaml, "disk-test.yaml");
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  auto fs = std::make_shared<testing::FaultFileSystem>();
  daemon::DaemonOptions options;
  options.config = *config;
  options.log_testing = std::make_shared<kernel::EventLogTestHooks>();
  options.log_testing->file_system = fs;
  absl::StatusOr<std::unique_ptr<daemon::Daemon>> started = daemon::Daemon::Start(options);
  INFO(started.status().ToString());
  REQUIRE(started.ok());
  daemon::Daemon& d = **started;
  REQUIRE(
      testing::WaitUntil([&] { return d.Ready(); }, absl::Seconds(60), absl::Milliseconds(100)));
  const int port = d.http_port();
  auto metrics = [&] { return testing::Get(port, "/metrics").body; };
  auto readings_stored = [&] {
    return testing::MetricSample(metrics(), "cityops_ingest_events_total{kind=\"reading\"}");
  };

  testing::TestProducer producer((*kafka)->bootstrap_servers());
  int produced = 0;
  auto produce = [&](int n) {
    for (int i = 0; i < n; ++i, ++produced) {
      v1::SensorReading r;
      r.set_device_id(absl::StrFormat("31010401%08d", produced % 40));
      r.set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
      r.set_reading_id(absl::StrFormat("r%d", produced));
      kernel::SetTimestamp(absl::Now(), r.mutable_event_time());
      r.mutable_manhole_cover()->set_tilt_deg(1.5);
      r.mutable_manhole_cover()->set_well_water_level_m(0.4);
      r.mutable_manhole_cover()->set_battery_pct(88);
      producer.Produce("cityops.readings", {r.device_id(), r.SerializeAsString(), {}});
    }
    producer.Flush();
  };
  produce(200);
  REQUIRE(testing::WaitUntil([&] { return readings_stored() == 200; }, absl::Seconds(30),
                             absl::Milliseconds(100)));
  CHECK(testing::MetricSample(metrics(), "cityops_log_disk_full") == 0);
  CHECK(testing::MetricSample(metrics(), "cityops_log_disk_full_total") == 0);

  // The disk fills up; readings keep coming and wait in Kafka.
  fs->FillAfter(0);
  produce(300);
  int status = 0;
  v1::HealthResponse h;
  REQUIRE(testing::WaitUntil(
      [&] {
        h = Readyz(port, &status);
        return status == 503 && h.reason().rfind("disk full: ", 0) == 0;
      },
      absl::Seconds(30), absl::Milliseconds(100)));
  INFO(h.reason());
  CHECK(h.status() == "unavailable");
  CHECK_THAT(h.reason(), Catch::StartsWith("disk full: the event log " + data));
  CHECK_THAT(h.reason(), Catch::Contains("Free space on the disk that holds " + data));
  CHECK_THAT(h.reason(), Catch::Contains("resumes by itself"));
  bool log_stage_full = false;
  for (const v1::StageHealth& s : h.stages()) {
    if (s.name() == "log") log_stage_full = s.state() == "disk_full";
  }
  CHECK(log_stage_full);
  CHECK(testing::Get(port, "/healthz").status == 200);  // Alive all the same.
  std::string during = metrics();
  CHECK(testing::MetricSample(during, "cityops_log_disk_full") == 1);
  CHECK(testing::MetricSample(during, "cityops_log_disk_full_total") == 1);
  CHECK(testing::MetricSample(during, "cityops_ready") == 0);
  // Reads go on; a command that appends is refused with 503 and the reason.
  CHECK(testing::Get(port, "/api/v1/cases", testing::kViewerToken).status == 200);
  v1::ReportRequest report;
  report.set_request_id("disk-full-report-1");
  report.set_case_id("R-DISK-1");
  report.set_source(v1::CASE_SOURCE_HOTLINE_12345);
  report.mutable_grid()->set_grid_code("310104001001001");
  report.mutable_location()->set_latitude_deg(31.2);
  report.mutable_location()->set_longitude_deg(121.44);
  report.mutable_category()->set_code("E0111");
  report.set_description("reported while the disk is full");
  report.set_reporter("caller-0001");
  std::string report_json;
  REQUIRE(google::protobuf::util::MessageToJsonString(report, &report_json).ok());
  const testing::HttpReply refused =
      testing::Post(port, "/api/v1/reports", testing::kOperatorToken, report_json);
  INFO(refused.body);
  CHECK(refused.status == 503);
  CHECK_THAT(refused.body, Catch::Contains("disk full: "));
  // Full for a while, as the metrics count it; nothing of the new readings is stored.
  REQUIRE(testing::WaitUntil(
      [&] { return testing::MetricSample(metrics(), "cityops_log_disk_full_seconds_total") >= 2; },
      absl::Seconds(10), absl::Milliseconds(100)));
  CHECK(readings_stored() == 200);

  // Space returns: ready again without a restart, and every reading is stored.
  fs->FreeSpace();
  const absl::Time freed_at = absl::Now();
  REQUIRE(testing::WaitUntil([&] { return Readyz(port, &status).status() == "ok"; },
                             absl::Seconds(30), absl::Milliseconds(100)));
  const absl::Duration ready_after = absl::Now() - freed_at;
  REQUIRE(testing::WaitUntil([&] { return readings_stored() == 500; }, absl::Seconds(30),
                             absl::Milliseconds(100)));
  const absl::Duration stored_after = absl::Now() - freed_at;
  const std::string after = metrics();
  CHECK(testing::MetricSample(after, "cityops_log_disk_full") == 0);
  CHECK(testing::MetricSample(after, "cityops_log_disk_full_total") == 1);
  CHECK(testing::MetricSample(after, "cityops_log_disk_full_seconds_total") >= 2);
  const testing::HttpReply accepted =
      testing::Post(port, "/api/v1/reports", testing::kOperatorToken, report_json);
  INFO(accepted.body);
  CHECK(accepted.status == 201);
  WARN("ready again " << absl::FormatDuration(ready_after) << " after space returned, all "
                      << produced << " readings stored after "
                      << absl::FormatDuration(stored_after));
  d.RequestStop();
  CHECK(d.Wait().ok());
  started->reset();

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

}  // namespace
}  // namespace cityops
