// How long the rules stage takes to open (restart, or take over on another node) over a
// log of a given size: from its latest snapshot plus the events after it, against a
// replay of the whole log up to its checkpoints (issue 12).
//
// For each size (simulated hours of a city, bench/scenario_log.h), in a fresh log:
//   fill      the scenario appended as ingest would;
//   run       the rules stage over all of it (drain), writing snapshots as a daemon does
//             (every --snapshot-every input events); its time, the snapshots it wrote
//             and the size of the last;
//   export    RulesStage::Snapshot() of the caught-up stage: building and serializing
//             one snapshot, the cost each snapshot adds to a step;
//   open      RulesStage::Open with the snapshot (restore, then replay the events after
//             it up to the checkpoints), and without it (replay from the start), after
//             the fill's compactions settled. Both end in the same state, which the bench
//             checks (their snapshots are byte for byte equal).
// Prints each size's figures and JSON line (`json: {...}`) as it is measured, then a table
// of all of them. See bench/README.md.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "bench/measure.h"
#include "bench/scenario_log.h"
#include "bench/scratch_dir.h"
#include "projections/rules/rules_stage.h"

namespace cityops::bench {
namespace {

struct BenchOptions : ScenarioOptions {
  std::vector<double> sizes_hours = {1, 4.6};
  uint64_t snapshot_every = rules::RulesStageOptions().snapshot_every_events;
  std::string dir;
};

struct Row {
  double hours = 0;
  uint64_t events = 0;  // In the log, derived ones included.
  double fill_s = 0;
  double run_s = 0;
  uint64_t snapshots = 0;
  uint64_t snapshot_bytes = 0;
  double export_s = 0;
  double open_snapshot_s = 0;
  uint64_t replayed_after_snapshot = 0;
  double open_replay_s = 0;
  uint64_t replayed_all = 0;
  bool same_state = false;
};

std::unique_ptr<rules::RulesStage> OpenStage(const rules::RulesStageOptions& options) {
  absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage = rules::RulesStage::Open(options);
  if (!stage.ok()) throw std::runtime_error(stage.status().ToString());
  return *std::move(stage);
}

Row Measure(const BenchOptions& o, double hours, const std::string& path) {
  Row row;
  row.hours = hours;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
      kernel::EventLog::Open({.path = path, .durability = kernel::Durability::kBuffered});
  if (!log.ok()) throw std::runtime_error(log.status().ToString());
  ScenarioOptions scenario = o;
  scenario.hours = hours;
  auto t = SteadyClock::now();
  Fill(**log, scenario);
  row.fill_s = Seconds(t);

  rules::RulesStageOptions options;
  options.log = log->get();
  options.snapshot_every_events = o.snapshot_every;
  options.snapshot_interval = absl::InfiniteDuration();  // By count only: reproducible.
  {
    t = SteadyClock::now();
    std::unique_ptr<rules::RulesStage> stage = OpenStage(options);
    if (absl::Status s = stage->CatchUp(/*drain=*/true); !s.ok()) {
      throw std::runtime_error(s.ToString());
    }
    row.run_s = Seconds(t);
    row.snapshots = stage->Stats().snapshots_written;
    row.snapshot_bytes = stage->Stats().last_snapshot_bytes;
    t = SteadyClock::now();
    absl::StatusOr<std::string> snapshot = stage->Snapshot();
    if (!snapshot.ok()) throw std::runtime_error(snapshot.status().ToString());
    row.export_s = Seconds(t);
  }
  for (kernel::Partition p : (*log)->Partitions()) row.events += (*log)->NextSequence(p).value();
  std::printf("  %.2f h: %llu events filled in %.1f s, stage ran in %.1f s (%llu snapshots)\n",
              hours, static_cast<unsigned long long>(row.events), row.fill_s, row.run_s,
              static_cast<unsigned long long>(row.snapshots));
  std::printf("  waited %.0f s for the log's background compactions to finish\n",
              WaitUntilIdle(300));

  t = SteadyClock::now();
  std::unique_ptr<rules::RulesStage> restored = OpenStage(options);
  row.open_snapshot_s = Seconds(t);
  if (!restored->Stats().restored_from_snapshot) {
    throw std::runtime_error("the stage did not restore from its snapshot: " +
                             restored->Stats().snapshot_refused);
  }
  row.replayed_after_snapshot = restored->Stats().replayed;

  rules::RulesStageOptions full = options;
  full.use_snapshot = false;
  t = SteadyClock::now();
  std::unique_ptr<rules::RulesStage> replayed = OpenStage(full);
  row.open_replay_s = Seconds(t);
  row.replayed_all = replayed->Stats().replayed;

  absl::StatusOr<std::string> a = restored->Snapshot();
  absl::StatusOr<std::string> b = replayed->Snapshot();
  row.same_state = a.ok() && b.ok() && *a == *b;
  if (!row.same_state) std::printf("WARNING: restored and replayed states differ\n");
  return row;
}

int Run(int argc, char** argv) {
  BenchOptions o;
  o.devices = 100'000;
  o.scenario = "normal";
  CLI::App app("Rules stage restart: from its snapshot against a replay of the whole log.",
               "restart_bench");
  app.add_option("--devices", o.devices, "Simulated devices")->capture_default_str();
  app.add_option("--hours", o.sizes_hours,
                 "Log sizes as simulated hours of the city, comma-separated (100,000 devices: "
                 "about 10.9 M events per hour)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--partitions", o.partitions, "Log partitions")->capture_default_str();
  app.add_option("--scenario", o.scenario, "normal, typhoon or elevator-wave")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the city and the simulation")->capture_default_str();
  app.add_option("--snapshot-every", o.snapshot_every,
                 "Input events between snapshots (RulesStageOptions::snapshot_every_events)")
      ->capture_default_str();
  app.add_option("--dir", o.dir, "Scratch directory (default: a fresh one under $TMPDIR)");
  CLI11_PARSE(app, argc, argv);

  const ScratchDir dir(o.dir, "cityops-restart-bench-XXXXXX");
  std::printf(
      "restart_bench: %s scenario, %zu devices, %u partitions, a snapshot every %llu "
      "input events\n",
      o.scenario.c_str(), o.devices, o.partitions,
      static_cast<unsigned long long>(o.snapshot_every));
  auto header = [] {
    std::printf("\n%8s %12s %10s %11s %10s %14s %12s %12s %7s\n", "hours", "events", "snapshot",
                "export s", "run s", "after snapshot", "open snap s", "open full s", "same");
  };
  auto line = [](const Row& r) {
    std::printf("%8.2f %12llu %8.1fMB %11.2f %10.1f %14llu %12.2f %12.2f %7s\n", r.hours,
                static_cast<unsigned long long>(r.events), r.snapshot_bytes / 1e6, r.export_s,
                r.run_s, static_cast<unsigned long long>(r.replayed_after_snapshot),
                r.open_snapshot_s, r.open_replay_s, r.same_state ? "yes" : "NO");
  };
  auto json = [&o](const Row& r) {
    std::printf(
        "json: {\"bench\":\"restart_bench\",\"scenario\":\"%s\",\"devices\":%zu,\"hours\":%.2f,"
        "\"partitions\":%u,\"events\":%llu,\"snapshot_every\":%llu,\"snapshots\":%llu,"
        "\"snapshot_bytes\":%llu,\"export_s\":%.3f,\"run_s\":%.3f,\"replayed_after_snapshot\":"
        "%llu,\"open_snapshot_s\":%.3f,\"replayed_all\":%llu,\"open_replay_s\":%.3f,"
        "\"same_state\":%s}\n",
        o.scenario.c_str(), o.devices, r.hours, o.partitions,
        static_cast<unsigned long long>(r.events),
        static_cast<unsigned long long>(o.snapshot_every),
        static_cast<unsigned long long>(r.snapshots),
        static_cast<unsigned long long>(r.snapshot_bytes), r.export_s, r.run_s,
        static_cast<unsigned long long>(r.replayed_after_snapshot), r.open_snapshot_s,
        static_cast<unsigned long long>(r.replayed_all), r.open_replay_s,
        r.same_state ? "true" : "false");
  };
  // Each size's figures as soon as they are measured (a large size takes long), then the
  // table of all of them.
  std::vector<Row> rows;
  for (size_t i = 0; i < o.sizes_hours.size(); ++i) {
    const std::string path = absl::StrFormat("%s/log-%d", dir.path(), i);
    rows.push_back(Measure(o, o.sizes_hours[i], path));
    std::filesystem::remove_all(path);
    line(rows.back());
    json(rows.back());
    std::fflush(stdout);
  }
  header();
  for (const Row& r : rows) line(r);
  std::printf("peak RSS: %.0f MiB\n", PeakRssMiB());
  for (const Row& r : rows) {
    if (!r.same_state) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  try {
    return cityops::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "restart_bench: %s\n", e.what());
    return 1;
  }
}
