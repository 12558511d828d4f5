#include "ingest/kafka_conf.h"

#include "absl/strings/str_format.h"

namespace cityops::ingest {

absl::StatusOr<rd_kafka_conf_t*> NewKafkaConf(std::initializer_list<const KafkaProperties*> lists) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  for (const KafkaProperties* list : lists) {
    for (const auto& [name, value] : *list) {
      if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof(errstr)) !=
          RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return absl::InvalidArgumentError(
            absl::StrFormat("Kafka property %s=%s is refused: %s", name, value, errstr));
      }
    }
  }
  return conf;
}

}  // namespace cityops::ingest
