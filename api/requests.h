// The parsing half of the HTTP API: query strings and JSON bodies into checked values,
// with no server, no log and no read models. HttpServer calls these before it touches
// anything else; the fuzz targets (fuzz/api_query_fuzz.cc, fuzz/api_body_fuzz.cc) call
// them directly.
//
// Every refusal is INVALID_ARGUMENT (NOT_FOUND for an unknown case command) with a message
// that names the parameter or field and says what to send instead.
#ifndef CITYOPS_API_REQUESTS_H_
#define CITYOPS_API_REQUESTS_H_

#include <httplib.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/routes.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/message.h"
#include "projections/evaluation.h"
#include "projections/views/views.h"
#include "projections/workflow.h"

namespace cityops::api {

inline constexpr size_t kDefaultPageSize = 100;
inline constexpr size_t kMaxPageSize = 1000;

// Query parameters of one request to `route`, parsed strictly: an unknown name or a
// malformed value is INVALID_ARGUMENT. Holds references to both.
class Query {
 public:
  Query(const httplib::Request& req, const Route& route) : req_(req), route_(route) {}

  // Checks the names in the URL's query string (httplib also puts the fields of a form
  // body into `params`; those are not query parameters).
  absl::Status CheckNames() const;
  // The value, or "" when absent.
  std::string String(const std::string& name) const;
  // "true"/"1" or "false"/"0"; nullopt when absent.
  absl::StatusOr<std::optional<bool>> Bool(const std::string& name) const;
  // A whole number in [min, max]; `fallback` when absent.
  absl::StatusOr<uint64_t> Number(const std::string& name, uint64_t fallback, uint64_t min,
                                  uint64_t max) const;
  // An RFC 3339 time with a finite value; `fallback` when absent.
  absl::StatusOr<absl::Time> Time(const std::string& name, absl::Time fallback) const;
  // A value of `enum_type` by its short lowercase name ("dispatched" for
  // CASE_STAGE_DISPATCHED), or 0 when absent.
  absl::StatusOr<int> Enum(const std::string& name,
                           const google::protobuf::EnumDescriptor* enum_type,
                           const std::string& prefix) const;
  // page_size, 1 to kMaxPageSize (default kDefaultPageSize).
  absl::StatusOr<size_t> PageSize() const;

 private:
  const httplib::Request& req_;
  const Route& route_;
};

// The parameters of the listings and of the statistics, one parser per route.
struct Paging {
  size_t page_size = kDefaultPageSize;
  std::string page_token;
};
absl::StatusOr<Paging> ParsePaging(const Query& q);

struct DeviceListQuery {
  views::DeviceFilter filter;
  Paging paging;
};
absl::StatusOr<DeviceListQuery> ParseDeviceListQuery(const Query& q);

struct AlertListQuery {
  views::AlertFilter filter;
  Paging paging;
};
absl::StatusOr<AlertListQuery> ParseAlertListQuery(const Query& q);

struct CaseListQuery {
  views::CaseFilter filter;
  Paging paging;
};
absl::StatusOr<CaseListQuery> ParseCaseListQuery(const Query& q);

// GET /api/v1/events: a stream (versions from 1) or a partition (sequences from 0).
struct EventsQuery {
  uint64_t limit = kDefaultPageSize;
  std::string stream;  // Empty: read `partition`.
  uint32_t partition = 0;
  uint64_t from = 0;
};
absl::StatusOr<EventsQuery> ParseEventsQuery(const Query& q);

// GET /api/v1/statistics: the evaluation period and scope (from, to, by, scope,
// department), `to` defaulting to `now`; nullopt when none of them is given.
absl::StatusOr<std::optional<projections::EvaluationRequest>> ParseEvaluationQuery(const Query& q,
                                                                                   absl::Time now);

// A JSON request body onto `out` by the protobuf JSON mapping (unknown fields refused).
// `content_type` is the request's Content-Type header: empty or application/json.
absl::Status ParseJsonBody(std::string_view content_type, std::string_view body,
                           google::protobuf::Message* out);

struct CaseCommandSpec {
  projections::CommandKind kind;
  v1::Role role;
  // Request fields (proto names) the command reads, besides request_id.
  std::set<std::string> fields;
  // Whether the API refuses a user whose unit does not serve the case's grid (403,
  // outside_unit) before the workflow sees the command. False for handle: who handles
  // (a crew of the department the case is dispatched to, serving its grid) is one rule,
  // the workflow's (projections::Decide), for the API and everyone else alike.
  bool unit_must_cover = true;
};

// The case command of a path segment ("dispatch"); NOT_FOUND listing the commands.
absl::StatusOr<const CaseCommandSpec*> FindCaseCommand(std::string_view name);

// The body of case command `name` (found by FindCaseCommand): JSON, and only the fields
// the command reads.
absl::Status ParseCaseCommandBody(std::string_view name, const CaseCommandSpec& spec,
                                  std::string_view content_type, std::string_view body,
                                  v1::CaseCommandRequest* out);

// The body of POST /api/v1/reports: JSON with the 15 digits of a grid code.
absl::Status ParseReportBody(std::string_view content_type, std::string_view body,
                             v1::ReportRequest* out);

}  // namespace cityops::api

#endif  // CITYOPS_API_REQUESTS_H_
