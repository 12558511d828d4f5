// The daemon's configuration (`cityops serve --config FILE`): YAML onto
// `cityops.v1.ServeConfig` (proto/cityops/v1/config.proto, where every setting, its
// default and its bounds are documented), parsed strictly and checked once, here, at the
// edge. Everything inward gets a complete, checked `ServeConfig` with every default
// filled in.
//
// Errors read "<file>:<line>:<column>: <what is wrong>; <what to do>".
#ifndef CITYOPS_DAEMON_CONFIG_H_
#define CITYOPS_DAEMON_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/config.pb.h"

namespace cityops::daemon {

// Every default of config.proto, filled in.
v1::ServeConfig DefaultServeConfig();

// Parses `yaml` (`file` names it in errors), checks it and fills in the defaults.
// INVALID_ARGUMENT with file, line and column for anything wrong.
absl::StatusOr<v1::ServeConfig> ParseServeConfig(std::string_view yaml, std::string_view file);

// Reads and parses `path`. NOT_FOUND names the path when it cannot be read.
absl::StatusOr<v1::ServeConfig> LoadServeConfig(const std::string& path);

// The configuration as YAML, token secrets replaced by "<hidden>": what
// `cityops serve --validate` prints. Parsing the output (with real tokens put back)
// gives the same configuration.
std::string DescribeServeConfig(const v1::ServeConfig& config);

// FAILED_PRECONDITION, naming the file, its mode and the fix (`chmod 600 FILE`), when
// `config` (read from `path`) holds API tokens and the file may be read or written by its
// group or by others (mode & 077). `cityops serve` refuses to start on it, `--validate`
// reports it, and a SIGHUP keeps the tokens it has. NOT_FOUND if `path` is gone.
absl::Status CheckTokenFilePermissions(const std::string& path, const v1::ServeConfig& config);

// The settings (dotted names, e.g. "http.port", "kafka.properties") that differ between
// the configuration a daemon runs with and one read again, tokens left out: what a SIGHUP
// cannot apply, which needs a restart. Names only, never values (they may be secrets).
std::vector<std::string> SettingsNeedingRestart(const v1::ServeConfig& running,
                                                const v1::ServeConfig& reread);

// True when no brokers are configured: the daemon hosts the embedded cluster.
inline bool UsesEmbeddedKafka(const v1::ServeConfig& config) {
  return config.kafka().bootstrap_servers().empty();
}

absl::Duration ClockTickInterval(const v1::ServeConfig& config);
// ingest.clock_tick_delay, after defaults.
absl::Duration ClockTickDelay(const v1::ServeConfig& config);

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_CONFIG_H_
