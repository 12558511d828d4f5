// The catalogue (catalogue/catalogue.h): the shipped one loads, its bounds are what the
// decoder enforces, its reporting intervals agree with the code's for the four typed
// kinds, and the default rule set fits it; broken catalogues and rule sets that do not
// fit are refused with the file, line and what to do.
#include "catalogue/catalogue.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "catalogue/kinds.h"
#include "daemon/rule_activation.h"
#include "ingest/record_decoder.h"
#include "kernel/proto_time.h"
#include "kernel/yaml_proto.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "tests/testing/temp_dir.h"

namespace cityops::catalogue {
namespace {

namespace pb = google::protobuf;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

LoadedCatalogue Shipped() {
  absl::StatusOr<LoadedCatalogue> loaded =
      LoadCatalogueText(DefaultCatalogueYaml(), kDefaultCatalogueFile);
  if (!loaded.ok()) FAIL(loaded.status().ToString());
  return *std::move(loaded);
}

// The shipped catalogue's text with `from` replaced by `to` (exactly once).
std::string Edited(std::string_view from, std::string_view to) {
  std::string yaml(DefaultCatalogueYaml());
  const size_t at = yaml.find(from);
  if (at == std::string::npos || yaml.find(from, at + 1) != std::string::npos) {
    FAIL("the shipped catalogue does not hold exactly one '" << from << "'");
  }
  yaml.replace(at, from.size(), to);
  return yaml;
}

std::string Refusal(const std::string& yaml) {
  absl::StatusOr<LoadedCatalogue> loaded = LoadCatalogueText(yaml, "edited.yaml");
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(loaded.status().message());
}

TEST_CASE(
    "the shipped catalogue loads: ten kinds, the community categories, and every kind "
    "named in both languages",
    "[catalogue]") {
  const LoadedCatalogue c = Shipped();
  CHECK(c.catalogue.kinds_size() == 10);
  for (const char* id : {"manhole_cover", "elevator", "curtain_wall", "flood_gauge", "fire_hydrant",
                         "smoke_detector", "ebike_charging_shed", "gas_detector",
                         "falling_object_camera", "noise_meter"}) {
    INFO(id);
    const v1::DeviceKindSpec* kind = FindKind(c.catalogue, id);
    REQUIRE(kind != nullptr);
    CHECK_FALSE(kind->name().zh().empty());
    CHECK_FALSE(kind->department().empty());
  }
  // 群租, 违建, 私装地锁, 损坏承重结构, construction noise.
  for (const char* code : {"C001", "C002", "C003", "C004", "C005"}) {
    INFO(code);
    REQUIRE(FindCategory(c.catalogue, code) != nullptr);
  }
  CHECK(FindCategory(c.catalogue, "C001")->name().zh() == "群租");
  CHECK(FindMetric(*FindKind(c.catalogue, "gas_detector"), "gas_lel_pct")->unit() == "%LEL");
}

TEST_CASE(
    "the decoder takes a typed kind's number at the shipped catalogue's bounds and refuses it "
    "just beyond",
    "[catalogue]") {
  const LoadedCatalogue c = Shipped();
  const absl::Time now = absl::FromUnixSeconds(1'790'000'000);
  int typed = 0;
  for (const v1::DeviceKindSpec& kind : c.catalogue.kinds()) {
    if (kind.typed() == v1::DEVICE_KIND_UNSPECIFIED) continue;
    ++typed;
    INFO("kind " << kind.id());
    const pb::FieldDescriptor* member = v1::SensorReading::descriptor()->FindFieldByName(kind.id());
    REQUIRE(member != nullptr);
    for (const v1::MetricSpec& m : kind.metrics()) {
      if (m.type() != v1::METRIC_TYPE_NUMBER) continue;
      INFO("metric " << m.name());
      const pb::FieldDescriptor* field = member->message_type()->FindFieldByName(m.name());
      REQUIRE(field != nullptr);
      const bool integer = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32;
      // The decoder's verdict on a reading carrying only this metric at `value`.
      const auto accepted = [&](double value) {
        v1::SensorReading r;
        r.set_device_id("dev-1");
        r.set_kind(kind.typed());
        r.set_reading_id("dev-1:1");
        kernel::SetTimestamp(now - absl::Minutes(1), r.mutable_event_time());
        pb::Message* metrics = r.GetReflection()->MutableMessage(&r, member);
        if (integer) {
          metrics->GetReflection()->SetInt32(metrics, field, static_cast<int32_t>(value));
        } else {
          metrics->GetReflection()->SetDouble(metrics, field, value);
        }
        const std::string bytes = r.SerializeAsString();
        ingest::KafkaRecord record;
        record.key = r.device_id();
        record.value = bytes;
        v1::SensorReading out;
        return !ingest::DecodeReading(record, ingest::ValidationPolicy(), now, &out).has_value();
      };
      CHECK(accepted(m.min()));
      CHECK(accepted(m.max()));
      constexpr double kInf = std::numeric_limits<double>::infinity();
      CHECK_FALSE(accepted(integer ? m.min() - 1 : std::nextafter(m.min(), -kInf)));
      CHECK_FALSE(accepted(integer ? m.max() + 1 : std::nextafter(m.max(), kInf)));
    }
  }
  CHECK(typed == 4);
}

TEST_CASE("the default rule set fits the shipped catalogue", "[catalogue]") {
  const LoadedCatalogue c = Shipped();
  absl::StatusOr<rules::LoadedRuleSet> rules =
      rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
  REQUIRE(rules.ok());
  const absl::Status fits =
      CheckRulesAgainstCatalogue(c.catalogue, rules->rule_set, RuleCheck::kDevicesAndCategories);
  INFO(fits.ToString());
  CHECK(fits.ok());
}

TEST_CASE("a broken catalogue is refused with the file, line and column and what to do",
          "[catalogue]") {
  struct Case {
    std::string from;
    std::string to;
    std::string line_of;  // The text whose line the error must name.
    std::string says;
  };
  const Case cases[] = {
      {"  - id: gas_detector\n", "  - id: gas_detector\n    colour: red\n", "colour: red",
       "unknown key 'colour' in cityops.v1.DeviceKindSpec"},
      {"  - id: noise_meter\n", "  - id: smoke_detector\n",
       "  - id: smoke_detector\n    name: {zh: 施工", "kind 'smoke_detector' is listed twice"},
      {"  - id: fire_hydrant\n", "  - id: Fire-Hydrant\n", "  - id: Fire-Hydrant",
       "must be lowercase snake_case"},
      {"{name: pressure_mpa, label: {zh: 管网压力, en: Network pressure}, type: number, unit: MPa, "
       "min: 0, max: 2.5}",
       "{name: pressure_mpa, label: {zh: 管网压力, en: Network pressure}, type: number, unit: MPa, "
       "min: 0}",
       "{name: pressure_mpa", "needs both bounds"},
      {"{name: gas_lel_pct, label: {zh: 可燃气体浓度, en: Combustible gas}, type: number, unit: "
       "\"%LEL\", min: 0, max: 100}",
       "{name: gas_lel_pct, label: {zh: 可燃气体浓度, en: Combustible gas}, type: number, unit: "
       "\"%LEL\", min: 100, max: 0}",
       "{name: gas_lel_pct", "must be finite with min < max"},
      {"{name: opened, label: {zh: 阀门开启, en: Valve opened}, type: flag}",
       "{name: opened, label: {zh: 阀门开启, en: Valve opened}, type: flag, min: 0, max: 1}",
       "{name: opened", "is a flag and takes no bounds"},
      {"{name: alarm, label: {zh: 火警, en: Alarm}, type: flag}",
       "{name: alarm, label: {zh: 火警, en: Alarm}, type: code}", "{name: alarm, label: {zh: 火警",
       "needs its 'codes'"},
      {"{name: smoke, label: {zh: 烟雾, en: Smoke}, type: flag}", "{name: smoke, type: flag}",
       "{name: smoke, type", "needs a name in both languages"},
      // A typed kind must carry its typed message's fields.
      {"      - {name: battery_pct, label: {zh: 电量, en: Battery}, type: number, unit: \"%\", "
       "min: "
       "0, max: 100}\n    archive:\n      - {name: underpass",
       "    archive:\n      - {name: underpass", "    metrics:\n      # Ultrasonic",
       "kind 'flood_gauge' lacks the metric 'battery_pct' of its typed FloodGaugeMetrics"},
      {"{name: floor, label: {zh: 楼层, en: Floor}, type: number, unit: floor, min: -20, max: 300}",
       "{name: floors, label: {zh: 楼层, en: Floor}, type: number, unit: floor, min: -20, max: "
       "300}",
       "{name: floors, label: {zh: 楼层", "has no metric 'floors' in its typed ElevatorMetrics"},
      {"{name: passenger_present, label: {zh: 轿厢有人, en: Passenger present}, type: flag}",
       "{name: passenger_present, label: {zh: 轿厢有人, en: Passenger present}, type: number, "
       "unit: x, min: 0, max: 1}",
       "{name: passenger_present", "is a bool field in ElevatorMetrics, which cannot be a number"},
      {"  - id: noise_meter\n", "  - id: elevator_2\n    typed: elevator\n", "  - id: elevator_2",
       "must be 'elevator'"},
      {"        - {metric: pressure_mpa, baseline: 0.3, noise: 0.02}",
       "        - {metric: pressure_mpa, baseline: 3, noise: 0.02}",
       "{metric: pressure_mpa, baseline: 3",
       "baseline 3 must be within the metric's bounds [0, 2.5]"},
      {"      share: 0.48", "      share: 0.6", "kinds:", "shares add up to 1.12"},
      {"  - code: \"C003\"", "  - code: \"C001\"", "  - code: \"C001\"\n    name: {zh: 私装",
       "category C001 is listed twice"},
      {"    deadlines: {register_within: 30m, dispatch_within: 30m, handle_within: 2h, "
       "verify_within: "
       "1h, close_within: 1d}",
       "    deadlines: {register_within: 30m, dispatch_within: 30m, handle_within: 2h, "
       "verify_within: "
       "1h}",
       "handle_within: 2h, verify_within: 1h}", "'close_within' is missing"},
      {"  - code: \"C002\"", "  - code: \"c-2\"", "  - code: \"c-2\"", "2 to 8 capital letters"},
      {"    reporting_interval: 1m\n", "    reporting_interval: 0s\n", "reporting_interval: 0s",
       "needs a 'reporting_interval' from 1s to 7d"},
  };
  for (const Case& c : cases) {
    const std::string yaml = Edited(c.from, c.to);
    INFO("edit: " << c.to);
    const std::string message = Refusal(yaml);
    INFO(message);
    CHECK_THAT(message, Contains(c.says));
    // The line of the offending key, in the edited text.
    const size_t at = yaml.find(c.line_of);
    REQUIRE(at != std::string::npos);
    const int line = 1 + static_cast<int>(std::count(yaml.begin(), yaml.begin() + at, '\n'));
    CHECK_THAT(message, StartsWith(absl::StrCat("edited.yaml:", line, ":")));
  }
  CHECK(LoadCatalogueFile("/nonexistent/city.yaml").status().code() == absl::StatusCode::kNotFound);
}

// The default rule set, parsed with its source map, checked against `catalogue_yaml`.
std::string RulesRefusal(const std::string& catalogue_yaml,
                         RuleCheck scope = RuleCheck::kDevicesAndCategories) {
  absl::StatusOr<LoadedCatalogue> c = LoadCatalogueText(catalogue_yaml, "edited.yaml");
  REQUIRE(c.ok());
  v1::RuleSet rules;
  kernel::YamlSourceMap map;
  REQUIRE(kernel::ParseYamlToProto(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile, &rules,
                                   &map)
              .ok());
  const absl::Status s = CheckRulesAgainstCatalogue(c->catalogue, rules, scope, &map);
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), StartsWith("rules/default.yaml:"));
  return std::string(s.message());
}

TEST_CASE(
    "a catalogue that drops a kind, metric, fault code or category the rules use is "
    "refused with the rule named",
    "[catalogue]") {
  // The elevator kind removed (renamed to a catalogue-only kind).
  {
    std::string yaml =
        Edited("  - id: elevator\n    name: {zh: 电梯, en: Elevator}\n    typed: elevator\n",
               "  - id: lift\n    name: {zh: 电梯, en: Elevator}\n");
    CHECK_THAT(RulesRefusal(yaml),
               Contains("rule elevator.") && Contains("tests device kind elevator, which catalogue "
                                                      "'city' does not have"));
  }
  // A metric of a catalogue-only kind cannot be tested by today's typed rules; a typed
  // kind must keep all its fields, so a dropped metric shows as a refused catalogue.
  CHECK_THAT(Refusal(Edited("      - {name: gas_ppm, label: {zh: 可燃气体, en: Combustible gas}, "
                            "type: number, unit: ppm, min: 0, max: 1000000}\n",
                            "")),
             Contains("lacks the metric 'gas_ppm'"));
  // A fault code the rules test, no longer listed.
  CHECK_THAT(RulesRefusal(Edited("          - {value: 37, name: e-bike in the car}\n", "")),
             Contains("tests fault code 37, which kind 'elevator'"));
  // A category a rule opens cases of.
  CHECK_THAT(RulesRefusal(Edited("  - code: \"0111\"", "  - code: \"0112\"")),
             Contains("rule manhole.gas") && Contains("opens cases of category 0111"));
  // A category of the rule set's table whose deadlines differ from the catalogue's.
  CHECK_THAT(RulesRefusal(Edited("deadlines: {register_within: 2h, dispatch_within: 4h, "
                                 "handle_within: 3d, verify_within: 1d, close_within: 1d}\n  # "
                                 "Fire",
                                 "deadlines: {register_within: 1h, dispatch_within: 4h, "
                                 "handle_within: 3d, verify_within: 1d, close_within: 1d}\n  # "
                                 "Fire")),
             Contains("category 0501: deadlines differ"));
}

TEST_CASE(
    "the daemon's check of a rule set against its catalogue: devices only, with the "
    "line in either file",
    "[catalogue]") {
  testing::TempDir dir;
  // Categories are still the rule set's own: one the catalogue lacks passes.
  const std::string rules_path = dir.Sub("rules.yaml");
  {
    std::ofstream out(rules_path);
    std::string text(rules::DefaultRuleSetYaml());
    REQUIRE(absl::StrReplaceAll({{"category: {code: \"0111\", name: \"Gas manhole\"}",
                                  "category: {code: \"X111\", name: \"Gas manhole\"}"}},
                                &text) == 1);
    out << text;
  }
  const std::string no_elevators_path = dir.Sub("no-elevators.yaml");
  {
    std::ofstream out(no_elevators_path);
    out << Edited("  - id: elevator\n    name: {zh: 电梯, en: Elevator}\n    typed: elevator\n",
                  "  - id: lift\n    name: {zh: 电梯, en: Elevator}\n");
  }
  absl::StatusOr<rules::LoadedRuleSet> fits = daemon::LoadConfiguredRuleSet(rules_path, "");
  INFO(fits.status().ToString());
  CHECK(fits.ok());
  absl::StatusOr<rules::LoadedRuleSet> refused =
      daemon::LoadConfiguredRuleSet(rules_path, no_elevators_path);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(std::string(refused.status().message()),
             StartsWith(rules_path + ":") && Contains("rule elevator.") &&
                 Contains("which catalogue 'city' does not have"));
  CHECK(daemon::LoadConfiguredRuleSet("", dir.Sub("missing.yaml")).status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE(
    "ingest checks numbers against the bounds of the catalogue it is given, and refuses a "
    "typed kind that catalogue does not have",
    "[catalogue]") {
  const absl::Time now = absl::FromUnixSeconds(1'790'000'000);
  // A gauge that reads at most 2 m.
  absl::StatusOr<LoadedCatalogue> shallow = LoadCatalogueText(
      Edited("unit: cm, min: -10, max: 1000}", "unit: cm, min: -10, max: 200}"), "shallow.yaml");
  REQUIRE(shallow.ok());
  v1::SensorReading r;
  r.set_device_id("gauge-1");
  r.set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
  r.set_reading_id("gauge-1:1");
  kernel::SetTimestamp(now - absl::Minutes(1), r.mutable_event_time());
  r.mutable_flood_gauge()->set_water_depth_cm(300);
  const std::string bytes = r.SerializeAsString();
  ingest::KafkaRecord record;
  record.key = r.device_id();
  record.value = bytes;
  v1::SensorReading out;
  CHECK_FALSE(ingest::DecodeReading(record, ingest::ValidationPolicy(), now, &out).has_value());
  ingest::ValidationPolicy policy;
  policy.kinds = KindTable::FromCatalogue(shallow->catalogue);
  const std::optional<ingest::Rejection> why = ingest::DecodeReading(record, policy, now, &out);
  REQUIRE(why.has_value());
  CHECK(why->code == v1::REJECT_CODE_INVALID_METRIC);
  CHECK_THAT(why->message, Contains("flood_gauge.water_depth_cm") && Contains("-10..200 cm"));

  // The flood gauge turned into a catalogue-only kind: a typed flood gauge reading names a
  // kind that catalogue does not have, and its readings go by name.
  absl::StatusOr<LoadedCatalogue> untyped = LoadCatalogueText(
      Edited("  - id: flood_gauge\n    name: {zh: 道路积水监测, en: Road flood gauge}\n    typed: "
             "flood_gauge\n",
             "  - id: road_gauge\n    name: {zh: 道路积水监测, en: Road flood gauge}\n"),
      "untyped.yaml");
  REQUIRE(untyped.ok());
  policy.kinds = KindTable::FromCatalogue(untyped->catalogue);
  const std::optional<ingest::Rejection> unknown = ingest::DecodeReading(record, policy, now, &out);
  REQUIRE(unknown.has_value());
  CHECK(unknown->code == v1::REJECT_CODE_UNKNOWN_DEVICE_KIND);
  CHECK_THAT(unknown->message, Contains("DEVICE_KIND_FLOOD_GAUGE") &&
                                   Contains("is not a kind of catalogue 'city'") &&
                                   Contains("road_gauge"));
  r.clear_kind();
  r.set_kind_id("road_gauge");
  v1::MetricValue* depth = r.mutable_values()->add_values();
  depth->set_name("water_depth_cm");
  depth->set_number(300);
  const std::string by_name = r.SerializeAsString();
  record.value = by_name;
  CHECK_FALSE(ingest::DecodeReading(record, policy, now, &out).has_value());
}

}  // namespace
}  // namespace cityops::catalogue
