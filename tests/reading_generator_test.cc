// The reading generator: deterministic by seed, and every reading valid by ingest's rules.
#include "sim/reading_generator.h"

#include <catch2/catch.hpp>
#include <map>

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

TEST_CASE("device ids follow the component-code layout", "[sim]") {
  CHECK(DeviceId(v1::DEVICE_KIND_MANHOLE_COVER, 3, 42) == "3101040103000042");
  CHECK(DeviceId(v1::DEVICE_KIND_ELEVATOR, 0, 7) == "3101049001000007");
  CHECK(DeviceId(v1::DEVICE_KIND_FLOOD_GAUGE, 0, 123456) == "3101049003123456");
}

}  // namespace
}  // namespace cityops::sim
