#include "projections/ticket_outbox.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/topic_tail.h"
#include "projections/case_state.h"
#include "spdlog/spdlog.h"

namespace cityops::projections {

bool StoredStreamStartsWith(std::string_view value, std::string_view prefix) {
  // Field 3 (stream_id), wire type 2: tag 0x1a, then a varint length.
  if (value.size() < 2 || static_cast<uint8_t>(value[0]) != 0x1a) return false;
  size_t length = 0;
  size_t i = 1;
  for (int shift = 0; i < value.size() && shift < 35; shift += 7, ++i) {
    const uint8_t b = static_cast<uint8_t>(value[i]);
    length |= static_cast<size_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      ++i;
      break;
    }
  }
  if (length < prefix.size() || i + prefix.size() > value.size()) return false;
  return value.substr(i, prefix.size()) == prefix;
}

absl::StatusOr<std::unique_ptr<TicketOutbox>> TicketOutbox::Create(const OutboxOptions& options) {
  if (options.log == nullptr) return absl::InvalidArgumentError("the ticket outbox needs a log");
  std::unique_ptr<TicketOutbox> outbox(new TicketOutbox(options));
  absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer = ingest::RecordProducer::Create(
      options.bootstrap_servers, options.kafka_properties, "ticket outbox");
  if (!producer.ok()) return producer.status();
  outbox->producer_ = *std::move(producer);
  return outbox;
}

absl::StatusOr<size_t> TicketOutbox::PollOnce() {
  struct Advance {
    kernel::Partition partition;
    kernel::Sequence next;
  };
  if (lost_track_) {
    absl::StatusOr<std::vector<std::string>> ids =
        ingest::ReadHeaderValuesAtTail({.bootstrap_servers = options_.bootstrap_servers,
                                        .kafka_properties = options_.kafka_properties,
                                        .topic = options_.topic,
                                        .header = "cityops-event-id",
                                        .per_partition = options_.tail_records});
    if (!ids.ok()) {
      return absl::UnavailableError(absl::StrFormat(
          "ticket outbox: cannot read back what %s holds, so nothing is sent yet: %s",
          options_.topic, ids.status().message()));
    }
    on_topic_ = absl::flat_hash_set<std::string>(ids->begin(), ids->end());
    lost_track_ = false;
  }
  std::vector<Advance> advances;
  size_t produced = 0;
  size_t found = 0;
  std::string event_id;
  for (kernel::Partition p : options_.log->Partitions()) {
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        options_.log->StoredCheckpoint(p, kOutboxCheckpoint);
    if (!cp.ok()) return cp.status();
    const kernel::Sequence from = cp->has_value() ? (*cp)->next : kernel::Sequence(0);
    kernel::Sequence next = from;
    size_t examined = 0;
    absl::Status failed;
    v1::Event event;
    std::string value;
    absl::Status scanned =
        options_.log->Scan(p, from, [&](kernel::Sequence seq, std::string_view stored) {
          if (examined++ == options_.max_events) return false;
          next = seq.next();
          if (!StoredStreamStartsWith(stored, kTicketStreamPrefix)) return true;
          failed = kernel::EventLog::ParseEvent({p, seq}, stored, &event);
          if (!failed.ok()) return false;
          if (!event.has_ticket_issued()) return true;
          const v1::TicketIssued& t = event.ticket_issued();
          event_id = absl::StrFormat("%d/%d", p.value(), seq.value());
          if (on_topic_.contains(event_id)) {  // Sent before the outbox lost track.
            ++found;
            return true;
          }
          value.clear();
          if (options_.json) {
            google::protobuf::util::JsonPrintOptions json;
            json.preserve_proto_field_names = false;
            if (!google::protobuf::util::MessageToJsonString(t, &value, json).ok()) {
              failed = absl::InternalError("cannot write ticket " + t.ticket_id() + " as JSON");
              return false;
            }
          } else {
            t.SerializeToString(&value);
          }
          failed = producer_->Produce(
              options_.topic, t.case_id(), value,
              {{"cityops-event-id", event_id},
               {"cityops-ticket-id", t.ticket_id()},
               {"cityops-case-id", t.case_id()},
               {"content-type", options_.json ? "application/json" : "application/x-protobuf"}});
          if (!failed.ok()) return false;
          ++produced;
          return true;
        });
    if (!scanned.ok()) return scanned;
    if (!failed.ok()) return failed;
    if (next != from) advances.push_back({p, next});
  }
  if (produced > 0) {
    if (absl::Status s = producer_->Flush(options_.flush_timeout); !s.ok()) {
      // Some may have gone through: read the topic back before sending again.
      lost_track_ = true;
      return absl::UnavailableError(absl::StrFormat(
          "ticket outbox: %d tickets not acknowledged by Kafka (%s); the checkpoint stays, "
          "and those not found on the topic are sent again",
          produced, s.message()));
    }
  }
  if (!options_.skip_checkpoint && !advances.empty()) {
    std::vector<kernel::AppendBatch> batches;
    for (const Advance& a : advances) {
      kernel::AppendBatch& b = batches.emplace_back(a.partition);
      b.SetCheckpoint({kOutboxCheckpoint, a.next, ""});
    }
    absl::StatusOr<std::vector<kernel::AppendResult>> stored =
        options_.log->AppendAll(std::move(batches));
    if (!stored.ok()) {
      lost_track_ = true;  // Sent, acknowledged, but not checkpointed.
      return stored.status();
    }
    on_topic_.clear();  // Everything found there is behind the checkpoint now.
  }
  absl::MutexLock lock(&mu_);
  stats_.published += produced;
  stats_.found_published += found;
  ++stats_.polls;
  return produced;
}

absl::Status TicketOutbox::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  while (!stop_.load()) {
    absl::StatusOr<size_t> n = PollOnce();
    if (!n.ok()) {
      if (!absl::IsUnavailable(n.status())) return n.status();
      spdlog::warn("{}; retrying in {}", std::string(n.status().message()),
                   absl::FormatDuration(backoff));
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(10));
      continue;
    }
    backoff = absl::Milliseconds(100);
    if (*n == 0) absl::SleepFor(options_.idle_wait);
  }
  return absl::OkStatus();
}

void TicketOutbox::Stop() { stop_.store(true); }

OutboxStats TicketOutbox::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace cityops::projections
