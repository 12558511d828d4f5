// The OpenAPI 3.0 document of the HTTP API, generated from the route table
// (api/routes.h) and the cityops.v1 descriptors, so it cannot drift from the server.
// Served at /api/v1/openapi.yaml and committed as api/openapi.yaml (a test checks that the
// committed copy is current; `cityops openapi > api/openapi.yaml` refreshes it).
#ifndef CITYOPS_API_OPENAPI_H_
#define CITYOPS_API_OPENAPI_H_

#include <string>

namespace cityops::api {

const std::string& OpenApiYaml();

}  // namespace cityops::api

#endif  // CITYOPS_API_OPENAPI_H_
