#include "projections/rules/rules_stage.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_format.h"
#include "cityops/v1/snapshot.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "kernel/proto_time.h"
#include "projections/stored_event.h"
#include "spdlog/spdlog.h"

namespace cityops::rules {

struct RulesStage::Cursor {
  kernel::Partition partition;
  kernel::Sequence read_next{0};           // The next sequence to read from the log.
  kernel::Sequence done{0};                // Every event before this is processed (or skipped).
  kernel::Sequence stored{0};              // The checkpoint stored in the log.
  kernel::Sequence replay_end{0};          // The checkpoint found by Open.
  absl::Time time = absl::InfinitePast();  // The partition's stage time so far.
  // Events read but not processed: items[head, end). Only their envelopes are decoded
  // (projections/stored_event.h); the stored records are kept packed in `records` and
  // parsed when processed, a reading's payload alone.
  struct Item {
    uint64_t sequence = 0;
    uint32_t offset = 0;  // Of the record in `records`.
    uint32_t size = 0;
    uint32_t payload_offset = 0;  // Readings: of the SensorReading, within `records`.
    uint32_t payload_size = 0;
    bool reading = false;
    bool tick = false;
    bool moves_time = false;
    absl::Time event_time;
  };
  std::string records;
  std::vector<Item> items;
  size_t head = 0;
  bool empty() const { return head == items.size(); }
  const Item& front() const { return items[head]; }
  std::string_view record(const Item& item) const {
    return std::string_view(records).substr(item.offset, item.size);
  }
};

RulesStage::RulesStage(const RulesStageOptions& options) : options_(options) {}
RulesStage::~RulesStage() = default;

absl::StatusOr<std::unique_ptr<RulesStage>> RulesStage::Open(const RulesStageOptions& options) {
  if (options.log == nullptr) return absl::InvalidArgumentError("RulesStage needs a log");
  std::unique_ptr<RulesStage> stage(new RulesStage(options));
  if (absl::Status s = stage->AddNewPartitions(); !s.ok()) return s;
  if (options.use_snapshot) {
    if (absl::Status s = stage->LoadSnapshot(); !s.ok()) return s;
  }
  std::vector<Derived> discard;
  uint64_t replayed = 0;
  for (;;) {
    absl::StatusOr<size_t> n =
        stage->Merge(/*drain=*/true, /*replay=*/true, options.read_chunk, &discard);
    if (!n.ok()) return n.status();
    discard.clear();
    replayed += *n;
    if (*n == 0) break;
  }
  for (const auto& c : stage->cursors_) {
    if (c->done != c->replay_end) {
      return absl::DataLossError(absl::StrFormat(
          "rules stage checkpoint of partition %d is at sequence %d, but replaying the log "
          "stopped at %d: the log %s does not hold the events the checkpoint covers; "
          "restore it from a backup",
          c->partition.value(), c->replay_end.value(), c->done.value(), options.log->path()));
    }
  }
  stage->replayed_counters_ = stage->engine_.counters();
  // What was replayed is not in the snapshot yet: it counts towards the next one.
  stage->since_snapshot_ = replayed;
  stage->last_snapshot_ = options.clock->Now();
  absl::MutexLock lock(&stage->mu_);
  stage->stats_.replayed = replayed;
  stage->stats_.rejected_rule_sets = stage->engine_.rejected_rule_sets();
  return stage;
}

absl::Status RulesStage::LoadSnapshot() {
  absl::StatusOr<std::optional<std::string>> stored =
      options_.log->StoredSnapshot(kRulesCheckpoint);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return absl::OkStatus();
  auto refuse = [&](const std::string& why) {
    spdlog::warn(
        "rules stage: not using the snapshot stored in {}: {}; replaying the log from the start "
        "instead (slower, same result; the next snapshot replaces it)",
        options_.log->path(), why);
    absl::MutexLock lock(&mu_);
    stats_.snapshot_refused = why;
    return absl::OkStatus();
  };
  v1::RulesStageSnapshot snapshot;
  if (!snapshot.ParseFromString(**stored)) {
    return refuse(absl::StrFormat(
        "its %d bytes are not a valid cityops.v1.RulesStageSnapshot (damaged)", (*stored)->size()));
  }
  if (snapshot.format_version() != kRulesSnapshotVersion) {
    return refuse(absl::StrFormat(
        "it is in snapshot format version %d, and this cityops reads version %d only%s",
        snapshot.format_version(), kRulesSnapshotVersion,
        snapshot.format_version() > kRulesSnapshotVersion ? " (it was written by a newer cityops)"
                                                          : ""));
  }
  // Where each partition resumes; every partition the checkpoints cover must be covered.
  std::vector<std::pair<Cursor*, const v1::RulesStagePartition*>> resume;
  for (const v1::RulesStagePartition& p : snapshot.partitions()) {
    Cursor* cursor = nullptr;
    for (const auto& c : cursors_) {
      if (c->partition.value() == p.partition()) cursor = c.get();
    }
    if (cursor == nullptr) {
      return refuse(absl::StrFormat("it covers partition %d, which holds no events in the log",
                                    p.partition()));
    }
    for (const auto& [c, q] : resume) {
      if (c == cursor)
        return refuse(absl::StrFormat("it covers partition %d twice", p.partition()));
    }
    if (p.next() > cursor->replay_end.value()) {
      return refuse(absl::StrFormat(
          "it stands at sequence %d of partition %d, past the stage's checkpoint there (%d)",
          p.next(), p.partition(), cursor->replay_end.value()));
    }
    resume.emplace_back(cursor, &p);
  }
  for (const auto& c : cursors_) {
    if (c->replay_end.value() == 0) continue;
    bool covered = false;
    for (const auto& [cursor, p] : resume) covered |= cursor == c.get();
    if (!covered) {
      return refuse(absl::StrFormat(
          "it does not cover partition %d, which the stage's checkpoints do (at sequence %d)",
          c->partition.value(), c->replay_end.value()));
    }
  }
  v1::Event ruleset;
  const v1::RulesEngineState& state = snapshot.engine();
  if (state.has_rule_set()) {
    absl::StatusOr<std::vector<v1::Event>> read =
        options_.log->Read(kernel::Partition(state.rule_set().partition()),
                           kernel::Sequence(state.rule_set().sequence()), 1);
    if (!read.ok()) {
      return refuse(absl::StrFormat("its rule set at %d/%d cannot be read: %s",
                                    state.rule_set().partition(), state.rule_set().sequence(),
                                    read.status().ToString()));
    }
    if (read->empty()) {
      return refuse(absl::StrFormat("it names the rule set at %d/%d, which the log does not hold",
                                    state.rule_set().partition(), state.rule_set().sequence()));
    }
    ruleset = std::move(read->front());
  }
  if (absl::Status s = engine_.RestoreState(state, state.has_rule_set() ? &ruleset : nullptr);
      !s.ok()) {
    return refuse(std::string(s.message()));
  }
  for (const auto& [c, p] : resume) {
    c->read_next = kernel::Sequence(p->next());
    c->done = c->read_next;
    c->time = kernel::TimeFromExactNanos(p->time_ns());
  }
  absl::MutexLock lock(&mu_);
  stats_.restored_from_snapshot = true;
  stats_.snapshot_inputs = engine_.counters().inputs;
  return absl::OkStatus();
}

std::optional<kernel::StageSnapshot> RulesStage::MaybeSnapshot(size_t processed) {
  since_snapshot_ += processed;
  if (since_snapshot_ == 0) return std::nullopt;
  const absl::Time now = options_.clock->Now();
  const bool by_count =
      options_.snapshot_every_events > 0 && since_snapshot_ >= options_.snapshot_every_events;
  const bool by_time = options_.snapshot_interval != absl::InfiniteDuration() &&
                       now - last_snapshot_ >= options_.snapshot_interval;
  if (!by_count && !by_time) return std::nullopt;
  kernel::StageSnapshot out{kRulesCheckpoint, std::string()};
  if (absl::Status s = BuildSnapshot(&out.state); !s.ok()) {
    // Try again after as many events or as long again, not at every step.
    since_snapshot_ = 0;
    last_snapshot_ = now;
    spdlog::warn("rules stage on {}: no snapshot written: {}", options_.log->path(), s.ToString());
    return std::nullopt;
  }
  return out;
}

absl::Status RulesStage::BuildSnapshot(std::string* out) const {
  v1::RulesStageSnapshot snapshot;
  snapshot.set_format_version(kRulesSnapshotVersion);
  if (absl::Status s = engine_.ExportState(snapshot.mutable_engine()); !s.ok()) return s;
  for (const auto& c : cursors_) {
    v1::RulesStagePartition* p = snapshot.add_partitions();
    p->set_partition(c->partition.value());
    p->set_next(c->done.value());
    int64_t ns = 0;
    if (!kernel::TimeToExactNanos(c->time, &ns)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the rules stage time of partition %d is not a whole number of nanoseconds, so a "
          "snapshot could not restore it exactly",
          c->partition.value()));
    }
    p->set_time_ns(ns);
  }
  out->clear();
  google::protobuf::io::StringOutputStream stream(out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  snapshot.SerializeToCodedStream(&coded);
  return absl::OkStatus();
}

absl::StatusOr<std::string> RulesStage::Snapshot() const {
  std::string out;
  if (absl::Status s = BuildSnapshot(&out); !s.ok()) return s;
  return out;
}

absl::Status RulesStage::AddNewPartitions() {
  for (kernel::Partition p : options_.log->Partitions()) {
    auto it = std::lower_bound(cursors_.begin(), cursors_.end(), p,
                               [](const auto& c, kernel::Partition q) { return c->partition < q; });
    if (it != cursors_.end() && (*it)->partition == p) continue;
    auto c = std::make_unique<Cursor>();
    c->partition = p;
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        options_.log->StoredCheckpoint(p, kRulesCheckpoint);
    if (!cp.ok()) return cp.status();
    if (cp->has_value()) {
      c->replay_end = (*cp)->next;
      c->stored = (*cp)->next;
    }
    cursors_.insert(it, std::move(c));
  }
  return absl::OkStatus();
}

absl::Status RulesStage::Refill(Cursor& c, bool replay) {
  if (!c.empty()) return absl::OkStatus();
  // Everything read so far is processed, or is the stage's own output.
  c.done = c.read_next;
  for (;;) {
    size_t limit = options_.read_chunk;
    if (replay) {
      if (c.read_next >= c.replay_end) return absl::OkStatus();
      limit = std::min<uint64_t>(limit, c.replay_end.value() - c.read_next.value());
    }
    c.records.clear();
    c.items.clear();
    c.head = 0;
    size_t read = 0;
    kernel::Sequence last(0);
    absl::Status parse_error;
    projections::StoredEnvelope envelope;
    absl::Status scanned = options_.log->Scan(
        c.partition, c.read_next, [&](kernel::Sequence seq, std::string_view value) {
          if (read == limit) return false;
          if (!projections::DecodeEnvelope(value, &envelope)) {
            // Not well-formed: let the full parser say what is wrong with it.
            parse_error = kernel::EventLog::ParseEvent({c.partition, seq}, value, &scratch_event_);
            if (parse_error.ok()) {
              parse_error = absl::InternalError(absl::StrFormat(
                  "rules stage: event %d/%d parses but its envelope does not decode",
                  c.partition.value(), seq.value()));
            }
            return false;
          }
          ++read;
          last = seq;
          if (envelope.provenance_stage == kRulesStage) return true;  // Output, not input.
          Cursor::Item& item = c.items.emplace_back();
          item.sequence = seq.value();
          item.offset = static_cast<uint32_t>(c.records.size());
          item.size = static_cast<uint32_t>(value.size());
          item.reading = envelope.payload == v1::Event::kReading;
          if (item.reading) {
            item.payload_offset =
                item.offset + static_cast<uint32_t>(envelope.payload_bytes.data() - value.data());
            item.payload_size = static_cast<uint32_t>(envelope.payload_bytes.size());
          }
          // Readings, clock ticks and reports move a partition's time; other events
          // (commands, registrations, rule sets) happen at the partition's current time.
          item.tick = envelope.payload == v1::Event::kClockTick;
          item.moves_time =
              item.reading || item.tick || envelope.payload == v1::Event::kCaseReported;
          item.event_time = envelope.event_time;
          c.records.append(value);
          return true;
        });
    if (!scanned.ok()) return scanned;
    if (!parse_error.ok()) return parse_error;
    if (read == 0) return absl::OkStatus();
    c.read_next = last.next();
    if (!c.empty()) return absl::OkStatus();
    c.done = c.read_next;
  }
}

absl::Status RulesStage::ProcessFront(const Cursor& c, absl::Time now,
                                      std::vector<Derived>* derived) {
  const Cursor::Item& item = c.front();
  const kernel::EventPosition position{c.partition, kernel::Sequence(item.sequence)};
  if (item.reading) {
    // The reading alone, decoded straight from its stored bytes.
    const std::string_view bytes =
        std::string_view(c.records).substr(item.payload_offset, item.payload_size);
    if (reading_.Decode(bytes, engine_.kinds())) {
      engine_.ProcessReading(reading_, position, now, derived);
      return absl::OkStatus();
    }
  }
  if (absl::Status s = kernel::EventLog::ParseEvent(position, c.record(item), &scratch_event_);
      !s.ok()) {
    return s;
  }
  engine_.Process(scratch_event_, now, derived);
  return absl::OkStatus();
}

RulesStage::Cursor* RulesStage::NoOpTick() const {
  for (const auto& c : cursors_) {
    if (c->empty()) continue;
    const Cursor::Item& head = c->front();
    if (head.tick && std::max(c->time, head.event_time) <= engine_.now()) return c.get();
  }
  return nullptr;
}

absl::StatusOr<size_t> RulesStage::Merge(bool drain, bool replay, size_t limit,
                                         std::vector<Derived>* derived) {
  size_t n = 0;
  while (n < limit) {
    Cursor* best = nullptr;
    absl::Time best_key;
    // The earliest (time, partition) a partition with nothing unread may still deliver.
    Cursor* horizon = nullptr;
    for (const auto& c : cursors_) {
      if (c->empty()) {
        if (absl::Status s = Refill(*c, replay); !s.ok()) return s;
      }
      if (c->empty()) {
        if (horizon == nullptr || c->time < horizon->time) horizon = c.get();
        continue;
      }
      const Cursor::Item& head = c->front();
      absl::Time key = c->time;
      if (head.moves_time) key = std::max(key, head.event_time);
      if (best == nullptr || key < best_key) {
        best = c.get();
        best_key = key;
      }
    }
    if (best == nullptr) break;
    if (!drain && !replay && cursors_.size() < options_.partitions) break;
    if (!drain && !replay && horizon != nullptr) {
      const bool before = best_key < horizon->time ||
                          (best_key == horizon->time && best->partition < horizon->partition);
      if (!before) {
        best = NoOpTick();
        if (best == nullptr) break;
        best_key = std::max(best->time, best->front().event_time);
      }
    }
    const Cursor::Item& head = best->front();
    best->time = best_key;
    if (absl::Status s = ProcessFront(*best, best_key, derived); !s.ok()) return s;
    best->done = kernel::Sequence(head.sequence + 1);
    ++best->head;
    ++n;
  }
  return n;
}

absl::StatusOr<size_t> RulesStage::Step(bool drain) {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the rules stage on %s stopped after an earlier step failed (%s); its state is past "
        "what the log holds: reopen it (RulesStage::Open), which replays from its checkpoints",
        options_.log->path(), broken_.ToString()));
  }
  if (absl::Status s = AddNewPartitions(); !s.ok()) return s;
  std::vector<Derived> derived;
  absl::StatusOr<size_t> n = Merge(drain, /*replay=*/false, options_.max_batch_events, &derived);
  if (!n.ok()) return n.status();
  std::map<uint32_t, kernel::AppendBatch> batches;
  for (const auto& c : cursors_) {
    if (c->done == c->stored) continue;
    batches.emplace(c->partition.value(), kernel::AppendBatch(c->partition))
        .first->second.SetCheckpoint({kRulesCheckpoint, c->done, ""});
  }
  const size_t derived_count = derived.size();
  // The idempotency keys of each partition's derived events, to name a duplicate.
  std::map<uint32_t, std::vector<std::string>> keys;
  for (Derived& d : derived) {
    auto it = batches.find(d.partition.value());
    if (it == batches.end()) {
      it = batches.emplace(d.partition.value(), kernel::AppendBatch(d.partition)).first;
      for (const auto& c : cursors_) {
        if (c->partition == d.partition) it->second.SetCheckpoint({kRulesCheckpoint, c->done, ""});
      }
    }
    keys[d.partition.value()].push_back(d.event.provenance().idempotency_key());
    it->second.Add(std::move(d.event));
  }
  std::optional<kernel::StageSnapshot> snapshot = MaybeSnapshot(*n);
  if (!batches.empty() || snapshot.has_value()) {
    std::vector<kernel::AppendBatch> all;
    all.reserve(batches.size());
    for (auto& [p, b] : batches) all.push_back(std::move(b));
    const absl::Status fault = options_.append_fault ? options_.append_fault() : absl::OkStatus();
    absl::StatusOr<std::vector<kernel::AppendResult>> appended =
        !fault.ok() ? absl::StatusOr<std::vector<kernel::AppendResult>>(fault)
        : snapshot  ? options_.log->AppendAll(all, *snapshot)
                    : options_.log->AppendAll(all);
    if (!appended.ok()) {
      broken_ = appended.status();
      return absl::Status(appended.status().code(),
                          absl::StrFormat("rules stage could not append %d derived events: %s; "
                                          "the stage stops and replays from its checkpoint "
                                          "when reopened",
                                          derived_count, appended.status().message()));
    }
    for (size_t b = 0; b < appended->size(); ++b) {
      const kernel::AppendResult& result = (*appended)[b];
      if (result.duplicates == 0) continue;
      const std::vector<std::string>& batch_keys = keys[all[b].partition().value()];
      for (size_t i = 0; i < result.outcomes.size() && i < batch_keys.size(); ++i) {
        if (!result.outcomes[i].duplicate) continue;
        broken_ = absl::InternalError(absl::StrFormat(
            "rules stage: derived event '%s' was already in the log at %d/%d: the rules "
            "engine reused an id, which is a bug; the stage stops",
            batch_keys[i], result.outcomes[i].position.partition.value(),
            result.outcomes[i].position.sequence.value()));
        return broken_;
      }
    }
    for (const auto& c : cursors_) c->stored = c->done;
  }
  absl::MutexLock lock(&mu_);
  if (snapshot.has_value()) {
    since_snapshot_ = 0;
    last_snapshot_ = options_.clock->Now();
    ++stats_.snapshots_written;
    stats_.last_snapshot_bytes = snapshot->state.size();
  }
  stats_.processed += *n;
  stats_.derived += derived_count;
  if (!batches.empty()) ++stats_.appends;
  stats_.engine = engine_.counters().Since(replayed_counters_);
  stats_.rejected_rule_sets = engine_.rejected_rule_sets();
  return *n;
}

absl::Status RulesStage::CatchUp(bool drain) {
  for (;;) {
    absl::StatusOr<size_t> n = Step(drain);
    if (!n.ok()) return n.status();
    if (*n == 0) return absl::OkStatus();
  }
}

absl::Status RulesStage::Run() {
  while (!stop_.load()) {
    absl::StatusOr<size_t> n = Step(/*drain=*/false);
    if (!n.ok()) return n.status();
    if (*n > 0) continue;
    // Wait on the partition that holds everything back: the earliest caught-up one.
    const Cursor* slowest = nullptr;
    for (const auto& c : cursors_) {
      if (c->empty() && (slowest == nullptr || c->time < slowest->time)) {
        slowest = c.get();
      }
    }
    if (slowest == nullptr) {
      absl::SleepFor(options_.idle_wait);
    } else {
      options_.log->WaitForEvents(slowest->partition, slowest->read_next, options_.idle_wait);
    }
  }
  return absl::OkStatus();
}

void RulesStage::Stop() { stop_.store(true); }

RulesStageStats RulesStage::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

std::vector<PartitionLag> RulesStage::Lag() const {
  std::vector<PartitionLag> out;
  for (kernel::Partition p : options_.log->Partitions()) {
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        options_.log->StoredCheckpoint(p, kRulesCheckpoint);
    kernel::Sequence next(0);
    if (cp.ok() && cp->has_value()) next = (*cp)->next;
    const kernel::Sequence end = options_.log->NextSequence(p);
    out.push_back({p, next, end.value() > next.value() ? end.value() - next.value() : 0});
  }
  return out;
}

}  // namespace cityops::rules
