// The event log against bare RocksDB on the same machine, in the same run.
//
// Appends N realistic reading events (batches of 1000, each with its source position,
// default durability: one WAL fsync per batch) and scans them back, with cityops'
// EventLog and with bare RocksDB writing the same keys, the same value bytes and the same
// options. Inputs are built outside the timed regions, in chunks, so memory stays
// bounded; the two sides alternate chunk by chunk so that drift of the machine (page
// cache, compactions) hits both alike.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "ingest/envelope.h"
#include "ingest/partitioner.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "rocksdb/db.h"
#include "sim/reading_generator.h"

namespace cityops::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

// Bare RocksDB with the log's options and key layout: an events family and one other
// family for the position, no cityops code on the write or scan path.
class BareLog {
 public:
  explicit BareLog(const std::string& path) {
    rocksdb::DBOptions options = kernel::format::LogDbOptions();
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, kernel::format::IndexCfOptions()},
        {"events", kernel::format::EventsCfOptions()}};
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, path, families, &handles_, &db);
    if (!s.ok()) throw std::runtime_error(s.ToString());
    db_.reset(db);
    sync_.sync = true;
  }
  ~BareLog() {
    for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
  }

  void Append(uint32_t partition, uint64_t first, const std::vector<std::string>& values,
              size_t begin, size_t end, uint64_t next_offset) {
    rocksdb::WriteBatch batch;
    char key[kernel::format::kEventKeySize];
    for (size_t i = begin; i < end; ++i) {
      kernel::format::EncodeEventKey(kernel::Partition(partition),
                                     kernel::Sequence(first + i - begin), key);
      batch.Put(handles_[1], rocksdb::Slice(key, sizeof(key)), values[i]);
    }
    char offset[8];
    kernel::format::PutBigEndian64(next_offset, offset);
    batch.Put(handles_[0], "s:cityops.readings:0", rocksdb::Slice(offset, sizeof(offset)));
    rocksdb::Status s = db_->Write(sync_, &batch);
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }

  uint64_t Scan(size_t* bytes) {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, handles_[1]));
    uint64_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      *bytes += it->value().size();
      ++n;
    }
    return n;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::WriteOptions sync_;
};

long PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

int Run(int argc, char** argv) {
  CLI::App app{"Event log append and scan rates against bare RocksDB"};
  uint64_t events = 5'000'000;
  size_t batch = 1000;
  size_t chunk = 500'000;
  size_t devices = 100'000;
  uint64_t seed = 1;
  std::string dir;
  app.add_option("--events", events, "Events to append (default 5,000,000)");
  app.add_option("--batch", batch, "Events per append (default 1000)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--chunk", chunk, "Events prepared per round (default 500,000)")
      ->check(CLI::Range(1000, 100000000));
  app.add_option("--devices", devices, "Simulated devices (default 100,000)");
  app.add_option("--seed", seed, "Generator seed (default 1)");
  app.add_option("--dir", dir, "Scratch directory (default: a new one under /tmp, removed)");
  CLI11_PARSE(app, argc, argv);

  const bool own_dir = dir.empty();
  if (own_dir) {
    char pattern[] = "/tmp/cityops-log-bench-XXXXXX";
    if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir = pattern;
  }
  const std::string log_path = dir + "/cityops";
  const std::string bare_path = dir + "/bare";

  // A fixed recorded time so that both sides store byte-identical values.
  kernel::ManualClock clock(absl::FromUnixSeconds(1'790'000'000));
  kernel::EventLogOptions options;
  options.path = log_path;
  options.clock = &clock;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(options);
  if (!log.ok()) {
    std::fprintf(stderr, "log_bench: %s\n", log.status().ToString().c_str());
    return 1;
  }
  BareLog bare(bare_path);

  sim::FleetOptions fleet;
  fleet.seed = seed;
  fleet.devices = devices;
  sim::ReadingGenerator generator(fleet);
  google::protobuf::Timestamp recorded;
  recorded.set_seconds(1'790'000'000);

  double cityops_append_s = 0;
  double bare_append_s = 0;
  size_t value_bytes = 0;
  size_t min_value = SIZE_MAX;
  size_t max_value = 0;
  uint64_t done = 0;
  std::vector<v1::Event> pending;
  std::vector<std::string> values;
  v1::SensorReading reading;
  int round = 0;
  while (done < events) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, events - done));
    // Untimed: the events as ingest hands them to the log, and their stored bytes.
    pending.clear();
    values.clear();
    pending.reserve(n);
    values.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      generator.Next(&reading);
      pending.push_back(ingest::ReadingEvent(reading, "cityops.readings", 0,
                                             static_cast<int64_t>(done + i), false));
      v1::Event stored = pending.back();
      *stored.mutable_recorded_time() = recorded;
      values.push_back(stored.SerializeAsString());
      value_bytes += values.back().size();
      min_value = std::min(min_value, values.back().size());
      max_value = std::max(max_value, values.back().size());
    }
    auto cityops_round = [&] {
      const auto t0 = SteadyClock::now();
      for (size_t begin = 0; begin < n; begin += batch) {
        const size_t end = std::min(n, begin + batch);
        kernel::AppendBatch b{kernel::Partition(0)};
        for (size_t i = begin; i < end; ++i) b.Add(std::move(pending[i]));
        b.SetSourcePosition("cityops.readings", 0,
                            kernel::KafkaOffset(static_cast<int64_t>(done + end)));
        absl::StatusOr<kernel::AppendResult> r = (*log)->Append(std::move(b));
        if (!r.ok()) throw std::runtime_error(r.status().ToString());
      }
      cityops_append_s += Seconds(t0);
    };
    auto bare_round = [&] {
      const auto t0 = SteadyClock::now();
      for (size_t begin = 0; begin < n; begin += batch) {
        const size_t end = std::min(n, begin + batch);
        bare.Append(0, done + begin, values, begin, end, done + end);
      }
      bare_append_s += Seconds(t0);
    };
    if (round++ % 2 == 0) {
      cityops_round();
      bare_round();
    } else {
      bare_round();
      cityops_round();
    }
    done += n;
    std::fprintf(stderr, "\r%llu / %llu events appended", static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(events));
  }
  std::fprintf(stderr, "\n");
  pending = {};
  values = {};

  // Scans: raw (the fold fast path), decoded (raw + ParseEvent), bare iterator.
  size_t bytes = 0;
  uint64_t count = 0;
  auto t0 = SteadyClock::now();
  absl::Status s = (*log)->Scan(kernel::Partition(0), kernel::Sequence(0),
                                [&](kernel::Sequence, std::string_view v) {
                                  bytes += v.size();
                                  ++count;
                                  return true;
                                });
  const double cityops_scan_s = Seconds(t0);
  if (!s.ok() || count != events) {
    std::fprintf(stderr, "log_bench: scan saw %llu of %llu events: %s\n",
                 static_cast<unsigned long long>(count), static_cast<unsigned long long>(events),
                 s.ToString().c_str());
    return 1;
  }
  size_t bare_bytes = 0;
  t0 = SteadyClock::now();
  const uint64_t bare_count = bare.Scan(&bare_bytes);
  const double bare_scan_s = Seconds(t0);
  if (bare_count != events || bare_bytes != bytes) {
    std::fprintf(stderr, "log_bench: bare scan differs (%llu events, %zu vs %zu bytes)\n",
                 static_cast<unsigned long long>(bare_count), bare_bytes, bytes);
    return 1;
  }
  v1::Event event;
  uint64_t decoded = 0;
  t0 = SteadyClock::now();
  s = (*log)->Scan(
      kernel::Partition(0), kernel::Sequence(0), [&](kernel::Sequence seq, std::string_view v) {
        if (!kernel::EventLog::ParseEvent({kernel::Partition(0), seq}, v, &event).ok()) {
          return false;
        }
        decoded += event.has_reading();
        return true;
      });
  const double decoded_scan_s = Seconds(t0);
  if (!s.ok() || decoded != events) {
    std::fprintf(stderr, "log_bench: decoded scan failed\n");
    return 1;
  }

  const double n = static_cast<double>(events);
  const double mib = static_cast<double>(value_bytes) / (1 << 20);
  std::printf("log_bench: %llu reading events, batches of %zu, WAL fsync per batch, %u cores\n",
              static_cast<unsigned long long>(events), batch, std::thread::hardware_concurrency());
  std::printf("event value bytes: mean %.1f, min %zu, max %zu; %zu devices, seed %llu\n",
              static_cast<double>(value_bytes) / n, min_value, max_value, devices,
              static_cast<unsigned long long>(seed));
  std::printf("%-28s %14s %10s %8s\n", "", "events/s", "MiB/s", "ratio");
  std::printf("%-28s %14.0f %10.1f %8s\n", "append, bare RocksDB", n / bare_append_s,
              mib / bare_append_s, "1.00");
  std::printf("%-28s %14.0f %10.1f %8.2f\n", "append, cityops EventLog", n / cityops_append_s,
              mib / cityops_append_s, bare_append_s / cityops_append_s);
  std::printf("%-28s %14.0f %10.1f %8s\n", "scan, bare RocksDB", n / bare_scan_s, mib / bare_scan_s,
              "1.00");
  std::printf("%-28s %14.0f %10.1f %8.2f\n", "scan, cityops Scan (raw)", n / cityops_scan_s,
              mib / cityops_scan_s, bare_scan_s / cityops_scan_s);
  std::printf("%-28s %14.0f %10.1f %8.2f\n", "scan, cityops + ParseEvent", n / decoded_scan_s,
              mib / decoded_scan_s, bare_scan_s / decoded_scan_s);
  std::printf("peak RSS: %ld MiB\n", PeakRssMiB());

  log->reset();
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
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
