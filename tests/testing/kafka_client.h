// Minimal Kafka clients for tests: a producer that waits for acknowledgement and a
// consumer that reads a whole topic from the beginning. Real librdkafka, real protocol.
#ifndef CITYOPS_TESTS_TESTING_KAFKA_CLIENT_H_
#define CITYOPS_TESTS_TESTING_KAFKA_CLIENT_H_

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "kernel/clock.h"

namespace cityops::testing {

struct TestRecord {
  std::string key;
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
  int32_t partition = -1;  // -1: by key (murmur2, as Java clients do).
  // The record's CreateTime; InfinitePast: the producer's clock (see TestProducer).
  absl::Time timestamp = absl::InfinitePast();
};

struct ConsumedRecord {
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
  std::map<std::string, std::string> headers;  // Last value of each name.
};

class TestProducer {
 public:
  // Records are stamped with `clock` (the producer's clock; ingest validates event times
  // against it), or by librdkafka with the wall clock when it is null.
  explicit TestProducer(const std::string& bootstrap, const kernel::Clock* clock = nullptr)
      : clock_(clock) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    Set(conf, "bootstrap.servers", bootstrap);
    Set(conf, "enable.idempotence", "true");
    Set(conf, "linger.ms", "1");
    Set(conf, "partitioner", "murmur2_random");
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk_ == nullptr) throw std::runtime_error(err);
  }
  ~TestProducer() {
    rd_kafka_flush(rk_, 10000);
    rd_kafka_destroy(rk_);
  }
  TestProducer(const TestProducer&) = delete;
  TestProducer& operator=(const TestProducer&) = delete;

  void Produce(const std::string& topic, const TestRecord& r) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(r.headers.size() + 1);
    for (const auto& [name, value] : r.headers) {
      rd_kafka_header_add(headers, name.c_str(), -1, value.data(), value.size());
    }
    absl::Time stamp = r.timestamp;
    if (stamp == absl::InfinitePast() && clock_ != nullptr) stamp = clock_->Now();
    const int64_t timestamp_ms = stamp == absl::InfinitePast() ? 0 : absl::ToUnixMillis(stamp);
    for (;;) {
      rd_kafka_resp_err_t err =
          rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(r.partition),
                            RD_KAFKA_V_KEY(r.key.data(), r.key.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(r.value.data()), r.value.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
                            RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_headers_destroy(headers);
        throw std::runtime_error(rd_kafka_err2str(err));
      }
      rd_kafka_poll(rk_, 50);
    }
  }

  // Waits until every record is acknowledged.
  void Flush() {
    if (rd_kafka_flush(rk_, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("test producer: records not acknowledged within 30 s");
    }
  }

 private:
  static void Set(rd_kafka_conf_t* conf, const char* name, const std::string& value) {
    char err[512];
    if (rd_kafka_conf_set(conf, name, value.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
      throw std::runtime_error(err);
    }
  }
  rd_kafka_t* rk_ = nullptr;
  const kernel::Clock* clock_ = nullptr;
};

// Reads every record of `topic` (all `partitions`) that exists now. No consumer group.
inline std::vector<ConsumedRecord> ReadTopic(const std::string& bootstrap, const std::string& topic,
                                             int partitions) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "group.id", "cityops-test-reader", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
  rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (rk == nullptr) throw std::runtime_error(err);
  std::vector<ConsumedRecord> out;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  std::map<int32_t, int64_t> ends;
  for (int32_t p = 0; p < partitions; ++p) {
    int64_t low = 0;
    int64_t high = 0;
    rd_kafka_query_watermark_offsets(rk, topic.c_str(), p, &low, &high, 10000);
    if (high > low) {
      rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = low;
      ends[p] = high;
    }
  }
  rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  const size_t remaining = ends.size();
  std::map<int32_t, bool> done;
  for (int idle = 0; done.size() < remaining && idle < 300;) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr) {
      ++idle;
      continue;
    }
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ConsumedRecord r;
      r.partition = m->partition;
      r.offset = m->offset;
      if (m->key != nullptr) r.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload != nullptr) r.value.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_headers_t* headers = nullptr;
      if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
          r.headers[name] = value ? std::string(static_cast<const char*>(value), size) : "";
        }
      }
      if (m->offset + 1 >= ends[m->partition]) done[m->partition] = true;
      out.push_back(std::move(r));
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_KAFKA_CLIENT_H_
