#include "projections/stored_event.h"

#include <array>
#include <cstring>

#include "google/protobuf/descriptor.h"

namespace cityops::projections {

namespace {

// A cursor over protobuf wire format. Every read checks bounds; `ok` turns false for
// good at the first malformed byte.
class Wire {
 public:
  explicit Wire(std::string_view bytes)
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

  bool Bytes(std::string_view* out) {
    uint64_t n = 0;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return ok_ = false;
    *out = std::string_view(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    return true;
  }

  bool Fixed64(uint64_t* v) {
    if (end_ - p_ < 8) return ok_ = false;
    std::memcpy(v, p_, 8);  // Little-endian on every platform cityops builds for.
    p_ += 8;
    return true;
  }

  bool Skip(uint32_t type) {
    uint64_t ignored = 0;
    std::string_view bytes;
    switch (type) {
      case 0:
        return Varint(&ignored);
      case 1:
        return Fixed64(&ignored);
      case 2:
        return Bytes(&bytes);
      case 5:
        if (end_ - p_ < 4) return ok_ = false;
        p_ += 4;
        return true;
      default:  // Groups (never written by proto3) and invalid types.
        return ok_ = false;
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

bool DecodeTimestamp(std::string_view bytes, absl::Time* out) {
  Wire w(bytes);
  int64_t seconds = 0;
  int32_t nanos = 0;
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    uint64_t v = 0;
    if (field == 1 && type == 0) {
      if (!w.Varint(&v)) return false;
      seconds = static_cast<int64_t>(v);
    } else if (field == 2 && type == 0) {
      if (!w.Varint(&v)) return false;
      nanos = static_cast<int32_t>(v);
    } else if (!w.Skip(type)) {
      return false;
    }
  }
  *out = absl::FromUnixSeconds(seconds) + absl::Nanoseconds(nanos);
  return true;
}

// Event field numbers that belong to the `payload` oneof.
const std::array<bool, 128>& PayloadFields() {
  static const std::array<bool, 128> fields = [] {
    std::array<bool, 128> f{};
    const google::protobuf::OneofDescriptor* payload =
        v1::Event::descriptor()->FindOneofByName("payload");
    for (int i = 0; i < payload->field_count(); ++i) {
      const int n = payload->field(i)->number();
      if (n < 128) f[n] = true;
    }
    return f;
  }();
  return fields;
}

}  // namespace

bool DecodeEnvelope(std::string_view record, StoredEnvelope* out) {
  *out = StoredEnvelope();
  const std::array<bool, 128>& payload_fields = PayloadFields();
  Wire w(record);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    if (type != 2) {
      if (!w.Skip(type)) return false;
      continue;
    }
    std::string_view bytes;
    if (!w.Bytes(&bytes)) return false;
    if (field == v1::Event::kStreamIdFieldNumber) {
      out->stream_id = bytes;
    } else if (field == v1::Event::kEventTimeFieldNumber) {
      if (!DecodeTimestamp(bytes, &out->event_time)) return false;
      out->has_event_time = true;
    } else if (field == v1::Event::kProvenanceFieldNumber) {
      Wire p(bytes);
      while (!p.done()) {
        uint32_t pf = 0;
        uint32_t pt = 0;
        if (!p.Tag(&pf, &pt)) return false;
        if (pt == 2 &&
            (pf == v1::Provenance::kStageFieldNumber || pf == v1::Provenance::kKafkaFieldNumber ||
             pf == v1::Provenance::kActorFieldNumber)) {
          std::string_view v;
          if (!p.Bytes(&v)) return false;
          // One oneof: the last member written is the one set.
          out->provenance_stage = pf == v1::Provenance::kStageFieldNumber ? v : std::string_view();
        } else if (!p.Skip(pt)) {
          return false;
        }
      }
    } else if (field < payload_fields.size() && payload_fields[field]) {
      out->payload = static_cast<v1::Event::PayloadCase>(field);
      out->payload_bytes = bytes;
    }
  }
  return w.ok();
}

bool DecodeReadingHeader(std::string_view reading, ReadingHeader* out) {
  *out = ReadingHeader();
  Wire w(reading);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    if (field == v1::SensorReading::kDeviceIdFieldNumber && type == 2) {
      if (!w.Bytes(&out->device_id)) return false;
    } else if (field == v1::SensorReading::kKindFieldNumber && type == 0) {
      uint64_t v = 0;
      if (!w.Varint(&v)) return false;
      out->kind = static_cast<v1::DeviceKind>(static_cast<int32_t>(v));
    } else if (field >= v1::SensorReading::kManholeCoverFieldNumber &&
               field <= v1::SensorReading::kFloodGaugeFieldNumber && type == 2) {
      if (!w.Bytes(&out->metrics_bytes)) return false;
      out->metrics_field = static_cast<int>(field);
    } else if (!w.Skip(type)) {
      return false;
    }
  }
  return w.ok();
}

bool DecodeBatteryPct(const ReadingHeader& header, double* pct) {
  uint32_t battery_field = 0;
  if (header.metrics_field == v1::SensorReading::kManholeCoverFieldNumber) {
    battery_field = v1::ManholeCoverMetrics::kBatteryPctFieldNumber;
  } else if (header.metrics_field == v1::SensorReading::kFloodGaugeFieldNumber) {
    battery_field = v1::FloodGaugeMetrics::kBatteryPctFieldNumber;
  } else {
    return false;
  }
  bool found = false;
  Wire w(header.metrics_bytes);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    if (field == battery_field && type == 1) {
      uint64_t bits = 0;
      if (!w.Fixed64(&bits)) return false;
      std::memcpy(pct, &bits, sizeof(*pct));
      found = true;
    } else if (!w.Skip(type)) {
      return false;
    }
  }
  return found && w.ok();
}

}  // namespace cityops::projections
