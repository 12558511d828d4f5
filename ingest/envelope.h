// How ingest wraps what it consumes into log events. One place, shared by the ingester,
// the CLI's offline generator and the benches, so that every path writes the same
// envelope.
#ifndef CITYOPS_INGEST_ENVELOPE_H_
#define CITYOPS_INGEST_ENVELOPE_H_

#include <cstdint>
#include <string_view>

#include "cityops/v1/events.pb.h"

namespace cityops::ingest {

// A reading as an event: stream `device/<id>`, the reading's event time, provenance
// Kafka topic/partition/offset and idempotency key `<device_id>/<reading_id>`. Takes the
// reading's contents (swaps them out of `reading`).
v1::Event ReadingEvent(v1::SensorReading& reading, std::string_view topic, int32_t partition,
                       int64_t offset, bool device_unregistered);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_ENVELOPE_H_
