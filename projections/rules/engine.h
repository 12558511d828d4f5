// The rules engine: a deterministic state machine that turns input events into derived
// events (alerts, cases, tickets, overdue lights, automatic verification and closing).
//
// Pure: no I/O and no clock. The caller (rules_stage.h) feeds it the log's input events
// in one fixed order together with the stage time at each event; the engine answers with
// the events to append. Given the same inputs in the same order it answers with the same
// events, byte for byte, which is what makes a replay reproduce the live run.
//
// The engine applies what it derives to its own state at once (an alert it raises is
// active for the next reading), so the caller must not feed the derived events back.
// Everything else that touches the state arrives as input: readings, registrations,
// clock ticks, reports, human case commands and rule-set activations.
#ifndef CITYOPS_PROJECTIONS_RULES_ENGINE_H_
#define CITYOPS_PROJECTIONS_RULES_ENGINE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/snapshot.pb.h"
#include "cityops/v1/views.pb.h"
#include "kernel/types.h"
#include "projections/device_key.h"
#include "projections/rules/compile.h"

namespace cityops::rules {

// The provenance stage of every event the engine derives. Events with this stage are
// the engine's own output and never its input.
inline constexpr char kRulesStage[] = "rules";

// An event to append to `partition`.
struct Derived {
  kernel::Partition partition;
  v1::Event event;
};

// A RulesetActivated event whose rules did not compile: the engine ignored it.
struct RejectedRuleSet {
  std::string name;
  std::string sha256;
  kernel::EventPosition position;  // Of the RulesetActivated event.
  std::string error;
};

struct EngineCounters {
  uint64_t inputs = 0;
  uint64_t readings = 0;
  uint64_t alerts_raised = 0;
  uint64_t alerts_cleared = 0;
  uint64_t cases_opened = 0;
  uint64_t cases_linked = 0;
  uint64_t tickets = 0;
  uint64_t overdue = 0;
  uint64_t auto_closed = 0;
  uint64_t rejected_rule_sets = 0;  // RulesetActivated events whose rules did not compile.

  // The counts of `this` minus those of `base` (an earlier snapshot).
  EngineCounters Since(const EngineCounters& base) const;
};

class RulesEngine {
 public:
  RulesEngine();
  ~RulesEngine();
  RulesEngine(const RulesEngine&) = delete;
  RulesEngine& operator=(const RulesEngine&) = delete;

  // Feeds one input event at stage time `now` (non-decreasing from call to call). First
  // fires every timer due at or before `now`, then reacts to the event. Appends what
  // follows to `out`. `event` must carry its partition and sequence.
  void Process(const v1::Event& event, absl::Time now, std::vector<Derived>* out);
  // The same for the reading event at `position`, given its reading alone: the rules
  // stage's fast path, which decodes only the reading of a stored reading event.
  void ProcessReading(const Reading& reading, kernel::EventPosition position, absl::Time now,
                      std::vector<Derived>* out);

  // The latest stage time fed in so far (InfinitePast before the first event). An event
  // fed at or before it fires no timer; a clock tick fed so changes nothing at all.
  absl::Time now() const { return now_; }
  // True once a rule set is active.
  bool has_rules() const { return rules_ != nullptr; }
  const CompiledRuleSet* rules() const { return rules_.get(); }
  // The device kinds of the rules in force (the typed kinds alone before any): decode
  // readings for ProcessReading against these.
  const catalogue::KindTable& kinds() const {
    return rules_ != nullptr ? rules_->kinds() : *catalogue::KindTable::TypedOnly();
  }
  const EngineCounters& counters() const { return counters_; }
  // Every rule set the engine ignored so far, in the order met.
  const std::vector<RejectedRuleSet>& rejected_rule_sets() const { return rejected_; }
  size_t open_cases() const { return cases_.size(); }
  size_t pending_timers() const { return timers_.size(); }
  size_t devices() const { return devices_.size(); }

  // Snapshots (proto/cityops/v1/snapshot.proto). ExportState writes the whole state into
  // `out`: everything the engine's next answers depend on, in a fixed order (devices and
  // cases by id, timers in their order), so one state has one serialization. The
  // compiled rules are referred to by the position of their RulesetActivated event.
  // FAILED_PRECONDITION (and `out` is unusable) if a time is not a whole number of
  // nanoseconds, which times taken from the log never are.
  absl::Status ExportState(v1::RulesEngineState* out) const;
  // Replaces the state of the engine with `state`. `ruleset_event` is the event at
  // `state.rule_set()` as read from the log (null when `state` has no rule set); its rule
  // set is compiled again, and must have the recorded sha256. DATA_LOSS, leaving the
  // engine as it was, if `state` is inconsistent (an index out of range, a duplicate id)
  // or the event is not the rule set it names.
  absl::Status RestoreState(const v1::RulesEngineState& state, const v1::Event* ruleset_event);

 private:
  struct RuleMemory;
  struct RuleState;
  struct DeviceState;
  struct CaseTrack;
  struct Timer {
    absl::Time due;
    int kind;
    std::string key;  // Device key or case id.
    int64_t a = 0;    // Rule index or stage entry.
    int64_t b = 0;    // Overdue level.
    // The event that scheduled the timer: what the events it derives cite as their cause,
    // whichever later event happens to carry stage time past `due`. Not part of the
    // timer's identity (the ordering below).
    kernel::EventPosition cause{};
    bool operator<(const Timer& o) const {
      return std::tie(due, kind, key, a, b) < std::tie(o.due, o.kind, o.key, o.a, o.b);
    }
  };
  struct Context;

  void FireTimers(absl::Time now, Context& ctx);
  void OnTimer(const Timer& t, Context& ctx);
  Context Begin(uint32_t partition, uint64_t sequence, absl::Time now, std::vector<Derived>* out);
  void OnReading(const Reading& reading, Context& ctx);
  void OnRegistration(const v1::Event& event, Context& ctx);
  // Emits CaseRelocated for the open cases of `dev` whose grid or location differ from
  // its (new) registration, the `registration_version`-th of its registry stream.
  void RelocateOpenCases(DeviceState& dev, uint64_t registration_version, Context& ctx);
  void OnRuleset(const v1::Event& event, Context& ctx);
  void OnReported(const v1::Event& event, Context& ctx);
  void OnCaseEvent(const v1::Event& event, Context& ctx);

  void Evaluate(const CompiledRule& rule, DeviceState& dev, RuleState& st, const Reading& reading,
                absl::Time previous, Context& ctx);
  // The raise half of a rule whose condition must hold for `rule.hold` (threshold, fault
  // code), given what this reading makes of the condition: a run starts (`describe` then
  // sets the alert's metric, value and threshold), gathers its readings, is abandoned when
  // the condition turns false, and raises once it has held long enough (else its timer
  // raises it).
  void PendRaise(const CompiledRule& rule, DeviceState& dev, RuleState& st, Truth raise,
                 const v1::EventRef& ref, Context& ctx, absl::FunctionRef<void()> describe);
  void EvaluateThreshold(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                         const Reading& reading, const v1::EventRef& ref, Context& ctx);
  void EvaluateRate(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                    const Reading& reading, const v1::EventRef& ref, Context& ctx);
  void EvaluateFault(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                     const Reading& reading, const v1::EventRef& ref, Context& ctx);
  void EvaluateStuck(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                     const Reading& reading, const v1::EventRef& ref, Context& ctx);
  bool Applies(const CompiledRule& rule, const DeviceState& dev) const;
  // True if a reading that does not trigger `rule` may skip it, given its state (or none).
  static bool IsIdle(const CompiledRule& rule, const RuleState* st);

  void Raise(const CompiledRule& rule, DeviceState& dev, RuleState& st, std::string metric,
             double value, double threshold, Context& ctx);
  void Clear(const CompiledRule& rule, DeviceState& dev, RuleState& st, double value,
             const v1::EventRef* reading, Context& ctx);
  void CountForCompounds(const CompiledRule& rule, const DeviceState& dev, bool raised,
                         Context& ctx);
  void OpenCase(const CompiledRule& rule, DeviceState& dev, RuleState& st, Context& ctx);

  // Appends a derived event and, for case events, applies it to the tracked case.
  void Emit(kernel::Partition partition, v1::Event event, std::string key, Context& ctx);
  void ApplyToCase(const v1::Event& event, Context& ctx);
  void ScheduleCaseTimers(CaseTrack& track);
  // CaseOverdue at `level` for the case's current stage, unless it is that late already.
  void EmitOverdue(CaseTrack& track, v1::OverdueLevel level, Context& ctx);
  void MaybeScheduleVerification(CaseTrack& track, Context& ctx);
  void AddTimer(Timer t);
  void CancelTimer(const Timer& t);

  DeviceState& Device(std::string_view key);
  // The index of kind `kind_id` in kinds(), or -1.
  int KindIndex(std::string_view kind_id) const;
  // The state of rule `rule_index` (of the active set) for `dev`, made on first use.
  RuleState& StateOf(DeviceState& dev, int rule_index);
  RuleMemory& MemoryOf(DeviceState& dev, std::string_view rule_id);
  // The state of the active rule `rule_id` for `dev`, or nullptr if it has none.
  const RuleState* FindState(const DeviceState& dev, std::string_view rule_id) const;

  std::unique_ptr<CompiledRuleSet> rules_;
  // The RulesetActivated event `rules_` was compiled from, and its sha256.
  kernel::EventPosition rules_position_{};
  std::string rules_sha256_;
  // By device id (grid compounds: "grid/<code>"); node map: states stay where they are.
  projections::DeviceMap<DeviceState> devices_;
  absl::flat_hash_map<std::string, std::unique_ptr<CaseTrack>> cases_;
  // Open cases by grid and category, for linking reports: key "<grid>|<category>".
  absl::flat_hash_map<std::string, std::vector<std::string>> open_by_grid_category_;
  std::set<Timer> timers_;
  // The event being processed, or the cause of the timer being fired: what timers added
  // now cite as their cause.
  kernel::EventPosition cause_;
  absl::Time now_ = absl::InfinitePast();
  EngineCounters counters_;
  std::vector<RejectedRuleSet> rejected_;
  Reading reading_;  // Process's decoding buffer.
};

}  // namespace cityops::rules

#endif  // CITYOPS_PROJECTIONS_RULES_ENGINE_H_
