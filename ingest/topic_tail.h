// Reading back the tail of a topic: what a writer that lost track (a crash between Kafka's
// acknowledgement and its own checkpoint, a flush that failed halfway) needs in order to
// learn what it already published, instead of publishing it again.
#ifndef CITYOPS_INGEST_TOPIC_TAIL_H_
#define CITYOPS_INGEST_TOPIC_TAIL_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cityops::ingest {

struct TopicTailOptions {
  std::string bootstrap_servers;
  // Passed to librdkafka as they are (security.protocol, sasl.*, ssl.*, ...).
  std::vector<std::pair<std::string, std::string>> kafka_properties;
  std::string topic;
  std::string header;              // The header whose values to collect, e.g. "cityops-event-id".
  size_t per_partition = 100'000;  // The newest records of each partition, at most.
  absl::Duration timeout = absl::Seconds(10);
};

// The values of `header` in the newest records of every partition of `topic` (up to its
// high watermark as of the call), in no particular order. A topic that does not exist yet
// has no tail: an empty list. UNAVAILABLE when Kafka cannot be read within the timeout.
// No consumer group is joined and no offset is committed.
absl::StatusOr<std::vector<std::string>> ReadHeaderValuesAtTail(const TopicTailOptions& options);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_TOPIC_TAIL_H_
