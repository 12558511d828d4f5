// cityops' one Kafka producer: idempotent, keyed, murmur2-partitioned like Kafka's Java
// clients, LZ4-compressed. Used for dead letters, `cityops publish` and the simulator.
//
// Thread safety: Produce and Flush from one thread at a time; counters from any.
#ifndef CITYOPS_INGEST_RECORD_PRODUCER_H_
#define CITYOPS_INGEST_RECORD_PRODUCER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cityops::ingest {

struct Header {
  std::string name;
  std::string value;
};

class RecordProducer {
 public:
  // `properties` go to librdkafka after cityops' defaults and override them.
  // INVALID_ARGUMENT naming a refused property.
  static absl::StatusOr<std::unique_ptr<RecordProducer>> Create(
      const std::string& bootstrap_servers,
      const std::vector<std::pair<std::string, std::string>>& properties = {});
  // Waits up to 10 s for records in flight, then drops them.
  ~RecordProducer();
  RecordProducer(const RecordProducer&) = delete;
  RecordProducer& operator=(const RecordProducer&) = delete;

  // Queues a copy of the record. `partition` -1 chooses by key (murmur2). `timestamp`
  // is the record's CreateTime; InfinitePast lets librdkafka stamp the wall clock (a
  // simulator publishing in simulated time passes its own). Waits while the local queue
  // is full. Errors only for records librdkafka refuses outright (e.g. larger than
  // message.max.bytes), naming the topic and key.
  absl::Status Produce(std::string_view topic, std::string_view key, std::string_view value,
                       const std::vector<Header>& headers = {}, int32_t partition = -1,
                       absl::Time timestamp = absl::InfinitePast());

  // Waits until every queued record is acknowledged. UNAVAILABLE if some were not
  // within `timeout` or failed since the last Flush, with the count and the last error.
  absl::Status Flush(absl::Duration timeout);

  uint64_t delivered() const { return delivered_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  RecordProducer() = default;
  struct Handle;
  std::unique_ptr<Handle> handle_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
  uint64_t failed_at_last_flush_ = 0;
  mutable absl::Mutex error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(error_mu_);
  friend struct RecordProducerCallbacks;
};

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_RECORD_PRODUCER_H_
