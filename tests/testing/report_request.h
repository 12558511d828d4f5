// The body of POST /api/v1/reports for the API's tests: a 12345 hotline report.
#ifndef CITYOPS_TESTS_TESTING_REPORT_REQUEST_H_
#define CITYOPS_TESTS_TESTING_REPORT_REQUEST_H_

#include <google/protobuf/util/json_util.h>

#include <stdexcept>
#include <string>

#include "cityops/v1/api.pb.h"

namespace cityops::testing {

// A hotline report of case `case_id` in `grid`, of `category`, as JSON; `request_id` is
// the client's idempotency key ("" for none).
inline std::string ReportJson(const std::string& case_id, const std::string& grid,
                              const std::string& category = "E0111",
                              const std::string& request_id = "",
                              const std::string& description = "reported by a test") {
  v1::ReportRequest r;
  r.set_request_id(request_id);
  r.set_case_id(case_id);
  r.set_source(v1::CASE_SOURCE_HOTLINE_12345);
  r.mutable_grid()->set_grid_code(grid);
  r.mutable_location()->set_latitude_deg(31.2);
  r.mutable_location()->set_longitude_deg(121.44);
  r.mutable_category()->set_code(category);
  r.set_description(description);
  r.set_reporter("caller-0001");
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(r, &out).ok()) {
    throw std::logic_error("a ReportRequest does not print as JSON");
  }
  return out;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_REPORT_REQUEST_H_
