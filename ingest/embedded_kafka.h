// An in-process Kafka cluster for development and tests.
//
// Hosts librdkafka's built-in mock cluster (rdkafka_mock.h) on loopback: real Kafka
// protocol on ephemeral 127.0.0.1 ports, so any client (cityops, kcat,
// python3-confluent-kafka) can connect to `bootstrap_servers()`. Topics live in memory
// and die with the process.
//
// Known limits of the mock cluster in librdkafka 2.0.2 (measured): each partition
// keeps only about the newest 5 MiB or 100,000 producer batches and drops older records
// silently; the first consumer-group join takes about 3 s.
//
// Thread safety: all methods may be called from any thread. The cluster runs on
// librdkafka's own threads until the object is destroyed.
#ifndef CITYOPS_INGEST_EMBEDDED_KAFKA_H_
#define CITYOPS_INGEST_EMBEDDED_KAFKA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cityops::ingest {

struct TopicSpec {
  std::string name;
  int partitions = 1;
};

struct EmbeddedKafkaOptions {
  int brokers = 1;  // Broker ids are 1..brokers.
  // Topics to create at start. Replication factor is min(brokers, 3).
  std::vector<TopicSpec> topics;
};

class EmbeddedKafka {
 public:
  // Starts the cluster and creates `options.topics`. INVALID_ARGUMENT for bad options,
  // INTERNAL if librdkafka cannot start it.
  static absl::StatusOr<std::unique_ptr<EmbeddedKafka>> Start(const EmbeddedKafkaOptions& options);

  // Stops the cluster; clients still connected see their brokers disappear.
  ~EmbeddedKafka();
  EmbeddedKafka(const EmbeddedKafka&) = delete;
  EmbeddedKafka& operator=(const EmbeddedKafka&) = delete;

  // "127.0.0.1:port,..." for `bootstrap.servers`.
  const std::string& bootstrap_servers() const { return bootstrap_servers_; }
  int brokers() const { return brokers_; }

  absl::Status CreateTopic(const TopicSpec& topic);

  // Fault injection, for tests.
  // Takes a broker down (its connections drop, it refuses new ones) or back up.
  absl::Status SetBrokerDown(int32_t broker_id);
  absl::Status SetBrokerUp(int32_t broker_id);
  // The next requests of Kafka API `api_key` (e.g. 0 Produce, 1 Fetch, 8 OffsetCommit)
  // to any broker fail, in order, with these Kafka error codes (librdkafka's
  // rd_kafka_resp_err_t values, e.g. 6 NOT_LEADER_FOR_PARTITION, 7 REQUEST_TIMED_OUT).
  void PushRequestErrors(int16_t api_key, const std::vector<int>& error_codes);
  // Adds `rtt_ms` of round-trip delay to every request to `broker_id`.
  absl::Status SetBrokerRtt(int32_t broker_id, int rtt_ms);

 private:
  struct Handles;
  EmbeddedKafka(std::unique_ptr<Handles> handles, int brokers);
  std::unique_ptr<Handles> handles_;
  int brokers_;
  std::string bootstrap_servers_;
};

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_EMBEDDED_KAFKA_H_
