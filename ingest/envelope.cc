#include "ingest/envelope.h"

#include <string>

namespace cityops::ingest {

v1::Event ReadingEvent(v1::SensorReading& reading, std::string_view topic, int32_t partition,
                       int64_t offset, bool device_unregistered) {
  v1::Event e;
  std::string stream = "device/";
  stream += reading.device_id();
  e.set_stream_id(std::move(stream));
  *e.mutable_event_time() = reading.event_time();
  v1::Provenance* provenance = e.mutable_provenance();
  v1::KafkaSource* source = provenance->mutable_kafka();
  source->set_topic(std::string(topic));
  source->set_partition(partition);
  source->set_offset(offset);
  std::string key = reading.device_id();
  key += '/';
  key += reading.reading_id();
  provenance->set_idempotency_key(std::move(key));
  if (device_unregistered) e.set_device_unregistered(true);
  e.mutable_reading()->Swap(&reading);
  return e;
}

}  // namespace cityops::ingest
