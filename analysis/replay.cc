#include "analysis/replay.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "analysis/open_log.h"
#include "kernel/proto_time.h"
#include "kernel/wire_reader.h"
#include "projections/stored_event.h"

namespace cityops::analysis {
namespace fs = std::filesystem;
namespace {

using kernel::EventLog;

constexpr char kRecorded[] = "recorded";
constexpr char kReplay[] = "replay";

// What the copy needs of a recorded event, read from its stored bytes without parsing it
// (kernel/wire_reader.h): the merge key, the cut, whether it is an input, and its Kafka
// source. Views point into the cursor's chunk.
struct Head {
  absl::Time recorded_time = absl::UnixEpoch();
  absl::Time event_time = absl::UnixEpoch();
  std::string_view stream_id;
  bool derived = false;  // Appended by the rules stage.
  bool actor = false;    // A person's command.
  bool kafka = false;
  std::string_view topic;
  int32_t kafka_partition = 0;
  int64_t offset = 0;
  bool ruleset_activated = false;
};

bool DecodeKafka(std::string_view bytes, Head* h) {
  kernel::WireReader w(bytes);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    uint64_t v = 0;
    if (field == v1::KafkaSource::kTopicFieldNumber && type == 2) {
      if (!w.Bytes(&h->topic)) return false;
    } else if (field == v1::KafkaSource::kPartitionFieldNumber && type == 0) {
      if (!w.Varint(&v)) return false;
      h->kafka_partition = static_cast<int32_t>(v);
    } else if (field == v1::KafkaSource::kOffsetFieldNumber && type == 0) {
      if (!w.Varint(&v)) return false;
      h->offset = static_cast<int64_t>(v);
    } else if (!w.Skip(type)) {
      return false;
    }
  }
  return true;
}

// False if `record` is not well-formed; the caller then parses it to say what is wrong.
bool DecodeHead(std::string_view record, Head* h) {
  *h = Head();
  kernel::WireReader w(record);
  while (!w.done()) {
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type)) return false;
    if (type != 2) {
      if (!w.Skip(type)) return false;
      continue;
    }
    std::string_view bytes;
    if (!w.Bytes(&bytes)) return false;
    switch (field) {
      case v1::Event::kStreamIdFieldNumber:
        h->stream_id = bytes;
        break;
      case v1::Event::kEventTimeFieldNumber:
        if (!projections::DecodeTimestamp(bytes, &h->event_time)) return false;
        break;
      case v1::Event::kRecordedTimeFieldNumber:
        if (!projections::DecodeTimestamp(bytes, &h->recorded_time)) return false;
        break;
      case v1::Event::kProvenanceFieldNumber: {
        kernel::WireReader p(bytes);
        while (!p.done()) {
          uint32_t pf = 0;
          uint32_t pt = 0;
          if (!p.Tag(&pf, &pt)) return false;
          std::string_view v;
          if (pt != 2) {
            if (!p.Skip(pt)) return false;
            continue;
          }
          if (!p.Bytes(&v)) return false;
          // One oneof: the last member written is the one set.
          if (pf == v1::Provenance::kKafkaFieldNumber || pf == v1::Provenance::kActorFieldNumber ||
              pf == v1::Provenance::kStageFieldNumber) {
            h->kafka = pf == v1::Provenance::kKafkaFieldNumber;
            h->actor = pf == v1::Provenance::kActorFieldNumber;
            h->derived = pf == v1::Provenance::kStageFieldNumber && v == rules::kRulesStage;
            if (h->kafka && !DecodeKafka(v, h)) return false;
          }
        }
        break;
      }
      case v1::Event::kRulesetActivatedFieldNumber:
        h->ruleset_activated = true;
        break;
      default:
        break;
    }
  }
  return w.ok();
}

// The inputs waiting to be appended to one partition, with the source positions the batch
// carries: for each Kafka topic partition, one past the highest offset among its events
// (what ingest stored with them). Reused from append to append, so that copying allocates
// next to nothing per event.
struct PendingBatch {
  struct Source {
    std::string topic;
    int32_t partition;
    int64_t next;
  };
  explicit PendingBatch(kernel::Partition p) : batch(p) {}
  kernel::AppendBatch batch;
  std::vector<Source> sources;  // A handful: one per Kafka partition feeding this one.

  void Consumed(std::string_view topic, int32_t partition, int64_t offset) {
    for (Source& s : sources) {
      if (s.partition == partition && s.topic == topic) {
        s.next = std::max(s.next, offset + 1);
        return;
      }
    }
    sources.push_back({std::string(topic), partition, offset + 1});
  }
  absl::Status Flush(EventLog& log) {
    if (batch.empty()) return absl::OkStatus();
    for (const Source& s : sources) {
      batch.SetSourcePosition(s.topic, s.partition, kernel::KafkaOffset(s.next));
    }
    absl::StatusOr<kernel::AppendResult> r = log.Append(batch);
    batch.Clear();
    sources.clear();
    return r.status();
  }
};

// Removes a directory tree it made unless Release()d: a stopped or failed replay leaves
// nothing behind.
class ScratchDir {
 public:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  ~ScratchDir() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

absl::Time FirstEventTime(const EventLog& log) {
  absl::Time first = absl::InfiniteFuture();
  for (kernel::Partition p : log.Partitions()) {
    absl::StatusOr<std::vector<v1::Event>> head = log.Read(p, kernel::Sequence(0), 1);
    if (head.ok() && !head->empty()) {
      first = std::min(first, kernel::FromTimestamp((*head)[0].event_time()));
    }
  }
  return first;
}

// Reads one partition of the recorded log in chunks of raw records, and decodes what the
// merge by recorded time needs of the next one (`head`). Buffers are reused chunk after
// chunk.
struct Cursor {
  static constexpr size_t kChunk = 1024;

  kernel::Partition partition;
  kernel::Sequence next{0};  // Of the first record not yet in `raw`.
  std::vector<std::string> raw;
  size_t count = 0;  // Records in `raw`.
  size_t index = 0;  // Of `head` in `raw`.
  Head head;
  bool finished = false;

  explicit Cursor(kernel::Partition p) : partition(p) {}
  bool done() const { return finished; }
  void Finish() { finished = true; }
  std::string_view record() const { return raw[index]; }
  kernel::EventPosition position() const {
    return {partition, kernel::Sequence(next.value() - count + index)};
  }
  // Recorded first; ties by partition.
  bool Before(const Cursor& other) const {
    return std::make_tuple(head.recorded_time, partition.value()) <
           std::make_tuple(other.head.recorded_time, other.partition.value());
  }
  // Makes `head` the next record (the first on the first call).
  absl::Status Advance(const EventLog& log, const ReplayCut& cut, v1::Event* scratch,
                       bool first = false) {
    if (!first) ++index;
    if (index >= count) {
      count = 0;
      index = 0;
      absl::Status s = log.Scan(partition, next, [&](kernel::Sequence seq, std::string_view v) {
        if (cut.sequence.has_value() && seq.value() >= *cut.sequence) return false;
        if (count == raw.size()) raw.emplace_back();
        raw[count++].assign(v);
        return count < kChunk;
      });
      if (!s.ok()) return s;
      next = kernel::Sequence(next.value() + count);
      if (count == 0) {
        finished = true;
        return absl::OkStatus();
      }
    }
    if (DecodeHead(record(), &head)) return absl::OkStatus();
    // Not well-formed: the full parser says what is wrong with it.
    if (absl::Status s = EventLog::ParseEvent(position(), record(), scratch); !s.ok()) return s;
    return absl::InternalError(
        absl::StrFormat("replay: event %d/%d of %s parses but its envelope does not decode",
                        partition.value(), position().sequence.value(), log.path()));
  }
};

// The rules stage on a thread of its own, following the copy as a daemon's stage follows
// ingest: it steps live (not drained) whenever the copy has appended more, so the two
// share the machine's cores. A live step processes a prefix of the final order, so where
// the steps fall changes nothing derived. `CatchUp` is the barrier before a person's
// command: it returns once a step that began after the copy's last append found nothing
// more to process, which is what stepping until idle on the copying thread would do.
class StageThread {
 public:
  StageThread(rules::RulesStage* stage, const StopScope* stop)
      : stage_(stage), stop_(stop), thread_([this] { Loop(); }) {}
  ~StageThread() { (void)Finish(); }
  StageThread(const StageThread&) = delete;
  StageThread& operator=(const StageThread&) = delete;

  // The copy appended more. Returns the stage's error, if it failed.
  absl::Status Copied() {
    std::lock_guard<std::mutex> lock(mu_);
    ++copied_;
    wake_.notify_all();
    return error_;
  }
  // Waits until the stage has derived all it can from what was copied so far.
  absl::Status CatchUp() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = copied_;
    idle_changed_.wait(lock, [&] { return idle_ >= target || !error_.ok() || exited_; });
    return error_;
  }
  // Stops the thread (after its current step) and returns its error, if any.
  absl::Status Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      wake_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    return error_;
  }
  // Time spent stepping (not waiting for the copy).
  absl::Duration busy() const { return busy_; }

 private:
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stopping_ || copied_ != seen; });
        if (stopping_) break;
        seen = copied_;
      }
      const absl::Time started = absl::Now();
      for (;;) {
        absl::StatusOr<size_t> n = stage_->Step(/*drain=*/false);
        if (!n.ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          error_ = n.status();
          break;
        }
        if (*n == 0 || stop_->requested()) break;
      }
      busy_ += absl::Now() - started;
      std::lock_guard<std::mutex> lock(mu_);
      idle_ = seen;
      idle_changed_.notify_all();
      if (!error_.ok()) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    exited_ = true;
    idle_changed_.notify_all();
  }

  rules::RulesStage* const stage_;
  const StopScope* const stop_;
  std::mutex mu_;
  std::condition_variable wake_;          // copied_ or stopping_ changed.
  std::condition_variable idle_changed_;  // idle_, error_ or exited_ changed.
  uint64_t copied_ = 0;                   // Appends the copy made (a count).
  uint64_t idle_ = 0;                     // copied_ as of the last step pass that ended idle.
  bool stopping_ = false;
  bool exited_ = false;
  absl::Status error_;
  absl::Duration busy_;  // Written by the thread only; read after Finish().
  std::thread thread_;   // Last: starts once the members above exist.
};

bool HasRuleSetActivation(const EventLog& log) {
  bool found = false;
  (void)log.ListStreams("ruleset/", [&](std::string_view, kernel::StreamVersion) {
    found = true;
    return false;
  });
  return found;
}

}  // namespace

absl::StatusOr<ReplayCut> ReplayCut::Parse(const std::string& to) {
  ReplayCut cut;
  if (to.empty()) return cut;
  uint64_t sequence = 0;
  const auto [end, error] = std::from_chars(to.data(), to.data() + to.size(), sequence);
  if (error == std::errc() && end == to.data() + to.size()) {
    cut.sequence = sequence;
    return cut;
  }
  absl::StatusOr<absl::Time> time = ParseTimeFlag("--to", to);
  if (!time.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(time.status().message(), ", or a sequence number (one-partition logs)"));
  }
  cut.time = *time;
  return cut;
}

absl::StatusOr<ReplayResult> Replay(const ReplayOptions& options) {
  std::error_code ec;
  if (options.into.empty()) return absl::InvalidArgumentError("--into: give a new directory");
  if (fs::exists(options.into, ec) && !fs::is_empty(options.into, ec)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "'%s' exists and is not empty; a replay writes a fresh log: choose a new directory "
        "(or remove this one)",
        options.into));
  }
  absl::StatusOr<std::unique_ptr<EventLog>> source =
      OpenLogToRead(options.from, "replay", "--from");
  if (!source.ok()) return source.status();
  const std::vector<kernel::Partition> partitions = (*source)->Partitions();
  if (partitions.empty()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the log at %s holds no events: there is nothing to replay", options.from));
  }
  if (options.to.sequence.has_value() && partitions.size() > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--to %d: a sequence number names a place in one partition, and the log at %s has %d; "
        "cut by time instead (--to 2026-09-21T19:40:00Z), which is consistent across "
        "partitions",
        *options.to.sequence, options.from, partitions.size()));
  }
  if (options.to.time != absl::InfiniteFuture()) {
    const absl::Time first = FirstEventTime(**source);
    if (options.to.time < first) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--to %s is before the log's first event (%s): nothing would be "
                          "replayed; choose a later time",
                          absl::FormatTime(absl::RFC3339_sec, options.to.time, absl::UTCTimeZone()),
                          absl::FormatTime(absl::RFC3339_sec, first, absl::UTCTimeZone())));
    }
  }

  // The fresh log is made under a temporary name and renamed into place when complete.
  const fs::path into = fs::absolute(options.into, ec);
  fs::create_directories(into.parent_path(), ec);
  ScratchDir scratch(absl::StrCat(into.string(), ".partial-", ::getpid()));
  fs::remove_all(scratch.path(), ec);
  kernel::EventLogOptions fresh_options;
  fresh_options.path = scratch.path();
  // A replay that does not complete is thrown away and run again, so a write-ahead log
  // (and its checksum over every byte appended) would buy nothing: the fresh log is
  // unlogged, and flushed before it is renamed into place.
  fresh_options.durability = kernel::Durability::kUnlogged;
  absl::StatusOr<std::unique_ptr<EventLog>> fresh = EventLog::Open(fresh_options);
  if (!fresh.ok()) return fresh.status();

  StopScope stop;
  ReplayResult result;
  result.partitions = static_cast<uint32_t>(partitions.size());
  std::ostream null_stream(nullptr);
  std::ostream& progress_out = options.progress != nullptr ? *options.progress : null_stream;

  // The stage, run during the copy only before each person's command (live, not drained:
  // what the live stage had derived before the person saw the case and acted), and over
  // everything after it.
  rules::RulesStageOptions stage_options;
  stage_options.log = fresh->get();
  stage_options.partitions = result.partitions;
  // A replay runs once to the end: snapshots for a restart would only cost time.
  stage_options.snapshot_every_events = 0;
  stage_options.snapshot_interval = absl::InfiniteDuration();
  absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage = rules::RulesStage::Open(stage_options);
  if (!stage.ok()) return stage.status();
  absl::Duration deriving = absl::ZeroDuration();
  auto derive = [&](bool drain, Progress* progress) -> absl::Status {
    const absl::Time started = absl::Now();
    while (true) {
      absl::StatusOr<size_t> n = (*stage)->Step(drain);
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      if (progress != nullptr) progress->Advance(*n);
      if (stop.requested()) break;
    }
    deriving += absl::Now() - started;
    return absl::OkStatus();
  };

  // 1. The inputs, in the order they were recorded (recorded time, across partitions).
  uint64_t total = 0;
  for (kernel::Partition p : partitions) total += (*source)->NextSequence(p).value();
  const absl::Time copy_started = absl::Now();
  {
    Progress progress(progress_out,
                      {.what = "copying inputs", .total = total, .style = options.progress_style});
    // The backtest's rule set takes the place of the first recorded activation, so that
    // it governs exactly the inputs the recorded rules did; a log without one gets it
    // before every input.
    bool rule_set_placed = !options.rule_set.has_value();
    if (!rule_set_placed && !HasRuleSetActivation(**source)) {
      kernel::AppendBatch first(partitions.front());
      first.Add(rules::RulesetActivatedEvent(*options.rule_set, FirstEventTime(**source)));
      if (absl::StatusOr<kernel::AppendResult> r = (*fresh)->Append(std::move(first)); !r.ok()) {
        return r.status();
      }
      rule_set_placed = true;
    }
    std::vector<Cursor> cursors;
    std::vector<PendingBatch> pending;
    for (kernel::Partition p : partitions) {
      cursors.emplace_back(p);
      pending.emplace_back(p);
    }
    std::optional<StageThread> stage_thread;
    if (options.stage_thread) stage_thread.emplace(stage->get(), &stop);
    auto flush = [&](PendingBatch& b) -> absl::Status {
      if (b.batch.empty()) return absl::OkStatus();
      if (absl::Status s = b.Flush(**fresh); !s.ok()) return s;
      return stage_thread.has_value() ? stage_thread->Copied() : absl::OkStatus();
    };
    auto flush_all = [&]() -> absl::Status {
      for (PendingBatch& b : pending) {
        if (absl::Status s = flush(b); !s.ok()) return s;
      }
      return absl::OkStatus();
    };
    // Lets the stage derive all it can from what was copied so far.
    auto catch_up = [&]() -> absl::Status {
      if (absl::Status s = flush_all(); !s.ok()) return s;
      return stage_thread.has_value() ? stage_thread->CatchUp() : derive(/*drain=*/false, nullptr);
    };
    // Inputs of unindexed streams (readings, clock ticks: nearly all of them) are copied
    // as stored, only restamped (AppendBatch::AddStored); the others are parsed, since
    // the fresh log assigns their versions (and a backtest replaces rule sets).
    v1::Event event;
    for (Cursor& c : cursors) {
      if (absl::Status s = c.Advance(**source, options.to, &event, /*first=*/true); !s.ok()) {
        return s;
      }
    }
    while (!stop.requested()) {
      // The cursor whose next event was recorded first.
      size_t next = cursors.size();
      for (size_t c = 0; c < cursors.size(); ++c) {
        if (cursors[c].done()) continue;
        if (next == cursors.size() || cursors[c].Before(cursors[next])) next = c;
      }
      if (next == cursors.size()) break;
      Cursor& c = cursors[next];
      const Head& head = c.head;
      progress.Advance();
      ++result.source_events;
      if (head.derived) {
        ++result.recorded_derived;
      } else if (head.event_time > options.to.time) {
        // This partition's part of the replay ends here (see the header).
        c.Finish();
        --result.source_events;
        continue;
      } else {
        PendingBatch& batch = pending[next];
        if (head.kafka) batch.Consumed(head.topic, head.kafka_partition, head.offset);
        bool copy = true;
        if (!kernel::IsIndexedStream(head.stream_id)) {
          if (absl::Status s = batch.batch.AddStored(c.record()); !s.ok()) {
            return absl::DataLossError(
                absl::StrFormat("event %d/%d of %s: %s", c.position().partition.value(),
                                c.position().sequence.value(), options.from, s.message()));
          }
        } else {
          if (head.actor) {
            // A person acted on what the stage had derived by then.
            if (absl::Status s = catch_up(); !s.ok()) return s;
          }
          if (absl::Status s = EventLog::ParseEvent(c.position(), c.record(), &event); !s.ok()) {
            return s;
          }
          if (options.rule_set.has_value() && head.ruleset_activated) {
            ++result.left_out_rule_sets;
            if (rule_set_placed) {
              copy = false;
            } else {
              event = rules::RulesetActivatedEvent(*options.rule_set,
                                                   kernel::FromTimestamp(event.event_time()));
              rule_set_placed = true;
            }
          }
          if (copy) batch.batch.Add(std::move(event));
        }
        if (copy) ++result.inputs;
        if (batch.batch.size() >= options.batch) {
          if (absl::Status s = flush(batch); !s.ok()) return s;
        }
        if (!stage_thread.has_value() && copy && options.derive_every > 0 &&
            result.inputs % options.derive_every == 0) {
          // The stage reads what was just copied while it is still in memory, instead of
          // the whole copy back from disk at the end. It derives the same events whenever
          // it steps (a live step processes a prefix of the final order).
          if (absl::Status s = catch_up(); !s.ok()) return s;
        }
      }
      if (absl::Status s = c.Advance(**source, options.to, &event); !s.ok()) return s;
    }
    if (stop.requested()) {
      return StopScope::Stopped(absl::StrCat("nothing was left at ", options.into));
    }
    if (absl::Status s = flush_all(); !s.ok()) return s;
    // The copy's wall time; the stage's steps on the copying thread are not part of it.
    result.copy_time = absl::Now() - copy_started - deriving;
    if (stage_thread.has_value()) {
      if (absl::Status s = stage_thread->Finish(); !s.ok()) return s;
      deriving += stage_thread->busy();
    }
    progress.Finish();
  }

  // 2. Derive the rest: the log is final now.
  {
    Progress progress(progress_out, {.what = "deriving",
                                     .total = result.inputs - (*stage)->Stats().processed,
                                     .style = options.progress_style});
    if (absl::Status s = derive(/*drain=*/true, &progress); !s.ok()) return s;
    if (stop.requested()) {
      return StopScope::Stopped(absl::StrCat("nothing was left at ", options.into));
    }
    progress.Finish();
    result.stage = (*stage)->Stats();
    result.derived = result.stage.derived;
    stage->reset();
  }
  result.derive_time = deriving;

  // 3. Compare.
  if (options.compare) {
    const absl::Time compare_started = absl::Now();
    projections::DerivedDiffOptions diff_options;
    diff_options.until = options.to.time;
    absl::StatusOr<projections::DerivedDiff> diff =
        projections::CompareDerived(**source, **fresh, diff_options, kRecorded, kReplay);
    if (!diff.ok()) return diff.status();
    result.comparison = std::move(*diff);
    result.compare_time = absl::Now() - compare_started;
  }

  if (absl::Status s = (*fresh)->Flush(); !s.ok()) return s;
  fresh->reset();
  fs::rename(scratch.path(), into, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the replay is complete in %s but could not be renamed to %s: %s; rename it yourself",
        scratch.path(), into.string(), ec.message()));
  }
  scratch.Release();
  return result;
}

void PrintReplay(const ReplayOptions& options, const ReplayResult& result, std::ostream& out) {
  auto rate = [](uint64_t n, absl::Duration d) {
    const double s = absl::ToDoubleSeconds(d);
    return WithThousands(s > 0 ? static_cast<uint64_t>(static_cast<double>(n) / s) : 0);
  };
  out << absl::StrFormat(
      "replayed %s into %s (%d partitions%s)\n", options.from, options.into, result.partitions,
      options.to.sequence.has_value() ? absl::StrCat(", up to sequence ", *options.to.sequence)
      : options.to.time != absl::InfiniteFuture()
          ? absl::StrCat(", up to ",
                         absl::FormatTime(absl::RFC3339_sec, options.to.time, absl::UTCTimeZone()))
          : "");
  out << absl::StrFormat(
      "  inputs copied:    %s in %s (%s/s); %s recorded derived events left "
      "out\n",
      WithThousands(result.inputs), HumanDuration(result.copy_time),
      rate(result.source_events, result.copy_time), WithThousands(result.recorded_derived));
  if (options.rule_set.has_value()) {
    out << absl::StrFormat(
        "  rule set:         '%s' (sha256 %s) instead of the %d recorded "
        "activations\n",
        options.rule_set->rule_set.name(), options.rule_set->sha256.substr(0, 12),
        result.left_out_rule_sets);
  }
  out << absl::StrFormat("  derived again:    %s events from %s inputs in %s (%s inputs/s)\n",
                         WithThousands(result.derived), WithThousands(result.stage.processed),
                         HumanDuration(result.derive_time),
                         rate(result.stage.processed, result.derive_time));
  const rules::EngineCounters& c = result.stage.engine;
  out << absl::StrFormat(
      "  the rules: %d alerts raised, %d cleared; %d cases opened, %d linked; %d tickets; "
      "%d overdue lights; %d closed by their rule\n",
      c.alerts_raised, c.alerts_cleared, c.cases_opened, c.cases_linked, c.tickets, c.overdue,
      c.auto_closed);
  if (!result.stage.rejected_rule_sets.empty()) {
    out << absl::StrFormat("  warning: %d rule sets in the log did not compile and were ignored\n",
                           result.stage.rejected_rule_sets.size());
  }
  if (!result.comparison.has_value()) return;
  const projections::DerivedDiff& d = *result.comparison;
  out << absl::StrFormat("  compared in %s:\n", HumanDuration(result.compare_time));
  if (d.citing_ticks > 0) {
    out << absl::StrFormat(
        "  note: %d derived events cite a clock tick (they depend on ingest's "
        "timing), e.g.\n",
        d.citing_ticks);
    for (const std::string& e : d.tick_examples) out << "    " << e << "\n";
  }
  if (!d.difference.has_value()) {
    out << absl::StrFormat("equal: %s derived events, byte for byte (references by identity)\n",
                           WithThousands(d.equal));
  } else {
    out << absl::StrFormat("DIFFERENT after %s equal derived events:\n%s\n", WithThousands(d.equal),
                           *d.difference);
  }
}

}  // namespace cityops::analysis
