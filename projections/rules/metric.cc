#include "projections/rules/metric.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "projections/stored_event.h"

namespace cityops::rules {

namespace pb = google::protobuf;

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

// How each field of a typed metrics message (a member of SensorReading's `metrics`
// oneof other than `values`) is encoded.
struct MemberLayout {
  std::array<pb::FieldDescriptor::Type, catalogue::kMaxMetricSlots> types{};  // 0: not read.
  int codes_field = 0;  // The repeated code field (an elevator's fault codes).
};

// By SensorReading field number; null for anything but a typed metrics message.
const MemberLayout* LayoutOf(int member) {
  static const std::vector<std::unique_ptr<MemberLayout>> layouts = [] {
    std::vector<std::unique_ptr<MemberLayout>> out;
    const pb::OneofDescriptor* metrics =
        v1::SensorReading::descriptor()->FindOneofByName("metrics");
    for (int i = 0; i < metrics->field_count(); ++i) {
      const pb::FieldDescriptor* member_field = metrics->field(i);
      if (member_field->number() == v1::SensorReading::kValuesFieldNumber) continue;
      auto layout = std::make_unique<MemberLayout>();
      const pb::Descriptor* d = member_field->message_type();
      for (int j = 0; j < d->field_count(); ++j) {
        const pb::FieldDescriptor* f = d->field(j);
        if (f->number() >= catalogue::kMaxMetricSlots) continue;
        if (f->is_repeated()) {
          if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32)
            layout->codes_field = f->number();
          continue;
        }
        if (Readable(f)) layout->types[f->number()] = f->type();
      }
      if (out.size() <= static_cast<size_t>(member_field->number())) {
        out.resize(member_field->number() + 1);
      }
      out[member_field->number()] = std::move(layout);
    }
    return out;
  }();
  if (member < 0 || static_cast<size_t>(member) >= layouts.size()) return nullptr;
  return layouts[member].get();
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
  kind_id_ = {};
  typed_ = v1::DEVICE_KIND_UNSPECIFIED;
  kind_ = nullptr;
  member_ = 0;
  has_codes_ = false;
  present_ = 0;
  codes_.clear();
  named_.clear();
}

void Reading::Set(const v1::SensorReading& reading, const catalogue::KindTable& kinds) {
  scratch_.clear();
  reading.SerializeToString(&scratch_);
  Decode(scratch_, kinds);
}

// One `MetricValue` of the reading's kind (known by now): its value into its slot.
bool Reading::DecodeValue(std::string_view bytes) {
  projections::WireReader w(bytes);
  std::string_view name;
  double value = 0;
  bool has_value = false;
  const size_t codes_before = codes_.size();
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    uint64_t v = 0;
    if (field == v1::MetricValue::kNameFieldNumber && type == 2) {
      if (!w.Bytes(&name)) return false;
    } else if (field == v1::MetricValue::kNumberFieldNumber && type == 1) {
      uint64_t bits = 0;
      if (!w.Fixed64(&bits)) return false;
      std::memcpy(&value, &bits, 8);
      has_value = true;
    } else if (field == v1::MetricValue::kFlagFieldNumber && type == 0) {
      if (!w.Varint(&v)) return false;
      value = v != 0 ? 1.0 : 0.0;
      has_value = true;
    } else if (field == v1::MetricValue::kCodeFieldNumber && type == 0) {
      if (!w.Varint(&v)) return false;
      value = static_cast<double>(static_cast<int64_t>(v));
      has_value = true;
    } else if (field == v1::MetricValue::kCountFieldNumber && type == 0) {
      if (!w.Varint(&v)) return false;
      value = static_cast<double>(v);
      has_value = true;
    } else if (field == v1::MetricValue::kCodesFieldNumber && (type == 0 || type == 2)) {
      if (type == 0) {
        if (!w.Varint(&v)) return false;
        codes_.push_back(static_cast<int32_t>(static_cast<int64_t>(v)));
      } else {
        std::string_view packed;
        if (!w.Bytes(&packed)) return false;
        projections::WireReader c(packed);
        while (!c.done()) {
          if (!c.Varint(&v)) return false;
          codes_.push_back(static_cast<int32_t>(static_cast<int64_t>(v)));
        }
      }
    } else if (!w.Skip(type)) {
      return false;
    }
  }
  if (!w.ok()) return false;
  const catalogue::KindMetric* metric = kind_ == nullptr ? nullptr : kind_->Metric(name);
  if (metric == nullptr) {
    codes_.resize(codes_before);  // Not a metric of the kind: ignored, as ingest refuses it.
    return true;
  }
  if (metric->repeated) {
    has_codes_ = true;  // An empty list says "no code active".
    return true;
  }
  codes_.resize(codes_before);
  if (has_value) {
    values_[metric->slot] = value;
    present_ |= uint64_t{1} << metric->slot;
  }
  return true;
}

bool Reading::Decode(std::string_view bytes, const catalogue::KindTable& kinds) {
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
      typed_ = static_cast<v1::DeviceKind>(static_cast<int32_t>(v));
      continue;
    }
    if (field == v1::SensorReading::kKindIdFieldNumber && type == 2) {
      if (!w.Bytes(&kind_id_)) return false;
      continue;
    }
    if (field == v1::SensorReading::kValuesFieldNumber && type == 2) {
      std::string_view values;
      if (!w.Bytes(&values)) return false;
      if (member_ != static_cast<int>(field)) {
        present_ = 0;
        codes_.clear();
        has_codes_ = false;
        member_ = static_cast<int>(field);
      }
      projections::WireReader m(values);
      while (!m.done()) {
        uint32_t n = 0;
        uint32_t mtype = 0;
        if (!m.Tag(&n, &mtype)) return false;
        if (n == v1::MetricValues::kValuesFieldNumber && mtype == 2) {
          std::string_view one;
          if (!m.Bytes(&one)) return false;
          named_.push_back(one);
        } else if (!m.Skip(mtype)) {
          return false;
        }
      }
      if (!m.ok()) return false;
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
      named_.clear();
      member_ = static_cast<int>(field);
    }
    has_codes_ = layout->codes_field != 0;
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
      const pb::FieldDescriptor::Type t = n < static_cast<uint32_t>(catalogue::kMaxMetricSlots)
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
  if (!w.ok()) return false;
  // The kind: by its id, else by its typed kind; a typed metrics message must be that
  // kind's (ingest refuses readings where they disagree).
  kind_ = kind_id_.empty() ? kinds.FindTyped(typed_) : kinds.Find(kind_id_);
  if (kind_ != nullptr && typed_ != v1::DEVICE_KIND_UNSPECIFIED && typed_ != kind_->typed) {
    kind_ = nullptr;
  }
  if (kind_ != nullptr && member_ != 0 && member_ != v1::SensorReading::kValuesFieldNumber &&
      (kind_->member == nullptr || kind_->member->number() != member_)) {
    kind_ = nullptr;
  }
  for (std::string_view one : named_) {
    if (!DecodeValue(one)) return false;
  }
  return true;
}

absl::StatusOr<MetricRef> ResolveMetric(const catalogue::Kind& kind, std::string_view name) {
  const catalogue::KindMetric* m = kind.Metric(name);
  if (m == nullptr || m->repeated ||
      (m->field != nullptr && (m->field->is_repeated() || !Readable(m->field)))) {
    std::vector<std::string> names;
    for (const catalogue::KindMetric& k : kind.metrics) {
      if (!k.repeated) names.push_back(k.name);
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("device kind '%s' has no metric '%s' a rule can test; use one of: %s",
                        kind.id, name, absl::StrJoin(names, ", ")));
  }
  return MetricRef{kind.index, m, m->slot};
}

absl::StatusOr<double> ParseMetricValue(const MetricRef& metric, std::string_view text) {
  const catalogue::KindMetric& m = *metric.metric;
  const pb::FieldDescriptor* f = m.field;
  const bool flag = f != nullptr ? f->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL
                                 : m.type == v1::METRIC_TYPE_FLAG;
  if (flag) {
    if (text == "true") return 1.0;
    if (text == "false") return 0.0;
    return absl::InvalidArgumentError(absl::StrFormat(
        "'%s' is a flag (a boolean metric): write true or false, not '%s'", m.name, text));
  }
  if (f != nullptr && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
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
  if (absl::SimpleAtod(absl::string_view(text.data(), text.size()), &v) && std::isfinite(v)) {
    return v;
  }
  if (m.type == v1::METRIC_TYPE_CODE && m.spec != nullptr) {
    std::vector<std::string> names;
    for (const v1::MetricCode& c : m.spec->codes()) {
      if (c.name() == text) return static_cast<double>(c.value());
      names.push_back(absl::StrFormat("%d (%s)", c.value(), c.name()));
    }
    return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a code of '%s'; use one of: %s",
                                                      text, m.name, absl::StrJoin(names, ", ")));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("'%s' is a numeric metric: '%s' is not a number", m.name, text));
}

}  // namespace cityops::rules
