// Reading a stored event's envelope without parsing it: the fast path of the stages that
// fold the whole log (the rules stage, the read models).
//
// A stored record is a serialized `cityops.v1.Event` (kernel/LOG_FORMAT.md). Most of the
// log is readings, and a fold needs little of them: the envelope's event time, who
// appended it (the rules stage skips its own output), the payload type, and the payload's
// own bytes. `DecodeEnvelope` finds those by walking the record's top-level fields with
// the protobuf wire format, allocating nothing; `DecodeReadingHeader` does the same for a
// SensorReading's identity fields. A stage then parses only what it needs (a reading's
// bytes into a reused message), or the whole event (`EventLog::ParseEvent`) for the rare
// others.
//
// Both are exact for records written by protobuf (any field order, unknown fields
// skipped; for a field written twice the last one counts, as when parsing). They return
// false for a record that is not well-formed wire format; callers then parse it with
// `EventLog::ParseEvent`, which reports the damage.
#ifndef CITYOPS_PROJECTIONS_STORED_EVENT_H_
#define CITYOPS_PROJECTIONS_STORED_EVENT_H_

#include <string_view>

#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "kernel/wire_reader.h"

namespace cityops::projections {

// The wire-format cursor lives with the log format (kernel/wire_reader.h).
using kernel::WireReader;

// The envelope of a stored event. Views point into the decoded record.
struct StoredEnvelope {
  std::string_view stream_id;
  bool has_event_time = false;
  absl::Time event_time = absl::UnixEpoch();  // Unset: the epoch, as a parsed Event reads.
  std::string_view provenance_stage;          // Provenance.stage; empty if another origin.
  v1::Event::PayloadCase payload = v1::Event::PAYLOAD_NOT_SET;
  std::string_view payload_bytes;  // The payload message, serialized.
};

bool DecodeEnvelope(std::string_view record, StoredEnvelope* out);

// A serialized google.protobuf.Timestamp (an envelope's event or recorded time).
bool DecodeTimestamp(std::string_view bytes, absl::Time* out);

// The identity of a SensorReading (the payload bytes of a reading event).
struct ReadingHeader {
  std::string_view device_id;
  v1::DeviceKind kind = v1::DEVICE_KIND_UNSPECIFIED;
  std::string_view kind_id;  // The catalogue's id of the kind; empty if not sent.
  // The metrics member present (SensorReading field 10..14: a typed message or
  // `values`), or 0.
  int metrics_field = 0;
  std::string_view metrics_bytes;
};

bool DecodeReadingHeader(std::string_view reading, ReadingHeader* out);

// The battery level a reading reports, from its metrics bytes: `battery_pct` of a manhole
// cover's or flood gauge's typed metrics, or the number of the metric named `battery_pct`
// in `values` (a reading of any kind by name); false if none.
bool DecodeBatteryPct(const ReadingHeader& header, double* pct);

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_STORED_EVENT_H_
