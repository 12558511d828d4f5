// The catalogue: a city's device kinds and case categories as data
// (`cityops.v1.Catalogue`, proto/cityops/v1/catalogue.proto; the shipped one is
// catalogue/city.yaml, compiled in).
//
// Loading is strict (kernel/yaml_proto.h): unknown keys, wrong types and malformed
// durations are errors naming the file, line and column. Checking then rejects what
// parses but cannot be used, each error prefixed with `file:line:column` of the offending
// key:
//   * ids, metric and archive field names that are not lowercase snake_case, or repeat;
//   * a kind without names in both languages, a department, metrics or a positive
//     reporting interval;
//   * a number or counter metric without a unit or without finite bounds min < max; a
//     flag or code with bounds; a code metric without its codes, or with one repeated;
//   * a kind mapped onto a typed reading message (`typed`) whose metrics are not exactly
//     that message's fields, of matching types, or whose id is not the typed kind's name;
//     a catalogue-only kind whose id is a typed kind's name;
//   * a simulation model of a metric the kind does not have, a baseline outside the
//     metric's bounds, shares that add up to more than the whole city;
//   * a category without a code (unique, 2 to 8 capitals and digits), both names, a
//     department, a dispatch level, or all five stage allowances.
// CheckRulesAgainstCatalogue then checks a rule set against a catalogue: every kind and
// metric a rule tests, and every category a rule or the rule set's category table
// names, must be in the catalogue (a catalogue that drops a kind still in use is refused
// with the rule named), and a category the rule set lists must have the catalogue's
// department and deadlines.
#ifndef CITYOPS_CATALOGUE_CATALOGUE_H_
#define CITYOPS_CATALOGUE_CATALOGUE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cityops/v1/catalogue.pb.h"
#include "cityops/v1/rules.pb.h"
#include "kernel/yaml_proto.h"

namespace cityops::catalogue {

// A catalogue as loaded from a file: checked, with its text.
struct LoadedCatalogue {
  v1::Catalogue catalogue;
  std::string source_yaml;
  std::string source_path;
};

// Reads, parses and checks a catalogue file. NOT_FOUND names the path when it cannot be
// read; INVALID_ARGUMENT says what is wrong and where.
absl::StatusOr<LoadedCatalogue> LoadCatalogueFile(const std::string& path);
// The same for text; `file` names it in errors.
absl::StatusOr<LoadedCatalogue> LoadCatalogueText(std::string_view yaml, std::string_view file);

// Checks a parsed catalogue. With `map`, errors name the file, line and column.
absl::Status CheckCatalogue(const v1::Catalogue& catalogue,
                            const kernel::YamlSourceMap* map = nullptr);

// What of a rule set is checked against a catalogue.
enum class RuleCheck {
  // Every device kind, metric and fault code a rule tests is in the catalogue.
  kDevices,
  // Also every category a rule opens cases of, and every category of the rule set's own
  // table with the catalogue's department and deadlines. The daemon checks only devices
  // until the rules engine takes categories from the catalogue (README.md).
  kDevicesAndCategories,
};

// Checks `rule_set` against `catalogue` (both already checked on their own). The maps,
// when given, place errors in the rule set's and the catalogue's files.
absl::Status CheckRulesAgainstCatalogue(const v1::Catalogue& catalogue, const v1::RuleSet& rule_set,
                                        RuleCheck scope,
                                        const kernel::YamlSourceMap* rules_map = nullptr,
                                        const kernel::YamlSourceMap* catalogue_map = nullptr);

// The same for a rule set's text (already loaded and checked as such), both texts parsed
// again so that an error names the line in whichever file it is.
absl::Status CheckRuleTextAgainstCatalogue(const LoadedCatalogue& catalogue,
                                           std::string_view rules_yaml, std::string_view rules_file,
                                           RuleCheck scope);

// The catalogue file named by configuration, or the built-in one when `file` is empty.
absl::StatusOr<LoadedCatalogue> LoadConfiguredCatalogue(const std::string& file);

// The built-in catalogue (catalogue/city.yaml as it was at build time), loaded on first
// use. A binary whose own catalogue does not load stops with the reason.
const LoadedCatalogue& BuiltInCatalogue();

// The kind with `id`, or null.
const v1::DeviceKindSpec* FindKind(const v1::Catalogue& catalogue, std::string_view id);
// The kind whose readings may arrive as the typed message of `kind`, or null.
const v1::DeviceKindSpec* FindTypedKind(const v1::Catalogue& catalogue, v1::DeviceKind kind);
// The metric `name` of `kind`, or null.
const v1::MetricSpec* FindMetric(const v1::DeviceKindSpec& kind, std::string_view name);
// The kind a rule watches: `device_kind`, or for a rule set written into a log before
// the catalogue, its typed kind's id. Empty for a rule without one (grid compounds).
std::string RuleKindId(const v1::Rule& rule);
// The category with `code`, or null.
const v1::CategorySpec* FindCategory(const v1::Catalogue& catalogue, std::string_view code);

// The name errors use for the built-in catalogue, and its text as it was at build time.
inline constexpr char kDefaultCatalogueFile[] = "catalogue/city.yaml";
std::string_view DefaultCatalogueYaml();

}  // namespace cityops::catalogue

#endif  // CITYOPS_CATALOGUE_CATALOGUE_H_
