// `cityops publish`: an integrator's tool. Reads sensor readings as JSON lines (the
// protobuf JSON mapping of `cityops.v1.SensorReading`), validates each exactly as ingest
// will, and publishes the valid ones keyed by device id. Every bad line is reported with
// its number and reason and is not sent; the good lines around it still are.
#ifndef CITYOPS_INGEST_PUBLISH_H_
#define CITYOPS_INGEST_PUBLISH_H_

#include <cstddef>
#include <istream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ingest/record_decoder.h"
#include "ingest/record_producer.h"

namespace cityops::ingest {

enum class WireEncoding { kProtobuf, kJson };

struct PublishOptions {
  std::string topic = "cityops.readings";
  WireEncoding encoding = WireEncoding::kProtobuf;
  ValidationPolicy validation;
};

struct LineError {
  size_t line = 0;   // 1-based.
  std::string code;  // A RejectCode name, e.g. "INVALID_METRIC".
  std::string message;
};

struct PublishSummary {
  size_t published = 0;  // Acknowledged by Kafka.
  std::vector<LineError> errors;
};

// Publishes every valid line of `in` and waits for Kafka to acknowledge them.
// UNAVAILABLE if Kafka did not acknowledge all of them (none is reported published then).
absl::StatusOr<PublishSummary> PublishJsonLines(std::istream& in, RecordProducer& producer,
                                                const PublishOptions& options, absl::Time now);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_PUBLISH_H_
