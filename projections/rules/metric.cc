#include "projections/rules/metric.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "projections/stored_event.h"

namespace cityops::rules {

namespace pb = google::protobuf;

const pb::FieldDescriptor* MetricsMember(v1::DeviceKind kind) {
  const pb::Descriptor* d = v1::SensorReading::descriptor();
  switch (kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER:
      return d->FindFieldByName("manhole_cover");
    case v1::DEVICE_KIND_ELEVATOR:
      return d->FindFieldByName("elevator");
    case v1::DEVICE_KIND_CURTAIN_WALL:
      return d->FindFieldByName("curtain_wall");
    case v1::DEVICE_KIND_FLOOD_GAUGE:
      return d->FindFieldByName("flood_gauge");
    default:
      return nullptr;
  }
}

std::string MetricRef::name() const { return field == nullptr ? "" : field->name(); }

namespace {

bool Readable(const pb::FieldDescriptor* f) {
  if (f->is_repeated()) return false;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT32:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
    case pb::FieldDescriptor::CPPTYPE_BOOL:
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<MetricRef> ResolveMetric(v1::DeviceKind kind, std::string_view name) {
  const pb::FieldDescriptor* member = MetricsMember(kind);
  if (member == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("metric '%s' needs a device kind; set the rule's device_kind", name));
  }
  const pb::Descriptor* metrics = member->message_type();
  const pb::FieldDescriptor* field = metrics->FindFieldByName(std::string(name));
  if (field == nullptr || !Readable(field)) {
    std::vector<std::string> names;
    for (int i = 0; i < metrics->field_count(); ++i) {
      if (Readable(metrics->field(i))) names.push_back(metrics->field(i)->name());
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has no metric '%s' a rule can test; use one of: %s",
                        v1::DeviceKind_Name(kind), name, absl::StrJoin(names, ", ")));
  }
  if (field->number() >= Reading::kMaxMetricField) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s metric '%s' has field number %d; the rules engine reads fields below %d only",
        v1::DeviceKind_Name(kind), name, field->number(), Reading::kMaxMetricField));
  }
  MetricRef ref{kind, member, field};
  ref.member_number = member->number();
  ref.field_number = field->number();
  ref.has_presence = field->has_presence();
  return ref;
}

std::optional<double> ReadMetric(const v1::SensorReading& reading, const MetricRef& metric) {
  const pb::Reflection* r = reading.GetReflection();
  if (!r->HasField(reading, metric.member)) return std::nullopt;
  const pb::Message& m = r->GetMessage(reading, metric.member);
  const pb::Reflection* mr = m.GetReflection();
  const pb::FieldDescriptor* f = metric.field;
  if (f->has_presence() && !mr->HasField(m, f)) return std::nullopt;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return mr->GetDouble(m, f);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return mr->GetFloat(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return mr->GetInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return static_cast<double>(mr->GetInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return mr->GetUInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return static_cast<double>(mr->GetUInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return mr->GetBool(m, f) ? 1.0 : 0.0;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return mr->GetEnumValue(m, f);
    default:
      return std::nullopt;
  }
}

namespace {

// How each field of each metrics message (SensorReading fields 10..13) is encoded.
struct MemberLayout {
  std::array<pb::FieldDescriptor::Type, Reading::kMaxMetricField> types{};  // 0: not read.
  int codes_field = 0;  // The repeated fault-code field (elevators).
};

const MemberLayout* LayoutOf(int member) {
  static const std::array<MemberLayout, 4> layouts = [] {
    std::array<MemberLayout, 4> out{};
    for (int m = 0; m < 4; ++m) {
      const pb::FieldDescriptor* member_field = v1::SensorReading::descriptor()->FindFieldByNumber(
          v1::SensorReading::kManholeCoverFieldNumber + m);
      const pb::Descriptor* d = member_field->message_type();
      for (int i = 0; i < d->field_count(); ++i) {
        const pb::FieldDescriptor* f = d->field(i);
        if (f->number() >= Reading::kMaxMetricField) continue;
        if (f->is_repeated()) {
          if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32) out[m].codes_field = f->number();
          continue;
        }
        if (Readable(f)) out[m].types[f->number()] = f->type();
      }
    }
    return out;
  }();
  if (member < v1::SensorReading::kManholeCoverFieldNumber ||
      member > v1::SensorReading::kFloodGaugeFieldNumber) {
    return nullptr;
  }
  return &layouts[member - v1::SensorReading::kManholeCoverFieldNumber];
}

// A varint-encoded scalar of `type` as a double.
double FromVarint(pb::FieldDescriptor::Type type, uint64_t v) {
  switch (type) {
    case pb::FieldDescriptor::TYPE_INT32:
    case pb::FieldDescriptor::TYPE_ENUM:
      return static_cast<int32_t>(v);
    case pb::FieldDescriptor::TYPE_INT64:
      return static_cast<double>(static_cast<int64_t>(v));
    case pb::FieldDescriptor::TYPE_UINT32:
      return static_cast<uint32_t>(v);
    case pb::FieldDescriptor::TYPE_UINT64:
      return static_cast<double>(v);
    case pb::FieldDescriptor::TYPE_BOOL:
      return v != 0 ? 1.0 : 0.0;
    case pb::FieldDescriptor::TYPE_SINT32:
      return static_cast<int32_t>((static_cast<uint32_t>(v) >> 1) ^
                                  -(static_cast<uint32_t>(v) & 1));
    case pb::FieldDescriptor::TYPE_SINT64:
      return static_cast<double>(static_cast<int64_t>((v >> 1) ^ -(v & 1)));
    default:
      return 0;
  }
}

bool IsVarintType(pb::FieldDescriptor::Type type) {
  switch (type) {
    case pb::FieldDescriptor::TYPE_INT32:
    case pb::FieldDescriptor::TYPE_ENUM:
    case pb::FieldDescriptor::TYPE_INT64:
    case pb::FieldDescriptor::TYPE_UINT32:
    case pb::FieldDescriptor::TYPE_UINT64:
    case pb::FieldDescriptor::TYPE_BOOL:
    case pb::FieldDescriptor::TYPE_SINT32:
    case pb::FieldDescriptor::TYPE_SINT64:
      return true;
    default:
      return false;
  }
}

}  // namespace

void Reading::Clear() {
  device_id_ = {};
  kind_ = v1::DEVICE_KIND_UNSPECIFIED;
  member_ = 0;
  present_ = 0;
  codes_.clear();
}

void Reading::Set(const v1::SensorReading& reading) {
  Clear();
  device_id_ = reading.device_id();
  kind_ = reading.kind();
  member_ = static_cast<int>(reading.metrics_case());  // The oneof case is the field number.
  const MemberLayout* layout = LayoutOf(member_);
  if (layout == nullptr) return;
  const pb::FieldDescriptor* member_field =
      v1::SensorReading::descriptor()->FindFieldByNumber(member_);
  const pb::Message& m = reading.GetReflection()->GetMessage(reading, member_field);
  const pb::Reflection* r = m.GetReflection();
  for (int n = 1; n < kMaxMetricField; ++n) {
    if (layout->types[n] == 0) continue;
    MetricRef ref;
    ref.member = member_field;
    ref.field = m.GetDescriptor()->FindFieldByNumber(n);
    if (std::optional<double> v = ReadMetric(reading, ref);
        v && (!ref.field->has_presence() || r->HasField(m, ref.field))) {
      values_[n] = *v;
      present_ |= uint64_t{1} << n;
    }
  }
  if (layout->codes_field != 0) {
    const pb::FieldDescriptor* codes = m.GetDescriptor()->FindFieldByNumber(layout->codes_field);
    for (int i = 0; i < r->FieldSize(m, codes); ++i)
      codes_.push_back(r->GetRepeatedInt32(m, codes, i));
  }
}

bool Reading::Decode(std::string_view bytes) {
  Clear();
  projections::WireReader w(bytes);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    uint64_t v = 0;
    if (field == v1::SensorReading::kDeviceIdFieldNumber && type == 2) {
      if (!w.Bytes(&device_id_)) return false;
      continue;
    }
    if (field == v1::SensorReading::kKindFieldNumber && type == 0) {
      if (!w.Varint(&v)) return false;
      kind_ = static_cast<v1::DeviceKind>(static_cast<int32_t>(v));
      continue;
    }
    const MemberLayout* layout = type == 2 ? LayoutOf(static_cast<int>(field)) : nullptr;
    if (layout == nullptr) {
      if (!w.Skip(type)) return false;
      continue;
    }
    // A metrics message. Another member replaces the one before (a oneof); the same one
    // again merges into it, as parsing does.
    std::string_view metrics;
    if (!w.Bytes(&metrics)) return false;
    if (member_ != static_cast<int>(field)) {
      present_ = 0;
      codes_.clear();
      member_ = static_cast<int>(field);
    }
    projections::WireReader m(metrics);
    while (!m.done()) {
      uint32_t n = 0;
      uint32_t mtype = 0;
      if (!m.Tag(&n, &mtype)) return false;
      if (layout->codes_field != 0 && n == static_cast<uint32_t>(layout->codes_field)) {
        if (mtype == 0) {  // One code, unpacked.
          if (!m.Varint(&v)) return false;
          codes_.push_back(static_cast<int32_t>(v));
          continue;
        }
        if (mtype == 2) {  // Packed.
          std::string_view packed;
          if (!m.Bytes(&packed)) return false;
          projections::WireReader c(packed);
          while (!c.done()) {
            if (!c.Varint(&v)) return false;
            codes_.push_back(static_cast<int32_t>(v));
          }
          continue;
        }
      }
      const pb::FieldDescriptor::Type t = n < static_cast<uint32_t>(kMaxMetricField)
                                              ? layout->types[n]
                                              : static_cast<pb::FieldDescriptor::Type>(0);
      double value = 0;
      if (mtype == 0 && IsVarintType(t)) {
        if (!m.Varint(&v)) return false;
        value = FromVarint(t, v);
      } else if (mtype == 1 &&
                 (t == pb::FieldDescriptor::TYPE_DOUBLE || t == pb::FieldDescriptor::TYPE_FIXED64 ||
                  t == pb::FieldDescriptor::TYPE_SFIXED64)) {
        uint64_t bits = 0;
        if (!m.Fixed64(&bits)) return false;
        if (t == pb::FieldDescriptor::TYPE_DOUBLE) {
          std::memcpy(&value, &bits, 8);
        } else {
          value = t == pb::FieldDescriptor::TYPE_FIXED64
                      ? static_cast<double>(bits)
                      : static_cast<double>(static_cast<int64_t>(bits));
        }
      } else if (mtype == 5 &&
                 (t == pb::FieldDescriptor::TYPE_FLOAT || t == pb::FieldDescriptor::TYPE_FIXED32 ||
                  t == pb::FieldDescriptor::TYPE_SFIXED32)) {
        uint32_t bits = 0;
        if (!m.Fixed32(&bits)) return false;
        if (t == pb::FieldDescriptor::TYPE_FLOAT) {
          float f = 0;
          std::memcpy(&f, &bits, 4);
          value = f;
        } else {
          value = t == pb::FieldDescriptor::TYPE_FIXED32 ? static_cast<double>(bits)
                                                         : static_cast<int32_t>(bits);
        }
      } else {
        // Not a metric (or not in the encoding its type has, which parsing would also
        // keep as an unknown field).
        if (!m.Skip(mtype)) return false;
        continue;
      }
      values_[n] = value;
      present_ |= uint64_t{1} << n;
    }
  }
  return w.ok();
}

std::optional<double> Reading::Get(const MetricRef& metric) const {
  if (metric.member_number != member_ || member_ == 0) return std::nullopt;
  if (present_ & (uint64_t{1} << metric.field_number)) return values_[metric.field_number];
  if (!metric.has_presence) return 0.0;  // proto3 implicit presence: the default.
  return std::nullopt;
}

bool Reading::has_elevator() const { return member_ == v1::SensorReading::kElevatorFieldNumber; }

absl::StatusOr<double> ParseMetricValue(const MetricRef& metric, std::string_view text) {
  const pb::FieldDescriptor* f = metric.field;
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL) {
    if (text == "true") return 1.0;
    if (text == "false") return 0.0;
    return absl::InvalidArgumentError(absl::StrFormat(
        "'%s' is a boolean metric: write true or false, not '%s'", f->name(), text));
  }
  if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
    if (const pb::EnumValueDescriptor* v = f->enum_type()->FindValueByName(std::string(text))) {
      return static_cast<double>(v->number());
    }
    std::vector<std::string> names;
    for (int i = 0; i < f->enum_type()->value_count(); ++i) {
      names.push_back(f->enum_type()->value(i)->name());
    }
    return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a value of %s; use one of: %s",
                                                      text, f->enum_type()->name(),
                                                      absl::StrJoin(names, ", ")));
  }
  double v = 0;
  if (!absl::SimpleAtod(absl::string_view(text.data(), text.size()), &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s' is a numeric metric: '%s' is not a number", f->name(), text));
  }
  return v;
}

}  // namespace cityops::rules
