// The device registry file import: CSV and JSON lines, line-precise errors, partition
// routing and skipping of unchanged registrations.
#include "ingest/device_import.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "tests/testing/temp_dir.h"

namespace cityops::ingest {
namespace {

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST_CASE("a CSV registry imports valid rows and names the line of each bad one", "[import]") {
  testing::TempDir dir;
  const std::string csv = dir.Sub("devices.csv");
  Write(csv,
        "device_id,kind,grid_code,latitude_deg,longitude_deg,name,reporting_interval_s\n"
        "3101040103000001,MANHOLE_COVER,310104010001001,31.19,121.43,storm drain 1,3600\n"
        "3101040103000002,device_kind_flood_gauge,310104010001002,31.2,121.44,underpass,300\n"
        "3101040103000003,TRAMPOLINE,310104010001001,31.19,121.43,x,60\n"
        "3101040103000004,ELEVATOR,310104010001001,north,121.43,x,60\n"
        "3101040103000005,ELEVATOR\n");
  absl::StatusOr<ParsedDevices> parsed = ParseDeviceFile(csv);
  REQUIRE(parsed.ok());
  REQUIRE(parsed->devices.size() == 2);
  CHECK(parsed->devices[1].kind() == v1::DEVICE_KIND_FLOOD_GAUGE);
  CHECK(parsed->devices[0].grid().district_code() == "310104");
  CHECK(parsed->devices[0].grid().street_code() == "310104010");
  CHECK(parsed->devices[0].reporting_interval().seconds() == 3600);
  REQUIRE(parsed->errors.size() == 3);
  CHECK(parsed->errors[0].line == 4);
  CHECK_THAT(parsed->errors[0].message, Catch::Contains("TRAMPOLINE"));
  CHECK(parsed->errors[1].line == 5);
  CHECK_THAT(parsed->errors[1].message, Catch::Contains("latitude_deg"));
  CHECK(parsed->errors[2].line == 6);
}

TEST_CASE("a CSV registry with an unknown column is refused at the header", "[import]") {
  testing::TempDir dir;
  const std::string csv = dir.Sub("devices.csv");
  Write(csv, "device_id,kind,grid_code,colour\n1,ELEVATOR,310104010001001,red\n");
  absl::StatusOr<ParsedDevices> parsed = ParseDeviceFile(csv);
  REQUIRE(parsed.ok());
  CHECK(parsed->devices.empty());
  REQUIRE(parsed->errors.size() == 1);
  CHECK(parsed->errors[0].line == 1);
  CHECK_THAT(parsed->errors[0].message, Catch::Contains("colour"));
}

TEST_CASE("JSON lines carry archive data and bad lines are reported by number", "[import]") {
  testing::TempDir dir;
  const std::string jsonl = dir.Sub("devices.jsonl");
  Write(jsonl,
        R"({"deviceId":"e-1","kind":"DEVICE_KIND_ELEVATOR","grid":{"gridCode":"310104010001001"},)"
        R"("elevator":{"installedYear":2004,"ratedSpeedMPerS":1.75}})"
        "\n"
        "{not json}\n"
        R"({"deviceId":"e-2","kind":"DEVICE_KIND_ELEVATOR","grid":{"gridCode":"310104010001001"}})"
        "\n");
  absl::StatusOr<ParsedDevices> parsed = ParseDeviceFile(jsonl);
  REQUIRE(parsed.ok());
  REQUIRE(parsed->devices.size() == 2);
  CHECK(parsed->devices[0].elevator().installed_year() == 2004);
  REQUIRE(parsed->errors.size() == 1);
  CHECK(parsed->errors[0].line == 2);
  CHECK_THAT(parsed->errors[0].message, Catch::Contains("UNDECODABLE"));
}

TEST_CASE(
    "a catalogue-only kind imports by its id from CSV and with archive fields from JSON lines",
    "[import][catalogue]") {
  testing::TempDir dir;
  const std::string csv = dir.Sub("devices.csv");
  Write(csv,
        "device_id,kind,grid_code\n"
        "gd-1,gas_detector,310104010001001\n"
        "gd-2,gas_detektor,310104010001001\n");
  absl::StatusOr<ParsedDevices> from_csv = ParseDeviceFile(csv);
  REQUIRE(from_csv.ok());
  REQUIRE(from_csv->devices.size() == 1);
  CHECK(from_csv->devices[0].kind_id() == "gas_detector");
  CHECK(from_csv->devices[0].kind() == v1::DEVICE_KIND_UNSPECIFIED);
  REQUIRE(from_csv->errors.size() == 1);
  CHECK(from_csv->errors[0].line == 3);
  CHECK_THAT(from_csv->errors[0].message,
             Catch::Contains("kind 'gas_detektor' is not a kind of the catalogue") &&
                 Catch::Contains("gas_detector"));

  const std::string jsonl = dir.Sub("devices.jsonl");
  Write(jsonl,
        R"({"deviceId":"gd-3","kindId":"gas_detector","grid":{"gridCode":"310104010001001"},)"
        R"("archiveValues":{"fields":[{"name":"site","value":"kitchen"}]}})"
        "\n"
        R"({"deviceId":"gd-4","kindId":"gas_detector","grid":{"gridCode":"310104010001001"},)"
        R"("archiveValues":{"fields":[{"name":"has_shutoff_valve","value":"maybe"}]}})"
        "\n");
  absl::StatusOr<ParsedDevices> from_json = ParseDeviceFile(jsonl);
  REQUIRE(from_json.ok());
  REQUIRE(from_json->devices.size() == 1);
  CHECK(from_json->devices[0].archive_values().fields(0).value() == "kitchen");
  REQUIRE(from_json->errors.size() == 1);
  CHECK(from_json->errors[0].line == 2);
  CHECK_THAT(from_json->errors[0].message,
             Catch::Contains("INVALID_FIELD") && Catch::Contains("true or false"));
}

TEST_CASE("imported registrations land in their device's partition and re-imports are skipped",
          "[import]") {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
      kernel::EventLog::Open({.path = dir.Sub("log")});
  REQUIRE(log.ok());
  std::vector<v1::DeviceRegistered> devices(20);
  for (int i = 0; i < 20; ++i) {
    devices[i].set_device_id("3101040103" + std::to_string(100000 + i));
    devices[i].set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
    devices[i].mutable_grid()->set_grid_code("310104010001001");
  }
  const absl::Time now = absl::FromUnixSeconds(1'790'000'000);
  absl::StatusOr<ImportResult> first = ImportDevices(**log, devices, 4, now);
  REQUIRE(first.ok());
  CHECK(first->appended == 20);
  CHECK(first->unchanged == 0);
  for (const v1::DeviceRegistered& d : devices) {
    absl::StatusOr<std::vector<v1::Event>> events =
        (*log)->ReadStream("registry/" + d.device_id(), kernel::StreamVersion(1), 10);
    REQUIRE(events.ok());
    REQUIRE(events->size() == 1);
    CHECK(events->front().partition() ==
          static_cast<uint32_t>(KafkaPartitionFor(d.device_id(), 4)));
  }
  devices[3].set_name("renamed");
  absl::StatusOr<ImportResult> again = ImportDevices(**log, devices, 4, now);
  REQUIRE(again.ok());
  CHECK(again->appended == 1);
  CHECK(again->unchanged == 19);
  CHECK(*(*log)->CurrentVersion("registry/" + devices[3].device_id()) == kernel::StreamVersion(2));
}

// Found while writing fuzz/device_import_fuzz.cc, which confirmed both under ASan and UBSan
// (fuzz/regressions/device_import/).
TEST_CASE("a CSV header naming a column twice is refused instead of read past", "[import]") {
  const ParsedDevices parsed = ParseDeviceText(
      "kind,grid_code,device_id,device_id\nELEVATOR,310104010001001,x\n", DeviceFileFormat::kCsv);
  CHECK(parsed.devices.empty());
  REQUIRE(parsed.errors.size() == 1);
  CHECK(parsed.errors[0].line == 1);
  CHECK_THAT(parsed.errors[0].message, Catch::Contains("'device_id' is named twice"));
}

TEST_CASE("a CSV reporting interval that is no finite number of seconds is a line error",
          "[import]") {
  const ParsedDevices parsed = ParseDeviceText(
      "device_id,kind,grid_code,reporting_interval_s,latitude_deg\n"
      "e-1,ELEVATOR,310104010001001,1e300,31.2\n"
      "e-2,ELEVATOR,310104010001001,nan,31.2\n"
      "e-3,ELEVATOR,310104010001001,-inf,31.2\n"
      "e-4,ELEVATOR,310104010001001,60,inf\n"
      "e-5,ELEVATOR,310104010001001,60,31.2\n",
      DeviceFileFormat::kCsv);
  REQUIRE(parsed.devices.size() == 1);
  CHECK(parsed.devices[0].reporting_interval().seconds() == 60);
  REQUIRE(parsed.errors.size() == 4);
  CHECK_THAT(parsed.errors[0].message, Catch::Contains("out of range"));
  CHECK_THAT(parsed.errors[1].message, Catch::Contains("is not a number"));
  CHECK_THAT(parsed.errors[3].message, Catch::Contains("latitude_deg"));
}

}  // namespace
}  // namespace cityops::ingest
