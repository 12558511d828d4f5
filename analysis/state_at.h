// `cityops state --at TIME`: the whole city as it was at a moment of a log, and a case's
// history up to that moment.
//
// "As of TIME" (docs/analysis.md, "state --at"): the read models folded, partition by
// partition in log order, over every event whose event time is at most TIME (later
// events are skipped), with each partition's time then set to TIME. So:
//   * lights are the CaseOverdue events dated at most TIME (the rules stage dates a light
//     at its due time; a log whose rules stage has run past TIME holds every light due
//     by then);
//   * a device is offline when its newest reading by TIME is older than three reporting
//     intervals at TIME;
//   * the big-screen counters are the `v1::Statistics` those read models give, exactly
//     what the dashboard showed at TIME if its read models had folded up to TIME.
//
// Works on a copy of a log (a `cityops log backup`, a stopped daemon's directory): the
// log is opened with its lock, and the scratch read models go to a temporary directory
// that is removed afterwards (or to `keep`). Memory: the read models' (about 1 KB per
// device), never the log's length; the log is read by sequential scan.
#ifndef CITYOPS_ANALYSIS_STATE_AT_H_
#define CITYOPS_ANALYSIS_STATE_AT_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/api.pb.h"
#include "cityops/v1/views.pb.h"
#include "kernel/event_log.h"
#include "projections/views/views.h"

namespace cityops::analysis {

// What the read models say about the city at one moment, within a scope.
struct CityState {
  absl::Time at;
  std::string scope = {};  // Grid-code prefix (district, street or grid); empty: the city.
  // The whole city's big-screen counters (by_district and by_street break them down).
  v1::Statistics statistics;
  // Open cases in scope: opened by the rules stage, not closed, not linked into another
  // case; newest reported first. Their `overdue` is the light.
  std::vector<v1::CaseView> open_cases;
  // Active alerts in scope (by the alert's grid), by alert id.
  std::vector<v1::AlertView> active_alerts;
  struct Devices {
    v1::DeviceKind kind = v1::DEVICE_KIND_UNSPECIFIED;  // Unspecified: a catalogue-only kind.
    std::string kind_id;  // The catalogue's id ("gas_detector"; "flood_gauge" when typed).
    uint64_t online = 0;
    uint64_t offline = 0;
  };
  // Devices in scope (by their registered grid; unregistered ones only without a scope),
  // by kind: the typed kinds in enum order, then the catalogue's others by id; kinds with
  // no device left out.
  std::vector<Devices> devices;
};

// Reads a CityState from read models: live ones (the test's capture) or ones folded as
// of `at` (FoldAsOf). Errors are the read models' own.
absl::StatusOr<CityState> ReadCityState(const views::Projections& views, absl::Time at,
                                        std::string_view scope);

// The span of a log's event times: from the earliest first event that moves time (a
// reading, clock tick or report) of any partition, found by a scan of envelopes that stops
// there, to the latest such event among the last 256 of each partition (a partition's
// first or last event when none does).
struct LogRange {
  absl::Time first = absl::InfiniteFuture();  // Earliest first event.
  absl::Time last = absl::InfinitePast();     // Latest last event.
  uint64_t events = 0;
};
absl::StatusOr<LogRange> RangeOf(const kernel::EventLog& log);

struct FoldOptions {
  std::ostream* progress = nullptr;  // Progress line (analysis::Progress); null: none.
  size_t commit_every = 50'000;
};

// Folds read models of `log` as of `at` into `dir` (created; must be empty or missing)
// and returns them, caught up. CANCELLED when Ctrl-C (a StopScope) stopped it.
absl::StatusOr<std::unique_ptr<views::Projections>> FoldAsOf(kernel::EventLog* log, absl::Time at,
                                                             const std::string& dir,
                                                             const FoldOptions& options = {});

// A case's detail as of `at`, from its own stream (`case/<id>`): the events dated at
// most `at`, folded by projections::ApplyCaseEvent; time in stage and handling time up
// to `at` for a case still open then. NOT_FOUND for a case the log does not hold or
// that was reported after `at` (the message says which, and when it was reported).
absl::StatusOr<v1::CaseDetail> CaseAsOf(const kernel::EventLog& log, std::string_view case_id,
                                        absl::Time at);

struct StateAtOptions {
  std::string data_dir = {};  // The log (a copy of one; it is opened with its lock).
  std::string at = {};        // RFC 3339.
  std::string scope = {};     // Grid-code prefix.
  std::string case_id = {};   // Set: print this case's history up to `at` instead.
  bool json = false;
  std::string keep = {};  // Keep the scratch read models here (must not exist, or be empty).
  size_t rows = 30;       // Open cases and alerts listed in the table (all with --json).
};

// The command: refuses a time before the log's first event (naming the log's range),
// warns (on `err`) for a time after its last, folds, and prints the state (or the case)
// to `out` as tables, or as one JSON object with `json`. Progress goes to `err`.
absl::Status StateAtCommand(const StateAtOptions& options, std::ostream& out, std::ostream& err);

// The JSON object `state --at --json` prints for `state`.
std::string CityStateJson(const CityState& state);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_STATE_AT_H_
