// The work behind `cityops serve` and `cityops demo`.
#ifndef CITYOPS_APP_SERVE_COMMANDS_H_
#define CITYOPS_APP_SERVE_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "daemon/demo.h"

namespace cityops::app {

struct ServeOptions {
  std::string config;     // YAML file; empty: every default (embedded Kafka, no tokens).
  bool validate = false;  // Check the configuration and the rule set, print them, exit.
};

// Runs the daemon until SIGTERM or SIGINT; SIGHUP re-reads the configuration's tokens
// and reloads the rule set. Refuses a configuration file holding tokens that its group or
// others may read or write (daemon/config.h), with --validate too.
absl::Status ServeCommand(const ServeOptions& options, std::ostream& out);

struct DemoCommandOptions {
  daemon::DemoOptions demo;
  std::string log_level = "info";
};

// Runs the demo until SIGTERM or SIGINT.
absl::Status DemoCommand(const DemoCommandOptions& options, std::ostream& out);

}  // namespace cityops::app

#endif  // CITYOPS_APP_SERVE_COMMANDS_H_
