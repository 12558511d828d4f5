// Format version 2 (a column family per partition) and the upgrade of a version-1 log
// (kernel/log_upgrade.h, `cityops log upgrade`): every event's bytes kept, everything else
// as it was, safe to stop and run again, and a damaged version-1 log refused unchanged.
#include "kernel/log_upgrade.h"

#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "tests/testing/child_process.h"
#include "tests/testing/temp_dir.h"

namespace cityops {
namespace {

namespace format = kernel::format;
using kernel::AppendBatch;
using kernel::EventLog;
using kernel::EventLogOptions;
using kernel::KafkaOffset;
using kernel::ManualClock;
using kernel::Partition;
using kernel::Sequence;
using kernel::StageCheckpoint;
using kernel::StreamVersion;
using testing::CaseReportedEvent;
using testing::kReadingsTopic;
using testing::kTestNow;
using testing::ReadingEvent;
using testing::TempDir;

const std::vector<Partition> kPartitions = {Partition(0), Partition(1), Partition(12)};

std::unique_ptr<EventLog> OpenLog(const std::string& path, const kernel::Clock* clock) {
  EventLogOptions options;
  options.path = path;
  options.clock = clock;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(options);
  INFO("opening " << path << ": " << log.status().ToString());
  REQUIRE(log.ok());
  return std::move(*log);
}

// Readings in three partitions, a case stream with two events, source positions, a stage
// checkpoint and a snapshot: something of every family.
void WriteLog(const std::string& path, const kernel::Clock* clock) {
  std::unique_ptr<EventLog> log = OpenLog(path, clock);
  int64_t offset = 0;
  for (int round = 0; round < 40; ++round) {
    std::vector<AppendBatch> batches;
    for (Partition p : kPartitions) {
      AppendBatch& b = batches.emplace_back(p);
      for (int i = 0; i < 25; ++i) {
        b.Add(ReadingEvent(absl::StrCat("mc-", p.value(), "-", i), offset,
                           static_cast<int32_t>(p.value())));
        ++offset;
      }
      b.SetSourcePosition(std::string(kReadingsTopic), static_cast<int32_t>(p.value()),
                          KafkaOffset(offset));
    }
    REQUIRE(log->AppendAll(std::move(batches)).ok());
  }
  AppendBatch cases{Partition(1)};
  cases.Add(CaseReportedEvent("A", "req-1"));
  cases.Add(CaseReportedEvent("B", "req-2"));
  REQUIRE(log->Append(std::move(cases)).ok());
  std::vector<AppendBatch> checkpoint;
  checkpoint.emplace_back(Partition(12)).SetCheckpoint(StageCheckpoint{"rules", Sequence(7), "st"});
  REQUIRE(log->AppendAll(checkpoint, kernel::StageSnapshot{"rules", "snapshot bytes"}).ok());
}

// Everything a reader sees of a log: every event's stored bytes, the positions, the
// checkpoint, the snapshot and the case streams.
struct Contents {
  std::map<std::pair<uint32_t, uint64_t>, std::string> events;
  std::vector<std::pair<std::string, int64_t>> positions;
  std::optional<StageCheckpoint> checkpoint;
  std::optional<std::string> snapshot;
  std::vector<std::string> streams;

  bool operator==(const Contents& o) const {
    return events == o.events && positions == o.positions &&
           checkpoint.has_value() == o.checkpoint.has_value() &&
           (!checkpoint ||
            (checkpoint->next == o.checkpoint->next && checkpoint->state == o.checkpoint->state)) &&
           snapshot == o.snapshot && streams == o.streams;
  }
};

Contents Read(const EventLog& log) {
  Contents c;
  for (Partition p : log.Partitions()) {
    REQUIRE(log.Scan(p, Sequence(0),
                     [&](Sequence s, std::string_view v) {
                       c.events[{p.value(), s.value()}] = std::string(v);
                       return true;
                     })
                .ok());
  }
  absl::StatusOr<std::vector<kernel::SourcePosition>> positions = log.StoredSourcePositions();
  REQUIRE(positions.ok());
  for (const kernel::SourcePosition& p : *positions) {
    c.positions.emplace_back(absl::StrCat(p.topic, "/", p.kafka_partition), p.next_offset.value());
  }
  absl::StatusOr<std::optional<StageCheckpoint>> checkpoint =
      log.StoredCheckpoint(Partition(12), "rules");
  REQUIRE(checkpoint.ok());
  c.checkpoint = *checkpoint;
  absl::StatusOr<std::optional<std::string>> snapshot = log.StoredSnapshot("rules");
  REQUIRE(snapshot.ok());
  c.snapshot = *snapshot;
  for (std::string_view stream : {"case/A", "case/B"}) {
    absl::StatusOr<std::vector<v1::Event>> events = log.ReadStream(stream, StreamVersion(1), 10);
    REQUIRE(events.ok());
    for (const v1::Event& e : *events) c.streams.push_back(e.SerializeAsString());
  }
  return c;
}

// The database of a closed log, every family open, for changes only damage or an older
// cityops could make.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names_).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const std::string& name : names_)
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s =
        rocksdb::DB::Open(rocksdb::DBOptions(), path, families, &handles_, &raw);
    INFO(s.ToString());
    REQUIRE(s.ok());
    db_.reset(raw);
  }
  ~RawDb() {
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h);
    }
    db_->Close().PermitUncheckedError();
  }

  rocksdb::DB* db() { return db_.get(); }
  const std::vector<std::string>& names() const { return names_; }
  rocksdb::ColumnFamilyHandle* Find(std::string_view name) {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == name) return handles_[i];
    }
    return nullptr;
  }
  rocksdb::ColumnFamilyHandle* Create(const std::string& name) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    REQUIRE(db_->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), name, &h).ok());
    names_.push_back(name);
    handles_.push_back(h);
    return h;
  }
  void Drop(std::string_view name) {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] != name) continue;
      REQUIRE(db_->DropColumnFamily(handles_[i]).ok());
      db_->DestroyColumnFamilyHandle(handles_[i]);
      handles_[i] = nullptr;
    }
  }
  void SetVersion(std::string_view version) {
    rocksdb::WriteOptions sync;
    sync.sync = true;
    REQUIRE(db_->Put(sync, format::kFormatVersionKey, std::string(version)).ok());
  }

 private:
  std::vector<std::string> names_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

// Rewrites a closed version-2 log as a version-1 cityops wrote it: every partition's
// events in one family, keyed partition + sequence, nothing else changed. `skip`, if set,
// is an event left out (a gap, as only damage makes).
void WriteAsVersion1(const std::string& path,
                     std::optional<std::pair<uint32_t, uint64_t>> skip = std::nullopt) {
  RawDb raw(path);
  rocksdb::ColumnFamilyHandle* v1 = raw.Create(std::string(format::kVersion1EventsCf));
  for (const std::string& name : std::vector<std::string>(raw.names())) {
    const std::optional<Partition> p = format::PartitionOfEventsCf(name);
    if (!p.has_value()) continue;
    std::unique_ptr<rocksdb::Iterator> it(raw.db()->NewIterator({}, raw.Find(name)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      Sequence s;
      REQUIRE(format::DecodeEventKey(it->key().ToStringView(), &s));
      if (skip == std::make_pair(p->value(), s.value())) continue;
      REQUIRE(raw.db()
                  ->Put({}, v1, format::EncodePosition({*p, s}), it->value())  // 12 bytes.
                  .ok());
    }
    REQUIRE(it->status().ok());
    it.reset();
    raw.Drop(name);
  }
  raw.SetVersion("1");
}

std::vector<std::string> Families(const std::string& path) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::sort(names.begin(), names.end());
  return names;
}

struct Run {
  int exit_code = -1;
  std::string out;
};

Run Cityops(std::vector<std::string> args) {
  args.insert(args.begin(), CITYOPS_BINARY);
  testing::ChildProcess child(args);
  child.CloseStdin();
  child.ReadToEnd();
  const int status = child.Wait();
  Run run;
  run.out = child.output();
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  return run;
}

TEST_CASE("a version 1 log is refused with the upgrade to run, and the upgrade keeps every byte",
          "[log_upgrade]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("data");
  WriteLog(path, &clock);
  const Contents before = Read(*OpenLog(path, &clock));
  REQUIRE(before.events.size() == 40 * 25 * 3 + 2);
  WriteAsVersion1(path);

  EventLogOptions options;
  options.path = path;
  options.clock = &clock;
  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(options);
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(refused.status().message()),
             Catch::Contains("cityops log upgrade --data-dir " + path));
  const Run verify = Cityops({"log", "verify", "--data-dir", path});
  CHECK(verify.exit_code == 2);

  SECTION("at once") {}
  SECTION("after a run that stopped while copying") {
    // What a run stopped in its copy leaves: some partitions' families, partly filled.
    RawDb raw(path);
    REQUIRE(raw.db()->Put({}, raw.Create("events/0"), format::EventKey(Sequence(0)), "part").ok());
    raw.Create("events/12");
  }

  const Run upgrade = Cityops({"log", "upgrade", "--data-dir", path, "--json"});
  INFO(upgrade.out);
  REQUIRE(upgrade.exit_code == 0);
  const nlohmann::json report = nlohmann::json::parse(upgrade.out);
  CHECK(report["from_version"] == 1);
  CHECK(report["to_version"] == format::kFormatVersion);
  CHECK(report["events"] == before.events.size());
  CHECK(report["partitions"] == kPartitions.size());
  CHECK(Families(path) == std::vector<std::string>{"default", "events/0", "events/1", "events/12",
                                                   "idempotency", "positions", "streams"});
  {
    std::unique_ptr<EventLog> log = OpenLog(path, &clock);
    CHECK(Read(*log) == before);
    // And it goes on: the next append to a partition takes the next sequence.
    AppendBatch b{Partition(1)};
    b.Add(ReadingEvent("mc-1-0", 9999, 1));
    absl::StatusOr<kernel::AppendResult> r = log->Append(std::move(b));
    REQUIRE(r.ok());
    CHECK(r->outcomes[0].position.sequence == Sequence(40 * 25 + 2));
  }
  CHECK(Cityops({"log", "verify", "--data-dir", path}).exit_code == 0);

  // A second run finds nothing to do.
  const Run again = Cityops({"log", "upgrade", "--data-dir", path});
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("already in format version"));
}

TEST_CASE("a log whose upgrade stopped after the switch opens, and the old family goes",
          "[log_upgrade]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("data");
  WriteLog(path, &clock);
  const Contents before = Read(*OpenLog(path, &clock));
  {
    // Version 2 written, version 1's family not yet dropped.
    RawDb raw(path);
    rocksdb::ColumnFamilyHandle* old = raw.Create(std::string(format::kVersion1EventsCf));
    REQUIRE(raw.db()->Put({}, old, format::EncodePosition({Partition(0), Sequence(0)}), "x").ok());
  }
  CHECK(Read(*OpenLog(path, &clock)) == before);
  const std::vector<std::string> families = Families(path);
  CHECK(std::find(families.begin(), families.end(), std::string(format::kVersion1EventsCf)) ==
        families.end());
}

TEST_CASE("a version 1 log with a gap is refused by the upgrade and left at version 1",
          "[log_upgrade]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("data");
  WriteLog(path, &clock);
  WriteAsVersion1(path, std::make_pair(1u, uint64_t{300}));

  kernel::UpgradeOptions options;
  options.path = path;
  const absl::StatusOr<kernel::UpgradeReport> refused = kernel::UpgradeLog(options);
  CHECK(refused.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(refused.status().message()),
             Catch::Contains("partition 1 has no events 300 to 300"));
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains("restore the log"));
  // Still version 1: the daemon still names the upgrade.
  EventLogOptions open;
  open.path = path;
  open.clock = &clock;
  CHECK_THAT(std::string(EventLog::Open(open).status().message()),
             Catch::Contains("format version 1"));
}

TEST_CASE("the upgrade refuses what is not a cityops log, and a log in use", "[log_upgrade]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  kernel::UpgradeOptions options;
  options.path = dir.Sub("nothing");
  CHECK(kernel::UpgradeLog(options).status().code() == absl::StatusCode::kNotFound);

  options.path = dir.Sub("data");
  WriteLog(options.path, &clock);
  std::unique_ptr<EventLog> open = OpenLog(options.path, &clock);
  const absl::StatusOr<kernel::UpgradeReport> in_use = kernel::UpgradeLog(options);
  CHECK(in_use.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(in_use.status().message()), Catch::Contains("in use"));
}

}  // namespace
}  // namespace cityops
