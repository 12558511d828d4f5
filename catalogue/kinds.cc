#include "catalogue/kinds.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "catalogue/catalogue.h"
#include "kernel/proto_time.h"

namespace cityops::catalogue {

namespace pb = google::protobuf;

std::string TypedKindId(v1::DeviceKind kind) {
  if (kind == v1::DEVICE_KIND_UNSPECIFIED || !v1::DeviceKind_IsValid(kind)) return "";
  std::string name = v1::DeviceKind_Name(kind);
  constexpr std::string_view kPrefix = "DEVICE_KIND_";
  if (name.rfind(kPrefix, 0) == 0) name.erase(0, kPrefix.size());
  return absl::AsciiStrToLower(name);
}

namespace {

// The metric type a typed message's field reads as when no catalogue says otherwise.
v1::MetricType TypedFieldType(const pb::FieldDescriptor& f) {
  switch (f.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return v1::METRIC_TYPE_FLAG;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return v1::METRIC_TYPE_CODE;
    default:
      return f.is_repeated() ? v1::METRIC_TYPE_CODE : v1::METRIC_TYPE_NUMBER;
  }
}

const char* MemberFor(v1::MetricType type) {
  switch (type) {
    case v1::METRIC_TYPE_FLAG:
      return "flag";
    case v1::METRIC_TYPE_CODE:
      return "code";
    case v1::METRIC_TYPE_COUNTER:
      return "count";
    default:
      return "number";
  }
}

KindMetric FromSpec(const v1::MetricSpec& m) {
  KindMetric out;
  out.name = m.name();
  out.type = m.type();
  out.repeated = m.repeated();
  out.has_min = m.has_min();
  out.has_max = m.has_max();
  out.min = m.min();
  out.max = m.max();
  out.unit = m.unit();
  out.spec = &m;
  return out;
}

// The typed kind's metrics from its message, in field order.
std::vector<KindMetric> TypedMetrics(const pb::FieldDescriptor& member) {
  std::vector<KindMetric> out;
  const pb::Descriptor* d = member.message_type();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    KindMetric m;
    m.name = f->name();
    m.slot = f->number();
    m.type = TypedFieldType(*f);
    m.repeated = f->is_repeated();
    m.field = f;
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

const KindMetric* Kind::Metric(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : &metrics[it->second];
}

const KindMetric* Kind::AtSlot(int slot) const {
  if (slot < 0 || static_cast<size_t>(slot) >= by_slot_.size() || by_slot_[slot] < 0) {
    return nullptr;
  }
  return &metrics[by_slot_[slot]];
}

std::string Kind::MetricNames() const {
  return absl::StrJoin(metrics, ", ",
                       [](std::string* out, const KindMetric& m) { out->append(m.name); });
}

void KindTable::Index() {
  for (Kind& k : kinds_) {
    by_id_.emplace(k.id, k.index);
    if (k.typed > 0 && k.typed < v1::DeviceKind_ARRAYSIZE) by_typed_[k.typed] = k.index;
    k.by_slot_.assign(kMaxMetricSlots, -1);
    for (size_t i = 0; i < k.metrics.size(); ++i) {
      k.by_name_.emplace(k.metrics[i].name, static_cast<int>(i));
      k.by_slot_[k.metrics[i].slot] = static_cast<int>(i);
    }
  }
}

std::shared_ptr<const KindTable> KindTable::FromCatalogue(const v1::Catalogue& catalogue) {
  std::shared_ptr<KindTable> table(new KindTable());
  table->catalogue_ = catalogue;
  for (const v1::DeviceKindSpec& spec : table->catalogue_.kinds()) {
    Kind k;
    k.index = static_cast<int>(table->kinds_.size());
    k.id = spec.id();
    k.typed = spec.typed();
    k.spec = &spec;
    k.reporting_interval = kernel::FromDurationProto(spec.reporting_interval());
    if (k.typed != v1::DEVICE_KIND_UNSPECIFIED) {
      k.member = v1::SensorReading::descriptor()->FindFieldByName(TypedKindId(k.typed));
      // The typed message's fields, with what the catalogue says of each (a checked
      // catalogue lists exactly those fields).
      k.metrics = TypedMetrics(*k.member);
      for (KindMetric& m : k.metrics) {
        if (const v1::MetricSpec* s = FindMetric(spec, m.name); s != nullptr) {
          KindMetric from = FromSpec(*s);
          from.slot = m.slot;
          from.field = m.field;
          m = std::move(from);
        }
      }
    } else {
      for (const v1::MetricSpec& s : spec.metrics()) {
        KindMetric m = FromSpec(s);
        m.slot = static_cast<int>(k.metrics.size()) + 1;
        k.metrics.push_back(std::move(m));
      }
    }
    table->kinds_.push_back(std::move(k));
  }
  table->Index();
  return table;
}

std::shared_ptr<const KindTable> KindTable::TypedOnly() {
  static const std::shared_ptr<const KindTable> table = [] {
    std::shared_ptr<KindTable> t(new KindTable());
    for (int i = 1; i < v1::DeviceKind_descriptor()->value_count(); ++i) {
      const auto typed =
          static_cast<v1::DeviceKind>(v1::DeviceKind_descriptor()->value(i)->number());
      Kind k;
      k.index = static_cast<int>(t->kinds_.size());
      k.id = TypedKindId(typed);
      k.typed = typed;
      k.member = v1::SensorReading::descriptor()->FindFieldByName(k.id);
      if (k.member == nullptr) continue;
      k.metrics = TypedMetrics(*k.member);
      t->kinds_.push_back(std::move(k));
    }
    t->Index();
    return t;
  }();
  return table;
}

std::shared_ptr<const KindTable> KindTable::BuiltIn() {
  static const std::shared_ptr<const KindTable> table = FromCatalogue(BuiltInCatalogue().catalogue);
  return table;
}

const Kind* KindTable::Find(std::string_view id) const {
  auto it = by_id_.find(absl::string_view(id.data(), id.size()));
  return it == by_id_.end() ? nullptr : &kinds_[it->second];
}

const Kind* KindTable::FindTyped(v1::DeviceKind typed) const {
  if (typed <= 0 || typed >= v1::DeviceKind_ARRAYSIZE || by_typed_[typed] < 0) return nullptr;
  return &kinds_[by_typed_[typed]];
}

const Kind* KindTable::KindOf(const v1::SensorReading& reading) const {
  if (reading.kind_id().empty()) return FindTyped(reading.kind());
  const Kind* k = Find(reading.kind_id());
  if (k == nullptr) return nullptr;
  if (reading.kind() != v1::DEVICE_KIND_UNSPECIFIED && reading.kind() != k->typed) return nullptr;
  return k;
}

std::string KindTable::KindIds() const {
  return absl::StrJoin(kinds_, ", ", [](std::string* out, const Kind& k) { out->append(k.id); });
}

absl::StatusOr<double> MetricValueNumber(const KindMetric& metric, const v1::MetricValue& v) {
  const char* want = MemberFor(metric.type);
  auto bounded = [&](double x) -> absl::StatusOr<double> {
    if (!std::isfinite(x)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("metric '%s' is not a finite number", metric.name));
    }
    if ((metric.has_min && x < metric.min) || (metric.has_max && x > metric.max)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("metric '%s' = %g is outside its physical range [%g, %g] %s", metric.name,
                          x, metric.min, metric.max, metric.unit));
    }
    return x;
  };
  switch (v.value_case()) {
    case v1::MetricValue::kNumber:
      if (metric.type == v1::METRIC_TYPE_NUMBER) return bounded(v.number());
      break;
    case v1::MetricValue::kFlag:
      if (metric.type == v1::METRIC_TYPE_FLAG) return v.flag() ? 1.0 : 0.0;
      break;
    case v1::MetricValue::kCode:
      if (metric.type != v1::METRIC_TYPE_CODE || metric.repeated) break;
      if (metric.spec != nullptr) {
        bool listed = false;
        for (const v1::MetricCode& c : metric.spec->codes()) listed |= c.value() == v.code();
        if (!listed) {
          return absl::InvalidArgumentError(
              absl::StrFormat("metric '%s' has code %d, which the catalogue does not list for it",
                              metric.name, v.code()));
        }
      }
      return static_cast<double>(v.code());
    case v1::MetricValue::kCount:
      if (metric.type == v1::METRIC_TYPE_COUNTER) return bounded(static_cast<double>(v.count()));
      break;
    default:
      if (metric.repeated) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "metric '%s' is a list of codes: set 'codes', not a single value", metric.name));
      }
      return absl::InvalidArgumentError(
          absl::StrFormat("metric '%s' has no value: set '%s'", metric.name, want));
  }
  if (metric.repeated) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "metric '%s' is a list of codes in the catalogue: set 'codes'", metric.name));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("metric '%s' is a %s in the catalogue: set '%s'", metric.name,
                      metric.type == v1::METRIC_TYPE_COUNTER ? "counter" : want, want));
}

}  // namespace cityops::catalogue
