// The analysts' replay and backtest against a bare scan plus a bare append of the same
// events, in one run.
//
// Fills a log with a simulated scenario (bench/scenario_log.h), runs the rules stage over
// it (drain) so that it holds derived events as a daemon's log does, waits for the fill's
// compactions, then times on that log:
//   bare         every event of the recorded log read raw with EventLog::Scan and written
//                raw into a bare RocksDB with the log's options (the same keys and bytes,
//                batches of 4096, no WAL and a flush at the end, as the replay writes
//                its fresh log): the least any copy of the log costs.
//   replay       analysis::Replay into a fresh log: the recorded inputs copied in recorded
//                order (parsed, filtered, appended) and the rules stage run over them; the
//                ratio is the bare rate over the same number of recorded events.
//   compare      the same replay's derived events compared with the recorded ones
//                (projections/derived_diff.h), timed on its own.
//   backtest     analysis::Backtest with the default rules' flood thresholds 5 cm lower:
//                the replay, then both logs read for the report.
// Prints a table and one JSON line (`json: {...}`). See bench/README.md.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "analysis/backtest.h"
#include "analysis/open_log.h"
#include "analysis/replay.h"
#include "bench/bare_rocksdb.h"
#include "bench/measure.h"
#include "bench/scenario_log.h"
#include "bench/scratch_dir.h"
#include "kernel/log_format.h"
#include "projections/rules/rules_stage.h"
#include "rocksdb/write_batch.h"

namespace cityops::bench {
namespace {

struct BenchOptions : ScenarioOptions {
  std::string dir;
  bool backtest = true;
  bool backtest_only = false;
  bool stage_thread = true;
  uint64_t derive_every = analysis::ReplayOptions().derive_every;
};

int Run(int argc, char** argv) {
  BenchOptions o;
  o.devices = 100'000;
  o.hours = 1;
  o.scenario = "normal";
  CLI::App app("Replay and backtest against a bare scan plus append of the same log.",
               "replay_bench");
  app.add_option("--devices", o.devices, "Simulated devices")->capture_default_str();
  app.add_option("--hours", o.hours, "Simulated hours")->capture_default_str();
  app.add_option("--partitions", o.partitions, "Log partitions")->capture_default_str();
  app.add_option("--scenario", o.scenario, "normal, typhoon or elevator-wave")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the city and the simulation")->capture_default_str();
  app.add_option("--dir", o.dir, "Scratch directory (default: a fresh one under $TMPDIR)");
  app.add_flag("!--no-backtest", o.backtest, "Skip the backtest");
  app.add_flag("--backtest-only", o.backtest_only,
               "Fill, then only the backtest (no bare copy, replay or compare): the day-sized run");
  app.add_flag("!--no-stage-thread", o.stage_thread,
               "Run the stage on the copying thread, every --derive-every inputs");
  app.add_option("--derive-every", o.derive_every,
                 "With --no-stage-thread: copied inputs between the stage's steps during the "
                 "copy (0: at the end only)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.backtest_only && !o.backtest) {
    std::fprintf(stderr, "replay_bench: --backtest-only and --no-backtest exclude each other\n");
    return 2;
  }

  const ScratchDir dir(o.dir, "cityops-replay-bench-XXXXXX");
  const std::string recorded_dir = dir.path() + "/recorded";
  uint64_t events = 0;
  {
    absl::StatusOr<std::unique_ptr<kernel::EventLog>> opened =
        kernel::EventLog::Open({.path = recorded_dir, .durability = kernel::Durability::kBuffered});
    if (!opened.ok()) throw std::runtime_error(opened.status().ToString());
    auto t = SteadyClock::now();
    const Filled filled = Fill(**opened, o);
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open({.log = opened->get()});
    if (!stage.ok()) throw std::runtime_error(stage.status().ToString());
    if (absl::Status s = (*stage)->CatchUp(/*drain=*/true); !s.ok()) {
      throw std::runtime_error(s.ToString());
    }
    for (kernel::Partition p : (*opened)->Partitions()) {
      events += (*opened)->NextSequence(p).value();
    }
    std::printf(
        "recorded log: %s scenario, %zu devices, %.1f h on %u partitions: %llu readings, "
        "%llu derived, %llu events in all; filled and derived in %.1f s\n",
        o.scenario.c_str(), o.devices, o.hours, o.partitions,
        static_cast<unsigned long long>(filled.readings),
        static_cast<unsigned long long>((*stage)->Stats().derived),
        static_cast<unsigned long long>(events), Seconds(t));
  }
  std::printf("waited %.0f s for the log's background compactions to finish\n", WaitUntilIdle(300));

  const double n = static_cast<double>(events);
  std::printf("\n%-44s %12s %10s %14s %8s\n", "", "events", "seconds", "events/s", "ratio");
  double bare_s = 0, replay_s = 0, copy_s = 0, derive_s = 0, compare_s = 0;
  if (!o.backtest_only) {
    // Bare: raw scan of the recorded log, raw append of the same keys and bytes.
    {
      absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
          analysis::OpenLogToRead(recorded_dir, "replay_bench");
      if (!log.ok()) throw std::runtime_error(log.status().ToString());
      // Written as the replay writes its fresh log: no WAL, flushed at the end.
      BareRocksDb bare(dir.path() + "/bare", kernel::Durability::kUnlogged);
      rocksdb::WriteBatch batch;
      char key[kernel::format::kEventKeySize];
      uint64_t written = 0;
      auto t = SteadyClock::now();
      for (kernel::Partition p : (*log)->Partitions()) {
        absl::Status s =
            (*log)->Scan(p, kernel::Sequence(0), [&](kernel::Sequence seq, std::string_view v) {
              kernel::format::EncodeEventKey(seq, key);
              batch.Put(bare.events(p), rocksdb::Slice(key, sizeof(key)),
                        rocksdb::Slice(v.data(), v.size()));
              if (++written % 4096 == 0) {
                bare.Write(&batch);
                batch.Clear();
              }
              return true;
            });
        if (!s.ok()) throw std::runtime_error(s.ToString());
      }
      bare.Write(&batch);
      bare.Flush();
      bare_s = Seconds(t);
    }
    std::filesystem::remove_all(dir.path() + "/bare");
    WaitUntilIdle(120);

    // Replay, then the comparison on its own.
    analysis::ReplayOptions replay;
    replay.from = recorded_dir;
    replay.into = dir.path() + "/replay";
    replay.progress = nullptr;
    replay.stage_thread = o.stage_thread;
    replay.derive_every = o.derive_every;
    auto t = SteadyClock::now();
    absl::StatusOr<analysis::ReplayResult> replayed = analysis::Replay(replay);
    if (!replayed.ok()) throw std::runtime_error(replayed.status().ToString());
    replay_s = Seconds(t);
    copy_s = absl::ToDoubleSeconds(replayed->copy_time);
    derive_s = absl::ToDoubleSeconds(replayed->derive_time);
    uint64_t compared = 0;
    {
      absl::StatusOr<std::unique_ptr<kernel::EventLog>> a =
          analysis::OpenLogToRead(recorded_dir, "replay_bench");
      absl::StatusOr<std::unique_ptr<kernel::EventLog>> b =
          analysis::OpenLogToRead(replay.into, "replay_bench");
      if (!a.ok() || !b.ok()) throw std::runtime_error("cannot reopen the logs");
      t = SteadyClock::now();
      absl::StatusOr<projections::DerivedDiff> diff =
          projections::CompareDerived(**a, **b, {}, "recorded", "replay");
      if (!diff.ok()) throw std::runtime_error(diff.status().ToString());
      compare_s = Seconds(t);
      compared = diff->equal;
      if (diff->difference.has_value()) {
        std::printf("WARNING: the replay differs: %s\n", diff->difference->c_str());
      }
    }
    std::filesystem::remove_all(replay.into);

    std::printf("%-44s %12llu %10.2f %14.0f %8s\n", "bare scan + bare append (raw bytes)",
                static_cast<unsigned long long>(events), bare_s, n / bare_s, "1.00");
    std::printf("%-44s %12llu %10.2f %14.0f %8.2f   target >= 0.50\n",
                "replay (copy inputs + derive), whole run", static_cast<unsigned long long>(events),
                replay_s, n / replay_s, bare_s / replay_s);
    std::printf("%-44s %12llu %10.2f %14.0f\n", "  of which copying the inputs",
                static_cast<unsigned long long>(replayed->source_events), copy_s,
                static_cast<double>(replayed->source_events) / copy_s);
    std::printf("%-44s %12llu %10.2f %14.0f\n", "  of which the rules stage (inputs)",
                static_cast<unsigned long long>(replayed->stage.processed), derive_s,
                static_cast<double>(replayed->stage.processed) / derive_s);
    std::printf("%-44s %12llu %10.2f %14.0f\n", "compare (derived events, references resolved)",
                static_cast<unsigned long long>(compared), compare_s,
                static_cast<double>(compared) / compare_s);
  }

  double backtest_s = 0;
  uint64_t backtest_added = 0;
  if (o.backtest) {
    // The default rules with every flood threshold 5 cm lower.
    std::string yaml(rules::DefaultRuleSetYaml());
    yaml = std::regex_replace(yaml, std::regex("metric: water_depth_cm, at_least: 15"),
                              "metric: water_depth_cm, at_least: 10");
    yaml = std::regex_replace(yaml, std::regex("name: default"), "name: lower-flood-thresholds");
    absl::StatusOr<rules::LoadedRuleSet> rules = rules::LoadRuleSetText(yaml, "bench.yaml");
    if (!rules.ok()) throw std::runtime_error(rules.status().ToString());
    analysis::BacktestOptions backtest;
    backtest.data_dir = recorded_dir;
    backtest.rule_set = *rules;
    const auto t = SteadyClock::now();
    absl::StatusOr<analysis::BacktestReport> report = analysis::Backtest(backtest);
    if (!report.ok()) throw std::runtime_error(report.status().ToString());
    backtest_s = Seconds(t);
    backtest_added = report->alerts.added;
    std::printf("%-44s %12llu %10.2f %14.0f   (%llu alerts added)\n",
                "backtest (replay + report), whole run", static_cast<unsigned long long>(events),
                backtest_s, n / backtest_s, static_cast<unsigned long long>(backtest_added));
  }
  std::printf("peak RSS: %.0f MiB\n", PeakRssMiB());
  std::printf(
      "json: {\"bench\":\"replay_bench\",\"scenario\":\"%s\",\"devices\":%zu,\"hours\":%.2f,"
      "\"partitions\":%u,\"events\":%llu,\"bare_s\":%.3f,\"replay_s\":%.3f,"
      "\"replay_ratio\":%.3f,\"copy_s\":%.3f,\"derive_s\":%.3f,\"compare_s\":%.3f,"
      "\"backtest_s\":%.3f,\"backtest_events_per_s\":%.0f,\"peak_rss_mib\":%.0f}\n",
      o.scenario.c_str(), o.devices, o.hours, o.partitions, static_cast<unsigned long long>(events),
      bare_s, replay_s, replay_s > 0 ? bare_s / replay_s : 0, copy_s, derive_s, compare_s,
      backtest_s, backtest_s > 0 ? n / backtest_s : 0, PeakRssMiB());
  return 0;
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  try {
    return cityops::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replay_bench: %s\n", e.what());
    return 1;
  }
}
