#include "app/log_commands.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "analysis/export.h"
#include "analysis/open_log.h"
#include "analysis/progress.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/log_upgrade.h"
#include "kernel/log_verify.h"
#include "kernel/types.h"
#include "nlohmann/json.hpp"
#include "projections/derived_diff.h"
#include "sim/reading_generator.h"

namespace cityops::app {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Timestamp;
using google::protobuf::util::TimeUtil;
using kernel::EventLog;
using kernel::Partition;
using kernel::Sequence;

// Opens an existing log (never creates one). Messages for a missing log say how to make
// one with this command; every other refusal (locked, foreign, newer format) is the
// kernel's message, which already names the directory and what to do.
absl::StatusOr<std::unique_ptr<EventLog>> OpenExistingLog(const std::string& data_dir) {
  kernel::EventLogOptions options;
  options.path = data_dir;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(options);
  if (absl::IsNotFound(log.status())) {
    std::error_code ec;
    const bool exists = fs::exists(data_dir, ec);
    return absl::NotFoundError(absl::StrFormat(
        "no event log at %s: the directory %s; check --data-dir, or create a log there with "
        "'cityops log generate --data-dir %s'",
        data_dir, exists ? "is empty" : "does not exist", data_dir));
  }
  return log;
}

// The name of an event's type: its payload case as named in events.proto ("reading").
std::string EventTypeName(int payload_case) {
  if (payload_case == v1::Event::PAYLOAD_NOT_SET) return "(no payload)";
  const google::protobuf::FieldDescriptor* field =
      v1::Event::descriptor()->FindFieldByNumber(payload_case);
  return field != nullptr ? field->name() : absl::StrCat("(unknown type ", payload_case, ")");
}

bool Earlier(const Timestamp& a, const Timestamp& b) {
  return a.seconds() < b.seconds() || (a.seconds() == b.seconds() && a.nanos() < b.nanos());
}

std::string HumanBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

// Bytes allocated on disk under `dir` (like `du`), and the number of files.
absl::StatusOr<std::pair<uint64_t, uint64_t>> DiskUsage(const std::string& dir) {
  uint64_t bytes = 0;
  uint64_t files = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    ++files;
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrFormat("cannot list %s: %s; check its permissions", dir, ec.message()));
  }
  return std::make_pair(bytes, files);
}

// What inspect learns about one partition in one scan.
struct PartitionSummary {
  uint64_t events = 0;
  std::optional<Timestamp> min_event_time;
  std::optional<Timestamp> max_event_time;
  std::map<int, uint64_t> by_type;  // Payload case -> events.
};

absl::StatusOr<PartitionSummary> SummarizePartition(const EventLog& log, Partition partition) {
  PartitionSummary summary;
  v1::Event event;
  absl::Status parse_status;
  absl::Status scan_status =
      log.Scan(partition, Sequence(0), [&](Sequence sequence, std::string_view value) {
        parse_status = EventLog::ParseEvent({partition, sequence}, value, &event);
        if (!parse_status.ok()) return false;
        ++summary.events;
        ++summary.by_type[event.payload_case()];
        if (event.has_event_time()) {
          const Timestamp& t = event.event_time();
          if (!summary.min_event_time || Earlier(t, *summary.min_event_time)) {
            summary.min_event_time = t;
          }
          if (!summary.max_event_time || Earlier(*summary.max_event_time, t)) {
            summary.max_event_time = t;
          }
        }
        return true;
      });
  if (!scan_status.ok()) return scan_status;
  if (!parse_status.ok()) return parse_status;
  return summary;
}

}  // namespace

absl::Status GenerateLog(const GenerateOptions& options, std::ostream& out) {
  kernel::EventLogOptions log_options;
  log_options.path = options.data_dir;
  absl::StatusOr<std::unique_ptr<EventLog>> opened = EventLog::Open(log_options);
  if (!opened.ok()) return opened.status();
  EventLog& log = **opened;

  // Where each Kafka partition of the readings topic stands. A log made with another
  // partition count routes devices differently; mixing the two would split a device's
  // readings over partitions, so refuse.
  absl::StatusOr<std::vector<kernel::SourcePosition>> stored = log.StoredSourcePositions();
  if (!stored.ok()) return stored.status();
  std::vector<int64_t> next_offset(options.partitions, 0);
  uint32_t stored_partitions = 0;
  for (const kernel::SourcePosition& position : *stored) {
    if (position.topic != kReadingsTopic) continue;
    stored_partitions =
        std::max(stored_partitions, static_cast<uint32_t>(position.kafka_partition) + 1);
    if (static_cast<uint32_t>(position.kafka_partition) < options.partitions) {
      next_offset[position.kafka_partition] = position.next_offset.value();
    }
  }
  for (Partition p : log.Partitions()) {
    stored_partitions = std::max(stored_partitions, p.value() + 1);
  }
  if (stored_partitions != 0 && stored_partitions != options.partitions) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "event log %s holds readings of %u partitions, but --partitions is %u; devices would "
        "land in other partitions than before: run with --partitions %u, or use a new "
        "--data-dir",
        options.data_dir, stored_partitions, options.partitions, stored_partitions));
  }

  // Continue the simulated stream where the log's readings end: replaying the generator
  // past them makes two runs of N readings equal one run of 2N (same seed and devices),
  // with no reading id used twice.
  uint64_t already = 0;
  for (Partition p : log.Partitions()) already += log.NextSequence(p).value();
  sim::FleetOptions fleet;
  fleet.seed = options.seed;
  fleet.devices = options.devices;
  sim::ReadingGenerator generator(fleet);
  v1::SensorReading reading;
  for (uint64_t i = 0; i < already; ++i) generator.Next(&reading);

  out << absl::StrFormat(
      "generating %u readings of %u devices (seed %u) into %u partitions of %s%s\n",
      options.readings, options.devices, options.seed, options.partitions, options.data_dir,
      already == 0 ? "" : absl::StrFormat(", after the %u events already there", already));
  out.flush();

  std::vector<kernel::AppendBatch> batches;
  for (uint32_t p = 0; p < options.partitions; ++p) batches.emplace_back(Partition(p));
  auto flush = [&](uint32_t p) -> absl::Status {
    kernel::AppendBatch& batch = batches[p];
    batch.SetSourcePosition(kReadingsTopic, static_cast<int32_t>(p),
                            kernel::KafkaOffset(next_offset[p]));
    absl::StatusOr<kernel::AppendResult> result =
        log.Append(std::exchange(batch, kernel::AppendBatch(Partition(p))));
    return result.status();
  };

  const uint64_t progress_every = std::max<uint64_t>(options.readings / 10, 1);
  const absl::Time start = absl::Now();
  for (uint64_t i = 1; i <= options.readings; ++i) {
    generator.Next(&reading);
    const uint32_t p = static_cast<uint32_t>(
        ingest::KafkaPartitionFor(reading.device_id(), static_cast<int32_t>(options.partitions)));
    // No registrations are generated, so every device is unregistered, as ingest would
    // mark it.
    batches[p].Add(ingest::ReadingEvent(reading, kReadingsTopic, static_cast<int32_t>(p),
                                        next_offset[p]++, /*device_unregistered=*/true));
    if (batches[p].size() >= options.batch) {
      if (absl::Status s = flush(p); !s.ok()) return s;
    }
    if (i % progress_every == 0 && i != options.readings) {
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      out << absl::StrFormat("  %u/%u readings (%.0f%%), %.0f events/s\n", i, options.readings,
                             100.0 * static_cast<double>(i) / static_cast<double>(options.readings),
                             static_cast<double>(i) / std::max(seconds, 1e-9));
      out.flush();
    }
  }
  for (uint32_t p = 0; p < options.partitions; ++p) {
    if (batches[p].empty()) continue;
    if (absl::Status s = flush(p); !s.ok()) return s;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  out << absl::StrFormat(
      "appended %u readings to %s in %.2f s: %.0f events/s (generated, routed and appended "
      "with fsync per batch of up to %u)\n",
      options.readings, options.data_dir, seconds,
      static_cast<double>(options.readings) / std::max(seconds, 1e-9), options.batch);
  return absl::OkStatus();
}

absl::Status InspectLog(const InspectOptions& options, std::ostream& out) {
  absl::StatusOr<std::unique_ptr<EventLog>> opened = OpenExistingLog(options.data_dir);
  if (!opened.ok()) return opened.status();
  const EventLog& log = **opened;

  const std::vector<Partition> partitions = log.Partitions();
  uint64_t total = 0;
  for (Partition p : partitions) total += log.NextSequence(p).value();
  out << "event log " << options.data_dir << "\n";
  out << "  events: " << total << " in " << partitions.size() << " partition"
      << (partitions.size() == 1 ? "" : "s") << "\n";

  for (Partition p : partitions) {
    absl::StatusOr<PartitionSummary> summary = SummarizePartition(log, p);
    if (!summary.ok()) return summary.status();
    out << "partition " << p << ": " << summary->events << " events (sequences 0.."
        << summary->events - 1 << ")\n";
    if (summary->min_event_time) {
      out << "  event time: " << TimeUtil::ToString(*summary->min_event_time) << " .. "
          << TimeUtil::ToString(*summary->max_event_time) << "\n";
    }
    out << "  by type:";
    for (const auto& [type, count] : summary->by_type) {
      out << " " << EventTypeName(type) << " " << count;
    }
    out << "\n";
  }

  absl::StatusOr<std::vector<kernel::SourcePosition>> positions = log.StoredSourcePositions();
  if (!positions.ok()) return positions.status();
  if (positions->empty()) {
    out << "source positions: none\n";
  } else {
    out << "source positions (next Kafka offset to consume):\n";
    for (const kernel::SourcePosition& position : *positions) {
      out << "  " << position.topic << "[" << position.kafka_partition
          << "]: " << position.next_offset << "\n";
    }
  }

  // Indexed streams (cases, tickets, registry, rulesets), by kind: the prefix before '/'.
  std::map<std::string, uint64_t> streams_by_kind;
  uint64_t streams = 0;
  absl::Status listed = log.ListStreams("", [&](std::string_view stream_id, kernel::StreamVersion) {
    ++streams;
    ++streams_by_kind[std::string(stream_id.substr(0, stream_id.find('/')))];
    return true;
  });
  if (!listed.ok()) return listed;
  out << "indexed streams: " << streams;
  if (streams > 0) {
    std::string sep = " (";
    for (const auto& [kind, count] : streams_by_kind) {
      out << sep << kind << " " << count;
      sep = ", ";
    }
    out << ")";
  }
  out << "\n";

  absl::StatusOr<std::pair<uint64_t, uint64_t>> usage = DiskUsage(options.data_dir);
  if (!usage.ok()) return usage.status();
  out << "size on disk: " << HumanBytes(usage->first) << " in " << usage->second << " files\n";
  return absl::OkStatus();
}

absl::Status DumpLog(const DumpOptions& options, std::ostream& out, std::ostream& note) {
  absl::StatusOr<std::unique_ptr<EventLog>> opened = OpenExistingLog(options.data_dir);
  if (!opened.ok()) return opened.status();
  const EventLog& log = **opened;

  const Partition partition(options.partition);
  const Sequence next = log.NextSequence(partition);
  if (options.from >= next.value()) {
    std::string with_events;
    for (Partition p : log.Partitions()) {
      absl::StrAppend(&with_events, with_events.empty() ? "" : ", ", p.value());
    }
    note << absl::StrFormat(
        "cityops: nothing to dump: partition %u of %s has %u events, none at or after sequence "
        "%u (partitions with events: %s)\n",
        options.partition, options.data_dir, next.value(), options.from,
        with_events.empty() ? "none" : with_events);
    return absl::OkStatus();
  }

  // Print zeros too (partition 0, sequence 0, offset 0): analysts should not have to know
  // that the mapping omits default values. `cityops export` prints with the same options.
  const google::protobuf::util::JsonPrintOptions json_options = analysis::EventJsonOptions();
  v1::Event event;
  std::string json;
  uint64_t written = 0;
  absl::Status failure;
  absl::Status scan_status =
      log.Scan(partition, Sequence(options.from), [&](Sequence sequence, std::string_view value) {
        failure = EventLog::ParseEvent({partition, sequence}, value, &event);
        if (!failure.ok()) return false;
        json.clear();
        auto converted = google::protobuf::util::MessageToJsonString(event, &json, json_options);
        if (!converted.ok()) {
          failure = absl::InternalError(absl::StrFormat("cannot print event %u/%u as JSON: %s",
                                                        options.partition, sequence.value(),
                                                        std::string(converted.message())));
          return false;
        }
        out << json << '\n';
        return ++written < options.limit;
      });
  if (!scan_status.ok()) return scan_status;
  return failure;
}

absl::Status BackupLog(const BackupOptions& options, std::ostream& out) {
  std::error_code ec;
  if (fs::exists(options.to, ec)) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "backup target %s already exists; choose a new directory for --to", options.to));
  }
  absl::StatusOr<std::unique_ptr<EventLog>> opened = OpenExistingLog(options.data_dir);
  if (!opened.ok()) return opened.status();
  const EventLog& log = **opened;

  const fs::path parent = fs::absolute(options.to, ec).parent_path();
  if (!ec) fs::create_directories(parent, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot create the parent directory of backup target %s: %s", options.to, ec.message()));
  }
  const absl::Time start = absl::Now();
  if (absl::Status s = log.Backup(options.to); !s.ok()) return s;
  const absl::Duration took = absl::Now() - start;

  uint64_t events = 0;
  const std::vector<Partition> partitions = log.Partitions();
  for (Partition p : partitions) events += log.NextSequence(p).value();
  absl::StatusOr<std::pair<uint64_t, uint64_t>> usage = DiskUsage(options.to);
  if (!usage.ok()) return usage.status();
  out << absl::StrFormat("backed up %s to %s: %u events in %u partitions, %s in %u files, %s\n",
                         options.data_dir, options.to, events, partitions.size(),
                         HumanBytes(usage->first), usage->second, absl::FormatDuration(took));
  return absl::OkStatus();
}

absl::Status CompareLogs(const CompareOptions& options, std::ostream& out) {
  projections::DerivedDiffOptions diff_options;
  if (!options.until.empty()) {
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, options.until, &diff_options.until, &error)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--until '%s' is not an RFC 3339 time (%s); write e.g. 2026-09-21T15:00:00Z",
          options.until, error));
    }
  }
  absl::StatusOr<std::unique_ptr<EventLog>> a = OpenExistingLog(options.data_dir);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::unique_ptr<EventLog>> b = OpenExistingLog(options.other);
  if (!b.ok()) return b.status();
  absl::StatusOr<projections::DerivedDiff> diff =
      projections::CompareDerived(**a, **b, diff_options, options.data_dir, options.other);
  if (!diff.ok()) return diff.status();
  const std::string scope =
      options.until.empty() ? std::string() : absl::StrCat(" up to ", options.until);
  if (diff->citing_ticks > 0) {
    out << absl::StrFormat(
        "%d derived events cite a clock tick (they depend on when ingest ran), the first:\n  %s\n",
        diff->citing_ticks, diff->tick_examples.front());
  }
  if (!diff->difference.has_value()) {
    out << absl::StrFormat("equal: %d derived events%s\n", diff->equal, scope);
    return absl::OkStatus();
  }
  out << *diff->difference;
  return absl::FailedPreconditionError(absl::StrFormat(
      "the logs differ%s after %d equal derived events (above); docs/determinism.md says what "
      "may legitimately depend on timing",
      scope, diff->equal));
}

absl::Status SetPosition(const SetPositionOptions& options, std::ostream& out) {
  if (options.partition < 0 || options.offset < 0) {
    return absl::InvalidArgumentError("--partition and --offset must be 0 or more");
  }
  absl::StatusOr<std::unique_ptr<EventLog>> opened = OpenExistingLog(options.data_dir);
  if (!opened.ok()) return opened.status();
  EventLog& log = **opened;
  absl::StatusOr<std::optional<kernel::KafkaOffset>> stored =
      log.StoredSourcePosition(options.topic, options.partition);
  if (!stored.ok()) return stored.status();
  kernel::AppendBatch batch{Partition(static_cast<uint32_t>(options.partition))};
  batch.SetSourcePosition(options.topic, options.partition, kernel::KafkaOffset(options.offset));
  absl::StatusOr<kernel::AppendResult> appended = log.Append(std::move(batch));
  if (!appended.ok()) return appended.status();
  const std::string before =
      stored->has_value() ? absl::StrCat((*stored)->value()) : std::string("(none stored)");
  out << absl::StrFormat("%s/%d: stored position %s -> %d in %s", options.topic, options.partition,
                         before, options.offset, options.data_dir);
  if (stored->has_value() && (*stored)->value() < options.offset) {
    out << absl::StrFormat("; records %d..%d will not be ingested", (*stored)->value(),
                           options.offset - 1);
  } else if (stored->has_value() && (*stored)->value() > options.offset) {
    out << absl::StrFormat(
        "; records %d..%d will be read again (duplicate readings within "
        "ingest's window are dropped, reports by their id)",
        options.offset, (*stored)->value() - 1);
  }
  out << "\n";
  return absl::OkStatus();
}

namespace {

std::string Bytes(uint64_t n) {
  if (n < (1 << 10)) return absl::StrFormat("%u B", n);
  if (n < (1 << 20)) return absl::StrFormat("%.1f KiB", static_cast<double>(n) / (1 << 10));
  if (n < (1ull << 30)) return absl::StrFormat("%.1f MiB", static_cast<double>(n) / (1 << 20));
  return absl::StrFormat("%.2f GiB", static_cast<double>(n) / (1ull << 30));
}

void PrintVerifyJson(const kernel::VerifyReport& r, std::ostream& out) {
  using Json = nlohmann::ordered_json;
  Json j;
  j["data_dir"] = r.path;
  j["whole"] = r.whole();
  j["opens"] = r.opens;
  j["open_error"] = r.open_error;
  Json files = Json::array();
  for (const kernel::CheckedFile& f : r.sst_files) {
    files.push_back({{"path", f.path},
                     {"column_family", f.column_family},
                     {"level", f.level},
                     {"bytes", f.bytes},
                     {"entries", f.entries},
                     {"range", f.range},
                     {"whole", f.whole}});
  }
  j["sst_files"] = std::move(files);
  j["wal_files"] = r.wal_files;
  j["wal_bytes"] = r.wal_bytes;
  j["partitions"] = r.partitions;
  j["events"] = r.events;
  j["deep"] = r.deep;
  j["parsed"] = r.parsed;
  j["not_checked"] = r.note;
  j["seconds"] = absl::ToDoubleSeconds(r.elapsed);
  Json damage = Json::array();
  for (const kernel::Damage& d : r.damage) {
    damage.push_back(
        {{"file", d.file}, {"what", d.what}, {"range", d.range}, {"action", d.action}});
  }
  j["damage"] = std::move(damage);
  out << j.dump(2) << "\n";
}

void PrintVerifyTable(const kernel::VerifyReport& r, std::ostream& out) {
  size_t damaged_files = 0;
  uint64_t sst_bytes = 0;
  for (const kernel::CheckedFile& f : r.sst_files) {
    damaged_files += f.whole ? 0 : 1;
    sst_bytes += f.bytes;
  }
  out << "verify " << r.path << " (read-only: nothing in it was changed)\n";
  out << absl::StrFormat("  %-16s %s\n", "opens at start",
                         r.opens ? "yes: RocksDB's open checks pass (manifest, SST sizes, "
                                   "footers and indexes, WAL records)"
                                 : absl::StrCat("NO: ", r.open_error));
  out << absl::StrFormat(
      "  %-16s %u checked, %s, every block against its checksum: %s\n", "SST files",
      r.sst_files.size(), Bytes(sst_bytes),
      damaged_files == 0 ? std::string("all whole") : absl::StrCat(damaged_files, " damaged"));
  out << absl::StrFormat("  %-16s %u replayed, %s\n", "WAL files", r.wal_files.size(),
                         Bytes(r.wal_bytes));
  out << absl::StrFormat("  %-16s %u in %u partition%s, sequences checked dense from 0\n", "events",
                         r.events, r.partitions, r.partitions == 1 ? "" : "s");
  if (!r.note.empty()) out << absl::StrFormat("  %-16s %s\n", "not checked", r.note);
  out << absl::StrFormat("  %-16s %s\n", "events parsed",
                         r.deep ? absl::StrCat(r.parsed, " (--deep)")
                                : std::string("not parsed (--deep parses every event)"));
  out << absl::StrFormat("  %-16s %.2f s\n", "time", absl::ToDoubleSeconds(r.elapsed));
  if (!r.sst_files.empty()) {
    out << "files:\n";
    for (const kernel::CheckedFile& f : r.sst_files) {
      out << absl::StrFormat("  %-7s %-11s L%-2d %10s  %s  %s\n", f.whole ? "whole" : "DAMAGED",
                             f.column_family, f.level, Bytes(f.bytes), f.path, f.range);
    }
  }
  if (r.whole()) {
    out << "whole: no damage found\n";
    return;
  }
  out << absl::StrFormat("DAMAGED: %u problem%s\n", r.damage.size(),
                         r.damage.size() == 1 ? "" : "s");
  for (const kernel::Damage& d : r.damage) {
    out << "damage: " << (d.file.empty() ? std::string("(no single file)") : d.file) << ": "
        << d.what << "; range: " << d.range << "; to do: " << d.action << "\n";
  }
  out << (r.opens ? "cityops serve still starts on this log (RocksDB's open checks pass), but "
                    "fails where it reads the damage; restore before it does"
                  : "cityops serve refuses to start on this log")
      << "; run this again on the restored copy\n";
}

}  // namespace

absl::StatusOr<bool> VerifyLogCommand(const VerifyCommandOptions& options, std::ostream& out,
                                      std::ostream& progress) {
  std::unique_ptr<analysis::Progress> bar;
  kernel::VerifyOptions verify;
  verify.path = options.data_dir;
  verify.deep = options.deep;
  verify.phase = [&](std::string_view phase, std::string_view unit, uint64_t total) {
    if (bar != nullptr) bar->Finish();
    bar = std::make_unique<analysis::Progress>(
        progress, analysis::ProgressOptions{.what = absl::StrCat("verify: ", std::string(phase)),
                                            .total = total,
                                            .unit = std::string(unit)});
  };
  verify.advance = [&](uint64_t n) {
    if (bar != nullptr) bar->Advance(n);
  };
  absl::StatusOr<kernel::VerifyReport> report = kernel::VerifyLog(verify);
  if (bar != nullptr) bar->Finish();
  if (!report.ok()) {
    return analysis::ExplainLogInUse(report.status(), options.data_dir, "log verify");
  }
  if (options.json) {
    PrintVerifyJson(*report, out);
  } else {
    PrintVerifyTable(*report, out);
  }
  return report->whole();
}

absl::Status UpgradeLogCommand(const UpgradeCommandOptions& options, std::ostream& out,
                               std::ostream& progress) {
  std::unique_ptr<analysis::Progress> bar;
  kernel::UpgradeOptions upgrade;
  upgrade.path = options.data_dir;
  upgrade.begin = [&](uint64_t total) {
    bar = std::make_unique<analysis::Progress>(
        progress, analysis::ProgressOptions{.what = "upgrade: copying events", .total = total});
  };
  upgrade.advance = [&](uint64_t n) {
    if (bar != nullptr) bar->Advance(n);
  };
  absl::StatusOr<kernel::UpgradeReport> report = kernel::UpgradeLog(upgrade);
  if (bar != nullptr) bar->Finish();
  // A log in use is refused with the kernel's words ("stop the other one"): an upgrade
  // works on the log itself, never on a copy.
  if (!report.ok()) return report.status();
  const kernel::UpgradeReport& r = *report;
  if (options.json) {
    nlohmann::ordered_json j;
    j["data_dir"] = r.path;
    j["from_version"] = r.from_version;
    j["to_version"] = r.to_version;
    j["already_current"] = r.already_current;
    j["events"] = r.events;
    j["partitions"] = r.partitions;
    j["seconds"] = absl::ToDoubleSeconds(r.elapsed);
    out << j.dump(2) << "\n";
  } else if (r.already_current) {
    out << absl::StrFormat("%s is already in format version %u: nothing to do\n", r.path,
                           r.to_version);
  } else {
    out << absl::StrFormat(
        "upgraded %s from format version %u to %u: %s events in %u partition%s, every byte "
        "kept, in %.1f s\n",
        r.path, r.from_version, r.to_version, analysis::WithThousands(r.events), r.partitions,
        r.partitions == 1 ? "" : "s", absl::ToDoubleSeconds(r.elapsed));
  }
  return absl::OkStatus();
}

}  // namespace cityops::app
