#include "app/rules_commands.h"

#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "analysis/backtest.h"
#include "analysis/replay.h"
#include "catalogue/catalogue.h"
#include "daemon/rule_activation.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/rules_stage.h"
#include "projections/views/views.h"

namespace cityops::app {

absl::Status RulesCheckCommand(const RulesCheckOptions& options, std::ostream& out) {
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      daemon::LoadConfiguredRuleSet(options.file, options.catalogue);
  if (!loaded.ok()) return loaded.status();
  std::map<std::string, int> by_kind;
  int cases = 0;
  for (const v1::Rule& r : loaded->rule_set.rules()) {
    ++by_kind[r.kind_case() == v1::Rule::kGridCompound ? "grid compound"
                                                       : catalogue::RuleKindId(r)];
    cases += r.case_().open_case() ? 1 : 0;
  }
  out << absl::StrFormat("%s: rule set '%s' is valid: %d rules, %d of them open cases\n",
                         loaded->source_path, loaded->rule_set.name(),
                         loaded->rule_set.rules_size(), cases);
  for (const auto& [kind, n] : by_kind) out << absl::StrFormat("  %-26s %d\n", kind, n);
  out << absl::StrFormat("  categories for reports: %d\n", loaded->rule_set.categories_size());
  out << absl::StrFormat("  sha256: %s\n", loaded->sha256);
  return absl::OkStatus();
}

absl::Status RulesActivateCommand(const RulesActivateOptions& options, std::ostream& out) {
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      daemon::LoadConfiguredRuleSet(options.file, options.catalogue);
  if (!loaded.ok()) return loaded.status();
  kernel::EventLogOptions log_options;
  log_options.path = options.data_dir;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(log_options);
  if (!log.ok()) return log.status();
  absl::StatusOr<daemon::Activation> activation =
      daemon::ActivateRuleSet(**log, *loaded, absl::Now());
  if (!activation.ok()) return activation.status();
  if (!activation->activated) {
    out << absl::StrFormat("rule set '%s' (sha256 %s) is already active in %s\n",
                           loaded->rule_set.name(), loaded->sha256.substr(0, 12), options.data_dir);
    return absl::OkStatus();
  }
  out << absl::StrFormat(
      "activated rule set '%s' (%d rules, sha256 %s) at partition 0, sequence %d\n",
      loaded->rule_set.name(), loaded->rule_set.rules_size(), loaded->sha256.substr(0, 12),
      activation->position.sequence.value());
  return absl::OkStatus();
}

namespace {

absl::Status ReplayInto(const ReplayOptions& options, std::ostream& out, std::ostream& err) {
  if (options.into.empty()) {
    return absl::InvalidArgumentError(
        "--from needs --into DIR: the fresh log to derive into (a new directory)");
  }
  absl::StatusOr<analysis::ReplayCut> cut = analysis::ReplayCut::Parse(options.to);
  if (!cut.ok()) return cut.status();
  analysis::ReplayOptions replay;
  replay.from = options.from;
  replay.into = options.into;
  replay.to = *cut;
  replay.compare = options.compare;
  replay.progress = &err;
  absl::StatusOr<analysis::ReplayResult> result = analysis::Replay(replay);
  if (!result.ok()) return result.status();
  analysis::PrintReplay(replay, *result, out);
  if (result->comparison.has_value() && result->comparison->difference.has_value()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the replay differs from the recorded log (above: where, with both events); the log "
        "at %s holds the replay for a closer look",
        options.into));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status BacktestCommand(const BacktestOptions& options, std::ostream& out, std::ostream& err) {
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      daemon::LoadConfiguredRuleSet(options.rules, options.catalogue);
  if (!loaded.ok()) return loaded.status();
  analysis::BacktestOptions backtest;
  backtest.data_dir = options.data_dir;
  backtest.rule_set = std::move(*loaded);
  if (!options.from.empty()) {
    absl::StatusOr<absl::Time> t = analysis::ParseTimeFlag("--from", options.from);
    if (!t.ok()) return t.status();
    backtest.from = *t;
  }
  if (!options.to.empty()) {
    absl::StatusOr<absl::Time> t = analysis::ParseTimeFlag("--to", options.to);
    if (!t.ok()) return t.status();
    backtest.to = *t;
  }
  backtest.keep = options.keep;
  backtest.examples = options.examples;
  backtest.progress = &err;
  absl::StatusOr<analysis::BacktestReport> report = analysis::Backtest(backtest);
  if (!report.ok()) return report.status();
  if (options.json) {
    out << analysis::BacktestJson(*report) << "\n";
  } else {
    analysis::PrintBacktest(*report, out);
  }
  return absl::OkStatus();
}

absl::Status ReplayCommand(const ReplayOptions& options, std::ostream& out, std::ostream& err) {
  if (!options.from.empty()) return ReplayInto(options, out, err);
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError(
        "replay needs --from LOG --into DIR (derive again into a fresh log) or --data-dir D "
        "(continue the stages over D); see cityops replay --help");
  }
  if (!options.into.empty() || !options.to.empty() || options.compare) {
    return absl::InvalidArgumentError("--into, --to and --compare go with --from, not --data-dir");
  }
  kernel::EventLogOptions log_options;
  log_options.path = options.data_dir;
  log_options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(log_options);
  if (!log.ok()) return log.status();
  const absl::Time started = absl::Now();
  rules::RulesStageOptions stage_options;
  stage_options.log = log->get();
  absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage = rules::RulesStage::Open(stage_options);
  if (!stage.ok()) return stage.status();
  if (absl::Status s = (*stage)->CatchUp(/*drain=*/true); !s.ok()) return s;
  const rules::RulesStageStats stats = (*stage)->Stats();
  const absl::Duration took = absl::Now() - started;
  out << absl::StrFormat(
      "rules stage: replayed %d events already covered by its checkpoints, processed %d new "
      "ones in %s; appended %d derived events\n",
      stats.replayed, stats.processed,
      absl::FormatDuration(absl::Trunc(took, absl::Milliseconds(1))), stats.derived);
  const rules::EngineCounters& c = stats.engine;
  out << absl::StrFormat(
      "  since this run's start: %d alerts raised, %d cleared; %d cases opened, %d linked; "
      "%d tickets; %d overdue lights; %d closed by their rule\n",
      c.alerts_raised, c.alerts_cleared, c.cases_opened, c.cases_linked, c.tickets, c.overdue,
      c.auto_closed);
  if (c.rejected_rule_sets > 0) {
    out << absl::StrFormat("  warning: %d rule sets in the log did not compile and were ignored\n",
                           c.rejected_rule_sets);
  }

  // The read models live beside the log, in <data dir>/views.
  absl::StatusOr<std::unique_ptr<views::Projections>> projections =
      views::Projections::Open({.log = log->get(), .dir = options.data_dir + "/views"});
  if (!projections.ok()) return projections.status();
  const absl::Time folding = absl::Now();
  if (absl::Status s =
          options.rebuild_views ? (*projections)->Rebuild() : (*projections)->CatchUp();
      !s.ok()) {
    return s;
  }
  out << absl::StrFormat(
      "read models (%s/views, generation %d): %s in %s\n", options.data_dir,
      (*projections)->generation(), options.rebuild_views ? "rebuilt from sequence 0" : "caught up",
      absl::FormatDuration(absl::Trunc(absl::Now() - folding, absl::Milliseconds(1))));
  absl::StatusOr<v1::Statistics> s = (*projections)->GetStatistics();
  if (!s.ok()) return s.status();
  out << absl::StrFormat(
      "  devices: %d (%d online, %d unregistered); alerts active: %d; tickets: %d\n",
      s->devices_total(), s->devices_online(), s->devices_unregistered(), s->alerts_active(),
      s->tickets_total());
  out << absl::StrFormat(
      "  cases: %d; handled at street level %d, dispatched by the district %d, urged %d; "
      "yellow %d, red %d; closed %d (close rate %.1f%%, on time %.1f%%)\n",
      s->cases_total(), s->handled_at_street_level(), s->dispatched_by_district(), s->urged(),
      s->overdue_yellow(), s->overdue_red(), s->closed(), 100 * s->close_rate(),
      100 * s->on_time_close_rate());
  auto list = [&](const char* what, const auto& counts) {
    std::string line;
    for (const v1::Count& n : counts) line += absl::StrFormat(" %s=%d", n.key(), n.count());
    if (!line.empty()) out << "  " << what << ":" << line << "\n";
  };
  list("by source", s->by_source());
  list("by stage", s->by_stage());
  list("by district", s->by_district());
  return absl::OkStatus();
}

}  // namespace cityops::app
