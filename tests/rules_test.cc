// The rules: loading and checking rule sets (errors name file:line:column), and the
// engine's behaviour per rule kind and per case stage, fed with hand-made events.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/engine.h"
#include "projections/rules/metric.h"
#include "tests/testing/water_tanks.h"

namespace cityops::rules {
namespace {

using kernel::SetTimestamp;
const absl::Time kT0 = absl::FromUnixSeconds(1'790'000'000);

// A rule set around `rules_yaml` (the items of `rules:`, indented by two spaces).
std::string RuleSetYaml(std::string_view rules_yaml) {
  return absl::StrFormat(
      "name: test\n"
      "categories:\n"
      "  - category: {code: \"E0111\", name: \"Road waterlogging\"}\n"
      "    department: water-authority\n"
      "    deadlines: {register_within: 30m, dispatch_within: 30m, handle_within: 4h}\n"
      "report_linking: {window: 6h, max_distance_m: 500}\n"
      "rules:\n%s",
      rules_yaml);
}

absl::Status LoadError(std::string_view rules_yaml) {
  return LoadRuleSetText(RuleSetYaml(rules_yaml), "test.yaml").status();
}

TEST_CASE("the default rule set loads and covers every device kind of the shipped catalogue",
          "[rules]") {
  absl::StatusOr<LoadedRuleSet> loaded = LoadRuleSetText(DefaultRuleSetYaml(), "default.yaml");
  REQUIRE(loaded.ok());
  absl::StatusOr<std::unique_ptr<CompiledRuleSet>> compiled =
      CompiledRuleSet::Compile(loaded->rule_set, catalogue::KindTable::BuiltIn());
  REQUIRE(compiled.ok());
  REQUIRE((*compiled)->kinds().kinds().size() == 10);
  for (const catalogue::Kind& kind : (*compiled)->kinds().kinds()) {
    INFO(kind.id);
    // At least one rule on its readings and one on its silence.
    CHECK((*compiled)->RulesFor(kind.index).size() >= 2);
  }
  CHECK(loaded->sha256.size() == 64);
  // The domain's figures: entrapment rescue within 30 minutes; covers fixed within 2 h
  // urban and 4 h suburban.
  for (const v1::Rule& r : loaded->rule_set.rules()) {
    if (r.id() == "elevator.entrapment") {
      CHECK(r.case_().deadlines().handle_within().seconds() == 30 * 60);
    }
    if (r.id() == "manhole.cover-open.urban") {
      CHECK(r.case_().deadlines().handle_within().seconds() == 2 * 3600);
    }
    if (r.id() == "manhole.cover-open.suburban") {
      CHECK(r.case_().deadlines().handle_within().seconds() == 4 * 3600);
    }
  }
}

TEST_CASE("rule set errors name the file, line and column and say what to do", "[rules]") {
  struct Case {
    const char* name;
    std::string yaml;
    const char* where;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"unknown metric",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    threshold:\n      raise: {all: [{metric: depth_cm, at_least: 15}]}\n",
       "test.yaml:12:", "has no metric 'depth_cm'"},
      {"bad rule id",
       "  - id: Bad Id\n    device_kind: flood_gauge\n    severity: minor\n"
       "    absence: {intervals: 3, default_interval: 5m}\n",
       "test.yaml:8:", "rule id 'Bad Id'"},
      {"duplicate id",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    absence: {intervals: 3, default_interval: 5m}\n"
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    absence: {intervals: 3, default_interval: 5m}\n",
       "test.yaml:12:", "used twice"},
      {"no kind", "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n",
       "test.yaml:8:", "needs one of threshold"},
      {"no severity",
       "  - id: a\n    device_kind: flood_gauge\n    absence: {intervals: 3, default_interval: "
       "5m}\n",
       "test.yaml:8:", "needs a 'severity'"},
      {"numeric test of a boolean",
       "  - id: a\n    device_kind: manhole_cover\n    severity: minor\n"
       "    threshold:\n      raise: {all: [{metric: cover_open, above: 0}]}\n",
       "test.yaml:12:", "test it with 'equals'"},
      {"bad enum operand",
       "  - id: a\n    device_kind: elevator\n    severity: minor\n"
       "    threshold:\n      raise: {all: [{metric: door_state, equals: AJAR}]}\n",
       "test.yaml:12:", "'AJAR' is not a value of DoorState"},
      {"both all and any",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    threshold:\n      raise:\n        all: [{metric: water_depth_cm, at_least: 1}]\n"
       "        any: [{metric: water_depth_cm, at_least: 2}]\n",
       "test.yaml:14:", "either 'all' or 'any'"},
      {"rate clear not below raise",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    rate_of_change: {metric: water_depth_cm, window: 15m, change_at_least: 10, "
       "direction: rise, clear_at_most: 10}\n",
       "test.yaml:11:", "below 'change_at_least'"},
      {"zero window",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    rate_of_change: {metric: water_depth_cm, window: 0s, change_at_least: 10, "
       "direction: rise}\n",
       "test.yaml:11:", "'window' must be positive"},
      {"fault codes on a flood gauge",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n"
       "    fault_code: {codes: [7]}\n",
       "test.yaml:11:", "kind 'flood_gauge' has none"},
      {"filter of another kind",
       "  - id: a\n    device_kind: elevator\n    severity: minor\n    applies_to: {underpass: "
       "true}\n"
       "    fault_code: {codes: [7]}\n",
       "test.yaml:11:", "filter flood gauges only"},
      {"compound of an unknown rule",
       "  - id: g\n    severity: major\n"
       "    grid_compound: {rules: [nope], min_devices: 3, window: 30m}\n",
       "test.yaml:10:", "unknown rule 'nope'"},
      {"case without department",
       "  - id: a\n    device_kind: elevator\n    severity: minor\n    fault_code: {codes: [7]}\n"
       "    case: {open_case: true, category: {code: \"9101\"}, dispatch_level: street_center}\n",
       "test.yaml:12:", "needs a 'department'"},
      {"auto dispatch without auto register",
       "  - id: a\n    device_kind: elevator\n    severity: minor\n    fault_code: {codes: [7]}\n"
       "    case: {open_case: true, category: {code: \"9101\"}, department: x, "
       "dispatch_level: street_center, auto_dispatch: true}\n",
       "test.yaml:12:", "needs 'auto_register: true'"},
      {"negative deadline",
       "  - id: a\n    device_kind: elevator\n    severity: minor\n    fault_code: {codes: [7]}\n"
       "    case: {open_case: true, category: {code: \"9101\"}, department: x, "
       "dispatch_level: street_center, deadlines: {handle_within: -5m}}\n",
       "test.yaml:12:", "'handle_within' must be positive"},
      {"clear overlapping raise",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n    threshold:\n"
       "      raise: {all: [{metric: water_depth_cm, at_least: 15}]}\n"
       "      clear: {all: [{metric: water_depth_cm, at_least: 20}]}\n",
       "test.yaml:13:", "'clear' overlaps 'raise': a reading with water_depth_cm 21"},
      {"clear overlapping one of several raise conditions",
       "  - id: a\n    device_kind: manhole_cover\n    severity: minor\n    threshold:\n"
       "      raise: {any: [{metric: cover_open, equals: \"true\"}, {metric: tilt_deg, "
       "at_least: 10}]}\n"
       "      clear: {all: [{metric: tilt_deg, below: 12}]}\n",
       "test.yaml:13:", "cover_open 1 and tilt_deg 11"},
      {"unknown key (strict parsing)",
       "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n    treshold: {}\n",
       "test.yaml:11:", "unknown key 'treshold'"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    absl::Status s = LoadError(c.yaml);
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains(c.where));
    CHECK_THAT(std::string(s.message()), Catch::Contains(c.says));
  }
}

TEST_CASE("disjoint raise and clear conditions are accepted", "[rules]") {
  // Hysteresis that touches but does not overlap; whole-number metrics; several metrics.
  for (const char* yaml : {
           "  - id: a\n    device_kind: flood_gauge\n    severity: minor\n    threshold:\n"
           "      raise: {all: [{metric: water_depth_cm, at_least: 15}]}\n"
           "      clear: {all: [{metric: water_depth_cm, below: 15}]}\n",
           "  - id: a\n    device_kind: elevator\n    severity: minor\n    threshold:\n"
           "      raise: {all: [{metric: floor, above: 3}]}\n"
           "      clear: {all: [{metric: floor, below: 4}]}\n",
           "  - id: a\n    device_kind: curtain_wall\n    severity: minor\n    threshold:\n"
           "      raise: {all: [{metric: vibration_mm_per_s2, at_least: 60}, "
           "{metric: wind_speed_m_per_s, at_least: 17.2}]}\n"
           "      clear: {any: [{metric: vibration_mm_per_s2, below: 40}, "
           "{metric: wind_speed_m_per_s, below: 10}]}\n",
       }) {
    INFO(yaml);
    CHECK(LoadError(yaml).ok());
  }
}

TEST_CASE("a missing rule file is named", "[rules]") {
  absl::Status s = LoadRuleSetFile("/nonexistent/rules.yaml").status();
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(s.message()), Catch::Contains("/nonexistent/rules.yaml"));
}

// The test's oracle: `field` of `kind`'s typed message in `r` by protobuf reflection, as
// the rules read it (absent unless `r` carries that kind's message and the field).
std::optional<double> ReflectedMetric(const v1::SensorReading& r, const catalogue::Kind& kind,
                                      const google::protobuf::FieldDescriptor& field) {
  namespace pb = google::protobuf;
  const pb::Reflection* rr = r.GetReflection();
  if (!rr->HasField(r, kind.member)) return std::nullopt;
  const pb::Message& m = rr->GetMessage(r, kind.member);
  const pb::Reflection* mr = m.GetReflection();
  if (!mr->HasField(m, &field)) return std::nullopt;
  switch (field.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return mr->GetDouble(m, &field);
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return mr->GetInt32(m, &field);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return mr->GetBool(m, &field) ? 1.0 : 0.0;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return mr->GetEnumValue(m, &field);
    default:
      return std::nullopt;
  }
}

TEST_CASE("a reading decoded from its bytes reads every metric as protobuf reflection does",
          "[rules]") {
  namespace pb = google::protobuf;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> unit(0, 1);
  int compared = 0;
  for (int round = 0; round < 400; ++round) {
    v1::SensorReading r;
    r.set_device_id(absl::StrFormat("dev-%d", round));
    const v1::DeviceKind kind = static_cast<v1::DeviceKind>(1 + round % 4);
    r.set_kind(kind);
    const catalogue::KindTable& table = *catalogue::KindTable::TypedOnly();
    const pb::FieldDescriptor* member = table.FindTyped(kind)->member;
    pb::Message* m = r.GetReflection()->MutableMessage(&r, member);
    const pb::Reflection* mr = m->GetReflection();
    for (int i = 0; i < m->GetDescriptor()->field_count(); ++i) {
      const pb::FieldDescriptor* f = m->GetDescriptor()->field(i);
      if (unit(rng) < 0.3) continue;  // Absent.
      const double x = (unit(rng) - 0.3) * 1000;
      switch (f->cpp_type()) {
        case pb::FieldDescriptor::CPPTYPE_DOUBLE:
          mr->SetDouble(m, f, x);
          break;
        case pb::FieldDescriptor::CPPTYPE_INT32:
          if (f->is_repeated()) {
            for (int k = static_cast<int>(unit(rng) * 4); k > 0; --k) {
              mr->AddInt32(m, f, static_cast<int32_t>(unit(rng) * 40));
            }
          } else {
            mr->SetInt32(m, f, static_cast<int32_t>(x));  // Negative ones too.
          }
          break;
        case pb::FieldDescriptor::CPPTYPE_BOOL:
          mr->SetBool(m, f, unit(rng) < 0.5);
          break;
        case pb::FieldDescriptor::CPPTYPE_ENUM:
          mr->SetEnumValue(m, f, static_cast<int>(unit(rng) * 4));
          break;
        default:
          break;
      }
    }
    std::string bytes = r.SerializeAsString();
    if (round % 7 == 0) bytes += std::string("\xa0\x06\x05", 3);  // Unknown field 100.
    Reading decoded;
    REQUIRE(decoded.Decode(bytes, table));
    Reading set;
    set.Set(r, table);
    CHECK(decoded.device_id() == r.device_id());
    REQUIRE(decoded.kind() != nullptr);
    CHECK(decoded.kind()->typed == r.kind());
    CHECK(std::vector<int32_t>(decoded.codes().begin(), decoded.codes().end()) ==
          std::vector<int32_t>(set.codes().begin(), set.codes().end()));
    CHECK(decoded.has_codes() == (kind == v1::DEVICE_KIND_ELEVATOR));
    if (kind == v1::DEVICE_KIND_ELEVATOR) {
      CHECK(static_cast<int>(decoded.codes().size()) == r.elevator().fault_codes_size());
    }
    // Every metric of every kind: the other kinds' read as absent.
    for (int k = 1; k <= 4; ++k) {
      const catalogue::Kind& other = *table.FindTyped(static_cast<v1::DeviceKind>(k));
      const pb::Descriptor* d = other.member->message_type();
      for (int i = 0; i < d->field_count(); ++i) {
        absl::StatusOr<MetricRef> ref = ResolveMetric(other, d->field(i)->name());
        if (!ref.ok()) continue;  // Not a metric (repeated).
        INFO(d->field(i)->full_name() << " in " << r.ShortDebugString());
        const std::optional<double> want = ReflectedMetric(r, other, *d->field(i));
        CHECK(decoded.Get(*ref) == want);
        CHECK(set.Get(*ref) == want);
        ++compared;
      }
    }
  }
  CHECK(compared > 400 * 20);
  Reading bad;
  CHECK_FALSE(bad.Decode(std::string("\x0a\x10"
                                     "short",
                                     7),
                         *catalogue::KindTable::TypedOnly()));
}

// Feeds hand-made events to an engine and keeps what it derives.
class Harness {
 public:
  // Rules around `rules_yaml`, checked against `catalogue` (null: the built-in one).
  explicit Harness(std::string_view rules_yaml,
                   const catalogue::LoadedCatalogue* catalogue = nullptr) {
    absl::StatusOr<LoadedRuleSet> loaded =
        LoadRuleSetText(RuleSetYaml(rules_yaml), "t.yaml", catalogue);
    if (!loaded.ok()) FAIL(loaded.status().ToString());
    Feed(RulesetActivatedEvent(*loaded, kT0), kT0, /*moves_time=*/false);
  }

  // A reading of kind `kind_id` by metric names, as integrators send any kind.
  void Values(std::string id, std::string kind_id, absl::Duration at,
              std::vector<v1::MetricValue> values) {
    v1::Event e = Reading(id, v1::DEVICE_KIND_UNSPECIFIED, at);
    e.mutable_reading()->set_kind_id(kind_id);
    for (v1::MetricValue& v : values) *e.mutable_reading()->mutable_values()->add_values() = v;
    Feed(e, kT0 + at, true);
  }

  // Registers a device in `grid`.
  void Register(std::string id, v1::DeviceKind kind, std::string grid = "310104001001001",
                bool underpass = false) {
    v1::Event e;
    e.set_stream_id("registry/" + id);
    v1::DeviceRegistered* r = e.mutable_device_registered();
    r->set_device_id(id);
    r->set_kind(kind);
    r->mutable_grid()->set_grid_code(grid);
    r->mutable_grid()->set_street_code(grid.substr(0, 9));
    r->mutable_grid()->set_district_code(grid.substr(0, 6));
    r->mutable_location()->set_latitude_deg(31.2);
    r->mutable_location()->set_longitude_deg(121.4);
    r->mutable_reporting_interval()->set_seconds(300);
    if (kind == v1::DEVICE_KIND_FLOOD_GAUGE) r->mutable_flood_gauge()->set_underpass(underpass);
    e.set_stream_version(++registrations_[id]);  // As the log numbers the registry stream.
    Feed(e, now_, false);
  }

  void Depth(std::string id, absl::Duration at, double cm, double rain = 0) {
    v1::Event e = Reading(id, v1::DEVICE_KIND_FLOOD_GAUGE, at);
    e.mutable_reading()->mutable_flood_gauge()->set_water_depth_cm(cm);
    e.mutable_reading()->mutable_flood_gauge()->set_rainfall_mm_per_h(rain);
    Feed(e, kT0 + at, true);
  }

  void Faults(std::string id, absl::Duration at, std::vector<int> codes) {
    v1::Event e = Reading(id, v1::DEVICE_KIND_ELEVATOR, at);
    v1::ElevatorMetrics* m = e.mutable_reading()->mutable_elevator();
    m->set_floor(3);
    for (int c : codes) m->add_fault_codes(c);
    Feed(e, kT0 + at, true);
  }

  void Cover(std::string id, absl::Duration at, bool open) {
    v1::Event e = Reading(id, v1::DEVICE_KIND_MANHOLE_COVER, at);
    e.mutable_reading()->mutable_manhole_cover()->set_cover_open(open);
    e.mutable_reading()->mutable_manhole_cover()->set_tilt_deg(open ? 40 : 0.5);
    Feed(e, kT0 + at, true);
  }

  void RegisterCover(std::string id, bool urban) {
    v1::Event e;
    e.set_stream_id("registry/" + id);
    v1::DeviceRegistered* r = e.mutable_device_registered();
    r->set_device_id(id);
    r->set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
    r->mutable_grid()->set_grid_code("310104001001001");
    r->mutable_manhole_cover()->set_urban(urban);
    Feed(e, now_, false);
  }

  // Activates a rule set around `rules_yaml` at `at`.
  void Activate(std::string_view rules_yaml, absl::Duration at) {
    absl::StatusOr<LoadedRuleSet> next = LoadRuleSetText(RuleSetYaml(rules_yaml), "next.yaml");
    if (!next.ok()) FAIL(next.status().ToString());
    Feed(RulesetActivatedEvent(*next, kT0 + at), kT0 + at, false);
  }

  // Every derived event's idempotency key differs: the log would drop a repeated one.
  void CheckKeysUnique() const {
    std::set<std::string> keys;
    for (const Derived& d : derived) {
      INFO(d.event.provenance().idempotency_key());
      CHECK(keys.insert(d.event.provenance().idempotency_key()).second);
    }
  }

  void Tick(absl::Duration at) {
    v1::Event e;
    e.set_stream_id("clock");
    e.mutable_clock_tick();
    SetTimestamp(kT0 + at, e.mutable_event_time());
    Feed(e, kT0 + at, true);
  }

  // A human command event on a case (as the workflow appends it).
  void Command(v1::Event e, absl::Duration at) {
    SetTimestamp(kT0 + at, e.mutable_event_time());
    e.mutable_provenance()->mutable_actor()->set_user("zhang.wei");
    Feed(e, std::max(now_, kT0 + at), false);
  }

  void Feed(v1::Event e, absl::Time at, bool moves_time) {
    e.set_partition(0);
    e.set_sequence(next_++);
    if (moves_time) now_ = std::max(now_, at);
    engine.Process(e, now_, &derived);
  }

  // Derived events of one payload type, in order.
  std::vector<v1::Event> Of(v1::Event::PayloadCase type) const {
    std::vector<v1::Event> out;
    for (const Derived& d : derived) {
      if (d.event.payload_case() == type) out.push_back(d.event);
    }
    return out;
  }

  RulesEngine engine;
  std::vector<Derived> derived;

 private:
  v1::Event Reading(const std::string& id, v1::DeviceKind kind, absl::Duration at) {
    v1::Event e;
    e.set_stream_id("device/" + id);
    SetTimestamp(kT0 + at, e.mutable_event_time());
    v1::SensorReading* r = e.mutable_reading();
    r->set_device_id(id);
    r->set_kind(kind);
    r->set_reading_id(absl::StrFormat("%d", next_));
    *r->mutable_event_time() = e.event_time();
    return e;
  }
  absl::Time now_ = kT0;
  uint64_t next_ = 0;
  std::map<std::string, uint64_t> registrations_;
};

constexpr char kFloodRule[] =
    "  - id: flood\n"
    "    description: Road water\n"
    "    device_kind: flood_gauge\n"
    "    severity: minor\n"
    "    threshold:\n"
    "      raise: {all: [{metric: water_depth_cm, at_least: 15}]}\n"
    "      hold_for: 6m\n"
    "      clear: {all: [{metric: water_depth_cm, below: 10}]}\n"
    "      clear_hold_for: 10m\n"
    "    case:\n"
    "      open_case: true\n"
    "      category: {code: \"E0111\", name: \"Road waterlogging\"}\n"
    "      department: water-authority\n"
    "      dispatch_level: street_center\n"
    "      deadlines: {register_within: 10m, dispatch_within: 15m, handle_within: 4h}\n"
    "      auto_register: true\n"
    "      auto_dispatch: true\n"
    "      verification_window: 30m\n";

TEST_CASE("threshold: a single false reading raises nothing, a held one raises", "[rules]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 2);
  h.Depth("g1", absl::Minutes(5), 22);  // One false reading...
  h.Depth("g1", absl::Minutes(10), 2);  // ... contradicted by the next.
  h.Tick(absl::Minutes(30));
  CHECK(h.Of(v1::Event::kAlertRaised).empty());

  h.Depth("g1", absl::Minutes(35), 18);
  h.Depth("g1", absl::Minutes(40), 19);
  CHECK(h.Of(v1::Event::kAlertRaised).empty());  // Held 5 of 6 minutes.
  h.Tick(absl::Minutes(42));                     // The hold ends at 41 min.
  std::vector<v1::Event> raised = h.Of(v1::Event::kAlertRaised);
  REQUIRE(raised.size() == 1);
  const v1::AlertRaised& a = raised[0].alert_raised();
  CHECK(a.rule_id() == "flood");
  CHECK(a.device_id() == "g1");
  CHECK(a.value() == 18);
  CHECK(a.threshold() == 15);
  CHECK(a.readings_size() == 2);
  CHECK(a.grid().grid_code() == "310104001001001");
  CHECK(kernel::FromTimestamp(raised[0].event_time()) == kT0 + absl::Minutes(41));
  CHECK(raised[0].provenance().stage() == "rules");
  CHECK(raised[0].provenance().idempotency_key() == "rules/alert/al-flood-g1-1/raised");
}

TEST_CASE("threshold: hysteresis between the raise and clear conditions", "[rules]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 20);
  REQUIRE(h.Of(v1::Event::kAlertRaised).size() == 1);
  h.Depth("g1", absl::Minutes(10), 12);  // Below raise, above clear: still active.
  h.Depth("g1", absl::Minutes(20), 12);
  h.Tick(absl::Minutes(40));
  CHECK(h.Of(v1::Event::kAlertCleared).empty());
  h.Depth("g1", absl::Minutes(45), 8);   // Clear holds from 45 min ...
  h.Depth("g1", absl::Minutes(50), 16);  // ... but not for 10 minutes.
  h.Tick(absl::Minutes(58));
  CHECK(h.Of(v1::Event::kAlertCleared).empty());
  h.Depth("g1", absl::Minutes(60), 5);
  h.Depth("g1", absl::Minutes(70), 5);
  std::vector<v1::Event> cleared = h.Of(v1::Event::kAlertCleared);
  REQUIRE(cleared.size() == 1);
  CHECK(cleared[0].alert_cleared().alert_id() == "al-flood-g1-1");
  CHECK(cleared[0].alert_cleared().value() == 5);
}

TEST_CASE("an IoT case: opened, registered and dispatched by its rule, with a ticket",
          "[rules][cases]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 21);
  std::vector<v1::Event> opened = h.Of(v1::Event::kCaseOpened);
  REQUIRE(opened.size() == 1);
  const v1::CaseOpened& o = opened[0].case_opened();
  CHECK(o.case_id() == "iot-flood-g1-1");
  CHECK(o.source() == v1::CASE_SOURCE_IOT_RULE);
  CHECK(o.category().code() == "E0111");
  CHECK(o.department() == "water-authority");
  CHECK(o.alert_id() == "al-flood-g1-1");
  CHECK(o.originator().code() == "rule/flood");
  REQUIRE(h.Of(v1::Event::kCaseRegistered).size() == 1);
  std::vector<v1::Event> dispatched = h.Of(v1::Event::kCaseDispatched);
  REQUIRE(dispatched.size() == 1);
  CHECK(dispatched[0].case_dispatched().ticket_id() == "iot-flood-g1-1-T1");
  std::vector<v1::Event> tickets = h.Of(v1::Event::kTicketIssued);
  REQUIRE(tickets.size() == 1);
  const v1::TicketIssued& t = tickets[0].ticket_issued();
  CHECK(t.ticket_id() == "iot-flood-g1-1-T1");
  CHECK(t.case_id() == "iot-flood-g1-1");
  CHECK(t.department() == "water-authority");
  CHECK(t.level() == v1::GRID_LEVEL_STREET_CENTER);
  CHECK(kernel::FromTimestamp(t.due_time()) == kT0 + absl::Minutes(6) + absl::Hours(4));
  CHECK(tickets[0].stream_id() == "ticket/iot-flood-g1-1-T1");

  // In log order: opened, registered, dispatched, then the ticket.
  std::vector<v1::Event::PayloadCase> order;
  for (const Derived& d : h.derived) order.push_back(d.event.payload_case());
  const std::vector<v1::Event::PayloadCase> expected = {
      v1::Event::kAlertRaised, v1::Event::kCaseOpened, v1::Event::kCaseRegistered,
      v1::Event::kCaseDispatched, v1::Event::kTicketIssued};
  CHECK(order == expected);
}

TEST_CASE("deadlines: yellow past the deadline, red past twice the allowance, by event time",
          "[rules][cases]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 21);  // Dispatched at 6 min; handle within 4 h.
  h.Tick(absl::Hours(4));
  CHECK(h.Of(v1::Event::kCaseOverdue).empty());
  h.Tick(absl::Hours(4) + absl::Minutes(7));
  std::vector<v1::Event> overdue = h.Of(v1::Event::kCaseOverdue);
  REQUIRE(overdue.size() == 1);
  CHECK(overdue[0].case_overdue().level() == v1::OVERDUE_LEVEL_YELLOW);
  CHECK(overdue[0].case_overdue().stage() == v1::CASE_STAGE_DISPATCHED);
  CHECK(kernel::FromTimestamp(overdue[0].event_time()) == kT0 + absl::Minutes(6) + absl::Hours(4));
  h.Tick(absl::Hours(9));
  overdue = h.Of(v1::Event::kCaseOverdue);
  REQUIRE(overdue.size() == 2);
  CHECK(overdue[1].case_overdue().level() == v1::OVERDUE_LEVEL_RED);
  CHECK(kernel::FromTimestamp(overdue[1].event_time()) == kT0 + absl::Minutes(6) + absl::Hours(8));
  h.Tick(absl::Hours(20));
  CHECK(h.Of(v1::Event::kCaseOverdue).size() == 2);  // Once per level and stage.
}

v1::Event Handled(std::string case_id) {
  v1::Event e;
  e.set_stream_id("case/" + case_id);
  e.mutable_case_handled()->set_case_id(case_id);
  e.mutable_case_handled()->set_result("pumped out");
  return e;
}

TEST_CASE("a command after its stage's deadline gets the lights it earned first",
          "[rules][cases]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 21);  // Dispatched at 6 min; handle within 4 h.
  // No reading or tick moves stage time on; the department reports at 9 h.
  h.Command(Handled("iot-flood-g1-1"), absl::Hours(9));
  std::vector<v1::Event> overdue = h.Of(v1::Event::kCaseOverdue);
  REQUIRE(overdue.size() == 2);
  CHECK(overdue[0].case_overdue().level() == v1::OVERDUE_LEVEL_YELLOW);
  CHECK(overdue[0].case_overdue().stage() == v1::CASE_STAGE_DISPATCHED);
  CHECK(kernel::FromTimestamp(overdue[0].event_time()) == kT0 + absl::Minutes(6) + absl::Hours(4));
  CHECK(overdue[1].case_overdue().level() == v1::OVERDUE_LEVEL_RED);
  CHECK(kernel::FromTimestamp(overdue[1].event_time()) == kT0 + absl::Minutes(6) + absl::Hours(8));
  // The same keys a timer would have used: a replay that meets a tick first agrees.
  CHECK(overdue[0].provenance().idempotency_key() == "rules/case/iot-flood-g1-1/overdue/3/1");
  // Later ticks add nothing for that stage.
  h.Tick(absl::Hours(20));
  CHECK(h.Of(v1::Event::kCaseOverdue).size() == 2);

  // A command within its deadline earns nothing.
  Harness ok(kFloodRule);
  ok.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  ok.Depth("g1", absl::Minutes(0), 20);
  ok.Depth("g1", absl::Minutes(6), 21);
  ok.Command(Handled("iot-flood-g1-1"), absl::Hours(4));
  CHECK(ok.Of(v1::Event::kCaseOverdue).empty());
}

TEST_CASE("IoT verification: the rule verifies and closes once the device stayed normal",
          "[rules][cases]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 21);
  h.Command(Handled("iot-flood-g1-1"), absl::Minutes(60));
  h.Depth("g1", absl::Minutes(61), 5);
  h.Depth("g1", absl::Minutes(71), 4);  // Cleared at 71 min (clear held 10 min).
  REQUIRE(h.Of(v1::Event::kAlertCleared).size() == 1);
  h.Tick(absl::Minutes(100));
  CHECK(h.Of(v1::Event::kCaseVerified).empty());  // Window ends at 101 min.
  h.Tick(absl::Minutes(102));
  std::vector<v1::Event> verified = h.Of(v1::Event::kCaseVerified);
  REQUIRE(verified.size() == 1);
  CHECK(verified[0].case_verified().passed());
  std::vector<v1::Event> closed = h.Of(v1::Event::kCaseClosed);
  REQUIRE(closed.size() == 1);
  // Opened at 6 min, closed at 101.
  CHECK(closed[0].case_closed().total_handling_time().seconds() == 95 * 60);
  CHECK(h.engine.open_cases() == 0);
}

TEST_CASE("IoT verification fails when the alert comes back, a re-work ticket follows",
          "[rules][cases]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 21);
  h.Command(Handled("iot-flood-g1-1"), absl::Minutes(60));
  h.Depth("g1", absl::Minutes(61), 5);
  h.Depth("g1", absl::Minutes(71), 4);
  h.Depth("g1", absl::Minutes(80), 25);  // Back before the 30-minute window ends.
  h.Depth("g1", absl::Minutes(86), 25);
  REQUIRE(h.Of(v1::Event::kAlertRaised).size() == 2);
  CHECK(h.Of(v1::Event::kCaseOpened).size() == 1);  // One open case per device and rule.
  std::vector<v1::Event> linked = h.Of(v1::Event::kCaseLinked);
  REQUIRE(linked.size() == 1);
  CHECK(linked[0].case_linked().alert_id() == "al-flood-g1-2");
  std::vector<v1::Event> verified = h.Of(v1::Event::kCaseVerified);
  REQUIRE(verified.size() == 1);
  CHECK_FALSE(verified[0].case_verified().passed());
  CHECK(verified[0].case_verified().ticket_id() == "iot-flood-g1-1-T2");
  std::vector<v1::Event> tickets = h.Of(v1::Event::kTicketIssued);
  REQUIRE(tickets.size() == 2);
  CHECK(tickets[1].ticket_issued().ticket_id() == "iot-flood-g1-1-T2");
  h.Tick(absl::Hours(3));
  CHECK(h.Of(v1::Event::kCaseClosed).empty());
}

TEST_CASE("fault codes: raised while a listed code is active, cleared when none is", "[rules]") {
  Harness h(
      "  - id: trapped\n    device_kind: elevator\n    severity: critical\n"
      "    fault_code: {codes: [7, 8]}\n");
  h.Register("e1", v1::DEVICE_KIND_ELEVATOR);
  h.Faults("e1", absl::Seconds(0), {});
  h.Faults("e1", absl::Seconds(10), {9});  // Power loss alone: not this rule.
  CHECK(h.Of(v1::Event::kAlertRaised).empty());
  h.Faults("e1", absl::Seconds(20), {9, 8});
  REQUIRE(h.Of(v1::Event::kAlertRaised).size() == 1);
  CHECK(h.Of(v1::Event::kAlertRaised)[0].alert_raised().value() == 8);
  h.Faults("e1", absl::Seconds(30), {8});
  CHECK(h.Of(v1::Event::kAlertRaised).size() == 1);
  h.Faults("e1", absl::Seconds(40), {});
  CHECK(h.Of(v1::Event::kAlertCleared).size() == 1);
}

TEST_CASE("rate of change: depth rising 10 cm within 15 minutes", "[rules]") {
  Harness h(
      "  - id: rising\n    device_kind: flood_gauge\n    severity: major\n"
      "    rate_of_change: {metric: water_depth_cm, window: 15m, change_at_least: 10, "
      "direction: rise, clear_at_most: 2}\n");
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  for (int m = 0; m <= 60; m += 5) h.Depth("g1", absl::Minutes(m), 2 + m * 0.1);  // Slow.
  CHECK(h.Of(v1::Event::kAlertRaised).empty());
  h.Depth("g1", absl::Minutes(65), 10);
  h.Depth("g1", absl::Minutes(70), 19);  // 19 - 7.5 (at 55 min) = 11.5 cm in 15 min.
  REQUIRE(h.Of(v1::Event::kAlertRaised).size() == 1);
  CHECK(h.Of(v1::Event::kAlertRaised)[0].alert_raised().value() == Approx(11.5));
  h.Depth("g1", absl::Minutes(80), 20);
  CHECK(h.Of(v1::Event::kAlertCleared).empty());  // Rose 10 since 65 min.
  h.Depth("g1", absl::Minutes(90), 20.5);         // 0.5 since 80 min.
  CHECK(h.Of(v1::Event::kAlertCleared).size() == 1);
}

TEST_CASE("absence: silent for N reporting intervals, cleared by the next reading", "[rules]") {
  Harness h(
      "  - id: silent\n    device_kind: flood_gauge\n    severity: minor\n"
      "    absence: {intervals: 6, default_interval: 1m}\n");
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);  // Registered with a 5-minute interval.
  h.Depth("g1", absl::Minutes(0), 1);
  h.Depth("g1", absl::Minutes(5), 1);
  h.Tick(absl::Minutes(34));
  CHECK(h.Of(v1::Event::kAlertRaised).empty());
  h.Tick(absl::Minutes(36));
  std::vector<v1::Event> raised = h.Of(v1::Event::kAlertRaised);
  REQUIRE(raised.size() == 1);
  CHECK(raised[0].alert_raised().metric() == "silent_s");
  CHECK(raised[0].alert_raised().threshold() == 1800);
  CHECK(kernel::FromTimestamp(raised[0].event_time()) == kT0 + absl::Minutes(35));
  h.Tick(absl::Hours(3));
  CHECK(h.Of(v1::Event::kAlertRaised).size() == 1);
  h.Depth("g1", absl::Hours(3) + absl::Minutes(1), 1);
  CHECK(h.Of(v1::Event::kAlertCleared).size() == 1);
}

TEST_CASE("stuck: a constant depth only counts in heavy rain", "[rules]") {
  Harness h(
      "  - id: stuck\n    device_kind: flood_gauge\n    severity: minor\n"
      "    stuck: {metric: water_depth_cm, tolerance: 0, min_readings: 6, min_duration: 25m, "
      "only_while: {all: [{metric: rainfall_mm_per_h, at_least: 30}]}}\n");
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  for (int m = 0; m < 60; m += 5) h.Depth("g1", absl::Minutes(m), 0, /*rain=*/0);
  CHECK(h.Of(v1::Event::kAlertRaised).empty());  // Dry weather: 0 cm is right.
  for (int m = 60; m < 85; m += 5) h.Depth("g1", absl::Minutes(m), 3.2, /*rain=*/50);
  CHECK(h.Of(v1::Event::kAlertRaised).empty());  // 5 readings over 20 minutes.
  h.Depth("g1", absl::Minutes(85), 3.2, 50);
  REQUIRE(h.Of(v1::Event::kAlertRaised).size() == 1);
  h.Depth("g1", absl::Minutes(90), 7.5, 50);
  CHECK(h.Of(v1::Event::kAlertCleared).size() == 1);
}

TEST_CASE("grid compound: three devices of one grid within the window", "[rules]") {
  Harness h(std::string(kFloodRule) +
            "  - id: grid\n    severity: critical\n"
            "    grid_compound: {rules: [flood], min_devices: 3, window: 30m}\n"
            "    case: {open_case: true, category: {code: \"E0111\"}, department: water-authority, "
            "dispatch_level: district_center, auto_register: true}\n");
  const std::string grid = "310104001001001";
  for (std::string id : {"g1", "g2", "g3"}) h.Register(id, v1::DEVICE_KIND_FLOOD_GAUGE, grid);
  h.Register("far", v1::DEVICE_KIND_FLOOD_GAUGE, "310104002001001");
  for (std::string id : {"g1", "g2", "far"}) {
    h.Depth(id, absl::Minutes(0), 20);
    h.Depth(id, absl::Minutes(6), 20);
  }
  auto grid_alerts = [&] {
    int n = 0;
    for (const v1::Event& e : h.Of(v1::Event::kAlertRaised))
      n += e.alert_raised().rule_id() == "grid";
    return n;
  };
  CHECK(grid_alerts() == 0);  // Two in the grid, one elsewhere.
  h.Depth("g3", absl::Minutes(10), 20);
  h.Depth("g3", absl::Minutes(16), 20);
  REQUIRE(grid_alerts() == 1);
  bool grid_case = false;
  for (const v1::Event& e : h.Of(v1::Event::kCaseOpened)) {
    if (e.case_opened().rule_id() != "grid") continue;
    grid_case = true;
    CHECK(e.case_opened().device_id() == "grid/" + grid);
    CHECK(e.case_opened().case_id() == "iot-grid-grid-" + grid + "-1");
    CHECK(e.case_opened().dispatch_level() == v1::GRID_LEVEL_DISTRICT_CENTER);
  }
  CHECK(grid_case);
  for (int minute : {30, 41}) {
    for (std::string id : {"g1", "g2", "g3"}) h.Depth(id, absl::Minutes(minute), 1);
  }
  int grid_cleared = 0;
  for (const v1::Event& e : h.Of(v1::Event::kAlertCleared)) {
    grid_cleared += e.alert_cleared().rule_id() == "grid";
  }
  CHECK(grid_cleared == 1);
}

v1::Event Report(std::string id, std::string grid, double lat) {
  v1::Event e;
  e.set_stream_id("case/" + id);
  v1::CaseReported* r = e.mutable_case_reported();
  r->set_case_id(id);
  r->set_source(v1::CASE_SOURCE_HOTLINE_12345);
  r->mutable_grid()->set_grid_code(grid);
  r->mutable_location()->set_latitude_deg(lat);
  r->mutable_location()->set_longitude_deg(121.4);
  r->mutable_category()->set_code("E0111");
  r->set_description("water on the road");
  r->mutable_originator()->set_level(v1::GRID_LEVEL_CITY_CENTER);
  r->mutable_originator()->set_code("city");
  return e;
}

TEST_CASE(
    "reports: linked to a nearby open case, otherwise opened with their category's "
    "deadlines",
    "[rules][cases]") {
  Harness h(kFloodRule);
  const std::string grid = "310104001001001";
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE, grid);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 20);
  REQUIRE(h.Of(v1::Event::kCaseOpened).size() == 1);
  h.Feed(Report("hot-1", grid, 31.2001), kT0 + absl::Minutes(20), true);  // ~11 m away.
  std::vector<v1::Event> linked = h.Of(v1::Event::kCaseLinked);
  REQUIRE(linked.size() == 2);
  CHECK(linked[0].stream_id() == "case/iot-flood-g1-1");
  CHECK(linked[0].case_linked().case_id() == "iot-flood-g1-1");
  CHECK(linked[0].case_linked().reported_case_id() == "hot-1");
  // The report's own stream says where it went (it is never opened itself).
  CHECK(linked[1].stream_id() == "case/hot-1");
  CHECK(linked[1].case_linked().case_id() == "hot-1");
  CHECK(linked[1].case_linked().into_case_id() == "iot-flood-g1-1");
  CHECK(h.Of(v1::Event::kCaseOpened).size() == 1);

  h.Feed(Report("hot-2", grid, 31.25), kT0 + absl::Minutes(21), true);  // ~5.5 km away.
  std::vector<v1::Event> opened = h.Of(v1::Event::kCaseOpened);
  REQUIRE(opened.size() == 2);
  const v1::CaseOpened& o = opened[1].case_opened();
  CHECK(o.case_id() == "hot-2");
  CHECK(o.source() == v1::CASE_SOURCE_HOTLINE_12345);
  CHECK(o.department() == "water-authority");
  CHECK(o.deadlines().handle_within().seconds() == 4 * 3600);
  CHECK(o.dispatch_level() == v1::GRID_LEVEL_STREET_CENTER);
  CHECK(o.originator().code() == "city");
  CHECK(h.Of(v1::Event::kCaseLinked).size() == 2);
}

TEST_CASE(
    "a registration read after the readings it describes moves their open case to its grid, "
    "and reports there join it",
    "[rules][cases]") {
  Harness h(kFloodRule);
  const std::string grid = "310104001001007";
  h.Depth("g9", absl::Minutes(0), 20);  // Not registered yet.
  h.Depth("g9", absl::Minutes(6), 21);
  std::vector<v1::Event> opened = h.Of(v1::Event::kCaseOpened);
  REQUIRE(opened.size() == 1);
  CHECK(opened[0].case_opened().grid().grid_code().empty());

  h.Register("g9", v1::DEVICE_KIND_FLOOD_GAUGE, grid);
  std::vector<v1::Event> moved = h.Of(v1::Event::kCaseRelocated);
  REQUIRE(moved.size() == 1);
  CHECK(moved[0].stream_id() == "case/iot-flood-g9-1");
  CHECK(moved[0].case_relocated().device_id() == "g9");
  CHECK(moved[0].case_relocated().grid().grid_code() == grid);
  CHECK(moved[0].case_relocated().location().latitude_deg() == 31.2);
  CHECK(moved[0].provenance().idempotency_key() == "rules/case/iot-flood-g9-1/relocated/1");
  // Caused by the registration, whenever it was read.
  CHECK(moved[0].provenance().caused_by().sequence() == 3);  // Rule set, two readings, this.

  // The same registration again moves nothing; a report in the new grid joins the case.
  h.Register("g9", v1::DEVICE_KIND_FLOOD_GAUGE, grid);
  CHECK(h.Of(v1::Event::kCaseRelocated).size() == 1);
  h.Feed(Report("hot-9", grid, 31.2001), kT0 + absl::Minutes(20), true);
  std::vector<v1::Event> linked = h.Of(v1::Event::kCaseLinked);
  REQUIRE(linked.size() == 2);
  CHECK(linked[0].case_linked().case_id() == "iot-flood-g9-1");
  CHECK(linked[0].case_linked().reported_case_id() == "hot-9");

  // Registered elsewhere: moved again, with its own key; reports in the old grid no
  // longer join it.
  h.Register("g9", v1::DEVICE_KIND_FLOOD_GAUGE, "310104001001008");
  moved = h.Of(v1::Event::kCaseRelocated);
  REQUIRE(moved.size() == 2);
  CHECK(moved[1].provenance().idempotency_key() == "rules/case/iot-flood-g9-1/relocated/3");
  h.Feed(Report("hot-10", grid, 31.2001), kT0 + absl::Minutes(21), true);
  CHECK(h.Of(v1::Event::kCaseLinked).size() == 2);
  h.CheckKeysUnique();
}

TEST_CASE("a timer's events cite the event that scheduled it, not the one that fired it",
          "[rules]") {
  // Whether a hold expires at a clock tick or at the next reading depends on when ingest
  // ran; what the alert says must not.
  auto raised_cause = [](bool tick) {
    Harness h(kFloodRule);
    h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
    h.Depth("g1", absl::Minutes(0), 20);
    if (tick) h.Tick(absl::Minutes(7));
    h.Depth("g1", absl::Minutes(8), 5);  // Below the raise level: only the timer raises.
    std::vector<v1::Event> raised = h.Of(v1::Event::kAlertRaised);
    REQUIRE(raised.size() == 1);
    CHECK(kernel::FromTimestamp(raised[0].event_time()) == kT0 + absl::Minutes(6));
    return raised[0].provenance().caused_by().sequence();
  };
  const uint64_t with_tick = raised_cause(true);
  const uint64_t without = raised_cause(false);
  CHECK(with_tick == without);
  CHECK(with_tick == 2);  // The first depth reading (after the rule set and registration).
}

TEST_CASE("a new rule set keeps the state of unchanged rules and ends alerts of changed ones",
          "[rules]") {
  Harness h(std::string(kFloodRule) +
            "  - id: trapped\n    device_kind: elevator\n    severity: critical\n"
            "    fault_code: {codes: [7, 8]}\n");
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Register("e1", v1::DEVICE_KIND_ELEVATOR);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 20);
  h.Faults("e1", absl::Minutes(7), {8});
  REQUIRE(h.Of(v1::Event::kAlertRaised).size() == 2);
  h.Activate(std::string(kFloodRule) +
                 "  - id: trapped\n    device_kind: elevator\n    severity: critical\n"
                 "    fault_code: {codes: [8]}\n",
             absl::Minutes(8));
  std::vector<v1::Event> cleared = h.Of(v1::Event::kAlertCleared);
  REQUIRE(cleared.size() == 1);
  CHECK(cleared[0].alert_cleared().rule_id() == "trapped");
  CHECK(cleared[0].alert_cleared().alert_id() == "al-trapped-e1-1");
  h.Depth("g1", absl::Minutes(9), 20);  // Still active: no second alert.
  CHECK(h.Of(v1::Event::kAlertRaised).size() == 2);
  h.Faults("e1", absl::Minutes(10), {8});  // The changed rule starts afresh ...
  std::vector<v1::Event> raised = h.Of(v1::Event::kAlertRaised);
  REQUIRE(raised.size() == 3);
  // ... but goes on numbering its alerts: the log would drop a reused id as a duplicate.
  CHECK(raised[2].alert_raised().alert_id() == "al-trapped-e1-2");
  h.CheckKeysUnique();
}

TEST_CASE("an edited rule keeps its open case: a new alert joins it, ids are never reused",
          "[rules][cases]") {
  Harness h(kFloodRule);
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 20);
  REQUIRE(h.Of(v1::Event::kCaseOpened).size() == 1);
  // A stricter hold: the rule's definition changed, its alert ends.
  h.Activate(absl::StrReplaceAll(kFloodRule, {{"hold_for: 6m", "hold_for: 4m"}}), absl::Minutes(7));
  REQUIRE(h.Of(v1::Event::kAlertCleared).size() == 1);
  h.Depth("g1", absl::Minutes(10), 22);
  h.Depth("g1", absl::Minutes(14), 22);
  std::vector<v1::Event> raised = h.Of(v1::Event::kAlertRaised);
  REQUIRE(raised.size() == 2);
  CHECK(raised[1].alert_raised().alert_id() == "al-flood-g1-2");
  CHECK(h.Of(v1::Event::kCaseOpened).size() == 1);  // Still one open case ...
  std::vector<v1::Event> linked = h.Of(v1::Event::kCaseLinked);
  REQUIRE(linked.size() == 1);  // ... which the new alert joins.
  CHECK(linked[0].case_linked().case_id() == "iot-flood-g1-1");
  CHECK(linked[0].case_linked().alert_id() == "al-flood-g1-2");
  h.CheckKeysUnique();
  // The engine's counters are what it derived.
  CHECK(h.engine.counters().alerts_raised == h.Of(v1::Event::kAlertRaised).size());
  CHECK(h.engine.counters().alerts_cleared == h.Of(v1::Event::kAlertCleared).size());
  CHECK(h.engine.counters().cases_opened == h.Of(v1::Event::kCaseOpened).size());
  CHECK(h.engine.counters().cases_linked == h.Of(v1::Event::kCaseLinked).size());
}

TEST_CASE("alerts a rule change ends are uncounted by the grid compounds counting them",
          "[rules]") {
  const std::string compound =
      "  - id: grid\n    severity: critical\n"
      "    grid_compound: {rules: [flood], min_devices: 3, window: 30m}\n";
  Harness h(std::string(kFloodRule) + compound);
  for (std::string id : {"g1", "g2", "g3"}) h.Register(id, v1::DEVICE_KIND_FLOOD_GAUGE);
  for (int m : {0, 6}) {
    for (std::string id : {"g1", "g2", "g3"}) h.Depth(id, absl::Minutes(m), 20);
  }
  auto of_rule = [&](v1::Event::PayloadCase type, const std::string& rule) {
    int n = 0;
    for (const v1::Event& e : h.Of(type)) {
      n += (type == v1::Event::kAlertRaised ? e.alert_raised().rule_id()
                                            : e.alert_cleared().rule_id()) == rule;
    }
    return n;
  };
  REQUIRE(of_rule(v1::Event::kAlertRaised, "grid") == 1);
  h.Activate(absl::StrReplaceAll(kFloodRule, {{"at_least: 15", "at_least: 16"}}) + compound,
             absl::Minutes(8));
  CHECK(of_rule(v1::Event::kAlertCleared, "flood") == 3);
  CHECK(of_rule(v1::Event::kAlertCleared, "grid") == 1);  // No source alert is left.
  h.CheckKeysUnique();
}

TEST_CASE("an IoT case outlives the removal of its rule: verified and closed with its window",
          "[rules][cases]") {
  Harness h(std::string(kFloodRule) +
            "  - id: other\n    device_kind: elevator\n    severity: minor\n"
            "    fault_code: {codes: [9]}\n");
  h.Register("g1", v1::DEVICE_KIND_FLOOD_GAUGE);
  h.Depth("g1", absl::Minutes(0), 20);
  h.Depth("g1", absl::Minutes(6), 21);
  h.Command(Handled("iot-flood-g1-1"), absl::Minutes(60));
  // The flood rule goes away while its case waits for the water to go.
  h.Tick(absl::Minutes(61));
  h.Activate(
      "  - id: other\n    device_kind: elevator\n    severity: minor\n"
      "    fault_code: {codes: [9]}\n",
      absl::Minutes(61));
  REQUIRE(h.Of(v1::Event::kAlertCleared).size() == 1);
  h.Tick(absl::Minutes(90));
  CHECK(h.Of(v1::Event::kCaseVerified).empty());  // The window (30 min) ends at 91 min.
  h.Tick(absl::Minutes(92));
  std::vector<v1::Event> verified = h.Of(v1::Event::kCaseVerified);
  REQUIRE(verified.size() == 1);
  CHECK(verified[0].case_verified().passed());
  CHECK(h.Of(v1::Event::kCaseClosed).size() == 1);
  CHECK(h.engine.open_cases() == 0);
}

constexpr char kCoverRules[] =
    "  - id: cover.urban\n    device_kind: manhole_cover\n    applies_to: {urban: true}\n"
    "    severity: major\n"
    "    threshold: {raise: {all: [{metric: cover_open, equals: \"true\"}]}, hold_for: 30s}\n"
    "  - id: cover.suburban\n    device_kind: manhole_cover\n    applies_to: {urban: false}\n"
    "    severity: major\n"
    "    threshold: {raise: {all: [{metric: cover_open, equals: \"true\"}]}, hold_for: 30s}\n";

TEST_CASE("an unregistered device meets filters as the variant that needs most attention",
          "[rules]") {
  Harness h(kCoverRules);
  h.Cover("m1", absl::Seconds(0), true);  // Never registered.
  h.Cover("m1", absl::Seconds(40), true);
  std::vector<v1::Event> raised = h.Of(v1::Event::kAlertRaised);
  REQUIRE(raised.size() == 1);  // One of the two complementary rules, not both, not neither.
  CHECK(raised[0].alert_raised().rule_id() == "cover.urban");
  // Registered as a suburban cover: the urban rule stops watching it, the other takes over.
  h.RegisterCover("m1", /*urban=*/false);
  std::vector<v1::Event> cleared = h.Of(v1::Event::kAlertCleared);
  REQUIRE(cleared.size() == 1);
  CHECK(cleared[0].alert_cleared().rule_id() == "cover.urban");
  h.Cover("m1", absl::Seconds(50), true);
  h.Cover("m1", absl::Seconds(90), true);
  raised = h.Of(v1::Event::kAlertRaised);
  REQUIRE(raised.size() == 2);
  CHECK(raised[1].alert_raised().rule_id() == "cover.suburban");
}

TEST_CASE("the engine is deterministic: the same inputs give the same bytes", "[rules]") {
  auto run = [] {
    Harness h(kFloodRule);
    for (int d = 0; d < 20; ++d) {
      h.Register(absl::StrFormat("g%d", d), v1::DEVICE_KIND_FLOOD_GAUGE,
                 absl::StrFormat("3101040010010%02d", d % 3));
    }
    uint64_t x = 42;
    for (int m = 0; m < 600; m += 5) {
      for (int d = 0; d < 20; ++d) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        h.Depth(absl::StrFormat("g%d", d), absl::Minutes(m) + absl::Seconds(d),
                static_cast<double>(x >> 58));
      }
    }
    std::string bytes;
    for (const Derived& d : h.derived) bytes += d.event.SerializeAsString();
    return std::make_pair(bytes, h.derived.size());
  };
  auto [a, n] = run();
  auto [b, m] = run();
  CHECK(n > 50);
  CHECK(n == m);
  CHECK(a == b);
}

// Found by fuzz/rule_set_fuzz.cc: yaml-cpp 0.7's LoadAll looped, allocating until the
// machine ran out of memory, on these (fuzz/regressions/rule_set/).
TEST_CASE("malformed YAML that hangs yaml-cpp's LoadAll is refused at once", "[rules]") {
  for (const char* yaml : {",}\n", ",\n", "name: x\n,\n"}) {
    INFO(yaml);
    const absl::Status s = LoadRuleSetText(yaml, "test.yaml").status();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::StartsWith("test.yaml"));
  }
  CHECK_THAT(
      std::string(LoadRuleSetText("name: a\n---\nname: b\n", "test.yaml").status().message()),
      Catch::Contains("test.yaml:2: holds more than one YAML document"));
}

v1::MetricValue Number(std::string name, double x) {
  v1::MetricValue v;
  v.set_name(std::move(name));
  v.set_number(x);
  return v;
}

v1::MetricValue Flag(std::string name, bool x) {
  v1::MetricValue v;
  v.set_name(std::move(name));
  v.set_flag(x);
  return v;
}

// The shipped catalogue with one more kind that no code mentions.
catalogue::LoadedCatalogue CatalogueWithWaterTanks() {
  const std::string yaml = testing::CatalogueYamlWithWaterTanks();
  absl::StatusOr<catalogue::LoadedCatalogue> loaded =
      catalogue::LoadCatalogueText(yaml, "tanks.yaml");
  if (!loaded.ok()) FAIL(loaded.status().ToString());
  return *std::move(loaded);
}

constexpr char kTankRule[] =
    "  - id: tank.overflow\n"
    "    description: Water tank overflowing\n"
    "    device_kind: water_tank\n"
    "    severity: major\n"
    "    threshold:\n"
    "      raise: {any: [{metric: level_pct, at_least: 98}, {metric: overflow, equals: "
    "\"true\"}]}\n"
    "      hold_for: 2m\n"
    "      clear: {all: [{metric: level_pct, below: 90}, {metric: overflow, equals: \"false\"}]}\n"
    "    case:\n"
    "      open_case: true\n"
    "      category: {code: \"E0111\", name: \"Road waterlogging\"}\n"
    "      department: water-authority\n"
    "      dispatch_level: street_center\n"
    "      deadlines: {register_within: 30m, dispatch_within: 30m, handle_within: 4h}\n"
    "      verification_window: 10m\n";

TEST_CASE(
    "a kind that no code mentions: a catalogue entry and a rule make its readings raise "
    "an alert and open a case",
    "[rules][catalogue]") {
  const catalogue::LoadedCatalogue tanks = CatalogueWithWaterTanks();
  Harness h(kTankRule, &tanks);
  h.Values("tank-1", "water_tank", absl::Minutes(1),
           {Number("level_pct", 80), Flag("overflow", false)});
  h.Values("tank-1", "water_tank", absl::Minutes(2),
           {Number("level_pct", 99), Flag("overflow", false)});
  h.Values("tank-1", "water_tank", absl::Minutes(5), {Number("level_pct", 99.5)});
  std::vector<v1::Event> alerts = h.Of(v1::Event::kAlertRaised);
  REQUIRE(alerts.size() == 1);
  CHECK(alerts[0].alert_raised().device_id() == "tank-1");
  CHECK(alerts[0].alert_raised().rule_id() == "tank.overflow");
  CHECK(h.Of(v1::Event::kCaseOpened).size() == 1);
  // A reading of another tank by the flag alone raises too; one without the kind's
  // metrics cannot decide and raises nothing.
  h.Values("tank-2", "water_tank", absl::Minutes(6), {Flag("overflow", true)});
  h.Values("tank-2", "water_tank", absl::Minutes(9), {Flag("overflow", true)});
  h.Values("tank-3", "water_tank", absl::Minutes(6), {Number("not_a_metric", 100)});
  h.Values("tank-3", "water_tank", absl::Minutes(9), {Number("not_a_metric", 100)});
  alerts = h.Of(v1::Event::kAlertRaised);
  REQUIRE(alerts.size() == 2);
  CHECK(alerts[1].alert_raised().device_id() == "tank-2");
  // Back to normal: the alert clears.
  h.Values("tank-1", "water_tank", absl::Minutes(10),
           {Number("level_pct", 50), Flag("overflow", false)});
  REQUIRE(h.Of(v1::Event::kAlertCleared).size() == 1);
  h.CheckKeysUnique();
}

TEST_CASE("a typed kind's reading sent by metric names meets the same rules as its typed message",
          "[rules][catalogue]") {
  Harness h(kFloodRule);
  h.Depth("typed", absl::Minutes(1), 20);
  h.Values("named", "flood_gauge", absl::Minutes(1), {Number("water_depth_cm", 20)});
  h.Depth("typed", absl::Minutes(8), 21);
  h.Values("named", "flood_gauge", absl::Minutes(8), {Number("water_depth_cm", 21)});
  const std::vector<v1::Event> alerts = h.Of(v1::Event::kAlertRaised);
  REQUIRE(alerts.size() == 2);
  // Both raise at the end of the hold, in the order of their device ids.
  CHECK(alerts[0].alert_raised().device_id() == "named");
  CHECK(alerts[1].alert_raised().device_id() == "typed");
  CHECK(alerts[0].event_time().seconds() == alerts[1].event_time().seconds());
  CHECK(alerts[0].alert_raised().value() == alerts[1].alert_raised().value());
}

TEST_CASE("rules name kinds and metrics by the catalogue, and a rule on one it lacks is refused",
          "[rules][catalogue]") {
  // Not in the built-in catalogue.
  absl::Status s = LoadError(kTankRule);
  CHECK_THAT(
      std::string(s.message()),
      Catch::Contains("tests device kind water_tank, which catalogue 'city' does not have") &&
          Catch::Contains("gas_detector"));
  // A catalogue-only kind's metric it does not have: the error lists those it has.
  s = LoadError(
      "  - id: gas\n"
      "    description: Gas\n"
      "    device_kind: gas_detector\n"
      "    severity: critical\n"
      "    threshold:\n"
      "      raise: {all: [{metric: gas_ppm, at_least: 25}]}\n");
  CHECK_THAT(std::string(s.message()), Catch::StartsWith("test.yaml:"));
  CHECK_THAT(std::string(s.message()),
             Catch::Contains("device kind 'gas_detector' has no metric 'gas_ppm'") &&
                 Catch::Contains("gas_lel_pct"));
  // A flag is tested with equals, and a code by a name the catalogue gives it.
  s = LoadError(
      "  - id: smoke\n"
      "    description: Smoke\n"
      "    device_kind: smoke_detector\n"
      "    severity: critical\n"
      "    threshold:\n"
      "      raise: {all: [{metric: alarm, at_least: 1}]}\n");
  CHECK_THAT(std::string(s.message()), Catch::Contains("'alarm' is not numeric"));
  // fault_code rules need a kind with a list of active codes.
  s = LoadError(
      "  - id: faults\n"
      "    description: Faults\n"
      "    device_kind: gas_detector\n"
      "    severity: major\n"
      "    fault_code: {codes: [1]}\n");
  CHECK_THAT(std::string(s.message()), Catch::Contains("kind 'gas_detector' has none"));
}

TEST_CASE(
    "a rule set written into a log before the catalogue compiles as it did, and the same "
    "rules activated with the catalogue carry its alerts on",
    "[rules][catalogue]") {
  absl::StatusOr<LoadedRuleSet> loaded = LoadRuleSetText(RuleSetYaml(kFloodRule), "t.yaml");
  REQUIRE(loaded.ok());
  // As an older release wrote it: the kind as the typed enum, no catalogue.
  v1::Event old = RulesetActivatedEvent(*loaded, kT0);
  v1::RulesetActivated* a = old.mutable_ruleset_activated();
  a->clear_catalogue();
  for (v1::Rule& r : *a->mutable_rule_set()->mutable_rules()) {
    r.clear_device_kind();
    r.set_typed_device_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
  }
  absl::StatusOr<std::unique_ptr<CompiledRuleSet>> compiled = CompiledRuleSet::Compile(*a);
  REQUIRE(compiled.ok());
  CHECK((*compiled)->kinds().catalogue().kinds().empty());  // The typed kinds alone.
  CHECK((*compiled)->rules()[0].rule->device_kind() == "flood_gauge");

  RulesEngine engine;
  std::vector<Derived> derived;
  uint64_t seq = 0;
  auto feed = [&](v1::Event e, absl::Time at) {
    e.set_partition(0);
    e.set_sequence(seq++);
    engine.Process(e, at, &derived);
  };
  feed(old, kT0);
  for (int minute : {1, 8}) {
    v1::Event e;
    e.set_stream_id("device/g");
    SetTimestamp(kT0 + absl::Minutes(minute), e.mutable_event_time());
    e.mutable_reading()->set_device_id("g");
    e.mutable_reading()->set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
    e.mutable_reading()->mutable_flood_gauge()->set_water_depth_cm(30);
    feed(e, kT0 + absl::Minutes(minute));
  }
  auto count = [&](v1::Event::PayloadCase type) {
    return std::count_if(derived.begin(), derived.end(),
                         [&](const Derived& d) { return d.event.payload_case() == type; });
  };
  REQUIRE(count(v1::Event::kAlertRaised) == 1);
  // The upgrade activates the same rules with the catalogue: nothing changed, so the
  // alert stays active and the rule is not started afresh.
  feed(RulesetActivatedEvent(*loaded, kT0 + absl::Minutes(9)), kT0 + absl::Minutes(9));
  CHECK(engine.rules()->kinds().catalogue().kinds_size() == 10);
  CHECK(count(v1::Event::kAlertCleared) == 0);
}

}  // namespace
}  // namespace cityops::rules
