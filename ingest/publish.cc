#include "ingest/publish.h"

#include "absl/strings/ascii.h"

namespace cityops::ingest {

absl::StatusOr<PublishSummary> PublishJsonLines(std::istream& in, RecordProducer& producer,
                                                const PublishOptions& options, absl::Time now) {
  PublishSummary summary;
  std::string line;
  std::string binary;
  size_t number = 0;
  size_t sent = 0;
  v1::SensorReading reading;
  const std::vector<Header> json_headers = {{"content-type", "application/json"}};
  while (std::getline(in, line)) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    KafkaRecord record;
    record.topic = options.topic;
    record.value = line;
    record.content_type = "application/json";
    if (std::optional<Rejection> why = DecodeReading(record, options.validation, now, &reading)) {
      summary.errors.push_back(
          {number, std::string(RejectCodeName(why->code)), std::move(why->message)});
      continue;
    }
    absl::Status s;
    if (options.encoding == WireEncoding::kJson) {
      s = producer.Produce(options.topic, reading.device_id(), line, json_headers);
    } else {
      reading.SerializeToString(&binary);
      s = producer.Produce(options.topic, reading.device_id(), binary);
    }
    if (!s.ok()) return s;
    ++sent;
  }
  if (in.bad()) return absl::DataLossError("reading the input failed");
  if (absl::Status s = producer.Flush(absl::Seconds(60)); !s.ok()) return s;
  summary.published = sent;
  return summary;
}

}  // namespace cityops::ingest
