// Damage to the event log, found: `cityops log verify` (the built binary, as people run
// it) on logs damaged on purpose in temporary directories (a flipped SST data block, a
// flipped WAL record, an SST file cut in half, a gap in a partition's sequences, an event
// that does not parse), and `cityops serve` refusing to start on a damaged log.
#include "kernel/log_verify.h"

#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "tests/testing/child_process.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/temp_dir.h"

namespace cityops {
namespace {

namespace fs = std::filesystem;
using kernel::AppendBatch;
using kernel::EventLog;
using kernel::EventLogOptions;
using kernel::ManualClock;
using kernel::Partition;
using kernel::Sequence;
using testing::ChildProcess;
using testing::TempDir;

constexpr uint32_t kPartitions = 3;
constexpr int kReadingsPerPartition = 1500;
constexpr int kBatch = 100;
constexpr int kCases = 20;  // On partition 0: indexed, so the streams family has entries.
constexpr uint64_t kEvents = kPartitions * kReadingsPerPartition + kCases;

EventLogOptions Options(const std::string& path, const kernel::Clock* clock) {
  EventLogOptions options;
  options.path = path;
  options.clock = clock;
  return options;
}

// Appends the test's events (readings on every partition, cases on partition 0) to the
// log at `path`, then closes it. With `flush`, the log is opened once more and closed,
// which makes RocksDB write what the WAL holds into SST files.
void WriteLog(const std::string& path, bool flush) {
  ManualClock clock(testing::kTestNow);
  {
    absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(Options(path, &clock));
    REQUIRE(log.ok());
    for (uint32_t p = 0; p < kPartitions; ++p) {
      for (int start = 0; start < kReadingsPerPartition; start += kBatch) {
        AppendBatch batch{Partition(p)};
        for (int i = start; i < start + kBatch; ++i) {
          batch.Add(testing::ReadingEvent(absl::StrCat("mc-", p, "-", i % 37), i,
                                          static_cast<int32_t>(p)));
        }
        batch.SetSourcePosition(testing::kReadingsTopic, static_cast<int32_t>(p),
                                kernel::KafkaOffset(start + kBatch));
        REQUIRE((*log)->Append(std::move(batch)).ok());
      }
    }
    AppendBatch cases{Partition(0)};
    for (int i = 0; i < kCases; ++i) {
      cases.Add(testing::CaseReportedEvent(absl::StrCat("c", i), absl::StrCat("req-", i)));
    }
    REQUIRE((*log)->Append(std::move(cases)).ok());
  }
  if (flush) {
    absl::StatusOr<std::unique_ptr<EventLog>> reopened = EventLog::Open(Options(path, &clock));
    REQUIRE(reopened.ok());
  }
}

std::vector<std::string> FilesEndingIn(const std::string& dir, const std::string& extension) {
  std::vector<std::string> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == extension) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The largest file of `files`: the events family's SST (it holds nearly all the bytes).
std::string Largest(const std::vector<std::string>& files) {
  REQUIRE(!files.empty());
  return *std::max_element(files.begin(), files.end(), [](const auto& a, const auto& b) {
    return fs::file_size(a) < fs::file_size(b);
  });
}

// Inverts `n` bytes of `path` at `offset`.
void FlipBytes(const std::string& path, uint64_t offset, size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f.good());
  std::string bytes(n, '\0');
  f.seekg(static_cast<std::streamoff>(offset));
  f.read(bytes.data(), static_cast<std::streamsize>(n));
  REQUIRE(f.gcount() == static_cast<std::streamsize>(n));
  for (char& c : bytes) c = static_cast<char>(~c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(n));
  REQUIRE(f.good());
}

struct Run {
  int exit_code = -1;
  std::string out;
};

// Runs `cityops log verify --data-dir DIR` with `extra` arguments; stderr goes to the
// test's output.
Run Verify(const std::string& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {CITYOPS_BINARY, "log", "verify", "--data-dir", dir};
  for (std::string& a : extra) argv.push_back(std::move(a));
  ChildProcess child(argv);
  child.CloseStdin();
  child.ReadToEnd();
  const int status = child.Wait();
  Run run;
  run.out = child.output();
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  return run;
}

nlohmann::json VerifyJson(const std::string& dir, int expected_exit,
                          std::vector<std::string> extra = {}) {
  extra.push_back("--json");
  const Run run = Verify(dir, std::move(extra));
  INFO(run.out);
  REQUIRE(run.exit_code == expected_exit);
  nlohmann::json j = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  REQUIRE(!j.is_discarded());
  return j;
}

// Every file of `dir` but the lock file, with its size and modification time.
std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> Listing(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    if (e.path().filename() == kernel::format::kLockFileName) continue;
    files[e.path().filename().string()] = {e.file_size(), e.last_write_time()};
  }
  return files;
}

TEST_CASE("log verify finds a whole log whole, counts it right and changes nothing",
          "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  WriteLog(data, /*flush=*/true);
  REQUIRE(!FilesEndingIn(data, ".sst").empty());
  const auto before = Listing(data);

  const Run table = Verify(data);
  INFO(table.out);
  CHECK(table.exit_code == 0);
  CHECK_THAT(table.out, Catch::Contains("whole: no damage found"));
  CHECK_THAT(table.out, Catch::Contains(absl::StrCat(kEvents, " in 3 partitions")));

  const nlohmann::json j = VerifyJson(data, 0, {"--deep"});
  CHECK(j["whole"] == true);
  CHECK(j["opens"] == true);
  CHECK(j["events"] == kEvents);
  CHECK(j["partitions"] == kPartitions);
  CHECK(j["parsed"] == kEvents);
  CHECK(j["damage"].empty());
  CHECK(j["sst_files"].size() == FilesEndingIn(data, ".sst").size());
  for (const nlohmann::json& f : j["sst_files"]) CHECK(f["whole"] == true);

  CHECK(Listing(data) == before);
}

TEST_CASE(
    "log verify names an SST file with a flipped data block and its partitions and "
    "sequences",
    "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  WriteLog(data, /*flush=*/true);
  const std::vector<std::string> ssts = FilesEndingIn(data, ".sst");
  REQUIRE(ssts.size() >= 2);
  const std::string damaged = Largest(ssts);
  // Data blocks come first in an SST file, its index and properties last.
  FlipBytes(damaged, fs::file_size(damaged) / 3, 16);

  const Run table = Verify(data);
  INFO(table.out);
  CHECK(table.exit_code == 1);
  CHECK_THAT(table.out, Catch::Contains(absl::StrCat("damage: ", damaged,
                                                     ": SST file of the "
                                                     "'events/")));
  CHECK_THAT(table.out, Catch::Contains("checksum mismatch"));
  CHECK_THAT(table.out, Catch::Contains("cityops log backup"));

  const nlohmann::json j = VerifyJson(data, 1);
  CHECK(j["whole"] == false);
  size_t damaged_files = 0;
  for (const nlohmann::json& f : j["sst_files"]) {
    if (f["whole"] == true) continue;
    ++damaged_files;
    CHECK(f["path"] == damaged);
    // A partition's own family: the file holds that partition's events from its first.
    const std::string family = f["column_family"].get<std::string>();
    REQUIRE(family.starts_with("events/"));
    CHECK_THAT(f["range"].get<std::string>(),
               Catch::Contains(
                   absl::StrCat("events of partition ", family.substr(7), ", sequences 0 to")));
  }
  CHECK(damaged_files == 1);
  CHECK(j["sst_files"].size() == ssts.size());  // The others were checked, and are whole.
  REQUIRE(!j["damage"].empty());
  CHECK(j["damage"][0]["file"] == damaged);
  CHECK_THAT(j["damage"][0]["range"].get<std::string>(),
             Catch::Contains("keys read back, up to partition"));
}

TEST_CASE("log verify finds an SST file cut in half, and the log no longer opens", "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  WriteLog(data, /*flush=*/true);
  const std::string damaged = Largest(FilesEndingIn(data, ".sst"));
  fs::resize_file(damaged, fs::file_size(damaged) / 2);

  const nlohmann::json j = VerifyJson(data, 1);
  CHECK(j["opens"] == false);
  bool named = false;
  for (const nlohmann::json& d : j["damage"]) {
    if (d["file"] != damaged) continue;
    named = true;
    CHECK_THAT(d["what"].get<std::string>(), Catch::Contains("cut short"));
    CHECK_THAT(d["range"].get<std::string>(), Catch::Contains("events of partition "));
    CHECK_THAT(d["range"].get<std::string>(), Catch::Contains(", sequences 0 to "));
  }
  CHECK(named);

  ManualClock clock(testing::kTestNow);
  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(data, &clock));
  INFO(refused.status().ToString());
  CHECK(absl::IsDataLoss(refused.status()));
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains(damaged));
}

// A log whose last appends are only in the WAL (never flushed), with bytes of one WAL
// record in the middle of the file inverted.
std::string DamageWal(const std::string& data) {
  WriteLog(data, /*flush=*/false);
  CHECK(FilesEndingIn(data, ".sst").empty());
  const std::string wal = Largest(FilesEndingIn(data, ".log"));
  uint64_t offset = fs::file_size(wal) / 2;
  // Not into the padding at the end of a 32 KiB WAL block.
  if (offset % 32768 > 32768 - 64) offset -= 64;
  FlipBytes(wal, offset, 4);
  return wal;
}

TEST_CASE("log verify names a WAL file with a damaged record", "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string wal = DamageWal(data);

  const Run table = Verify(data);
  INFO(table.out);
  CHECK(table.exit_code == 1);
  CHECK_THAT(table.out, Catch::Contains("opens at start   NO: Corruption"));
  CHECK_THAT(table.out, Catch::Contains(absl::StrCat("damage: ", wal, ": a damaged WAL record")));

  const nlohmann::json j = VerifyJson(data, 1);
  CHECK(j["opens"] == false);
  REQUIRE(!j["damage"].empty());
  CHECK(j["damage"][0]["file"] == wal);
  CHECK_THAT(j["damage"][0]["what"].get<std::string>(), Catch::Contains("checksum mismatch"));

  ManualClock clock(testing::kTestNow);
  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(data, &clock));
  INFO(refused.status().ToString());
  CHECK(absl::IsDataLoss(refused.status()));
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains(wal));
}

TEST_CASE("under buffered durability the damaged WAL reopens at its last consistent point",
          "[log_verify]") {
  // What a power loss may leave without a sync per append: unsynced WAL pages unwritten or
  // zeroed in the middle of the WAL. The log opens with what came before the damage, each
  // partition dense, with the source positions that make ingest consume the rest again.
  TempDir dir;
  const std::string data = dir.Sub("data");
  DamageWal(data);
  ManualClock clock(testing::kTestNow);
  EventLogOptions buffered = Options(data, &clock);
  buffered.durability = kernel::Durability::kBuffered;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(buffered);
  INFO(log.status().ToString());
  REQUIRE(log.ok());
  uint64_t kept = 0;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const uint64_t next = (*log)->NextSequence(Partition(p)).value();
    kept += next;
    uint64_t scanned = 0;
    REQUIRE((*log)
                ->Scan(Partition(p), kernel::Sequence(0),
                       [&](kernel::Sequence seq, std::string_view) {
                         CHECK(seq.value() == scanned);
                         ++scanned;
                         return true;
                       })
                .ok());
    CHECK(scanned == next);
    // The readings' source position is one past the last one kept (batches of kBatch).
    if (p != 0 && next > 0) {
      absl::StatusOr<std::optional<kernel::KafkaOffset>> position =
          (*log)->StoredSourcePosition(testing::kReadingsTopic, static_cast<int32_t>(p));
      REQUIRE(position.ok());
      REQUIRE(position->has_value());
      CHECK((*position)->value() == static_cast<int64_t>(next));
    }
  }
  CHECK(kept > 0);
  CHECK(kept < kEvents);  // The damaged record and everything after it are gone.
}

TEST_CASE("cityops serve refuses to start on a damaged WAL and says what to do", "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string wal = DamageWal(data);
  testing::DaemonProcess d(data, testing::DaemonProcess::Config(data));
  const int status = d.WaitExit();
  const std::string log = d.log();
  INFO(log);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK_THAT(log, Catch::Contains("refusing to start: the event log in " + data + " is damaged"));
  CHECK_THAT(log, Catch::Contains(wal));
  CHECK_THAT(log, Catch::Contains("cityops log verify --data-dir " + data));
  CHECK_THAT(log, Catch::Contains("restore the data directory from a backup"));
  CHECK_THAT(log, !Catch::Contains("nknown error"));
}

TEST_CASE(
    "log verify finds a gap in a partition's sequences and, deep, an event that does not "
    "parse",
    "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  WriteLog(data, /*flush=*/true);
  {
    // Written past the log, as only damage could: partition 7 with sequences 0-4 and
    // 9, the last not an event.
    rocksdb::DBOptions options = kernel::format::LogDbOptions();
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(options, data, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const std::string& name : names) {
      families.emplace_back(name, kernel::format::PartitionOfEventsCf(name).has_value()
                                      ? kernel::format::EventsCfOptions()
                                      : kernel::format::IndexCfOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(options, data, families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* events = nullptr;
    REQUIRE(db->CreateColumnFamily(kernel::format::EventsCfOptions(),
                                   kernel::format::EventsCfName(Partition(7)), &events)
                .ok());
    handles.push_back(events);
    std::string value;
    testing::ReadingEvent("mc-7", 0, 7).SerializeToString(&value);
    for (uint64_t s = 0; s < 5; ++s) {
      REQUIRE(db->Put(rocksdb::WriteOptions(), events, kernel::format::EventKey(Sequence(s)), value)
                  .ok());
    }
    REQUIRE(db->Put(rocksdb::WriteOptions(), events, kernel::format::EventKey(Sequence(9)),
                    "\xff\xff\xff")
                .ok());
    for (rocksdb::ColumnFamilyHandle* h : handles) REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
    REQUIRE(db->Close().ok());
  }

  const nlohmann::json shallow = VerifyJson(data, 1);
  REQUIRE(shallow["damage"].size() == 1);
  CHECK(shallow["damage"][0]["what"] == "a gap in the sequences: events are missing");
  CHECK(shallow["damage"][0]["range"] == "partition 7, sequences 5 to 8");
  CHECK(shallow["events"] == kEvents + 6);
  CHECK(shallow["partitions"] == kPartitions + 1);

  const nlohmann::json deep = VerifyJson(data, 1, {"--deep"});
  REQUIRE(deep["damage"].size() == 2);
  CHECK(deep["damage"][1]["range"] == "partition 7 sequence 9");
  CHECK_THAT(deep["damage"][1]["what"].get<std::string>(),
             Catch::Contains("not a valid cityops.v1.Event"));
  CHECK(deep["parsed"] == kEvents + 5);
}

TEST_CASE("log verify refuses a log another process holds, and says how to verify a copy",
          "[log_verify]") {
  TempDir dir;
  const std::string data = dir.Sub("data");
  WriteLog(data, /*flush=*/false);
  ManualClock clock(testing::kTestNow);
  absl::StatusOr<std::unique_ptr<EventLog>> held = EventLog::Open(Options(data, &clock));
  REQUIRE(held.ok());
  std::vector<std::string> argv = {CITYOPS_BINARY, "log", "verify", "--data-dir", data};
  const std::string err = dir.Sub("stderr.txt");
  ChildProcess child(argv, err);
  child.CloseStdin();
  child.ReadToEnd();
  const int status = child.Wait();
  std::ifstream in(err);
  const std::string message((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(message);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK_THAT(message, Catch::Contains("is in use by process"));
  CHECK_THAT(message, Catch::Contains("cityops log backup --data-dir " + data));
}

TEST_CASE("log verify without --data-dir is a usage error", "[log_verify]") {
  ChildProcess child({CITYOPS_BINARY, "log", "verify"});
  child.CloseStdin();
  child.ReadToEnd();
  const int status = child.Wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
}

}  // namespace
}  // namespace cityops
