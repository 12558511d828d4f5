// Prometheus text exposition format (version 0.0.4), written by hand: a handful of
// families per scrape does not justify a client library, and Debian has none for C++.
//
//   MetricsText m;
//   m.Add("cityops_ingest_records_total", "counter", "Records consumed, good or bad.")
//       .Sample({}, stats.records);
//   m.Add("cityops_consumer_lag", "gauge", "...").Sample({{"topic", t}, {"partition", "0"}}, 12);
//   std::string body = m.Render();
//
// Families render in the order they were first named; samples in the order given. Label
// values are escaped as the format requires. Not thread-safe: build one per scrape.
#ifndef CITYOPS_API_METRICS_TEXT_H_
#define CITYOPS_API_METRICS_TEXT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernel/latency_histogram.h"

namespace cityops::api {

using Labels = std::vector<std::pair<std::string, std::string>>;

class MetricsText {
 public:
  class Family {
   public:
    Family& Sample(const Labels& labels, double value);
    // A histogram of seconds from a LatencyHistogram: _bucket{le=...}, _sum and _count.
    Family& Histogram(const Labels& labels, const kernel::LatencyHistogram::Snapshot& s);

   private:
    friend class MetricsText;
    std::string name_;
    std::string type_;
    std::string help_;
    std::string samples_;
  };

  // The family `name`, created on first use. `type` is "counter", "gauge" or "histogram".
  Family& Add(std::string_view name, std::string_view type, std::string_view help);

  std::string Render() const;

  // The content type scrapers expect.
  static constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

 private:
  std::vector<std::unique_ptr<Family>> families_;
};

}  // namespace cityops::api

#endif  // CITYOPS_API_METRICS_TEXT_H_
