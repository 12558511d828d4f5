// libFuzzer target for the query strings of the HTTP API (api/requests.h), without a
// server. Input: a request target, "/api/v1/cases?stage=dispatched&page_size=10"; the path
// picks the route (a GET route of api/routes.h), the query string is parsed as httplib
// parses it and then by the route's parser. Every query must be accepted or refused with
// INVALID_ARGUMENT and a message; what is accepted must be in range: page sizes and
// limits 1 to 1000, times finite, a statistics period that ends after it starts.
//
// Build and run: fuzz/run_fuzz.sh --target api_query SECONDS.
#include <httplib.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "api/requests.h"
#include "api/routes.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"

namespace {

namespace api = cityops::api;
using cityops::fuzz::Require;

// 2026-09-21T14:13:20Z, "now" of the statistics' default period.
const absl::Time kNow = absl::FromUnixSeconds(1'790'000'000);

void RequirePaging(const api::Paging& p) {
  Require(p.page_size >= 1 && p.page_size <= api::kMaxPageSize, "a page size out of range");
}

// A time that was given is finite.
void RequireTime(const api::Query& q, const std::string& name, absl::Time t) {
  if (q.String(name).empty()) return;
  Require(t != absl::InfinitePast() && t != absl::InfiniteFuture(), "accepted an infinite time for",
          name);
}

template <typename T>
bool Refused(const absl::StatusOr<T>& r) {
  if (r.ok()) return false;
  cityops::fuzz::RequireRefusal(r.status(), absl::StatusCode::kInvalidArgument);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string target(reinterpret_cast<const char*>(data), size);
  const size_t question = target.find('?');
  const std::string path = target.substr(0, question);
  const api::Route* route = nullptr;
  for (const api::Route& r : api::Routes()) {
    if (r.method == "GET" && r.path == path) route = &r;
  }
  if (route == nullptr) return 0;
  httplib::Request req;
  req.method = "GET";
  req.target = target;
  req.path = path;
  if (question != std::string::npos) {
    httplib::detail::parse_query_text(target.substr(question + 1), req.params);
  }
  const api::Query q(req, *route);
  if (absl::Status s = q.CheckNames(); !s.ok()) {
    cityops::fuzz::RequireRefusal(s, absl::StatusCode::kInvalidArgument);
    return 0;
  }
  switch (route->id) {
    case api::RouteId::kListDevices: {
      absl::StatusOr<api::DeviceListQuery> r = api::ParseDeviceListQuery(q);
      if (Refused(r)) return 0;
      RequirePaging(r->paging);
      Require(std::all_of(r->filter.kind_id.begin(), r->filter.kind_id.end(),
                          [](char c) {
                            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                          }),
              "a device kind id that is not snake_case");
      break;
    }
    case api::RouteId::kListAlerts: {
      absl::StatusOr<api::AlertListQuery> r = api::ParseAlertListQuery(q);
      if (Refused(r)) return 0;
      RequirePaging(r->paging);
      break;
    }
    case api::RouteId::kListCases: {
      absl::StatusOr<api::CaseListQuery> r = api::ParseCaseListQuery(q);
      if (Refused(r)) return 0;
      RequirePaging(r->paging);
      Require(cityops::v1::CaseStage_IsValid(r->filter.stage), "an unknown stage");
      Require(cityops::v1::CaseSource_IsValid(r->filter.source), "an unknown source");
      Require(cityops::v1::OverdueLevel_IsValid(r->filter.overdue), "an unknown overdue level");
      RequireTime(q, "reported_after", r->filter.reported_from);
      RequireTime(q, "reported_before", r->filter.reported_to);
      break;
    }
    case api::RouteId::kListTickets: {
      absl::StatusOr<api::Paging> r = api::ParsePaging(q);
      if (Refused(r)) return 0;
      RequirePaging(*r);
      break;
    }
    case api::RouteId::kListEvents: {
      absl::StatusOr<api::EventsQuery> r = api::ParseEventsQuery(q);
      if (Refused(r)) return 0;
      Require(r->limit >= 1 && r->limit <= api::kMaxPageSize, "a limit out of range");
      Require(r->stream.empty() || r->from >= 1, "a stream version 0");
      break;
    }
    case api::RouteId::kStatistics: {
      absl::StatusOr<std::optional<cityops::projections::EvaluationRequest>> r =
          api::ParseEvaluationQuery(q, kNow);
      if (Refused(r)) return 0;
      if (!r->has_value()) break;
      Require((*r)->to > (*r)->from, "a period that does not end after it starts");
      RequireTime(q, "from", (*r)->from);
      RequireTime(q, "to", (*r)->to);
      break;
    }
    default:
      break;
  }
  return 0;
}
