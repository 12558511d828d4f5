// Kafka's default partitioner, checked against Kafka's published murmur2 values and
// against librdkafka's own murmur2 partitioner.
#include "ingest/partitioner.h"

#include <librdkafka/rdkafka.h>

#include <catch2/catch.hpp>
#include <random>
#include <string>

namespace cityops::ingest {
namespace {

TEST_CASE("murmur2 matches the values of Kafka's own test suite", "[partitioner]") {
  // org.apache.kafka.common.utils.UtilsTest#testMurmur2 (as signed 32-bit values).
  CHECK(static_cast<int32_t>(Murmur2("21")) == -973932308);
  CHECK(static_cast<int32_t>(Murmur2("foobar")) == -790332482);
  CHECK(static_cast<int32_t>(Murmur2("a-little-bit-long-string")) == -985981536);
  CHECK(static_cast<int32_t>(Murmur2("a-little-bit-longer-string")) == -1486304829);
  CHECK(static_cast<int32_t>(Murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")) ==
        -58897971);
  CHECK(static_cast<int32_t>(Murmur2("abc")) == 479470107);
}

TEST_CASE("device partitions agree with librdkafka's murmur2 partitioner", "[partitioner]") {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string key = std::to_string(rng());
    key.resize(1 + rng() % key.size());
    for (int32_t partitions : {1, 3, 4, 12, 64}) {
      const int32_t theirs = rd_kafka_msg_partitioner_murmur2(nullptr, key.data(), key.size(),
                                                              partitions, nullptr, nullptr);
      INFO(key << " over " << partitions);
      REQUIRE(KafkaPartitionFor(key, partitions) == theirs);
    }
  }
}

}  // namespace
}  // namespace cityops::ingest
