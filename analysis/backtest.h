// Backtesting a rule set: what would these rules have done over what the city recorded?
//
// The recorded inputs of a log are replayed into a scratch log with the given rule set in
// place of the recorded activations (in place of the first, later ones left out; before
// everything when there is none: analysis/replay.h), and what that derives is set
// against what the recorded log derived:
//   * alerts by their id (rule + device + raising reading, deterministic): added (only the
//     backtest raised it), removed (only the recorded run did), changed (both, but with
//     another value, threshold, severity or message); counted by rule and district;
//   * cases opened by the rules, by case id: added, removed, changed; by category and
//     district;
//   * the first alert of each device and rule: earlier, later or at the same time;
//   * tickets issued by the rules, per department.
// Only events whose time is within [from, to] are reported; the rules run from the log's
// start to `to`, so that their state at `from` is what it was.
//
// Deterministic: the same log and rule set give the same report, byte for byte. The rule
// set that was active throughout gives no difference.
#ifndef CITYOPS_ANALYSIS_BACKTEST_H_
#define CITYOPS_ANALYSIS_BACKTEST_H_

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "analysis/progress.h"
#include "analysis/replay.h"
#include "projections/rules/compile.h"

namespace cityops::analysis {

struct BacktestOptions {
  std::string data_dir;  // The recorded log (a copy; opened with its lock).
  rules::LoadedRuleSet rule_set;
  absl::Time from = absl::InfinitePast();
  absl::Time to = absl::InfiniteFuture();
  std::string keep;      // Keep the backtest's log here (a new directory); empty: removed.
  size_t examples = 10;  // Listed per kind of difference.
  std::ostream* progress = nullptr;
  ProgressOptions::Style progress_style = ProgressOptions::Style::kAuto;
};

// Recorded vs backtest counts of one group (a rule, a district, a category...).
struct BacktestCount {
  uint64_t recorded = 0;
  uint64_t backtest = 0;
  uint64_t added = 0;
  uint64_t removed = 0;
  uint64_t changed = 0;
  bool operator==(const BacktestCount&) const = default;
};

// One alert or case as the report names it.
struct BacktestItem {
  std::string id;
  std::string rule_id;
  std::string device_id;
  std::string district;
  std::string category;  // Cases.
  absl::Time time;
  std::string detail;  // "value 21.5 > 20 (severity MAJOR)", "category 0103, water-authority"
  bool operator==(const BacktestItem&) const = default;
};

struct BacktestReport {
  std::string rule_set_name;
  std::string rule_set_sha256;
  absl::Time from;
  absl::Time to;
  ReplayResult replay;

  BacktestCount alerts;
  std::map<std::string, BacktestCount> alerts_by_rule;
  std::map<std::string, BacktestCount> alerts_by_district;
  BacktestCount cases;
  std::map<std::string, BacktestCount> cases_by_category;
  std::map<std::string, BacktestCount> cases_by_district;
  // Tickets the rules issued, per department: recorded and backtest.
  std::map<std::string, BacktestCount> tickets_by_department;

  // The first alert of each (device, rule) in the period, in both runs.
  struct FirstAlerts {
    uint64_t both = 0;
    uint64_t earlier = 0;  // The backtest alerted earlier.
    uint64_t later = 0;
    uint64_t same = 0;
    uint64_t only_recorded = 0;
    uint64_t only_backtest = 0;
    absl::Duration median_shift;  // Backtest minus recorded, over `both`.
    absl::Duration max_earlier;   // The largest lead the backtest gained.
  } first_alerts;

  // Up to `examples` of each, in time order.
  std::vector<BacktestItem> added_alerts, removed_alerts, changed_alerts;
  std::vector<BacktestItem> added_cases, removed_cases, changed_cases;

  bool NoDifference() const {
    return alerts.added + alerts.removed + alerts.changed + cases.added + cases.removed +
               cases.changed ==
           0;
  }
};

absl::StatusOr<BacktestReport> Backtest(const BacktestOptions& options);

// The report as tables for people.
void PrintBacktest(const BacktestReport& report, std::ostream& out);
// The same figures as one JSON object (stable keys, documented in docs/analysis.md).
std::string BacktestJson(const BacktestReport& report);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_BACKTEST_H_
