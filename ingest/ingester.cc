#include "ingest/ingester.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <string_view>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "ingest/device_import.h"
#include "ingest/envelope.h"
#include "ingest/kafka_conf.h"
#include "ingest/record_producer.h"
#include "kernel/proto_time.h"
#include "spdlog/spdlog.h"

namespace cityops::ingest {
namespace {

using kernel::KafkaOffset;
using kernel::Partition;

// Dead-letter headers, added to the record's own headers. Part of the topic contract
// (proto/README.md): never rename.
constexpr char kHeaderErrorCode[] = "cityops-error-code";
constexpr char kHeaderErrorMessage[] = "cityops-error-message";
constexpr char kHeaderSourceTopic[] = "cityops-source-topic";
constexpr char kHeaderSourcePartition[] = "cityops-source-partition";
constexpr char kHeaderSourceOffset[] = "cityops-source-offset";
// Set (to the original size) when a record too large to forward keeps only its head.
constexpr char kHeaderValueTruncated[] = "cityops-value-truncated";
constexpr size_t kDeadLetterKeptBytes = 64 * 1024;

constexpr std::string_view kRegistryStreamPrefix = "registry/";
constexpr std::string_view kCaseStreamPrefix = "case/";
constexpr std::string_view kClockStream = "clock";
constexpr std::string_view kClockStage = "ingest.clock";

int ToMillis(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

std::string_view HeaderValue(rd_kafka_headers_t* headers, const char* name) {
  if (headers == nullptr) return {};
  const void* value = nullptr;
  size_t size = 0;
  if (rd_kafka_header_get_last(headers, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      value == nullptr) {
    return {};
  }
  return std::string_view(static_cast<const char*>(value), size);
}

// The last reading ids of one device, as hashes with the Kafka offset each came from, in
// a ring.
struct ReadingWindow {
  std::vector<std::pair<uint64_t, int64_t>> ids;
  uint32_t next = 0;
};

struct TopicPartitionKey {
  std::string topic;
  int32_t partition;
  bool operator==(const TopicPartitionKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const TopicPartitionKey& k) {
    return H::combine(std::move(h), k.topic, k.partition);
  }
};

}  // namespace

class Ingester::Impl {
 public:
  Impl(kernel::EventLog* log, IngestOptions options)
      : log_(log),
        options_(std::move(options)),
        link_("ingest", options_.bootstrap_servers, "ingest paused, readings wait in Kafka",
              absl::Now()) {}

  ~Impl() {
    if (queue_ != nullptr) rd_kafka_queue_destroy(queue_);
    if (consumer_ != nullptr) {
      rd_kafka_consumer_close(consumer_);
      rd_kafka_destroy(consumer_);
    }
  }

  absl::Status Init() {
    if (absl::Status s = RebuildMemory(); !s.ok()) return s;
    absl::StatusOr<std::unique_ptr<RecordProducer>> producer = RecordProducer::Create(
        options_.bootstrap_servers, options_.kafka_properties, "dead-letter producer");
    if (!producer.ok()) return producer.status();
    deadletters_ = std::move(*producer);
    return CreateConsumer();
  }

  absl::StatusOr<size_t> PollOnce();
  absl::Status Run();
  void Stop() { stop_.store(true); }
  IngestStats Stats() const {
    absl::MutexLock lock(&stats_mu_);
    return stats_;
  }
  absl::StatusOr<std::vector<ConsumerLag>> Lag() const;
  absl::StatusOr<uint32_t> ReadingsPartitions(absl::Duration timeout) const;
  const KafkaLink& link() const { return link_; }

 private:
  // One poll's worth of work before it is stored.
  struct Pending {
    absl::flat_hash_map<TopicPartitionKey, int64_t> next_offsets;
    // (device hash, reading hash, Kafka offset) of the readings this poll stores.
    std::vector<std::tuple<uint64_t, uint64_t, int64_t>> new_reading_ids;
    absl::flat_hash_map<std::pair<uint64_t, uint64_t>, int64_t> seen;  // -> offset
    std::vector<std::string> new_devices;
    // The latest event time of what this poll stores, by log partition.
    absl::flat_hash_map<uint32_t, absl::Time> latest_time;
    IngestStats delta;
  };

  // The batch of `partition` for this poll. Batches are kept and reused across polls,
  // so that events are refilled in place rather than allocated and freed.
  kernel::AppendBatch& BatchFor(uint32_t partition) {
    auto [slot, added] = batch_slots_.try_emplace(partition, batches_.size());
    if (added) batches_.emplace_back(Partition(partition));
    return batches_[slot->second];
  }
  absl::Status RebuildMemory();
  absl::Status CreateConsumer();
  static void RebalanceCallback(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t* partitions, void* opaque);
  // Served inside PollOnce's consume call, like the rebalance callback; they feed link_.
  static int StatisticsCallback(rd_kafka_t*, char* json, size_t json_len, void* opaque) {
    static_cast<Impl*>(opaque)->link_.OnStatistics(std::string_view(json, json_len), absl::Now());
    return 0;  // librdkafka frees json.
  }
  static void ErrorCallback(rd_kafka_t*, int err, const char* reason, void* opaque) {
    static_cast<Impl*>(opaque)->link_.OnError(err, reason, absl::Now());
  }
  void OnAssign(rd_kafka_topic_partition_list_t* partitions);
  absl::Status SetStoredOffsets(rd_kafka_topic_partition_list_t* partitions);
  // True for a readings or reports partition held back until its registrations are in.
  bool Deferred(const TopicPartitionKey& tp) const;
  // The assigned partitions that are not deferred, as a new list (the caller destroys it).
  rd_kafka_topic_partition_list_t* ActiveList() const;
  // Fetches every assigned partition that is not deferred, from its stored offset.
  absl::Status AssignActive();
  // Takes the readings and reports of partitions whose registrations are now stored.
  absl::Status ReleaseRegistered();
  // Nothing of log partition `partition` is left to read in Kafka (as of the last fetch).
  bool CaughtUp(uint32_t partition) const;
  // The next offset of `tp` that the log has everything before (-1 if unknown).
  int64_t ConsumedNext(const TopicPartitionKey& tp) const;
  absl::Status Rewind();
  void Handle(const rd_kafka_message_t* msg, Pending& pending);
  void DeadLetter(const rd_kafka_message_t* msg, const Rejection& why, Pending& pending);
  absl::Status FlushDeadLetters(size_t count);
  absl::Status Store(Pending& pending);
  absl::Status TickQuietPartitions();
  // True if `reading` of `device`, at `offset` of its readings partition, repeats one of
  // the device's remembered readings at most `dedupe_horizon` records earlier.
  bool IsDuplicate(uint64_t device, uint64_t reading, int64_t offset, const Pending& pending) const;
  bool WithinHorizon(int64_t earlier, int64_t offset) const {
    return earlier <= offset && static_cast<uint64_t>(offset - earlier) <= options_.dedupe_horizon;
  }
  void Remember(uint64_t device, uint64_t reading, int64_t offset);
  // The first sequence of `partition` from which a scan meets every reading at most
  // `dedupe_horizon` records before the stored position of its readings partition.
  absl::StatusOr<kernel::Sequence> HorizonStart(Partition partition) const;
  bool IsRegistered(const std::string& device_id, const Pending& pending) const;

  kernel::EventLog* const log_;
  const IngestOptions options_;
  rd_kafka_t* consumer_ = nullptr;
  rd_kafka_queue_t* queue_ = nullptr;
  std::unique_ptr<RecordProducer> deadletters_;
  std::atomic<bool> stop_{false};
  // Wall time, not options_.clock: an outage is measured in real seconds, also in a demo.
  KafkaLink link_;

  // Set by the rebalance callback (which runs inside PollOnce's consume call).
  absl::Status assignment_error_;
  std::vector<TopicPartitionKey> assigned_;
  // A copy of assigned_ for Lag(), which other threads call.
  mutable absl::Mutex assigned_mu_;
  std::vector<TopicPartitionKey> assigned_copy_ ABSL_GUARDED_BY(assigned_mu_);
  absl::flat_hash_map<uint32_t, absl::Time> last_activity_;  // Readings partitions.
  // The next offset the log has stored of each assigned topic partition.
  absl::flat_hash_map<TopicPartitionKey, int64_t> stored_next_;
  // High watermarks read at assignment, for partitions not fetched yet. Guarded because
  // Lag() reads it.
  absl::flat_hash_map<TopicPartitionKey, int64_t> assigned_high_ ABSL_GUARDED_BY(assigned_mu_);
  // Log partitions whose readings and reports wait until the registrations on the
  // devices topic up to this offset are stored.
  absl::flat_hash_map<uint32_t, int64_t> registrations_pending_;
  // The latest event time stored in each log partition (readings, reports, ticks): a
  // tick must be later than it to move anything.
  absl::flat_hash_map<uint32_t, absl::Time> latest_time_;

  // A dead letter the producer refused outright (fails the batch at flush).
  absl::Status refused_;

  std::vector<kernel::AppendBatch> batches_;  // One per log partition seen.
  absl::flat_hash_map<uint32_t, size_t> batch_slots_;
  absl::flat_hash_map<uint64_t, ReadingWindow> windows_;
  absl::flat_hash_set<std::string> registered_;
  absl::Hash<std::string_view> hash_;
  std::vector<rd_kafka_message_t*> messages_;
  v1::SensorReading reading_;  // Reused decode targets.
  v1::CitizenReport report_;
  v1::DeviceRegistered device_;

  mutable absl::Mutex stats_mu_;
  IngestStats stats_ ABSL_GUARDED_BY(stats_mu_);
};

absl::Status Ingester::Impl::RebuildMemory() {
  // Registered devices, from the stream index: no log scan needed.
  absl::Status s =
      log_->ListStreams(kRegistryStreamPrefix, [&](std::string_view id, kernel::StreamVersion) {
        registered_.emplace(id.substr(kRegistryStreamPrefix.size()));
        return true;
      });
  if (!s.ok()) return s;
  // Recent reading ids: every reading within the horizon of each partition's stored
  // position, exactly what a process that never stopped would remember.
  v1::Event event;
  for (Partition p : log_->Partitions()) {
    absl::StatusOr<kernel::Sequence> from = HorizonStart(p);
    if (!from.ok()) return from.status();
    absl::StatusOr<std::optional<KafkaOffset>> stored =
        log_->StoredSourcePosition(options_.topics.readings, static_cast<int32_t>(p.value()));
    if (!stored.ok()) return stored.status();
    const int64_t next = stored->has_value() ? (*stored)->value() : 0;
    absl::Status parse;
    s = log_->Scan(p, *from, [&](kernel::Sequence seq, std::string_view value) {
      parse = kernel::EventLog::ParseEvent({p, seq}, value, &event);
      if (!parse.ok()) return false;
      if (event.has_reading() && event.provenance().kafka().topic() == options_.topics.readings &&
          WithinHorizon(event.provenance().kafka().offset(), next)) {
        Remember(hash_(event.reading().device_id()), hash_(event.reading().reading_id()),
                 event.provenance().kafka().offset());
      }
      if (event.has_reading() || event.has_case_reported() || event.has_clock_tick()) {
        absl::Time& latest =
            latest_time_.try_emplace(p.value(), absl::InfinitePast()).first->second;
        latest = std::max(latest, kernel::FromTimestamp(event.event_time()));
      }
      return true;
    });
    if (!s.ok()) return s;
    if (!parse.ok()) return parse;
  }
  spdlog::info("ingest: {} registered devices, reading-id windows of {} devices rebuilt",
               registered_.size(), windows_.size());
  return absl::OkStatus();
}

absl::Status Ingester::Impl::CreateConsumer() {
  const KafkaProperties defaults = {
      {"bootstrap.servers", options_.bootstrap_servers},
      {"group.id", options_.group_id},
      // The position lives in the log: Kafka's committed offsets are for lag only.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      // Never skip silently: an out-of-range position is an error we report.
      {"auto.offset.reset", "error"},
      {"enable.partition.eof", "false"},
      {"fetch.wait.max.ms", std::to_string(ToMillis(options_.fetch_wait))},
      {"queued.min.messages", "100000"},
  };
  // Last, so that no property turns it off: link_ (ingest/kafka_link.h) learns from the
  // statistics whether a broker answers.
  const KafkaProperties watched = {{"statistics.interval.ms", KafkaLink::kStatisticsIntervalMs}};
  absl::StatusOr<rd_kafka_conf_t*> made = NewKafkaConf(
      {&defaults, &options_.kafka_properties, &options_.consumer_properties, &watched});
  if (!made.ok()) return made.status();
  rd_kafka_conf_t* conf = *made;
  rd_kafka_conf_set_rebalance_cb(conf, &Impl::RebalanceCallback);
  rd_kafka_conf_set_stats_cb(conf, &Impl::StatisticsCallback);
  rd_kafka_conf_set_error_cb(conf, &Impl::ErrorCallback);
  RouteKafkaLogs(conf);
  rd_kafka_conf_set_opaque(conf, this);
  char errstr[512];
  consumer_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (consumer_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("cannot create the consumer: %s", errstr));
  }
  rd_kafka_poll_set_consumer(consumer_);
  queue_ = rd_kafka_queue_get_consumer(consumer_);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(3);
  for (const std::string* t :
       {&options_.topics.readings, &options_.topics.reports, &options_.topics.devices}) {
    if (!t->empty()) rd_kafka_topic_partition_list_add(topics, t->c_str(), RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer_, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot subscribe to the input topics: %s", rd_kafka_err2str(err)));
  }
  return absl::OkStatus();
}

void Ingester::Impl::RebalanceCallback(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                                       rd_kafka_topic_partition_list_t* partitions, void* opaque) {
  auto* self = static_cast<Impl*>(opaque);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    self->OnAssign(partitions);
    return;
  }
  // Revoked (or an error): nothing is in flight between polls, so just let go.
  spdlog::info("ingest: partitions revoked ({})", rd_kafka_err2str(err));
  rd_kafka_assign(rk, nullptr);
  self->assigned_.clear();
  self->last_activity_.clear();
  self->registrations_pending_.clear();
  absl::MutexLock lock(&self->assigned_mu_);
  self->assigned_copy_.clear();
  self->assigned_high_.clear();
}

void Ingester::Impl::OnAssign(rd_kafka_topic_partition_list_t* partitions) {
  absl::Status s = SetStoredOffsets(partitions);
  if (!s.ok()) {
    spdlog::error("ingest: {}", s.ToString());
    assignment_error_ = s;
    rd_kafka_assign(consumer_, nullptr);
    return;
  }
  assigned_.clear();
  registrations_pending_.clear();
  const absl::Time now = options_.clock->Now();
  for (int i = 0; i < partitions->cnt; ++i) {
    const rd_kafka_topic_partition_t& tp = partitions->elems[i];
    assigned_.push_back({tp.topic, tp.partition});
    if (tp.topic == options_.topics.readings) last_activity_[tp.partition] = now;
    spdlog::info("ingest: assigned {}/{} from offset {}", tp.topic, tp.partition,
                 tp.offset == RD_KAFKA_OFFSET_BEGINNING ? std::string("beginning")
                                                        : std::to_string(tp.offset));
  }
  {
    absl::MutexLock lock(&assigned_mu_);
    assigned_copy_ = assigned_;
    // Registrations first: a devices partition with records the log has not stored holds
    // back the readings and reports of its log partition until they are stored.
    for (const TopicPartitionKey& tp : assigned_) {
      if (tp.topic != options_.topics.devices) continue;
      const int64_t high = assigned_high_[tp];
      if (stored_next_[tp] < high) {
        registrations_pending_[static_cast<uint32_t>(tp.partition)] = high;
        spdlog::info(
            "ingest: log partition {} takes readings and reports once the registrations on "
            "{}/{} up to offset {} are stored",
            tp.partition, tp.topic, tp.partition, high);
      }
    }
  }
  // The offsets are set: assign what may be fetched now.
  rd_kafka_topic_partition_list_t* active = rd_kafka_topic_partition_list_new(partitions->cnt);
  for (int i = 0; i < partitions->cnt; ++i) {
    const rd_kafka_topic_partition_t& tp = partitions->elems[i];
    if (Deferred({tp.topic, tp.partition})) continue;
    rd_kafka_topic_partition_list_add(active, tp.topic, tp.partition)->offset = tp.offset;
  }
  rd_kafka_resp_err_t err = rd_kafka_assign(consumer_, active);
  rd_kafka_topic_partition_list_destroy(active);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    assignment_error_ = absl::UnavailableError(
        absl::StrFormat("cannot take the assigned partitions: %s", rd_kafka_err2str(err)));
  }
}

bool Ingester::Impl::Deferred(const TopicPartitionKey& tp) const {
  return tp.topic != options_.topics.devices &&
         registrations_pending_.contains(static_cast<uint32_t>(tp.partition));
}

rd_kafka_topic_partition_list_t* Ingester::Impl::ActiveList() const {
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(assigned_.size()));
  for (const TopicPartitionKey& tp : assigned_) {
    if (!Deferred(tp)) rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition);
  }
  return list;
}

absl::Status Ingester::Impl::AssignActive() {
  rd_kafka_topic_partition_list_t* list = ActiveList();
  absl::Status s = SetStoredOffsets(list);
  if (s.ok()) {
    rd_kafka_resp_err_t err = rd_kafka_assign(consumer_, list);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      s = absl::UnavailableError(
          absl::StrFormat("cannot take the assigned partitions: %s", rd_kafka_err2str(err)));
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  return s;
}

int64_t Ingester::Impl::ConsumedNext(const TopicPartitionKey& tp) const {
  auto stored = stored_next_.find(tp);
  int64_t next = stored == stored_next_.end() ? -1 : stored->second;
  // The consumer's position also moves past records it never hands out (transaction
  // markers); everything it handed out is stored by now.
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition);
  if (rd_kafka_position(consumer_, list) == RD_KAFKA_RESP_ERR_NO_ERROR &&
      list->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && list->elems[0].offset >= 0 && next >= 0) {
    next = std::max(next, list->elems[0].offset);
  }
  rd_kafka_topic_partition_list_destroy(list);
  return next;
}

absl::Status Ingester::Impl::ReleaseRegistered() {
  bool released = false;
  for (auto it = registrations_pending_.begin(); it != registrations_pending_.end();) {
    const int64_t consumed =
        ConsumedNext({options_.topics.devices, static_cast<int32_t>(it->first)});
    if (consumed < it->second) {
      ++it;
      continue;
    }
    spdlog::info(
        "ingest: registrations of log partition {} stored up to offset {}; taking its "
        "readings and reports",
        it->first, consumed);
    registrations_pending_.erase(it++);
    released = true;
  }
  return released ? AssignActive() : absl::OkStatus();
}

bool Ingester::Impl::CaughtUp(uint32_t partition) const {
  if (registrations_pending_.contains(partition)) return false;
  bool any = false;
  for (const TopicPartitionKey& tp : assigned_) {
    if (static_cast<uint32_t>(tp.partition) != partition) continue;
    any = true;
    const int64_t consumed = ConsumedNext(tp);
    if (consumed < 0) return false;
    int64_t low = 0;
    int64_t high = 0;
    // As of the latest fetch response (-1 before the first): no network round trip.
    if (rd_kafka_get_watermark_offsets(consumer_, tp.topic.c_str(), tp.partition, &low, &high) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        high < 0 || consumed < high) {
      return false;
    }
  }
  return any;
}

absl::StatusOr<std::vector<ConsumerLag>> Ingester::Impl::Lag() const {
  std::vector<TopicPartitionKey> assigned;
  absl::flat_hash_map<TopicPartitionKey, int64_t> assigned_high;
  {
    absl::MutexLock lock(&assigned_mu_);
    assigned = assigned_copy_;
    assigned_high = assigned_high_;
  }
  std::vector<ConsumerLag> out;
  out.reserve(assigned.size());
  for (const TopicPartitionKey& tp : assigned) {
    ConsumerLag lag;
    lag.topic = tp.topic;
    lag.partition = tp.partition;
    absl::StatusOr<std::optional<KafkaOffset>> stored =
        log_->StoredSourcePosition(tp.topic, tp.partition);
    if (!stored.ok()) return stored.status();
    int64_t low = 0;
    int64_t high = 0;
    // Cached from the last fetch; -1 (RD_KAFKA_OFFSET_INVALID) before the first one.
    rd_kafka_get_watermark_offsets(consumer_, tp.topic.c_str(), tp.partition, &low, &high);
    lag.next_offset = stored->has_value() ? (*stored)->value() : std::max<int64_t>(low, 0);
    // Not fetched yet (a partition held back for its registrations, or before the first
    // fetch): the end read at assignment.
    auto at_assign = assigned_high.find(tp);
    if (at_assign != assigned_high.end()) high = std::max(high, at_assign->second);
    lag.high_watermark = std::max<int64_t>(high, 0);
    lag.lag = std::max<int64_t>(0, lag.high_watermark - lag.next_offset);
    out.push_back(std::move(lag));
  }
  std::sort(out.begin(), out.end(), [](const ConsumerLag& a, const ConsumerLag& b) {
    return std::tie(a.topic, a.partition) < std::tie(b.topic, b.partition);
  });
  return out;
}

absl::StatusOr<uint32_t> Ingester::Impl::ReadingsPartitions(absl::Duration timeout) const {
  rd_kafka_topic_t* topic =
      rd_kafka_topic_new(consumer_, options_.topics.readings.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(consumer_, 0, topic, &metadata, ToMillis(timeout));
  rd_kafka_topic_destroy(topic);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(absl::StrFormat("cannot read the metadata of %s: %s",
                                                  options_.topics.readings, rd_kafka_err2str(err)));
  }
  int partitions = 0;
  rd_kafka_resp_err_t topic_err = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
  if (metadata->topic_cnt == 1) {
    topic_err = metadata->topics[0].err;
    partitions = metadata->topics[0].partition_cnt;
  }
  rd_kafka_metadata_destroy(metadata);
  if (topic_err != RD_KAFKA_RESP_ERR_NO_ERROR || partitions <= 0) {
    return absl::NotFoundError(absl::StrFormat(
        "the readings topic %s has no partitions (%s): create it with the partition count the "
        "city needs",
        options_.topics.readings, rd_kafka_err2str(topic_err)));
  }
  return static_cast<uint32_t>(partitions);
}

// Sets each partition's offset to the one stored in the log, checking it against the
// partition's watermarks.
absl::Status Ingester::Impl::SetStoredOffsets(rd_kafka_topic_partition_list_t* partitions) {
  for (int i = 0; i < partitions->cnt; ++i) {
    rd_kafka_topic_partition_t& tp = partitions->elems[i];
    absl::StatusOr<std::optional<KafkaOffset>> stored =
        log_->StoredSourcePosition(tp.topic, tp.partition);
    if (!stored.ok()) return stored.status();
    int64_t low = 0;
    int64_t high = 0;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(consumer_, tp.topic, tp.partition, &low, &high, 10000);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return absl::UnavailableError(absl::StrFormat("cannot read the watermarks of %s/%d: %s",
                                                    tp.topic, tp.partition, rd_kafka_err2str(err)));
    }
    {
      absl::MutexLock lock(&assigned_mu_);
      assigned_high_[{tp.topic, tp.partition}] = high;
    }
    if (!stored->has_value()) {
      stored_next_[{tp.topic, tp.partition}] = low;
      if (low > 0) {
        spdlog::warn(
            "ingest: {}/{} starts at offset {}: records before it expired before cityops first "
            "read this partition",
            tp.topic, tp.partition, low);
      }
      tp.offset = RD_KAFKA_OFFSET_BEGINNING;
      continue;
    }
    const int64_t offset = (*stored)->value();
    if (offset < low) {
      return absl::DataLossError(absl::StrFormat(
          "%s/%d: the log has consumed up to offset %d, but the topic now starts at offset %d; "
          "records %d..%d were deleted (retention) before cityops stored them and are lost. "
          "Ingest stops here. Restore them, or accept the loss with `cityops log set-position` "
          "(OPERATIONS.md, 'When ingest stops with DATA_LOSS')",
          tp.topic, tp.partition, offset, low, offset, low - 1));
    }
    if (offset > high) {
      if (!options_.accept_recreated_topics) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s/%d: the log has consumed up to offset %d, but the topic ends at offset %d: the "
            "topic was deleted and recreated, or its leader lost data. Ingest stops here "
            "rather than skip records; once you know which records are new, set the position "
            "with `cityops log set-position` (OPERATIONS.md)",
            tp.topic, tp.partition, offset, high));
      }
      spdlog::warn(
          "ingest: {}/{} was recreated (stored offset {} is past its end {}); reading the new "
          "topic from its beginning",
          tp.topic, tp.partition, offset, high);
      stored_next_[{tp.topic, tp.partition}] = low;
      tp.offset = RD_KAFKA_OFFSET_BEGINNING;
      continue;
    }
    stored_next_[{tp.topic, tp.partition}] = offset;
    tp.offset = offset;
  }
  return absl::OkStatus();
}

// Gives back what was fetched but not stored: every assigned partition goes back to
// its stored position.
absl::Status Ingester::Impl::Rewind() {
  if (assigned_.empty()) return absl::OkStatus();
  rd_kafka_topic_partition_list_t* list = ActiveList();
  absl::Status s = SetStoredOffsets(list);
  if (s.ok()) {
    rd_kafka_error_t* error = rd_kafka_seek_partitions(consumer_, list, 10000);
    if (error != nullptr) {
      s = absl::UnavailableError(
          absl::StrFormat("cannot rewind the consumer: %s", rd_kafka_error_string(error)));
      rd_kafka_error_destroy(error);
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  absl::MutexLock lock(&stats_mu_);
  ++stats_.rewinds;
  return s;
}

absl::StatusOr<kernel::Sequence> Ingester::Impl::HorizonStart(Partition partition) const {
  absl::StatusOr<std::optional<KafkaOffset>> stored =
      log_->StoredSourcePosition(options_.topics.readings, static_cast<int32_t>(partition.value()));
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return kernel::Sequence(0);
  const int64_t next = (*stored)->value();
  const uint64_t end = log_->NextSequence(partition).value();
  // Every reading takes at least one sequence, so the horizon's readings lie within the
  // last `dedupe_horizon` sequences only if nothing else was appended between them: go
  // back further until the first reading met is older than the horizon (readings of one
  // partition are in offset order).
  uint64_t back = std::max<uint64_t>(options_.dedupe_horizon, 1);
  for (;;) {
    const uint64_t start = end > back ? end - back : 0;
    if (start == 0) return kernel::Sequence(0);
    std::optional<int64_t> first_offset;
    absl::Status scanned = log_->Scan(
        partition, kernel::Sequence(start), [&](kernel::Sequence, std::string_view value) {
          v1::Event e;
          if (!kernel::EventLog::ParseEvent({partition, kernel::Sequence(0)}, value, &e).ok()) {
            return false;
          }
          if (e.has_reading() && e.provenance().kafka().topic() == options_.topics.readings) {
            first_offset = e.provenance().kafka().offset();
            return false;
          }
          return true;
        });
    if (!scanned.ok()) return scanned;
    // Readings before `start` are older than the first one met: done once that one is
    // at the horizon's edge or beyond it.
    if (first_offset.has_value() &&
        (!WithinHorizon(*first_offset, next) ||
         *first_offset == next - static_cast<int64_t>(options_.dedupe_horizon))) {
      return kernel::Sequence(start);
    }
    back *= 2;
  }
}

bool Ingester::Impl::IsDuplicate(uint64_t device, uint64_t reading, int64_t offset,
                                 const Pending& pending) const {
  if (auto seen = pending.seen.find({device, reading});
      seen != pending.seen.end() && WithinHorizon(seen->second, offset)) {
    return true;
  }
  auto it = windows_.find(device);
  if (it == windows_.end()) return false;
  for (const auto& [id, earlier] : it->second.ids) {
    if (id == reading && WithinHorizon(earlier, offset)) return true;
  }
  return false;
}

void Ingester::Impl::Remember(uint64_t device, uint64_t reading, int64_t offset) {
  if (options_.dedupe_window == 0) return;
  ReadingWindow& w = windows_[device];
  if (w.ids.size() < options_.dedupe_window) {
    w.ids.emplace_back(reading, offset);
    return;
  }
  w.ids[w.next] = {reading, offset};
  w.next = static_cast<uint32_t>((w.next + 1) % w.ids.size());
}

bool Ingester::Impl::IsRegistered(const std::string& device_id, const Pending& pending) const {
  return registered_.contains(device_id) ||
         std::find(pending.new_devices.begin(), pending.new_devices.end(), device_id) !=
             pending.new_devices.end();
}

void Ingester::Impl::DeadLetter(const rd_kafka_message_t* msg, const Rejection& why,
                                Pending& pending) {
  const std::string code(RejectCodeName(why.code));
  const std::string topic = rd_kafka_topic_name(msg->rkt);
  // The record's own headers first, then ours.
  std::vector<Header> headers;
  rd_kafka_headers_t* original = nullptr;
  if (rd_kafka_message_headers(msg, &original) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    for (size_t i = 0;
         rd_kafka_header_get_all(original, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      headers.push_back({name, value == nullptr
                                   ? std::string()
                                   : std::string(static_cast<const char*>(value), size)});
    }
  }
  headers.push_back({kHeaderErrorCode, code});
  headers.push_back({kHeaderErrorMessage, why.message});
  headers.push_back({kHeaderSourceTopic, topic});
  headers.push_back({kHeaderSourcePartition, std::to_string(msg->partition)});
  headers.push_back({kHeaderSourceOffset, std::to_string(msg->offset)});
  const std::string_view key(static_cast<const char*>(msg->key), msg->key ? msg->key_len : 0);
  std::string_view value(static_cast<const char*>(msg->payload), msg->payload ? msg->len : 0);
  absl::Status s = deadletters_->Produce(options_.topics.deadletter, key, value, headers);
  if (!s.ok() && value.size() > kDeadLetterKeptBytes) {
    // Too large to forward whole: keep the head and say how long it was.
    headers.push_back({kHeaderValueTruncated, std::to_string(value.size())});
    value = value.substr(0, kDeadLetterKeptBytes);
    s = deadletters_->Produce(options_.topics.deadletter, key, value, headers);
  }
  if (!s.ok() && refused_.ok()) refused_ = s;
  ++pending.delta.dead_lettered;
  ++pending.delta.dead_lettered_by_code[code];
  spdlog::debug("ingest: dead-lettered {}/{}@{}: {} {}", topic, msg->partition, msg->offset, code,
                why.message);
}

void Ingester::Impl::Handle(const rd_kafka_message_t* msg, Pending& pending) {
  const std::string_view topic = rd_kafka_topic_name(msg->rkt);
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(msg, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) headers = nullptr;
  std::string_view content_type = HeaderValue(headers, "content-type");
  if (content_type.empty()) content_type = HeaderValue(headers, "Content-Type");
  rd_kafka_timestamp_type_t timestamp_type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  const int64_t timestamp_ms = rd_kafka_message_timestamp(msg, &timestamp_type);
  const KafkaRecord record{
      .topic = topic,
      .partition = msg->partition,
      .offset = msg->offset,
      .key = std::string_view(static_cast<const char*>(msg->key), msg->key ? msg->key_len : 0),
      .value =
          std::string_view(static_cast<const char*>(msg->payload), msg->payload ? msg->len : 0),
      .content_type = content_type,
      .timestamp = timestamp_type != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && timestamp_ms >= 0
                       ? absl::FromUnixMillis(timestamp_ms)
                       : absl::InfinitePast(),
  };
  const uint32_t log_partition = static_cast<uint32_t>(msg->partition);
  const absl::Time now = options_.clock->Now();
  ++pending.delta.records;
  auto moves_time = [&](const google::protobuf::Timestamp& event_time) {
    absl::Time& latest =
        pending.latest_time.try_emplace(log_partition, absl::InfinitePast()).first->second;
    latest = std::max(latest, kernel::FromTimestamp(event_time));
  };

  auto provenance = [&](v1::Event& e, std::string idempotency_key) {
    v1::KafkaSource* source = e.mutable_provenance()->mutable_kafka();
    source->set_topic(topic.data(), topic.size());
    source->set_partition(msg->partition);
    source->set_offset(msg->offset);
    if (!idempotency_key.empty()) {
      e.mutable_provenance()->set_idempotency_key(std::move(idempotency_key));
    }
  };

  if (topic == options_.topics.readings) {
    if (std::optional<Rejection> why = DecodeReading(record, options_.validation, now, &reading_)) {
      DeadLetter(msg, *why, pending);
      return;
    }
    const uint64_t device = hash_(reading_.device_id());
    const uint64_t reading = hash_(reading_.reading_id());
    if (IsDuplicate(device, reading, msg->offset, pending)) {
      ++pending.delta.duplicates;
      return;
    }
    pending.seen[{device, reading}] = msg->offset;
    pending.new_reading_ids.emplace_back(device, reading, msg->offset);
    const bool unregistered = !IsRegistered(reading_.device_id(), pending);
    if (unregistered) ++pending.delta.unregistered_readings;
    moves_time(reading_.event_time());
    FillReadingEvent(reading_, topic, msg->partition, msg->offset, unregistered,
                     BatchFor(log_partition).AddNew());
    ++pending.delta.readings;
  } else if (topic == options_.topics.reports) {
    if (std::optional<Rejection> why = DecodeReport(record, options_.validation, now, &report_)) {
      DeadLetter(msg, *why, pending);
      return;
    }
    v1::Event e;
    e.set_stream_id(absl::StrFormat("%s%s", kCaseStreamPrefix, report_.report_id()));
    *e.mutable_event_time() = report_.event_time();
    provenance(e, absl::StrFormat("report/%s", report_.report_id()));
    v1::CaseReported* c = e.mutable_case_reported();
    c->set_case_id(report_.report_id());
    c->set_source(report_.source());
    c->mutable_grid()->Swap(report_.mutable_grid());
    c->mutable_location()->Swap(report_.mutable_location());
    c->mutable_category()->Swap(report_.mutable_category());
    c->set_description(report_.description());
    c->set_reporter(report_.reporter());
    moves_time(e.event_time());
    if (report_.has_originator()) {
      c->mutable_originator()->Swap(report_.mutable_originator());
    } else if (c->source() == v1::CASE_SOURCE_HOTLINE_12345) {
      // The hotline's calls are taken by the district center, which then verifies and
      // closes what it filed ("谁发单谁验收"), not the grid's station.
      const std::string& grid = c->grid().grid_code();
      c->mutable_originator()->set_level(v1::GRID_LEVEL_DISTRICT_CENTER);
      c->mutable_originator()->set_code(!c->grid().district_code().empty()
                                            ? c->grid().district_code()
                                            : grid.substr(0, std::min<size_t>(6, grid.size())));
    } else {
      c->mutable_originator()->set_level(v1::GRID_LEVEL_RESIDENTIAL_STATION);
      c->mutable_originator()->set_code(c->grid().grid_code());
    }
    BatchFor(log_partition).Add(std::move(e));
    ++pending.delta.reports;
  } else if (topic == options_.topics.devices) {
    if (msg->payload == nullptr) {
      // A tombstone on the compacted topic. Registrations are kept (deregistration is
      // not modelled), so there is nothing to store and nothing wrong to report.
      ++pending.delta.tombstones;
      return;
    }
    if (std::optional<Rejection> why = DecodeDevice(record, options_.validation, &device_)) {
      DeadLetter(msg, *why, pending);
      return;
    }
    v1::Event e;
    e.set_stream_id(absl::StrFormat("%s%s", kRegistryStreamPrefix, device_.device_id()));
    // When the registry sent it (the record's timestamp), not when it was consumed.
    *e.mutable_event_time() =
        kernel::ToTimestamp(record.timestamp != absl::InfinitePast() ? record.timestamp : now);
    provenance(e, RegistrationKey(device_));  // Identical re-registrations are skipped.
    pending.new_devices.push_back(device_.device_id());
    e.mutable_device_registered()->Swap(&device_);
    BatchFor(log_partition).Add(std::move(e));
    ++pending.delta.registrations;
  } else {
    return;  // Not subscribed; cannot happen.
  }
}

absl::Status Ingester::Impl::FlushDeadLetters(size_t count) {
  if (count == 0) return absl::OkStatus();
  absl::Status s = refused_;
  refused_ = absl::OkStatus();
  if (s.ok()) s = deadletters_->Flush(absl::Seconds(30));
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot write %d records to dead-letter topic %s (%s); nothing of this batch was "
        "stored, it will be consumed again",
        count, options_.topics.deadletter, s.message()));
  }
  return absl::OkStatus();
}

absl::Status Ingester::Impl::Store(Pending& pending) {
  for (const auto& [tp, next] : pending.next_offsets) {
    BatchFor(static_cast<uint32_t>(tp.partition))
        .SetSourcePosition(tp.topic, tp.partition, KafkaOffset(next));
  }
  // Every kept batch goes in; those this poll did not touch are empty and write nothing.
  absl::StatusOr<std::vector<kernel::AppendResult>> results = log_->AppendAll(batches_);
  if (!results.ok()) return results.status();

  // Stored: now the ids, devices, offsets and times are facts.
  for (const auto& [tp, next] : pending.next_offsets) stored_next_[tp] = next;
  for (const auto& [partition, time] : pending.latest_time) {
    absl::Time& latest = latest_time_.try_emplace(partition, absl::InfinitePast()).first->second;
    latest = std::max(latest, time);
  }
  for (const auto& [device, reading, offset] : pending.new_reading_ids) {
    Remember(device, reading, offset);
  }
  for (std::string& device : pending.new_devices) registered_.insert(std::move(device));
  const absl::Time now = options_.clock->Now();
  for (size_t i = 0; i < batches_.size(); ++i) {
    if ((*results)[i].appended > 0) {
      if (auto it = last_activity_.find(batches_[i].partition().value());
          it != last_activity_.end()) {
        it->second = now;
      }
    }
    pending.delta.duplicates += (*results)[i].duplicates;
  }
  // Lag monitoring only; the log holds the truth.
  rd_kafka_topic_partition_list_t* offsets =
      rd_kafka_topic_partition_list_new(static_cast<int>(pending.next_offsets.size()));
  for (const auto& [tp, next] : pending.next_offsets) {
    rd_kafka_topic_partition_list_add(offsets, tp.topic.c_str(), tp.partition)->offset = next;
  }
  if (offsets->cnt > 0) rd_kafka_commit(consumer_, offsets, /*async=*/1);
  rd_kafka_topic_partition_list_destroy(offsets);

  absl::MutexLock lock(&stats_mu_);
  stats_.records += pending.delta.records;
  stats_.readings += pending.delta.readings;
  stats_.reports += pending.delta.reports;
  stats_.registrations += pending.delta.registrations;
  stats_.tombstones += pending.delta.tombstones;
  stats_.duplicates += pending.delta.duplicates;
  stats_.unregistered_readings += pending.delta.unregistered_readings;
  stats_.dead_lettered += pending.delta.dead_lettered;
  for (const auto& [code, n] : pending.delta.dead_lettered_by_code) {
    stats_.dead_lettered_by_code[code] += n;
  }
  ++stats_.appends;
  return absl::OkStatus();
}

absl::Status Ingester::Impl::TickQuietPartitions() {
  if (options_.clock_tick_interval <= absl::ZeroDuration()) return absl::OkStatus();
  const absl::Time now = options_.clock->Now();
  const absl::Time tick_time = now - options_.clock_tick_delay;
  std::vector<kernel::AppendBatch> ticks;
  for (auto& [partition, last] : last_activity_) {
    if (now - last < options_.clock_tick_interval) continue;
    // Never past a record still in Kafka, and never a tick that moves nothing.
    if (!CaughtUp(partition)) continue;
    if (auto it = latest_time_.find(partition);
        it != latest_time_.end() && tick_time <= it->second) {
      continue;
    }
    v1::Event e;
    e.set_stream_id(std::string(kClockStream));
    *e.mutable_event_time() = kernel::ToTimestamp(tick_time);
    e.mutable_provenance()->set_stage(std::string(kClockStage));
    e.mutable_clock_tick();
    ticks.emplace_back(Partition(partition)).Add(std::move(e));
  }
  if (ticks.empty()) return absl::OkStatus();
  const size_t n = ticks.size();
  absl::StatusOr<std::vector<kernel::AppendResult>> results = log_->AppendAll(ticks);
  if (!results.ok()) return results.status();
  for (const kernel::AppendBatch& tick : ticks) {
    const uint32_t partition = tick.partition().value();
    last_activity_[partition] = now;
    latest_time_[partition] = tick_time;
  }
  absl::MutexLock lock(&stats_mu_);
  stats_.clock_ticks += n;
  return absl::OkStatus();
}

absl::StatusOr<size_t> Ingester::Impl::PollOnce() {
  messages_.resize(options_.max_batch_records);
  const ssize_t n = rd_kafka_consume_batch_queue(queue_, ToMillis(options_.poll_timeout),
                                                 messages_.data(), messages_.size());
  if (!assignment_error_.ok()) {
    for (ssize_t i = 0; i < n; ++i) rd_kafka_message_destroy(messages_[i]);
    absl::Status s = assignment_error_;
    if (absl::IsUnavailable(s)) assignment_error_ = absl::OkStatus();  // Retry on next assign.
    return s;
  }
  if (n < 0) {
    return absl::UnavailableError(
        absl::StrFormat("consuming failed: %s", rd_kafka_err2str(rd_kafka_last_error())));
  }
  for (kernel::AppendBatch& batch : batches_) batch.Clear();
  Pending pending;
  absl::Status failure;
  size_t handled = 0;
  absl::flat_hash_map<std::pair<const rd_kafka_topic_t*, int32_t>, int64_t> next_by_handle;
  for (ssize_t i = 0; i < n; ++i) {
    const rd_kafka_message_t* msg = messages_[i];
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (msg->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
        failure = absl::DataLossError(absl::StrFormat(
            "%s/%d: the stored position is out of the topic's range (%s); records were lost "
            "before cityops stored them. Ingest stops here",
            msg->rkt ? rd_kafka_topic_name(msg->rkt) : "?", msg->partition,
            rd_kafka_message_errstr(msg)));
      } else if (failure.ok() && msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        spdlog::warn("ingest: consumer: {}", rd_kafka_message_errstr(msg));
      }
      continue;
    }
    if (!failure.ok()) continue;
    Handle(msg, pending);
    // Keyed by the topic handle: no string per record; named below, once per poll.
    int64_t& next = next_by_handle[{msg->rkt, msg->partition}];
    next = std::max(next, msg->offset + 1);
    ++handled;
  }
  for (const auto& [key, next] : next_by_handle) {
    pending.next_offsets[TopicPartitionKey{rd_kafka_topic_name(key.first), key.second}] = next;
  }
  for (ssize_t i = 0; i < n; ++i) rd_kafka_message_destroy(messages_[i]);

  if (failure.ok()) failure = FlushDeadLetters(pending.delta.dead_lettered);
  if (failure.ok() && !pending.next_offsets.empty()) failure = Store(pending);
  if (failure.ok()) failure = ReleaseRegistered();
  if (!failure.ok()) {
    if (absl::Status rewound = Rewind(); !rewound.ok()) {
      spdlog::error("ingest: {}", rewound.ToString());
    }
    return failure;
  }
  if (absl::Status s = TickQuietPartitions(); !s.ok()) return s;
  return handled;
}

absl::Status Ingester::Impl::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  while (!stop_.load()) {
    absl::StatusOr<size_t> n = PollOnce();
    if (n.ok()) {
      backoff = absl::Milliseconds(100);
      continue;
    }
    if (absl::IsDataLoss(n.status()) || absl::IsFailedPrecondition(n.status()) ||
        absl::IsInvalidArgument(n.status())) {
      return n.status();
    }
    // A full disk is the log owner's to report (the daemon logs its start and end once);
    // the batch is given back and consumed again from the stored positions meanwhile.
    const bool disk_full = absl::StrContains(n.status().message(), "disk full: ");
    spdlog::log(disk_full ? spdlog::level::debug : spdlog::level::warn,
                "ingest: {} (retrying in {} ms)", n.status().ToString(),
                absl::ToInt64Milliseconds(backoff));
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Ingester>> Ingester::Create(kernel::EventLog* log,
                                                           IngestOptions options) {
  if (log == nullptr) return absl::InvalidArgumentError("ingest needs an event log");
  if (options.bootstrap_servers.empty()) {
    return absl::InvalidArgumentError(
        "ingest needs Kafka bootstrap servers (or the embedded cluster's address)");
  }
  if (options.topics.readings.empty() || options.topics.deadletter.empty()) {
    return absl::InvalidArgumentError("ingest needs a readings topic and a dead-letter topic");
  }
  if (options.max_batch_records == 0 || options.clock == nullptr) {
    return absl::InvalidArgumentError("ingest needs max_batch_records >= 1 and a clock");
  }
  auto impl = std::make_unique<Impl>(log, std::move(options));
  if (absl::Status s = impl->Init(); !s.ok()) return s;
  return std::unique_ptr<Ingester>(new Ingester(std::move(impl)));
}

Ingester::Ingester(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Ingester::~Ingester() = default;
absl::StatusOr<size_t> Ingester::PollOnce() { return impl_->PollOnce(); }
absl::Status Ingester::Run() { return impl_->Run(); }
void Ingester::Stop() { impl_->Stop(); }
IngestStats Ingester::Stats() const { return impl_->Stats(); }
absl::StatusOr<std::vector<ConsumerLag>> Ingester::Lag() const { return impl_->Lag(); }
absl::StatusOr<uint32_t> Ingester::ReadingsPartitions(absl::Duration timeout) const {
  return impl_->ReadingsPartitions(timeout);
}
const KafkaLink& Ingester::link() const { return impl_->link(); }

}  // namespace cityops::ingest
