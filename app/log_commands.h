// The work behind `cityops log ...`: generate, inspect, dump, back up and verify an event log.
//
// Each command takes its options as a plain struct (filled in by app/cli.cc), writes its
// report to `out` and returns an absl::Status whose message is fit to show the user as
// is: it names what failed, where, and what to do. Nothing here parses the command line
// or exits the process.
#ifndef CITYOPS_APP_LOG_COMMANDS_H_
#define CITYOPS_APP_LOG_COMMANDS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cityops::app {

// The Kafka topic that `log generate` records as the source of its readings, as if
// ingest had consumed them (the topic contract is in proto/README.md).
inline constexpr char kReadingsTopic[] = "cityops.readings";

struct GenerateOptions {
  std::string data_dir;
  uint64_t readings = 100'000;
  uint32_t partitions = 4;
  uint32_t devices = 10'000;
  uint64_t seed = 1;
  uint32_t batch = 1'000;  // Events per append (per partition).
};

// Generates `readings` simulated sensor readings of `devices` devices and appends them
// to the log at `data_dir` (created if missing), each to the partition its device id
// maps to, in batches, each batch with the source position of `kReadingsTopic` (Kafka
// partition = log partition) it would have come from. Offsets continue from the
// positions already stored, so a second run extends the log. Progress goes to `out`.
// FAILED_PRECONDITION if the log is in use or was generated with another partition
// count.
absl::Status GenerateLog(const GenerateOptions& options, std::ostream& out);

struct InspectOptions {
  std::string data_dir;
};

// Prints a summary of the log at `data_dir`: per partition the events, their event-time
// range and counts by event type; stored source positions; indexed streams; size on
// disk. Reads by sequential scan; memory does not grow with the log.
absl::Status InspectLog(const InspectOptions& options, std::ostream& out);

struct DumpOptions {
  std::string data_dir;
  uint32_t partition = 0;
  uint64_t from = 0;    // First sequence.
  uint64_t limit = 20;  // At most this many events.
};

// Writes events of one partition to `out` as JSON lines, one event per line, by the
// protobuf JSON mapping of `cityops.v1.Event`. Writes a note to `note` (not `out`, which
// stays pure JSON) when there is nothing to dump.
absl::Status DumpLog(const DumpOptions& options, std::ostream& out, std::ostream& note);

struct BackupOptions {
  std::string data_dir;
  std::string to;  // Must not exist yet.
};

// Writes a consistent, openable copy of the log at `data_dir` to `to` (EventLog::Backup).
absl::Status BackupLog(const BackupOptions& options, std::ostream& out);

struct SetPositionOptions {
  std::string data_dir;
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
};

// Stores a new Kafka position for `topic`/`partition`: the operator's decision after ingest
// stopped on lost records or a recreated topic (OPERATIONS.md). Appends an empty batch that
// carries the position to log partition `partition` (Kafka partition k feeds log
// partition k) and reports the old and new offsets. The daemon must be stopped: the log's
// lock is needed.
absl::Status SetPosition(const SetPositionOptions& options, std::ostream& out);

struct CompareOptions {
  std::string data_dir;  // Log A.
  std::string other;     // Log B.
  std::string until;     // RFC 3339; empty: everything.
};

// Compares what the rules stage derived in two logs built from the same input
// (projections/derived_diff.h): derived events partition by partition, references by the
// identity of what they name (Kafka source, idempotency key, tick time), byte for byte
// otherwise. Prints how many agree, and where the logs part with both events; FAILED_
// PRECONDITION ("the logs differ") when they do. Neither log may be open in a daemon
// (compare backups of running ones: `cityops log backup`).
absl::Status CompareLogs(const CompareOptions& options, std::ostream& out);

struct VerifyCommandOptions {
  std::string data_dir;
  bool json = false;  // One JSON document on `out` instead of the table.
  bool deep = false;  // Also parse every event.
};

// Checks the log at `data_dir` for damage (kernel/log_verify.h): RocksDB's open checks as
// at start, every SST file's blocks against their checksums, the WAL's records, and
// every partition's sequences dense from 0 (with `deep`, every event parsed). Writes a
// table for people (or, with `json`, one JSON document) to `out`, with one line per
// problem naming the file, what is wrong, the range it holds and what to do; progress of
// long runs goes to `progress`. Returns whether the log is whole; fails (the log was not
// checked) when there is no log at `data_dir` or another process holds it.
absl::StatusOr<bool> VerifyLogCommand(const VerifyCommandOptions& options, std::ostream& out,
                                      std::ostream& progress);

struct UpgradeCommandOptions {
  std::string data_dir;
  bool json = false;  // One JSON document on `out` instead of text.
};

// Upgrades the log at `data_dir` to this cityops' format version in place
// (kernel/log_upgrade.h), with progress on `progress`, and says what it did on `out`.
absl::Status UpgradeLogCommand(const UpgradeCommandOptions& options, std::ostream& out,
                               std::ostream& progress);

}  // namespace cityops::app

#endif  // CITYOPS_APP_LOG_COMMANDS_H_
