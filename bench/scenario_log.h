// A simulated city's scenario appended to a log as ingest would, for the benches that
// need a realistic log (stages_bench, replay_bench). Header-only.
#ifndef CITYOPS_BENCH_SCENARIO_LOG_H_
#define CITYOPS_BENCH_SCENARIO_LOG_H_

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "sim/city.h"
#include "sim/simulator.h"

namespace cityops::bench {

struct ScenarioOptions {
  size_t devices = 20'000;
  double hours = 3;
  uint32_t partitions = 8;
  std::string scenario = "typhoon";
  uint64_t seed = 1;
};

struct Filled {
  uint64_t events = 0;
  uint64_t readings = 0;
  uint64_t bytes = 0;
};

// Appends the scenario to `log` as ingest would: registrations, then readings in
// event-time order, each on its device's partition, in batches of 1000 per partition.
inline Filled Fill(kernel::EventLog& log, const ScenarioOptions& o) {
  sim::CityOptions city_options;
  city_options.seed = o.seed;
  city_options.devices = o.devices;
  const sim::City city = sim::GenerateCity(city_options);
  sim::Scenario scenario;
  if (!sim::ParseScenario(o.scenario, &scenario)) {
    throw std::runtime_error("unknown --scenario " + o.scenario);
  }
  absl::StatusOr<rules::LoadedRuleSet> rules =
      rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
  if (!rules.ok()) throw std::runtime_error(rules.status().ToString());
  Filled filled;
  std::vector<kernel::AppendBatch> batches;
  for (uint32_t p = 0; p < o.partitions; ++p) batches.emplace_back(kernel::Partition(p));
  std::vector<int64_t> offsets(o.partitions, 0);
  auto flush = [&](uint32_t p) {
    kernel::AppendBatch& b = batches[p];
    if (b.empty()) return;
    b.SetSourcePosition("cityops.readings", static_cast<int32_t>(p),
                        kernel::KafkaOffset(offsets[p]));
    filled.events += b.size();
    absl::StatusOr<kernel::AppendResult> r = log.Append(b);
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
    b.Clear();
  };
  batches[0].Add(rules::RulesetActivatedEvent(*rules, absl::UnixEpoch()));
  flush(0);
  for (size_t i = 0; i < city.devices.size(); ++i) {
    v1::Event e;
    v1::DeviceRegistered reg = city.Registration(i);
    e.set_stream_id("registry/" + reg.device_id());
    kernel::SetTimestamp(absl::UnixEpoch(), e.mutable_event_time());
    const uint32_t p = static_cast<uint32_t>(
        ingest::KafkaPartitionFor(reg.device_id(), static_cast<int32_t>(o.partitions)));
    *e.mutable_device_registered() = std::move(reg);
    batches[p].Add(std::move(e));
    if (batches[p].size() == 1000) flush(p);
  }
  for (uint32_t p = 0; p < o.partitions; ++p) flush(p);
  sim::SimulatorOptions sim_options;
  sim_options.scenario = scenario;
  sim_options.seed = o.seed;
  sim::Simulator simulator(city, sim_options);
  v1::SensorReading reading;
  const absl::Time end = simulator.start() + absl::Hours(o.hours);
  while (simulator.Next(end, &reading)) {
    const uint32_t p = static_cast<uint32_t>(
        ingest::KafkaPartitionFor(reading.device_id(), static_cast<int32_t>(o.partitions)));
    ingest::FillReadingEvent(reading, "cityops.readings", static_cast<int32_t>(p), offsets[p]++,
                             false, batches[p].AddNew());
    ++filled.readings;
    if (batches[p].size() == 1000) flush(p);
  }
  for (uint32_t p = 0; p < o.partitions; ++p) flush(p);
  return filled;
}

}  // namespace cityops::bench

#endif  // CITYOPS_BENCH_SCENARIO_LOG_H_
