#include "projections/stored_event.h"

#include <array>

#include "google/protobuf/descriptor.h"

namespace cityops::projections {

namespace {

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

bool DecodeTimestamp(std::string_view bytes, absl::Time* out) {
  WireReader w(bytes);
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

bool DecodeEnvelope(std::string_view record, StoredEnvelope* out) {
  *out = StoredEnvelope();
  const std::array<bool, 128>& payload_fields = PayloadFields();
  WireReader w(record);
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
      WireReader p(bytes);
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
  WireReader w(reading);
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
    } else if (field == v1::SensorReading::kKindIdFieldNumber && type == 2) {
      if (!w.Bytes(&out->kind_id)) return false;
    } else if (field >= v1::SensorReading::kManholeCoverFieldNumber &&
               field <= v1::SensorReading::kValuesFieldNumber && type == 2) {
      if (!w.Bytes(&out->metrics_bytes)) return false;
      out->metrics_field = static_cast<int>(field);
    } else if (!w.Skip(type)) {
      return false;
    }
  }
  return w.ok();
}

namespace {

// The number of the MetricValue named `battery_pct` in serialized MetricValues.
bool DecodeValuesBatteryPct(std::string_view values, double* pct) {
  bool found = false;
  WireReader w(values);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    if (field != v1::MetricValues::kValuesFieldNumber || type != 2) {
      if (!w.Skip(type)) return false;
      continue;
    }
    std::string_view value;
    if (!w.Bytes(&value)) return false;
    std::string_view name;
    bool has_number = false;
    uint64_t bits = 0;
    WireReader m(value);
    while (!m.done()) {
      uint32_t f = 0;
      uint32_t t = 0;
      if (!m.Tag(&f, &t)) return false;
      if (f == v1::MetricValue::kNameFieldNumber && t == 2) {
        if (!m.Bytes(&name)) return false;
      } else if (f == v1::MetricValue::kNumberFieldNumber && t == 1) {
        if (!m.Fixed64(&bits)) return false;
        has_number = true;
      } else if (f >= v1::MetricValue::kFlagFieldNumber &&
                 f <= v1::MetricValue::kCountFieldNumber) {  // Another member of the oneof.
        if (!m.Skip(t)) return false;
        has_number = false;
      } else if (!m.Skip(t)) {
        return false;
      }
    }
    if (!m.ok()) return false;
    if (name == "battery_pct" && has_number) {
      std::memcpy(pct, &bits, sizeof(*pct));
      found = true;
    }
  }
  return found && w.ok();
}

}  // namespace

bool DecodeBatteryPct(const ReadingHeader& header, double* pct) {
  if (header.metrics_field == v1::SensorReading::kValuesFieldNumber) {
    return DecodeValuesBatteryPct(header.metrics_bytes, pct);
  }
  uint32_t battery_field = 0;
  if (header.metrics_field == v1::SensorReading::kManholeCoverFieldNumber) {
    battery_field = v1::ManholeCoverMetrics::kBatteryPctFieldNumber;
  } else if (header.metrics_field == v1::SensorReading::kFloodGaugeFieldNumber) {
    battery_field = v1::FloodGaugeMetrics::kBatteryPctFieldNumber;
  } else {
    return false;
  }
  bool found = false;
  WireReader w(header.metrics_bytes);
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
