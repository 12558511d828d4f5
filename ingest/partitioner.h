// The partition of a record key, as Kafka's Java clients compute it by default
// (murmur2 of the key bytes, sign bit cleared, modulo the partition count) and as
// librdkafka does with `partitioner=murmur2_random`. cityops routes a device's
// registrations with it so that they land in the partition of the device's readings;
// integrators must publish with the same partitioner (proto/README.md).
#ifndef CITYOPS_INGEST_PARTITIONER_H_
#define CITYOPS_INGEST_PARTITIONER_H_

#include <cstdint>
#include <string_view>

namespace cityops::ingest {

// Kafka's murmur2 (seed 0x9747b28c) of `key`.
uint32_t Murmur2(std::string_view key);

// The partition, in [0, partitions), for `key`. `partitions` must be positive.
int32_t KafkaPartitionFor(std::string_view key, int32_t partitions);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_PARTITIONER_H_
