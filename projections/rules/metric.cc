#include "projections/rules/metric.h"

#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

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
  return MetricRef{kind, member, field};
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
