// The work behind `cityops rules ...` and `cityops replay`: checking and activating rule
// sets, and running the rules stage and the projections over a log.
//
// Each command takes its options as a plain struct (filled in by app/cli.cc), writes its
// report to `out` and returns an absl::Status whose message is fit to show the user.
#ifndef CITYOPS_APP_RULES_COMMANDS_H_
#define CITYOPS_APP_RULES_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace cityops::app {

struct RulesCheckOptions {
  std::string file;       // Empty: the built-in default rule set.
  std::string catalogue;  // The catalogue it must fit; empty: the built-in one.
};

// Loads and checks a rule set without running anything; prints what it holds.
absl::Status RulesCheckCommand(const RulesCheckOptions& options, std::ostream& out);

struct RulesActivateOptions {
  std::string data_dir;
  std::string file;       // Empty: the built-in default rule set.
  std::string catalogue;  // The catalogue it must fit; empty: the built-in one.
};

// Appends a `RulesetActivated` for the rule set to the log at `data_dir` (created if
// missing), unless the rule set active in the log is already exactly this one.
absl::Status RulesActivateCommand(const RulesActivateOptions& options, std::ostream& out);

struct ReplayOptions {
  // Continue the stages over this log (`--data-dir`), or...
  std::string data_dir;
  bool rebuild_views = false;  // Rebuild the read models from sequence 0.
  // ...replay the recorded inputs of `from` into a fresh log at `into` (analysis/replay.h).
  std::string from;
  std::string into;
  std::string to;  // RFC 3339 time or (one-partition logs) a sequence; empty: everything.
  bool compare = false;
};

// With `data_dir`: runs the rules stage and then the projections over the log to its end
// (the log is treated as final: time moves only with its events), and prints what they
// derived and the big screen's statistics. With `from`: replays the recorded inputs into
// a fresh log and, with `compare`, compares what was derived (FAILED_PRECONDITION when it
// differs). Progress goes to `err`.
absl::Status ReplayCommand(const ReplayOptions& options, std::ostream& out, std::ostream& err);

struct BacktestOptions {
  std::string data_dir;
  std::string rules;      // The rule set file to try.
  std::string catalogue;  // The catalogue to compile it against; empty: the built-in one.
  std::string from;       // RFC 3339; empty: the log's start.
  std::string to;         // RFC 3339; empty: the log's end.
  std::string keep;       // Keep the backtest's log here.
  size_t examples = 10;
  bool json = false;
};

// Runs the rules stage with another rule set over the log's recorded inputs and reports
// against what happened (analysis/backtest.h). Progress goes to `err`.
absl::Status BacktestCommand(const BacktestOptions& options, std::ostream& out, std::ostream& err);

}  // namespace cityops::app

#endif  // CITYOPS_APP_RULES_COMMANDS_H_
