// A log as a daemon would leave it, built in process for the analysts' tools' tests: a
// rule set activated, the devices of a small city registered, a seeded typhoon's readings
// stored as ingest stores them (each with its Kafka topic, partition and offset, offsets
// counting up per partition), and the rules stage run over it (alerts, cases, tickets).
//
// Header-only; errors throw std::runtime_error (no Catch2 here).
#ifndef CITYOPS_TESTS_TESTING_TYPHOON_LOG_H_
#define CITYOPS_TESTS_TESTING_TYPHOON_LOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/rules_stage.h"
#include "sim/city.h"
#include "sim/simulator.h"
#include "tests/testing/small_city.h"

namespace cityops::testing {

inline constexpr char kTyphoonReadingsTopic[] = "cityops.readings";

// Builds the log step by step; `offsets` records where each reading came from.
class TyphoonLog {
 public:
  TyphoonLog(kernel::EventLog* log, uint32_t partitions, size_t devices, uint64_t seed)
      : log_(log),
        partitions_(partitions),
        city_(sim::GenerateCity(SmallCity(seed, devices))),
        simulator_(city_, {.scenario = sim::Scenario::kTyphoon, .seed = seed}),
        next_offset_(partitions, 0) {}

  absl::Time start() const { return simulator_.start(); }

  // Appends a RulesetActivated of `loaded` with event time `at` to partition 0.
  void Activate(const rules::LoadedRuleSet& loaded, absl::Time at) {
    kernel::AppendBatch batch{kernel::Partition(0)};
    batch.Add(rules::RulesetActivatedEvent(loaded, at));
    Check(log_->Append(std::move(batch)).status());
  }

  // Registers every device of the city, each in its partition.
  void Register() {
    std::vector<kernel::AppendBatch> batches = Batches();
    for (size_t i = 0; i < city_.devices.size(); ++i) {
      v1::Event e;
      v1::DeviceRegistered reg = city_.Registration(i);
      e.set_stream_id("registry/" + reg.device_id());
      kernel::SetTimestamp(simulator_.start(), e.mutable_event_time());
      const int32_t p =
          ingest::KafkaPartitionFor(reg.device_id(), static_cast<int32_t>(partitions_));
      *e.mutable_device_registered() = std::move(reg);
      batches[p].Add(std::move(e));
    }
    for (kernel::AppendBatch& b : batches) Flush(b);
  }

  // Appends the readings of the scenario up to `until`, as ingest would store them.
  void Readings(absl::Time until) {
    std::vector<kernel::AppendBatch> batches = Batches();
    v1::SensorReading reading;
    while (simulator_.Next(until, &reading)) {
      const int32_t p =
          ingest::KafkaPartitionFor(reading.device_id(), static_cast<int32_t>(partitions_));
      const int64_t offset = next_offset_[p]++;
      offsets_[{reading.device_id(), reading.reading_id()}] = {p, offset};
      ingest::FillReadingEvent(reading, kTyphoonReadingsTopic, p, offset, false,
                               batches[p].AddNew());
      batches[p].SetSourcePosition(kTyphoonReadingsTopic, p, kernel::KafkaOffset(offset + 1));
      if (batches[p].size() == 500) Flush(batches[p]);
    }
    for (kernel::AppendBatch& b : batches) Flush(b);
  }

  // Runs the rules stage over everything appended so far.
  void DeriveAll() {
    rules::RulesStageOptions options;
    options.log = log_;
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage = rules::RulesStage::Open(options);
    Check(stage.status());
    Check((*stage)->CatchUp(/*drain=*/true));
  }

  // (Kafka partition, offset) of each reading appended, by (device id, reading id).
  const std::map<std::pair<std::string, std::string>, std::pair<int32_t, int64_t>>& offsets()
      const {
    return offsets_;
  }

 private:
  static void Check(const absl::Status& s) {
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }
  std::vector<kernel::AppendBatch> Batches() const {
    std::vector<kernel::AppendBatch> batches;
    for (uint32_t p = 0; p < partitions_; ++p) batches.emplace_back(kernel::Partition(p));
    return batches;
  }
  void Flush(kernel::AppendBatch& batch) {
    if (batch.empty()) return;
    Check(log_->Append(batch).status());
    batch.Clear();
  }

  kernel::EventLog* log_;
  uint32_t partitions_;
  sim::City city_;
  sim::Simulator simulator_;
  std::vector<int64_t> next_offset_;
  std::map<std::pair<std::string, std::string>, std::pair<int32_t, int64_t>> offsets_;
};

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_TYPHOON_LOG_H_
