#include "app/catalogue_commands.h"

#include "absl/strings/str_format.h"
#include "catalogue/catalogue.h"
#include "daemon/rule_activation.h"
#include "kernel/proto_time.h"
#include "kernel/yaml_proto.h"
#include "projections/rules/compile.h"

namespace cityops::app {

absl::Status CatalogueCheckCommand(const CatalogueCheckOptions& options, std::ostream& out) {
  absl::StatusOr<catalogue::LoadedCatalogue> loaded =
      options.file.empty() ? catalogue::LoadCatalogueText(catalogue::DefaultCatalogueYaml(),
                                                          catalogue::kDefaultCatalogueFile)
                           : catalogue::LoadCatalogueFile(options.file);
  if (!loaded.ok()) return loaded.status();
  const v1::Catalogue& c = loaded->catalogue;
  out << absl::StrFormat("%s: catalogue '%s' is valid: %d device kinds, %d case categories\n",
                         loaded->source_path, c.name(), c.kinds_size(), c.categories_size());
  for (const v1::DeviceKindSpec& k : c.kinds()) {
    // The Chinese name last: its characters are two columns wide.
    out << absl::StrFormat(
        "  %-22s %2d metrics, every %-4s %-21s %s%s\n", k.id(), k.metrics_size(),
        absl::FormatDuration(kernel::FromDurationProto(k.reporting_interval())), k.department(),
        k.name().zh(), k.typed() != v1::DEVICE_KIND_UNSPECIFIED ? " (also typed readings)" : "");
  }
  if (options.rules.empty() && !options.with_default_rules) return absl::OkStatus();

  absl::StatusOr<rules::LoadedRuleSet> rule_set =
      daemon::LoadConfiguredRuleSet(options.with_default_rules ? "" : options.rules);
  if (!rule_set.ok()) return rule_set.status();
  // Parsed again, with the maps that place an error in either file.
  v1::RuleSet parsed_rules;
  kernel::YamlSourceMap rules_map;
  v1::Catalogue parsed_catalogue;
  kernel::YamlSourceMap catalogue_map;
  if (absl::Status s = kernel::ParseYamlToProto(rule_set->source_yaml, rule_set->source_path,
                                                &parsed_rules, &rules_map);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = kernel::ParseYamlToProto(loaded->source_yaml, loaded->source_path,
                                                &parsed_catalogue, &catalogue_map);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = catalogue::CheckRulesAgainstCatalogue(parsed_catalogue, parsed_rules,
                                                             &rules_map, &catalogue_map);
      !s.ok()) {
    return s;
  }
  out << absl::StrFormat("%s: rule set '%s' fits the catalogue: %d rules\n", rule_set->source_path,
                         parsed_rules.name(), parsed_rules.rules_size());
  return absl::OkStatus();
}

}  // namespace cityops::app
