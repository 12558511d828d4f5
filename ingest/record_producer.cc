#include "ingest/record_producer.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "ingest/kafka_conf.h"
#include "spdlog/spdlog.h"

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

namespace {

// Failures after the first of a run are logged as a count at most this often.
constexpr absl::Duration kFailureLogInterval = absl::Seconds(10);

std::string WholeSeconds(absl::Duration d) {
  return absl::StrFormat("%d s", absl::ToInt64Seconds(d));
}

}  // namespace

struct RecordProducerCallbacks {
  static void Delivered(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<RecordProducer*>(opaque);
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      self->delivered_.fetch_add(1);
      self->OnDelivery(true, {}, {});
      return;
    }
    self->failed_.fetch_add(1);
    self->OnDelivery(false, msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "?",
                     rd_kafka_err2str(msg->err));
  }
  static void Error(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    static_cast<RecordProducer*>(opaque)->OnError(err, reason, rd_kafka_outq_len(rk));
  }
};

RecordProducer::RecordProducer(std::string client, std::string bootstrap)
    : client_(std::move(client)), bootstrap_(std::move(bootstrap)) {}

void RecordProducer::OnDelivery(bool ok, std::string_view topic, std::string_view error) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&error_mu_);
  if (ok) {
    if (troubled_) {
      spdlog::info(
          "kafka: {}: Kafka acknowledges records again, after {} of trouble in which {} records "
          "were not",
          client_, WholeSeconds(now - troubled_since_), run_failures_);
    }
    troubled_ = false;
    failing_ = false;
    run_failures_ = 0;
    logged_errors_.clear();
    return;
  }
  last_error_ = std::string(error);
  ++run_failures_;
  if (!troubled_) {
    troubled_ = true;
    troubled_since_ = now;
  }
  if (!failing_) {
    failing_ = true;
    last_failure_log_ = now;
    unlogged_failures_ = 0;
    spdlog::warn(
        "kafka: {}: a record for {} was not acknowledged by Kafka: {} (bootstrap {}); its "
        "sender learns of it when it flushes. Further failures are counted here every {} until "
        "one gets through",
        client_, topic, error, bootstrap_, WholeSeconds(kFailureLogInterval));
    return;
  }
  ++unlogged_failures_;
  if (now - last_failure_log_ >= kFailureLogInterval) {
    spdlog::warn("kafka: {}: {} more records not acknowledged by Kafka in the last {}: {}", client_,
                 unlogged_failures_, WholeSeconds(now - last_failure_log_), error);
    unlogged_failures_ = 0;
    last_failure_log_ = now;
  }
}

void RecordProducer::OnError(int err, std::string_view reason, int queued) {
  absl::MutexLock lock(&error_mu_);
  // With nothing to send, a lost connection costs nothing (and brokers close idle ones):
  // only librdkafka's debug log has it. With records waiting, it is trouble.
  if (queued == 0 && !troubled_) {
    spdlog::debug("kafka: {}: {} (nothing waits to be sent)", client_, reason);
    return;
  }
  if (!troubled_) {
    troubled_ = true;
    troubled_since_ = absl::Now();
  }
  if (std::find(logged_errors_.begin(), logged_errors_.end(), err) != logged_errors_.end()) return;
  logged_errors_.push_back(err);
  spdlog::warn("kafka: {}: {} (bootstrap {}); librdkafka retries, {} records wait in its queue",
               client_, reason, bootstrap_, queued);
}

absl::StatusOr<std::unique_ptr<RecordProducer>> RecordProducer::Create(
    const std::string& bootstrap_servers,
    const std::vector<std::pair<std::string, std::string>>& properties, std::string client) {
  std::unique_ptr<RecordProducer> producer(
      new RecordProducer(std::move(client), bootstrap_servers));
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
  rd_kafka_conf_set_error_cb(conf, &RecordProducerCallbacks::Error);
  RouteKafkaLogs(conf);
  rd_kafka_conf_set_opaque(conf, producer.get());
  producer->handle_ = std::make_unique<Handle>();
  producer->handle_->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (producer->handle_->rk == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot create a Kafka producer: %s", errstr));
  }
  rd_kafka_t* rk = producer->handle_->rk;
  RecordProducer* self = producer.get();
  producer->poller_ = std::thread([self, rk] {
    while (!self->stop_polling_.load()) rd_kafka_poll(rk, 100);
  });
  return producer;
}

RecordProducer::~RecordProducer() {
  stop_polling_.store(true);
  if (poller_.joinable()) poller_.join();
  handle_.reset();  // Flushes (serving the last reports) while the members still live.
}

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
