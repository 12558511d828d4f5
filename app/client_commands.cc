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
#include "analysis/case_text.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/proto_time.h"
#include "projections/workflow.h"

namespace cityops::app {

namespace {

namespace pb = google::protobuf;

// The case's text (tables, timeline) is shared with `cityops state --at --case`.
using analysis::LevelName;
using analysis::Light;
using analysis::PrintCase;
using analysis::PrintTable;
using analysis::SourceName;
using analysis::StageName;

constexpr int kConnectTimeoutSeconds = 5;
constexpr int kReadTimeoutSeconds = 30;

// "45s", "12m", "3h05m", "2d04h": coarse, for tables.
std::string Age(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
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
    const bool https = absl::ConsumePrefix(&rest, "https://");
    if (!https && !absl::ConsumePrefix(&rest, "http://")) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--server '%s' must be http://HOST[:PORT] or https://HOST[:PORT]", options_.server));
    }
    if (rest.empty() || absl::StrContains(rest, "/")) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--server '%s' must be http(s)://HOST[:PORT], without a path", options_.server));
    }
    if (!options_.ca.empty() && !https) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--ca %s checks the certificate of an https:// server, but --server is %s; use "
          "https://, or leave --ca out",
          options_.ca, options_.server));
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
    if (https) {
      // The daemon's certificate is checked, always: against --ca, or the system's
      // authorities; and it must name the host of --server.
      client.enable_server_certificate_verification(true);
      if (!options_.ca.empty()) client.set_ca_cert_path(options_.ca);
    }
    client.set_connection_timeout(kConnectTimeoutSeconds, 0);
    client.set_read_timeout(kReadTimeoutSeconds, 0);
    client.set_write_timeout(kReadTimeoutSeconds, 0);
    const httplib::Headers headers = {{"Authorization", "Bearer " + options_.token},
                                      {"Accept", "application/json"}};
    httplib::Result r = absl::string_view(method) == "GET"
                            ? client.Get(path, params, headers)
                            : client.Post(path, headers, body, "application/json");
    if (!r) return absl::UnavailableError(TransportProblem(server, https, r.error()));
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

  // Why the request got no answer, and what to try.
  std::string TransportProblem(absl::string_view server, bool https, httplib::Error error) const {
    const std::string what = httplib::to_string(error);
    switch (error) {
      case httplib::Error::SSLServerVerification:
        return absl::StrFormat(
            "the certificate of %s did not check (%s): it is not signed by %s, or does not "
            "name the host of --server. Pass --ca FILE (or set CITYOPS_CA) with the PEM "
            "certificate of the authority that signed it (for a self-signed certificate, the "
            "certificate itself), and give --server the name or address the certificate names",
            server, what,
            options_.ca.empty() ? "an authority this system trusts"
                                : absl::StrCat("the authority in --ca ", options_.ca));
      case httplib::Error::SSLLoadingCerts:
        return absl::StrFormat(
            "cannot load the certificate authority in --ca %s (%s): give a "
            "readable PEM file",
            options_.ca, what);
      case httplib::Error::SSLConnection:
        return absl::StrFormat(
            "the TLS handshake with %s failed (%s); does the daemon serve HTTPS there (its "
            "\"http:\" line says https://)? If it serves plain HTTP, use http://",
            server, what);
      default:
        break;
    }
    return absl::StrFormat(
        "cannot reach the cityops API at %s (%s); is `cityops serve` running there? Pass "
        "--server or set CITYOPS_SERVER%s",
        server, what,
        https ? ""
              : ". If the daemon serves HTTPS (its \"http:\" line says https://), use https:// "
                "and --ca");
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
