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

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"

namespace cityops::projections {

// A cursor over protobuf wire format, for the decoders here and `rules::Reading`. Every
// read checks bounds; `ok()` turns false for good at the first malformed byte.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes)
      : p_(reinterpret_cast<const uint8_t*>(bytes.data())), end_(p_ + bytes.size()) {}

  bool done() const { return p_ == end_; }
  bool ok() const { return ok_; }

  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return ok_ = false;
      const uint8_t b = *p_++;
      result |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return ok_ = false;
  }

  // The next field's number and wire type.
  bool Tag(uint32_t* field, uint32_t* type) {
    uint64_t tag = 0;
    if (!Varint(&tag) || tag >> 3 == 0 || tag >> 3 > 0x1fffffff) return ok_ = false;
    *field = static_cast<uint32_t>(tag >> 3);
    *type = static_cast<uint32_t>(tag & 7);
    return true;
  }

  // A length-delimited field's bytes.
  bool Bytes(std::string_view* out) {
    uint64_t n = 0;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return ok_ = false;
    *out = std::string_view(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    return true;
  }

  // Little-endian, as the wire format and every platform cityops builds for.
  bool Fixed64(uint64_t* v) {
    if (end_ - p_ < 8) return ok_ = false;
    std::memcpy(v, p_, 8);
    p_ += 8;
    return true;
  }

  bool Fixed32(uint32_t* v) {
    if (end_ - p_ < 4) return ok_ = false;
    std::memcpy(v, p_, 4);
    p_ += 4;
    return true;
  }

  // Skips a field of wire type `type`.
  bool Skip(uint32_t type) {
    uint64_t v64 = 0;
    uint32_t v32 = 0;
    std::string_view bytes;
    switch (type) {
      case 0:
        return Varint(&v64);
      case 1:
        return Fixed64(&v64);
      case 2:
        return Bytes(&bytes);
      case 5:
        return Fixed32(&v32);
      default:  // Groups (never written by proto3) and invalid types.
        return ok_ = false;
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

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

// The identity of a SensorReading (the payload bytes of a reading event).
struct ReadingHeader {
  std::string_view device_id;
  v1::DeviceKind kind = v1::DEVICE_KIND_UNSPECIFIED;
  // The metrics member present (SensorReading field 10..13), or 0.
  int metrics_field = 0;
  std::string_view metrics_bytes;
};

bool DecodeReadingHeader(std::string_view reading, ReadingHeader* out);

// The battery level a reading reports (manhole covers and flood gauges carry one), from
// its metrics bytes; false if none.
bool DecodeBatteryPct(const ReadingHeader& header, double* pct);

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_STORED_EVENT_H_
