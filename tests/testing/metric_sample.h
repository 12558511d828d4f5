// One sample of a Prometheus text scrape (/metrics), for tests that read the daemon's
// metrics.
//
//   CHECK(testing::MetricSample(scrape, "cityops_log_disk_full") == 0);
//   testing::MetricSample(scrape, "cityops_cases_open{stage=\"dispatched\"}");
#ifndef CITYOPS_TESTS_TESTING_METRIC_SAMPLE_H_
#define CITYOPS_TESTS_TESTING_METRIC_SAMPLE_H_

#include <string>

namespace cityops::testing {

// The value of the sample `series` (name and labels, as written) in the text `metrics`;
// -1 when it has no such sample.
inline double MetricSample(const std::string& metrics, const std::string& series) {
  const std::string prefix = series + " ";
  for (size_t at = metrics.find(prefix); at != std::string::npos;
       at = metrics.find(prefix, at + 1)) {
    if (at == 0 || metrics[at - 1] == '\n') return std::stod(metrics.substr(at + prefix.size()));
  }
  return -1;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_METRIC_SAMPLE_H_
