#include "ingest/envelope.h"

#include <string>

namespace cityops::ingest {

void FillReadingEvent(v1::SensorReading& reading, std::string_view topic, int32_t partition,
                      int64_t offset, bool device_unregistered, v1::Event* out) {
  out->Clear();
  std::string* stream = out->mutable_stream_id();
  stream->reserve(7 + reading.device_id().size());
  stream->append("device/");
  stream->append(reading.device_id());
  *out->mutable_event_time() = reading.event_time();
  v1::KafkaSource* source = out->mutable_provenance()->mutable_kafka();
  source->set_topic(std::string(topic));
  source->set_partition(partition);
  source->set_offset(offset);
  if (device_unregistered) out->set_device_unregistered(true);
  out->mutable_reading()->Swap(&reading);
}

v1::Event ReadingEvent(v1::SensorReading& reading, std::string_view topic, int32_t partition,
                       int64_t offset, bool device_unregistered) {
  v1::Event e;
  FillReadingEvent(reading, topic, partition, offset, device_unregistered, &e);
  return e;
}

}  // namespace cityops::ingest
