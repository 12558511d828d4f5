// The rules stage: runs the rules engine over the event log and appends what it derives.
//
// Order. The engine needs one fixed order of all input events across partitions (grid
// compounds and report linking span partitions). The stage merges the partitions by
// stage time: each partition's time is the running maximum of the event times of its
// readings, clock ticks and reports (other events take the partition's current time),
// and events are processed in order of (that time, partition, sequence). This order is
// a function of the log alone, so a replay processes exactly the same sequence.
//
// Live, an event is processed only once no partition can still deliver an event that
// sorts before it: every partition that has nothing unread must have moved past it in
// time. A busy partition moves with its own records; a quiet one with the ClockTicks
// ingest appends once nothing of it is left in Kafka, a tick interval after its last
// record, dated `clock_tick_delay` behind the clock (ingest/ingester.h). So while some
// partition is quiet, an event waits about the tick interval plus the tick delay.
// `Step(/*drain=*/true)` treats the log as final instead (replays, tests, benchmarks).
//
// What the live stage processes is always a prefix of the order a replay of the finished
// log follows, so both derive the same events (docs/determinism.md). One exception
// changes nothing: a clock tick no later than the engine's time is processed at once, out
// of its place. Ingest ticks every quiet partition at the same time, and the last of
// them in partition order would otherwise wait a whole tick interval for the first to
// move on; idle, the stage's lag would never reach zero. Such a tick fires no timer and
// derives nothing wherever it falls (RulesEngine::now), and the partition's time it sets
// is its own running maximum either way.
//
// Atomicity. Each step appends the derived events of every partition together with the
// stage's checkpoint of every partition it advanced, in one `EventLog::AppendAll`.
// Derived events carry provenance stage "rules" and deterministic idempotency keys; the
// stage skips them when it reads them back.
//
// Restart. The engine's state is a function of the events before the checkpoints. Now
// and then (every `snapshot_every_events` input events or `snapshot_interval` of wall
// time, whichever comes first) a step stores a snapshot of it: a
// `cityops.v1.RulesStageSnapshot` (proto/cityops/v1/snapshot.proto) holding the whole
// engine state (RulesEngine::ExportState; the rule set in force by the position of its
// RulesetActivated event, compiled again on restore) and each partition's next sequence
// and stage time. It goes into the same RocksDB write as the checkpoints it belongs to
// (EventLog::AppendAll with a StageSnapshot; key `n` + "rules", one value, replaced by
// the next), so it never describes a state the checkpoints do not. `Open` restores the
// engine from it and replays only the events between it and the checkpoints (deriving
// again, appending nothing); without a usable snapshot it replays the log from the start.
// Either way the engine ends in the same state, so what follows derives the same events
// byte for byte (docs/determinism.md). A snapshot of another `format_version`, one that
// does not parse, or one that does not fit the log (ahead of a checkpoint, naming a rule
// set the log does not hold there) is refused: Open logs why, reports it in
// `RulesStageStats::snapshot_refused`, and replays from the start. See bench/README.md
// (restart_bench) for restart times with and without a snapshot.
//
// Failure. A step whose append fails has already moved the engine past what the log
// holds; the stage is then broken: every later Step/CatchUp/Run returns
// FAILED_PRECONDITION until it is dropped and reopened, which replays from the stored
// checkpoints and derives the lost step again. A derived event the log reports as a
// duplicate (its idempotency key already stored) is a bug, not an input error: INTERNAL,
// and the stage is broken too.
//
// Partitions. A partition is merged from the moment it holds an event. A partition
// created after others have moved on in time would break the order; ingest creates its
// partitions when it starts, so this does not happen in one deployment.
#ifndef CITYOPS_PROJECTIONS_RULES_RULES_STAGE_H_
#define CITYOPS_PROJECTIONS_RULES_RULES_STAGE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "projections/rules/engine.h"

namespace cityops::rules {

inline constexpr char kRulesCheckpoint[] = "rules";
// The RulesStageSnapshot.format_version this build writes and reads.
inline constexpr uint32_t kRulesSnapshotVersion = 1;

struct RulesStageOptions {
  kernel::EventLog* log = nullptr;
  // Live steps wait until partitions 0..partitions-1 all hold an event (0: merge the
  // partitions that exist). Set it to the input topics' partition count.
  uint32_t partitions = 0;
  size_t max_batch_events = 20'000;  // Input events per append, at most.
  size_t read_chunk = 4'096;         // Events read from a partition at a time.
  absl::Duration idle_wait = absl::Milliseconds(50);
  // A step stores a snapshot of the engine with its checkpoints once this many input
  // events were processed since the last one (0: never by count)...
  uint64_t snapshot_every_events = 2'000'000;
  // ... or once this much wall time (of `clock`) has passed since the last one, if it
  // processed anything (InfiniteDuration: never by time). A snapshot of a 100k-device
  // city is about 30 MB and takes about a second to build (bench/README.md, restart_bench).
  absl::Duration snapshot_interval = absl::Minutes(5);
  const kernel::Clock* clock = kernel::Clock::Real();
  // Open restores from the stored snapshot when it can (false: always replay the log).
  bool use_snapshot = true;
  // Tests only (fault injection): called before each append; a non-OK status fails that
  // append as a write error of the log would, without writing anything.
  std::function<absl::Status()> append_fault = nullptr;
};

struct PartitionLag {
  kernel::Partition partition;
  kernel::Sequence next;  // The stage has processed every event before this.
  uint64_t lag = 0;       // Events appended but not yet processed.
};

struct RulesStageStats {
  uint64_t processed = 0;  // Input events processed since Open (replay excluded).
  uint64_t replayed = 0;   // Input events replayed by Open (after the snapshot, if any).
  // Open restored the engine from the stored snapshot, which covered this many input
  // events.
  bool restored_from_snapshot = false;
  uint64_t snapshot_inputs = 0;
  // Why Open did not use the stored snapshot (empty: it did, or there was none).
  std::string snapshot_refused;
  uint64_t snapshots_written = 0;  // Since Open.
  uint64_t last_snapshot_bytes = 0;
  uint64_t derived = 0;  // Events appended since Open.
  uint64_t appends = 0;
  EngineCounters engine;  // What the engine did since Open (replay excluded).
  // Every rule set in the log so far that did not compile and is ignored, replay
  // included (the log keeps it: every replay meets it again).
  std::vector<RejectedRuleSet> rejected_rule_sets;
};

class RulesStage {
 public:
  // Opens the stage on `options.log` and replays the events before its checkpoints.
  static absl::StatusOr<std::unique_ptr<RulesStage>> Open(const RulesStageOptions& options);
  ~RulesStage();

  // Processes what can be processed now (everything appended when `drain`) up to
  // max_batch_events, and appends the result. Returns the number of input events
  // processed (0: nothing to do).
  absl::StatusOr<size_t> Step(bool drain);
  // Steps until nothing is left to process (with `drain`: until the log's end).
  absl::Status CatchUp(bool drain);
  // Follows the log until Stop(). Returns the first error.
  absl::Status Run();
  void Stop();

  RulesStageStats Stats() const;
  std::vector<PartitionLag> Lag() const;
  // The snapshot (a serialized RulesStageSnapshot) the stage would store now, for tests
  // and tools: two stages in the same state give the same bytes. Not while Step or Run
  // runs.
  absl::StatusOr<std::string> Snapshot() const;

 private:
  struct Cursor;
  explicit RulesStage(const RulesStageOptions& options);
  absl::Status AddNewPartitions();
  // Restores the engine and the cursors from the stored snapshot, if there is a usable
  // one; otherwise leaves them fresh and says why in stats_.snapshot_refused. Errors
  // only when the log cannot be read.
  absl::Status LoadSnapshot();
  // The snapshot to store with this step's checkpoints, or nullopt (not due, or the
  // engine's state cannot be exported).
  std::optional<kernel::StageSnapshot> MaybeSnapshot(size_t processed);
  absl::Status BuildSnapshot(std::string* out) const;
  absl::Status Refill(Cursor& c, bool replay);
  // Processes the event at the front of `c` (not yet popped) at stage time `now`.
  absl::Status ProcessFront(const Cursor& c, absl::Time now, std::vector<Derived>* derived);
  // A cursor whose next event is a clock tick at or before the engine's time: processing
  // it changes nothing, so it need not wait for its place in the order. Null if none.
  Cursor* NoOpTick() const;
  // Merges and processes up to `limit` inputs; derived events go to `derived`.
  absl::StatusOr<size_t> Merge(bool drain, bool replay, size_t limit,
                               std::vector<Derived>* derived);

  RulesStageOptions options_;
  RulesEngine engine_;
  // Parsing buffers, reused from event to event.
  Reading reading_;
  v1::Event scratch_event_;
  std::vector<std::unique_ptr<Cursor>> cursors_;  // By partition, ascending.
  std::atomic<bool> stop_{false};
  // Set when an append failed or met a duplicate: the engine is past the log.
  absl::Status broken_;
  EngineCounters replayed_counters_;  // The engine's counters after Open's replay.
  uint64_t since_snapshot_ = 0;       // Input events processed since the last snapshot.
  absl::Time last_snapshot_;          // When it was written (or Open ran), by options_.clock.
  mutable absl::Mutex mu_;            // Guards stats_ and the cursors' positions for Lag().
  RulesStageStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cityops::rules

#endif  // CITYOPS_PROJECTIONS_RULES_RULES_STAGE_H_
