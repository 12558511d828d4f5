#include "app/catalogue_commands.h"

#include "absl/strings/str_format.h"
#include "catalogue/catalogue.h"
#include "daemon/rule_activation.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"

namespace cityops::app {

absl::Status CatalogueCheckCommand(const CatalogueCheckOptions& options, std::ostream& out) {
  absl::StatusOr<catalogue::LoadedCatalogue> loaded =
      catalogue::LoadConfiguredCatalogue(options.file);
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
      daemon::LoadConfiguredRuleSet(options.with_default_rules ? "" : options.rules, options.file);
  if (!rule_set.ok()) return rule_set.status();
  // The daemon checks the devices only; this checks the categories too.
  if (absl::Status s = catalogue::CheckRuleTextAgainstCatalogue(
          *loaded, rule_set->source_yaml, rule_set->source_path,
          catalogue::RuleCheck::kDevicesAndCategories);
      !s.ok()) {
    return s;
  }
  out << absl::StrFormat("%s: rule set '%s' fits the catalogue: %d rules\n", rule_set->source_path,
                         rule_set->rule_set.name(), rule_set->rule_set.rules_size());
  return absl::OkStatus();
}

}  // namespace cityops::app
