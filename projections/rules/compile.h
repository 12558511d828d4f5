// Rule sets: loading a YAML file onto `cityops.v1.RuleSet`, checking it, and compiling it
// into the form the rules engine evaluates.
//
// Loading is strict (kernel/yaml_proto.h): unknown keys, wrong types and malformed
// durations are errors naming the file, line and column. Checking then rejects what
// parses but cannot run: duplicate or malformed rule ids, a rule without a kind, metrics
// the device kind does not have, thresholds out of range, windows that are not positive,
// grid compounds naming unknown rules, case policies without a category or department,
// a threshold whose clear condition overlaps its raise condition (some reading would
// satisfy both), and so on; each error is prefixed with `file:line:column` of the
// offending key.
#ifndef CITYOPS_PROJECTIONS_RULES_COMPILE_H_
#define CITYOPS_PROJECTIONS_RULES_COMPILE_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "catalogue/catalogue.h"
#include "catalogue/kinds.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/rules.pb.h"
#include "kernel/yaml_proto.h"
#include "projections/rules/metric.h"

namespace cityops::rules {

// A rule set as loaded from a file: checked against a catalogue, with its text and
// digest, and that catalogue.
struct LoadedRuleSet {
  v1::RuleSet rule_set;
  std::string source_yaml;
  std::string source_path;
  std::string sha256;  // Of source_yaml, lowercase hex.
  v1::ActivatedCatalogue catalogue;
};

// Reads, parses and checks a rule set file against `catalogue` (null: the built-in one).
absl::StatusOr<LoadedRuleSet> LoadRuleSetFile(
    const std::string& path, const catalogue::LoadedCatalogue* catalogue = nullptr);
// The same for text; `file` names it in errors.
absl::StatusOr<LoadedRuleSet> LoadRuleSetText(
    std::string_view yaml, std::string_view file,
    const catalogue::LoadedCatalogue* catalogue = nullptr);

// Checks a parsed rule set against the kinds of a catalogue (null: the built-in one).
// With `map`, errors name the file, line and column.
absl::Status CheckRuleSet(const v1::RuleSet& rule_set, const kernel::YamlSourceMap* map = nullptr,
                          std::shared_ptr<const catalogue::KindTable> kinds = nullptr);

// `loaded` as the log records it beside a rule set: text, digest and the parsed catalogue.
v1::ActivatedCatalogue ActivatedCatalogueOf(const catalogue::LoadedCatalogue& loaded);

// The `RulesetActivated` event that makes `loaded` the active rule set with its catalogue
// (stream `ruleset/<name>`), stamped with `event_time`.
v1::Event RulesetActivatedEvent(const LoadedRuleSet& loaded, absl::Time event_time);

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

enum class Op { kAbove, kAtLeast, kBelow, kAtMost, kEquals };

struct CompiledCondition {
  MetricRef metric;
  Op op = Op::kAbove;
  double operand = 0;
};

// The outcome of testing conditions against a reading that may lack some metrics.
enum class Truth { kFalse, kTrue, kUnknown };

struct CompiledConditionSet {
  bool all = true;
  std::vector<CompiledCondition> conditions;
  bool empty() const { return conditions.empty(); }
  // kUnknown when the reading does not carry enough of the metrics to decide.
  Truth Evaluate(const Reading& reading) const;
};

enum class RuleType { kThreshold, kRateOfChange, kFaultCode, kAbsence, kStuck, kGridCompound };

struct CompiledRule {
  const v1::Rule* rule = nullptr;  // Into CompiledRuleSet::rule_set.
  int index = 0;                   // Position in the rule set.
  int kind = -1;                   // The kind it watches, in kinds(); -1 for grid compounds.
  RuleType type = RuleType::kThreshold;
  // Threshold and fault code.
  CompiledConditionSet raise;
  CompiledConditionSet clear;  // Empty: "raise no longer holds".
  absl::Duration hold = absl::ZeroDuration();
  absl::Duration clear_hold = absl::ZeroDuration();
  // Rate of change and stuck.
  MetricRef metric;
  absl::Duration window = absl::ZeroDuration();
  // Fault codes, and the name of the kind's list of active codes.
  std::vector<int32_t> codes;
  std::string codes_metric;
  // Grid compound: indexes of the rules it counts.
  std::vector<int> source_rules;
  // Absence.
  absl::Duration default_interval = absl::ZeroDuration();
  // Stuck.
  absl::Duration min_duration = absl::ZeroDuration();
  CompiledConditionSet only_while;
  // Case policy.
  absl::Duration verification_window = absl::ZeroDuration();
};

// A checked rule set in the form the engine evaluates. Owns its RuleSet.
class CompiledRuleSet {
 public:
  // Against the kinds of `kinds`. A rule set written into a log before the catalogue
  // names its kinds by the typed enum; the compiled copy names them by id, as one written
  // now would, so that the two compare equal.
  static absl::StatusOr<std::unique_ptr<CompiledRuleSet>> Compile(
      const v1::RuleSet& rule_set, std::shared_ptr<const catalogue::KindTable> kinds,
      const kernel::YamlSourceMap* map = nullptr);
  // The rule set of an activation, against its catalogue (the typed kinds alone for an
  // activation written before the catalogue).
  static absl::StatusOr<std::unique_ptr<CompiledRuleSet>> Compile(
      const v1::RulesetActivated& activated);

  const v1::RuleSet& rule_set() const { return rule_set_; }
  const std::vector<CompiledRule>& rules() const { return rules_; }
  const catalogue::KindTable& kinds() const { return *kinds_; }
  // Indexes of the device rules for kind `kind` (its index in kinds(); not grid
  // compounds), in rule-set order.
  const std::vector<int>& RulesFor(int kind) const;
  // Indexes of the grid compounds that count alerts of rule `index`.
  const std::vector<int>& CompoundsCounting(int index) const;
  // The position of rule `id`, or nullopt.
  std::optional<int> IndexOf(std::string_view id) const;
  // The policy for reports of `category_code`, or nullptr.
  const v1::CategoryPolicy* Category(std::string_view category_code) const;

 private:
  CompiledRuleSet() = default;
  v1::RuleSet rule_set_;
  std::shared_ptr<const catalogue::KindTable> kinds_;
  std::vector<CompiledRule> rules_;
  std::vector<std::vector<int>> by_kind_;
  std::vector<std::vector<int>> compounds_counting_;
  absl::flat_hash_map<std::string, int> categories_;
  absl::flat_hash_map<std::string, int> ids_;
};

}  // namespace cityops::rules

#endif  // CITYOPS_PROJECTIONS_RULES_COMPILE_H_
