// Checking a log for damage: `cityops log verify`, and the names of damaged WAL files
// that `EventLog::Open` puts in its refusal.
//
// What `EventLog::Open` checks on every start, and what only `VerifyLog` checks, is in
// kernel/LOG_FORMAT.md ("Damage"). In short: Open relies on RocksDB's own checks (the
// manifest, every SST file's size, footer and index, every WAL record's checksum);
// VerifyLog also reads every block of every SST file against its checksum, and checks
// the log's own invariants (each partition's sequences dense from 0, and with `deep`
// every event parses). It changes nothing in the directory: it reads with RocksDB's
// read-only open, writing no RocksDB info log, while it holds the log's lock.
#ifndef CITYOPS_KERNEL_LOG_VERIFY_H_
#define CITYOPS_KERNEL_LOG_VERIFY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cityops::kernel {

struct VerifyOptions {
  std::string path;   // The log's directory.
  bool deep = false;  // Also parse every event (EventLog::ParseEvent).
  // Progress: `phase` starts ("SST files" counted in bytes, "events" counted in events,
  // with the expected total, 0 when unknown), then `advance` adds to it.
  std::function<void(std::string_view phase, std::string_view unit, uint64_t total)> phase;
  std::function<void(uint64_t n)> advance;
};

// One problem found. Every field is text fit to show as is.
struct Damage {
  std::string file;    // The damaged file's path; empty when not one file (a gap).
  std::string what;    // What is wrong, with RocksDB's own words where it gave any.
  std::string range;   // What it holds, in cityops terms (partitions and sequences, streams).
  std::string action;  // What to do.
};

// An SST file as checked.
struct CheckedFile {
  std::string path;
  std::string column_family;
  int level = 0;
  uint64_t bytes = 0;    // As recorded in the manifest.
  uint64_t entries = 0;  // Keys, as recorded in the manifest (0 when not recorded).
  std::string range;     // Its key range in cityops terms.
  bool whole = true;
};

struct VerifyReport {
  std::string path;
  // RocksDB's open checks, as `EventLog::Open` runs them at every start: whether the
  // daemon would open this log, and RocksDB's reason when not.
  bool opens = true;
  std::string open_error;
  std::vector<CheckedFile> sst_files;
  std::vector<std::string> wal_files;  // Paths of the WAL files replayed.
  uint64_t wal_bytes = 0;
  uint32_t partitions = 0;  // Partitions holding events.
  uint64_t events = 0;      // Events read.
  bool deep = false;
  uint64_t parsed = 0;  // Events parsed (deep only).
  // What could not be checked and why (e.g. events after a damaged WAL record), or "".
  std::string note;
  absl::Duration elapsed;
  std::vector<Damage> damage;

  bool whole() const { return damage.empty(); }
};

// What to do about damage, the same for every problem: restore, from a backup.
inline constexpr std::string_view kRestoreAction =
    "stop the daemon, move the damaged data directory aside, and restore the data directory "
    "from a backup made with `cityops log backup` (then restart: ingest consumes again from "
    "the backup's Kafka positions); see OPERATIONS.md, \"A damaged log\"";

// Checks the log at `options.path` (see the top of this file). The report lists the
// damage; the status fails only when the log could not be checked at all: NOT_FOUND
// when there is no log, FAILED_PRECONDITION when another process holds it ("... is in
// use by process N ...") or the directory is not a cityops log.
absl::StatusOr<VerifyReport> VerifyLog(const VerifyOptions& options);

// The WAL records of the log at `path` that RocksDB finds damaged when it replays them,
// one line per WAL file ("<file>: <RocksDB's reason> (<n> bytes in <k> stretches cannot be
// replayed)"), read without changing
// anything. For the message of an Open that failed with Corruption; the caller holds the
// log's lock.
std::vector<std::string> DescribeWalDamage(const std::string& path);

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_LOG_VERIFY_H_
