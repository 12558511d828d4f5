// Replay that proves itself: take only what a log recorded from outside (readings,
// reports, registrations, clock ticks, rule-set activations, people's commands) and derive
// everything again into a fresh log, then compare what was derived with the original.
//
// How. The recorded inputs are the events the rules stage did not derive (provenance
// stage other than "rules"). They are copied into a new log in the order they were
// recorded (by recorded time across partitions, by sequence within one), with their Kafka
// source positions. Readings and clock ticks, nearly all of a log, are copied as stored
// bytes with only the recorded time stamped anew (kernel::AppendBatch::AddStored); the
// events of indexed streams are parsed and appended, so that the fresh log assigns their
// versions. The rules stage follows the copy on a thread of its own, stepping live (not
// drained) as the copy appends, as a daemon's stage follows ingest, and then runs to the
// end (drain). The stage's order is a function of the inputs alone
// (projections/rules/rules_stage.h), so it derives the same events however its steps fall.
// People's commands are the exception to "copy first": a person acted on what the stage
// had derived by then (a case must be opened before it is registered), so before copying a
// command the copy waits until the stage has derived all it can (live, not drained), and
// every case stream gets the same events in the same order, with the same versions. Derived
// events still sit at other positions than in the original (they interleave with the
// inputs differently), so the comparison names what each reference points at instead of
// where (projections/derived_diff.h, docs/determinism.md).
//
// A time cut (`to`) stops each partition before its first input later than the cut. Every
// event the stage processes before the cut sorts before every event after it, so the
// replay is exactly the live run's prefix, and the comparison covers derived events up to
// the cut.
//
// Backtesting uses the same path with another rule set (analysis/backtest.h): it takes the
// place of the first recorded activation, so that it governs exactly the inputs the
// recorded rules did; later activations are left out; a log without any gets it before
// every input.
#ifndef CITYOPS_ANALYSIS_REPLAY_H_
#define CITYOPS_ANALYSIS_REPLAY_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "analysis/progress.h"
#include "kernel/event_log.h"
#include "projections/derived_diff.h"
#include "projections/rules/compile.h"
#include "projections/rules/rules_stage.h"

namespace cityops::analysis {

// Where a replay stops: nowhere, at a time, or (one-partition logs) at a sequence.
struct ReplayCut {
  absl::Time time = absl::InfiniteFuture();  // Inputs with event time after this stay out.
  std::optional<uint64_t> sequence;          // Source sequences from this on stay out.

  // Parses --to: an RFC 3339 time or a sequence number; empty: no cut.
  static absl::StatusOr<ReplayCut> Parse(const std::string& to);
  bool cuts() const { return sequence.has_value() || time != absl::InfiniteFuture(); }
};

struct ReplayOptions {
  std::string from;  // The recorded log (a copy; opened with its lock, read only).
  std::string into;  // The fresh log; must not exist or be empty.
  ReplayCut to;
  bool compare = false;
  // Instead of the recorded rule-set activations, this one (see above).
  std::optional<rules::LoadedRuleSet> rule_set;
  // Progress goes here (stderr for the command line).
  std::ostream* progress = nullptr;
  ProgressOptions::Style progress_style = ProgressOptions::Style::kAuto;
  size_t batch = 4096;  // Inputs per append.
  // The stage runs on a thread of its own during the copy, stepping live whenever the
  // copy appended more (it reads what was just copied while that is still in memory, and
  // the two use two cores). False: it steps on the copying thread every `derive_every`
  // copied inputs (0: only before people's commands), at points that do not depend on
  // timing (tests). Either way it derives the same events: a live step processes a prefix
  // of the final order.
  bool stage_thread = true;
  uint64_t derive_every = 1 << 18;
};

struct ReplayResult {
  uint32_t partitions = 0;
  uint64_t source_events = 0;       // Scanned in the recorded log (up to the cut).
  uint64_t inputs = 0;              // Copied.
  uint64_t recorded_derived = 0;    // Derived events of the recorded log that were left out.
  uint64_t left_out_rule_sets = 0;  // Recorded activations replaced (backtest).
  uint64_t derived = 0;             // Derived again.
  rules::RulesStageStats stage;
  absl::Duration copy_time;    // Wall time of the copy (with the stage thread, overlapping
                               // most of derive_time).
  absl::Duration derive_time;  // The stage's stepping, during the copy and after it.
  absl::Duration compare_time;
  // With `compare`: the comparison of the recorded log ("recorded") with the replay
  // ("replay"), up to the cut's time.
  std::optional<projections::DerivedDiff> comparison;
};

// Replays `from` into `into`. The fresh log is built under a temporary name beside `into`
// and renamed when complete: stopped (Ctrl-C: CANCELLED) or failed, nothing is left at
// `into`. FAILED_PRECONDITION when a log is in use or `into` exists; the messages say what
// to do.
absl::StatusOr<ReplayResult> Replay(const ReplayOptions& options);

// The report of a replay for people: what was copied and derived, the rates, and the
// comparison's verdict with the first difference.
void PrintReplay(const ReplayOptions& options, const ReplayResult& result, std::ostream& out);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_REPLAY_H_
