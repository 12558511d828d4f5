// The HTTP API against the real daemon process (`cityops serve`, tests/testing/
// daemon_process.h): every route of api/routes.cc with the data it serves, the change
// stream, tokens, roles and units, every kind of bad request, the case workflow run by
// people through the API, and the `cityops cases` / `cityops report` commands run as
// child processes against it. Data comes in as integrators send it: device registrations
// and readings published to the daemon's embedded Kafka cluster, reports through the API.
//
// api_unit_test.cc covers the parts that need no daemon.
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/openapi.h"
#include "api/routes.h"
#include "catalogue/catalogue.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/record_producer.h"
#include "kernel/proto_time.h"
#include "tests/testing/change_stream.h"
#include "tests/testing/child_process.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/metric_sample.h"
#include "tests/testing/report_request.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/text_file.h"
#include "tests/testing/wait.h"

#ifndef CITYOPS_SOURCE_DIR
#error "CITYOPS_SOURCE_DIR must name the source tree"
#endif

namespace cityops {
namespace {

using testing::ReadFile;
using testing::ReportJson;

namespace pb = google::protobuf;
using Catch::Matchers::Contains;
using testing::ChangeStream;
using testing::DaemonProcess;
using testing::Get;
using testing::HttpReply;
using testing::kAdminToken;
using testing::kOperatorToken;
using testing::kOtherStreetOperatorToken;
using testing::kStreetOperatorToken;
using testing::kSupervisorToken;
using testing::kViewerToken;
using testing::Post;

// Residential grids inside the two test streets (tests/testing/daemon_process.h).
constexpr char kGrid[] = "310104001001001";       // Street 310104001 (stan.street's).
constexpr char kOtherGrid[] = "310104002001001";  // Street 310104002 (olga.other's).
constexpr size_t kMaxBodyBytes = 2048;

// The test daemon's configuration with a small body limit and `http_extra` settings of
// `http:`, plus `extra` YAML. These tests probe every route without a token, many more
// times a minute than the default limit of failed authentications allows one client (the
// limit itself is tested in tokens_test.cc).
std::string ApiConfig(const std::string& data_dir, const std::string& extra = "",
                      const std::string& http_extra = "") {
  std::string config = DaemonProcess::Config(data_dir);
  const int replaced = absl::StrReplaceAll(
      {{"http: {port: 0}",
        absl::StrCat("http: {port: 0, max_body_bytes: ", kMaxBodyBytes,
                     ", auth_failure_limit: {failures: 10000}", http_extra, "}")}},
      &config);
  REQUIRE(replaced == 1);
  return config + extra;
}

// rules/default.yaml, renamed and with `edits` applied (each must match exactly once),
// written to `path`; returns the YAML to add to the daemon's configuration.
std::string WriteRules(const std::string& path, const std::string& name,
                       const std::vector<std::pair<std::string, std::string>>& edits) {
  std::string yaml = ReadFile(std::string(CITYOPS_SOURCE_DIR) + "/rules/default.yaml");
  REQUIRE(absl::StrReplaceAll({{"\nname: default\n", "\nname: " + name + "\n"}}, &yaml) == 1);
  for (const auto& [from, to] : edits) {
    INFO("rules/default.yaml no longer contains: " << from);
    REQUIRE(absl::StrReplaceAll({{from, to}}, &yaml) == 1);
  }
  std::ofstream(path) << yaml;
  return absl::StrCat("rules: {file: ", path, "}\n");
}

// Polls `done` every 50 ms until it holds or `timeout` passes (testing/wait.h).
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(30)) {
  return testing::WaitUntil(done, timeout, absl::Milliseconds(50));
}

// `json` parsed strictly into `out`: a field the message does not have is an error, so a
// reply that parses has exactly the documented shape.
bool ParseStrict(const std::string& json, pb::Message* out, std::string* error = nullptr) {
  pb::util::JsonParseOptions strict;
  strict.ignore_unknown_fields = false;
  const auto s = pb::util::JsonStringToMessage(json, out, strict);
  if (!s.ok() && error != nullptr) *error = std::string(s.message());
  return s.ok();
}

template <typename M>
M Json(const HttpReply& r) {
  M m;
  std::string error;
  INFO("reply " << r.status << ": " << r.body.substr(0, 3000));
  INFO("as " << M::descriptor()->full_name() << ": " << error);
  CHECK(ParseStrict(r.body, &m, &error));
  return m;
}

// Checks that `r` is the API's error `{"error": {code, httpStatus, message}}` with
// `status` and `code`, and returns the message.
std::string ErrorOf(const HttpReply& r, int status, const std::string& code) {
  INFO("reply " << r.status << " " << r.content_type << ": " << r.body);
  CHECK(r.status == status);
  CHECK(r.content_type == "application/json");
  v1::ErrorResponse e;
  CHECK(ParseStrict(r.body, &e));
  CHECK(e.error().http_status() == status);
  CHECK(e.error().code() == code);
  CHECK_FALSE(e.error().message().empty());
  return e.error().message();
}

// A message folded to lower case, for checks that name a case id regardless of case.
std::string Plain(std::string message) {
  for (char& c : message) c = c == '_' ? ' ' : static_cast<char>(std::tolower(c));
  return message;
}

// --------------------------------------------------------------------------- Kafka

// Publishes registrations and readings to the daemon's Kafka cluster, as integrators do.
class KafkaFeed {
 public:
  explicit KafkaFeed(const std::string& bootstrap) {
    absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> p =
        ingest::RecordProducer::Create(bootstrap, {{"linger.ms", "1"}});
    INFO(p.status().ToString());
    REQUIRE(p.ok());
    producer_ = *std::move(p);
  }

  void Register(const std::string& device_id, v1::DeviceKind kind, const std::string& grid,
                absl::Duration interval) {
    v1::DeviceRegistered d;
    d.set_device_id(device_id);
    d.set_kind(kind);
    d.mutable_grid()->set_district_code(grid.substr(0, 6));
    d.mutable_grid()->set_street_code(grid.substr(0, 9));
    d.mutable_grid()->set_grid_code(grid);
    d.mutable_location()->set_latitude_deg(31.19);
    d.mutable_location()->set_longitude_deg(121.43);
    d.set_name("test " + device_id);
    kernel::ToDurationProto(interval, d.mutable_reporting_interval());
    Produce("cityops.devices", device_id, d.SerializeAsString());
  }

  void Elevator(const std::string& device_id, const std::vector<int>& faults) {
    v1::SensorReading r = Reading(device_id, v1::DEVICE_KIND_ELEVATOR);
    v1::ElevatorMetrics* m = r.mutable_elevator();
    m->set_floor(3);
    m->set_direction(v1::DIRECTION_STOPPED);
    m->set_speed_m_per_s(0);
    m->set_door_state(v1::DOOR_STATE_CLOSED);
    m->set_passenger_present(!faults.empty());
    m->set_mains_power(true);
    for (int f : faults) m->add_fault_codes(f);
    Produce("cityops.readings", device_id, r.SerializeAsString());
  }

  void FloodGauge(const std::string& device_id, double depth_cm) {
    v1::SensorReading r = Reading(device_id, v1::DEVICE_KIND_FLOOD_GAUGE);
    r.mutable_flood_gauge()->set_water_depth_cm(depth_cm);
    r.mutable_flood_gauge()->set_rainfall_mm_per_h(1);
    r.mutable_flood_gauge()->set_battery_pct(80);
    Produce("cityops.readings", device_id, r.SerializeAsString());
  }

  void Manhole(const std::string& device_id, double tilt_deg) {
    v1::SensorReading r = Reading(device_id, v1::DEVICE_KIND_MANHOLE_COVER);
    r.mutable_manhole_cover()->set_tilt_deg(tilt_deg);
    r.mutable_manhole_cover()->set_cover_open(false);
    r.mutable_manhole_cover()->set_battery_pct(90);
    Produce("cityops.readings", device_id, r.SerializeAsString());
  }

  void Raw(const std::string& topic, const std::string& key, const std::string& value) {
    Produce(topic, key, value);
  }

  void Flush() {
    const absl::Status s = producer_->Flush(absl::Seconds(20));
    INFO(s.ToString());
    REQUIRE(s.ok());
  }

 private:
  v1::SensorReading Reading(const std::string& device_id, v1::DeviceKind kind) {
    v1::SensorReading r;
    r.set_device_id(device_id);
    r.set_kind(kind);
    r.set_reading_id(absl::StrCat(device_id, ":", ++counter_));
    kernel::SetTimestamp(absl::Now(), r.mutable_event_time());
    return r;
  }

  void Produce(const std::string& topic, const std::string& key, const std::string& value) {
    const absl::Status s = producer_->Produce(topic, key, value);
    INFO(s.ToString());
    REQUIRE(s.ok());
  }

  std::unique_ptr<ingest::RecordProducer> producer_;
  int counter_ = 0;
};

// --------------------------------------------------------------------------- change stream

// The `data:` lines of the server-sent events named `event` in `text`.
std::vector<std::string> EventData(const std::string& text, const std::string& event) {
  std::vector<std::string> out;
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    absl::string_view data;
    bool match = false;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (line == "event: " + event) match = true;
      if (absl::StartsWith(line, "data: ")) data = line.substr(6);
    }
    if (match) out.emplace_back(data);
  }
  return out;
}

// --------------------------------------------------------------------------- API helpers

HttpReply Command(int port, const std::string& token, const std::string& case_id,
                  const std::string& command, const std::string& body) {
  return Post(port, absl::StrCat("/api/v1/cases/", case_id, "/", command), token, body);
}

v1::CaseDetail GetCase(int port, const std::string& case_id) {
  const HttpReply r = Get(port, "/api/v1/cases/" + case_id, kViewerToken);
  INFO(r.body);
  REQUIRE(r.status == 200);
  return Json<v1::CaseDetail>(r);
}

// Waits until the rules stage has opened a reported case and the read models list it.
void WaitOpened(int port, const std::string& case_id) {
  INFO("case " << case_id << " was not opened by the rules stage");
  REQUIRE(WaitUntil([&] {
    const HttpReply r = Get(port, "/api/v1/cases/" + case_id, kViewerToken);
    v1::CaseDetail d;
    if (r.status != 200 || !ParseStrict(r.body, &d) || !d.case_().opened()) return false;
    const HttpReply list = Get(port, "/api/v1/cases?page_size=1000", kViewerToken);
    v1::ListCasesResponse l;
    if (list.status != 200 || !ParseStrict(list.body, &l)) return false;
    for (const v1::CaseView& c : l.cases()) {
      if (c.case_id() == case_id && c.opened()) return true;
    }
    return false;
  }));
}

std::vector<std::string> CaseIds(const HttpReply& r) {
  std::vector<std::string> ids;
  const v1::ListCasesResponse list = Json<v1::ListCasesResponse>(r);
  for (const v1::CaseView& c : list.cases()) ids.push_back(c.case_id());
  return ids;
}

bool HasId(const std::vector<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// A path of the route table with sample values for its parameters.
std::string SamplePath(const std::string& path, const std::string& device_id,
                       const std::string& case_id) {
  return absl::StrReplaceAll(
      path, {{"{device_id}", device_id}, {"{case_id}", case_id}, {"{command}", "register"}});
}

// The paths of an OpenAPI document (the keys under `paths:`).
std::set<std::string> DocPaths(const std::string& yaml) {
  std::set<std::string> out;
  bool in_paths = false;
  for (absl::string_view line : absl::StrSplit(yaml, '\n')) {
    if (line == "paths:") {
      in_paths = true;
      continue;
    }
    if (!in_paths) continue;
    if (!line.empty() && line[0] != ' ') break;  // The next top-level key.
    if (absl::StartsWith(line, "  ") && line.size() > 3 && line[2] != ' ' &&
        absl::EndsWith(line, ":")) {
      std::string path(line.substr(2, line.size() - 3));
      path = absl::StrReplaceAll(path, {{"\"", ""}, {"'", ""}});
      out.insert(path);
    }
  }
  return out;
}

// --------------------------------------------------------------------------- tests

TEST_CASE("the committed api/openapi.yaml is the document the route table generates", "[api]") {
  const std::string committed = ReadFile(std::string(CITYOPS_SOURCE_DIR) + "/api/openapi.yaml");
  {
    INFO(
        "api/openapi.yaml differs from the document the route table generates: re-run "
        "`cityops openapi > api/openapi.yaml` and commit it");
    CHECK(committed == api::OpenApiYaml());
  }
  std::set<std::string> routes;
  for (const api::Route& r : api::Routes()) routes.insert(r.path);
  CHECK(DocPaths(api::OpenApiYaml()) == routes);
  for (const api::Route& r : api::Routes()) {
    for (const api::QueryParam& q : r.query) {
      INFO(r.path << " ?" << q.name);
      CHECK_THAT(api::OpenApiYaml(), Contains("name: " + q.name));
    }
  }
}

// The headers every answer carries (api/README.md#security-headers), and its one
// Cache-Control.
void CheckSecurityHeaders(const HttpReply& r, const std::string& cache_control) {
  auto header = [&](const char* name) {
    auto it = r.headers.find(name);
    return it == r.headers.end() ? std::string("(none)") : it->second;
  };
  CHECK(header("X-Content-Type-Options") == "nosniff");
  CHECK(header("Referrer-Policy") == "no-referrer");
  CHECK(header("X-Frame-Options") == "DENY");
  const std::string csp = header("Content-Security-Policy");
  CHECK_THAT(csp, Contains("default-src 'none'") && Contains("script-src 'self'") &&
                      Contains("style-src 'self'") && Contains("frame-ancestors 'none'"));
  CHECK_THAT(csp, !Contains("unsafe-inline") && !Contains("unsafe-eval"));
  CHECK(r.headers.count("Cache-Control") == 1);
  CHECK(header("Cache-Control") == cache_control);
}

TEST_CASE(
    "every read route answers as documented over IoT data from Kafka, and an IoT case is "
    "dispatched, verified and closed by its rule",
    "[api][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string rules_path = dir.Sub("rules.yaml");
  // The entrapment rule verifies after 2 s of normal readings instead of 10 min.
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"verification_window: 10m", "verification_window: 2s"}};
  DaemonProcess d(data, ApiConfig(data, WriteRules(rules_path, "api-test", edits)));
  REQUIRE(d.WaitReady());
  const int port = d.port();

  // --- Routes without data: the document, and every route exists.
  const HttpReply openapi = Get(port, "/api/v1/openapi.yaml");
  CHECK(openapi.status == 200);
  CHECK(openapi.content_type == "application/yaml");
  CHECK(openapi.body == api::OpenApiYaml());
  CHECK(openapi.body == ReadFile(std::string(CITYOPS_SOURCE_DIR) + "/api/openapi.yaml"));
  for (const std::string& path : DocPaths(openapi.body)) {
    for (const api::Route& route : api::Routes()) {
      if (route.path != path || route.id == api::RouteId::kChanges) continue;
      const std::string sample = SamplePath(path, "no-such-device", "no-such-case");
      const HttpReply r = route.method == "GET" ? Get(port, sample) : Post(port, sample, "", "{}");
      INFO(route.method << " " << sample << " -> " << r.status << " " << r.body);
      // Served: open routes answer, the others want a token; none is "no route".
      CHECK(r.status == (route.role == v1::ROLE_UNSPECIFIED ? 200 : 401));
    }
  }
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/nothing-here", kViewerToken), 404, "NOT_FOUND"),
             Contains("no route GET /api/v1/nothing-here"));
  // Nothing beyond the document is served under the API.
  for (const char* path : {"/api/v2/cases", "/api/v1/cases/x/register/more", "/api/v1/devices/",
                           "/api/v1/events/x", "/api/v1/openapi.json"}) {
    INFO(path);
    CHECK(ErrorOf(Get(port, path, kAdminToken), 404, "NOT_FOUND") != "");
  }
  CHECK(ErrorOf(Post(port, "/api/v1/statistics", kAdminToken, "{}"), 404, "NOT_FOUND") != "");

  // --- Data, as integrators send it.
  KafkaFeed kafka(d.kafka());
  kafka.Register("elev-1", v1::DEVICE_KIND_ELEVATOR, kGrid, absl::Seconds(10));
  kafka.Register("gauge-1", v1::DEVICE_KIND_FLOOD_GAUGE, kOtherGrid, absl::Minutes(5));
  kafka.Flush();
  REQUIRE(WaitUntil([&] {
    const HttpReply a = Get(port, "/api/v1/devices/elev-1", kViewerToken);
    const HttpReply b = Get(port, "/api/v1/devices/gauge-1", kViewerToken);
    return a.status == 200 && b.status == 200;
  }));
  kafka.Elevator("elev-1", {});
  kafka.Elevator("elev-1", {8});  // Passengers trapped.
  kafka.FloodGauge("gauge-1", 2);
  kafka.Manhole("ghost-1", 1);  // Not registered: stored all the same.
  kafka.Raw("cityops.readings", "bad-1", "\xff\xfe not a reading");  // Dead-lettered.
  kafka.Flush();

  std::string case_id;
  REQUIRE(WaitUntil([&] {
    const HttpReply r = Get(port, "/api/v1/cases?source=iot_rule&stage=dispatched", kViewerToken);
    v1::ListCasesResponse l;
    if (r.status != 200 || !ParseStrict(r.body, &l) || l.cases_size() == 0) return false;
    case_id = l.cases(0).case_id();
    return true;
  }));
  REQUIRE(WaitUntil([&] {
    const HttpReply r = Get(port, "/api/v1/devices?unregistered=true", kViewerToken);
    return r.status == 200 && absl::StrContains(r.body, "ghost-1");
  }));

  // --- Every GET route, with the least role it needs: status, content type, JSON shape.
  for (const api::Route& route : api::Routes()) {
    if (route.method != "GET" || route.id == api::RouteId::kChanges) continue;
    const std::string path = SamplePath(route.path, "elev-1", case_id);
    const HttpReply r =
        Get(port, path, route.role == v1::ROLE_UNSPECIFIED ? std::string() : kViewerToken);
    INFO(path << " -> " << r.status << " " << r.content_type << ": " << r.body.substr(0, 500));
    CHECK(r.status == 200);
    CheckSecurityHeaders(r, "no-store");
    if (route.response != nullptr) {
      CHECK(r.content_type == "application/json");
      std::unique_ptr<pb::Message> m(
          pb::MessageFactory::generated_factory()->GetPrototype(route.response)->New());
      std::string error;
      INFO("as " << route.response->full_name() << ": " << error);
      CHECK(ParseStrict(r.body, m.get(), &error));
    } else {
      CHECK(absl::StartsWith(r.content_type, route.content_type));
    }
  }

  // --- Errors and the dashboard's files carry the security headers too; a token in the
  // query string is not taken (tokens travel in the Authorization header only).
  CheckSecurityHeaders(Get(port, "/api/v1/whoami"), "no-store");  // 401
  const HttpReply in_url = Get(port, std::string("/api/v1/whoami?token=") + kViewerToken);
  CHECK(in_url.status == 401);
  CheckSecurityHeaders(Get(port, "/api/v1/nothing-here", kViewerToken), "no-store");  // 404
  for (const char* file : {"/", "/app.js", "/style.css"}) {
    const HttpReply r = Get(port, file);
    INFO(file);
    CHECK(r.status == 200);
    CheckSecurityHeaders(r, "no-cache");
  }

  // --- Health and readiness name their stages.
  const v1::HealthResponse health = Json<v1::HealthResponse>(Get(port, "/healthz"));
  CHECK(health.status() == "ok");
  std::set<std::string> stages;
  for (const v1::StageHealth& s : health.stages()) stages.insert(s.name());
  CHECK(stages.contains("ingest"));
  CHECK(stages.contains("rules"));
  CHECK(stages.contains("views"));
  CHECK(Json<v1::HealthResponse>(Get(port, "/readyz")).status() == "ok");

  // --- whoami is the token's identity.
  const v1::WhoAmIResponse who =
      Json<v1::WhoAmIResponse>(Get(port, "/api/v1/whoami", kStreetOperatorToken));
  CHECK(who.actor().user() == "stan.street");
  CHECK(who.actor().role() == v1::ROLE_OPERATOR);
  CHECK(who.actor().unit().level() == v1::GRID_LEVEL_STREET_CENTER);
  CHECK(who.actor().unit().code() == testing::kStreetCode);

  // --- Devices: filters and paging.
  auto device_ids = [&](const std::string& query) {
    const HttpReply r = Get(port, "/api/v1/devices" + query, kViewerToken);
    INFO(query << ": " << r.body);
    CHECK(r.status == 200);
    std::vector<std::string> ids;
    const v1::ListDevicesResponse list = Json<v1::ListDevicesResponse>(r);
    for (const v1::DeviceView& v : list.devices()) {
      ids.push_back(v.device_id());
    }
    return ids;
  };
  CHECK(device_ids("") == std::vector<std::string>{"elev-1", "gauge-1", "ghost-1"});
  CHECK(device_ids("?kind=elevator") == std::vector<std::string>{"elev-1"});
  CHECK(device_ids("?kind=flood_gauge") == std::vector<std::string>{"gauge-1"});
  CHECK(device_ids("?kind=FLOOD_GAUGE") == std::vector<std::string>{"gauge-1"});  // As before.
  // A kind of the catalogue alone: known, none of them in this city.
  CHECK(device_ids("?kind=gas_detector").empty());
  {
    const HttpReply r = Get(port, "/api/v1/devices?kind=elevator", kViewerToken);
    CHECK_THAT(r.body, Contains("\"kindId\":\"elevator\""));
    const v1::ListDevicesResponse list = Json<v1::ListDevicesResponse>(r);
    REQUIRE(list.devices_size() == 1);
    CHECK(list.devices(0).kind_id() == "elevator");
  }
  CHECK(device_ids("?grid=310104001") == std::vector<std::string>{"elev-1"});
  CHECK(device_ids("?grid=310104002001") == std::vector<std::string>{"gauge-1"});
  CHECK(device_ids("?unregistered=true") == std::vector<std::string>{"ghost-1"});
  CHECK(device_ids("?online=false&kind=elevator").empty());
  CHECK(HasId(device_ids("?online=true"), "elev-1"));
  {
    std::vector<std::string> paged;
    std::string token;
    int pages = 0;
    do {
      const HttpReply r =
          Get(port, "/api/v1/devices?page_size=1" + (token.empty() ? "" : "&page_token=" + token),
              kViewerToken);
      REQUIRE(r.status == 200);
      const v1::ListDevicesResponse page = Json<v1::ListDevicesResponse>(r);
      CHECK(page.devices_size() <= 1);
      for (const v1::DeviceView& v : page.devices()) paged.push_back(v.device_id());
      token = page.next_page_token();
    } while (!token.empty() && ++pages < 10);
    CHECK(paged == std::vector<std::string>{"elev-1", "gauge-1", "ghost-1"});
  }

  // --- One device: registration, recent readings, alerts.
  const v1::DeviceDetail elevator =
      Json<v1::DeviceDetail>(Get(port, "/api/v1/devices/elev-1", kViewerToken));
  CHECK(elevator.device().registered());
  CHECK(elevator.device().registration().grid().grid_code() == kGrid);
  CHECK(elevator.device().readings() == 2);
  REQUIRE(elevator.device().recent_readings_size() == 2);
  CHECK(elevator.device().recent_readings(0).elevator().fault_codes_size() == 1);  // Newest first.
  CHECK(elevator.device().alert_severity() == v1::SEVERITY_CRITICAL);
  REQUIRE(elevator.alerts_size() >= 1);
  CHECK(elevator.alerts(0).raised().rule_id() == "elevator.entrapment");
  CHECK(elevator.alerts(0).active());
  CHECK(elevator.alerts(0).case_id() == case_id);
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/devices/nope", kViewerToken), 404, "NOT_FOUND"),
             Contains("device nope is not known"));

  // --- The map: every device as a point with its alert state.
  const v1::DeviceMap map = Json<v1::DeviceMap>(Get(port, "/api/v1/map", kViewerToken));
  std::map<std::string, v1::MapPoint> points;
  for (const v1::MapPoint& p : map.points()) points[p.device_id()] = p;
  REQUIRE(points.size() == 3);
  CHECK(points["elev-1"].alert_severity() == v1::SEVERITY_CRITICAL);
  CHECK(points["elev-1"].grid_code() == kGrid);
  CHECK(points["elev-1"].latitude_deg() == Approx(31.19));
  CHECK(points["elev-1"].kind_id() == "elevator");
  CHECK(points["gauge-1"].kind_id() == "flood_gauge");
  CHECK(points["ghost-1"].kind_id() == "manhole_cover");
  CHECK(points["gauge-1"].alert_severity() == v1::SEVERITY_UNSPECIFIED);
  CHECK_FALSE(points["ghost-1"].registered());

  // --- The catalogue in force (no catalogue file configured: the built-in one), as the
  // dashboard names kinds and metrics by it.
  {
    const HttpReply r = Get(port, "/api/v1/catalogue", kViewerToken);
    REQUIRE(r.status == 200);
    const v1::CatalogueResponse c = Json<v1::CatalogueResponse>(r);
    CHECK(c.built_in());
    CHECK(c.source_path() == catalogue::kDefaultCatalogueFile);
    CHECK(c.sha256().size() == 64);
    std::vector<std::string> ids;
    for (const v1::DeviceKindSpec& k : c.catalogue().kinds()) {
      INFO(k.id());
      ids.push_back(k.id());
      CHECK_FALSE(k.name().zh().empty());
      CHECK_FALSE(k.name().en().empty());
      CHECK_FALSE(k.department().empty());
      CHECK(k.metrics_size() > 0);
    }
    CHECK(ids == std::vector<std::string>{"manhole_cover", "elevator", "curtain_wall",
                                          "flood_gauge", "fire_hydrant", "smoke_detector",
                                          "ebike_charging_shed", "gas_detector",
                                          "falling_object_camera", "noise_meter"});
    const v1::DeviceKindSpec& gas = c.catalogue().kinds(7);
    CHECK(gas.name().zh() == "可燃气体探测器");
    CHECK(gas.name().en() == "Gas detector");
    CHECK(gas.department() == "gas-company");
    CHECK(gas.typed() == v1::DEVICE_KIND_UNSPECIFIED);
    CHECK(c.catalogue().kinds(3).typed() == v1::DEVICE_KIND_FLOOD_GAUGE);
    REQUIRE(gas.metrics_size() == 4);
    CHECK(gas.metrics(0).name() == "gas_lel_pct");
    CHECK(gas.metrics(0).label().en() == "Combustible gas");
    CHECK(gas.metrics(0).unit() == "%LEL");
    CHECK(kernel::FromDurationProto(gas.reporting_interval()) == absl::Minutes(30));
    REQUIRE(c.catalogue().categories_size() > 0);
    CHECK(c.catalogue().categories(0).code() == "0103");
    CHECK(c.catalogue().categories(0).name().en() == "Manhole cover damaged or missing");
    CHECK_THAT(r.body, Contains("\"zh\":\"可燃气体探测器\""));
    CHECK(Get(port, "/api/v1/catalogue").status == 401);
  }

  // --- Alerts: active, by device, by rule.
  auto alert_count = [&](const std::string& query) {
    return Json<v1::ListAlertsResponse>(Get(port, "/api/v1/alerts" + query, kViewerToken))
        .alerts_size();
  };
  CHECK(alert_count("?active=true") >= 1);
  CHECK(alert_count("?device=elev-1&rule=elevator.entrapment") == 1);
  CHECK(alert_count("?device=gauge-1") == 0);
  CHECK(alert_count("?rule=flood.road-15cm") == 0);

  // --- Cases: filters.
  auto case_ids = [&](const std::string& query) {
    return CaseIds(Get(port, "/api/v1/cases" + query, kViewerToken));
  };
  CHECK(case_ids("") == std::vector<std::string>{case_id});
  CHECK(case_ids("?stage=dispatched") == std::vector<std::string>{case_id});
  CHECK(case_ids("?stage=registered").empty());
  CHECK(case_ids("?source=hotline_12345").empty());
  CHECK(case_ids("?grid=310104001") == std::vector<std::string>{case_id});
  CHECK(case_ids("?grid=310104002").empty());
  CHECK(case_ids("?overdue=yellow").empty());
  CHECK(case_ids("?reported_after=2000-01-01T00:00:00Z&reported_before=2999-01-01T00:00:00Z") ==
        std::vector<std::string>{case_id});
  CHECK(case_ids("?reported_after=2999-01-01T00:00:00Z").empty());
  CHECK(case_ids("?reported_before=2000-01-01T00:00:00Z").empty());

  // --- One case: opened, registered and dispatched by the rule, with its timeline.
  v1::CaseDetail iot = GetCase(port, case_id);
  CHECK(iot.case_().source() == v1::CASE_SOURCE_IOT_RULE);
  CHECK(iot.case_().rule_id() == "elevator.entrapment");
  CHECK(iot.case_().device_id() == "elev-1");
  CHECK(iot.case_().department() == "elevator-maintenance");
  REQUIRE(iot.timeline_size() >= 3);
  CHECK(iot.timeline(0).has_case_opened());
  for (const v1::Event& e : iot.timeline()) CHECK(e.provenance().stage() == "rules");
  CHECK(iot.time_in_stage_size() >= 1);
  CHECK(iot.has_as_of());
  REQUIRE(iot.case_().ticket_ids_size() == 1);
  const std::string ticket_id = iot.case_().ticket_ids(0);

  // --- Tickets, events (by stream and by partition), statistics.
  v1::ListTicketsResponse tickets;
  REQUIRE(WaitUntil([&] {
    tickets = Json<v1::ListTicketsResponse>(Get(port, "/api/v1/tickets", kViewerToken));
    return tickets.tickets_size() >= 1;
  }));
  REQUIRE(tickets.tickets_size() == 1);
  CHECK(tickets.tickets(0).ticket().ticket_id() == ticket_id);
  CHECK(tickets.tickets(0).ticket().case_id() == case_id);
  CHECK(tickets.tickets(0).ticket().department() == "elevator-maintenance");

  const v1::ListEventsResponse stream = Json<v1::ListEventsResponse>(
      Get(port, "/api/v1/events?stream=case/" + case_id, kViewerToken));
  REQUIRE(stream.events_size() == iot.timeline_size());
  for (int i = 0; i < stream.events_size(); ++i) {
    CHECK(stream.events(i).stream_version() == static_cast<uint64_t>(i + 1));
  }
  const v1::ListEventsResponse two = Json<v1::ListEventsResponse>(
      Get(port, "/api/v1/events?stream=case/" + case_id + "&from=2&limit=1", kViewerToken));
  REQUIRE(two.events_size() == 1);
  CHECK(two.events(0).stream_version() == 2);
  CHECK(two.next_from() == 3);
  const v1::ListEventsResponse partition = Json<v1::ListEventsResponse>(
      Get(port, "/api/v1/events?partition=0&from=0&limit=2", kViewerToken));
  REQUIRE(partition.events_size() == 2);
  CHECK(partition.events(0).sequence() == 0);
  CHECK(partition.events(1).sequence() == 1);
  CHECK(partition.next_from() == 2);
  CHECK(Json<v1::ListEventsResponse>(
            Get(port, "/api/v1/events?stream=case/no-such-case", kViewerToken))
            .events_size() == 0);

  const v1::Statistics stats = Json<v1::Statistics>(Get(port, "/api/v1/statistics", kViewerToken));
  CHECK(stats.cases_total() == 1);
  CHECK(stats.devices_total() == 3);
  CHECK(stats.devices_unregistered() == 1);
  CHECK(stats.alerts_active() >= 1);
  CHECK(stats.tickets_total() == 1);

  // --- Metrics: the issue's families, with the data above in them.
  const HttpReply metrics = Get(port, "/metrics");
  CHECK(metrics.content_type == "text/plain; version=0.0.4; charset=utf-8");
  const std::string& m = metrics.body;
  CHECK(testing::MetricSample(m, "cityops_up") == 1);
  CHECK(testing::MetricSample(m, "cityops_ingest_records_total") >= 7);  // Ingest rate: a counter.
  CHECK_THAT(m, Contains("# TYPE cityops_ingest_records_total counter"));
  CHECK_THAT(m, Contains("cityops_consumer_lag{topic=\"cityops.readings\",partition=\"0\"}"));
  CHECK_THAT(m, Contains("cityops_consumer_lag{topic=\"cityops.readings\",partition=\"1\"}"));
  CHECK(testing::MetricSample(m, "cityops_ingest_deadlettered_total{code=\"ALL\"}") == 1);
  {
    // ... and by its code, whatever the decoder called it.
    int coded = 0;
    for (absl::string_view line : absl::StrSplit(m, '\n')) {
      if (absl::StartsWith(line, "cityops_ingest_deadlettered_total{code=\"") &&
          !absl::StrContains(line, "\"ALL\"") && absl::EndsWith(line, " 1")) {
        ++coded;
      }
    }
    CHECK(coded == 1);
  }
  CHECK_THAT(m, Contains("# TYPE cityops_log_append_seconds histogram"));
  CHECK_THAT(m, Contains("cityops_log_append_seconds_bucket{le=\"+Inf\"}"));
  CHECK(testing::MetricSample(m, "cityops_log_append_seconds_count") > 0);
  CHECK(testing::MetricSample(m, "cityops_views_lag{partition=\"0\"}") >= 0);
  CHECK(testing::MetricSample(m, "cityops_rules_lag{partition=\"0\"}") >= 0);
  CHECK(testing::MetricSample(m, "cityops_cases_open{stage=\"dispatched\"}") == 1);
  CHECK(testing::MetricSample(m, "cityops_cases_overdue{level=\"yellow\"}") == 0);
  CHECK(testing::MetricSample(m, "cityops_cases_overdue{level=\"red\"}") == 0);

  // --- The IoT case through the API: the elevator crew handles it, the rule verifies and
  // closes it. Who handles is the workflow's one rule: a crew of the department the case
  // is dispatched to, serving its grid; grid units are refused whatever their area.
  CHECK_THAT(ErrorOf(Command(port, kViewerToken, case_id, "handle", R"({"result":"x"})"), 403,
                     "PERMISSION_DENIED"),
             Contains("needs the operator role"));
  const std::string other_street = Plain(ErrorOf(
      Command(port, kOtherStreetOperatorToken, case_id, "handle", R"({"result":"rescued"})"), 403,
      "PERMISSION_DENIED"));
  CHECK_THAT(other_street, Contains("only a crew of the department it is dispatched to, "
                                    "elevator-maintenance, serving grid 310104001001001 handles "
                                    "it; olga.other is street center 310104002, not a "
                                    "department's crew"));
  const std::string street = Plain(
      ErrorOf(Command(port, kStreetOperatorToken, case_id, "handle", R"({"result":"rescued"})"),
              403, "PERMISSION_DENIED"));
  CHECK_THAT(street, Contains("only a crew of the department it is dispatched to, "
                              "elevator-maintenance, serving grid 310104001001001 handles it; "
                              "stan.street is street center 310104001, not a department's "
                              "crew"));
  CHECK_THAT(Plain(ErrorOf(Command(port, testing::kWaterCrewToken, case_id, "handle",
                                   R"({"result":"rescued"})"),
                           403, "PERMISSION_DENIED")),
             Contains("wen.water is water-authority crew, district center 310104, another "
                      "department's"));
  const HttpReply handled =
      Command(port, testing::kElevatorCrewToken, case_id, "handle", R"({"result":"rescued"})");
  REQUIRE(handled.status == 200);
  CHECK(Json<v1::CommandResponse>(handled).case_().stage() == v1::CASE_STAGE_HANDLED);
  CHECK(Json<v1::CommandResponse>(handled).case_().handled_by().department() ==
        "elevator-maintenance");
  const std::string verify_refusal =
      ErrorOf(Command(port, kStreetOperatorToken, case_id, "verify", R"({"passed":true})"), 409,
              "FAILED_PRECONDITION");
  CHECK_THAT(verify_refusal, Contains("case " + case_id));
  CHECK_THAT(verify_refusal, Contains("verified automatically by rule elevator.entrapment"));
  CHECK_THAT(Plain(ErrorOf(Command(port, kOperatorToken, case_id, "close", "{}"), 409,
                           "FAILED_PRECONDITION")),
             Contains("it is handled"));
  kafka.Elevator("elev-1", {});  // Freed: the alert clears, the verification window starts.
  kafka.Flush();
  REQUIRE(WaitUntil([&] { return GetCase(port, case_id).case_().stage() == v1::CASE_STAGE_CLOSED; },
                    absl::Seconds(30)));
  iot = GetCase(port, case_id);
  REQUIRE(iot.timeline_size() >= 6);
  const v1::Event& closed = iot.timeline(iot.timeline_size() - 1);
  const v1::Event& verified = iot.timeline(iot.timeline_size() - 2);
  CHECK(closed.has_case_closed());
  CHECK(closed.provenance().stage() == "rules");
  CHECK(verified.case_verified().passed());
  CHECK(verified.provenance().stage() == "rules");
  bool saw_handled = false;
  for (const v1::Event& e : iot.timeline()) {
    if (!e.has_case_handled()) continue;
    saw_handled = true;
    CHECK(e.provenance().actor().user() == "eli.elevator");
    CHECK(e.provenance().actor().role() == v1::ROLE_OPERATOR);
    CHECK(e.provenance().actor().unit().department() == "elevator-maintenance");
    CHECK(e.case_handled().handler().level() == v1::GRID_LEVEL_CITY_CENTER);
    CHECK(e.case_handled().handler().department() == "elevator-maintenance");
  }
  CHECK(saw_handled);
  CHECK_FALSE(iot.has_as_of());  // Closed: final figures.
  CHECK(iot.time_in_stage_size() >= 4);
  CHECK(iot.handling_time().seconds() >= 2);

  // --- Rules: the active set, reloading needs an admin.
  v1::RulesetActivated active =
      Json<v1::RulesetActivated>(Get(port, "/api/v1/rules", kViewerToken));
  CHECK(active.name() == "api-test");
  CHECK(active.sha256().size() == 64);
  CHECK(active.source_path() == rules_path);
  CHECK_THAT(
      ErrorOf(Post(port, "/api/v1/rules/reload", kOperatorToken, ""), 403, "PERMISSION_DENIED"),
      Contains("needs the admin role"));
  CHECK_THAT(
      ErrorOf(Post(port, "/api/v1/rules/reload", kSupervisorToken, ""), 403, "PERMISSION_DENIED"),
      Contains("sue.supervisor is a supervisor"));
  const HttpReply same = Post(port, "/api/v1/rules/reload", kAdminToken, "");
  REQUIRE(same.status == 200);
  CHECK_FALSE(Json<v1::ReloadRulesResponse>(same).activated());
  WriteRules(rules_path, "api-test-2", edits);
  const HttpReply changed = Post(port, "/api/v1/rules/reload", kAdminToken, "");
  REQUIRE(changed.status == 200);
  const v1::ReloadRulesResponse reload = Json<v1::ReloadRulesResponse>(changed);
  CHECK(reload.activated());
  CHECK(reload.name() == "api-test-2");
  CHECK(reload.sha256() != active.sha256());
  CHECK(reload.has_event());
  REQUIRE(WaitUntil([&] {
    return Json<v1::RulesetActivated>(Get(port, "/api/v1/rules", kViewerToken)).name() ==
           "api-test-2";
  }));
  std::ofstream(rules_path) << "name: broken\nrules: [{id: x, severity: loud}]\n";
  const std::string broken =
      ErrorOf(Post(port, "/api/v1/rules/reload", kAdminToken, ""), 400, "INVALID_ARGUMENT");
  CHECK_THAT(broken, Contains(rules_path));

  // --- Backups: an admin's, and only with backups.dir configured (not here).
  CHECK_THAT(ErrorOf(Post(port, "/api/v1/backups", kSupervisorToken, ""), 403, "PERMISSION_DENIED"),
             Contains("needs the admin role"));
  CHECK_THAT(ErrorOf(Post(port, "/api/v1/backups", kAdminToken, ""), 409, "FAILED_PRECONDITION"),
             Contains("set backups.dir"));

  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

TEST_CASE(
    "people work reported cases through every stage via the API, every refusal and bad "
    "request says why, and the change stream shows it live",
    "[api][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  // Category 9999 turns yellow after 1 s undiscovered-to-registered and red after 2 s.
  const std::string rules =
      WriteRules(dir.Sub("rules.yaml"), "api-test",
                 {{"\ncategories:\n",
                   "\ncategories:\n  - category: {code: \"9999\", name: \"Test: hurry\"}\n"
                   "    department: test-department\n"
                   "    deadlines: {register_within: 1s, dispatch_within: 1s, handle_within: 1s, "
                   "verify_within: 1s, close_within: 1s}\n"}});
  const std::string backups = dir.Sub("backups");
  DaemonProcess d(
      data, ApiConfig(data, rules + "backups: {dir: " + backups + "}\n", ", max_event_streams: 1"));
  REQUIRE(d.WaitReady());
  const int port = d.port();
  ChangeStream changes(port, kViewerToken);
  REQUIRE(changes.WaitFor("retry: 2000"));
  // One stream is the configured limit: a second one is told so.
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/changes", kViewerToken), 503, "UNAVAILABLE"),
             Contains("http.max_event_streams"));

  // --- Tokens.
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/cases"), 401, "UNAUTHENTICATED"),
             Contains("Authorization: Bearer"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/cases", "not-a-configured-token"), 401, "UNAUTHENTICATED"),
             Contains("not one of the daemon's configured tokens"));
  CHECK_THAT(
      ErrorOf(testing::Request(port, "GET", "/api/v1/whoami", "", ""), 401, "UNAUTHENTICATED"),
      Contains("no token"));
  {
    httplib::Client client("127.0.0.1", port);
    httplib::Result r =
        client.Get("/api/v1/whoami", httplib::Headers{{"Authorization", "Basic dXNlcjpwYXNz"}});
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->get_header_value("WWW-Authenticate") == "Bearer");
    v1::ErrorResponse e;
    CHECK(ParseStrict(r->body, &e));
    CHECK_THAT(e.error().message(), Contains("must read 'Bearer <token>'"));
  }
  {
    const HttpReply no_token = Get(port, "/api/v1/changes");
    CHECK(no_token.status == 401);
  }

  // --- A viewer may write nothing.
  for (const std::string& command : api::CaseCommandNames()) {
    INFO(command);
    CHECK_THAT(ErrorOf(Command(port, kViewerToken, "R-1", command, "{}"), 403, "PERMISSION_DENIED"),
               Contains("vera.viewer is a viewer"));
  }
  CHECK_THAT(ErrorOf(Post(port, "/api/v1/reports", kViewerToken, ReportJson("R-1", kGrid, "E0111")),
                     403, "PERMISSION_DENIED"),
             Contains("needs the operator role"));
  CHECK_THAT(
      ErrorOf(Post(port, "/api/v1/rules/reload", kViewerToken, ""), 403, "PERMISSION_DENIED"),
      Contains("needs the admin role"));

  // --- Reports: the caller's unit, inside it only, once per request id.
  const HttpReply reported = Post(port, "/api/v1/reports", kStreetOperatorToken,
                                  ReportJson("R-1", kGrid, "E0111", "req-report-1"));
  REQUIRE(reported.status == 201);
  CHECK(reported.content_type == "application/json");
  const v1::CommandResponse report = Json<v1::CommandResponse>(reported);
  CHECK(report.case_().case_id() == "R-1");
  CHECK(report.case_().originator().level() == v1::GRID_LEVEL_STREET_CENTER);
  CHECK(report.case_().originator().code() == testing::kStreetCode);
  CHECK(report.appended_size() == 1);
  CHECK_FALSE(report.duplicate());
  const HttpReply again = Post(port, "/api/v1/reports", kStreetOperatorToken,
                               ReportJson("R-1", kGrid, "E0111", "req-report-1"));
  CHECK(again.status == 200);
  CHECK(Json<v1::CommandResponse>(again).duplicate());
  CHECK(Json<v1::CommandResponse>(again).appended_size() == 0);
  CHECK_THAT(ErrorOf(Post(port, "/api/v1/reports", kStreetOperatorToken,
                          ReportJson("R-1", kGrid, "E0111", "req-report-other")),
                     409, "ALREADY_EXISTS"),
             Contains("case R-1 already exists"));
  const std::string outside = ErrorOf(
      Post(port, "/api/v1/reports", kStreetOperatorToken, ReportJson("R-X", kOtherGrid, "E0111")),
      403, "PERMISSION_DENIED");
  CHECK_THAT(outside, Contains("grid 310104002001001"));
  CHECK_THAT(outside, Contains("street center 310104001"));
  CHECK_THAT(ErrorOf(Post(port, "/api/v1/reports", kStreetOperatorToken,
                          ReportJson("R-X", "3101", "E0111")),
                     400, "INVALID_ARGUMENT"),
             Contains("must be the 15 digits of a residential grid"));
  CHECK_THAT(
      ErrorOf(Post(port, "/api/v1/reports", kStreetOperatorToken, ReportJson("R-X", kGrid, "")),
              400, "INVALID_ARGUMENT"),
      Contains("category code is required"));
  REQUIRE(Post(port, "/api/v1/reports", kStreetOperatorToken, ReportJson("R-2", kGrid, "0103"))
              .status == 201);
  REQUIRE(Post(port, "/api/v1/reports", kOperatorToken, ReportJson("R-LATE", kOtherGrid, "9999"))
              .status == 201);
  WaitOpened(port, "R-1");
  WaitOpened(port, "R-2");
  {
    int reports = 0;
    const v1::CaseDetail r1 = GetCase(port, "R-1");
    for (const v1::Event& e : r1.timeline()) reports += e.has_case_reported();
    CHECK(reports == 1);  // The retried request appended nothing.
  }

  // --- Bad requests, each naming the problem.
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "register", "{not json"), 400,
                     "INVALID_ARGUMENT"),
             Contains("not a valid cityops.v1.CaseCommandRequest"));
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "register", R"({"colour":"red"})"),
                     400, "INVALID_ARGUMENT"),
             Contains("colour"));
  CHECK_THAT(
      ErrorOf(Command(port, kStreetOperatorToken, "R-1", "register", ""), 400, "INVALID_ARGUMENT"),
      Contains("needs a JSON body"));
  {
    // `curl -d` sends JSON as application/x-www-form-urlencoded.
    const HttpReply form =
        testing::Request(port, "POST", "/api/v1/cases/R-2/urge", kSupervisorToken,
                         R"({"note":"hurry"})", "application/x-www-form-urlencoded");
    INFO(form.status << " " << form.body);
    CHECK(form.status == 400);
    // The body's fields are not taken for query parameters; the content type is named.
    CHECK_THAT(form.body, !Contains("unknown query parameter"));
    CHECK_THAT(form.body, Contains("application/x-www-form-urlencoded, but it must be JSON"));
  }
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "dispatch",
                             R"({"department":"water-authority","result":"done"})"),
                     400, "INVALID_ARGUMENT"),
             Contains("dispatch does not take 'result'"));
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "register", R"({"level":"HIGH"})"),
                     400, "INVALID_ARGUMENT"),
             Contains("level"));
  const std::string unknown_command =
      ErrorOf(Command(port, kStreetOperatorToken, "R-1", "approve", "{}"), 404, "NOT_FOUND");
  CHECK_THAT(unknown_command, Contains("no case command 'approve'"));
  CHECK_THAT(unknown_command,
             Contains("register, dispatch, handle, verify, close, urge, escalate"));
  CHECK_THAT(
      ErrorOf(Command(port, kStreetOperatorToken, "nope", "register", "{}"), 404, "NOT_FOUND"),
      Contains("case nope does not exist"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/cases/nope", kViewerToken), 404, "NOT_FOUND"),
             Contains("case nope does not exist"));
  const std::string unknown_param =
      ErrorOf(Get(port, "/api/v1/cases?colour=red", kViewerToken), 400, "INVALID_ARGUMENT");
  CHECK_THAT(unknown_param, Contains("unknown query parameter 'colour'"));
  CHECK_THAT(unknown_param, Contains("grid, overdue, page_size, page_token, reported_after, "
                                     "reported_before, source, stage"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/map?x=1", kViewerToken), 400, "INVALID_ARGUMENT"),
             Contains("it takes none"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/statistics?x=1", kViewerToken), 400, "INVALID_ARGUMENT"),
             Contains("expected one of: by, department, from, scope, to"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/cases?stage=lost", kViewerToken), 400, "INVALID_ARGUMENT"),
             Contains("use one of: discovered, registered, dispatched, handled, verified, closed"));
  CHECK_THAT(
      ErrorOf(Get(port, "/api/v1/cases?source=UNSPECIFIED", kViewerToken), 400, "INVALID_ARGUMENT"),
      Contains("no value 'UNSPECIFIED'"));
  CHECK_THAT(
      ErrorOf(Get(port, "/api/v1/devices?kind=toaster", kViewerToken), 400, "INVALID_ARGUMENT"),
      Contains("no value 'toaster'") &&
          Contains("manhole_cover, elevator, curtain_wall, "
                   "flood_gauge, fire_hydrant") &&
          Contains("noise_meter"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/devices?kind=gas%20detector", kViewerToken), 400,
                     "INVALID_ARGUMENT"),
             Contains("snake_case"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/cases?page_size=0", kViewerToken), 400, "INVALID_ARGUMENT"),
             Contains("from 1 to 1000"));
  CHECK_THAT(
      ErrorOf(Get(port, "/api/v1/cases?page_size=ten", kViewerToken), 400, "INVALID_ARGUMENT"),
      Contains("'ten'"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/events?partition=0&limit=5000", kViewerToken), 400,
                     "INVALID_ARGUMENT"),
             Contains("limit"));
  CHECK_THAT(ErrorOf(Get(port, "/api/v1/cases?reported_after=yesterday", kViewerToken), 400,
                     "INVALID_ARGUMENT"),
             Contains("RFC 3339"));
  CHECK_THAT(
      ErrorOf(Get(port, "/api/v1/devices?online=maybe", kViewerToken), 400, "INVALID_ARGUMENT"),
      Contains("must be true or false"));
  {
    const std::string big = ReportJson("R-BIG", kGrid, "E0111", std::string(4000, 'x'));
    REQUIRE(big.size() > kMaxBodyBytes);
    CHECK_THAT(ErrorOf(Post(port, "/api/v1/reports", kStreetOperatorToken, big), 413,
                       "RESOURCE_EXHAUSTED"),
               Contains("larger than 2048 bytes"));
    CHECK(Get(port, "/api/v1/cases/R-BIG", kViewerToken).status == 404);
  }

  // --- Register: in the case's unit only, once.
  CHECK_THAT(ErrorOf(Command(port, kOtherStreetOperatorToken, "R-1", "register", "{}"), 403,
                     "PERMISSION_DENIED"),
             Contains("register case R-1: grid 310104001001001 is outside olga.other's unit "
                      "(street center 310104002)"));
  const HttpReply registered = Command(port, kStreetOperatorToken, "R-1", "register", "{}");
  REQUIRE(registered.status == 200);
  CHECK(Json<v1::CommandResponse>(registered).case_().stage() == v1::CASE_STAGE_REGISTERED);
  const std::string twice = ErrorOf(Command(port, kStreetOperatorToken, "R-1", "register", "{}"),
                                    409, "FAILED_PRECONDITION");
  CHECK_THAT(Plain(twice), Contains("cannot register case r-1: it is registered"));
  // Stages and units in the API's words ("registered", "street center 310104001").
  CHECK_THAT(twice, Contains("it is registered;"));
  CHECK_THAT(
      Plain(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "handle", R"({"result":"x"})"), 409,
                    "FAILED_PRECONDITION")),
      Contains("cannot handle case r-1: it is registered"));

  // --- Dispatch, handle, a failed verification, re-work, a passed one, close.
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "dispatch", "{}"), 400,
                     "INVALID_ARGUMENT"),
             Contains("name the department"));
  const HttpReply dispatched = Command(port, kStreetOperatorToken, "R-1", "dispatch",
                                       R"({"department":"water-authority","requestId":"d-1"})");
  REQUIRE(dispatched.status == 200);
  const v1::CommandResponse dispatch = Json<v1::CommandResponse>(dispatched);
  CHECK(dispatch.case_().stage() == v1::CASE_STAGE_DISPATCHED);
  CHECK(dispatch.case_().dispatched_department() == "water-authority");
  CHECK(dispatch.case_().ticket_ids_size() == 1);
  const HttpReply dispatched_again =
      Command(port, kStreetOperatorToken, "R-1", "dispatch",
              R"({"department":"water-authority","requestId":"d-1"})");
  CHECK(dispatched_again.status == 200);
  CHECK(Json<v1::CommandResponse>(dispatched_again).duplicate());
  CHECK(Json<v1::CommandResponse>(dispatched_again).case_().version() ==
        dispatch.case_().version());
  // The street registered and dispatched it; the street may not handle it, the water
  // authority's crew does.
  CHECK_THAT(
      Plain(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "handle", R"({"result":"x"})"), 403,
                    "PERMISSION_DENIED")),
      Contains("cannot handle case r-1 (dispatched): only a crew of the department it is "
               "dispatched to, water-authority, serving grid 310104001001001 handles it; "
               "stan.street is street center 310104001, not a department's crew"));
  const HttpReply crew_handled =
      Command(port, testing::kWaterCrewToken, "R-1", "handle", R"({"result":"pumped out"})");
  REQUIRE(crew_handled.status == 200);
  CHECK(Json<v1::CommandResponse>(crew_handled).case_().handled_by().code() == "310104");
  // The city center covers the grid, but only the originator (the street) verifies.
  const std::string not_originator =
      Plain(ErrorOf(Command(port, kOperatorToken, "R-1", "verify", R"({"passed":true})"), 403,
                    "PERMISSION_DENIED"));
  CHECK_THAT(not_originator, Contains("only its originator, street center 310104001"));
  CHECK_THAT(not_originator, Contains("otto.operator is city center"));
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "R-1", "verify", R"({"passed":false})"),
                     400, "INVALID_ARGUMENT"),
             Contains("needs a note"));
  const HttpReply failed = Command(port, kStreetOperatorToken, "R-1", "verify",
                                   R"({"passed":false,"note":"still flooded"})");
  REQUIRE(failed.status == 200);
  const v1::CommandResponse rework = Json<v1::CommandResponse>(failed);
  CHECK(rework.case_().stage() == v1::CASE_STAGE_DISPATCHED);
  CHECK(rework.case_().failed_verifications() == 1);
  CHECK(rework.case_().ticket_ids_size() == 2);  // The re-work ticket.
  REQUIRE(Command(port, testing::kWaterCrewToken, "R-1", "handle", R"({"result":"drain cleared"})")
              .status == 200);
  // The crew that handled it does not verify it.
  CHECK_THAT(
      Plain(ErrorOf(Command(port, testing::kWaterCrewToken, "R-1", "verify", R"({"passed":true})"),
                    403, "PERMISSION_DENIED")),
      Contains("only its originator, street center 310104001, verifies it; wen.water is "
               "water-authority crew, district center 310104, which handled it"));
  REQUIRE(Command(port, kStreetOperatorToken, "R-1", "verify", R"({"passed":true,"note":"dry"})")
              .status == 200);
  CHECK_THAT(
      Plain(ErrorOf(Command(port, kOperatorToken, "R-1", "close", "{}"), 403, "PERMISSION_DENIED")),
      Contains("only its originator, street center 310104001, closes it"));
  const HttpReply closed = Command(port, kStreetOperatorToken, "R-1", "close", "{}");
  REQUIRE(closed.status == 200);
  CHECK(Json<v1::CommandResponse>(closed).case_().stage() == v1::CASE_STAGE_CLOSED);
  CHECK_THAT(Plain(ErrorOf(Command(port, kSupervisorToken, "R-1", "urge", "{}"), 409,
                           "FAILED_PRECONDITION")),
             Contains("cannot urge case r-1: it is closed"));

  // --- Urge needs a supervisor; escalate belongs to the level that dispatches the case,
  // which then dispatches it; a level below it may not.
  REQUIRE(Command(port, kStreetOperatorToken, "R-2", "register", "{}").status == 200);
  CHECK_THAT(ErrorOf(Command(port, kOperatorToken, "R-2", "urge", R"({"note":"hurry"})"), 403,
                     "PERMISSION_DENIED"),
             Contains("needs the supervisor role"));
  const HttpReply urged = Command(port, kSupervisorToken, "R-2", "urge", R"({"note":"hurry"})");
  REQUIRE(urged.status == 200);
  CHECK(Json<v1::CommandResponse>(urged).case_().urges() == 1);
  CHECK_THAT(Plain(ErrorOf(Command(port, kOperatorToken, "R-2", "escalate", R"({"reason":"x"})"),
                           403, "PERMISSION_DENIED")),
             Contains("the street center that dispatches it escalates it"));
  const HttpReply escalated = Command(port, kStreetOperatorToken, "R-2", "escalate",
                                      R"({"reason":"needs the district's crane"})");
  REQUIRE(escalated.status == 200);
  CHECK(Json<v1::CommandResponse>(escalated).case_().level() == v1::GRID_LEVEL_DISTRICT_CENTER);
  CHECK_THAT(Plain(ErrorOf(Command(port, kStreetOperatorToken, "R-2", "dispatch",
                                   R"({"department":"city-management"})"),
                           403, "PERMISSION_DENIED")),
             Contains("the district center dispatches it; stan.street is at the street center"));
  const HttpReply district =
      Command(port, kOperatorToken, "R-2", "dispatch",
              R"({"department":"city-management","level":"GRID_LEVEL_STREET_CENTER"})");
  REQUIRE(district.status == 200);
  CHECK(Json<v1::CommandResponse>(district).case_().dispatched_level() ==
        v1::GRID_LEVEL_STREET_CENTER);

  // --- Every command event records its actor.
  const std::map<std::string, std::pair<v1::Role, std::string>> people = {
      {"stan.street", {v1::ROLE_OPERATOR, testing::kStreetCode}},
      {"otto.operator", {v1::ROLE_OPERATOR, "city"}},
      {"sue.supervisor", {v1::ROLE_SUPERVISOR, "city"}},
      {"wen.water", {v1::ROLE_OPERATOR, "310104"}}};
  std::map<std::string, std::vector<std::string>> by_type;
  for (const std::string id : {"R-1", "R-2"}) {
    const v1::CaseDetail detail = GetCase(port, id);
    for (const v1::Event& e : detail.timeline()) {
      const pb::FieldDescriptor* type = e.GetReflection()->GetOneofFieldDescriptor(
          e, v1::Event::descriptor()->FindOneofByName("payload"));
      REQUIRE(type != nullptr);
      INFO(id << " v" << e.stream_version() << " " << type->name());
      if (type->name() == "case_opened" || type->name() == "case_overdue") {
        CHECK(e.provenance().stage() == "rules");
        continue;
      }
      REQUIRE(e.provenance().has_actor());
      const v1::Actor& a = e.provenance().actor();
      REQUIRE(people.contains(a.user()));
      CHECK(a.role() == people.at(a.user()).first);
      CHECK(a.unit().code() == people.at(a.user()).second);
      by_type[type->name()].push_back(a.user());
    }
  }
  CHECK(by_type["case_reported"] == std::vector<std::string>{"stan.street", "stan.street"});
  CHECK(by_type["case_registered"] == std::vector<std::string>{"stan.street", "stan.street"});
  CHECK(by_type["case_dispatched"] == std::vector<std::string>{"stan.street", "otto.operator"});
  CHECK(by_type["case_handled"] == std::vector<std::string>{"wen.water", "wen.water"});
  CHECK(by_type["case_verified"] == std::vector<std::string>{"stan.street", "stan.street"});
  CHECK(by_type["case_closed"] == std::vector<std::string>{"stan.street"});
  CHECK(by_type["case_urged"] == std::vector<std::string>{"sue.supervisor"});
  CHECK(by_type["case_escalated"] == std::vector<std::string>{"stan.street"});

  // --- A closed case reports its time in every stage.
  const v1::CaseDetail r1 = GetCase(port, "R-1");
  CHECK(r1.case_().stage() == v1::CASE_STAGE_CLOSED);
  std::set<v1::CaseStage> timed;
  for (const v1::StageDuration& s : r1.time_in_stage()) timed.insert(s.stage());
  CHECK(timed == std::set<v1::CaseStage>{v1::CASE_STAGE_DISCOVERED, v1::CASE_STAGE_REGISTERED,
                                         v1::CASE_STAGE_DISPATCHED, v1::CASE_STAGE_HANDLED,
                                         v1::CASE_STAGE_VERIFIED});

  // --- Overdue: R-LATE waits to be registered past its 1 s allowance, then twice it.
  REQUIRE(WaitUntil([&] {
    return HasId(CaseIds(Get(port, "/api/v1/cases?overdue=red", kViewerToken)), "R-LATE");
  }));
  CHECK(HasId(CaseIds(Get(port, "/api/v1/cases?overdue=yellow", kViewerToken)), "R-LATE"));
  CHECK_FALSE(HasId(CaseIds(Get(port, "/api/v1/cases?overdue=yellow", kViewerToken)), "R-2"));
  CHECK(GetCase(port, "R-LATE").case_().overdue() == v1::OVERDUE_LEVEL_RED);
  {
    const std::string m = Get(port, "/metrics").body;
    CHECK(testing::MetricSample(m, "cityops_cases_overdue{level=\"red\"}") == 1);
    CHECK(testing::MetricSample(m, "cityops_cases_open{stage=\"discovered\"}") == 1);
    CHECK(testing::MetricSample(m, "cityops_cases_open{stage=\"dispatched\"}") == 1);
    CHECK(testing::MetricSample(m, "cityops_http_event_streams") == 1);
    CHECK(testing::MetricSample(
              m, "cityops_http_requests_total{route=\"/api/v1/reports\",code=\"201\"}") == 3);
    CHECK(testing::MetricSample(
              m, "cityops_http_requests_total{route=\"/api/v1/changes\",code=\"503\"}") == 1);
    CHECK(testing::MetricSample(m, "cityops_http_requests_total{route=\"(none)\",code=\"413\"}") ==
          1);
    // The scrape above is counted with the status its client got.
    const std::string scraped = Get(port, "/metrics").body;
    CHECK(testing::MetricSample(
              scraped, "cityops_http_requests_total{route=\"/metrics\",code=\"200\"}") >= 1);
    CHECK(scraped.find("code=\"-1\"") == std::string::npos);
  }
  const v1::Statistics stats = Json<v1::Statistics>(Get(port, "/api/v1/statistics", kViewerToken));
  CHECK(stats.cases_total() == 3);
  CHECK(stats.closed() == 1);
  CHECK(stats.urged() == 1);
  CHECK(stats.overdue_red() == 1);

  // --- An online backup holds the log as it is now.
  const HttpReply backup = Post(port, "/api/v1/backups", kAdminToken, "");
  REQUIRE(backup.status == 201);
  const v1::BackupResponse copy = Json<v1::BackupResponse>(backup);
  CHECK(copy.path().starts_with(backups + "/cityops-"));
  CHECK(std::filesystem::is_directory(copy.path()));
  CHECK(copy.has_taken_at());

  // --- Case paging: three cases, one per page, each once, newest reported first.
  {
    std::vector<std::string> paged;
    std::string token;
    for (int pages = 0; pages < 10; ++pages) {
      const HttpReply r =
          Get(port, "/api/v1/cases?page_size=1" + (token.empty() ? "" : "&page_token=" + token),
              kViewerToken);
      REQUIRE(r.status == 200);
      const v1::ListCasesResponse page = Json<v1::ListCasesResponse>(r);
      for (const v1::CaseView& c : page.cases()) paged.push_back(c.case_id());
      token = page.next_page_token();
      if (token.empty()) break;
    }
    CHECK(paged == std::vector<std::string>{"R-LATE", "R-2", "R-1"});
  }

  // --- The change stream saw it all happen, as server-sent events.
  CHECK(changes.WaitFor("event: case_closed"));
  CHECK(changes.WaitFor("event: case_overdue"));
  CHECK(changes.WaitFor("event: statistics"));
  CHECK(changes.status() == 200);
  CHECK(changes.content_type() == "text/event-stream");
  const std::string text = changes.text();
  CHECK(absl::StartsWith(text, "retry: 2000\n\n"));
  for (const char* type : {"case_reported", "case_opened", "case_registered", "case_dispatched",
                           "case_handled", "case_verified", "case_urged", "case_escalated"}) {
    INFO(type);
    CHECK_THAT(text, Contains(std::string("event: ") + type + "\n"));
  }
  const std::vector<std::string> dispatches = EventData(text, "case_dispatched");
  REQUIRE_FALSE(dispatches.empty());
  v1::Event first;
  CHECK(ParseStrict(dispatches[0], &first));
  CHECK(first.case_dispatched().case_id() == "R-1");
  CHECK(first.provenance().actor().user() == "stan.street");
  const std::vector<std::string> statistics = EventData(text, "statistics");
  REQUIRE_FALSE(statistics.empty());
  v1::Statistics live;
  CHECK(ParseStrict(statistics.back(), &live));
  CHECK_THAT(text, Contains("\nid: "));

  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

TEST_CASE(
    "a client's request id is the client's: it neither drops another case's command nor "
    "collides with the rules stage's own event ids",
    "[api][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, ApiConfig(data));
  REQUIRE(d.WaitReady());
  const int port = d.port();

  // Q-1 and Q-2 share a log partition (murmur2 over 2 partitions); each is a new report.
  REQUIRE(Post(port, "/api/v1/reports", kStreetOperatorToken,
               ReportJson("Q-1", kGrid, "0501", "same-request"))
              .status == 201);
  const HttpReply second = Post(port, "/api/v1/reports", kStreetOperatorToken,
                                ReportJson("Q-2", "310104001001002", "0501", "same-request"));
  // Request ids are scoped to their case: the same id on another case is a new command.
  CHECK(second.status == 201);
  CHECK_THAT(second.body, Contains("\"caseId\":\"Q-2\""));
  CHECK(Get(port, "/api/v1/cases/Q-2", kViewerToken).status == 200);

  // A request id that spells the rules stage's own id for the event it is about to derive.
  REQUIRE(Post(port, "/api/v1/reports", kStreetOperatorToken,
               ReportJson("W-1", kGrid, "0502", "rules/case/W-1/opened"))
              .status == 201);
  // Client keys live in their own namespace: the rules stage's CaseOpened for W-1 (key
  // "rules/case/W-1/opened") does not meet the client's and the daemon keeps running.
  bool opened = false;
  WaitUntil([&] {
    const HttpReply r = Get(port, "/api/v1/cases/W-1", kViewerToken);
    v1::CaseDetail detail;
    opened = r.status == 200 && ParseStrict(r.body, &detail) && detail.case_().opened();
    return opened || r.status == 0;  // Opened, or the daemon is gone.
  });
  CHECK(opened);
  CHECK(Get(port, "/healthz").status == 200);

  // The same request id for another command on the same case is refused, not mistaken
  // for a retry.
  REQUIRE(
      Command(port, kStreetOperatorToken, "Q-1", "register", R"({"requestId":"step-1"})").status ==
      200);
  CHECK_THAT(ErrorOf(Command(port, kStreetOperatorToken, "Q-1", "dispatch",
                             R"({"requestId":"step-1","department":"housing-management"})"),
                     409, "ALREADY_EXISTS"),
             Contains("request id 'step-1' was used on case Q-1 for another command "
                      "(case_registered)"));
  // A true retry is answered as done.
  const HttpReply retry =
      Command(port, kStreetOperatorToken, "Q-1", "register", R"({"requestId":"step-1"})");
  CHECK(retry.status == 200);
  CHECK(Json<v1::CommandResponse>(retry).duplicate());
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

// --------------------------------------------------------------------------- the CLI

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

CliRun RunCli(const testing::TempDir& dir, std::vector<std::string> args) {
  static int n = 0;
  const std::string err_path = dir.Sub(absl::StrCat("cli-", ++n, ".err"));
  args.insert(args.begin(), CITYOPS_BINARY);
  testing::ChildProcess child(args, err_path);
  child.CloseStdin();
  child.ReadToEnd();
  const int status = child.Wait();
  CliRun run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.out = child.output();
  run.err = ReadFile(err_path);
  return run;
}

TEST_CASE(
    "cityops report and cityops cases work a case through the API with a token, and exit 1 "
    "with the API's message when it refuses",
    "[api][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, ApiConfig(data));
  REQUIRE(d.WaitReady());
  const std::string server = absl::StrCat("http://127.0.0.1:", d.port());
  auto cli = [&](const std::string& token, std::vector<std::string> args) {
    args.insert(args.end(), {"--server", server, "--token", token});
    const CliRun run = RunCli(dir, args);
    INFO("cityops " << absl::StrJoin(args, " ") << "\nexit " << run.exit_code << "\nstdout:\n"
                    << run.out << "\nstderr:\n"
                    << run.err);
    // The token is never shown, whatever happened.
    CHECK_FALSE(absl::StrContains(run.out + run.err, token));
    return run;
  };
  auto report = [&](const std::string& token, const std::string& id, const std::string& grid,
                    const std::string& category) {
    return cli(token, {"report", "--case-id", id, "--source", "hotline_12345", "--grid", grid,
                       "--category", category, "--description", "water across the road",
                       "--latitude", "31.2", "--longitude", "121.44"});
  };

  CliRun r = report(kStreetOperatorToken, "C-1", kGrid, "E0111");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("reported case C-1"));
  CHECK_THAT(r.out, Contains("street center 310104001"));
  r = report(kOtherStreetOperatorToken, "C-2", kGrid, "E0111");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("cityops: report case C-2: grid 310104001001001 is outside "
                             "olga.other's unit (street center 310104002)"));
  // C-3 reports the same thing at the same place: the rules stage links it into C-1.
  REQUIRE(report(kStreetOperatorToken, "C-3", kGrid, "E0111").exit_code == 0);
  REQUIRE(report(kStreetOperatorToken, "C-4", kGrid, "0103").exit_code == 0);
  WaitOpened(d.port(), "C-1");
  WaitOpened(d.port(), "C-4");
  REQUIRE(WaitUntil([&] { return GetCase(d.port(), "C-3").case_().linked_to() == "C-1"; }));
  r = cli(kViewerToken, {"cases", "show", "C-3"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("linked into"));
  r = cli(kStreetOperatorToken, {"cases", "register", "C-3"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("it was linked into case C-1"));
  const size_t listed_by_api =
      CaseIds(Get(d.port(), "/api/v1/cases?page_size=1000", kViewerToken)).size();
  REQUIRE(listed_by_api >= 2);
  const std::string n_cases = absl::StrCat(listed_by_api, " cases");

  // list: a table, filters, pages.
  r = cli(kViewerToken, {"cases", "list"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("ID"));
  CHECK_THAT(r.out, Contains("STAGE"));
  CHECK_THAT(r.out, Contains("LIGHT"));
  CHECK_THAT(r.out, Contains("DEPARTMENT"));
  CHECK_THAT(r.out, Contains("C-1"));
  CHECK_THAT(r.out, Contains("discovered"));
  CHECK_THAT(r.out, Contains("hotline_12345"));
  CHECK_THAT(r.out, Contains("water-authority"));
  CHECK_THAT(r.out, Contains(n_cases));
  r = cli(kViewerToken, {"cases", "list", "--stage", "closed"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("0 cases"));
  r = cli(kViewerToken, {"cases", "list", "--grid", "310104002"});
  CHECK_THAT(r.out, Contains("0 cases"));
  r = cli(kViewerToken, {"cases", "list", "--page-size", "1"});
  CHECK_THAT(r.out, Contains("1 case; more with --page-token"));
  r = cli(kViewerToken, {"cases", "list", "--page-size", "1", "--all"});
  CHECK_THAT(r.out, Contains(n_cases));
  CHECK_THAT(r.out, Contains("C-4"));
  r = cli(kViewerToken, {"cases", "list", "--json", "--source", "hotline_12345"});
  REQUIRE(r.exit_code == 0);
  v1::ListCasesResponse listed;
  CHECK(ParseStrict(r.out, &listed));
  CHECK(static_cast<size_t>(listed.cases_size()) == listed_by_api);
  r = cli(kViewerToken, {"cases", "list", "--stage", "lost"});
  CHECK(r.exit_code == 2);  // CLI11 checks the set.

  // The workflow, as the street's operator.
  r = cli(kStreetOperatorToken, {"cases", "register", "C-1"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("register case C-1: done; it is now registered"));
  r = cli(kStreetOperatorToken, {"cases", "register", "C-1"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(Plain(r.err), Contains("cityops: cannot register case c-1: it is registered"));
  r = cli(kStreetOperatorToken,
          {"cases", "dispatch", "C-1", "--department", "water-authority", "--request-id", "x-1"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("it is now dispatched (to water-authority at the street center"));
  r = cli(kStreetOperatorToken,
          {"cases", "dispatch", "C-1", "--department", "water-authority", "--request-id", "x-1"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("already done by an earlier request with request id x-1"));
  r = cli(kOperatorToken, {"cases", "urge", "C-1", "--note", "hurry"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("cityops: urge case C-1 needs the supervisor role or higher"));
  CHECK(cli(kSupervisorToken, {"cases", "urge", "C-1", "--note", "hurry"}).exit_code == 0);
  r = cli(kStreetOperatorToken, {"cases", "handle", "C-1", "--result", "pumped"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(Plain(r.err), Contains("only a crew of the department it is dispatched to, "
                                    "water-authority, serving grid 310104001001001"));
  REQUIRE(
      cli(testing::kWaterCrewToken, {"cases", "handle", "C-1", "--result", "pumped"}).exit_code ==
      0);
  r = cli(kStreetOperatorToken, {"cases", "verify", "C-1", "--fail"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("needs a note"));
  r = cli(kStreetOperatorToken, {"cases", "verify", "C-1", "--fail", "--note", "still wet"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("it is now dispatched (verification failed; re-work ticket"));
  REQUIRE(
      cli(testing::kWaterCrewToken, {"cases", "handle", "C-1", "--result", "drained"}).exit_code ==
      0);
  r = cli(kOperatorToken, {"cases", "verify", "C-1", "--pass"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(Plain(r.err), Contains("only its originator, street center 310104001, verifies it"));
  REQUIRE(cli(kStreetOperatorToken, {"cases", "verify", "C-1", "--pass"}).exit_code == 0);
  r = cli(kStreetOperatorToken, {"cases", "close", "C-1"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("it is now closed"));
  r = cli(kStreetOperatorToken, {"cases", "escalate", "C-4", "--reason", "too big"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(Plain(r.err), Contains("cannot escalate case c-4: it is discovered"));

  // show: the case, its timeline with who acted, its time in each stage.
  r = cli(kViewerToken, {"cases", "show", "C-1"});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("case C-1: closed"));
  CHECK_THAT(r.out, Contains("timeline:"));
  CHECK_THAT(r.out, Contains("case_reported"));
  CHECK_THAT(r.out, Contains("case_opened"));
  CHECK_THAT(r.out, Contains("stan.street (operator, street center 310104001)"));
  CHECK_THAT(r.out, Contains("wen.water (operator, water-authority crew, district center 310104)"));
  CHECK_THAT(r.out, Contains("handled by      water-authority crew, district center 310104"));
  CHECK_THAT(r.out, Contains("sue.supervisor (supervisor, city center)"));
  CHECK_THAT(r.out, Contains("failed: still wet"));
  CHECK_THAT(r.out, Contains("time in stage:"));
  CHECK_THAT(r.out, Contains("handling time:"));
  r = cli(kViewerToken, {"cases", "show", "C-1", "--json"});
  REQUIRE(r.exit_code == 0);
  v1::CaseDetail shown;
  CHECK(ParseStrict(r.out, &shown));
  CHECK(shown.case_().stage() == v1::CASE_STAGE_CLOSED);
  CHECK(shown.case_().failed_verifications() == 1);
  CHECK(shown.case_().urges() == 1);
  r = cli(kViewerToken, {"cases", "show", "nope"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("cityops: case nope does not exist"));

  // Tokens and servers from the environment; the errors people meet first.
  ::setenv("CITYOPS_SERVER", server.c_str(), 1);
  ::setenv("CITYOPS_TOKEN", kViewerToken, 1);
  r = RunCli(dir, {"cases", "list"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("C-4"));
  ::unsetenv("CITYOPS_TOKEN");
  r = RunCli(dir, {"cases", "list"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("--token"));
  ::unsetenv("CITYOPS_SERVER");
  r = cli("no-such-token-at-all", {"cases", "list"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("not one of the daemon's configured tokens"));
  r = RunCli(dir, {"cases", "list", "--server", "http://127.0.0.1:1", "--token", kViewerToken});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("cannot reach the cityops API at http://127.0.0.1:1"));
  r = RunCli(dir, {"cases", "verify", "C-4", "--server", server, "--token", kViewerToken});
  CHECK(r.exit_code == 2);  // Neither --pass nor --fail.
  r = RunCli(dir, {"cases", "verify", "C-4", "--pass", "--fail", "--token", kViewerToken});
  CHECK(r.exit_code == 2);
  r = RunCli(dir, {"cases", "dispatch", "--help"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("--department"));
  CHECK_THAT(r.out, Contains("--request-id"));
  r = RunCli(dir, {"report", "--help"});
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("--case-id"));

  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

}  // namespace
}  // namespace cityops
