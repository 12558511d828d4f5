// Activating a rule set: the daemon at start and on SIGHUP, `cityops rules activate`, and
// the API's reload all go through here, so that "already active" means the same
// everywhere.
#ifndef CITYOPS_DAEMON_RULE_ACTIVATION_H_
#define CITYOPS_DAEMON_RULE_ACTIVATION_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "kernel/event_log.h"
#include "projections/rules/compile.h"

namespace cityops::daemon {

// The rule set file named by configuration, or the built-in default when `file` is empty,
// checked and compiled against the catalogue file named by configuration (the built-in
// one when `catalogue_file` is empty), which it carries: every device kind, metric and
// fault code a rule tests must be in it (catalogue::RuleCheck::kDevices). Errors name the
// file and line.
absl::StatusOr<rules::LoadedRuleSet> LoadConfiguredRuleSet(const std::string& file,
                                                           const std::string& catalogue_file);

// The RulesetActivated most recently appended to the log, if any.
absl::StatusOr<std::optional<v1::RulesetActivated>> ActiveRuleSetInLog(const kernel::EventLog& log);

struct Activation {
  bool activated = false;          // False: the same rule set (name and digest) was active already.
  kernel::EventPosition position;  // Of the RulesetActivated, when activated.
};

// Appends a RulesetActivated for `loaded` and its catalogue (stamped `now`, on partition
// 0) unless the same rule set with the same catalogue is the active one.
absl::StatusOr<Activation> ActivateRuleSet(kernel::EventLog& log,
                                           const rules::LoadedRuleSet& loaded, absl::Time now);

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_RULE_ACTIVATION_H_
