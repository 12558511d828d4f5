// Upgrading an event log written by an older format version, in place.
//
// Version 1 kept the events of every partition in one column family, keyed partition +
// sequence; version 2 gives each partition a family of its own (LOG_FORMAT.md, "Version
// history"). `UpgradeLog` rewrites a version-1 log into version 2 with every event's bytes
// unchanged, and changes nothing else in it (stream index, idempotency keys, positions,
// checkpoints and snapshots keep their keys and values: a position is still partition +
// sequence). `EventLog::Open` refuses a version-1 log and names this upgrade
// (`cityops log upgrade`).
//
// Safe to stop at any point (Ctrl-C, kill, power loss) and to run again:
//   1. it drops what an earlier, interrupted run left (partition families of a log whose
//      version is still 1);
//   2. it copies the events, checking that every partition's sequences are dense from 0,
//      into the new families, without the WAL, and flushes them to SST files;
//   3. it writes the new format version, synced: from here on the log is version 2;
//   4. it drops the old family (a run stopped before this step leaves it, and the next
//      `EventLog::Open` or `UpgradeLog` drops it).
// It needs room for a second copy of the events until step 4. It holds the log's lock
// (cityops.lock) while it runs, so it never touches a log a daemon has open.
#ifndef CITYOPS_KERNEL_LOG_UPGRADE_H_
#define CITYOPS_KERNEL_LOG_UPGRADE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cityops::kernel {

struct UpgradeOptions {
  std::string path;
  // Progress: `begin` once with the number of events to copy (an estimate from RocksDB's
  // table properties), `advance` with events copied since the last call.
  std::function<void(uint64_t total)> begin;
  std::function<void(uint64_t n)> advance;
};

struct UpgradeReport {
  std::string path;
  uint32_t from_version = 0;
  uint32_t to_version = 0;
  bool already_current = false;  // Nothing to copy: the log was at the current version.
  uint64_t events = 0;           // Events copied.
  uint32_t partitions = 0;       // Partitions that hold them.
  absl::Duration elapsed;
};

// Upgrades the log at `options.path` to the current format version. Fails with
//   NOT_FOUND            if there is no log there;
//   FAILED_PRECONDITION  if another process has it open, if it is not a cityops log, or if
//                        its version has no upgrade (newer than this cityops, or unknown);
//   DATA_LOSS            if an event key is malformed or a partition's sequences are not
//                        dense from 0 (the log is left at version 1, unchanged but for the
//                        partial copy, which the next run drops: restore it from a backup);
//   UNAVAILABLE          for I/O failures, "disk full: ..." when it ran out of room.
// Every message names the directory and says what to do.
absl::StatusOr<UpgradeReport> UpgradeLog(const UpgradeOptions& options);

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_LOG_UPGRADE_H_
