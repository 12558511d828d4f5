#include "api/routes.h"

#include "cityops/v1/analysis.pb.h"
#include "cityops/v1/api.pb.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/views.pb.h"

namespace cityops::api {

namespace {

QueryParam PageSize() {
  return {"page_size", "integer", "Items per page, 1 to 1000 (default 100)", {}};
}
QueryParam PageToken() {
  return {"page_token", "string", "The next_page_token of the previous page", {}};
}

Route Make(RouteId id, const char* method, const char* path, const char* summary, v1::Role role,
           const google::protobuf::Descriptor* request,
           const google::protobuf::Descriptor* response) {
  Route r;
  r.id = id;
  r.method = method;
  r.path = path;
  r.summary = summary;
  r.role = role;
  r.request = request;
  r.response = response;
  return r;
}

// A route whose response is not JSON.
Route MakeText(RouteId id, const char* path, const char* summary, v1::Role role,
               const char* content_type) {
  Route r = Make(id, "GET", path, summary, role, nullptr, nullptr);
  r.content_type = content_type;
  return r;
}

std::vector<Route> MakeRoutes() {
  using v1::ROLE_ADMIN;
  using v1::ROLE_OPERATOR;
  using v1::ROLE_UNSPECIFIED;
  using v1::ROLE_VIEWER;
  std::vector<Route> r;
  r.push_back(Make(RouteId::kHealthz, "GET", "/healthz",
                   "Liveness: 200 while no stage has failed (also while Kafka is out of "
                   "reach: the process is alive), 503 naming the failing stage otherwise",
                   ROLE_UNSPECIFIED, nullptr, v1::HealthResponse::descriptor()));
  r.push_back(Make(RouteId::kReadyz, "GET", "/readyz",
                   "Readiness: 200 once ingest owns its partitions and the read models have "
                   "caught up with the log, and while ingest reaches Kafka; 503 otherwise, "
                   "with the reason",
                   ROLE_UNSPECIFIED, nullptr, v1::HealthResponse::descriptor()));
  r.push_back(MakeText(RouteId::kMetrics, "/metrics", "Prometheus metrics (text format 0.0.4)",
                       ROLE_UNSPECIFIED, "text/plain; version=0.0.4"));
  r.push_back(MakeText(RouteId::kOpenApi, "/api/v1/openapi.yaml", "This document", ROLE_UNSPECIFIED,
                       "application/yaml"));
  r.push_back(Make(RouteId::kWhoAmI, "GET", "/api/v1/whoami",
                   "The identity behind the token, as commands record it", ROLE_VIEWER, nullptr,
                   v1::WhoAmIResponse::descriptor()));

  Route devices =
      Make(RouteId::kListDevices, "GET", "/api/v1/devices", "Devices with their live state, by id",
           ROLE_VIEWER, nullptr, v1::ListDevicesResponse::descriptor());
  devices.query = {
      {"kind",
       "string",
       "A device kind's id in the catalogue in force (GET /api/v1/catalogue), e.g. flood_gauge, "
       "gas_detector",
       {}},
      {"grid", "string", "District, street or grid code (a prefix of the grid code)", {}},
      {"online", "boolean", "Only online (true) or offline (false) devices", {}},
      {"unregistered", "boolean", "Only devices that sent readings but are not registered", {}},
      PageSize(),
      PageToken()};
  r.push_back(devices);
  r.push_back(Make(RouteId::kGetDevice, "GET", "/api/v1/devices/{device_id}",
                   "One device with its recent readings and its alerts, newest first", ROLE_VIEWER,
                   nullptr, v1::DeviceDetail::descriptor()));
  r.push_back(Make(RouteId::kMap, "GET", "/api/v1/map",
                   "Every device as a point with its kind and alert state, for the big screen's "
                   "map",
                   ROLE_VIEWER, nullptr, v1::DeviceMap::descriptor()));
  r.push_back(Make(RouteId::kCatalogue, "GET", "/api/v1/catalogue",
                   "The catalogue in force (the latest rule set activation's, else the built-in "
                   "one): device kinds with their ids, names in Chinese and English, department, "
                   "reporting interval and metrics (labels, units, bounds, codes); case "
                   "categories with their names, departments and deadlines",
                   ROLE_VIEWER, nullptr, v1::CatalogueResponse::descriptor()));

  Route alerts =
      Make(RouteId::kListAlerts, "GET", "/api/v1/alerts", "Alerts, active and cleared, by id",
           ROLE_VIEWER, nullptr, v1::ListAlertsResponse::descriptor());
  alerts.query = {{"active", "boolean", "Only active alerts", {}},
                  {"device", "string", "Alerts of this device", {}},
                  {"rule", "string", "Alerts of this rule", {}},
                  PageSize(),
                  PageToken()};
  r.push_back(alerts);

  Route cases = Make(RouteId::kListCases, "GET", "/api/v1/cases", "Cases, newest reported first",
                     ROLE_VIEWER, nullptr, v1::ListCasesResponse::descriptor());
  cases.query = {
      {"stage",
       "string",
       "Current stage",
       {"discovered", "registered", "dispatched", "handled", "verified", "closed"}},
      {"source",
       "string",
       "Where the case came from",
       {"iot_rule", "hotline_12345", "street_patrol", "residential_station"}},
      {"overdue", "string", "At least this overdue level now", {"yellow", "red"}},
      {"grid", "string", "District, street or grid code (a prefix of the grid code)", {}},
      {"reported_after", "date-time", "Discovered at or after this time (RFC 3339)", {}},
      {"reported_before", "date-time", "Discovered before this time (RFC 3339)", {}},
      PageSize(),
      PageToken()};
  r.push_back(cases);
  r.push_back(Make(RouteId::kGetCase, "GET", "/api/v1/cases/{case_id}",
                   "One case with its full event timeline and the time spent in each stage",
                   ROLE_VIEWER, nullptr, v1::CaseDetail::descriptor()));
  r.push_back(
      Make(RouteId::kCaseLineage, "GET", "/api/v1/cases/{case_id}/lineage",
           "Why the case exists: its tickets, the alerts that opened or joined it, the rule "
           "and the rule-set version (name, sha256) in force when each was raised, the "
           "readings that raised them with their Kafka topic, partition and offset, and "
           "the reports behind it (as `cityops lineage --case ID --json`)",
           ROLE_VIEWER, nullptr, v1::Lineage::descriptor()));
  Route command = Make(
      RouteId::kCaseCommand, "POST", "/api/v1/cases/{case_id}/{command}",
      "A command of the case workflow. Operators register, dispatch, handle, verify, close and "
      "escalate; urging needs a supervisor. Only the level that dispatches a case dispatches or "
      "escalates it; only a crew of the department it is dispatched to (a token whose unit has "
      "that department) serving its grid handles it; only the originator's unit verifies and "
      "closes it, never a unit that handled it (when the originator did, the grid unit above it "
      "does). The command is validated against the case's events and appended with the "
      "expected stream version",
      ROLE_OPERATOR, v1::CaseCommandRequest::descriptor(), v1::CommandResponse::descriptor());
  command.path_values = {{"command", "string", "The command", CaseCommandNames()}};
  r.push_back(command);
  r.push_back(Make(RouteId::kReport, "POST", "/api/v1/reports",
                   "Report a case (12345 hotline, street patrol, residential station); the "
                   "caller's unit becomes its originator",
                   ROLE_OPERATOR, v1::ReportRequest::descriptor(),
                   v1::CommandResponse::descriptor()));
  Route tickets =
      Make(RouteId::kListTickets, "GET", "/api/v1/tickets", "Dispatch tickets, newest issued first",
           ROLE_VIEWER, nullptr, v1::ListTicketsResponse::descriptor());
  tickets.query = {PageSize(), PageToken()};
  r.push_back(tickets);
  Route statistics =
      Make(RouteId::kStatistics, "GET", "/api/v1/statistics",
           "The big screen's counters, now. With any of from, to, by, scope or department also the "
           "evaluation figures of grid management for that period and scope in `evaluation` "
           "(docs/analysis.md, \"stats\"; the same as `cityops stats`): found, filed, due, closed, "
           "close and on-time close rates, lights, urges, escalations, time per stage, open cases "
           "at the end, the 12345 hotline by category over time; `by` breaks them down, worst "
           "on-time close rate first",
           ROLE_VIEWER, nullptr, v1::Statistics::descriptor());
  statistics.query = {
      {"from",
       "date-time",
       "Start of the period (RFC 3339), inclusive; default: the log's first event",
       {}},
      {"to", "date-time", "End of the period (RFC 3339), exclusive; default: now", {}},
      {"by",
       "string",
       "Break the evaluation down, worst on-time close rate first",
       {"district", "street", "department", "unit", "category", "source"}},
      {"scope",
       "string",
       "Only cases in this district, street, community or grid (a code prefix of 6, 9, 12 or 15 "
       "digits)",
       {}},
      {"department", "string", "Only cases dispatched to this department", {}}};
  r.push_back(statistics);
  r.push_back(Make(RouteId::kGetRules, "GET", "/api/v1/rules",
                   "The active rule set: its YAML, digest and checked form", ROLE_VIEWER, nullptr,
                   v1::RulesetActivated::descriptor()));
  r.push_back(Make(RouteId::kReloadRules, "POST", "/api/v1/rules/reload",
                   "Re-read the configured rule set file and activate it if it changed (as "
                   "SIGHUP does)",
                   ROLE_ADMIN, nullptr, v1::ReloadRulesResponse::descriptor()));
  r.push_back(Make(RouteId::kBackup, "POST", "/api/v1/backups",
                   "Take a consistent copy of the event log while running, into backups.dir "
                   "(409 when backups.dir is not configured)",
                   ROLE_ADMIN, nullptr, v1::BackupResponse::descriptor()));
  Route events = Make(RouteId::kListEvents, "GET", "/api/v1/events",
                      "Events of one stream (by version) or one partition (by sequence)",
                      ROLE_VIEWER, nullptr, v1::ListEventsResponse::descriptor());
  events.query = {
      {"stream", "string", "An indexed stream, e.g. case/<id>, ticket/<id>, alert/<id>", {}},
      {"partition", "integer", "A log partition (when no stream is given)", {}},
      {"from", "integer", "First version (stream, from 1) or sequence (partition, from 0)", {}},
      {"limit", "integer", "At most this many events, 1 to 1000 (default 100)", {}}};
  r.push_back(events);
  r.push_back(MakeText(
      RouteId::kChanges, "/api/v1/changes",
      "Server-sent events: every alert, case event and ticket once the read models hold it "
      "(event name = the event type, data = the cityops.v1.Event as JSON, id = "
      "partition/sequence), a `statistics` event every 2 s, and `resync` when the client fell "
      "behind and should reload its views",
      ROLE_VIEWER, "text/event-stream"));
  return r;
}

}  // namespace

const std::vector<Route>& Routes() {
  static const std::vector<Route>* routes = new std::vector<Route>(MakeRoutes());
  return *routes;
}

const std::vector<std::string>& CaseCommandNames() {
  static const std::vector<std::string>* names = new std::vector<std::string>{
      "register", "dispatch", "handle", "verify", "close", "urge", "escalate"};
  return *names;
}

}  // namespace cityops::api
