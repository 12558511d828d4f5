#include "ingest/kafka_conf.h"

#include <string_view>

#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

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

void RouteKafkaLogs(rd_kafka_conf_t* conf) {
  rd_kafka_conf_set_log_cb(
      conf, [](const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
        const std::string_view facility(fac);
        spdlog::level::level_enum to = spdlog::level::debug;
        if (facility != "FAIL") {
          if (level <= 3) {
            to = spdlog::level::err;
          } else if (level == 4) {
            to = spdlog::level::warn;
          } else if (level <= 6) {
            to = spdlog::level::info;
          }
        }
        spdlog::log(to, "librdkafka {} {}: {}", rd_kafka_name(rk), facility, buf);
      });
}

}  // namespace cityops::ingest
