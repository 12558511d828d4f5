#include "ingest/topic_tail.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <map>
#include <memory>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "ingest/kafka_conf.h"

namespace cityops::ingest {

namespace {

struct Consumer {
  rd_kafka_t* rk = nullptr;
  ~Consumer() {
    if (rk != nullptr) rd_kafka_destroy(rk);
  }
};

int TimeoutMs(absl::Time deadline) {
  return static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now())));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadHeaderValuesAtTail(const TopicTailOptions& options) {
  const absl::Time deadline = absl::Now() + options.timeout;
  const KafkaProperties defaults = {
      {"bootstrap.servers", options.bootstrap_servers},
      // assign() needs a group id; nothing joins the group or commits to it.
      {"group.id", "cityops-tail-reader"},
      {"enable.auto.commit", "false"},
      {"enable.partition.eof", "true"},
      {"fetch.wait.max.ms", "10"},
  };
  absl::StatusOr<rd_kafka_conf_t*> conf = NewKafkaConf({&defaults, &options.kafka_properties});
  if (!conf.ok()) return conf.status();
  char errstr[512];
  Consumer c;
  c.rk = rd_kafka_new(RD_KAFKA_CONSUMER, *conf, errstr, sizeof(errstr));
  if (c.rk == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("cannot create a Kafka reader: %s", errstr));
  }
  rd_kafka_topic_t* topic = rd_kafka_topic_new(c.rk, options.topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(c.rk, 0, topic, &metadata, TimeoutMs(deadline));
  rd_kafka_topic_destroy(topic);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(absl::StrFormat("cannot read the metadata of %s: %s",
                                                  options.topic, rd_kafka_err2str(err)));
  }
  int partitions = 0;
  if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    partitions = metadata->topics[0].partition_cnt;
  }
  rd_kafka_metadata_destroy(metadata);

  std::vector<std::string> values;
  std::map<int32_t, int64_t> ends;  // Partition -> high watermark, for those with records.
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int32_t p = 0; p < partitions; ++p) {
    int64_t low = 0;
    int64_t high = 0;
    err = rd_kafka_query_watermark_offsets(c.rk, options.topic.c_str(), p, &low, &high,
                                           TimeoutMs(deadline));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_topic_partition_list_destroy(list);
      return absl::UnavailableError(absl::StrFormat("cannot read the watermarks of %s/%d: %s",
                                                    options.topic, p, rd_kafka_err2str(err)));
    }
    if (high <= low) continue;
    const int64_t from = std::max(low, high - static_cast<int64_t>(options.per_partition));
    rd_kafka_topic_partition_list_add(list, options.topic.c_str(), p)->offset = from;
    ends[p] = high;
  }
  if (ends.empty()) {
    rd_kafka_topic_partition_list_destroy(list);
    return values;
  }
  err = rd_kafka_assign(c.rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(
        absl::StrFormat("cannot read %s: %s", options.topic, rd_kafka_err2str(err)));
  }
  while (!ends.empty()) {
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrFormat(
          "reading the tail of %s took longer than %s; %d partitions were not read to the end",
          options.topic, absl::FormatDuration(options.timeout), ends.size()));
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(c.rk, 100);
    if (m == nullptr) continue;
    const int32_t p = m->partition;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_headers_t* headers = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(headers, options.header.c_str(), &value, &size) ==
              RD_KAFKA_RESP_ERR_NO_ERROR &&
          value != nullptr) {
        values.emplace_back(static_cast<const char*>(value), size);
      }
      if (auto it = ends.find(p); it != ends.end() && m->offset + 1 >= it->second) ends.erase(it);
    } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ends.erase(p);
    } else {
      const std::string error = rd_kafka_message_errstr(m);
      rd_kafka_message_destroy(m);
      return absl::UnavailableError(
          absl::StrFormat("cannot read %s/%d: %s", options.topic, p, error));
    }
    rd_kafka_message_destroy(m);
  }
  return values;
}

}  // namespace cityops::ingest
