#include "ingest/embedded_kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>

#include "absl/strings/str_format.h"

namespace cityops::ingest {

// The mock cluster needs an rd_kafka_t for its bookkeeping; the cluster's brokers run on
// that instance's threads. Destroy the cluster before the instance.
struct EmbeddedKafka::Handles {
  rd_kafka_t* rk = nullptr;
  rd_kafka_mock_cluster_t* cluster = nullptr;
  ~Handles() {
    if (cluster != nullptr) rd_kafka_mock_cluster_destroy(cluster);
    if (rk != nullptr) rd_kafka_destroy(rk);
  }
};

absl::StatusOr<std::unique_ptr<EmbeddedKafka>> EmbeddedKafka::Start(
    const EmbeddedKafkaOptions& options) {
  if (options.brokers < 1 || options.brokers > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("embedded Kafka needs 1 to 16 brokers, not %d", options.brokers));
  }
  for (const TopicSpec& t : options.topics) {
    if (t.name.empty() || t.partitions < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "embedded Kafka topic '%s' needs a name and at least one partition (has %d)", t.name,
          t.partitions));
    }
  }
  auto handles = std::make_unique<Handles>();
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // Keep the bookkeeping instance quiet: it never talks to a broker itself.
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
  handles->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (handles->rk == nullptr) {
    return absl::InternalError(absl::StrFormat("cannot start embedded Kafka: %s", errstr));
  }
  handles->cluster = rd_kafka_mock_cluster_new(handles->rk, options.brokers);
  if (handles->cluster == nullptr) {
    return absl::InternalError(
        "cannot start embedded Kafka: librdkafka's mock cluster failed to listen on loopback");
  }
  auto kafka =
      std::unique_ptr<EmbeddedKafka>(new EmbeddedKafka(std::move(handles), options.brokers));
  for (const TopicSpec& t : options.topics) {
    if (absl::Status s = kafka->CreateTopic(t); !s.ok()) return s;
  }
  return kafka;
}

EmbeddedKafka::EmbeddedKafka(std::unique_ptr<Handles> handles, int brokers)
    : handles_(std::move(handles)),
      brokers_(brokers),
      bootstrap_servers_(rd_kafka_mock_cluster_bootstraps(handles_->cluster)) {}

EmbeddedKafka::~EmbeddedKafka() = default;

absl::Status EmbeddedKafka::CreateTopic(const TopicSpec& topic) {
  const int replication = std::min(brokers_, 3);
  rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(handles_->cluster, topic.name.c_str(),
                                                       topic.partitions, replication);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InternalError(
        absl::StrFormat("cannot create embedded topic %s: %s", topic.name, rd_kafka_err2str(err)));
  }
  return absl::OkStatus();
}

absl::Status EmbeddedKafka::SetBrokerDown(int32_t broker_id) {
  rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_down(handles_->cluster, broker_id);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot take broker %d down: %s", broker_id, rd_kafka_err2str(err)));
  }
  return absl::OkStatus();
}

absl::Status EmbeddedKafka::SetBrokerUp(int32_t broker_id) {
  rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_up(handles_->cluster, broker_id);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot bring broker %d up: %s", broker_id, rd_kafka_err2str(err)));
  }
  return absl::OkStatus();
}

void EmbeddedKafka::PushRequestErrors(int16_t api_key, const std::vector<int>& error_codes) {
  std::vector<rd_kafka_resp_err_t> errors;
  errors.reserve(error_codes.size());
  for (int code : error_codes) errors.push_back(static_cast<rd_kafka_resp_err_t>(code));
  rd_kafka_mock_push_request_errors_array(handles_->cluster, api_key, errors.size(), errors.data());
}

absl::Status EmbeddedKafka::SetBrokerRtt(int32_t broker_id, int rtt_ms) {
  rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_rtt(handles_->cluster, broker_id, rtt_ms);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot set the delay of broker %d: %s", broker_id, rd_kafka_err2str(err)));
  }
  return absl::OkStatus();
}

}  // namespace cityops::ingest
