// cityops' one Kafka producer: idempotent, keyed, murmur2-partitioned like Kafka's Java
// clients, LZ4-compressed. Used for dead letters, the ticket outbox, `cityops publish` and
// the simulator.
//
// Errors are logged as they happen, not when the producer next sends or flushes: a thread
// of its own serves librdkafka's delivery reports and errors. A record Kafka did not
// acknowledge is logged at once (the first of a run of failures; then a count every 10 s);
// a client error (all brokers down, a broker's connection, ...) once while records wait to
// be sent (with none waiting it costs nothing, and brokers close idle connections: debug
// level); and the first acknowledgement after such trouble says it is over.
//
// Thread safety: Produce and Flush from one thread at a time; counters from any.
#ifndef CITYOPS_INGEST_RECORD_PRODUCER_H_
#define CITYOPS_INGEST_RECORD_PRODUCER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
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
  // `properties` go to librdkafka after cityops' defaults and override them. `client`
  // names the producer in log lines ("ticket outbox"). INVALID_ARGUMENT naming a refused
  // property.
  static absl::StatusOr<std::unique_ptr<RecordProducer>> Create(
      const std::string& bootstrap_servers,
      const std::vector<std::pair<std::string, std::string>>& properties = {},
      std::string client = "producer");
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
  RecordProducer(std::string client, std::string bootstrap);
  void OnDelivery(bool ok, std::string_view topic, std::string_view error);
  void OnError(int err, std::string_view reason, int queued);

  const std::string client_;
  const std::string bootstrap_;
  struct Handle;
  std::unique_ptr<Handle> handle_;
  std::thread poller_;  // Serves delivery reports and errors until stop_polling_.
  std::atomic<bool> stop_polling_{false};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
  uint64_t failed_at_last_flush_ = 0;
  mutable absl::Mutex error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(error_mu_);
  // Trouble: errors or failed deliveries logged and no acknowledgement since.
  bool troubled_ ABSL_GUARDED_BY(error_mu_) = false;
  absl::Time troubled_since_ ABSL_GUARDED_BY(error_mu_);
  // A run of failed deliveries: how many in all, how many not logged yet, when last logged.
  bool failing_ ABSL_GUARDED_BY(error_mu_) = false;
  uint64_t run_failures_ ABSL_GUARDED_BY(error_mu_) = 0;
  uint64_t unlogged_failures_ ABSL_GUARDED_BY(error_mu_) = 0;
  absl::Time last_failure_log_ ABSL_GUARDED_BY(error_mu_);
  // Client errors logged since the last acknowledgement (each code once).
  std::vector<int> logged_errors_ ABSL_GUARDED_BY(error_mu_);
  friend struct RecordProducerCallbacks;
};

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_RECORD_PRODUCER_H_
