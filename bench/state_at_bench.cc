// `cityops state --at` against a bare sequential scan of the same log, in one run, as the
// log grows.
//
// Fills one log with a simulated scenario (a city's registrations and readings, appended
// as ingest would, with the default rule set active), runs the rules stage over it
// (alerts, cases, tickets, lights), and at each size of --sizes (readings so far) times:
//   bare scan      EventLog::Scan of every partition, each record's envelope decoded
//                  (projections::DecodeEnvelope: its event time): the least that finding
//                  the events dated up to a moment costs.
//   at the end     the read models folded as of the last reading's time into a fresh
//                  directory (analysis::FoldAsOf) and the city read from them
//                  (analysis::ReadCityState): the time to answer `state --at`.
//   at the middle  the same as of the middle of the log so far.
// Then fills on to the next size. Prints a table, the growth (seconds per million events
// between sizes) and one JSON line with the same figures. See bench/README.md.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "analysis/state_at.h"
#include "bench/measure.h"
#include "bench/scratch_dir.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/rules_stage.h"
#include "projections/stored_event.h"
#include "sim/city.h"
#include "sim/simulator.h"

namespace cityops::bench {
namespace {

struct BenchOptions {
  std::vector<uint64_t> sizes = {250'000, 500'000, 1'000'000};  // Readings.
  size_t devices = 20'000;
  uint32_t partitions = 8;
  std::string scenario = "typhoon";
  uint64_t seed = 1;
  std::string dir;
};

// Appends the scenario to a log as ingest would: registrations and the default rule set
// first, then readings in event-time order on their device's partition, in batches of
// 1000 per partition, as far as asked.
class Filler {
 public:
  Filler(kernel::EventLog& log, const BenchOptions& o)
      : log_(log), o_(o), city_(MakeCity(o)), simulator_(city_, SimOptions(o)) {
    absl::StatusOr<rules::LoadedRuleSet> rules =
        rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
    if (!rules.ok()) throw std::runtime_error(rules.status().ToString());
    for (uint32_t p = 0; p < o.partitions; ++p) batches_.emplace_back(kernel::Partition(p));
    offsets_.assign(o.partitions, 0);
    batches_[0].Add(rules::RulesetActivatedEvent(*rules, simulator_.start()));
    Flush(0);
    for (size_t i = 0; i < city_.devices.size(); ++i) {
      v1::Event e;
      v1::DeviceRegistered reg = city_.Registration(i);
      e.set_stream_id("registry/" + reg.device_id());
      kernel::SetTimestamp(simulator_.start(), e.mutable_event_time());
      const uint32_t p = PartitionOf(reg.device_id());
      *e.mutable_device_registered() = std::move(reg);
      batches_[p].Add(std::move(e));
      if (batches_[p].size() == 1000) Flush(p);
    }
    for (uint32_t p = 0; p < o.partitions; ++p) Flush(p);
  }

  // Appends readings until `readings` have been appended in all.
  void FillTo(uint64_t readings) {
    v1::SensorReading reading;
    while (readings_ < readings && simulator_.Next(absl::InfiniteFuture(), &reading)) {
      last_ = kernel::FromTimestamp(reading.event_time());
      const uint32_t p = PartitionOf(reading.device_id());
      ingest::FillReadingEvent(reading, "cityops.readings", static_cast<int32_t>(p), offsets_[p]++,
                               false, batches_[p].AddNew());
      ++readings_;
      if (batches_[p].size() == 1000) Flush(p);
    }
    for (uint32_t p = 0; p < o_.partitions; ++p) Flush(p);
  }

  absl::Time start() const { return simulator_.start(); }
  absl::Time last() const { return last_; }

 private:
  static sim::City MakeCity(const BenchOptions& o) {
    sim::CityOptions city;
    city.seed = o.seed;
    city.devices = o.devices;
    return sim::GenerateCity(city);
  }
  static sim::SimulatorOptions SimOptions(const BenchOptions& o) {
    sim::SimulatorOptions s;
    if (!sim::ParseScenario(o.scenario, &s.scenario)) {
      throw std::runtime_error("unknown --scenario " + o.scenario);
    }
    s.seed = o.seed;
    return s;
  }
  uint32_t PartitionOf(const std::string& device_id) const {
    return static_cast<uint32_t>(
        ingest::KafkaPartitionFor(device_id, static_cast<int32_t>(o_.partitions)));
  }
  void Flush(uint32_t p) {
    kernel::AppendBatch& b = batches_[p];
    if (b.empty()) return;
    b.SetSourcePosition("cityops.readings", static_cast<int32_t>(p),
                        kernel::KafkaOffset(offsets_[p]));
    absl::StatusOr<kernel::AppendResult> r = log_.Append(b);
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
    b.Clear();
  }

  kernel::EventLog& log_;
  const BenchOptions& o_;
  sim::City city_;
  sim::Simulator simulator_;
  std::vector<kernel::AppendBatch> batches_;
  std::vector<int64_t> offsets_;
  uint64_t readings_ = 0;
  absl::Time last_ = absl::InfinitePast();
};

struct Row {
  uint64_t readings = 0;
  uint64_t events = 0;  // In the log: readings, registrations, derived events.
  double bare_s = 0;
  double end_s = 0;
  double middle_s = 0;
  double read_s = 0;  // Of end_s: reading the city from the folded read models.
  uint64_t open_cases = 0, alerts = 0, online = 0;
};

// A bare sequential scan: every record's envelope decoded, the events dated up to `at`
// counted (so that the decoding is not optimized away).
double BareScan(const kernel::EventLog& log, absl::Time at, uint64_t* events) {
  const auto start = SteadyClock::now();
  uint64_t n = 0, dated = 0;
  projections::StoredEnvelope envelope;
  for (kernel::Partition p : log.Partitions()) {
    absl::Status s = log.Scan(p, kernel::Sequence(0), [&](kernel::Sequence, std::string_view v) {
      ++n;
      if (projections::DecodeEnvelope(v, &envelope) && envelope.event_time <= at) ++dated;
      return true;
    });
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }
  const double took = Seconds(start);
  if (dated == 0) throw std::runtime_error("bare scan: no event dated up to the moment");
  *events = n;
  return took;
}

// The time to answer `state --at at`: fold as of `at` into a fresh directory, read the city.
double StateAt(kernel::EventLog& log, absl::Time at, const std::string& dir, Row* row) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  const auto start = SteadyClock::now();
  absl::StatusOr<std::unique_ptr<views::Projections>> views = analysis::FoldAsOf(&log, at, dir);
  if (!views.ok()) throw std::runtime_error(views.status().ToString());
  const auto reading = SteadyClock::now();
  absl::StatusOr<analysis::CityState> state = analysis::ReadCityState(**views, at, "");
  if (!state.ok()) throw std::runtime_error(state.status().ToString());
  const double took = Seconds(start);
  if (row != nullptr) {
    row->read_s = Seconds(reading);
    row->open_cases = state->open_cases.size();
    row->alerts = state->active_alerts.size();
    row->online = state->statistics.devices_online();
  }
  views->reset();
  std::filesystem::remove_all(dir, ec);
  return took;
}

int Run(int argc, char** argv) {
  CLI::App app("`cityops state --at` against a bare scan of the same log, as the log grows.",
               "state_at_bench");
  BenchOptions o;
  app.add_option("--sizes", o.sizes, "Readings in the log at each measurement, ascending")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--devices", o.devices, "Devices in the simulated city")->capture_default_str();
  app.add_option("--partitions", o.partitions, "Log partitions")->capture_default_str();
  app.add_option("--scenario", o.scenario, "normal, typhoon or elevator-wave")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the city and the simulation")->capture_default_str();
  app.add_option("--dir", o.dir, "Scratch directory (kept); default: a temporary one");
  CLI11_PARSE(app, argc, argv);

  ScratchDir scratch(o.dir, "cityops-state-at-bench-XXXXXX");
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(
      {.path = scratch.path() + "/log", .durability = kernel::Durability::kBuffered});
  if (!log.ok()) throw std::runtime_error(log.status().ToString());
  Filler filler(**log, o);
  absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
      rules::RulesStage::Open({.log = log->get()});
  if (!stage.ok()) throw std::runtime_error(stage.status().ToString());

  std::printf("state --at, %s over %zu devices, %u partitions, seed %llu\n", o.scenario.c_str(),
              o.devices, o.partitions, static_cast<unsigned long long>(o.seed));
  std::printf("%10s %10s %9s %9s %9s %9s %9s %7s %7s %7s\n", "readings", "events", "bare s",
              "at end s", "(read s)", "ratio", "middle s", "open", "alerts", "online");
  std::vector<Row> rows;
  for (uint64_t size : o.sizes) {
    const auto filling = SteadyClock::now();
    filler.FillTo(size);
    if (absl::Status s = (*stage)->CatchUp(/*drain=*/true); !s.ok()) {
      throw std::runtime_error(s.ToString());
    }
    std::fprintf(stderr, "filled to %llu readings and ran the rules stage in %.1f s\n",
                 static_cast<unsigned long long>(size), Seconds(filling));
    WaitUntilIdle(60);
    Row row;
    row.readings = size;
    const absl::Time end = filler.last();
    const absl::Time middle = filler.start() + (end - filler.start()) / 2;
    // Bare and cityops alternate, each side's faster of two runs counts.
    uint64_t events = 0;
    const double bare1 = BareScan(**log, end, &events);
    const double end1 = StateAt(**log, end, scratch.path() + "/as-of", &row);
    const double end2 = StateAt(**log, end, scratch.path() + "/as-of", nullptr);
    const double bare2 = BareScan(**log, end, &events);
    row.events = events;
    row.bare_s = std::min(bare1, bare2);
    row.end_s = std::min(end1, end2);
    row.middle_s = StateAt(**log, middle, scratch.path() + "/as-of", nullptr);
    std::printf(
        "%10llu %10llu %9.2f %9.2f %9.2f %8.1f%% %9.2f %7llu %7llu %7llu\n",
        static_cast<unsigned long long>(row.readings), static_cast<unsigned long long>(row.events),
        row.bare_s, row.end_s, row.read_s, 100 * row.bare_s / row.end_s, row.middle_s,
        static_cast<unsigned long long>(row.open_cases),
        static_cast<unsigned long long>(row.alerts), static_cast<unsigned long long>(row.online));
    std::fflush(stdout);
    rows.push_back(row);
  }
  std::printf("\nratio: bare scan time / state --at time (100 %% = as fast as the bare scan)\n");
  std::printf("growth (seconds per million events between sizes):\n");
  for (size_t i = 1; i < rows.size(); ++i) {
    const double mev = static_cast<double>(rows[i].events - rows[i - 1].events) / 1e6;
    std::printf("  %llu -> %llu events: state --at %.2f s/M, bare scan %.2f s/M\n",
                static_cast<unsigned long long>(rows[i - 1].events),
                static_cast<unsigned long long>(rows[i].events),
                (rows[i].end_s - rows[i - 1].end_s) / mev,
                (rows[i].bare_s - rows[i - 1].bare_s) / mev);
  }
  std::printf("peak RSS %.0f MiB\n", PeakRssMiB());
  std::vector<std::string> json;
  for (const Row& r : rows) {
    json.push_back(absl::StrFormat(
        "{\"readings\":%d,\"events\":%d,\"bare_scan_s\":%.3f,\"state_at_end_s\":%.3f,"
        "\"state_at_middle_s\":%.3f,\"read_s\":%.3f,\"ratio\":%.3f,\"open_cases\":%d,\"alerts_"
        "active\":%d,"
        "\"devices_online\":%d}",
        r.readings, r.events, r.bare_s, r.end_s, r.middle_s, r.read_s, r.bare_s / r.end_s,
        r.open_cases, r.alerts, r.online));
  }
  std::printf(
      "{\"bench\":\"state_at\",\"scenario\":\"%s\",\"devices\":%zu,\"partitions\":%u,"
      "\"seed\":%llu,\"rows\":[%s]}\n",
      o.scenario.c_str(), o.devices, o.partitions, static_cast<unsigned long long>(o.seed),
      absl::StrJoin(json, ",").c_str());
  return 0;
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  try {
    return cityops::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "state_at_bench: %s\n", e.what());
    return 1;
  }
}
