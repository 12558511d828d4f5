// `cityops export`: events of a time range, partition, stream prefix and/or payload type,
// as JSON lines or CSV, streamed from a sequential scan of the log.
//
// Output order: partition by partition (ascending), each in sequence order. Memory does
// not grow with the log: one event is decoded at a time, and events that do not match
// are skipped from their envelope without being parsed.
//
// JSON lines: one `cityops.v1.Event` per line by the protobuf JSON mapping, with the
// options of `cityops log dump` (EventJsonOptions): parsing a line back gives exactly the
// stored event, `partition` and `sequence` included.
//
// CSV (RFC 4180: fields with a comma, quote, CR or LF are quoted, quotes doubled; lines
// end in CRLF): a header, then one row per event. The columns come from the schema, never
// from the data, so the same flags give the same header on any log (CsvColumns; the
// layout is in docs/analysis.md).
#ifndef CITYOPS_ANALYSIS_EXPORT_H_
#define CITYOPS_ANALYSIS_EXPORT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "analysis/progress.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"

namespace cityops::analysis {

enum class ExportFormat { kJsonLines, kCsv };

struct ExportOptions {
  std::string data_dir;
  std::string from;                   // RFC 3339, inclusive; empty: from the beginning. Event time.
  std::string to;                     // RFC 3339, exclusive; empty: to the end.
  std::optional<uint32_t> partition;  // Unset: every partition.
  std::string stream_prefix;          // Only streams whose id starts with it.
  // Payload types by their field names in events.proto ("reading", "case_opened"); empty:
  // every type.
  std::vector<std::string> types;
  ExportFormat format = ExportFormat::kJsonLines;
  std::string output = "-";  // A file (written whole or not at all), or "-": `out`.
  ProgressOptions::Style progress_style = ProgressOptions::Style::kAuto;
  const kernel::Clock* clock = kernel::Clock::Real();  // For the progress and the rate.
};

// What an export wrote.
struct ExportResult {
  uint64_t exported = 0;  // Events written.
  uint64_t scanned = 0;   // Events looked at.
  std::string summary;    // "export: N events in T (R/s)", as printed at the end.
};

// Opens the log at `options.data_dir` with its lock and exports from it: data to `out`
// (when the output is "-") or to the output file; progress and the closing count and
// rate to `err`. Errors, with what to do:
//   INVALID_ARGUMENT    a malformed time, --from not before --to, an unknown type (the
//                       message lists the valid ones), a partition the log does not have,
//                       or a time window that lies outside the log's events (the message
//                       gives the log's event-time range);
//   NOT_FOUND           no log at data_dir;
//   FAILED_PRECONDITION the log is held by another process or handle (a running daemon:
//                       export a `cityops log backup` of it), or the output is not
//                       writable;
//   CANCELLED           stopped by Ctrl-C (StopScope); no output file is left.
absl::StatusOr<ExportResult> ExportEvents(const ExportOptions& options, std::ostream& out,
                                          std::ostream& err);

// The same over a log already open (options.data_dir only names it in messages).
absl::StatusOr<ExportResult> ExportEvents(const kernel::EventLog& log, const ExportOptions& options,
                                          std::ostream& out, std::ostream& err);

// The CSV header for `types` (empty: every type): the envelope's columns, `type`, then
// the flattened payload fields of each selected type, in events.proto order.
// INVALID_ARGUMENT for an unknown type.
absl::StatusOr<std::vector<std::string>> CsvColumns(const std::vector<std::string>& types);

// Every payload type's name, in events.proto order.
std::vector<std::string> EventTypeNames();

// The JSON printing options of `cityops log dump` and `cityops export`: every scalar
// printed (partition 0, offset 0 are not left out), field names in lowerCamelCase.
google::protobuf::util::JsonPrintOptions EventJsonOptions();

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_EXPORT_H_
