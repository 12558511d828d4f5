// The reading generator: deterministic by seed, and every reading valid by ingest's rules.
#include "sim/reading_generator.h"

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <string>

#include "catalogue/kinds.h"
#include "ingest/envelope.h"
#include "ingest/record_decoder.h"

namespace cityops::sim {
namespace {

TEST_CASE("the same seed gives the same readings and another seed other ones", "[sim]") {
  FleetOptions options;
  options.devices = 500;
  ReadingGenerator a(options);
  ReadingGenerator b(options);
  options.seed = 2;
  ReadingGenerator c(options);
  v1::SensorReading ra, rb, rc;
  int differ = 0;
  for (int i = 0; i < 5000; ++i) {
    a.Next(&ra);
    b.Next(&rb);
    c.Next(&rc);
    REQUIRE(ra.SerializeAsString() == rb.SerializeAsString());
    differ += ra.SerializeAsString() != rc.SerializeAsString();
  }
  CHECK(differ > 4000);
}

TEST_CASE("generated readings pass ingest validation and cover the four kinds", "[sim]") {
  FleetOptions options;
  options.devices = 2000;
  ReadingGenerator generator(options);
  std::map<v1::DeviceKind, int> kinds;
  v1::SensorReading reading;
  v1::SensorReading decoded;
  size_t event_bytes = 0;
  constexpr int kReadings = 20'000;
  for (int i = 0; i < kReadings; ++i) {
    generator.Next(&reading);
    ++kinds[reading.kind()];
    const std::string bytes = reading.SerializeAsString();
    ingest::KafkaRecord record;
    record.key = reading.device_id();
    record.value = bytes;
    const absl::Time now = absl::FromUnixSeconds(reading.event_time().seconds());
    std::optional<ingest::Rejection> why =
        ingest::DecodeReading(record, ingest::ValidationPolicy(), now, &decoded);
    INFO(reading.ShortDebugString() << " -> " << (why ? why->message : ""));
    REQUIRE_FALSE(why.has_value());
    event_bytes += ingest::ReadingEvent(reading, "cityops.readings", 0, i, false).ByteSizeLong();
  }
  CHECK(kinds.size() == 4);
  CHECK(kinds[v1::DEVICE_KIND_MANHOLE_COVER] > kinds[v1::DEVICE_KIND_CURTAIN_WALL]);
  // Realistic envelope sizes: about 120 bytes, as the benchmarks assume.
  const double mean = static_cast<double>(event_bytes) / kReadings;
  CHECK(mean > 90);
  CHECK(mean < 180);
}

TEST_CASE("with catalogue kinds every reading of every kind is valid against the catalogue",
          "[sim]") {
  FleetOptions options;
  options.devices = 3000;
  options.catalogue_pct = 12;
  ReadingGenerator generator(options);
  ReadingGenerator again(options);
  const catalogue::KindTable& kinds = *catalogue::KindTable::BuiltIn();
  std::map<std::string, int> by_kind;
  std::map<std::pair<std::string, std::string>, uint64_t> counts;  // Device, metric.
  v1::SensorReading reading, same, decoded;
  for (int i = 0; i < 30'000; ++i) {
    generator.Next(&reading);
    again.Next(&same);
    REQUIRE(reading.SerializeAsString() == same.SerializeAsString());
    INFO(reading.ShortDebugString());
    if (!reading.has_values()) {
      ++by_kind[catalogue::TypedKindId(reading.kind())];
      const std::string bytes = reading.SerializeAsString();
      ingest::KafkaRecord record;
      record.key = reading.device_id();
      record.value = bytes;
      const absl::Time now = absl::FromUnixSeconds(reading.event_time().seconds());
      REQUIRE_FALSE(ingest::DecodeReading(record, ingest::ValidationPolicy(), now, &decoded));
      continue;
    }
    const catalogue::Kind* kind = kinds.KindOf(reading);
    REQUIRE(kind != nullptr);
    REQUIRE(kind->typed == v1::DEVICE_KIND_UNSPECIFIED);
    ++by_kind[kind->id];
    std::set<std::string> seen;
    for (const v1::MetricValue& v : reading.values().values()) {
      const catalogue::KindMetric* metric = kind->Metric(v.name());
      REQUIRE(metric != nullptr);
      REQUIRE(seen.insert(v.name()).second);
      const absl::StatusOr<double> x = catalogue::MetricValueNumber(*metric, v);
      INFO(x.status());
      REQUIRE(x.ok());
      if (v.value_case() == v1::MetricValue::kCount) {
        uint64_t& previous = counts[{reading.device_id(), v.name()}];
        REQUIRE(v.count() >= previous);
        previous = v.count();
      }
    }
    // Every modelled metric, and every flag, is in the reading.
    for (const v1::MetricModel& m : kind->spec->simulation().metrics()) {
      CHECK(seen.contains(m.metric()));
    }
  }
  CHECK(by_kind.size() == 10);
  // About 12 % of the readings, the fire hydrants (the largest share) most.
  int catalogue = 0;
  for (const auto& [id, n] : by_kind) catalogue += kinds.Find(id)->typed ? 0 : n;
  CHECK(catalogue > 30'000 * 8 / 100);
  CHECK(catalogue < 30'000 * 16 / 100);
  CHECK(by_kind["fire_hydrant"] > by_kind["noise_meter"]);
}

TEST_CASE("device ids follow the component-code layout", "[sim]") {
  CHECK(DeviceId(v1::DEVICE_KIND_MANHOLE_COVER, 3, 42) == "3101040103000042");
  CHECK(DeviceId(v1::DEVICE_KIND_ELEVATOR, 0, 7) == "3101049001000007");
  CHECK(DeviceId(v1::DEVICE_KIND_FLOOD_GAUGE, 0, 123456) == "3101049003123456");
  // Catalogue-only kinds: 93xx, xx their place among them in the catalogue.
  CHECK(DeviceId(v1::DEVICE_KIND_UNSPECIFIED, 5, 77) == "3101049305000077");
}

}  // namespace
}  // namespace cityops::sim
