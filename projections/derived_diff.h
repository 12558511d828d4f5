// Comparing what the rules stage derived in two logs.
//
// Two logs built from the same Kafka records (by two daemons, or one that restarted, or a
// replay) hold their inputs at different positions: clock ticks land where ingest's
// timing put them, and derived events interleave with inputs as the stages ran. What must
// be equal is what was derived. So each derived event (provenance stage "rules") is
// compared with every reference it holds (`EventRef`, anywhere in the event: found by
// reflection) replaced by the IDENTITY of the event it names, which does not depend on
// where that event landed (`EventIdentity`), and with the log's own stamps (sequence,
// recorded time) cleared. Everything else is compared byte for byte (deterministic
// serialization). Derived events are compared partition by partition, in log order.
//
// Used by `cityops log compare` and by the determinism tests (docs/determinism.md).
//
// Memory: bounded. Both logs are read partition by partition in chunks; a referenced
// event is read back by position (a point lookup) and its identity cached per chunk.
// Thread safety: the logs may be read concurrently by others (a backup being written is
// fine); these functions keep no state between calls.
#ifndef CITYOPS_PROJECTIONS_DERIVED_DIFF_H_
#define CITYOPS_PROJECTIONS_DERIVED_DIFF_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "kernel/event_log.h"

namespace cityops::projections {

// True for an event the rules stage derived (provenance stage "rules").
bool IsDerivedEvent(const v1::Event& event);

// What an event IS, independent of its position:
//   * ingested from Kafka: its source, `<topic>/<partition>@<offset>`;
//   * a clock tick: `tick@<event time>` (ticks are the one input whose place and time depend
//     on when ingest ran, so a derived event citing one depends on that timing);
//   * a rule-set activation: `ruleset/<name>/<sha256>` (its idempotency key holds the
//     moment the daemon that activated it started);
//   * anything else with an idempotency key (people's commands, derived events): that key;
//   * otherwise its stream and version.
std::string EventIdentity(const v1::Event& event);

struct DerivedDiffOptions {
  // Only derived events whose event time is at or before this. After the last input only
  // clock ticks move time, and they depend on when the daemon ran (docs/determinism.md).
  absl::Time until = absl::InfiniteFuture();
  // Events read from a partition at a time.
  size_t chunk = 4096;
};

// One derived event as compared: references replaced by identities.
struct IdentifiedEvent {
  v1::Event event;                // References, sequence and recorded time cleared.
  std::vector<std::string> refs;  // "<field path>=<identity>", in field order.
  bool cites_tick = false;        // A reference names a clock tick.

  // One line: the event as protobuf text, then its references.
  std::string Text() const;
  bool operator==(const IdentifiedEvent& other) const;
};

struct DerivedDiff {
  // Derived events (selected by the options) compared equal before the first difference;
  // all of them when the logs agree.
  uint64_t equal = 0;
  // Selected derived events that cite a clock tick, in either log, up to where the
  // comparison stopped (each depends on ingest's timing): how many, and the first few as
  // text (at most kTickExamples, so that memory stays bounded).
  static constexpr size_t kTickExamples = 5;
  uint64_t citing_ticks = 0;
  std::vector<std::string> tick_examples;
  // Where the logs part: partition, index among that partition's selected derived events,
  // and both events as text (or "(none)"). Unset when they agree.
  std::optional<std::string> difference;
};

// Compares the derived events of `a` and `b` (named `a_name`, `b_name` in the text).
// DATA_LOSS if an event does not parse; other codes for read errors.
absl::StatusOr<DerivedDiff> CompareDerived(const kernel::EventLog& a, const kernel::EventLog& b,
                                           const DerivedDiffOptions& options = {},
                                           const std::string& a_name = "A",
                                           const std::string& b_name = "B");

// Every selected derived event of `log`, partition by partition (index = partition), in
// log order, identified. Holds them all in memory: for tests and small logs.
absl::StatusOr<std::vector<std::vector<IdentifiedEvent>>> DerivedByIdentity(
    const kernel::EventLog& log, const DerivedDiffOptions& options = {});

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_DERIVED_DIFF_H_
