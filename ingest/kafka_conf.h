// Building a librdkafka configuration from lists of properties (our defaults, then what
// the operator configured), with a clear error for a property librdkafka refuses.
#ifndef CITYOPS_INGEST_KAFKA_CONF_H_
#define CITYOPS_INGEST_KAFKA_CONF_H_

#include <librdkafka/rdkafka.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace cityops::ingest {

using KafkaProperties = std::vector<std::pair<std::string, std::string>>;

// A new configuration with the properties of each list set in turn, so a later list
// overrides an earlier one. The caller owns the result (rd_kafka_new takes it over, else
// rd_kafka_conf_destroy). INVALID_ARGUMENT naming the property and librdkafka's reason if
// one is refused; nothing is leaked then.
absl::StatusOr<rd_kafka_conf_t*> NewKafkaConf(std::initializer_list<const KafkaProperties*> lists);

// librdkafka's own log lines go to spdlog (so to the daemon's log format), by their syslog
// level; connection failures ("FAIL", one per reconnect attempt) at debug level only: the
// clients say once when the cluster is lost and when it is back (kafka_link.h,
// record_producer.h), with errors through their error callbacks.
void RouteKafkaLogs(rd_kafka_conf_t* conf);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_KAFKA_CONF_H_
