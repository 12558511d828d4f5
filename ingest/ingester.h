// Ingest: Kafka in, event log out, exactly once.
//
// An `Ingester` is a member of a Kafka consumer group reading the readings, reports and
// devices topics. Each poll it decodes and validates a batch of records, sets the bad
// ones aside on the dead-letter topic, and appends the good ones together with the
// offsets consumed in ONE atomic write (`EventLog::AppendAll`). Kafka partition k of any
// input topic feeds log partition k.
//
// Exactly once
//   * The consumer's position lives in the log. On every partition assignment the
//     ingester seeks to the offset stored in the log (the beginning, if none is stored).
//     Offsets committed to Kafka are only for lag monitoring.
//   * A record is dead-lettered before the offsets that cover it are stored: after a
//     crash it may be dead-lettered twice (its headers name its source topic, partition
//     and offset, so consumers can drop the twin), but never lost.
//   * Readings: duplicates by (device id, reading id) are dropped and counted. A reading
//     is a duplicate when its id is among the last `dedupe_window` reading ids of its
//     device and that earlier reading is at most `dedupe_horizon` records before it in the
//     same readings partition (by Kafka offset). The ids are kept in memory (16 bytes
//     each) and rebuilt on start from every reading within the horizon of the stored
//     position, so the verdict is the same whether or not ingest restarted in between. A
//     duplicate beyond the window or the horizon is stored again.
//   * Reports and registrations are indexed streams, deduplicated by the log itself.
//   * If a stored offset lies below the partition's low watermark (records expired or
//     were dropped before they were ingested) the ingester stops with DATA_LOSS and says
//     which records are gone; it never skips silently. If it lies above the high
//     watermark (the topic was recreated, e.g. the embedded cluster restarted), it stops
//     with FAILED_PRECONDITION unless `accept_recreated_topics` is set, in which case it
//     logs a warning and starts the new topic from its beginning.
//
// Registrations first. On every assignment, a log partition whose devices-topic
// partition has records the log has not stored yet (up to the high watermark at the
// moment of assignment) takes its readings and reports only once those registrations
// are stored: a device registered before its readings were published is registered
// before its readings in the log, whichever topic the consumer would have fetched first.
//
// Validation time. A record's event time is checked against the record's own Kafka
// timestamp (the producer's CreateTime, or the broker's LogAppendTime), not against the
// time it happens to be consumed, so a record is accepted or dead-lettered the same way
// whenever it is read. Only a record without a timestamp is checked against the clock.
// A registration's event time is its record's timestamp too.
//
// Time. Stage time moves with the event times of what is stored, and with `ClockTick`s
// (stream `clock`), which the ingester appends to a log partition only when all of these
// hold: every input topic partition that feeds it is assigned and fully consumed (the
// stored next offset has reached the high watermark of the latest fetch: nothing is left
// to read in Kafka), nothing was stored to it for `clock_tick_interval`, and the tick's
// time, the clock minus `clock_tick_delay`, is later than every event time stored in the
// partition. A tick therefore never passes a record that was still waiting in Kafka, and
// a record that reaches Kafka less than `clock_tick_delay` after its event time never
// lands behind a tick that is later than it. (docs/determinism.md)
//
// Thread safety: `PollOnce` and `Run` from one thread; `Stop` and `Stats` from any.
#ifndef CITYOPS_INGEST_INGESTER_H_
#define CITYOPS_INGEST_INGESTER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ingest/kafka_link.h"
#include "ingest/record_decoder.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"

namespace cityops::ingest {

struct IngestTopics {
  std::string readings = "cityops.readings";
  std::string reports = "cityops.reports";
  std::string devices = "cityops.devices";
  std::string deadletter = "cityops.deadletter";
};

struct IngestOptions {
  std::string bootstrap_servers;
  std::string group_id = "cityops-ingest";
  IngestTopics topics;
  // Passed to librdkafka as they are, for consumer and dead-letter producer alike
  // (security.protocol, sasl.*, ssl.*, ...). They override cityops' own settings.
  std::vector<std::pair<std::string, std::string>> kafka_properties;
  // Passed to the consumer only, after kafka_properties (e.g. session.timeout.ms).
  std::vector<std::pair<std::string, std::string>> consumer_properties;
  size_t max_batch_records = 10000;  // Records per poll, at most.
  absl::Duration poll_timeout = absl::Milliseconds(100);
  absl::Duration fetch_wait = absl::Milliseconds(10);     // fetch.wait.max.ms
  absl::Duration clock_tick_interval = absl::Seconds(1);  // Zero: no ticks.
  // How far a tick's time stays behind the clock: the lateness a record may have (from
  // its event time to its arrival in Kafka) without landing behind a later tick.
  absl::Duration clock_tick_delay = absl::Seconds(2);
  size_t dedupe_window = 16;
  uint64_t dedupe_horizon = 1'000'000;  // Records of the readings partition.
  bool accept_recreated_topics = false;
  ValidationPolicy validation;
  const kernel::Clock* clock = kernel::Clock::Real();
};

// Cumulative counters since Create.
struct IngestStats {
  uint64_t records = 0;  // Records consumed, good or bad.
  uint64_t readings = 0;
  uint64_t reports = 0;
  uint64_t registrations = 0;
  uint64_t tombstones = 0;  // Null values on the compacted devices topic, skipped.
  uint64_t duplicates = 0;  // Dropped readings, and reports the log found twice.
  uint64_t unregistered_readings = 0;
  uint64_t dead_lettered = 0;
  std::map<std::string, uint64_t> dead_lettered_by_code;  // "INVALID_METRIC" -> n
  uint64_t clock_ticks = 0;
  uint64_t appends = 0;  // AppendAll calls that wrote.
  uint64_t rewinds = 0;  // Batches given back after a failure, to be consumed again.
};

// How far ingest is behind one assigned topic partition. While Kafka is unreachable
// (Ingester::link()) the high watermark is the one fetched before the loss, so `lag` is not
// the current lag: report it as unknown then, never as a number.
struct ConsumerLag {
  std::string topic;
  int32_t partition = 0;
  int64_t next_offset = 0;     // Stored in the log: everything before it is ingested.
  int64_t high_watermark = 0;  // Kafka's end of the partition, as last fetched (cached).
  int64_t lag = 0;             // high_watermark - next_offset, at least 0.
};

class Ingester {
 public:
  // Joins the group (asynchronously; the first poll completes the join). `log` must
  // outlive the ingester. INVALID_ARGUMENT for bad options or Kafka properties.
  static absl::StatusOr<std::unique_ptr<Ingester>> Create(kernel::EventLog* log,
                                                          IngestOptions options);
  // Leaves the group. Everything returned by PollOnce is already in the log.
  ~Ingester();
  Ingester(const Ingester&) = delete;
  Ingester& operator=(const Ingester&) = delete;

  // Consumes at most one batch (waiting up to `poll_timeout`), and stores it: returns
  // the number of records handled. On UNAVAILABLE (dead-letter topic or log not
  // writable) nothing of the batch is stored and its partitions are rewound: call
  // again. DATA_LOSS and FAILED_PRECONDITION are for an operator to look at.
  absl::StatusOr<size_t> PollOnce();

  // Polls until Stop() or an error that retrying cannot fix; transient errors are
  // logged and retried with backoff. Returns OK after Stop().
  absl::Status Run();
  void Stop();

  IngestStats Stats() const;

  // The partitions this member owns now, with their lag; empty before the group join
  // completes (the first polls) and after a revocation. Reads the stored positions from
  // the log and the watermarks librdkafka last fetched: no network round trip. From any
  // thread.
  absl::StatusOr<std::vector<ConsumerLag>> Lag() const;

  // Whether the consumer reaches its cluster (ingest/kafka_link.h). From any thread.
  const KafkaLink& link() const;

  // The number of partitions of the readings topic, from the cluster's metadata (not from
  // this member's assignment, which may cover only some of them). UNAVAILABLE if the
  // cluster does not answer within `timeout`, NOT_FOUND if the topic does not exist.
  // From any thread.
  absl::StatusOr<uint32_t> ReadingsPartitions(absl::Duration timeout) const;

 private:
  class Impl;
  explicit Ingester(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_INGESTER_H_
