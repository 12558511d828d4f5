#include "ingest/ingester.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string_view>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
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

// The last reading ids of one device, as hashes, in a ring.
struct ReadingWindow {
  std::vector<uint64_t> ids;
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
  Impl(kernel::EventLog* log, IngestOptions options) : log_(log), options_(std::move(options)) {}

  ~Impl() {
    if (queue_ != nullptr) rd_kafka_queue_destroy(queue_);
    if (consumer_ != nullptr) {
      rd_kafka_consumer_close(consumer_);
      rd_kafka_destroy(consumer_);
    }
  }

  absl::Status Init() {
    if (absl::Status s = RebuildMemory(); !s.ok()) return s;
    absl::StatusOr<std::unique_ptr<RecordProducer>> producer =
        RecordProducer::Create(options_.bootstrap_servers, options_.kafka_properties);
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

 private:
  // One poll's worth of work before it is stored.
  struct Pending {
    absl::flat_hash_map<TopicPartitionKey, int64_t> next_offsets;
    std::vector<std::pair<uint64_t, uint64_t>> new_reading_ids;  // (device, reading) hashes
    absl::flat_hash_set<std::pair<uint64_t, uint64_t>> seen;
    std::vector<std::string> new_devices;
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
  void OnAssign(rd_kafka_topic_partition_list_t* partitions);
  absl::Status SetStoredOffsets(rd_kafka_topic_partition_list_t* partitions);
  absl::Status Rewind();
  void Handle(const rd_kafka_message_t* msg, Pending& pending);
  void DeadLetter(const rd_kafka_message_t* msg, const Rejection& why, Pending& pending);
  absl::Status FlushDeadLetters(size_t count);
  absl::Status Store(Pending& pending);
  absl::Status TickQuietPartitions();
  bool IsDuplicate(uint64_t device, uint64_t reading, const Pending& pending) const;
  void Remember(uint64_t device, uint64_t reading);
  bool IsRegistered(const std::string& device_id, const Pending& pending) const;

  kernel::EventLog* const log_;
  const IngestOptions options_;
  rd_kafka_t* consumer_ = nullptr;
  rd_kafka_queue_t* queue_ = nullptr;
  std::unique_ptr<RecordProducer> deadletters_;
  std::atomic<bool> stop_{false};

  // Set by the rebalance callback (which runs inside PollOnce's consume call).
  absl::Status assignment_error_;
  std::vector<TopicPartitionKey> assigned_;
  // A copy of assigned_ for Lag(), which other threads call.
  mutable absl::Mutex assigned_mu_;
  std::vector<TopicPartitionKey> assigned_copy_ ABSL_GUARDED_BY(assigned_mu_);
  absl::flat_hash_map<uint32_t, absl::Time> last_activity_;  // Readings partitions.

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
  // Recent reading ids, from the tail of each partition.
  v1::Event event;
  for (Partition p : log_->Partitions()) {
    const uint64_t end = log_->NextSequence(p).value();
    const uint64_t from =
        end > options_.dedupe_rebuild_events ? end - options_.dedupe_rebuild_events : 0;
    absl::Status parse;
    s = log_->Scan(p, kernel::Sequence(from), [&](kernel::Sequence seq, std::string_view value) {
      parse = kernel::EventLog::ParseEvent({p, seq}, value, &event);
      if (!parse.ok()) return false;
      if (event.has_reading()) {
        Remember(hash_(event.reading().device_id()), hash_(event.reading().reading_id()));
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
  absl::StatusOr<rd_kafka_conf_t*> made =
      NewKafkaConf({&defaults, &options_.kafka_properties, &options_.consumer_properties});
  if (!made.ok()) return made.status();
  rd_kafka_conf_t* conf = *made;
  rd_kafka_conf_set_rebalance_cb(conf, &Impl::RebalanceCallback);
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
  absl::MutexLock lock(&self->assigned_mu_);
  self->assigned_copy_.clear();
}

void Ingester::Impl::OnAssign(rd_kafka_topic_partition_list_t* partitions) {
  absl::Status s = SetStoredOffsets(partitions);
  if (!s.ok()) {
    spdlog::error("ingest: {}", s.ToString());
    assignment_error_ = s;
    rd_kafka_assign(consumer_, nullptr);
    return;
  }
  rd_kafka_resp_err_t err = rd_kafka_assign(consumer_, partitions);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    assignment_error_ = absl::UnavailableError(
        absl::StrFormat("cannot take the assigned partitions: %s", rd_kafka_err2str(err)));
    return;
  }
  assigned_.clear();
  const absl::Time now = options_.clock->Now();
  for (int i = 0; i < partitions->cnt; ++i) {
    const rd_kafka_topic_partition_t& tp = partitions->elems[i];
    assigned_.push_back({tp.topic, tp.partition});
    if (tp.topic == options_.topics.readings) last_activity_[tp.partition] = now;
    spdlog::info("ingest: assigned {}/{} from offset {}", tp.topic, tp.partition,
                 tp.offset == RD_KAFKA_OFFSET_BEGINNING ? std::string("beginning")
                                                        : std::to_string(tp.offset));
  }
  absl::MutexLock lock(&assigned_mu_);
  assigned_copy_ = assigned_;
}

absl::StatusOr<std::vector<ConsumerLag>> Ingester::Impl::Lag() const {
  std::vector<TopicPartitionKey> assigned;
  {
    absl::MutexLock lock(&assigned_mu_);
    assigned = assigned_copy_;
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
    lag.high_watermark = std::max<int64_t>(high, 0);
    lag.lag = std::max<int64_t>(0, lag.high_watermark - lag.next_offset);
    out.push_back(std::move(lag));
  }
  std::sort(out.begin(), out.end(), [](const ConsumerLag& a, const ConsumerLag& b) {
    return std::tie(a.topic, a.partition) < std::tie(b.topic, b.partition);
  });
  return out;
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
    if (!stored->has_value()) {
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
      tp.offset = RD_KAFKA_OFFSET_BEGINNING;
      continue;
    }
    tp.offset = offset;
  }
  return absl::OkStatus();
}

// Gives back what was fetched but not stored: every assigned partition goes back to
// its stored position.
absl::Status Ingester::Impl::Rewind() {
  if (assigned_.empty()) return absl::OkStatus();
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(assigned_.size()));
  for (const TopicPartitionKey& tp : assigned_) {
    rd_kafka_topic_partition_list_add(list, tp.topic.c_str(), tp.partition);
  }
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

bool Ingester::Impl::IsDuplicate(uint64_t device, uint64_t reading, const Pending& pending) const {
  if (pending.seen.contains({device, reading})) return true;
  auto it = windows_.find(device);
  if (it == windows_.end()) return false;
  return std::find(it->second.ids.begin(), it->second.ids.end(), reading) != it->second.ids.end();
}

void Ingester::Impl::Remember(uint64_t device, uint64_t reading) {
  if (options_.dedupe_window == 0) return;
  ReadingWindow& w = windows_[device];
  if (w.ids.size() < options_.dedupe_window) {
    w.ids.push_back(reading);
    return;
  }
  w.ids[w.next] = reading;
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
  const KafkaRecord record{
      .topic = topic,
      .partition = msg->partition,
      .offset = msg->offset,
      .key = std::string_view(static_cast<const char*>(msg->key), msg->key ? msg->key_len : 0),
      .value =
          std::string_view(static_cast<const char*>(msg->payload), msg->payload ? msg->len : 0),
      .content_type = content_type,
  };
  const uint32_t log_partition = static_cast<uint32_t>(msg->partition);
  const absl::Time now = options_.clock->Now();
  ++pending.delta.records;

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
    if (IsDuplicate(device, reading, pending)) {
      ++pending.delta.duplicates;
      return;
    }
    pending.seen.insert({device, reading});
    pending.new_reading_ids.emplace_back(device, reading);
    const bool unregistered = !IsRegistered(reading_.device_id(), pending);
    if (unregistered) ++pending.delta.unregistered_readings;
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
    if (report_.has_originator()) {
      c->mutable_originator()->Swap(report_.mutable_originator());
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
    *e.mutable_event_time() = kernel::ToTimestamp(now);
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

  // Stored: now the ids and devices are facts.
  for (const auto& [device, reading] : pending.new_reading_ids) Remember(device, reading);
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
  std::vector<kernel::AppendBatch> ticks;
  for (auto& [partition, last] : last_activity_) {
    if (now - last < options_.clock_tick_interval) continue;
    v1::Event e;
    e.set_stream_id(std::string(kClockStream));
    *e.mutable_event_time() = kernel::ToTimestamp(now);
    e.mutable_provenance()->set_stage(std::string(kClockStage));
    e.mutable_clock_tick();
    ticks.emplace_back(Partition(partition)).Add(std::move(e));
  }
  if (ticks.empty()) return absl::OkStatus();
  const size_t n = ticks.size();
  absl::StatusOr<std::vector<kernel::AppendResult>> results = log_->AppendAll(std::move(ticks));
  if (!results.ok()) return results.status();
  for (auto& [partition, last] : last_activity_) {
    if (now - last >= options_.clock_tick_interval) last = now;
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
    spdlog::warn("ingest: {} (retrying in {} ms)", n.status().ToString(),
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

}  // namespace cityops::ingest
