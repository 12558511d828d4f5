// Publishing a Simulator's output: to Kafka through ingest::RecordProducer (devices
// registered first on the compacted devices topic, then readings keyed by device id as
// binary protobuf), or to a file as JSON lines (protobuf JSON mapping, one SensorReading
// per line). Pacing uses the wall clock; the models never do.
#ifndef CITYOPS_SIM_PUBLISHER_H_
#define CITYOPS_SIM_PUBLISHER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ingest/record_producer.h"
#include "sim/simulator.h"

namespace cityops::sim {

struct PublishOptions {
  std::string readings_topic = "cityops.readings";
  std::string devices_topic = "cityops.devices";
  // Simulated time to run, from the simulator's now().
  absl::Duration duration = absl::Hours(1);
  // Target readings per wall second; 0 = no limit.
  double rate = 0;
  // Simulated seconds per wall second; 0 = as fast as the rate allows.
  double acceleration = 0;
  // Register every device before the readings (Kafka: on devices_topic; JSON lines:
  // to devices_path when it is set).
  bool register_devices = true;
  std::string devices_path;  // JSON lines of DeviceRegistered; ingest's device import reads it.
  absl::Duration flush_timeout = absl::Seconds(30);
  // Backpressure: called before every 1000th reading; may block while the consumer is
  // behind. The pacing then resumes from where it stood, as if the wall time spent
  // blocked had not passed (simulated time stands still meanwhile).
  std::function<void()> wait_while_behind;
};

struct PublishStats {
  uint64_t devices = 0;    // Registrations written.
  uint64_t readings = 0;   // Readings written.
  uint64_t delivered = 0;  // Kafka: acknowledged records (devices + readings).
  uint64_t failed = 0;     // Kafka: records that failed.
  absl::Duration simulated;
  absl::Duration wall;
};

// Registers devices, then streams readings for `options.duration` of simulated time,
// paced by `rate` and `acceleration`, then flushes. Stops early (still flushing) when
// `*stop` becomes true. UNAVAILABLE if the flush fails; errors of Produce pass through.
absl::StatusOr<PublishStats> PublishToKafka(Simulator& simulator, ingest::RecordProducer& producer,
                                            const PublishOptions& options,
                                            const std::atomic<bool>* stop = nullptr);

// The same to a file of JSON lines (readings), plus `options.devices_path` for the
// registrations. INTERNAL if a file cannot be written.
absl::StatusOr<PublishStats> WriteJsonLines(Simulator& simulator, const std::string& path,
                                            const PublishOptions& options,
                                            const std::atomic<bool>* stop = nullptr);

// One reading as a JSON line (no trailing newline), by the protobuf JSON mapping.
std::string ReadingToJson(const v1::SensorReading& reading);

}  // namespace cityops::sim

#endif  // CITYOPS_SIM_PUBLISHER_H_
