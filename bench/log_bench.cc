// The event log against bare RocksDB on the same machine, in the same run.
//
// Appends N realistic reading events (batches of 1000, each with its source position,
// default durability: one WAL fsync per batch) and scans them back, with cityops'
// EventLog and with bare RocksDB writing the same keys, the same value bytes and the same
// options. Inputs are built outside the timed regions, in chunks, so memory stays
// bounded; the two sides alternate chunk by chunk (and scan twice, in opposite orders)
// so that drift of the machine (page cache, compactions, the disk) hits both alike.
//
// What is timed on each side, per batch:
//   cityops  EventLog::Append of a reused AppendBatch whose v1::Event objects were just
//            refilled in place (untimed), as ingest hands them over: the log validates,
//            stamps, serializes, indexes, builds the WriteBatch and writes it synced.
//   bare     building a rocksdb::WriteBatch of the already serialized bytes (the same
//            bytes the log stores, checked after the run) plus one position Put, and
//            writing it synced.
// So the gap between the two is everything the log does beyond RocksDB, including
// protobuf serialization; serializing (and, for a caller that does not reuse its
// events, destroying them) is also measured alone and printed for information.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bare_rocksdb.h"
#include "bench/scratch_dir.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "sim/reading_generator.h"

namespace cityops::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view kTopic = "cityops.readings";
// Recorded time stamped by the log's clock; the bare side stores the same bytes.
constexpr int64_t kRecordedUnixSeconds = 1'790'000'000;

double Seconds(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

struct BenchOptions {
  uint64_t events = 5'000'000;
  size_t batch = 1000;
  size_t chunk = 500'000;
  size_t devices = 100'000;
  uint32_t partitions = 1;
  uint64_t seed = 1;
  std::string dir;
  // Both sides skip the fsync (Durability::kBuffered; WriteOptions::sync = false).
  bool buffered = false;
};

// Serialized events, back to back in one buffer: about 170 bytes per event and no
// per-event allocation, so a chunk of inputs stays compact.
class PackedValues {
 public:
  void Clear() {
    bytes_.clear();
    ends_.clear();
  }
  void Add(const v1::Event& event) {
    const size_t size = event.ByteSizeLong();
    const size_t begin = bytes_.size();
    bytes_.resize(begin + size);
    event.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(bytes_.data() + begin));
    ends_.push_back(bytes_.size());
  }
  size_t size() const { return ends_.size(); }
  size_t total_bytes() const { return bytes_.size(); }
  rocksdb::Slice operator[](size_t i) const {
    const size_t begin = i == 0 ? 0 : ends_[i - 1];
    return rocksdb::Slice(bytes_.data() + begin, ends_[i] - begin);
  }

 private:
  std::string bytes_;
  std::vector<size_t> ends_;
};

// One append: values [begin, end) of one partition's buffer in the chunk.
struct BatchPlan {
  uint32_t partition = 0;
  size_t begin = 0;
  size_t end = 0;
  uint64_t first_sequence = 0;
  int64_t next_offset = 0;  // Kafka offset after the batch's last record.
};

// The inputs of one chunk, built untimed: the stored bytes per partition and the
// appends in the order their batches filled up.
struct Chunk {
  std::vector<PackedValues> values;  // By partition.
  std::vector<BatchPlan> batches;
};

// Builds the inputs as ingest would: readings routed to partitions by Kafka's default
// partitioner on the device id, one Kafka offset sequence per partition, a batch per
// partition appended when it holds `batch` events.
class InputBuilder {
 public:
  explicit InputBuilder(const BenchOptions& options)
      : options_(options),
        generator_(Fleet(options)),
        pending_(options.partitions),
        next_offset_(options.partitions, 0),
        next_sequence_(options.partitions, 0) {
    recorded_.set_seconds(kRecordedUnixSeconds);
  }

  // Fills `chunk` with the next `n` events; partly filled batches are closed at the end
  // of the chunk. Adds to `*serialize_seconds` and `*destroy_seconds` the time spent
  // serializing the events and destroying them afterwards (hot in cache): work that
  // EventLog::Append does inside its timed region (it takes the events over) and bare
  // RocksDB does not.
  void Next(size_t n, Chunk* chunk, double* serialize_seconds, double* destroy_seconds) {
    chunk->values.resize(options_.partitions);
    for (PackedValues& v : chunk->values) v.Clear();
    chunk->batches.clear();
    for (size_t i = 0; i < n; ++i) {
      generator_.Next(&reading_);
      const uint32_t p = static_cast<uint32_t>(ingest::KafkaPartitionFor(
          reading_.device_id(), static_cast<int32_t>(options_.partitions)));
      v1::Event e = ingest::ReadingEvent(reading_, kTopic, static_cast<int32_t>(p),
                                         next_offset_[p]++, /*device_unregistered=*/false);
      // The log stamps this very value (its clock is fixed), so both sides store
      // byte-identical records.
      *e.mutable_recorded_time() = recorded_;
      pending_[p].push_back(std::move(e));
      if (pending_[p].size() == options_.batch) {
        Close(p, chunk, serialize_seconds, destroy_seconds);
      }
    }
    for (uint32_t p = 0; p < options_.partitions; ++p) {
      if (!pending_[p].empty()) Close(p, chunk, serialize_seconds, destroy_seconds);
    }
  }

 private:
  void Close(uint32_t p, Chunk* chunk, double* serialize_seconds, double* destroy_seconds) {
    PackedValues& values = chunk->values[p];
    const size_t begin = values.size();
    const auto t0 = SteadyClock::now();
    for (const v1::Event& e : pending_[p]) values.Add(e);
    *serialize_seconds += Seconds(t0);
    const size_t count = pending_[p].size();
    chunk->batches.push_back(BatchPlan{p, begin, begin + count, next_sequence_[p],
                                       pending_[p].back().provenance().kafka().offset() + 1});
    next_sequence_[p] += count;
    const auto t1 = SteadyClock::now();
    pending_[p].clear();
    *destroy_seconds += Seconds(t1);
  }

  static sim::FleetOptions Fleet(const BenchOptions& options) {
    sim::FleetOptions fleet;
    fleet.seed = options.seed;
    fleet.devices = options.devices;
    return fleet;
  }

  const BenchOptions& options_;
  sim::ReadingGenerator generator_;
  v1::SensorReading reading_;
  google::protobuf::Timestamp recorded_;
  std::vector<std::vector<v1::Event>> pending_;  // By partition.
  std::vector<int64_t> next_offset_;
  std::vector<uint64_t> next_sequence_;
};

// Bare RocksDB with the log's options and key layout: an events family and one other
// family for the positions, no cityops code on the write or scan path (only the key
// encoder, which is the layout under test).
class BareLog {
 public:
  BareLog(const std::string& path, uint32_t partitions, bool sync)
      : store_(path, sync ? kernel::Durability::kSyncEachAppend : kernel::Durability::kBuffered) {
    for (uint32_t p = 0; p < partitions; ++p) {
      // Built once, outside the timed path: the same key the log uses.
      position_keys_.push_back(kernel::format::SourcePositionKey(kTopic, static_cast<int32_t>(p)));
    }
  }

  void Append(const BatchPlan& plan, const PackedValues& values) {
    rocksdb::WriteBatch batch;
    rocksdb::ColumnFamilyHandle* events = store_.events(kernel::Partition(plan.partition));
    char key[kernel::format::kEventKeySize];
    for (size_t i = plan.begin; i < plan.end; ++i) {
      kernel::format::EncodeEventKey(kernel::Sequence(plan.first_sequence + i - plan.begin), key);
      batch.Put(events, rocksdb::Slice(key, sizeof(key)), values[i]);
    }
    char offset[8];
    kernel::format::PutBigEndian64(static_cast<uint64_t>(plan.next_offset), offset);
    batch.Put(store_.meta(), position_keys_[plan.partition],
              rocksdb::Slice(offset, sizeof(offset)));
    store_.Write(&batch);
  }

  // Calls `visit(value)` for every event, partition by partition, in key order. Untimed
  // checks only.
  template <typename Visit>
  void ForEach(Visit visit) const {
    for (rocksdb::ColumnFamilyHandle* events : store_.events_families()) {
      std::unique_ptr<rocksdb::Iterator> it(
          store_.db()->NewIterator(rocksdb::ReadOptions(), events));
      for (it->SeekToFirst(); it->Valid(); it->Next()) visit(it->value().ToStringView());
      if (!it->status().ok()) {
        throw std::runtime_error(absl::StrCat("bare RocksDB scan: ", it->status().ToString()));
      }
    }
  }

  // Reads every event, partition by partition, as the log's Scan does (no block cache fill).
  uint64_t Scan(uint64_t* bytes) const {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    uint64_t n = 0;
    for (rocksdb::ColumnFamilyHandle* events : store_.events_families()) {
      std::unique_ptr<rocksdb::Iterator> it(store_.db()->NewIterator(ro, events));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        *bytes += it->value().size();
        ++n;
      }
      if (!it->status().ok()) {
        throw std::runtime_error(absl::StrCat("bare RocksDB scan: ", it->status().ToString()));
      }
    }
    return n;
  }

 private:
  BareRocksDb store_;
  std::vector<std::string> position_keys_;
};

long PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;  // KiB on Linux.
}

std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.starts_with("model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string CompressionName(rocksdb::CompressionType type) {
  std::string name;
  if (!rocksdb::GetStringFromCompressionType(&name, type).ok()) return "?";
  return name;
}

void PrintOptions(bool buffered) {
  const rocksdb::DBOptions db = kernel::format::LogDbOptions();
  const rocksdb::ColumnFamilyOptions events = kernel::format::EventsCfOptions();
  const auto* table = events.table_factory->GetOptions<rocksdb::BlockBasedTableOptions>();
  std::printf(
      "options (both sides, kernel::format): WAL on, %s; max_background_jobs %d; "
      "events CF: write_buffer %zu MiB x %d, compression %s (bottommost %s), block %zu KiB, "
      "L1 target %llu MiB\n",
      buffered ? "NO fsync (--buffered)" : "fsync per append", db.max_background_jobs,
      events.write_buffer_size >> 20, events.max_write_buffer_number,
      CompressionName(events.compression).c_str(),
      CompressionName(events.bottommost_compression).c_str(),
      table != nullptr ? table->block_size >> 10 : 0,
      static_cast<unsigned long long>(events.max_bytes_for_level_base >> 20));
}

struct ScanRun {
  double seconds = 0;
  uint64_t events = 0;
  uint64_t bytes = 0;
};

ScanRun ScanCityops(const kernel::EventLog& log, uint32_t partitions) {
  ScanRun run;
  const auto t0 = SteadyClock::now();
  for (uint32_t p = 0; p < partitions; ++p) {
    absl::Status s = log.Scan(kernel::Partition(p), kernel::Sequence(0),
                              [&](kernel::Sequence, std::string_view v) {
                                run.bytes += v.size();
                                ++run.events;
                                return true;
                              });
    if (!s.ok()) throw std::runtime_error(absl::StrCat("cityops scan: ", s.ToString()));
  }
  run.seconds = Seconds(t0);
  return run;
}

ScanRun ScanBare(const BareLog& bare) {
  ScanRun run;
  const auto t0 = SteadyClock::now();
  run.events = bare.Scan(&run.bytes);
  run.seconds = Seconds(t0);
  return run;
}

// Raw scan plus ParseEvent into one reused message: what a projection's fold pays.
ScanRun ScanDecoded(const kernel::EventLog& log, uint32_t partitions) {
  ScanRun run;
  v1::Event event;
  const auto t0 = SteadyClock::now();
  for (uint32_t p = 0; p < partitions; ++p) {
    absl::Status parse_status;
    absl::Status s = log.Scan(
        kernel::Partition(p), kernel::Sequence(0), [&](kernel::Sequence seq, std::string_view v) {
          parse_status = kernel::EventLog::ParseEvent({kernel::Partition(p), seq}, v, &event);
          if (!parse_status.ok() || !event.has_reading()) return false;
          run.bytes += v.size();
          ++run.events;
          return true;
        });
    if (!s.ok() || !parse_status.ok()) {
      throw std::runtime_error(
          absl::StrCat("decoded scan: ", s.ToString(), " / ", parse_status.ToString()));
    }
  }
  run.seconds = Seconds(t0);
  return run;
}

// An order-sensitive digest (FNV-1a over length and bytes) of a sequence of records.
class Digest {
 public:
  void Add(std::string_view record) {
    Mix(static_cast<unsigned char>(record.size() & 0xff));
    Mix(static_cast<unsigned char>(record.size() >> 8));
    for (char c : record) Mix(static_cast<unsigned char>(c));
  }
  uint64_t value() const { return h_; }

 private:
  void Mix(unsigned char c) { h_ = (h_ ^ c) * 0x100000001b3ull; }
  uint64_t h_ = 0xcbf29ce484222325ull;
};

// Untimed: both sides must hold the same records, byte for byte, in the same order.
void CheckSameBytes(const kernel::EventLog& log, uint32_t partitions, const BareLog& bare) {
  Digest cityops;
  for (uint32_t p = 0; p < partitions; ++p) {
    absl::Status s = log.Scan(kernel::Partition(p), kernel::Sequence(0),
                              [&](kernel::Sequence, std::string_view v) {
                                cityops.Add(v);
                                return true;
                              });
    if (!s.ok()) throw std::runtime_error(absl::StrCat("cityops scan: ", s.ToString()));
  }
  Digest plain;
  bare.ForEach([&](std::string_view v) { plain.Add(v); });
  if (cityops.value() != plain.value()) {
    throw std::runtime_error(
        "cityops and bare RocksDB stored different bytes; the comparison is void");
  }
}

void CheckScan(const char* what, const ScanRun& run, uint64_t events, uint64_t bytes) {
  if (run.events != events || run.bytes != bytes) {
    throw std::runtime_error(absl::StrFormat("%s saw %d events / %d bytes, expected %d / %d", what,
                                             run.events, run.bytes, events, bytes));
  }
}

void PrintRow(const char* what, double n, double mib, double seconds, double reference_seconds) {
  const std::string ratio =
      reference_seconds > 0 ? absl::StrFormat("%.2f", reference_seconds / seconds) : "";
  std::printf("%-36s %12.0f %9.1f %7s\n", what, n / seconds, mib / seconds, ratio.c_str());
}

// The figures of one run that the partition comparison needs.
struct RunFigures {
  uint32_t partitions = 0;
  double bare_append_per_s = 0;
  double cityops_append_per_s = 0;
};

RunFigures RunOne(const BenchOptions& o);

int Run(int argc, char** argv) {
  CLI::App app{"Event log append and scan rates against bare RocksDB, in the same run"};
  BenchOptions o;
  std::vector<uint32_t> partition_counts = {1};
  app.add_option("--events", o.events, "Events to append (default 5,000,000)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000}));
  app.add_option("--batch", o.batch, "Events per append (default 1000)")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}));
  app.add_option("--partitions", partition_counts,
                 "Log partitions; readings are routed by device id like Kafka's default "
                 "partitioner (default 1). A list (1,64) runs once per count, one after "
                 "another, and compares their append rates")
      ->delimiter(',')
      ->check(CLI::Range(uint32_t{1}, uint32_t{1024}));
  app.add_option("--chunk", o.chunk,
                 "Events prepared (untimed) per round; the sides alternate per round "
                 "(default 500,000)")
      ->check(CLI::Range(size_t{1000}, size_t{100'000'000}));
  app.add_option("--devices", o.devices, "Simulated devices (default 100,000)")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}));
  app.add_option("--seed", o.seed, "Generator seed (default 1)");
  app.add_option("--dir", o.dir,
                 "Scratch directory, kept afterwards (default: a new one under $TMPDIR or "
                 "/tmp, removed at exit)");
  app.add_flag("--buffered", o.buffered,
               "Informational: no fsync on either side (Durability::kBuffered), which shows the "
               "CPU cost of the log when the disk is not the limit");
  CLI11_PARSE(app, argc, argv);

  std::vector<RunFigures> runs;
  for (size_t i = 0; i < partition_counts.size(); ++i) {
    BenchOptions one = o;
    one.partitions = partition_counts[i];
    if (!o.dir.empty() && partition_counts.size() > 1) {
      one.dir = absl::StrCat(o.dir, "/partitions-", one.partitions);
    }
    if (i > 0) std::printf("\n");
    runs.push_back(RunOne(one));
    std::fflush(stdout);
  }
  if (runs.size() > 1) {
    // The log's layout under many partitions (issue 13: a column family per partition):
    // each count's append rate against the first count's, same machine, one run.
    std::printf("\npartitions compared (cityops append, each against %u partition%s):\n",
                runs[0].partitions, runs[0].partitions == 1 ? "" : "s");
    std::printf("%12s %14s %14s %8s\n", "partitions", "bare events/s", "cityops ev/s", "ratio");
    for (const RunFigures& r : runs) {
      std::printf("%12u %14.0f %14.0f %8.2f\n", r.partitions, r.bare_append_per_s,
                  r.cityops_append_per_s, r.cityops_append_per_s / runs[0].cityops_append_per_s);
    }
    std::printf("target: the largest count >= 0.80 of the first\n");
  }
  return 0;
}

RunFigures RunOne(const BenchOptions& o) {
  const ScratchDir dir(o.dir, "cityops-log-bench-XXXXXX");
  const std::string log_path = dir.path() + "/cityops";
  const std::string bare_path = dir.path() + "/bare";
  for (const std::string& p : {log_path, bare_path}) {
    if (std::filesystem::exists(p)) {
      throw std::runtime_error(
          absl::StrCat(p, " already exists; give --dir an empty directory or remove it"));
    }
  }

  // Declared after `dir`, so both are closed before the directory is removed.
  kernel::ManualClock clock(absl::FromUnixSeconds(kRecordedUnixSeconds));
  kernel::EventLogOptions log_options;
  log_options.path = log_path;
  log_options.clock = &clock;
  if (o.buffered) log_options.durability = kernel::Durability::kBuffered;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(log_options);
  if (!log.ok()) throw std::runtime_error(log.status().ToString());
  BareLog bare(bare_path, o.partitions, /*sync=*/!o.buffered);

  InputBuilder inputs(o);
  Chunk chunk;
  double cityops_append_s = 0;
  double bare_append_s = 0;
  double serialize_s = 0;
  double destroy_s = 0;
  double worst_chunk_ratio = 1e9;
  double best_chunk_ratio = 0;
  uint64_t value_bytes = 0;
  size_t min_value = SIZE_MAX;
  size_t max_value = 0;
  uint64_t appends = 0;
  uint64_t done = 0;
  int round = 0;
  const bool progress = isatty(STDERR_FILENO) != 0;
  std::map<uint32_t, kernel::AppendBatch> reusable;  // One batch per partition, reused.
  while (done < o.events) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(o.chunk, o.events - done));
    inputs.Next(n, &chunk, &serialize_s, &destroy_s);  // Untimed for the append figures.
    for (const PackedValues& values : chunk.values) {
      for (size_t i = 0; i < values.size(); ++i) {
        min_value = std::min(min_value, values[i].size());
        max_value = std::max(max_value, values[i].size());
      }
      value_bytes += values.total_bytes();
    }

    double cityops_s = 0;
    double bare_s = 0;
    auto cityops_round = [&] {
      for (const BatchPlan& plan : chunk.batches) {
        // Untimed: the batch's events as ingest hands them over, freshly built (hot in
        // cache), decoded from the very bytes the bare side writes.
        // The batch is reused across appends, as ingest reuses its own: its events'
        // memory is kept and refilled in place (AppendBatch::Clear/AddNew).
        kernel::AppendBatch& b =
            reusable.try_emplace(plan.partition, kernel::Partition(plan.partition)).first->second;
        b.Clear();
        const PackedValues& values = chunk.values[plan.partition];
        for (size_t i = plan.begin; i < plan.end; ++i) {
          v1::Event* e = b.AddNew();
          if (!e->ParseFromArray(values[i].data(), static_cast<int>(values[i].size()))) {
            throw std::runtime_error("cannot decode a generated event");
          }
        }
        b.SetSourcePosition(std::string(kTopic), static_cast<int32_t>(plan.partition),
                            kernel::KafkaOffset(plan.next_offset));
        // Timed: the append (validate, stamp, serialize, index, write synced).
        const auto t0 = SteadyClock::now();
        absl::StatusOr<kernel::AppendResult> r = (*log)->Append(b);
        cityops_s += Seconds(t0);
        if (!r.ok()) throw std::runtime_error(r.status().ToString());
        if (r->appended != plan.end - plan.begin ||
            r->next.value() != plan.first_sequence + r->appended) {
          throw std::runtime_error(absl::StrFormat(
              "cityops append to partition %u: %d appended, next %d; expected %d from %d",
              plan.partition, r->appended, r->next.value(), plan.end - plan.begin,
              plan.first_sequence));
        }
      }
    };
    auto bare_round = [&] {
      const auto t0 = SteadyClock::now();
      for (const BatchPlan& plan : chunk.batches) bare.Append(plan, chunk.values[plan.partition]);
      bare_s = Seconds(t0);
    };
    if (round++ % 2 == 0) {
      cityops_round();
      bare_round();
    } else {
      bare_round();
      cityops_round();
    }
    cityops_append_s += cityops_s;
    bare_append_s += bare_s;
    worst_chunk_ratio = std::min(worst_chunk_ratio, bare_s / cityops_s);
    best_chunk_ratio = std::max(best_chunk_ratio, bare_s / cityops_s);
    appends += chunk.batches.size();
    done += n;
    if (progress) {
      std::fprintf(stderr, "\r%llu / %llu events appended", static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(o.events));
    }
  }
  if (progress) std::fprintf(stderr, "\n");
  chunk = Chunk();

  // Scans, twice each in opposite orders: the first pass after the appends can meet
  // compactions still running.
  std::vector<ScanRun> cityops_scans;
  std::vector<ScanRun> bare_scans;
  cityops_scans.push_back(ScanCityops(**log, o.partitions));
  bare_scans.push_back(ScanBare(bare));
  bare_scans.push_back(ScanBare(bare));
  cityops_scans.push_back(ScanCityops(**log, o.partitions));
  for (const ScanRun& r : cityops_scans) CheckScan("cityops scan", r, o.events, value_bytes);
  for (const ScanRun& r : bare_scans) CheckScan("bare scan", r, o.events, value_bytes);
  const ScanRun decoded = ScanDecoded(**log, o.partitions);
  CheckScan("decoded scan", decoded, o.events, value_bytes);
  CheckSameBytes(**log, o.partitions, bare);
  auto best = [](const std::vector<ScanRun>& runs) {
    return std::min_element(
               runs.begin(), runs.end(),
               [](const ScanRun& a, const ScanRun& b) { return a.seconds < b.seconds; })
        ->seconds;
  };
  const double cityops_scan_s = best(cityops_scans);
  const double bare_scan_s = best(bare_scans);

  const double n = static_cast<double>(o.events);
  const double mib = static_cast<double>(value_bytes) / (1 << 20);
  std::printf(
      "log_bench: %llu reading events, %llu appends (batches of %zu), %u partition%s, "
      "%s\n",
      static_cast<unsigned long long>(o.events), static_cast<unsigned long long>(appends), o.batch,
      o.partitions, o.partitions == 1 ? "" : "s",
      o.buffered ? "WAL without fsync (--buffered)" : "WAL fsync per append");
  std::printf("machine: %u cores (%s), %lld MiB RAM; data in %s\n",
              std::thread::hardware_concurrency(), CpuModel().c_str(),
              static_cast<long long>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE) >> 20,
              dir.path().c_str());
  std::printf(
      "values: mean %.1f bytes, min %zu, max %zu (stored Event records); %zu devices, "
      "seed %llu\n",
      static_cast<double>(value_bytes) / n, min_value, max_value, o.devices,
      static_cast<unsigned long long>(o.seed));
  PrintOptions(o.buffered);
  std::printf("\n%-36s %12s %9s %7s\n", "", "events/s", "MiB/s", "ratio");
  PrintRow("append, bare RocksDB", n, mib, bare_append_s, 0);
  PrintRow("append, cityops EventLog", n, mib, cityops_append_s, bare_append_s);
  PrintRow("scan, bare RocksDB (best of 2)", n, mib, bare_scan_s, 0);
  PrintRow("scan, cityops Scan raw (best of 2)", n, mib, cityops_scan_s, bare_scan_s);
  PrintRow("scan, cityops Scan + ParseEvent", n, mib, decoded.seconds, bare_scan_s);
  PrintRow("info: protobuf serialize only", n, mib, serialize_s, 0);
  PrintRow("info: destroying v1::Event only", n, mib, destroy_s, 0);
  std::printf("\nappend ratio per chunk: %.2f .. %.2f over %d chunks (sides alternate)\n",
              worst_chunk_ratio, best_chunk_ratio, round);
  std::printf("scan runs, events/s: cityops %.0f then %.0f; bare %.0f then %.0f\n",
              n / cityops_scans[0].seconds, n / cityops_scans[1].seconds, n / bare_scans[0].seconds,
              n / bare_scans[1].seconds);
  std::printf(
      "cityops append per event = bare %.2f us + %.2f us; serializing takes %.2f us of that "
      "(destroying events would add %.2f us; the reused batch avoids it)\n",
      bare_append_s / n * 1e6, (cityops_append_s - bare_append_s) / n * 1e6, serialize_s / n * 1e6,
      destroy_s / n * 1e6);
  std::printf("checked: same record bytes on both sides; dense sequences; %llu events each\n",
              static_cast<unsigned long long>(o.events));
  std::printf("peak RSS: %ld MiB\n", PeakRssMiB());
  if (!dir.owned()) std::printf("data kept in %s\n", dir.path().c_str());
  return RunFigures{o.partitions, n / bare_append_s, n / cityops_append_s};
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  try {
    return cityops::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "log_bench: %s\n", e.what());
    return 1;
  }
}
