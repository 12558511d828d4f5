#include "daemon/rule_activation.h"

#include <utility>
#include <vector>

#include "catalogue/catalogue.h"
#include "kernel/proto_time.h"
#include "projections/rules/default_rules.h"

namespace cityops::daemon {

absl::StatusOr<rules::LoadedRuleSet> LoadConfiguredRuleSet(const std::string& file,
                                                           const std::string& catalogue_file) {
  absl::StatusOr<catalogue::LoadedCatalogue> catalogue =
      catalogue::LoadConfiguredCatalogue(catalogue_file);
  if (!catalogue.ok()) return catalogue.status();
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      file.empty() ? rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile,
                                            &*catalogue)
                   : rules::LoadRuleSetFile(file, &*catalogue);
  if (!loaded.ok()) return loaded;
  if (absl::Status s = catalogue::CheckRuleTextAgainstCatalogue(
          *catalogue, loaded->source_yaml, loaded->source_path, catalogue::RuleCheck::kDevices);
      !s.ok()) {
    return s;
  }
  return loaded;
}

absl::StatusOr<std::optional<v1::RulesetActivated>> ActiveRuleSetInLog(
    const kernel::EventLog& log) {
  std::vector<std::pair<std::string, kernel::StreamVersion>> streams;
  absl::Status listed =
      log.ListStreams("ruleset/", [&](std::string_view id, kernel::StreamVersion v) {
        streams.emplace_back(std::string(id), v);
        return true;
      });
  if (!listed.ok()) return listed;
  // Every activation is appended to partition 0, so the latest is the one with the
  // highest sequence there.
  std::optional<v1::RulesetActivated> latest;
  uint64_t latest_sequence = 0;
  for (const auto& [id, version] : streams) {
    absl::StatusOr<std::vector<v1::Event>> events = log.ReadStream(id, version, 1);
    if (!events.ok()) return events.status();
    for (const v1::Event& e : *events) {
      if (!e.has_ruleset_activated()) continue;
      if (!latest.has_value() || e.sequence() > latest_sequence) {
        latest_sequence = e.sequence();
        latest = e.ruleset_activated();
      }
    }
  }
  return latest;
}

absl::StatusOr<Activation> ActivateRuleSet(kernel::EventLog& log,
                                           const rules::LoadedRuleSet& loaded, absl::Time now) {
  absl::StatusOr<std::optional<v1::RulesetActivated>> active = ActiveRuleSetInLog(log);
  if (!active.ok()) return active.status();
  if (active->has_value() && (*active)->sha256() == loaded.sha256 &&
      (*active)->name() == loaded.rule_set.name() &&
      (*active)->catalogue().sha256() == loaded.catalogue.sha256()) {
    return Activation{};
  }
  kernel::AppendBatch batch{kernel::Partition(0)};
  batch.Add(rules::RulesetActivatedEvent(loaded, now));
  absl::StatusOr<kernel::AppendResult> appended = log.Append(std::move(batch));
  if (!appended.ok()) return appended.status();
  return Activation{.activated = true, .position = appended->outcomes[0].position};
}

}  // namespace cityops::daemon
