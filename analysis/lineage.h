// `cityops lineage` and GET /api/v1/cases/{case_id}/lineage: why a ticket was issued.
//
// The chain ticket -> case -> alerts -> the rule and the rule-set version in force when
// each alert was raised -> the readings that raised it -> the Kafka record (topic,
// partition, offset) each reading was ingested from, with its values. It starts at a
// ticket, a case or an alert (an alert gives its case, and through it the tickets).
//
// Everything is found through the log's stream index (`ticket/<id>`, `case/<id>`,
// `alert/<id>`, `ruleset/<name>`) and positions (`EventLog::Read`); the log is never
// scanned whole. The one partial scan: which rule set was in force needs the rules
// stage's time at each `RulesetActivated`, the running maximum of the event times of the
// readings, ticks and reports before it in its partition (projections/rules/rules_stage.h);
// that reads the partition up to the activation, once per activation and process (rule
// sets are activated rarely, mostly at a log's start; the API's later requests reuse it).
//
// Thread safety: TraceLineage only reads the log; it may run beside appends (the API
// calls it on the daemon's log).
#ifndef CITYOPS_ANALYSIS_LINEAGE_H_
#define CITYOPS_ANALYSIS_LINEAGE_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cityops/v1/analysis.pb.h"
#include "kernel/event_log.h"

namespace cityops::analysis {

// Where to start: exactly one of the three.
struct LineageQuery {
  std::string ticket_id;
  std::string case_id;
  std::string alert_id;
};

// The chain from `query`. NOT_FOUND when the ticket, case or alert is not in the log
// (the message names it and the log, and says where ids can be found); INVALID_ARGUMENT
// unless exactly one start is given. `log_name` names the log in messages.
absl::StatusOr<v1::Lineage> TraceLineage(const kernel::EventLog& log, const LineageQuery& query,
                                         const std::string& log_name);

struct LineageOptions {
  std::string data_dir;
  LineageQuery query;
  bool json = false;  // The protobuf JSON mapping of `v1::Lineage` instead of a report.
};

// Opens the log at `data_dir` (with its lock; see analysis/open_log.h), traces the chain
// and prints it to `out`: for people an indented report, with --json one JSON object.
absl::Status LineageCommand(const LineageOptions& options, std::ostream& out);

// The report for people.
void PrintLineage(const v1::Lineage& lineage, std::ostream& out);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_LINEAGE_H_
