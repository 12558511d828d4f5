// The rules stage and the projections against a bare scan of the same log, in one run.
//
// Fills a log with a simulated scenario (a city's registrations and readings, appended
// as ingest would, with the default rule set active), waits for the fill's compactions,
// then times on that log:
//   bare scan    EventLog::Scan of every partition, raw bytes only; and the same scan
//                parsing each event into one reused v1::Event: the least any fold does.
//   together     the rules stage from an empty checkpoint to the end (drain), appending
//                the alerts, cases and tickets it derives, and the read models from
//                sequence 0 following it, in two threads, as the daemon runs them; with
//                each thread's CPU time.
//   restart      reopening the rules stage: it replays the log up to its checkpoint.
//   rebuild      the read models rebuilt beside the live ones, then swapped.
// Rates are events per second; each is printed as a ratio to both bare scans (parsed, the
// least any fold does, and raw). See bench/README.md.
#include <sys/resource.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "bench/measure.h"
#include "bench/scenario_log.h"
#include "bench/scratch_dir.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/rules_stage.h"
#include "projections/views/views.h"
#include "sim/city.h"
#include "sim/simulator.h"

namespace cityops::bench {
namespace {

struct BenchOptions : ScenarioOptions {
  std::string dir;
};

int Run(int argc, char** argv) {
  BenchOptions o;
  CLI::App app("Rules stage and projections against a bare scan of the same log.", "stages_bench");
  app.add_option("--devices", o.devices, "Simulated devices")->capture_default_str();
  app.add_option("--hours", o.hours, "Simulated hours")->capture_default_str();
  app.add_option("--partitions", o.partitions, "Log partitions")->capture_default_str();
  app.add_option("--scenario", o.scenario, "normal, typhoon or elevator-wave")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the city and the simulation")->capture_default_str();
  app.add_option("--dir", o.dir, "Scratch directory (default: a fresh one under $TMPDIR)");
  CLI11_PARSE(app, argc, argv);

  const ScratchDir dir(o.dir, "cityops-stages-bench-XXXXXX");
  const std::string log_dir = dir.path() + "/log";
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> opened =
      kernel::EventLog::Open({.path = log_dir, .durability = kernel::Durability::kBuffered});
  if (!opened.ok()) throw std::runtime_error(opened.status().ToString());
  kernel::EventLog& log = **opened;

  auto t = SteadyClock::now();
  const Filled filled = Fill(log, o);
  std::printf(
      "filled: %s scenario, %zu devices, %.1f h on %u partitions: %llu events "
      "(%llu readings) in %.1f s\n",
      o.scenario.c_str(), o.devices, o.hours, o.partitions,
      static_cast<unsigned long long>(filled.events),
      static_cast<unsigned long long>(filled.readings), Seconds(t));
  std::printf("waited %.0f s for the log's background compactions to finish\n", WaitUntilIdle(300));

  // Bare scans.
  uint64_t raw_bytes = 0;
  uint64_t raw_events = 0;
  t = SteadyClock::now();
  for (kernel::Partition p : log.Partitions()) {
    absl::Status s = log.Scan(p, kernel::Sequence(0), [&](kernel::Sequence, std::string_view v) {
      raw_bytes += v.size();
      ++raw_events;
      return true;
    });
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }
  const double raw_s = Seconds(t);
  v1::Event event;
  uint64_t parsed = 0;
  t = SteadyClock::now();
  for (kernel::Partition p : log.Partitions()) {
    absl::Status s = log.Scan(p, kernel::Sequence(0), [&](kernel::Sequence, std::string_view v) {
      if (!event.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
        throw std::runtime_error("unparsable event");
      }
      ++parsed;
      return true;
    });
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }
  const double parse_s = Seconds(t);
  const double bare_rate = static_cast<double>(parsed) / parse_s;
  const double raw_rate = static_cast<double>(raw_events) / raw_s;
  std::printf("%-26s %10s   %s\n", "", "events/s", "vs parsed  vs raw   seconds");
  std::printf("%-26s %10.0f   %9s  %6s  %7.2f   (%.1f MB)\n", "bare scan, raw", raw_rate, "",
              "1.00", raw_s, static_cast<double>(raw_bytes) / 1e6);
  std::printf("%-26s %10.0f   %9s  %6.2f  %7.2f\n", "bare scan, parsed", bare_rate, "1.00",
              bare_rate / raw_rate, parse_s);
  auto report = [&](const char* what, uint64_t events, double seconds) {
    const double rate = static_cast<double>(events) / seconds;
    std::printf("%-26s %10.0f   %9.2f  %6.2f  %7.2f\n", what, rate, rate / bare_rate,
                rate / raw_rate, seconds);
  };

  // The rules stage and the projections together, each in its own thread, as the
  // daemon runs them. The projections finish when the rules stage has (they fold what it
  // appends), so both wall times are the pair's; each thread's CPU time is its own.
  rules::RulesStageOptions stage_options;
  stage_options.log = &log;
  views::ProjectionOptions view_options;
  view_options.log = &log;
  view_options.dir = dir.path() + "/views";
  rules::RulesStageStats rules_stats;
  double rules_cpu = 0;  // Written by the rules thread before rules_done, read after join.
  std::atomic<bool> rules_done{false};
  std::string error;
  t = SteadyClock::now();
  const double cpu_before = CpuSeconds();
  std::thread rules_thread([&] {
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open(stage_options);
    absl::Status s = stage.ok() ? (*stage)->CatchUp(true) : stage.status();
    if (!s.ok()) error = s.ToString();
    if (stage.ok()) rules_stats = (*stage)->Stats();
    rules_cpu = ThreadCpuSeconds();
    rules_done.store(true, std::memory_order_release);
  });
  std::unique_ptr<views::Projections> projections;
  double views_cpu = 0;
  {
    const double cpu_start = ThreadCpuSeconds();
    absl::StatusOr<std::unique_ptr<views::Projections>> opened_views =
        views::Projections::Open(view_options);
    if (!opened_views.ok()) throw std::runtime_error(opened_views.status().ToString());
    projections = *std::move(opened_views);
    // Follow the log until the rules stage is done and everything it appended is folded
    // too; when caught up, wait a little rather than spin (two cores, two stages).
    for (;;) {
      const bool done = rules_done.load(std::memory_order_acquire);
      if (absl::Status s = projections->CatchUp(); !s.ok()) throw std::runtime_error(s.ToString());
      if (done) break;
      uint64_t lag = 0;
      for (const views::PartitionLag& l : projections->Lag()) lag += l.lag;
      if (lag == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    views_cpu = ThreadCpuSeconds() - cpu_start;
  }
  rules_thread.join();
  const double together_s = Seconds(t);
  const double together_cpu = CpuSeconds() - cpu_before;
  if (!error.empty()) throw std::runtime_error(error);
  report("both, in two threads", filled.events, together_s);
  report("  rules stage, its CPU", rules_stats.processed, rules_cpu);
  report("  projections, its CPU", filled.events + rules_stats.derived, views_cpu);
  std::printf("  both used %.1f CPU seconds in %.1f s (%.2f cores)\n", together_cpu, together_s,
              together_cpu / together_s);
  const rules::EngineCounters& c = rules_stats.engine;
  std::printf(
      "  derived %llu events: %llu alerts raised, %llu cleared, %llu cases, %llu tickets, "
      "%llu overdue\n",
      static_cast<unsigned long long>(rules_stats.derived),
      static_cast<unsigned long long>(c.alerts_raised),
      static_cast<unsigned long long>(c.alerts_cleared),
      static_cast<unsigned long long>(c.cases_opened), static_cast<unsigned long long>(c.tickets),
      static_cast<unsigned long long>(c.overdue));
  absl::StatusOr<v1::Statistics> stats = projections->GetStatistics();
  if (!stats.ok()) throw std::runtime_error(stats.status().ToString());
  std::printf(
      "  read models: %llu devices (%llu online), %llu cases, %llu alerts active, %llu "
      "tickets\n",
      static_cast<unsigned long long>(stats->devices_total()),
      static_cast<unsigned long long>(stats->devices_online()),
      static_cast<unsigned long long>(stats->cases_total()),
      static_cast<unsigned long long>(stats->alerts_active()),
      static_cast<unsigned long long>(stats->tickets_total()));

  // Restart: the rules stage replays the log up to its checkpoint.
  t = SteadyClock::now();
  uint64_t replayed = 0;
  {
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open(stage_options);
    if (!stage.ok()) throw std::runtime_error(stage.status().ToString());
    replayed = (*stage)->Stats().replayed;
  }
  report("rules stage restart", replayed, Seconds(t));
  // Rebuild: the read models from sequence 0 beside the live ones, then swapped.
  t = SteadyClock::now();
  if (absl::Status s = projections->Rebuild(); !s.ok()) throw std::runtime_error(s.ToString());
  report("projections rebuild", filled.events + rules_stats.derived, Seconds(t));
  std::printf("peak RSS: %.0f MiB\n", PeakRssMiB());
  return 0;
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  try {
    return cityops::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stages_bench: %s\n", e.what());
    return 1;
  }
}
