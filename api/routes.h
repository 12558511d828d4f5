// The routes of the HTTP API: one table that the server registers its handlers from and
// the OpenAPI document is generated from (api/openapi.h), so the two cannot drift apart.
#ifndef CITYOPS_API_ROUTES_H_
#define CITYOPS_API_ROUTES_H_

#include <string>
#include <vector>

#include "cityops/v1/common.pb.h"
#include "google/protobuf/descriptor.h"

namespace cityops::api {

enum class RouteId {
  kHealthz,
  kReadyz,
  kMetrics,
  kOpenApi,
  kWhoAmI,
  kListDevices,
  kGetDevice,
  kMap,
  kListAlerts,
  kListCases,
  kGetCase,
  kCaseCommand,
  kReport,
  kListTickets,
  kStatistics,
  kGetRules,
  kReloadRules,
  kBackup,
  kListEvents,
  kChanges,
  kCaseLineage,
  kCatalogue,
};

struct QueryParam {
  std::string name;
  std::string type;  // "string", "integer", "boolean" or "date-time".
  std::string description;
  std::vector<std::string> values;  // Allowed values, if a closed set.
};

struct Route {
  RouteId id;
  std::string method;  // "GET" or "POST".
  // OpenAPI path template, e.g. "/api/v1/cases/{case_id}/{command}".
  std::string path;
  std::string summary;
  // The least role a token needs; ROLE_UNSPECIFIED: no token needed.
  v1::Role role = v1::ROLE_UNSPECIFIED;
  const google::protobuf::Descriptor* request = nullptr;   // JSON body, if any.
  const google::protobuf::Descriptor* response = nullptr;  // JSON body, if JSON.
  std::string content_type;  // The response's type when it is not JSON.
  std::vector<QueryParam> query;
  // Path parameters with a closed set of values (e.g. the case commands).
  std::vector<QueryParam> path_values;
};

// Every route, in the order the OpenAPI document lists them.
const std::vector<Route>& Routes();

// Case commands by their path segment: "register", "dispatch", ... (urge and escalate
// included).
const std::vector<std::string>& CaseCommandNames();

}  // namespace cityops::api

#endif  // CITYOPS_API_ROUTES_H_
