// The work behind `cityops stats`: the evaluation figures of grid management for a period
// and a scope of a log (a copy: `cityops log backup`), as a table for people or JSON for
// programs. The figures come from projections/evaluation.h, the same computation that
// answers GET /api/v1/statistics?from=&to=&by=&scope= on a running daemon; their
// definitions are in docs/analysis.md ("stats").
#ifndef CITYOPS_ANALYSIS_STATS_H_
#define CITYOPS_ANALYSIS_STATS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cityops/v1/evaluation.pb.h"

namespace cityops::analysis {

struct StatsOptions {
  std::string data_dir;
  std::string from;        // RFC 3339, required.
  std::string to;          // RFC 3339, required.
  std::string by;          // "" or district, street, department, unit, category, source.
  std::string scope;       // A district, street, community or grid code; "" = the city.
  std::string department;  // Only cases dispatched to it.
  bool json = false;       // The v1::Evaluation as JSON (protobuf JSON mapping) instead.
};

// Opens the log at `options.data_dir` with its lock (never creating one), computes the
// figures, and writes the report to `out`; progress (cases folded) and the final rate go to
// `progress`. Ctrl-C stops it with CANCELLED and nothing written to `out`. The errors of
// projections::Evaluate, with the flags named, and FAILED_PRECONDITION for a log another
// process holds (the message says how to evaluate a running daemon's log).
absl::Status RunStats(const StatsOptions& options, std::ostream& out, std::ostream& progress);

// The report for people: the totals, the time in each stage, the breakdown (worst first)
// and the 12345 hotline by category over time, times in `zone` (RunStats: the offset --from
// was written with, so "+08:00" gives Beijing time).
void PrintStatsTable(const v1::Evaluation& evaluation, std::ostream& out,
                     absl::TimeZone zone = absl::UTCTimeZone());

// The JSON of `evaluation` as the API writes it (every scalar printed, lowerCamelCase).
std::string StatsJson(const v1::Evaluation& evaluation);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_STATS_H_
