// `cityops publish`: JSON lines in, validated records out, bad lines reported by number.
#include "ingest/publish.h"

#include <catch2/catch.hpp>
#include <sstream>

#include "cityops/v1/reading.pb.h"
#include "ingest/embedded_kafka.h"
#include "ingest/partitioner.h"
#include "tests/testing/kafka_client.h"

namespace cityops::ingest {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21T14:13:20Z

std::string Line(const std::string& device, int n, const std::string& depth = "12.5") {
  return "{\"deviceId\":\"" + device + "\",\"kind\":\"DEVICE_KIND_FLOOD_GAUGE\"," +
         "\"eventTime\":\"2026-09-21T14:00:00Z\",\"readingId\":\"" + std::to_string(n) +
         "\",\"floodGauge\":{\"waterDepthCm\":" + depth + "}}";
}

TEST_CASE("publish sends the valid lines keyed by device and reports each bad line",
          "[publish][kafka]") {
  absl::StatusOr<std::unique_ptr<EmbeddedKafka>> kafka =
      EmbeddedKafka::Start({.brokers = 1, .topics = {{"cityops.readings", 4}}});
  REQUIRE(kafka.ok());
  absl::StatusOr<std::unique_ptr<RecordProducer>> producer =
      RecordProducer::Create((*kafka)->bootstrap_servers());
  REQUIRE(producer.ok());

  std::stringstream in;
  in << Line("gauge-1", 1) << "\n"
     << Line("gauge-2", 1) << "\n"
     << "\n"                                   // Blank lines are skipped.
     << "{\"deviceId\":\"gauge-3\"\n"          // Line 4: not JSON.
     << Line("gauge-3", 1, "\"NaN\"") << "\n"  // Line 5: NaN depth.
     << Line("gauge-4", 1) << "\n";
  absl::StatusOr<PublishSummary> summary = PublishJsonLines(in, **producer, {}, kNow);
  REQUIRE(summary.ok());
  CHECK(summary->published == 3);
  REQUIRE(summary->errors.size() == 2);
  CHECK(summary->errors[0].line == 4);
  CHECK(summary->errors[0].code == "UNDECODABLE");
  CHECK(summary->errors[1].line == 5);
  CHECK(summary->errors[1].code == "INVALID_METRIC");

  const std::vector<testing::ConsumedRecord> records =
      testing::ReadTopic((*kafka)->bootstrap_servers(), "cityops.readings", 4);
  REQUIRE(records.size() == 3);
  for (const testing::ConsumedRecord& r : records) {
    v1::SensorReading reading;
    REQUIRE(reading.ParseFromString(r.value));  // Binary protobuf by default.
    CHECK(r.key == reading.device_id());
    CHECK(r.partition == KafkaPartitionFor(r.key, 4));
  }
}

}  // namespace
}  // namespace cityops::ingest
