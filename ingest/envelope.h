// How ingest wraps what it consumes into log events. One place, shared by the ingester,
// the CLI's offline generator and the benches, so that every path writes the same
// envelope.
#ifndef CITYOPS_INGEST_ENVELOPE_H_
#define CITYOPS_INGEST_ENVELOPE_H_

#include <cstdint>
#include <string_view>

#include "cityops/v1/events.pb.h"

namespace cityops::ingest {

// Fills `out` (cleared first) with a reading as an event: stream `device/<id>`, the
// reading's event time, provenance Kafka topic/partition/offset. No idempotency key: a
// reading's identity is (device_id, reading_id), already in the payload. Takes the
// reading's contents (swaps them out of `reading`; cheap when both are on the heap).
void FillReadingEvent(v1::SensorReading& reading, std::string_view topic, int32_t partition,
                      int64_t offset, bool device_unregistered, v1::Event* out);

// The same, returning a new event.
v1::Event ReadingEvent(v1::SensorReading& reading, std::string_view topic, int32_t partition,
                       int64_t offset, bool device_unregistered);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_ENVELOPE_H_
