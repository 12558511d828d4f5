#include "catalogue/catalogue.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "catalogue/kinds.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/department.h"
#include "kernel/proto_time.h"

namespace cityops::catalogue {

namespace {

namespace pb = google::protobuf;

// Builds errors prefixed with where the offending key was written.
class Checker {
 public:
  Checker(const kernel::YamlSourceMap* map, std::string_view fallback)
      : map_(map), fallback_(fallback) {}

  absl::Status Error(const pb::Message& m, std::string_view field, std::string_view what,
                     int index = -1) const {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", Where(m, field, index), what));
  }
  std::string Where(const pb::Message& m, std::string_view field, int index = -1) const {
    return map_ != nullptr ? map_->Where(m, field, index) : std::string(fallback_);
  }

 private:
  const kernel::YamlSourceMap* map_;
  std::string_view fallback_;
};

// Lowercase snake_case: a letter, then letters, digits and single underscores.
bool SnakeCase(std::string_view s) {
  if (s.empty() || s.size() > 64 || !absl::ascii_islower(s[0])) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      if (i + 1 == s.size() || s[i + 1] == '_') return false;
    } else if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c)) {
      return false;
    }
  }
  return true;
}

bool CategoryCode(std::string_view s) {
  if (s.size() < 2 || s.size() > 8) return false;
  for (char c : s) {
    if (!absl::ascii_isupper(c) && !absl::ascii_isdigit(c)) return false;
  }
  return true;
}

// The member of SensorReading.metrics for `kind`'s readings, or null.
const pb::Descriptor* TypedMetrics(v1::DeviceKind kind) {
  const pb::FieldDescriptor* member =
      v1::SensorReading::descriptor()->FindFieldByName(TypedKindId(kind));
  if (member == nullptr || member->containing_oneof() == nullptr) return nullptr;
  return member->message_type();
}

const char* TypeName(v1::MetricType t) {
  switch (t) {
    case v1::METRIC_TYPE_NUMBER:
      return "number";
    case v1::METRIC_TYPE_FLAG:
      return "flag";
    case v1::METRIC_TYPE_CODE:
      return "code";
    case v1::METRIC_TYPE_COUNTER:
      return "counter";
    default:
      return "unspecified";
  }
}

// The metric types a typed message's field may be declared as.
std::vector<v1::MetricType> TypesOf(const pb::FieldDescriptor& f) {
  switch (f.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return {v1::METRIC_TYPE_FLAG};
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return {v1::METRIC_TYPE_CODE};
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return {v1::METRIC_TYPE_NUMBER};
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT32:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return {v1::METRIC_TYPE_NUMBER, v1::METRIC_TYPE_CODE, v1::METRIC_TYPE_COUNTER};
    default:
      return {};
  }
}

absl::Status CheckNames(const v1::LocalizedName& name, const pb::Message& owner,
                        std::string_view field, std::string_view what, const Checker& check) {
  if (name.zh().empty() || name.en().empty()) {
    return check.Error(
        owner, field,
        absl::StrFormat("%s needs a name in both languages: %s: {zh: ..., en: ...}", what, field));
  }
  return absl::OkStatus();
}

absl::Status CheckBounds(const pb::Message& m, bool has_min, double min, bool has_max, double max,
                         std::string_view what, const Checker& check) {
  if (!has_min || !has_max) {
    return check.Error(m, has_min ? "max" : "min",
                       absl::StrFormat("%s needs both bounds, 'min' and 'max'", what));
  }
  if (!std::isfinite(min) || !std::isfinite(max) || !(min < max)) {
    return check.Error(
        m, "min",
        absl::StrFormat("%s: bounds [%g, %g] must be finite with min < max", what, min, max));
  }
  return absl::OkStatus();
}

absl::Status CheckMetric(const v1::DeviceKindSpec& kind, const v1::MetricSpec& m,
                         const Checker& check) {
  const std::string what = absl::StrFormat("metric '%s' of kind '%s'", m.name(), kind.id());
  if (!SnakeCase(m.name())) {
    return check.Error(m, "name",
                       absl::StrFormat("metric name '%s' of kind '%s' must be lowercase "
                                       "snake_case ending in its unit, e.g. pressure_mpa",
                                       m.name(), kind.id()));
  }
  if (absl::Status s = CheckNames(m.label(), m, "label", what, check); !s.ok()) return s;
  if (m.type() == v1::METRIC_TYPE_UNSPECIFIED) {
    return check.Error(m, "type",
                       absl::StrFormat("%s needs a 'type': number, flag, code or counter", what));
  }
  const bool measured = m.type() == v1::METRIC_TYPE_NUMBER || m.type() == v1::METRIC_TYPE_COUNTER;
  if (measured) {
    if (m.unit().empty()) {
      return check.Error(
          m, "unit", absl::StrFormat("%s is a %s and needs a 'unit'", what, TypeName(m.type())));
    }
    if (absl::Status s = CheckBounds(m, m.has_min(), m.min(), m.has_max(), m.max(), what, check);
        !s.ok()) {
      return s;
    }
    if (m.type() == v1::METRIC_TYPE_COUNTER && m.min() < 0) {
      return check.Error(m, "min",
                         absl::StrFormat("%s is a counter: 'min' must be 0 or more", what));
    }
  } else if (m.has_min() || m.has_max()) {
    return check.Error(m, m.has_min() ? "min" : "max",
                       absl::StrFormat("%s is a %s and takes no bounds", what, TypeName(m.type())));
  }
  if (m.type() == v1::METRIC_TYPE_CODE) {
    if (m.codes().empty()) {
      return check.Error(m, "codes",
                         absl::StrFormat("%s is a code and needs its 'codes': [{value: 1, name: "
                                         "...}, ...]",
                                         what));
    }
    std::set<int32_t> values;
    for (int i = 0; i < m.codes_size(); ++i) {
      const v1::MetricCode& c = m.codes(i);
      if (!values.insert(c.value()).second) {
        return check.Error(c, "value",
                           absl::StrFormat("%s: code %d is listed twice", what, c.value()));
      }
      if (c.name().empty()) {
        return check.Error(c, "name",
                           absl::StrFormat("%s: code %d needs a 'name'", what, c.value()));
      }
    }
  } else if (!m.codes().empty()) {
    return check.Error(
        m, "codes", absl::StrFormat("%s is a %s and takes no 'codes'", what, TypeName(m.type())));
  }
  if (m.repeated() && m.type() != v1::METRIC_TYPE_CODE) {
    return check.Error(m, "repeated",
                       absl::StrFormat("%s: only a code metric may be repeated", what));
  }
  return absl::OkStatus();
}

// A kind mapped onto a typed reading message has exactly its fields, as the same types.
absl::Status CheckTyped(const v1::DeviceKindSpec& kind, const Checker& check) {
  const std::string expected = TypedKindId(kind.typed());
  const pb::Descriptor* typed = TypedMetrics(kind.typed());
  if (typed == nullptr) {
    return check.Error(kind, "typed",
                       absl::StrFormat("kind '%s': typed kind %s has no metrics message in "
                                       "SensorReading",
                                       kind.id(), v1::DeviceKind_Name(kind.typed())));
  }
  if (kind.id() != expected) {
    return check.Error(kind, "id",
                       absl::StrFormat("kind '%s' maps onto the typed %s readings, so its id "
                                       "must be '%s'",
                                       kind.id(), typed->name(), expected));
  }
  for (const v1::MetricSpec& m : kind.metrics()) {
    const pb::FieldDescriptor* f = typed->FindFieldByName(m.name());
    if (f == nullptr) {
      std::vector<std::string> names;
      for (int i = 0; i < typed->field_count(); ++i) names.push_back(typed->field(i)->name());
      return check.Error(
          m, "name",
          absl::StrFormat("kind '%s' has no metric '%s' in its typed %s; it has %s", kind.id(),
                          m.name(), typed->name(), absl::StrJoin(names, ", ")));
    }
    const std::vector<v1::MetricType> types = TypesOf(*f);
    if (std::find(types.begin(), types.end(), m.type()) == types.end()) {
      return check.Error(m, "type",
                         absl::StrFormat("metric '%s' of kind '%s' is a %s field in %s, which "
                                         "cannot be a %s",
                                         m.name(), kind.id(), f->cpp_type_name(), typed->name(),
                                         TypeName(m.type())));
    }
    if (m.repeated() != f->is_repeated()) {
      return check.Error(m, "repeated",
                         absl::StrFormat("metric '%s' of kind '%s' is %srepeated in %s", m.name(),
                                         kind.id(), f->is_repeated() ? "" : "not ", typed->name()));
    }
    if (f->enum_type() != nullptr) {
      // The codes are the enum's values, named by their short lowercase form.
      std::set<int32_t> listed;
      for (const v1::MetricCode& c : m.codes()) listed.insert(c.value());
      for (int i = 0; i < f->enum_type()->value_count(); ++i) {
        const int number = f->enum_type()->value(i)->number();
        if (number != 0 && listed.count(number) == 0) {
          return check.Error(
              m, "codes",
              absl::StrFormat("metric '%s' of kind '%s' lacks code %d (%s)", m.name(), kind.id(),
                              number, f->enum_type()->value(i)->name()));
        }
      }
      for (const v1::MetricCode& c : m.codes()) {
        if (c.value() == 0 || f->enum_type()->FindValueByNumber(c.value()) == nullptr) {
          return check.Error(
              c, "value",
              absl::StrFormat("metric '%s' of kind '%s': %s has no value %d", m.name(), kind.id(),
                              f->enum_type()->name(), c.value()));
        }
      }
    }
  }
  for (int i = 0; i < typed->field_count(); ++i) {
    if (FindMetric(kind, typed->field(i)->name()) == nullptr) {
      return check.Error(kind, "metrics",
                         absl::StrFormat("kind '%s' lacks the metric '%s' of its typed %s",
                                         kind.id(), typed->field(i)->name(), typed->name()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckArchive(const v1::DeviceKindSpec& kind, const Checker& check) {
  absl::flat_hash_set<std::string> names;
  for (const v1::ArchiveFieldSpec& a : kind.archive()) {
    const std::string what =
        absl::StrFormat("archive field '%s' of kind '%s'", a.name(), kind.id());
    if (!SnakeCase(a.name())) {
      return check.Error(a, "name",
                         absl::StrFormat("%s: the name must be lowercase snake_case", what));
    }
    if (!names.insert(a.name()).second) {
      return check.Error(a, "name", absl::StrFormat("%s is listed twice", what));
    }
    if (absl::Status s = CheckNames(a.label(), a, "label", what, check); !s.ok()) return s;
    if (a.type() == v1::ARCHIVE_FIELD_TYPE_UNSPECIFIED) {
      return check.Error(a, "type",
                         absl::StrFormat("%s needs a 'type': text, number, year, flag, date or "
                                         "records",
                                         what));
    }
    const bool bounded =
        a.type() == v1::ARCHIVE_FIELD_TYPE_NUMBER || a.type() == v1::ARCHIVE_FIELD_TYPE_YEAR;
    if (bounded && (a.has_min() || a.has_max())) {
      if (absl::Status s = CheckBounds(a, a.has_min(), a.min(), a.has_max(), a.max(), what, check);
          !s.ok()) {
        return s;
      }
    } else if (!bounded && (a.has_min() || a.has_max())) {
      return check.Error(a, a.has_min() ? "min" : "max",
                         absl::StrFormat("%s takes no bounds (only numbers and years do)", what));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSimulation(const v1::DeviceKindSpec& kind, const Checker& check) {
  const v1::SimulationSpec& sim = kind.simulation();
  if (!(sim.share() >= 0 && sim.share() <= 1)) {
    return check.Error(sim, "share",
                       absl::StrFormat("kind '%s': simulation share %g must be within 0..1",
                                       kind.id(), sim.share()));
  }
  absl::flat_hash_set<std::string> seen;
  for (const v1::MetricModel& model : sim.metrics()) {
    const v1::MetricSpec* m = FindMetric(kind, model.metric());
    if (m == nullptr) {
      return check.Error(
          model, "metric",
          absl::StrFormat("kind '%s' has no metric '%s' to simulate", kind.id(), model.metric()));
    }
    if (!seen.insert(model.metric()).second) {
      return check.Error(
          model, "metric",
          absl::StrFormat("kind '%s': metric '%s' is modelled twice", kind.id(), model.metric()));
    }
    if (!std::isfinite(model.noise()) || model.noise() < 0) {
      return check.Error(model, "noise",
                         absl::StrFormat("kind '%s', metric '%s': noise must be 0 or more",
                                         kind.id(), model.metric()));
    }
    const double b = model.baseline();
    bool fits = std::isfinite(b);
    std::string range;
    switch (m->type()) {
      case v1::METRIC_TYPE_NUMBER:
      case v1::METRIC_TYPE_COUNTER:
        fits = fits && b >= m->min() && b <= m->max();
        range = absl::StrFormat("within the metric's bounds [%g, %g]", m->min(), m->max());
        break;
      case v1::METRIC_TYPE_FLAG:
        fits = fits && b >= 0 && b <= 1;
        range = "a probability within 0..1 for a flag";
        break;
      case v1::METRIC_TYPE_CODE:
        fits = fits && std::any_of(m->codes().begin(), m->codes().end(),
                                   [&](const v1::MetricCode& c) { return c.value() == b; });
        range = "one of the metric's codes";
        break;
      default:
        break;
    }
    if (!fits) {
      return check.Error(model, "baseline",
                         absl::StrFormat("kind '%s', metric '%s': baseline %g must be %s",
                                         kind.id(), model.metric(), b, range));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDeadlines(const v1::StageDeadlines& d, const pb::Message& owner,
                            std::string_view field, std::string_view what, const Checker& check) {
  const pb::Descriptor* desc = d.GetDescriptor();
  for (int i = 0; i < desc->field_count(); ++i) {
    const pb::FieldDescriptor* f = desc->field(i);
    if (!d.GetReflection()->HasField(d, f)) {
      return check.Error(
          owner, field,
          absl::StrFormat("%s needs every stage's allowance; '%s' is missing", what, f->name()));
    }
    const auto& duration =
        static_cast<const google::protobuf::Duration&>(d.GetReflection()->GetMessage(d, f));
    if (kernel::FromDurationProto(duration) <= absl::ZeroDuration()) {
      return check.Error(d, f->name(),
                         absl::StrFormat("%s: '%s' must be positive", what, f->name()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckKind(const v1::DeviceKindSpec& kind, const Checker& check) {
  if (!SnakeCase(kind.id())) {
    return check.Error(kind, "id",
                       absl::StrFormat("kind id '%s' must be lowercase snake_case, e.g. "
                                       "gas_detector",
                                       kind.id()));
  }
  const std::string what = absl::StrFormat("kind '%s'", kind.id());
  if (absl::Status s = CheckNames(kind.name(), kind, "name", what, check); !s.ok()) return s;
  if (!kernel::IsDepartmentName(kind.department())) {
    return check.Error(kind, "department",
                       absl::StrFormat("%s needs the 'department' that owns such devices, in "
                                       "lowercase words joined by '-', e.g. fire-rescue",
                                       what));
  }
  const absl::Duration interval = kernel::FromDurationProto(kind.reporting_interval());
  if (interval <= absl::ZeroDuration() || interval > absl::Hours(24 * 7)) {
    return check.Error(kind, "reporting_interval",
                       absl::StrFormat("%s needs a 'reporting_interval' from 1s to 7d, the "
                                       "heartbeat of a healthy device",
                                       what));
  }
  if (kind.metrics().empty()) {
    return check.Error(kind, "metrics", absl::StrFormat("%s needs at least one metric", what));
  }
  if (kind.metrics_size() >= kMaxMetricSlots) {
    return check.Error(kind, "metrics",
                       absl::StrFormat("%s has %d metrics; a kind may have at most %d", what,
                                       kind.metrics_size(), kMaxMetricSlots - 1));
  }
  absl::flat_hash_set<std::string> names;
  for (const v1::MetricSpec& m : kind.metrics()) {
    if (absl::Status s = CheckMetric(kind, m, check); !s.ok()) return s;
    if (!names.insert(m.name()).second) {
      return check.Error(m, "name",
                         absl::StrFormat("%s lists the metric '%s' twice", what, m.name()));
    }
  }
  if (kind.typed() != v1::DEVICE_KIND_UNSPECIFIED) {
    if (absl::Status s = CheckTyped(kind, check); !s.ok()) return s;
  } else {
    for (int i = 1; i < v1::DeviceKind_descriptor()->value_count(); ++i) {
      const auto typed =
          static_cast<v1::DeviceKind>(v1::DeviceKind_descriptor()->value(i)->number());
      if (kind.id() == TypedKindId(typed)) {
        return check.Error(kind, "id",
                           absl::StrFormat("kind '%s' is the name of a typed kind: add "
                                           "'typed: %s' or choose another id",
                                           kind.id(), kind.id()));
      }
    }
  }
  if (absl::Status s = CheckArchive(kind, check); !s.ok()) return s;
  return CheckSimulation(kind, check);
}

absl::Status CheckCategory(const v1::CategorySpec& c, const Checker& check) {
  if (!CategoryCode(c.code())) {
    return check.Error(c, "code",
                       absl::StrFormat("category code '%s' must be 2 to 8 capital letters and "
                                       "digits, e.g. 0103 or E0111",
                                       c.code()));
  }
  const std::string what = absl::StrFormat("category %s", c.code());
  if (absl::Status s = CheckNames(c.name(), c, "name", what, check); !s.ok()) return s;
  if (!kernel::IsDepartmentName(c.department())) {
    return check.Error(c, "department",
                       absl::StrFormat("%s needs the 'department' that handles it, in lowercase "
                                       "words joined by '-', e.g. water-authority",
                                       what));
  }
  if (c.dispatch_level() == v1::GRID_LEVEL_UNSPECIFIED) {
    return check.Error(c, "dispatch_level",
                       absl::StrFormat("%s needs a 'dispatch_level': street_center, "
                                       "district_center or city_center",
                                       what));
  }
  return CheckDeadlines(c.deadlines(), c, "deadlines", what, check);
}

// Every `metric` a rule names, wherever in the rule it is.
void CollectMetrics(const pb::Message& m,
                    std::vector<std::pair<const pb::Message*, std::string>>* out) {
  std::vector<const pb::FieldDescriptor*> fields;
  m.GetReflection()->ListFields(m, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING && f->name() == "metric" &&
        !f->is_repeated()) {
      out->emplace_back(&m, m.GetReflection()->GetString(m, f));
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) {
          CollectMetrics(m.GetReflection()->GetRepeatedMessage(m, f, i), out);
        }
      } else {
        CollectMetrics(m.GetReflection()->GetMessage(m, f), out);
      }
    }
  }
}

}  // namespace

const v1::DeviceKindSpec* FindKind(const v1::Catalogue& catalogue, std::string_view id) {
  for (const v1::DeviceKindSpec& k : catalogue.kinds()) {
    if (k.id() == id) return &k;
  }
  return nullptr;
}

const v1::DeviceKindSpec* FindTypedKind(const v1::Catalogue& catalogue, v1::DeviceKind kind) {
  if (kind == v1::DEVICE_KIND_UNSPECIFIED) return nullptr;
  for (const v1::DeviceKindSpec& k : catalogue.kinds()) {
    if (k.typed() == kind) return &k;
  }
  return nullptr;
}

const v1::MetricSpec* FindMetric(const v1::DeviceKindSpec& kind, std::string_view name) {
  for (const v1::MetricSpec& m : kind.metrics()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

std::string RuleKindId(const v1::Rule& rule) {
  if (!rule.device_kind().empty()) return rule.device_kind();
  return TypedKindId(rule.typed_device_kind());
}

const v1::CategorySpec* FindCategory(const v1::Catalogue& catalogue, std::string_view code) {
  for (const v1::CategorySpec& c : catalogue.categories()) {
    if (c.code() == code) return &c;
  }
  return nullptr;
}

absl::Status CheckCatalogue(const v1::Catalogue& catalogue, const kernel::YamlSourceMap* map) {
  const Checker check(map, "catalogue");
  if (catalogue.name().empty()) {
    return check.Error(catalogue, "name", "a catalogue needs a 'name'");
  }
  if (catalogue.kinds().empty()) {
    return check.Error(catalogue, "kinds", "a catalogue needs at least one device kind");
  }
  absl::flat_hash_set<std::string> ids;
  std::set<v1::DeviceKind> typed;
  double shares = 0;
  for (const v1::DeviceKindSpec& k : catalogue.kinds()) {
    if (absl::Status s = CheckKind(k, check); !s.ok()) return s;
    if (!ids.insert(k.id()).second) {
      return check.Error(k, "id", absl::StrFormat("kind '%s' is listed twice", k.id()));
    }
    if (k.typed() != v1::DEVICE_KIND_UNSPECIFIED && !typed.insert(k.typed()).second) {
      return check.Error(
          k, "typed", absl::StrFormat("two kinds map onto typed kind %s", TypedKindId(k.typed())));
    }
    shares += k.simulation().share();
  }
  if (shares > 1 + 1e-9) {
    return check.Error(catalogue, "kinds",
                       absl::StrFormat("the kinds' simulation shares add up to %g, more than the "
                                       "whole city (1)",
                                       shares));
  }
  absl::flat_hash_set<std::string> codes;
  for (const v1::CategorySpec& c : catalogue.categories()) {
    if (absl::Status s = CheckCategory(c, check); !s.ok()) return s;
    if (!codes.insert(c.code()).second) {
      return check.Error(c, "code", absl::StrFormat("category %s is listed twice", c.code()));
    }
  }
  return CheckDeadlines(catalogue.default_deadlines(), catalogue, "default_deadlines",
                        "the catalogue's default_deadlines", check);
}

absl::Status CheckRulesAgainstCatalogue(const v1::Catalogue& catalogue, const v1::RuleSet& rule_set,
                                        RuleCheck scope, const kernel::YamlSourceMap* rules_map,
                                        const kernel::YamlSourceMap* catalogue_map) {
  const Checker rules(rules_map, "rule set");
  const Checker cat(catalogue_map, "catalogue");
  const std::string catalogue_name = absl::StrFormat("catalogue '%s'", catalogue.name());
  for (const v1::Rule& rule : rule_set.rules()) {
    const std::string kind_id = RuleKindId(rule);
    if (!kind_id.empty()) {
      const v1::DeviceKindSpec* kind = FindKind(catalogue, kind_id);
      if (kind == nullptr) {
        return rules.Error(rule, "device_kind",
                           absl::StrFormat("rule %s tests device kind %s, which %s does not "
                                           "have; keep the kind in the catalogue or drop the rule",
                                           rule.id(), kind_id, catalogue_name));
      }
      std::vector<std::pair<const pb::Message*, std::string>> metrics;
      CollectMetrics(rule, &metrics);
      for (const auto& [where, name] : metrics) {
        if (FindMetric(*kind, name) == nullptr) {
          return rules.Error(*where, "metric",
                             absl::StrFormat("rule %s tests metric '%s', which kind '%s' of %s "
                                             "does not have",
                                             rule.id(), name, kind->id(), catalogue_name));
        }
      }
      if (rule.has_fault_code()) {
        const v1::MetricSpec* codes = nullptr;
        for (const v1::MetricSpec& m : kind->metrics()) {
          if (m.type() == v1::METRIC_TYPE_CODE && m.repeated()) codes = &m;
        }
        for (int i = 0; i < rule.fault_code().codes_size(); ++i) {
          const int32_t code = rule.fault_code().codes(i);
          const bool known =
              codes != nullptr &&
              std::any_of(codes->codes().begin(), codes->codes().end(),
                          [&](const v1::MetricCode& c) { return c.value() == code; });
          if (!known) {
            return rules.Error(rule.fault_code(), "codes",
                               absl::StrFormat("rule %s tests fault code %d, which kind '%s' of "
                                               "%s does not list",
                                               rule.id(), code, kind->id(), catalogue_name),
                               i);
          }
        }
      }
    }
    if (scope == RuleCheck::kDevices) continue;
    if (rule.case_().open_case() &&
        FindCategory(catalogue, rule.case_().category().code()) == nullptr) {
      return rules.Error(
          rule.case_().category(), "code",
          absl::StrFormat("rule %s opens cases of category %s, which %s does not "
                          "list",
                          rule.id(), rule.case_().category().code(), catalogue_name));
    }
  }
  if (scope == RuleCheck::kDevices) return absl::OkStatus();
  for (const v1::CategoryPolicy& policy : rule_set.categories()) {
    const v1::CategorySpec* c = FindCategory(catalogue, policy.category().code());
    if (c == nullptr) {
      return rules.Error(
          policy.category(), "code",
          absl::StrFormat("category %s is not in %s", policy.category().code(), catalogue_name));
    }
    if (policy.department() != c->department()) {
      return rules.Error(policy, "department",
                         absl::StrFormat("category %s: department '%s' differs from %s's '%s' "
                                         "at %s",
                                         c->code(), policy.department(), catalogue_name,
                                         c->department(), cat.Where(*c, "department")));
    }
    if (!pb::util::MessageDifferencer::Equals(policy.deadlines(), c->deadlines())) {
      return rules.Error(policy, "deadlines",
                         absl::StrFormat("category %s: deadlines differ from %s's at %s", c->code(),
                                         catalogue_name, cat.Where(*c, "deadlines")));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRuleTextAgainstCatalogue(const LoadedCatalogue& catalogue,
                                           std::string_view rules_yaml, std::string_view rules_file,
                                           RuleCheck scope) {
  v1::RuleSet rules;
  kernel::YamlSourceMap rules_map;
  if (absl::Status s = kernel::ParseYamlToProto(rules_yaml, rules_file, &rules, &rules_map);
      !s.ok()) {
    return s;
  }
  v1::Catalogue parsed;
  kernel::YamlSourceMap catalogue_map;
  if (absl::Status s = kernel::ParseYamlToProto(catalogue.source_yaml, catalogue.source_path,
                                                &parsed, &catalogue_map);
      !s.ok()) {
    return s;
  }
  return CheckRulesAgainstCatalogue(parsed, rules, scope, &rules_map, &catalogue_map);
}

const LoadedCatalogue& BuiltInCatalogue() {
  static const LoadedCatalogue* const catalogue = [] {
    absl::StatusOr<LoadedCatalogue> loaded =
        LoadCatalogueText(DefaultCatalogueYaml(), kDefaultCatalogueFile);
    // tests/catalogue_test.cc checks the shipped catalogue; this only trips on a broken build.
    if (!loaded.ok()) {
      absl::FPrintF(stderr, "cityops: the built-in catalogue does not load: %s\n",
                    loaded.status().message());
      std::abort();
    }
    return new LoadedCatalogue(*std::move(loaded));
  }();
  return *catalogue;
}

absl::StatusOr<LoadedCatalogue> LoadConfiguredCatalogue(const std::string& file) {
  if (file.empty()) return LoadCatalogueText(DefaultCatalogueYaml(), kDefaultCatalogueFile);
  return LoadCatalogueFile(file);
}

absl::StatusOr<LoadedCatalogue> LoadCatalogueText(std::string_view yaml, std::string_view file) {
  LoadedCatalogue loaded;
  kernel::YamlSourceMap map;
  if (absl::Status s = kernel::ParseYamlToProto(yaml, file, &loaded.catalogue, &map); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckCatalogue(loaded.catalogue, &map); !s.ok()) return s;
  loaded.source_yaml = std::string(yaml);
  loaded.source_path = std::string(file);
  return loaded;
}

absl::StatusOr<LoadedCatalogue> LoadCatalogueFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrFormat("cannot read catalogue '%s': no such file or not readable", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return LoadCatalogueText(text.str(), path);
}

}  // namespace cityops::catalogue
