#include "app/client_commands.h"

#include <httplib.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/access.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/proto_time.h"
#include "projections/workflow.h"

namespace cityops::app {

namespace {

namespace pb = google::protobuf;

constexpr int kConnectTimeoutSeconds = 5;
constexpr int kReadTimeoutSeconds = 30;

// "CASE_STAGE_DISPATCHED" -> "dispatched"; with `spaces`, '_' becomes ' '.
std::string ShortName(const std::string& full, absl::string_view prefix, bool spaces = false) {
  absl::string_view name = full;
  absl::ConsumePrefix(&name, prefix);
  std::string out = absl::AsciiStrToLower(name);
  if (spaces) std::replace(out.begin(), out.end(), '_', ' ');
  return out;
}

std::string StageName(v1::CaseStage s) { return ShortName(v1::CaseStage_Name(s), "CASE_STAGE_"); }
std::string SourceName(v1::CaseSource s) {
  return ShortName(v1::CaseSource_Name(s), "CASE_SOURCE_");
}
std::string LevelName(v1::GridLevel l) {
  return ShortName(v1::GridLevel_Name(l), "GRID_LEVEL_", true);
}

std::string Light(const v1::CaseView& c) {
  if (c.stage() == v1::CASE_STAGE_CLOSED) return "-";
  switch (c.overdue()) {
    case v1::OVERDUE_LEVEL_YELLOW:
      return "yellow";
    case v1::OVERDUE_LEVEL_RED:
      return "red";
    default:
      return "green";
  }
}

std::string FormatWhen(const pb::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", kernel::FromTimestamp(ts), absl::LocalTimeZone());
}

// "45s", "12m", "3h05m", "2d04h": coarse, for tables.
std::string Age(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

std::string FormatDuration(const pb::Duration& d) {
  return absl::FormatDuration(absl::Trunc(kernel::FromDurationProto(d), absl::Seconds(1)));
}

std::string FreshRequestId() {
  std::random_device random;
  const uint64_t id = (static_cast<uint64_t>(random()) << 32) ^ random();
  return absl::StrFormat("cli-%016x", id);
}

// The JSON of `m` by the protobuf JSON mapping. Requests carry only the fields set (the
// API refuses fields a command does not take); `all_fields` prints every field, as the
// API's replies do.
std::string ToJson(const pb::Message& m, bool all_fields = false) {
  pb::util::JsonPrintOptions options;
  options.always_print_primitive_fields = all_fields;
  std::string out;
  if (!pb::util::MessageToJsonString(m, &out, options).ok()) return "{}";
  return out;
}

absl::StatusCode CodeOfHttpStatus(int status) {
  switch (status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 409:
      return absl::StatusCode::kFailedPrecondition;
    case 413:
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kUnknown;
  }
}

// One API call. The body of a 2xx answer, or the API's error message as a status.
class ApiCall {
 public:
  explicit ApiCall(const ApiClientOptions& options) : options_(options) {}

  absl::StatusOr<std::string> Get(const std::string& path, const httplib::Params& params) {
    return Send("GET", path, params, "");
  }
  absl::StatusOr<std::string> Post(const std::string& path, const std::string& body) {
    return Send("POST", path, {}, body);
  }

 private:
  absl::StatusOr<std::string> Send(const char* method, const std::string& path,
                                   const httplib::Params& params, const std::string& body) {
    absl::string_view server = options_.server;
    while (absl::ConsumeSuffix(&server, "/")) {
    }
    absl::string_view rest = server;
    if (!absl::ConsumePrefix(&rest, "http://") && !absl::ConsumePrefix(&rest, "https://")) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--server '%s' must be http://HOST[:PORT] or https://HOST[:PORT]", options_.server));
    }
    if (rest.empty() || absl::StrContains(rest, "/")) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--server '%s' must be http(s)://HOST[:PORT], without a path", options_.server));
    }
    if (options_.token.empty()) {
      return absl::InvalidArgumentError(
          "no API token: pass --token or set CITYOPS_TOKEN (tokens are in the daemon's "
          "configuration)");
    }
    httplib::Client client{std::string(server)};
    if (!client.is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--server '%s' is not a usable address", options_.server));
    }
    client.set_connection_timeout(kConnectTimeoutSeconds, 0);
    client.set_read_timeout(kReadTimeoutSeconds, 0);
    client.set_write_timeout(kReadTimeoutSeconds, 0);
    const httplib::Headers headers = {{"Authorization", "Bearer " + options_.token},
                                      {"Accept", "application/json"}};
    httplib::Result r = absl::string_view(method) == "GET"
                            ? client.Get(path, params, headers)
                            : client.Post(path, headers, body, "application/json");
    if (!r) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot reach the cityops API at %s (%s); is `cityops serve` running there? Pass "
          "--server or set CITYOPS_SERVER",
          server, httplib::to_string(r.error())));
    }
    if (r->status >= 200 && r->status < 300) return std::move(r->body);
    v1::ErrorResponse error;
    pb::util::JsonParseOptions lenient;
    lenient.ignore_unknown_fields = true;
    if (pb::util::JsonStringToMessage(r->body, &error, lenient).ok() &&
        !error.error().message().empty()) {
      std::string message = error.error().message();
      if (r->status == 401) {
        absl::StrAppend(&message, " (the token came from --token or CITYOPS_TOKEN)");
      }
      return absl::Status(CodeOfHttpStatus(r->status), message);
    }
    std::string excerpt = r->body.substr(0, 200);
    std::replace(excerpt.begin(), excerpt.end(), '\n', ' ');
    return absl::Status(CodeOfHttpStatus(r->status),
                        absl::StrFormat("%s %s%s answered HTTP %d: %s", method, server, path,
                                        r->status, excerpt.empty() ? "(no body)" : excerpt));
  }

  const ApiClientOptions& options_;
};

absl::Status ParseReply(const std::string& body, const std::string& what, pb::Message* out) {
  pb::util::JsonParseOptions lenient;
  lenient.ignore_unknown_fields = true;  // A newer daemon may say more.
  if (pb::util::Status s = pb::util::JsonStringToMessage(body, out, lenient); !s.ok()) {
    return absl::InternalError(
        absl::StrFormat("the API answered %s with JSON that is not a %s (%s); is --server a "
                        "cityops daemon?",
                        what, out->GetDescriptor()->full_name(), std::string(s.message())));
  }
  return absl::OkStatus();
}

std::string PathSegment(const std::string& s) {
  // Case ids are [A-Za-z0-9._-] (the API refuses others); encode anything else so that a
  // typo reaches the API as the wrong id rather than the wrong route.
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// A table with left-aligned columns separated by two spaces.
void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string ActorOf(const v1::Event& e) {
  const v1::Provenance& p = e.provenance();
  switch (p.origin_case()) {
    case v1::Provenance::kActor:
      return absl::StrFormat("%s (%s, %s)", p.actor().user(), api::RoleName(p.actor().role()),
                             projections::UnitName(p.actor().unit()));
    case v1::Provenance::kStage:
      return p.stage();
    case v1::Provenance::kKafka:
      return absl::StrFormat("kafka %s[%d]@%d", p.kafka().topic(), p.kafka().partition(),
                             p.kafka().offset());
    default:
      return "-";
  }
}

std::string EventType(const v1::Event& e) {
  const pb::OneofDescriptor* payload = v1::Event::descriptor()->FindOneofByName("payload");
  const pb::FieldDescriptor* f = e.GetReflection()->GetOneofFieldDescriptor(e, payload);
  return f != nullptr ? f->name() : "event";
}

// A deadline says which stage must be left by when; people read it as the next step:
// "dispatch by 10:38".
std::string NextStep(const v1::Deadline& d) {
  if (!d.has_due_time()) return "-";
  const char* step = "";
  switch (d.stage()) {
    case v1::CASE_STAGE_DISCOVERED:
      step = "register";
      break;
    case v1::CASE_STAGE_REGISTERED:
      step = "dispatch";
      break;
    case v1::CASE_STAGE_DISPATCHED:
      step = "handle";
      break;
    case v1::CASE_STAGE_HANDLED:
      step = "verify";
      break;
    case v1::CASE_STAGE_VERIFIED:
      step = "close";
      break;
    default:
      return absl::StrFormat("leave %s by %s", StageName(d.stage()), FormatWhen(d.due_time()));
  }
  return absl::StrFormat("%s by %s", step, FormatWhen(d.due_time()));
}

std::string Due(const v1::Deadline& d) { return d.has_due_time() ? "; " + NextStep(d) : ""; }

// What one event of a case's stream says, in a line.
std::string EventDetail(const v1::Event& e) {
  switch (e.payload_case()) {
    case v1::Event::kCaseReported: {
      const v1::CaseReported& r = e.case_reported();
      return absl::StrFormat("%s, %s %s, grid %s%s", SourceName(r.source()), r.category().code(),
                             r.category().name(), r.grid().grid_code(),
                             r.reporter().empty() ? "" : ", reporter " + r.reporter());
    }
    case v1::Event::kCaseOpened: {
      const v1::CaseOpened& o = e.case_opened();
      return absl::StrFormat("for %s, dispatched by the %s%s",
                             o.department().empty() ? "(no department)" : o.department(),
                             LevelName(o.dispatch_level()),
                             o.rule_id().empty() ? "" : ", rule " + o.rule_id());
    }
    case v1::Event::kCaseRegistered:
      return e.case_registered().has_next_deadline() ? NextStep(e.case_registered().next_deadline())
                                                     : "";
    case v1::Event::kCaseDispatched: {
      const v1::CaseDispatched& d = e.case_dispatched();
      return absl::StrFormat("to %s at the %s, ticket %s%s", d.department(), LevelName(d.level()),
                             d.ticket_id(), Due(d.next_deadline()));
    }
    case v1::Event::kCaseHandled:
      return "result: " + e.case_handled().result();
    case v1::Event::kCaseVerified: {
      const v1::CaseVerified& v = e.case_verified();
      if (v.passed()) return v.note().empty() ? "passed" : "passed: " + v.note();
      return absl::StrFormat("failed: %s; back to dispatched, re-work ticket %s", v.note(),
                             v.ticket_id());
    }
    case v1::Event::kCaseClosed:
      return "handling time " + FormatDuration(e.case_closed().total_handling_time());
    case v1::Event::kCaseUrged:
      return e.case_urged().note().empty() ? "urged" : "urged: " + e.case_urged().note();
    case v1::Event::kCaseEscalated: {
      const v1::CaseEscalated& x = e.case_escalated();
      return absl::StrFormat("from the %s to the %s%s", LevelName(x.from_level()),
                             LevelName(x.to_level()), x.reason().empty() ? "" : ": " + x.reason());
    }
    case v1::Event::kCaseOverdue: {
      const v1::CaseOverdue& o = e.case_overdue();
      return absl::StrFormat("%s, %s past %s",
                             ShortName(v1::OverdueLevel_Name(o.level()), "OVERDUE_LEVEL_"),
                             StageName(o.stage()), FormatWhen(o.due_time()));
    }
    case v1::Event::kCaseLinked: {
      const v1::CaseLinked& l = e.case_linked();
      if (!l.alert_id().empty()) return "alert " + l.alert_id() + " joined";
      if (!l.reported_case_id().empty()) return "report " + l.reported_case_id() + " joined";
      return "joined case " + l.into_case_id();
    }
    case v1::Event::kCaseRelocated: {
      const v1::CaseRelocated& r = e.case_relocated();
      return absl::StrFormat("moved to grid %s (registration of %s)", r.grid().grid_code(),
                             r.device_id());
    }
    default:
      return "";
  }
}

void PrintCase(const v1::CaseDetail& detail, std::ostream& out) {
  const v1::CaseView& c = detail.case_();
  out << absl::StrFormat("case %s: %s, %s\n", c.case_id(), StageName(c.stage()),
                         Light(c) == "-" ? "closed" : "light " + Light(c));
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"  source", SourceName(c.source()) +
                                  (c.rule_id().empty() ? "" : " (rule " + c.rule_id() + ")")});
  rows.push_back({"  category", absl::StrCat(c.category().code(), " ", c.category().name())});
  rows.push_back({"  grid", c.grid().grid_code()});
  if (!c.device_id().empty()) rows.push_back({"  device", c.device_id()});
  rows.push_back({"  department", c.department().empty() ? "-" : c.department()});
  rows.push_back({"  dispatched by", LevelName(c.level())});
  rows.push_back({"  originator", projections::UnitName(c.originator())});
  if (!c.description().empty()) rows.push_back({"  description", c.description()});
  rows.push_back({"  reported", FormatWhen(c.reported_time())});
  rows.push_back({"  in stage since", FormatWhen(c.stage_time())});
  if (c.has_deadline()) {
    rows.push_back({"  deadline", NextStep(c.deadline())});
  }
  if (!c.handling_result().empty()) rows.push_back({"  result", c.handling_result()});
  rows.push_back({"  urges", absl::StrCat(c.urges())});
  rows.push_back({"  escalations", absl::StrCat(c.escalations_size())});
  rows.push_back({"  failed checks", absl::StrCat(c.failed_verifications())});
  if (!c.ticket_ids().empty()) rows.push_back({"  tickets", absl::StrJoin(c.ticket_ids(), ", ")});
  if (!c.linked_to().empty()) rows.push_back({"  linked into", c.linked_to()});
  PrintTable(rows, out);

  out << "timeline:\n";
  rows.clear();
  for (const v1::Event& e : detail.timeline()) {
    rows.push_back({absl::StrCat("  ", e.stream_version()), FormatWhen(e.event_time()),
                    EventType(e), ActorOf(e), EventDetail(e)});
  }
  PrintTable(rows, out);

  out << "time in stage:\n";
  rows.clear();
  for (const v1::StageDuration& d : detail.time_in_stage()) {
    rows.push_back({"  " + StageName(d.stage()), FormatDuration(d.duration())});
  }
  PrintTable(rows, out);
  out << absl::StrFormat("handling time: %s%s\n", FormatDuration(detail.handling_time()),
                         c.stage() == v1::CASE_STAGE_CLOSED
                             ? " (closed)"
                             : " so far, as of " + FormatWhen(detail.as_of()));
}

}  // namespace

absl::Status CasesListCommand(const CasesListOptions& options, std::ostream& out) {
  httplib::Params params;
  auto add = [&params](const char* name, const std::string& value) {
    if (!value.empty()) params.emplace(name, value);
  };
  add("stage", options.stage);
  add("source", options.source);
  add("overdue", options.overdue);
  add("grid", options.grid);
  add("reported_after", options.reported_after);
  add("reported_before", options.reported_before);
  if (options.page_size > 0) params.emplace("page_size", absl::StrCat(options.page_size));
  ApiCall call(options.api);
  v1::ListCasesResponse all;
  std::string token = options.page_token;
  for (;;) {
    httplib::Params page_params = params;
    if (!token.empty()) page_params.emplace("page_token", token);
    absl::StatusOr<std::string> body = call.Get("/api/v1/cases", page_params);
    if (!body.ok()) return body.status();
    if (options.api.json && !options.all) {
      out << *body << "\n";
      return absl::OkStatus();
    }
    v1::ListCasesResponse page;
    if (absl::Status s = ParseReply(*body, "GET /api/v1/cases", &page); !s.ok()) return s;
    for (v1::CaseView& c : *page.mutable_cases()) *all.add_cases() = std::move(c);
    token = page.next_page_token();
    if (!options.all || token.empty()) {
      all.set_next_page_token(token);
      break;
    }
  }
  if (options.api.json) {
    out << ToJson(all, true) << "\n";
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STAGE", "LIGHT", "SOURCE", "CATEGORY", "GRID", "DEPARTMENT", "AGE"}};
  const absl::Time now = absl::Now();
  for (const v1::CaseView& c : all.cases()) {
    rows.push_back({c.case_id(), StageName(c.stage()), Light(c), SourceName(c.source()),
                    c.category().code(), c.grid().grid_code(),
                    c.department().empty() ? "-" : c.department(),
                    Age(now - kernel::FromTimestamp(c.reported_time()))});
  }
  PrintTable(rows, out);
  out << absl::StrFormat("%d case%s", all.cases_size(), all.cases_size() == 1 ? "" : "s");
  if (!all.next_page_token().empty()) {
    out << absl::StrFormat("; more with --page-token %s (or --all)", all.next_page_token());
  }
  out << "\n";
  return absl::OkStatus();
}

absl::Status CasesShowCommand(const CasesShowOptions& options, std::ostream& out) {
  ApiCall call(options.api);
  const std::string path = "/api/v1/cases/" + PathSegment(options.case_id);
  absl::StatusOr<std::string> body = call.Get(path, {});
  if (!body.ok()) return body.status();
  if (options.api.json) {
    out << *body << "\n";
    return absl::OkStatus();
  }
  v1::CaseDetail detail;
  if (absl::Status s = ParseReply(*body, "GET " + path, &detail); !s.ok()) return s;
  PrintCase(detail, out);
  return absl::OkStatus();
}

absl::Status CaseCommandCommand(const CaseCommandOptions& options, std::ostream& out) {
  v1::CaseCommandRequest request;
  request.set_request_id(options.request_id.empty() ? FreshRequestId() : options.request_id);
  request.set_department(options.department);
  if (!options.level.empty()) {
    v1::GridLevel level;
    if (!v1::GridLevel_Parse("GRID_LEVEL_" + absl::AsciiStrToUpper(options.level), &level)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--level '%s' is not a level; use residential_station, street_center, "
                          "district_center or city_center",
                          options.level));
    }
    request.set_level(level);
  }
  request.set_result(options.result);
  request.set_passed(options.pass);
  request.set_note(options.note);
  request.set_reason(options.reason);
  ApiCall call(options.api);
  const std::string path =
      absl::StrCat("/api/v1/cases/", PathSegment(options.case_id), "/", options.command);
  absl::StatusOr<std::string> body = call.Post(path, ToJson(request));
  if (!body.ok()) return body.status();
  if (options.api.json) {
    out << *body << "\n";
    return absl::OkStatus();
  }
  v1::CommandResponse reply;
  if (absl::Status s = ParseReply(*body, "POST " + path, &reply); !s.ok()) return s;
  const v1::CaseView& c = reply.case_();
  if (reply.duplicate()) {
    out << absl::StrFormat(
        "%s case %s: already done by an earlier request with request id %s; nothing "
        "appended. The case is %s.\n",
        options.command, c.case_id(), request.request_id(), StageName(c.stage()));
    return absl::OkStatus();
  }
  std::string detail;
  if (options.command == "dispatch" && c.ticket_ids_size() > 0) {
    detail =
        absl::StrFormat(" (to %s at the %s, ticket %s)", c.dispatched_department(),
                        LevelName(c.dispatched_level()), c.ticket_ids(c.ticket_ids_size() - 1));
  } else if (options.command == "escalate") {
    detail = absl::StrFormat(" (now dispatched by the %s)", LevelName(c.level()));
  } else if (options.command == "urge") {
    detail = absl::StrFormat(" (urged %d time%s)", c.urges(), c.urges() == 1 ? "" : "s");
  } else if (options.command == "verify" && !options.pass) {
    detail = absl::StrFormat(" (verification failed; re-work ticket %s)",
                             c.ticket_ids_size() > 0 ? c.ticket_ids(c.ticket_ids_size() - 1) : "-");
  }
  out << absl::StrFormat("%s case %s: done; it is now %s%s. request id %s\n", options.command,
                         c.case_id(), StageName(c.stage()), detail, request.request_id());
  return absl::OkStatus();
}

absl::Status ReportCommand(const ReportOptions& options, std::ostream& out) {
  v1::ReportRequest request;
  request.set_request_id(options.request_id.empty() ? FreshRequestId() : options.request_id);
  request.set_case_id(options.case_id);
  v1::CaseSource source;
  if (!v1::CaseSource_Parse("CASE_SOURCE_" + absl::AsciiStrToUpper(options.source), &source)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--source '%s' is not a source; use hotline_12345, street_patrol or "
                        "residential_station",
                        options.source));
  }
  request.set_source(source);
  request.mutable_grid()->set_grid_code(options.grid);
  request.mutable_category()->set_code(options.category);
  request.mutable_category()->set_name(options.category_name);
  request.set_description(options.description);
  request.set_reporter(options.reporter);
  if (options.latitude_deg.has_value() || options.longitude_deg.has_value()) {
    request.mutable_location()->set_latitude_deg(options.latitude_deg.value_or(0));
    request.mutable_location()->set_longitude_deg(options.longitude_deg.value_or(0));
  }
  ApiCall call(options.api);
  absl::StatusOr<std::string> body = call.Post("/api/v1/reports", ToJson(request));
  if (!body.ok()) return body.status();
  if (options.api.json) {
    out << *body << "\n";
    return absl::OkStatus();
  }
  v1::CommandResponse reply;
  if (absl::Status s = ParseReply(*body, "POST /api/v1/reports", &reply); !s.ok()) return s;
  const v1::CaseView& c = reply.case_();
  out << absl::StrFormat(
      "reported case %s (%s, category %s, grid %s)%s; its originator is %s. The daemon opens it "
      "in a moment: cityops cases show %s\n",
      c.case_id(), SourceName(c.source()), c.category().code(), c.grid().grid_code(),
      reply.duplicate() ? " before, with this request id: nothing appended" : "",
      projections::UnitName(c.originator()), c.case_id());
  return absl::OkStatus();
}

}  // namespace cityops::app
