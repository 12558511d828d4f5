// Pieces of the HTTP API that need no daemon: the Prometheus text format and the access
// policy. The API itself is tested against the real daemon in api_test.cc.
#include <catch2/catch.hpp>
#include <string>

#include "api/access.h"
#include "api/metrics_text.h"

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

}  // namespace
}  // namespace cityops
