// The work behind `cityops catalogue ...`: checking a catalogue (catalogue/catalogue.h),
// alone or with a rule set against it.
//
// Like the other commands, it takes its options as a plain struct (filled in by
// app/cli.cc), writes its report to `out` and returns an absl::Status whose message is fit
// to show the user.
#ifndef CITYOPS_APP_CATALOGUE_COMMANDS_H_
#define CITYOPS_APP_CATALOGUE_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace cityops::app {

struct CatalogueCheckOptions {
  std::string file;                 // Empty: the built-in catalogue.
  std::string rules;                // A rule set to check against it; empty: none.
  bool with_default_rules = false;  // Check the built-in rule set against it.
};

// Loads and checks a catalogue without running anything; prints what it holds, and
// whether the rule set fits it.
absl::Status CatalogueCheckCommand(const CatalogueCheckOptions& options, std::ostream& out);

}  // namespace cityops::app

#endif  // CITYOPS_APP_CATALOGUE_COMMANDS_H_
