// Pieces of the HTTP API that need no daemon: the Prometheus text format, the access
// policy and the reasons of its refusals, the limit of failed authentications per client
// (on a manual clock), the route table with the OpenAPI document generated from it, and the parsing
// of query strings and JSON bodies (api/requests.h, also fuzzed by fuzz/api_*_fuzz.cc). The API
// itself is tested against the real daemon in api_test.cc (which also checks that the committed
// api/openapi.yaml is current).
#include <catch2/catch.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "api/access.h"
#include "api/auth_limiter.h"
#include "api/metrics_text.h"
#include "api/openapi.h"
#include "api/requests.h"
#include "api/routes.h"
#include "kernel/clock.h"
#include "projections/workflow.h"

namespace cityops {
namespace {

TEST_CASE("metrics render in the Prometheus text format with escaped labels", "[api]") {
  api::MetricsText m;
  m.Add("cityops_things_total", "counter", "Things.\nCounted.")
      .Sample({}, 3)
      .Sample({{"code", "A\"B\\C\nD"}}, 1.5);
  kernel::LatencyHistogram h;
  h.Record(std::chrono::microseconds(300));
  m.Add("cityops_append_seconds", "histogram", "Appends.").Histogram({{"p", "0"}}, h.Read());
  const std::string text = m.Render();
  CHECK(
      text.starts_with("# HELP cityops_things_total Things.\\nCounted.\n"
                       "# TYPE cityops_things_total counter\n"
                       "cityops_things_total 3\n"
                       "cityops_things_total{code=\"A\\\"B\\\\C\\nD\"} 1.5\n"));
  CHECK(text.find("cityops_append_seconds_bucket{p=\"0\",le=\"0.00025\"} 0\n") !=
        std::string::npos);
  CHECK(text.find("cityops_append_seconds_bucket{p=\"0\",le=\"0.0005\"} 1\n") != std::string::npos);
  CHECK(text.find("cityops_append_seconds_bucket{p=\"0\",le=\"+Inf\"} 1\n") != std::string::npos);
  CHECK(text.find("cityops_append_seconds_count{p=\"0\"} 1\n") != std::string::npos);
  CHECK(text.find("le=\"0.00005\"") != std::string::npos);
  CHECK(text.find("le=\"10\"") != std::string::npos);
}

v1::ApiToken Token(const std::string& token, const std::string& user, v1::Role role,
                   v1::GridLevel level, const std::string& code) {
  v1::ApiToken t;
  t.set_token(token);
  t.set_user(user);
  t.set_role(role);
  t.mutable_unit()->set_level(level);
  t.mutable_unit()->set_code(code);
  return t;
}

v1::GridRef Grid(const std::string& code) {
  v1::GridRef g;
  g.set_grid_code(code);
  return g;
}

TEST_CASE("tokens authenticate as their configured user, anything else is 401 with a reason",
          "[api]") {
  const api::AccessPolicy policy({Token("viewer-token-0123456789", "vera", v1::ROLE_VIEWER,
                                        v1::GRID_LEVEL_CITY_CENTER, "city"),
                                  Token("street-token-0123456789", "stan", v1::ROLE_OPERATOR,
                                        v1::GRID_LEVEL_STREET_CENTER, "310104001")});
  CHECK_FALSE(policy.empty());
  absl::StatusOr<v1::Actor> stan = policy.Authenticate("Bearer street-token-0123456789");
  REQUIRE(stan.ok());
  CHECK(stan->user() == "stan");
  CHECK(stan->role() == v1::ROLE_OPERATOR);
  CHECK(stan->unit().code() == "310104001");
  CHECK(policy.Authenticate("bearer viewer-token-0123456789 ").ok());

  absl::StatusOr<v1::Actor> none = policy.Authenticate("");
  CHECK(none.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK_THAT(std::string(none.status().message()), Catch::Contains("no token"));
  absl::StatusOr<v1::Actor> basic = policy.Authenticate("Basic dXNlcjpwYXNz");
  CHECK(basic.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK_THAT(std::string(basic.status().message()), Catch::Contains("'Bearer <token>'"));
  absl::StatusOr<v1::Actor> wrong = policy.Authenticate("Bearer street-token-0123456788");
  CHECK(wrong.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK_THAT(std::string(wrong.status().message()), Catch::Contains("not one of the daemon's"));
  // The message never repeats the secret it was given.
  CHECK_THAT(std::string(wrong.status().message()), !Catch::Contains("street-token-0123456788"));
  CHECK(api::AccessPolicy({}).empty());
  CHECK(api::AccessPolicy({}).Authenticate("Bearer street-token-0123456789").status().code() ==
        absl::StatusCode::kUnauthenticated);
}

TEST_CASE("roles are ordered viewer < operator < supervisor < admin, and refusals say who and why",
          "[api]") {
  const std::vector<v1::Role> roles = {v1::ROLE_VIEWER, v1::ROLE_OPERATOR, v1::ROLE_SUPERVISOR,
                                       v1::ROLE_ADMIN};
  for (size_t have = 0; have < roles.size(); ++have) {
    for (size_t need = 0; need < roles.size(); ++need) {
      v1::Actor actor;
      actor.set_user("kim");
      actor.set_role(roles[have]);
      const absl::Status s = api::AccessPolicy::RequireRole(actor, roles[need], "urge case C-1");
      INFO(api::RoleName(roles[have]) << " for " << api::RoleName(roles[need]));
      CHECK(s.ok() == (have >= need));
      if (!s.ok()) {
        CHECK(s.code() == absl::StatusCode::kPermissionDenied);
        CHECK(std::string(s.message()) == "urge case C-1 needs the " + api::RoleName(roles[need]) +
                                              " role or higher; kim is a " +
                                              api::RoleName(roles[have]));
      }
    }
  }
  CHECK(api::RoleName(v1::ROLE_SUPERVISOR) == "supervisor");
}

TEST_CASE("a unit acts inside its own grid codes only, and the city center covers all", "[api]") {
  v1::Actor street;
  street.set_user("stan");
  street.mutable_unit()->set_level(v1::GRID_LEVEL_STREET_CENTER);
  street.mutable_unit()->set_code("310104001");
  CHECK(api::AccessPolicy::RequireUnitCovers(street, Grid("310104001001001"), "register").ok());
  const absl::Status other =
      api::AccessPolicy::RequireUnitCovers(street, Grid("310104002001001"), "register case C-1");
  CHECK(other.code() == absl::StatusCode::kPermissionDenied);
  CHECK(std::string(other.message()) ==
        "register case C-1: grid 310104002001001 is outside stan's unit (street center "
        "310104001); ask a unit that serves it");
  // A prefix of the unit's code is not inside it, and a case without a grid is nobody's.
  CHECK_FALSE(api::AccessPolicy::RequireUnitCovers(street, Grid("310104"), "x").ok());
  CHECK_THAT(std::string(api::AccessPolicy::RequireUnitCovers(street, Grid(""), "x").message()),
             Catch::Contains("grid (none)"));

  v1::Actor city;
  city.set_user("otto");
  city.mutable_unit()->set_level(v1::GRID_LEVEL_CITY_CENTER);
  city.mutable_unit()->set_code("city");
  CHECK(api::AccessPolicy::RequireUnitCovers(city, Grid("440305001001001"), "x").ok());
  CHECK(projections::UnitName(city.unit()) == "city center");
  CHECK(projections::UnitName(street.unit()) == "street center 310104001");

  v1::Actor nowhere;  // A token configured without a unit code covers nothing.
  nowhere.set_user("nobody");
  nowhere.mutable_unit()->set_level(v1::GRID_LEVEL_DISTRICT_CENTER);
  CHECK_FALSE(api::AccessPolicy::RequireUnitCovers(nowhere, Grid("310104001001001"), "x").ok());

  // A department's crew serves its area as a grid unit does, and is named as a crew.
  v1::Actor crew = street;
  crew.set_user("wen");
  crew.mutable_unit()->set_department("water-authority");
  CHECK(api::AccessPolicy::RequireUnitCovers(crew, Grid("310104001001001"), "x").ok());
  CHECK(std::string(
            api::AccessPolicy::RequireUnitCovers(crew, Grid("310104002001001"), "verify case C-1")
                .message()) ==
        "verify case C-1: grid 310104002001001 is outside wen's unit (water-authority crew, "
        "street center 310104001); ask a unit that serves it");
}

TEST_CASE("who handles is the workflow's rule alone, every other command is checked for the unit",
          "[api]") {
  for (const std::string& name : api::CaseCommandNames()) {
    absl::StatusOr<const api::CaseCommandSpec*> spec = api::FindCaseCommand(name);
    REQUIRE(spec.ok());
    INFO(name);
    // Handle: a crew of the dispatched department serving the grid (projections::Decide),
    // checked whole by the workflow, with one message for the API, the CLI and the demo.
    CHECK((*spec)->unit_must_cover == (name != "handle"));
  }
}

TEST_CASE("every refusal of the access policy says why, for the log and the metrics", "[api]") {
  const api::AccessPolicy policy({Token("viewer-token-0123456789", "vera", v1::ROLE_VIEWER,
                                        v1::GRID_LEVEL_STREET_CENTER, "310104001")});
  CHECK(api::RefusalOf(policy.Authenticate("").status()) == api::Refusal::kNoToken);
  CHECK(api::RefusalOf(policy.Authenticate("Basic dXNlcjpwYXNz").status()) ==
        api::Refusal::kMalformedHeader);
  CHECK(api::RefusalOf(policy.Authenticate("Bearer viewer-token-0123456788").status()) ==
        api::Refusal::kUnknownToken);
  absl::StatusOr<v1::Actor> vera = policy.Authenticate("Bearer viewer-token-0123456789");
  REQUIRE(vera.ok());
  CHECK(api::RefusalOf(absl::OkStatus()) == api::Refusal::kNone);
  CHECK(api::RefusalOf(api::AccessPolicy::RequireRole(*vera, v1::ROLE_OPERATOR, "report")) ==
        api::Refusal::kRoleTooLow);
  CHECK(api::RefusalOf(api::AccessPolicy::RequireUnitCovers(
            *vera, Grid("310104002001001"), "report")) == api::Refusal::kOutsideUnit);
  // The workflow's own refusals carry no mark: a 403 of the workflow.
  CHECK(api::RefusalOf(absl::PermissionDeniedError("only its originator closes it")) ==
        api::Refusal::kWorkflow);
  CHECK(api::RefusalOf(absl::NotFoundError("no case")) == api::Refusal::kNone);
  const absl::Status limited =
      api::WithRefusal(absl::ResourceExhaustedError("slow down"), api::Refusal::kRateLimited);
  CHECK(api::RefusalOf(limited) == api::Refusal::kRateLimited);
  CHECK(limited.message() == "slow down");
  // Labels and words, one each.
  std::set<std::string> labels;
  std::set<std::string> texts;
  for (api::Refusal r :
       {api::Refusal::kNoToken, api::Refusal::kMalformedHeader, api::Refusal::kUnknownToken,
        api::Refusal::kRoleTooLow, api::Refusal::kOutsideUnit, api::Refusal::kWorkflow,
        api::Refusal::kRateLimited}) {
    labels.insert(std::string(api::RefusalLabel(r)));
    texts.insert(std::string(api::RefusalText(r)));
  }
  CHECK(labels.size() == 7);
  CHECK(texts.size() == 7);
  CHECK(api::RefusalLabel(api::Refusal::kUnknownToken) == "unknown_token");
  CHECK(api::RefusalText(api::Refusal::kOutsideUnit) == "outside the unit");
}

TEST_CASE("failed authentication blocks a client past the limit within a sliding window", "[api]") {
  kernel::ManualClock clock(absl::FromUnixSeconds(1'790'000'000));
  api::AuthFailureLimiter limiter({.failures = 3, .window = absl::Seconds(60)}, &clock);
  CHECK(limiter.Blocked("10.0.0.1") == absl::ZeroDuration());
  // Three failures 10 s apart: the third blocks, until the first is 60 s old.
  CHECK_FALSE(limiter.RecordFailure("10.0.0.1"));
  clock.Advance(absl::Seconds(10));
  CHECK_FALSE(limiter.RecordFailure("10.0.0.1"));
  clock.Advance(absl::Seconds(10));
  CHECK(limiter.Blocked("10.0.0.1") == absl::ZeroDuration());
  CHECK(limiter.RecordFailure("10.0.0.1"));
  CHECK(limiter.Blocked("10.0.0.1") == absl::Seconds(40));
  // Other clients are not affected.
  CHECK(limiter.Blocked("10.0.0.2") == absl::ZeroDuration());
  clock.Advance(absl::Seconds(39));
  CHECK(limiter.Blocked("10.0.0.1") == absl::Seconds(1));
  // The window slides: once the first failure is 60 s old two remain, below the limit.
  clock.Advance(absl::Seconds(1));
  CHECK(limiter.Blocked("10.0.0.1") == absl::ZeroDuration());
  // One more failure within the window of the other two blocks again, until the second
  // failure (at 10 s) is 60 s old.
  CHECK(limiter.RecordFailure("10.0.0.1"));
  CHECK(limiter.Blocked("10.0.0.1") == absl::Seconds(10));
  // Failures spread wider than the window never block.
  api::AuthFailureLimiter slow({.failures = 3, .window = absl::Seconds(60)}, &clock);
  for (int i = 0; i < 20; ++i) {
    CHECK_FALSE(slow.RecordFailure("10.0.0.3"));
    CHECK(slow.Blocked("10.0.0.3") == absl::ZeroDuration());
    clock.Advance(absl::Seconds(31));
  }
  // A client whose failures all left the window is forgotten.
  clock.Advance(absl::Minutes(2));
  CHECK(slow.Blocked("10.0.0.3") == absl::ZeroDuration());
  CHECK(slow.tracked_clients() == 0);
}

TEST_CASE("the clients failed authentication is tracked for are bounded, the stalest evicted",
          "[api]") {
  kernel::ManualClock clock(absl::FromUnixSeconds(1'790'000'000));
  api::AuthFailureLimiter limiter({.failures = 2, .window = absl::Seconds(60), .max_clients = 100},
                                  &clock);
  // A seeded stream of failures from a thousand addresses: never more than 100 tracked.
  std::mt19937 random(17);
  std::uniform_int_distribution<int> host(0, 999);
  for (int i = 0; i < 5000; ++i) {
    limiter.RecordFailure("10.1." + std::to_string(host(random)));
    CHECK(limiter.tracked_clients() <= 100);
  }
  CHECK(limiter.tracked_clients() == 100);
  // Past the bound, the client whose last failure is the oldest is forgotten, blocked
  // or not; the others keep their count.
  api::AuthFailureLimiter bounded({.failures = 2, .window = absl::Seconds(60), .max_clients = 3},
                                  &clock);
  bounded.RecordFailure("192.0.2.1");
  CHECK(bounded.RecordFailure("192.0.2.1"));
  clock.Advance(absl::Seconds(1));
  CHECK_FALSE(bounded.RecordFailure("198.51.100.1"));
  CHECK_FALSE(bounded.RecordFailure("198.51.100.2"));
  CHECK(bounded.Blocked("192.0.2.1") == absl::Seconds(59));
  CHECK_FALSE(bounded.RecordFailure("198.51.100.3"));
  CHECK(bounded.tracked_clients() == 3);
  CHECK(bounded.Blocked("192.0.2.1") == absl::ZeroDuration());
  CHECK(bounded.RecordFailure("198.51.100.1"));
  CHECK(bounded.Blocked("198.51.100.1") == absl::Seconds(60));
}

TEST_CASE("the route table is consistent and the OpenAPI document lists all of it", "[api]") {
  std::set<std::pair<std::string, std::string>> seen;
  const std::string& doc = api::OpenApiYaml();
  CHECK(doc.starts_with("openapi: 3."));
  for (const api::Route& r : api::Routes()) {
    INFO(r.method << " " << r.path);
    CHECK(seen.insert({r.method, r.path}).second);  // No route twice.
    CHECK((r.method == "GET" || r.method == "POST"));
    CHECK(r.path.starts_with("/"));
    CHECK_FALSE(r.summary.empty());
    // JSON or a declared content type, never neither.
    CHECK((r.response != nullptr) != !r.content_type.empty());
    if (r.method == "POST") CHECK(r.role >= v1::ROLE_OPERATOR);  // Writes need an operator.
    if (r.path.starts_with("/api/v1/") && r.id != api::RouteId::kOpenApi) {
      CHECK(r.role >= v1::ROLE_VIEWER);  // The API needs a token, its document does not.
    }
    CHECK_THAT(doc, Catch::Contains("  " + r.path + ":"));
    for (const api::QueryParam& q : r.query) {
      CHECK((q.type == "string" || q.type == "integer" || q.type == "boolean" ||
             q.type == "date-time"));
      for (const std::string& v : q.values) CHECK_THAT(doc, Catch::Contains(v));
    }
    if (r.request != nullptr) CHECK_THAT(doc, Catch::Contains(r.request->name() + ":"));
    if (r.response != nullptr) CHECK_THAT(doc, Catch::Contains(r.response->name() + ":"));
  }
  CHECK(api::CaseCommandNames() == std::vector<std::string>{"register", "dispatch", "handle",
                                                            "verify", "close", "urge", "escalate"});
  for (const std::string& c : api::CaseCommandNames()) CHECK_THAT(doc, Catch::Contains(c));
  CHECK_THAT(doc, Catch::Contains("ErrorResponse"));
}

// A GET request for `target` ("/api/v1/cases?stage=dispatched") as httplib reads it.
httplib::Request GetRequest(const std::string& target) {
  httplib::Request req;
  req.method = "GET";
  req.target = target;
  const size_t question = target.find('?');
  req.path = target.substr(0, question);
  if (question != std::string::npos) {
    httplib::detail::parse_query_text(target.substr(question + 1), req.params);
  }
  return req;
}

const api::Route& RouteOf(api::RouteId id) {
  for (const api::Route& r : api::Routes()) {
    if (r.id == id) return r;
  }
  FAIL("no route");
  return api::Routes().front();
}

TEST_CASE("query strings parse into filters and paging, strictly", "[api]") {
  const api::Route& cases = RouteOf(api::RouteId::kListCases);
  {
    const httplib::Request req = GetRequest(
        "/api/v1/cases?stage=dispatched&source=iot_rule&overdue=red&grid=310104&page_size=7&"
        "reported_after=2026-09-21T08:00:00Z");
    const api::Query q(req, cases);
    REQUIRE(q.CheckNames().ok());
    absl::StatusOr<api::CaseListQuery> parsed = api::ParseCaseListQuery(q);
    REQUIRE(parsed.ok());
    CHECK(parsed->filter.stage == v1::CASE_STAGE_DISPATCHED);
    CHECK(parsed->filter.source == v1::CASE_SOURCE_IOT_RULE);
    CHECK(parsed->filter.overdue == v1::OVERDUE_LEVEL_RED);
    CHECK(parsed->filter.grid_prefix == "310104");
    CHECK(parsed->filter.reported_from == absl::FromUnixSeconds(1'789'977'600));
    CHECK(parsed->filter.reported_to == absl::InfiniteFuture());
    CHECK(parsed->paging.page_size == 7);
  }
  for (const char* bad :
       {"/api/v1/cases?colour=red", "/api/v1/cases?stage=unspecified", "/api/v1/cases?page_size=0",
        "/api/v1/cases?page_size=1001", "/api/v1/cases?reported_after=yesterday",
        // absl::ParseTime's own words, no RFC 3339 (found by fuzz/api_query_fuzz.cc,
        // fuzz/regressions/api_query/).
        "/api/v1/cases?reported_before=infinite-past",
        "/api/v1/cases?reported_after=infinite-future"}) {
    INFO(bad);
    const httplib::Request req = GetRequest(bad);
    const api::Query q(req, cases);
    absl::Status s = q.CheckNames();
    if (s.ok()) s = api::ParseCaseListQuery(q).status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  }
  const api::Route& statistics = RouteOf(api::RouteId::kStatistics);
  const httplib::Request infinite = GetRequest("/api/v1/statistics?to=infinite-future");
  CHECK(api::ParseEvaluationQuery(api::Query(infinite, statistics), absl::Now()).status().code() ==
        absl::StatusCode::kInvalidArgument);
  const api::Route& events = RouteOf(api::RouteId::kListEvents);
  const httplib::Request req = GetRequest("/api/v1/events?stream=case/R-1&from=0");
  CHECK_THAT(std::string(api::ParseEventsQuery(api::Query(req, events)).status().message()),
             Catch::Contains("'from' must be a whole number from 1"));
}

TEST_CASE("JSON bodies parse strictly: JSON only, known fields, the fields a command takes",
          "[api]") {
  v1::ReportRequest report;
  CHECK(
      api::ParseReportBody("", R"({"caseId":"R-1","grid":{"gridCode":"310104010001001"}})", &report)
          .ok());
  CHECK(report.case_id() == "R-1");
  CHECK_THAT(std::string(api::ParseReportBody("text/plain", "{}", &report).message()),
             Catch::Contains("must be JSON"));
  CHECK_THAT(std::string(api::ParseReportBody("", "", &report).message()),
             Catch::Contains("send {} for none"));
  CHECK_THAT(std::string(api::ParseReportBody("", R"({"colour":"red"})", &report).message()),
             Catch::Contains("not a valid cityops.v1.ReportRequest"));
  CHECK_THAT(
      std::string(api::ParseReportBody("", R"({"grid":{"gridCode":"3101"}})", &report).message()),
      Catch::Contains("15 digits"));

  CHECK(api::FindCaseCommand("teleport").status().code() == absl::StatusCode::kNotFound);
  absl::StatusOr<const api::CaseCommandSpec*> dispatch = api::FindCaseCommand("dispatch");
  REQUIRE(dispatch.ok());
  v1::CaseCommandRequest command;
  CHECK(api::ParseCaseCommandBody("dispatch", **dispatch, "application/json",
                                  R"({"department":"water-authority","requestId":"d-1"})", &command)
            .ok());
  CHECK(command.department() == "water-authority");
  CHECK_THAT(std::string(api::ParseCaseCommandBody("dispatch", **dispatch, "",
                                                   R"({"result":"done"})", &command)
                             .message()),
             Catch::Contains("dispatch does not take 'result'"));
}

}  // namespace
}  // namespace cityops
