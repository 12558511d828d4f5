#include "ingest/record_producer.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "ingest/kafka_conf.h"

namespace cityops::ingest {

struct RecordProducer::Handle {
  rd_kafka_t* rk = nullptr;
  ~Handle() {
    if (rk != nullptr) {
      rd_kafka_flush(rk, 10000);
      rd_kafka_destroy(rk);
    }
  }
};

struct RecordProducerCallbacks {
  static void Delivered(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<RecordProducer*>(opaque);
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      self->delivered_.fetch_add(1);
      return;
    }
    self->failed_.fetch_add(1);
    absl::MutexLock lock(&self->error_mu_);
    self->last_error_ = rd_kafka_err2str(msg->err);
  }
};

absl::StatusOr<std::unique_ptr<RecordProducer>> RecordProducer::Create(
    const std::string& bootstrap_servers,
    const std::vector<std::pair<std::string, std::string>>& properties) {
  std::unique_ptr<RecordProducer> producer(new RecordProducer());
  const KafkaProperties defaults =
      {
          {"bootstrap.servers", bootstrap_servers},
          {"enable.idempotence", "true"},  // Retries never duplicate or reorder.
          {"partitioner", "murmur2_random"},
          {"compression.type", "lz4"},
          {"linger.ms", "5"},
          {"message.timeout.ms", "30000"},
      };
  absl::StatusOr<rd_kafka_conf_t*> made = NewKafkaConf({&defaults, &properties});
  if (!made.ok()) return made.status();
  rd_kafka_conf_t* conf = *made;
  char errstr[512];
  rd_kafka_conf_set_dr_msg_cb(conf, &RecordProducerCallbacks::Delivered);
  rd_kafka_conf_set_opaque(conf, producer.get());
  producer->handle_ = std::make_unique<Handle>();
  producer->handle_->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (producer->handle_->rk == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot create a Kafka producer: %s", errstr));
  }
  return producer;
}

RecordProducer::~RecordProducer() = default;

absl::Status RecordProducer::Produce(std::string_view topic, std::string_view key,
                                     std::string_view value, const std::vector<Header>& headers,
                                     int32_t partition, absl::Time timestamp) {
  rd_kafka_t* rk = handle_->rk;
  // 0 asks librdkafka for the wall clock.
  const int64_t timestamp_ms =
      timestamp == absl::InfinitePast() ? 0 : std::max<int64_t>(1, absl::ToUnixMillis(timestamp));
  const std::string topic_name(topic);
  for (;;) {
    rd_kafka_headers_t* h = rd_kafka_headers_new(headers.size());
    for (const Header& header : headers) {
      rd_kafka_header_add(h, header.name.c_str(), -1, header.value.data(), header.value.size());
    }
    rd_kafka_resp_err_t err =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic_name.c_str()), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_KEY(key.data(), key.size()),
                          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                          RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_poll(rk, 0);  // Serve delivery reports.
      return absl::OkStatus();
    }
    rd_kafka_headers_destroy(h);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cannot produce a record with key '%s' to %s: %s", key, topic, rd_kafka_err2str(err)));
    }
    rd_kafka_poll(rk, 50);  // The local queue is full: let deliveries drain it.
  }
}

absl::Status RecordProducer::Flush(absl::Duration timeout) {
  const rd_kafka_resp_err_t err =
      rd_kafka_flush(handle_->rk, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  const uint64_t failed_now = failed_.load();
  const uint64_t new_failures = failed_now - failed_at_last_flush_;
  failed_at_last_flush_ = failed_now;
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR && new_failures == 0) return absl::OkStatus();
  absl::MutexLock lock(&error_mu_);
  return absl::UnavailableError(
      absl::StrFormat("%d records not acknowledged by Kafka (%d still in flight after %s): %s",
                      new_failures, rd_kafka_outq_len(handle_->rk), absl::FormatDuration(timeout),
                      new_failures > 0 ? last_error_ : rd_kafka_err2str(err)));
}

}  // namespace cityops::ingest
