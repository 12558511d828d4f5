#include "sim/publisher.h"

#include <algorithm>
#include <fstream>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

namespace cityops::sim {
namespace {

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = false;
  print.preserve_proto_field_names = false;
  // Serializing a generated message cannot fail.
  (void)google::protobuf::util::MessageToJsonString(message, &json, print);
  return json;
}

// Paces the stream: a reading may go out once both the rate and the acceleration allow.
class Pacer {
 public:
  Pacer(const PublishOptions& options, absl::Time sim_start)
      : options_(options), sim_start_(sim_start), wall_start_(absl::Now()) {}

  void Wait(uint64_t sent, absl::Time event_time) const {
    absl::Duration due = absl::ZeroDuration();
    if (options_.rate > 0) {
      due = std::max(due, absl::Seconds(static_cast<double>(sent) / options_.rate));
    }
    if (options_.acceleration > 0) {
      due = std::max(due, (event_time - sim_start_) / options_.acceleration);
    }
    const absl::Duration ahead = due - (absl::Now() - wall_start_);
    if (ahead > absl::Milliseconds(1)) absl::SleepFor(ahead);
  }
  absl::Duration elapsed() const { return absl::Now() - wall_start_; }
  // Time spent blocked outside the pacer does not count against the simulation.
  void Skip(absl::Duration wall) { wall_start_ += wall; }

 private:
  const PublishOptions& options_;
  absl::Time sim_start_;
  absl::Time wall_start_;
};

// Streams readings until the simulated end or a stop, calling `write` for each.
absl::Status Stream(Simulator& simulator, const PublishOptions& options,
                    const std::atomic<bool>* stop, PublishStats* stats,
                    const std::function<absl::Status(const v1::SensorReading&)>& write) {
  const absl::Time sim_start = simulator.now();
  const absl::Time until = sim_start + options.duration;
  Pacer pacer(options, sim_start);
  v1::SensorReading reading;
  while (simulator.Next(until, &reading)) {
    if (stop != nullptr && stop->load()) break;
    if (options.wait_while_behind && stats->readings % 1000 == 0) {
      const absl::Time before = absl::Now();
      options.wait_while_behind();
      pacer.Skip(absl::Now() - before);
    }
    const absl::Time t = absl::FromUnixSeconds(reading.event_time().seconds()) +
                         absl::Nanoseconds(reading.event_time().nanos());
    if (options.rate > 0 || options.acceleration > 0) pacer.Wait(stats->readings, t);
    if (absl::Status s = write(reading); !s.ok()) return s;
    ++stats->readings;
  }
  // With an acceleration, the run lasts its simulated time even when it ends quiet.
  stats->simulated = simulator.now() - sim_start;
  stats->wall = pacer.elapsed();
  return absl::OkStatus();
}

}  // namespace

std::string ReadingToJson(const v1::SensorReading& reading) { return ToJson(reading); }

absl::StatusOr<PublishStats> PublishToKafka(Simulator& simulator, ingest::RecordProducer& producer,
                                            const PublishOptions& options,
                                            const std::atomic<bool>* stop) {
  PublishStats stats;
  const uint64_t delivered_before = producer.delivered();
  const uint64_t failed_before = producer.failed();
  const City& city = simulator.city();
  if (options.register_devices) {
    std::string value;
    for (size_t i = 0; i < city.devices.size(); ++i) {
      if (stop != nullptr && stop->load()) break;
      const v1::DeviceRegistered r = city.Registration(i);
      value.clear();
      r.SerializeToString(&value);
      // Stamped with simulated time, as a device registry would have sent it then.
      if (absl::Status s = producer.Produce(options.devices_topic, r.device_id(), value, {}, -1,
                                            simulator.now());
          !s.ok()) {
        return s;
      }
      ++stats.devices;
    }
  }
  std::string value;
  const absl::Status streamed =
      Stream(simulator, options, stop, &stats, [&](const v1::SensorReading& reading) {
        value.clear();
        reading.SerializeToString(&value);
        // The record's timestamp is the simulated moment the device sent it: ingest
        // validates event times against it, whenever it consumes the record.
        return producer.Produce(options.readings_topic, reading.device_id(), value, {}, -1,
                                simulator.now());
      });
  if (!streamed.ok()) return streamed;
  const absl::Status flushed = producer.Flush(options.flush_timeout);
  stats.delivered = producer.delivered() - delivered_before;
  stats.failed = producer.failed() - failed_before;
  if (!flushed.ok()) return flushed;
  return stats;
}

absl::StatusOr<PublishStats> WriteJsonLines(Simulator& simulator, const std::string& path,
                                            const PublishOptions& options,
                                            const std::atomic<bool>* stop) {
  PublishStats stats;
  if (options.register_devices && !options.devices_path.empty()) {
    std::ofstream devices(options.devices_path, std::ios::trunc);
    if (!devices) {
      return absl::InternalError(absl::StrFormat("cannot write %s", options.devices_path));
    }
    const City& city = simulator.city();
    for (size_t i = 0; i < city.devices.size(); ++i) {
      devices << ToJson(city.Registration(i)) << '\n';
      ++stats.devices;
    }
    devices.flush();
    if (!devices) {
      return absl::InternalError(absl::StrFormat("cannot write %s", options.devices_path));
    }
  }
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrFormat("cannot write %s", path));
  const absl::Status streamed =
      Stream(simulator, options, stop, &stats, [&](const v1::SensorReading& reading) {
        out << ToJson(reading) << '\n';
        return out ? absl::OkStatus()
                   : absl::InternalError(absl::StrFormat("cannot write %s", path));
      });
  if (!streamed.ok()) return streamed;
  out.flush();
  if (!out) return absl::InternalError(absl::StrFormat("cannot write %s", path));
  return stats;
}

}  // namespace cityops::sim
