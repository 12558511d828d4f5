// The event log: cityops' single source of truth.
//
// An append-only, partitioned log of `cityops.v1.Event`s on RocksDB. Everything else in
// cityops (device state, alerts, cases, tickets, statistics) is folded from it and can
// be thrown away and rebuilt from it.
//
// Guarantees
//   * Dense sequences. Each partition's events are numbered 0, 1, 2, ... with no gaps,
//     in append order.
//   * Atomic append. One `Append` is one RocksDB WriteBatch holding the events, their
//     stream-index entries and idempotency keys (for indexed streams), and either the
//     source positions (Kafka topic/partition -> next offset) or a stage checkpoint that
//     produced them. After a crash, either all of it is there or none of it is.
//     `AppendAll` extends this to batches for several partitions in one write, and may
//     carry a stage's snapshot of its state in that same write.
//   * Durability. By default every append is fsynced before `Append` returns (WAL on,
//     group commit: one sync per batch). `Durability::kBuffered` skips the fsync:
//     an append then survives a process crash but not a power loss, which may take the
//     appends since the WAL was last synced (LOG_FORMAT.md, "Power loss"); the log
//     reopens whole at an earlier append, its source positions with it.
//     `Durability::kUnlogged` writes no WAL at all, for logs that are rebuilt when they
//     do not complete (a replay's fresh log): nothing survives a crash until `Flush`.
//   * Idempotency. An event of an indexed stream whose idempotency key is already stored
//     (or earlier in the same batch) is skipped and reported, never appended twice.
//   * Optimistic concurrency. An event may carry the stream version it expects; if the
//     stream has moved on, the whole append fails with ABORTED and writes nothing. The
//     idempotency check comes first: a retried command whose first attempt went through
//     is reported as a duplicate, not as a conflict.
//   * Crash-safe creation. A log killed while being created is created afresh by the
//     next Open (see LOG_FORMAT.md, `cityops.creating`).
//
// Disk full. When the disk has no room for a write (the append's own, or a background
// flush's, after which RocksDB stops taking writes), appends fail with UNAVAILABLE
// "disk full: ..." and write nothing; reads go on. The log then tries to resume
// (`Resume`: RocksDB's DB::Resume, which writes the memtables into new files) at most
// every `disk_full_retry`, from the next append that comes; `Resume` may also be called
// directly. Once there is room, appends succeed again, without a restart.
// `disk_full()` says whether the log is in that state and counts the outages.
//
// Indexed streams. Streams that take commands (`case/...`, `ticket/...`, `ruleset/...`,
// and the device registry `registry/<device id>`:
// every stream except `device/...` and `clock`) get a stream-index entry per event, a
// stream version, and stored idempotency keys. Readings (`device/...`) get none of these
// on purpose: they stay on sequential keys only (an index entry per reading, its key in
// random order, would cut appends several-fold; see LOG_FORMAT.md, `idempotency`); they
// are read by partition scan, and ingest drops duplicate readings with an in-memory window.
//
// Thread safety. All methods may be called concurrently. Appends to one partition are
// serialized; appends to different partitions proceed in parallel, except that appends
// carrying indexed events are serialized among themselves (the index is global).
//
// The key layout and value format are in kernel/LOG_FORMAT.md.
#ifndef CITYOPS_KERNEL_EVENT_LOG_H_
#define CITYOPS_KERNEL_EVENT_LOG_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "kernel/clock.h"
#include "kernel/latency_histogram.h"
#include "kernel/types.h"

namespace cityops::kernel {

enum class Durability {
  kSyncEachAppend,  // Default: fsync the WAL before Append returns.
  kBuffered,        // WAL written but not fsynced: survives a process crash only.
  // No write-ahead log: appends live in memory until RocksDB flushes them, and a crash
  // loses them. Only for a log that is rebuilt from elsewhere when it does not complete
  // (a replay's fresh log, renamed into place only after a clean close). Closing the log
  // flushes everything.
  kUnlogged,
};

// Hooks for tests (a file system that fails on purpose), defined in
// kernel/event_log_testing.h. Production leaves them unset.
struct EventLogTestHooks;

struct EventLogOptions {
  // Directory of the log. cityops owns everything in it.
  std::string path;
  // Create an empty log if `path` does not exist or is an empty directory.
  bool create_if_missing = true;
  Durability durability = Durability::kSyncEachAppend;
  // Stamps each event's `recorded_time`. Must outlive the log. Never null.
  const Clock* clock = Clock::Real();
  // Memory for appends not yet written to the log's files: the memtables of every
  // partition together (RocksDB's db_write_buffer_size). When they would hold more, one
  // partition's is flushed. A partition's memtable is at most a quarter of it, and at most
  // 64 MiB. At least 16 MiB.
  size_t memtable_budget_bytes = size_t{256} << 20;
  // While the disk is full, how often an append tries to resume writes before it fails.
  absl::Duration disk_full_retry = absl::Seconds(1);
  // Tests only (kernel/event_log_testing.h); null in production.
  std::shared_ptr<EventLogTestHooks> testing = nullptr;
};

// Whether the log's disk is full (see "Disk full" above), and its outages since Open.
struct DiskFullState {
  bool full = false;
  std::string error;                            // While full: the failure, as RocksDB said it.
  absl::Time since = absl::InfinitePast();      // While full: when it began (wall time).
  uint64_t outages = 0;                         // Outages begun since Open.
  absl::Duration total = absl::ZeroDuration();  // Time spent full, the current outage included.
};

// What the log's RocksDB holds in memory, in bytes, as RocksDB estimates it: where a
// daemon's resident memory goes besides the read models.
struct LogMemory {
  uint64_t memtables = 0;           // Appends not yet in the files, every family's memtables.
  uint64_t table_readers = 0;       // Index and filter blocks of the open table files.
  uint64_t block_cache = 0;         // The shared block cache's contents.
  uint64_t block_cache_pinned = 0;  // The part of it pinned by iterators and readers.
};

// A Kafka source position: the next offset to consume from `topic`/`kafka_partition`.
struct SourcePosition {
  std::string topic;
  int32_t kafka_partition = 0;
  KafkaOffset next_offset;
};

// Where a stage (projection, rules, outbox) stands in one partition: it has processed
// every event before `next`. `state` is opaque to the log (the stage's own snapshot).
struct StageCheckpoint {
  std::string stage;
  Sequence next;
  std::string state;
};

// A stage's snapshot of its whole state (e.g. the rules engine's), stored with its
// checkpoints in one write so that a restart can start from it instead of replaying the
// log. One per stage: a new one replaces the old. `state` is opaque to the log; the
// stage records in it which checkpoints it belongs to.
struct StageSnapshot {
  std::string stage;
  std::string state;
};

// True for streams that get index entries, versions and stored idempotency keys.
bool IsIndexedStream(std::string_view stream_id);

// Events to append to one partition, together with what produced them. Not
// thread-safe; build it, then hand it to `EventLog::Append`.
//
// A batch can be reused: `Clear()` keeps its events' memory, and `AddNew()` hands out a
// cleared event to fill in place. A hot path (ingest) that appends with
// `Append(AppendBatch&)` and reuses its batches allocates and frees almost nothing per
// event, as protobuf's reused-message practice recommends.
class AppendBatch {
 public:
  explicit AppendBatch(Partition partition) : partition_(partition) {}

  // Adds an event. The log assigns `partition`, `sequence`, `recorded_time` and (for
  // indexed streams) `stream_version`; values already set there are overwritten.
  // `expected_version`, for indexed streams only, is the version the stream must be
  // at before this event (0 = the stream must not exist yet).
  void Add(v1::Event event, std::optional<StreamVersion> expected_version = std::nullopt);

  // Adds an empty event (reusing one kept by Clear) and returns it to be filled in
  // place. Valid until the next Add, AddNew or Clear.
  v1::Event* AddNew(std::optional<StreamVersion> expected_version = std::nullopt);

  // Adds an event as another log stores it (the value `EventLog::Scan` hands out), without
  // parsing it: the log restamps `recorded_time` and keeps every other byte. The copy of
  // a stored reading then costs about what copying its bytes costs (replay copies millions).
  // Only for unindexed streams (`device/...`, `clock`), which have no versions or
  // idempotency keys to assign. Fails with INVALID_ARGUMENT, adding nothing, if `value` is
  // not well-formed wire format, has no payload or stream id, or belongs to an indexed
  // stream (parse those and use Add).
  absl::Status AddStored(std::string_view value);

  // Records that this batch consumed `topic`/`kafka_partition` up to `next_offset`.
  // May be called for several topic partitions; a later call for the same one wins.
  void SetSourcePosition(std::string topic, int32_t kafka_partition, KafkaOffset next_offset);

  // Records the checkpoint of the stage that derived these events. A batch carries
  // source positions or a checkpoint, not both.
  void SetCheckpoint(StageCheckpoint checkpoint);

  // Empties the batch for reuse, keeping the memory of its events.
  void Clear();

  Partition partition() const { return partition_; }
  size_t size() const { return used_; }
  bool empty() const { return used_ == 0; }

 private:
  friend class EventLog;
  struct Entry {
    v1::Event event;
    std::optional<StreamVersion> expected_version;
    // AddStored: `stored` holds the value without the fields the log assigns, and
    // `recorded_at` is where `recorded_time` goes in it (field order kept).
    bool is_stored = false;
    std::string stored;
    size_t recorded_at = 0;
  };
  Partition partition_;
  std::vector<Entry> entries_;  // The first used_ are in the batch; the rest are kept.
  size_t used_ = 0;
  std::vector<SourcePosition> source_positions_;
  std::optional<StageCheckpoint> checkpoint_;
};

// What became of one entry of an AppendBatch.
struct AppendOutcome {
  EventPosition position;  // Where the event now is, or where its twin already was.
  bool duplicate = false;  // Skipped: its idempotency key was already stored.
};

struct AppendResult {
  std::vector<AppendOutcome> outcomes;  // One per entry, in batch order.
  size_t appended = 0;
  size_t duplicates = 0;
  Sequence next;  // The partition's next sequence after this append.
};

class EventLog {
 public:
  // Opens (or creates) the log at `options.path`. Fails with
  //   FAILED_PRECONDITION  if another process (or another EventLog in this process)
  //                        holds the directory, if it is not a cityops log, or if it
  //                        was written by an incompatible format version;
  //   NOT_FOUND            if it does not exist and `create_if_missing` is false;
  //   INVALID_ARGUMENT     for bad options; other codes for I/O failures.
  // Every message names the directory and says what to do.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(const EventLogOptions& options);

  // Closes the log, releasing the directory. Readers blocked in WaitForEvents wake up
  // and return before the destructor does; no other call may overlap destruction.
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Appends `batch` atomically (see the guarantees above). Fails, writing nothing, with
  //   INVALID_ARGUMENT  for a malformed entry (no payload, no stream id, an expected
  //                     version on an unindexed stream, positions and a checkpoint
  //                     together); the message names the entry;
  //   ABORTED           when an expected stream version does not match;
  //   UNAVAILABLE       "disk full: ..." when the disk has no room (see "Disk full");
  //                     retry once there is room;
  //   other codes       when RocksDB cannot write otherwise (I/O error).
  // A batch with no events but with source positions or a checkpoint is valid: it
  // moves the position on (e.g. when every record consumed was dead-lettered).
  absl::StatusOr<AppendResult> Append(AppendBatch&& batch);
  // The same, leaving `batch` to the caller to Clear() and reuse. Its events are
  // changed (stamped as stored), so append a batch once.
  absl::StatusOr<AppendResult> Append(AppendBatch& batch);

  // Appends batches for several partitions (at most one batch each) as one atomic
  // write with one sync: all of them or none. Same errors as Append. Ingest uses this
  // to store what one poll consumed across many Kafka partitions.
  absl::StatusOr<std::vector<AppendResult>> AppendAll(std::vector<AppendBatch>&& batches);
  // The same, leaving the batches to the caller to Clear() and reuse.
  absl::StatusOr<std::vector<AppendResult>> AppendAll(std::vector<AppendBatch>& batches);
  // The same, storing `snapshot` (replacing the stage's previous one) in the same write:
  // the batches' checkpoints and the snapshot are stored together or not at all.
  absl::StatusOr<std::vector<AppendResult>> AppendAll(std::vector<AppendBatch>& batches,
                                                      const StageSnapshot& snapshot);

  // Calls `visit(sequence, value)` for the stored events of `partition` from `from`
  // on, in order, until `visit` returns false or the appended end is reached. `value`
  // is the stored record (see ParseEvent), valid only during the call. This is the
  // fast path for folding the log.
  absl::Status Scan(Partition partition, Sequence from,
                    absl::FunctionRef<bool(Sequence, std::string_view value)> visit) const;

  // Up to `max_events` events of `partition` starting at `from`, fully decoded.
  absl::StatusOr<std::vector<v1::Event>> Read(Partition partition, Sequence from,
                                              size_t max_events) const;

  // Up to `max_events` events of an indexed stream, starting at version `from`
  // (versions start at 1). INVALID_ARGUMENT for unindexed streams.
  absl::StatusOr<std::vector<v1::Event>> ReadStream(std::string_view stream_id, StreamVersion from,
                                                    size_t max_events) const;

  // Calls `visit(stream_id, version)` for every indexed stream whose id starts with
  // `prefix`, in id order, with its current version, until `visit` returns false.
  // E.g. prefix "registry/" lists every registered device.
  absl::Status ListStreams(std::string_view prefix,
                           absl::FunctionRef<bool(std::string_view, StreamVersion)> visit) const;

  // The current version of an indexed stream (0 if it has no events).
  absl::StatusOr<StreamVersion> CurrentVersion(std::string_view stream_id) const;

  // The sequence the next event appended to `partition` will get (0 when empty).
  Sequence NextSequence(Partition partition) const;
  // The last appended sequence, or nullopt for an empty partition.
  std::optional<Sequence> LastSequence(Partition partition) const;
  // Partitions that hold at least one event, ascending.
  std::vector<Partition> Partitions() const;

  // The stored next offset for a Kafka topic partition, or nullopt if none is stored.
  absl::StatusOr<std::optional<KafkaOffset>> StoredSourcePosition(std::string_view topic,
                                                                  int32_t kafka_partition) const;
  // Every stored source position, ordered by topic then partition.
  absl::StatusOr<std::vector<SourcePosition>> StoredSourcePositions() const;

  // The stored checkpoint of `stage` in `partition`, or nullopt if none is stored.
  absl::StatusOr<std::optional<StageCheckpoint>> StoredCheckpoint(Partition partition,
                                                                  std::string_view stage) const;

  // The latest snapshot stored by `stage` (AppendAll with a StageSnapshot), or nullopt.
  absl::StatusOr<std::optional<std::string>> StoredSnapshot(std::string_view stage) const;

  // Blocks until `partition`'s next sequence exceeds `after_next` (i.e. at least one
  // event beyond what the caller has seen), `timeout` passes, or the log closes.
  // Returns the partition's next sequence at that moment. A follower loops:
  // read from its position, then wait with its new position.
  Sequence WaitForEvents(Partition partition, Sequence after_next, absl::Duration timeout) const;

  // Writes everything appended so far into the database's files and waits for it: after
  // this, an unlogged log (Durability::kUnlogged) holds it across a crash. (Closing the
  // log also flushes an unlogged log, but cannot report a failure.)
  absl::Status Flush();

  // Whether the disk is full, and the outages so far. From any thread.
  DiskFullState disk_full() const;

  // What RocksDB holds in memory for the log now. From any thread.
  LogMemory Memory() const;

  // Tries to take appends again after the disk ran full: RocksDB's DB::Resume, which
  // writes the memtables into new files. OK if the log takes appends (also when it was
  // not full); UNAVAILABLE "disk full: ..." while there is still no room, or while
  // RocksDB's own recovery is under way (after a compaction ran out of space, it retries
  // every 5 s by itself).
  absl::Status Resume();

  // Writes a consistent, openable copy of the log to `target_dir` (which must not exist)
  // while appends continue. Uses hard links where the filesystem allows.
  absl::Status Backup(const std::string& target_dir) const;

  // Decodes a stored record into `out`, filling in `position`, which the record itself
  // does not carry. DATA_LOSS if the bytes are not a valid event.
  static absl::Status ParseEvent(EventPosition position, std::string_view value, v1::Event* out);

  const std::string& path() const;

  // How long each write of Append/AppendAll took, sync included (writes that stored
  // nothing are not counted). For metrics.
  const LatencyHistogram& append_latency() const;

 private:
  class Impl;
  struct Staging;
  static absl::Status Validate(const AppendBatch& batch, bool* indexed);
  absl::StatusOr<std::vector<AppendResult>> AppendAll(std::span<AppendBatch> batches,
                                                      const StageSnapshot* snapshot);
  absl::Status Stage(AppendBatch& batch, uint64_t* next, Staging& staging,
                     AppendResult* result) const;
  explicit EventLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_EVENT_LOG_H_
