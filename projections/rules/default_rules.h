// The default rule set (rules/default.yaml), compiled into the binary so that the daemon
// and the CLI have it wherever they run.
#ifndef CITYOPS_PROJECTIONS_RULES_DEFAULT_RULES_H_
#define CITYOPS_PROJECTIONS_RULES_DEFAULT_RULES_H_

#include <string_view>

namespace cityops::rules {

// The name errors use for it.
inline constexpr char kDefaultRuleSetFile[] = "rules/default.yaml";

// The text of rules/default.yaml as it was at build time.
std::string_view DefaultRuleSetYaml();

}  // namespace cityops::rules

#endif  // CITYOPS_PROJECTIONS_RULES_DEFAULT_RULES_H_
