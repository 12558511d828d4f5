// The ticket outbox: dispatch tickets (`TicketIssued` events) published from the log to
// the Kafka topic `cityops.tickets`, for the departments' systems.
//
// Contract for consumers
//   * Every ticket in the log is published, in log order per log partition; all tickets
//     of one case share a Kafka key (the case id) and so a Kafka partition, in order.
//   * Once. The outbox's position in each log partition is a stage checkpoint ("outbox")
//     stored in the log, and it moves only after Kafka acknowledged every ticket before
//     it. Whenever the outbox cannot know what got through since its checkpoint (at
//     start, after a crash between Kafka's acknowledgement and the checkpoint; after a
//     flush that failed halfway) it reads the tail of the topic (the newest
//     `tail_records` of each partition) and does not send again the tickets it finds
//     there. Within one run the idempotent producer neither doubles nor reorders. This
//     holds while the outbox is the topic's only writer; every record also carries a
//     `cityops-event-id` header ("<log partition>/<sequence>") for consumers that want
//     to check.
//   * Record: key = case id; value = the `cityops.v1.TicketIssued`, protobuf (or JSON by
//     the protobuf JSON mapping with `json`); headers `cityops-event-id`,
//     `cityops-ticket-id`, `cityops-case-id`, `content-type`.
//
// Reading. The outbox reads the whole log but parses only tickets: an event's stream id is
// the first field of its stored record, so every other event is skipped by a look at its
// first bytes.
#ifndef CITYOPS_PROJECTIONS_TICKET_OUTBOX_H_
#define CITYOPS_PROJECTIONS_TICKET_OUTBOX_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ingest/record_producer.h"
#include "kernel/event_log.h"

namespace cityops::projections {

inline constexpr char kOutboxCheckpoint[] = "outbox";

struct OutboxOptions {
  kernel::EventLog* log = nullptr;
  std::string bootstrap_servers;
  std::string topic = "cityops.tickets";
  // Passed to librdkafka as they are (security.protocol, sasl.*, ssl.*, ...).
  std::vector<std::pair<std::string, std::string>> kafka_properties;
  bool json = false;
  size_t max_events = 100'000;  // Log events examined per partition and poll, at most.
  absl::Duration flush_timeout = absl::Seconds(30);
  absl::Duration idle_wait = absl::Milliseconds(50);
  // Records read back from each partition of the topic when the outbox must learn what it
  // already published (see above). At least the tickets one poll can publish.
  size_t tail_records = 100'000;
  // Tests only: publish but do not store the checkpoint (a crash at the worst moment).
  bool skip_checkpoint = false;
};

struct OutboxStats {
  uint64_t published = 0;        // Tickets acknowledged by Kafka since Create.
  uint64_t found_published = 0;  // Tickets past the checkpoint found on the topic, not resent.
  uint64_t polls = 0;
};

class TicketOutbox {
 public:
  static absl::StatusOr<std::unique_ptr<TicketOutbox>> Create(const OutboxOptions& options);

  // Publishes the tickets appended since the stored checkpoints, waits for Kafka to
  // acknowledge them, then stores the new checkpoints. Returns the tickets published.
  // UNAVAILABLE (nothing stored) if Kafka did not acknowledge them all: call again.
  absl::StatusOr<size_t> PollOnce();
  // Polls until Stop(); transient Kafka errors are retried.
  absl::Status Run();
  void Stop();
  OutboxStats Stats() const;

 private:
  explicit TicketOutbox(const OutboxOptions& options) : options_(options) {}
  OutboxOptions options_;
  std::unique_ptr<ingest::RecordProducer> producer_;
  // Event ids found on the topic's tail, when the outbox had lost track (PollOnce only).
  bool lost_track_ = true;
  absl::flat_hash_set<std::string> on_topic_;
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  OutboxStats stats_ ABSL_GUARDED_BY(mu_);
};

// True if the stored event record `value` is on a stream starting with `prefix`, by its
// first field (the stream id); false if the record does not start with it.
bool StoredStreamStartsWith(std::string_view value, std::string_view prefix);

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_TICKET_OUTBOX_H_
