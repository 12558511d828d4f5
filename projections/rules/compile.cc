#include "projections/rules/compile.h"

#include <openssl/evp.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "catalogue/catalogue.h"
#include "catalogue/kinds.h"
#include "kernel/proto_time.h"

namespace cityops::rules {

namespace {

// Builds errors prefixed with where the offending key was written.
class Checker {
 public:
  explicit Checker(const kernel::YamlSourceMap* map) : map_(map) {}

  absl::Status Error(const google::protobuf::Message& m, std::string_view field,
                     absl::string_view what) const {
    std::string where = map_ != nullptr ? map_->Where(m, field) : std::string("rule set");
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", where, what));
  }

 private:
  const kernel::YamlSourceMap* map_;
};

bool ValidRuleId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  if (!absl::ascii_islower(id[0]) && !absl::ascii_isdigit(id[0])) return false;
  for (char c : id) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status CompileCondition(const v1::Condition& c, const catalogue::Kind& kind,
                              const Checker& check, CompiledCondition* out) {
  if (c.metric().empty()) return check.Error(c, "metric", "a condition needs a 'metric'");
  absl::StatusOr<MetricRef> metric = ResolveMetric(kind, c.metric());
  if (!metric.ok()) return check.Error(c, "metric", metric.status().message());
  out->metric = *metric;
  const catalogue::KindMetric& m = *metric->metric;
  const bool numeric =
      m.field != nullptr
          ? m.field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_BOOL &&
                m.field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_ENUM
          : m.type == v1::METRIC_TYPE_NUMBER || m.type == v1::METRIC_TYPE_COUNTER;
  auto number = [&](std::string_view key, double v, Op op) -> absl::Status {
    if (!numeric) {
      return check.Error(c, key,
                         absl::StrFormat("'%s' is not numeric; test it with 'equals'", c.metric()));
    }
    out->op = op;
    out->operand = v;
    return absl::OkStatus();
  };
  switch (c.test_case()) {
    case v1::Condition::kAbove:
      return number("above", c.above(), Op::kAbove);
    case v1::Condition::kAtLeast:
      return number("at_least", c.at_least(), Op::kAtLeast);
    case v1::Condition::kBelow:
      return number("below", c.below(), Op::kBelow);
    case v1::Condition::kAtMost:
      return number("at_most", c.at_most(), Op::kAtMost);
    case v1::Condition::kEquals: {
      absl::StatusOr<double> v = ParseMetricValue(*metric, c.equals());
      if (!v.ok()) return check.Error(c, "equals", v.status().message());
      out->op = Op::kEquals;
      out->operand = *v;
      return absl::OkStatus();
    }
    case v1::Condition::TEST_NOT_SET:
      break;
  }
  return check.Error(c, "metric",
                     absl::StrFormat("condition on '%s' has no test; add one of above, at_least, "
                                     "below, at_most, equals",
                                     c.metric()));
}

absl::Status CompileSet(const v1::ConditionSet& s, const google::protobuf::Message& parent,
                        std::string_view key, const catalogue::Kind& kind, bool required,
                        const Checker& check, CompiledConditionSet* out) {
  if (s.all_size() > 0 && s.any_size() > 0) {
    return check.Error(s, "any", "a condition set has either 'all' or 'any', not both");
  }
  if (s.all_size() == 0 && s.any_size() == 0) {
    if (!required) return absl::OkStatus();
    return check.Error(parent, key,
                       absl::StrFormat("'%s' needs conditions under 'all' or 'any'", key));
  }
  out->all = s.all_size() > 0;
  const auto& list = out->all ? s.all() : s.any();
  for (const v1::Condition& c : list) {
    CompiledCondition cc;
    if (absl::Status st = CompileCondition(c, kind, check, &cc); !st.ok()) return st;
    out->conditions.push_back(cc);
  }
  return absl::OkStatus();
}

absl::Status CheckDuration(const google::protobuf::Duration& d, const google::protobuf::Message& m,
                           std::string_view key, bool positive, const Checker& check) {
  absl::Duration v = kernel::FromDurationProto(d);
  if (v < absl::ZeroDuration() || (positive && v == absl::ZeroDuration())) {
    return check.Error(
        m, key, absl::StrFormat("'%s' must be %s", key, positive ? "positive" : "at least 0"));
  }
  if (v > absl::Hours(24 * 366)) {
    return check.Error(m, key, absl::StrFormat("'%s' is longer than a year", key));
  }
  return absl::OkStatus();
}

absl::Status CheckDeadlines(const v1::StageDeadlines& d, const Checker& check) {
  for (const char* key :
       {"register_within", "dispatch_within", "handle_within", "verify_within", "close_within"}) {
    const auto* field = d.GetDescriptor()->FindFieldByName(key);
    if (!d.GetReflection()->HasField(d, field)) continue;
    const auto& dur =
        static_cast<const google::protobuf::Duration&>(d.GetReflection()->GetMessage(d, field));
    if (absl::Status s = CheckDuration(dur, d, key, true, check); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckCategory(const v1::CaseCategory& c, const google::protobuf::Message& parent,
                           std::string_view key, const Checker& check) {
  if (c.code().empty()) {
    return check.Error(parent, key, "a case category needs a 'code' (e.g. \"0103\")");
  }
  for (char ch : c.code()) {
    if (!absl::ascii_isalnum(ch)) {
      return check.Error(
          c, "code",
          absl::StrFormat("category code '%s' may hold only letters and digits", c.code()));
    }
  }
  return absl::OkStatus();
}

// The values of one metric a conjunction of conditions allows: an interval.
struct Interval {
  double lo = -std::numeric_limits<double>::infinity();
  bool lo_closed = false;
  double hi = std::numeric_limits<double>::infinity();
  bool hi_closed = false;
  bool integral = false;  // Integer, boolean and enum metrics take whole values only.

  void Apply(const CompiledCondition& c) {
    auto raise_lo = [&](double v, bool closed) {
      if (v > lo || (v == lo && !closed)) lo = v, lo_closed = closed;
    };
    auto lower_hi = [&](double v, bool closed) {
      if (v < hi || (v == hi && !closed)) hi = v, hi_closed = closed;
    };
    switch (c.op) {
      case Op::kAbove:
        raise_lo(c.operand, false);
        break;
      case Op::kAtLeast:
        raise_lo(c.operand, true);
        break;
      case Op::kBelow:
        lower_hi(c.operand, false);
        break;
      case Op::kAtMost:
        lower_hi(c.operand, true);
        break;
      case Op::kEquals:
        raise_lo(c.operand, true);
        lower_hi(c.operand, true);
        break;
    }
  }

  // A value inside, if there is one.
  std::optional<double> Witness() const {
    if (integral) {
      double a = std::isfinite(lo) ? std::ceil(lo) : (std::isfinite(hi) ? std::floor(hi) : 0);
      if (std::isfinite(lo) && a == lo && !lo_closed) a += 1;
      if (!std::isfinite(lo) && std::isfinite(hi) && a == hi && !hi_closed) a -= 1;
      const bool above_lo = a > lo || (a == lo && lo_closed);
      const bool below_hi = a < hi || (a == hi && hi_closed);
      if (above_lo && below_hi) return a;
      return std::nullopt;
    }
    if (lo < hi) {
      if (std::isfinite(lo) && std::isfinite(hi)) return (lo + hi) / 2;
      if (std::isfinite(lo)) return lo + 1;
      if (std::isfinite(hi)) return hi - 1;
      return 0;
    }
    if (lo == hi && lo_closed && hi_closed) return lo;
    return std::nullopt;
  }
};

bool IntegralMetric(const MetricRef& m) {
  using FD = google::protobuf::FieldDescriptor;
  if (m.metric->field == nullptr) return m.metric->type != v1::METRIC_TYPE_NUMBER;
  switch (m.metric->field->cpp_type()) {
    case FD::CPPTYPE_DOUBLE:
    case FD::CPPTYPE_FLOAT:
      return false;
    default:
      return true;
  }
}

// If some reading satisfies both condition sets, describes one ("water_depth_cm 20");
// else nullopt. Exact for the forms rules can write: an `all` set is one conjunction,
// an `any` set a disjunction of single conditions, and metrics are independent. An
// empty `clear` (the negation of `raise`) never overlaps.
std::optional<std::string> Overlap(const CompiledConditionSet& raise,
                                   const CompiledConditionSet& clear) {
  if (raise.empty() || clear.empty()) return std::nullopt;
  auto conjunctions = [](const CompiledConditionSet& set) {
    std::vector<std::vector<const CompiledCondition*>> out;
    if (set.all) {
      out.emplace_back();
      for (const CompiledCondition& c : set.conditions) out.back().push_back(&c);
    } else {
      for (const CompiledCondition& c : set.conditions) out.push_back({&c});
    }
    return out;
  };
  for (const auto& r : conjunctions(raise)) {
    for (const auto& c : conjunctions(clear)) {
      std::vector<std::pair<const MetricRef*, Interval>> by_metric;
      auto add = [&](const CompiledCondition* cond) {
        for (auto& [m, interval] : by_metric) {
          if (m->metric == cond->metric.metric) return interval.Apply(*cond);
        }
        Interval interval;
        interval.integral = IntegralMetric(cond->metric);
        interval.Apply(*cond);
        by_metric.emplace_back(&cond->metric, interval);
      };
      for (const CompiledCondition* cond : r) add(cond);
      for (const CompiledCondition* cond : c) add(cond);
      std::vector<std::string> values;
      bool possible = true;
      for (const auto& [m, interval] : by_metric) {
        std::optional<double> v = interval.Witness();
        if (!v) {
          possible = false;
          break;
        }
        values.push_back(absl::StrFormat("%s %g", m->name(), *v));
      }
      if (possible) return absl::StrJoin(values, " and ");
    }
  }
  return std::nullopt;
}

absl::Status CompileRule(const v1::Rule& r, const catalogue::KindTable& kinds, const Checker& check,
                         CompiledRule* out) {
  const std::string kind_id = catalogue::RuleKindId(r);
  if (r.kind_case() == v1::Rule::kGridCompound && !kind_id.empty()) {
    return check.Error(r, "device_kind",
                       "a grid_compound rule counts other rules' alerts; drop 'device_kind'");
  }
  if (r.kind_case() != v1::Rule::kGridCompound && kind_id.empty()) {
    return check.Error(r, "id", absl::StrFormat("rule '%s' needs a 'device_kind'", r.id()));
  }
  const catalogue::Kind* kind_of = kind_id.empty() ? nullptr : kinds.Find(kind_id);
  if (!kind_id.empty() && kind_of == nullptr) {
    return check.Error(r, "device_kind",
                       absl::StrFormat("rule %s tests device kind %s, which catalogue '%s' does "
                                       "not have; use one of: %s, or add the kind to the "
                                       "catalogue",
                                       r.id(), kind_id, kinds.catalogue().name(), kinds.KindIds()));
  }
  // Grid compounds have no kind and compile no conditions.
  static const catalogue::Kind kNoKind;
  const catalogue::Kind& kind = kind_of != nullptr ? *kind_of : kNoKind;
  out->kind = kind_of != nullptr ? kind_of->index : -1;
  const v1::DeviceKind typed = kind.typed;
  if (r.severity() == v1::SEVERITY_UNSPECIFIED) {
    return check.Error(r, "id", absl::StrFormat("rule '%s' needs a 'severity'", r.id()));
  }
  if (r.has_applies_to()) {
    const v1::DeviceFilter& f = r.applies_to();
    const bool gauge = typed == v1::DEVICE_KIND_FLOOD_GAUGE;
    const bool cover = typed == v1::DEVICE_KIND_MANHOLE_COVER;
    if ((f.has_underpass() || f.has_low_lying()) && !gauge) {
      return check.Error(f, f.has_underpass() ? "underpass" : "low_lying",
                         "underpass/low_lying filter flood gauges only");
    }
    if ((f.has_urban() || f.owners_size() > 0) && !cover) {
      return check.Error(f, f.has_urban() ? "urban" : "owners",
                         "urban/owners filter manhole covers only");
    }
    if (f.has_min_height_m() && typed != v1::DEVICE_KIND_CURTAIN_WALL) {
      return check.Error(f, "min_height_m", "min_height_m filters curtain walls only");
    }
    if (f.has_min_age_years() && typed != v1::DEVICE_KIND_ELEVATOR &&
        typed != v1::DEVICE_KIND_CURTAIN_WALL) {
      return check.Error(f, "min_age_years", "min_age_years filters elevators and curtain walls");
    }
  }
  switch (r.kind_case()) {
    case v1::Rule::kThreshold: {
      out->type = RuleType::kThreshold;
      const v1::ThresholdRule& t = r.threshold();
      if (absl::Status s = CompileSet(t.raise(), t, "raise", kind, true, check, &out->raise);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = CompileSet(t.clear(), t, "clear", kind, false, check, &out->clear);
          !s.ok()) {
        return s;
      }
      if (std::optional<std::string> both = Overlap(out->raise, out->clear)) {
        return check.Error(
            t, "clear",
            absl::StrFormat("'clear' overlaps 'raise': a reading with %s would both raise and "
                            "clear the alert; make the clear condition exclude the raise "
                            "condition (e.g. clear below the raise threshold)",
                            *both));
      }
      if (absl::Status s = CheckDuration(t.hold_for(), t, "hold_for", false, check); !s.ok()) {
        return s;
      }
      if (absl::Status s = CheckDuration(t.clear_hold_for(), t, "clear_hold_for", false, check);
          !s.ok()) {
        return s;
      }
      out->hold = kernel::FromDurationProto(t.hold_for());
      out->clear_hold = kernel::FromDurationProto(t.clear_hold_for());
      break;
    }
    case v1::Rule::kRateOfChange: {
      out->type = RuleType::kRateOfChange;
      const v1::RateOfChangeRule& t = r.rate_of_change();
      absl::StatusOr<MetricRef> m = ResolveMetric(kind, t.metric());
      if (!m.ok()) return check.Error(t, "metric", m.status().message());
      out->metric = *m;
      if (absl::Status s = CheckDuration(t.window(), t, "window", true, check); !s.ok()) return s;
      out->window = kernel::FromDurationProto(t.window());
      if (!(t.change_at_least() > 0) || !std::isfinite(t.change_at_least())) {
        return check.Error(t, "change_at_least", "'change_at_least' must be a positive number");
      }
      if (t.clear_at_most() < 0 || t.clear_at_most() >= t.change_at_least()) {
        return check.Error(t, "clear_at_most",
                           "'clear_at_most' must be at least 0 and below 'change_at_least'");
      }
      if (t.direction() == v1::CHANGE_DIRECTION_UNSPECIFIED) {
        return check.Error(t, "metric", "rate_of_change needs a 'direction': rise, fall or either");
      }
      break;
    }
    case v1::Rule::kFaultCode: {
      out->type = RuleType::kFaultCode;
      const v1::FaultCodeRule& t = r.fault_code();
      const catalogue::KindMetric* codes = nullptr;
      for (const catalogue::KindMetric& m : kind.metrics) {
        if (m.repeated) codes = &m;
      }
      if (codes == nullptr) {
        return check.Error(r, "fault_code",
                           absl::StrFormat("fault_code rules test a kind's list of active codes "
                                           "(an elevator's fault_codes); kind '%s' has none",
                                           kind.id));
      }
      out->codes_metric = codes->name;
      if (t.codes_size() == 0) return check.Error(t, "codes", "fault_code needs 'codes'");
      for (int i = 0; i < t.codes_size(); ++i) {
        if (t.codes(i) < 1 || t.codes(i) > 99) {
          return check.Error(t, "codes",
                             absl::StrFormat("fault code %d is not in 1..99", t.codes(i)));
        }
        out->codes.push_back(t.codes(i));
      }
      if (absl::Status s = CheckDuration(t.hold_for(), t, "hold_for", false, check); !s.ok()) {
        return s;
      }
      out->hold = kernel::FromDurationProto(t.hold_for());
      break;
    }
    case v1::Rule::kAbsence: {
      out->type = RuleType::kAbsence;
      const v1::AbsenceRule& t = r.absence();
      if (t.intervals() < 1 || t.intervals() > 1000) {
        return check.Error(t, "intervals", "'intervals' must be in 1..1000");
      }
      if (absl::Status s = CheckDuration(t.default_interval(), t, "default_interval", true, check);
          !s.ok()) {
        return s;
      }
      out->default_interval = kernel::FromDurationProto(t.default_interval());
      break;
    }
    case v1::Rule::kStuck: {
      out->type = RuleType::kStuck;
      const v1::StuckRule& t = r.stuck();
      absl::StatusOr<MetricRef> m = ResolveMetric(kind, t.metric());
      if (!m.ok()) return check.Error(t, "metric", m.status().message());
      out->metric = *m;
      if (t.tolerance() < 0 || !std::isfinite(t.tolerance())) {
        return check.Error(t, "tolerance", "'tolerance' must be a number at least 0");
      }
      if (t.min_readings() < 2)
        return check.Error(t, "min_readings", "'min_readings' must be >= 2");
      if (absl::Status s = CheckDuration(t.min_duration(), t, "min_duration", false, check);
          !s.ok()) {
        return s;
      }
      out->min_duration = kernel::FromDurationProto(t.min_duration());
      if (absl::Status s =
              CompileSet(t.only_while(), t, "only_while", kind, false, check, &out->only_while);
          !s.ok()) {
        return s;
      }
      break;
    }
    case v1::Rule::kGridCompound: {
      out->type = RuleType::kGridCompound;
      const v1::GridCompoundRule& t = r.grid_compound();
      if (t.min_devices() < 2) return check.Error(t, "min_devices", "'min_devices' must be >= 2");
      if (t.rules_size() == 0) return check.Error(t, "rules", "grid_compound needs 'rules'");
      if (absl::Status s = CheckDuration(t.window(), t, "window", true, check); !s.ok()) return s;
      out->window = kernel::FromDurationProto(t.window());
      break;
    }
    case v1::Rule::KIND_NOT_SET:
      return check.Error(r, "id",
                         absl::StrFormat("rule '%s' needs one of threshold, rate_of_change, "
                                         "fault_code, absence, stuck, grid_compound",
                                         r.id()));
  }
  if (r.has_case_() && r.case_().open_case()) {
    const v1::CasePolicy& p = r.case_();
    if (absl::Status s = CheckCategory(p.category(), p, "category", check); !s.ok()) return s;
    if (p.department().empty()) {
      return check.Error(p, "open_case", "a rule that opens cases needs a 'department'");
    }
    if (p.dispatch_level() == v1::GRID_LEVEL_UNSPECIFIED) {
      return check.Error(p, "open_case", "a rule that opens cases needs a 'dispatch_level'");
    }
    if (p.auto_dispatch() && !p.auto_register()) {
      return check.Error(p, "auto_dispatch", "'auto_dispatch' needs 'auto_register: true'");
    }
    if (absl::Status s = CheckDeadlines(p.deadlines(), check); !s.ok()) return s;
    if (absl::Status s =
            CheckDuration(p.verification_window(), p, "verification_window", false, check);
        !s.ok()) {
      return s;
    }
    out->verification_window = kernel::FromDurationProto(p.verification_window());
  }
  return absl::OkStatus();
}

}  // namespace

Truth CompiledConditionSet::Evaluate(const Reading& reading) const {
  bool unknown = false;
  for (const CompiledCondition& c : conditions) {
    std::optional<double> v = reading.Get(c.metric);
    if (!v) {
      unknown = true;
      continue;
    }
    bool holds = false;
    switch (c.op) {
      case Op::kAbove:
        holds = *v > c.operand;
        break;
      case Op::kAtLeast:
        holds = *v >= c.operand;
        break;
      case Op::kBelow:
        holds = *v < c.operand;
        break;
      case Op::kAtMost:
        holds = *v <= c.operand;
        break;
      case Op::kEquals:
        holds = *v == c.operand;
        break;
    }
    if (all && !holds) return Truth::kFalse;
    if (!all && holds) return Truth::kTrue;
  }
  if (unknown) return Truth::kUnknown;
  return all ? Truth::kTrue : Truth::kFalse;
}

absl::StatusOr<std::unique_ptr<CompiledRuleSet>> CompiledRuleSet::Compile(
    const v1::RuleSet& rule_set, std::shared_ptr<const catalogue::KindTable> kinds,
    const kernel::YamlSourceMap* map) {
  Checker check(map);
  if (rule_set.name().empty()) return check.Error(rule_set, "name", "the rule set needs a 'name'");
  if (!ValidRuleId(rule_set.name())) {
    return check.Error(rule_set, "name",
                       absl::StrFormat("rule set name '%s' may hold only a-z, 0-9, '.', '_', '-'",
                                       rule_set.name()));
  }
  std::unique_ptr<CompiledRuleSet> out(new CompiledRuleSet());
  absl::flat_hash_map<std::string, int> ids;
  std::vector<CompiledRule> rules;
  for (int i = 0; i < rule_set.rules_size(); ++i) {
    const v1::Rule& r = rule_set.rules(i);
    if (!ValidRuleId(r.id())) {
      return check.Error(r, "id",
                         absl::StrFormat("rule id '%s' must start with a-z or 0-9 and hold only "
                                         "a-z, 0-9, '.', '_', '-' (at most 64)",
                                         r.id()));
    }
    if (!ids.emplace(r.id(), i).second) {
      return check.Error(r, "id", absl::StrFormat("rule id '%s' is used twice", r.id()));
    }
    CompiledRule cr;
    cr.index = i;
    if (absl::Status s = CompileRule(r, *kinds, check, &cr); !s.ok()) return s;
    rules.push_back(std::move(cr));
  }
  for (int i = 0; i < rule_set.rules_size(); ++i) {
    const v1::Rule& r = rule_set.rules(i);
    if (r.kind_case() != v1::Rule::kGridCompound) continue;
    for (int j = 0; j < r.grid_compound().rules_size(); ++j) {
      const std::string& ref = r.grid_compound().rules(j);
      auto it = ids.find(ref);
      if (it == ids.end()) {
        return check.Error(
            r.grid_compound(), "rules",
            absl::StrFormat("grid_compound '%s' counts unknown rule '%s'", r.id(), ref));
      }
      if (rule_set.rules(it->second).kind_case() == v1::Rule::kGridCompound) {
        return check.Error(r.grid_compound(), "rules",
                           absl::StrFormat("grid_compound '%s' cannot count another grid "
                                           "compound ('%s')",
                                           r.id(), ref));
      }
      rules[i].source_rules.push_back(it->second);
    }
  }
  absl::flat_hash_set<std::string> category_codes;
  for (const v1::CategoryPolicy& c : rule_set.categories()) {
    if (absl::Status s = CheckCategory(c.category(), c, "category", check); !s.ok()) return s;
    if (!category_codes.insert(c.category().code()).second) {
      return check.Error(c, "category",
                         absl::StrFormat("category '%s' is listed twice", c.category().code()));
    }
    if (c.department().empty()) {
      return check.Error(c, "category", "a category policy needs a 'department'");
    }
    if (absl::Status s = CheckDeadlines(c.deadlines(), check); !s.ok()) return s;
  }
  if (absl::Status s = CheckDeadlines(rule_set.default_deadlines(), check); !s.ok()) return s;
  if (rule_set.has_report_linking()) {
    const v1::ReportLinking& l = rule_set.report_linking();
    if (absl::Status s = CheckDuration(l.window(), l, "window", true, check); !s.ok()) return s;
    if (l.max_distance_m() < 0 || !std::isfinite(l.max_distance_m())) {
      return check.Error(l, "max_distance_m", "'max_distance_m' must be at least 0");
    }
  }

  // Everything checked: copy, and point the compiled rules at the copy.
  out->rule_set_ = rule_set;
  for (v1::Rule& r : *out->rule_set_.mutable_rules()) {
    if (r.device_kind().empty() && r.typed_device_kind() != v1::DEVICE_KIND_UNSPECIFIED) {
      r.set_device_kind(catalogue::TypedKindId(r.typed_device_kind()));
    }
    r.clear_typed_device_kind();
  }
  out->rules_ = std::move(rules);
  out->kinds_ = std::move(kinds);
  out->by_kind_.resize(out->kinds_->kinds().size());
  out->compounds_counting_.resize(out->rules_.size());
  for (CompiledRule& cr : out->rules_) {
    cr.rule = &out->rule_set_.rules(cr.index);
    if (cr.type == RuleType::kGridCompound) {
      for (int src : cr.source_rules) out->compounds_counting_[src].push_back(cr.index);
    } else {
      out->by_kind_[cr.kind].push_back(cr.index);
    }
  }
  for (int i = 0; i < out->rule_set_.categories_size(); ++i) {
    out->categories_.emplace(out->rule_set_.categories(i).category().code(), i);
  }
  out->ids_ = std::move(ids);
  return out;
}

const std::vector<int>& CompiledRuleSet::RulesFor(int kind) const {
  static const std::vector<int> kNone;
  if (kind < 0 || static_cast<size_t>(kind) >= by_kind_.size()) return kNone;
  return by_kind_[kind];
}

const std::vector<int>& CompiledRuleSet::CompoundsCounting(int index) const {
  return compounds_counting_[index];
}

std::optional<int> CompiledRuleSet::IndexOf(std::string_view id) const {
  auto it = ids_.find(absl::string_view(id.data(), id.size()));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const v1::CategoryPolicy* CompiledRuleSet::Category(std::string_view category_code) const {
  auto it = categories_.find(std::string(category_code));
  return it == categories_.end() ? nullptr : &rule_set_.categories(it->second);
}

absl::Status CheckRuleSet(const v1::RuleSet& rule_set, const kernel::YamlSourceMap* map,
                          std::shared_ptr<const catalogue::KindTable> kinds) {
  if (kinds == nullptr) kinds = catalogue::KindTable::BuiltIn();
  return CompiledRuleSet::Compile(rule_set, std::move(kinds), map).status();
}

absl::StatusOr<std::unique_ptr<CompiledRuleSet>> CompiledRuleSet::Compile(
    const v1::RulesetActivated& activated) {
  if (!activated.has_catalogue()) {
    return Compile(activated.rule_set(), catalogue::KindTable::TypedOnly());
  }
  const v1::Catalogue& c = activated.catalogue().catalogue();
  if (absl::Status s = catalogue::CheckCatalogue(c); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("its catalogue '%s' does not check: %s", c.name(), s.message()));
  }
  return Compile(activated.rule_set(), catalogue::KindTable::FromCatalogue(c));
}

v1::ActivatedCatalogue ActivatedCatalogueOf(const catalogue::LoadedCatalogue& loaded) {
  v1::ActivatedCatalogue a;
  a.set_sha256(Sha256Hex(loaded.source_yaml));
  a.set_source_yaml(loaded.source_yaml);
  a.set_source_path(loaded.source_path);
  *a.mutable_catalogue() = loaded.catalogue;
  return a;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) hex += absl::StrFormat("%02x", digest[i]);
  return hex;
}

absl::StatusOr<LoadedRuleSet> LoadRuleSetText(std::string_view yaml, std::string_view file,
                                              const catalogue::LoadedCatalogue* catalogue) {
  if (catalogue == nullptr) catalogue = &catalogue::BuiltInCatalogue();
  LoadedRuleSet loaded;
  kernel::YamlSourceMap map;
  if (absl::Status s = kernel::ParseYamlToProto(yaml, file, &loaded.rule_set, &map); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRuleSet(loaded.rule_set, &map,
                                    catalogue::KindTable::FromCatalogue(catalogue->catalogue));
      !s.ok()) {
    return s;
  }
  loaded.catalogue = ActivatedCatalogueOf(*catalogue);
  loaded.source_yaml = std::string(yaml);
  loaded.source_path = std::string(file);
  loaded.sha256 = Sha256Hex(yaml);
  return loaded;
}

absl::StatusOr<LoadedRuleSet> LoadRuleSetFile(const std::string& path,
                                              const catalogue::LoadedCatalogue* catalogue) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrFormat("cannot read rule set '%s': no such file or not readable", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return LoadRuleSetText(text.str(), path, catalogue);
}

v1::Event RulesetActivatedEvent(const LoadedRuleSet& loaded, absl::Time event_time) {
  v1::Event e;
  e.set_stream_id(absl::StrFormat("ruleset/%s", loaded.rule_set.name()));
  kernel::SetTimestamp(event_time, e.mutable_event_time());
  e.mutable_provenance()->set_stage("rules.activate");
  e.mutable_provenance()->set_idempotency_key(
      absl::StrFormat("ruleset/%s/%s/%s/%d", loaded.rule_set.name(), loaded.sha256,
                      loaded.catalogue.sha256(), absl::ToUnixNanos(event_time)));
  v1::RulesetActivated* a = e.mutable_ruleset_activated();
  a->set_name(loaded.rule_set.name());
  a->set_sha256(loaded.sha256);
  a->set_source_yaml(loaded.source_yaml);
  a->set_source_path(loaded.source_path);
  *a->mutable_rule_set() = loaded.rule_set;
  *a->mutable_catalogue() = loaded.catalogue;
  return e;
}

}  // namespace cityops::rules
