// The work behind `cityops publish`, `cityops devices import` and `cityops ingest`: thin
// wrappers over ingest/, in the style of log_commands.h (options struct in, report to
// `out`, a Status fit to show the user).
#ifndef CITYOPS_APP_INGEST_COMMANDS_H_
#define CITYOPS_APP_INGEST_COMMANDS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace cityops::app {

struct PublishCommandOptions {
  std::string bootstrap;
  std::string topic = "cityops.readings";
  std::string encoding = "protobuf";  // "protobuf" or "json".
  std::string input = "-";            // A file of JSON lines, or "-" for standard input.
};

// Validates each JSON line as ingest would and publishes the valid ones keyed by device
// id. Bad lines go to `err` as "line N: CODE: message"; FAILED_PRECONDITION (exit 1)
// if there were any, after the valid lines were published.
absl::Status PublishCommand(const PublishCommandOptions& options, std::ostream& out,
                            std::ostream& err);

struct ImportCommandOptions {
  std::string data_dir;
  std::string file;  // .csv or JSON lines.
  int partitions = 4;
};

// Imports a device registry file into the log; bad lines go to `err` by number and make
// the command fail after the good ones were imported.
absl::Status ImportDevicesCommand(const ImportCommandOptions& options, std::ostream& out,
                                  std::ostream& err);

struct IngestCommandOptions {
  std::string data_dir;
  std::string bootstrap;  // Empty with `embedded`.
  bool embedded = false;  // Host the development cluster in-process.
  int partitions = 4;     // Of the embedded cluster's topics.
  std::string group_id = "cityops-ingest";
  double seconds = 0;  // Stop after this long; 0 = until SIGINT or SIGTERM.
  // With `embedded`: also play this `cityops sim` scenario into the cluster (180
  // simulated minutes at 120x), and stop once all of it is ingested.
  std::string simulate;
  uint32_t sim_devices = 10'000;
  double sim_minutes = 180;
};

// Runs ingest into the log until interrupted, printing counters every few seconds.
absl::Status IngestCommand(const IngestCommandOptions& options, std::ostream& out);

}  // namespace cityops::app

#endif  // CITYOPS_APP_INGEST_COMMANDS_H_
