// `cityops lineage` (analysis/lineage.h) and GET /api/v1/cases/{id}/lineage over a log
// built in process: the default rules, a small city's typhoon stored as ingest stores it
// (Kafka offsets recorded by the test), an edited rule set activated mid-storm, and the
// rules stage run to the end. Every alert's chain is checked against what the test knows
// independently: which rule set it activated when, and which Kafka offset each reading
// got.
#include "analysis/lineage.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/http_server.h"
#include "cityops/v1/analysis.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/views/views.h"
#include "projections/workflow.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/typhoon_log.h"

namespace cityops::analysis {
namespace {

using google::protobuf::util::MessageDifferencer;
using kernel::EventLog;

constexpr char kViewerToken[] = "viewer-token-0123456789";

struct Reply {
  int status = 0;
  std::string body;
};

Reply Get(int port, const std::string& path, const std::string& token = "") {
  httplib::Client client("127.0.0.1", port);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  httplib::Result result = client.Get(path, headers);
  if (!result) return {};
  return {result->status, result->body};
}

std::unique_ptr<EventLog> OpenLog(const std::string& path) {
  absl::StatusOr<std::unique_ptr<EventLog>> log =
      EventLog::Open({.path = path, .durability = kernel::Durability::kBuffered});
  if (!log.ok()) FAIL(log.status().ToString());
  return *std::move(log);
}

rules::LoadedRuleSet Load(const std::string& yaml, const std::string& name) {
  absl::StatusOr<rules::LoadedRuleSet> loaded = rules::LoadRuleSetText(yaml, name);
  if (!loaded.ok()) FAIL(loaded.status().ToString());
  return *std::move(loaded);
}

// The default rules with shorter holds: a different rule set (another sha256) whose
// water rules raise again mid-storm.
std::string EditedRules() {
  std::string yaml(rules::DefaultRuleSetYaml());
  for (std::string_view hold : {"hold_for: 2m", "hold_for: 6m"}) {
    for (size_t at = yaml.find(hold); at != std::string::npos; at = yaml.find(hold, at + 1)) {
      yaml.replace(at, hold.size(), "hold_for: 1m");
    }
  }
  return yaml;
}

// One log for every test case here: built once (a few seconds), read only.
struct World {
  testing::TempDir dir;
  std::string path;
  rules::LoadedRuleSet first;
  rules::LoadedRuleSet second;
  absl::Time switched;  // Event time of the readings before which `second` was activated.
  std::map<std::pair<std::string, std::string>, std::pair<int32_t, int64_t>> offsets;
  std::vector<v1::Event> events;                  // Every event, partition by partition.
  std::map<std::string, v1::EventRef> caused_by;  // Of each AlertRaised, by alert id.
};

const World& TheWorld() {
  // Destroyed at exit, which removes its directory.
  static const std::unique_ptr<World> world = [] {
    auto w = std::make_unique<World>();
    w->path = w->dir.Sub("log");
    w->first = Load(std::string(rules::DefaultRuleSetYaml()), rules::kDefaultRuleSetFile);
    w->second = Load(EditedRules(), "edited.yaml");
    REQUIRE(w->first.sha256 != w->second.sha256);
    std::unique_ptr<EventLog> log = OpenLog(w->path);
    testing::TyphoonLog typhoon(log.get(), /*partitions=*/3, /*devices=*/600, /*seed=*/7);
    typhoon.Activate(w->first, typhoon.start());
    typhoon.Register();
    w->switched = typhoon.start() + absl::Minutes(100);
    typhoon.Readings(w->switched);
    typhoon.Activate(w->second, w->switched);
    typhoon.Readings(typhoon.start() + absl::Hours(3));
    typhoon.DeriveAll();
    w->offsets = typhoon.offsets();
    for (const auto& partition : testing::AllEvents(*log)) {
      w->events.insert(w->events.end(), partition.begin(), partition.end());
    }
    for (const v1::Event& e : w->events) {
      if (e.has_alert_raised())
        w->caused_by[e.alert_raised().alert_id()] = e.provenance().caused_by();
    }
    return w;
  }();
  return *world;
}

// The tests read the log through their own handle, opened per test.
std::unique_ptr<EventLog> Reopen() { return OpenLog(TheWorld().path); }

const v1::Rule* RuleOf(const rules::LoadedRuleSet& set, const std::string& id) {
  for (const v1::Rule& r : set.rule_set.rules()) {
    if (r.id() == id) return &r;
  }
  return nullptr;
}

// Checks one alert's chain against what the test knows; returns which rule set it names
// (1 or 2), or 0 when the alert was raised too close to the switch to tell.
int CheckAlert(const v1::LineageAlert& a) {
  const World& w = TheWorld();
  const v1::AlertRaised& raised = a.alert().raised();
  INFO("alert " << raised.alert_id());
  REQUIRE(a.has_rule_set());
  CHECK(a.rule().id() == raised.rule_id());
  // The readings: exactly the ones the alert cites (then the link's), each with the Kafka
  // record the test stored it from and its values.
  REQUIRE(a.readings_size() >= raised.readings_size());
  if (raised.readings().empty()) {
    // A device gone silent: the event that started the wait stands in.
    REQUIRE(a.readings_size() >= 1);
    const v1::EventRef& cause = w.caused_by.at(raised.alert_id());
    CHECK(a.readings(0).event().partition() == cause.partition());
    CHECK(a.readings(0).event().sequence() == cause.sequence());
    if (a.readings(0).event_type() == "reading") {
      CHECK(a.readings(0).reading().device_id() == raised.device_id());
    }
  }
  for (int i = 0; i < a.readings_size(); ++i) {
    const v1::LineageInput& in = a.readings(i);
    if (i < raised.readings_size()) {
      CHECK(in.event().partition() == raised.readings(i).partition());
      CHECK(in.event().sequence() == raised.readings(i).sequence());
    }
    if (in.event_type() != "reading") continue;
    REQUIRE(in.has_kafka());
    auto it = w.offsets.find({in.reading().device_id(), in.reading().reading_id()});
    REQUIRE(it != w.offsets.end());
    CHECK(in.kafka().topic() == testing::kTyphoonReadingsTopic);
    CHECK(in.kafka().partition() == it->second.first);
    CHECK(in.kafka().offset() == it->second.second);
    if (raised.device_id() == in.reading().device_id())
      CHECK(in.stream_id() == "device/" + raised.device_id());
  }
  const absl::Time at = kernel::FromTimestamp(a.alert().raised_time());
  int which = 0;
  if (at < w.switched - absl::Minutes(2)) which = 1;
  if (at > w.switched + absl::Minutes(2)) which = 2;
  if (which != 0) {
    const rules::LoadedRuleSet& expected = which == 1 ? w.first : w.second;
    CHECK(a.rule_set().sha256() == expected.sha256);
    CHECK(a.rule_set().name() == expected.rule_set.name());
    const v1::Rule* rule = RuleOf(expected, raised.rule_id());
    REQUIRE(rule != nullptr);
    CHECK(MessageDifferencer::Equals(a.rule(), *rule));
  }
  return which;
}

TEST_CASE(
    "lineage from every alert names its rule, the rule-set version then in force, and "
    "the Kafka records of its readings",
    "[lineage]") {
  const World& w = TheWorld();
  std::unique_ptr<EventLog> log = Reopen();
  int before = 0;
  int after = 0;
  int in_cases = 0;
  for (const v1::Event& e : w.events) {
    if (!e.has_alert_raised()) continue;
    absl::StatusOr<v1::Lineage> lineage = TraceLineage(
        *log, {.ticket_id = "", .case_id = "", .alert_id = e.alert_raised().alert_id()}, w.path);
    REQUIRE(lineage.ok());
    CHECK(lineage->alert_id() == e.alert_raised().alert_id());
    const v1::LineageAlert* found = lineage->has_alert() ? &lineage->alert() : nullptr;
    for (const v1::LineageCase& c : lineage->cases()) {
      for (const v1::LineageAlert& a : c.alerts()) {
        if (a.alert().raised().alert_id() == e.alert_raised().alert_id()) found = &a;
      }
    }
    REQUIRE(found != nullptr);
    CHECK(found->alert().raised_event().partition() == e.partition());
    CHECK(found->alert().raised_event().sequence() == e.sequence());
    in_cases += lineage->cases_size() > 0;
    const int which = CheckAlert(*found);
    before += which == 1;
    after += which == 2;
  }
  // Both rule sets raised alerts, and alerts led to cases.
  CHECK(before > 0);
  CHECK(after > 0);
  CHECK(in_cases > 0);
}

TEST_CASE("lineage from a ticket, its case and the case's alert is the same chain", "[lineage]") {
  const World& w = TheWorld();
  std::unique_ptr<EventLog> log = Reopen();
  std::map<std::string, std::string> opened_by;  // Case id -> the alert that opened it.
  for (const v1::Event& e : w.events) {
    if (e.has_case_opened() && !e.case_opened().alert_id().empty()) {
      opened_by[e.case_opened().case_id()] = e.case_opened().alert_id();
    }
  }
  int tickets = 0;
  for (const v1::Event& e : w.events) {
    if (!e.has_ticket_issued() || !opened_by.contains(e.ticket_issued().case_id())) continue;
    const v1::TicketIssued& ticket = e.ticket_issued();
    INFO("ticket " << ticket.ticket_id());
    absl::StatusOr<v1::Lineage> from_ticket = TraceLineage(
        *log, {.ticket_id = ticket.ticket_id(), .case_id = "", .alert_id = ""}, w.path);
    REQUIRE(from_ticket.ok());
    REQUIRE(from_ticket->cases_size() == 1);
    const v1::LineageCase& c = from_ticket->cases(0);
    CHECK(c.case_().case_id() == ticket.case_id());
    bool has_ticket = false;
    for (const v1::TicketView& t : c.tickets()) {
      if (t.ticket().ticket_id() != ticket.ticket_id()) continue;
      has_ticket = true;
      CHECK(t.event().partition() == e.partition());
      CHECK(t.event().sequence() == e.sequence());
      CHECK(t.ticket().department() == ticket.department());
    }
    CHECK(has_ticket);
    REQUIRE(c.alerts_size() >= 1);
    CHECK(c.alerts(0).opened_case());
    CHECK(c.alerts(0).alert().raised().alert_id() == opened_by[ticket.case_id()]);
    CHECK(c.alerts(0).alert().case_id() == ticket.case_id());
    CHECK(c.alerts(0).readings_size() > 0);
    for (const v1::LineageAlert& a : c.alerts()) CheckAlert(a);

    absl::StatusOr<v1::Lineage> from_case =
        TraceLineage(*log, {.ticket_id = "", .case_id = ticket.case_id(), .alert_id = ""}, w.path);
    REQUIRE(from_case.ok());
    REQUIRE(from_case->cases_size() == 1);
    CHECK(MessageDifferencer::Equals(from_case->cases(0), c));
    absl::StatusOr<v1::Lineage> from_alert = TraceLineage(
        *log, {.ticket_id = "", .case_id = "", .alert_id = opened_by[ticket.case_id()]}, w.path);
    REQUIRE(from_alert.ok());
    REQUIRE(from_alert->cases_size() == 1);
    CHECK(MessageDifferencer::Equals(from_alert->cases(0), c));
    CHECK_FALSE(from_alert->has_alert());
    if (++tickets == 20) break;
  }
  CHECK(tickets > 0);
}

TEST_CASE("an alert that re-triggered into an open case leads to that case", "[lineage]") {
  const World& w = TheWorld();
  std::unique_ptr<EventLog> log = Reopen();
  int links = 0;
  for (const v1::Event& e : w.events) {
    if (!e.has_case_linked() || !e.case_linked().has_alert_id()) continue;
    const std::string alert_id = e.case_linked().alert_id();
    INFO("alert " << alert_id << " linked into " << e.case_linked().case_id());
    absl::StatusOr<v1::Lineage> lineage =
        TraceLineage(*log, {.ticket_id = "", .case_id = "", .alert_id = alert_id}, w.path);
    REQUIRE(lineage.ok());
    REQUIRE(lineage->cases_size() == 1);
    CHECK(lineage->cases(0).case_().case_id() == e.case_linked().case_id());
    bool joined = false;
    for (const v1::LineageAlert& a : lineage->cases(0).alerts()) {
      if (a.alert().raised().alert_id() != alert_id) continue;
      joined = true;
      CHECK_FALSE(a.opened_case());
      CheckAlert(a);
    }
    CHECK(joined);
    ++links;
  }
  // The edited rule set ends the water alerts and raises them again into their open cases.
  CHECK(links > 0);
}

TEST_CASE("lineage of an unknown ticket, case or alert is NOT_FOUND naming it", "[lineage]") {
  std::unique_ptr<EventLog> log = Reopen();
  const std::string path = TheWorld().path;
  absl::StatusOr<v1::Lineage> ticket =
      TraceLineage(*log, {.ticket_id = "no-such-T1", .case_id = "", .alert_id = ""}, path);
  CHECK(ticket.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(ticket.status().message()),
             Catch::Contains("no ticket 'no-such-T1'") && Catch::Contains(path));
  absl::StatusOr<v1::Lineage> c =
      TraceLineage(*log, {.ticket_id = "", .case_id = "iot-nope-1", .alert_id = ""}, path);
  CHECK(c.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(c.status().message()), Catch::Contains("no case 'iot-nope-1'"));
  absl::StatusOr<v1::Lineage> alert =
      TraceLineage(*log, {.ticket_id = "", .case_id = "", .alert_id = "al-nope-x-1"}, path);
  CHECK(alert.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(alert.status().message()), Catch::Contains("no alert 'al-nope-x-1'"));
  absl::StatusOr<v1::Lineage> none = TraceLineage(*log, {}, path);
  CHECK(none.status().code() == absl::StatusCode::kInvalidArgument);
}

// A ticket of an IoT case in the world's log.
v1::TicketIssued SomeTicket() {
  for (const v1::Event& e : TheWorld().events) {
    if (e.has_ticket_issued() && e.ticket_issued().case_id().starts_with("iot-")) {
      return e.ticket_issued();
    }
  }
  FAIL("the typhoon issued no ticket of an IoT case");
  return {};
}

TEST_CASE(
    "the lineage command prints the chain for people and as JSON, and refuses a locked "
    "log",
    "[lineage]") {
  const v1::TicketIssued ticket = SomeTicket();
  LineageOptions options;
  options.data_dir = TheWorld().path;
  options.query.ticket_id = ticket.ticket_id();
  std::ostringstream text;
  REQUIRE(LineageCommand(options, text).ok());
  CHECK_THAT(text.str(), Catch::Contains("lineage of ticket " + ticket.ticket_id()) &&
                             Catch::Contains("case " + ticket.case_id()) &&
                             Catch::Contains("rule set default sha256 ") &&
                             Catch::Contains("kafka cityops.readings partition "));

  options.json = true;
  std::ostringstream json;
  REQUIRE(LineageCommand(options, json).ok());
  v1::Lineage parsed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json.str(), &parsed).ok());
  std::unique_ptr<EventLog> log = Reopen();
  absl::StatusOr<v1::Lineage> direct = TraceLineage(*log, options.query, options.data_dir);
  REQUIRE(direct.ok());
  CHECK(MessageDifferencer::Equals(parsed, *direct));

  // The log is held (here by `log`, as a daemon would hold it): refused, saying what to do.
  absl::Status locked = LineageCommand(options, json);
  CHECK(locked.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(locked.message()),
             Catch::Contains("in use") && Catch::Contains("cityops log backup"));
}

TEST_CASE("GET /api/v1/cases/{id}/lineage answers the same chain, 404 for an unknown case",
          "[lineage][api]") {
  const World& w = TheWorld();
  const v1::TicketIssued ticket = SomeTicket();
  std::unique_ptr<EventLog> log = Reopen();
  absl::StatusOr<std::unique_ptr<views::Projections>> views =
      views::Projections::Open({.log = log.get(), .dir = w.dir.Sub("views")});
  REQUIRE(views.ok());
  projections::CaseWorkflow workflow({.log = log.get()});
  api::ServerOptions server_options;
  server_options.dashboard = false;
  v1::ApiToken& token = server_options.tokens.emplace_back();
  token.set_token(kViewerToken);
  token.set_user("analyst");
  token.set_role(v1::ROLE_VIEWER);
  token.mutable_unit()->set_level(v1::GRID_LEVEL_CITY_CENTER);
  token.mutable_unit()->set_code("31");
  api::Backend backend;
  backend.log = log.get();
  backend.views = views->get();
  backend.workflow = &workflow;
  backend.health = [](bool) {
    v1::HealthResponse h;
    h.set_status("ok");
    return h;
  };
  absl::StatusOr<std::unique_ptr<api::HttpServer>> server =
      api::HttpServer::Start(server_options, backend);
  REQUIRE(server.ok());
  const int port = (*server)->port();

  const std::string path = absl::StrCat("/api/v1/cases/", ticket.case_id(), "/lineage");
  Reply reply = Get(port, path, kViewerToken);
  REQUIRE(reply.status == 200);
  v1::Lineage served;
  REQUIRE(google::protobuf::util::JsonStringToMessage(reply.body, &served).ok());
  absl::StatusOr<v1::Lineage> direct =
      TraceLineage(*log, {.ticket_id = "", .case_id = ticket.case_id(), .alert_id = ""}, w.path);
  REQUIRE(direct.ok());
  CHECK(MessageDifferencer::Equals(served, *direct));
  CHECK(served.cases(0).alerts_size() > 0);

  Reply unknown = Get(port, "/api/v1/cases/iot-nope-1/lineage", kViewerToken);
  CHECK(unknown.status == 404);
  CHECK_THAT(unknown.body, Catch::Contains("NOT_FOUND") && Catch::Contains("iot-nope-1"));
  CHECK(Get(port, path).status == 401);
  (*server)->Stop();
}

}  // namespace
}  // namespace cityops::analysis
