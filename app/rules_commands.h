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
  std::string file;  // Empty: the built-in default rule set.
};

// Loads and checks a rule set without running anything; prints what it holds.
absl::Status RulesCheckCommand(const RulesCheckOptions& options, std::ostream& out);

struct RulesActivateOptions {
  std::string data_dir;
  std::string file;  // Empty: the built-in default rule set.
};

// Appends a `RulesetActivated` for the rule set to the log at `data_dir` (created if
// missing), unless the rule set active in the log is already exactly this one.
absl::Status RulesActivateCommand(const RulesActivateOptions& options, std::ostream& out);

struct ReplayOptions {
  std::string data_dir;
  bool rebuild_views = false;  // Rebuild the read models from sequence 0.
};

// Runs the rules stage and then the projections over the log at `data_dir` to its end
// (the log is treated as final: time moves only with its events), and prints what they
// derived and the big screen's statistics.
absl::Status ReplayCommand(const ReplayOptions& options, std::ostream& out);

}  // namespace cityops::app

#endif  // CITYOPS_APP_RULES_COMMANDS_H_
