// The crash test of the event log: a child process (tests/crash_appender.cc) appends
// readings with their Kafka offsets and case events with their idempotency keys in an
// endless loop and is killed with SIGKILL at random moments, many times. After each
// kill the log must reopen whole: dense sequences, stored offsets that match the
// readings present, case streams whose index, versions and idempotency keys agree with
// the events, and every append the child saw acknowledged still there.
#include <signal.h>

#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "rocksdb/db.h"
#include "tests/testing/child_process.h"
#include "tests/testing/temp_dir.h"

namespace cityops {
namespace {

using kernel::EventLog;
using kernel::EventPosition;
using kernel::KafkaOffset;
using kernel::Partition;
using kernel::Sequence;
using kernel::StreamVersion;
using testing::ChildProcess;

constexpr int kReadingPartitions = 2;  // As in crash_appender.cc.
constexpr Partition kCasePartition(2);
constexpr std::string_view kStage = "crash.rules";
constexpr size_t kAll = 100'000'000;

// What one verified log holds.
struct Contents {
  int64_t readings[kReadingPartitions] = {};
  uint64_t case_events = 0;
  std::map<std::string, uint64_t> case_versions;
};

// What the child printed as acknowledged before it died.
struct Acks {
  int64_t next_offset[kReadingPartitions] = {};
  std::map<std::string, uint64_t> case_versions;
};

Acks ParseAcks(const std::string& output) {
  Acks acks;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() != 4 || f[0] != "ack") continue;  // A torn last line is simply not an ack.
    uint64_t n = 0;
    if (!absl::SimpleAtoi(f[3], &n)) continue;
    if (f[1] == "p") {
      int k = 0;
      if (absl::SimpleAtoi(f[2], &k) && k >= 0 && k < kReadingPartitions) {
        acks.next_offset[k] = std::max<int64_t>(acks.next_offset[k], static_cast<int64_t>(n));
      }
    } else if (f[1] == "case") {
      uint64_t& v = acks.case_versions[std::string(f[2])];
      v = std::max(v, n);
    }
  }
  return acks;
}

// The position of an event as the log reported it.
EventPosition PositionOf(const v1::Event& e) {
  return {Partition(e.partition()), Sequence(e.sequence())};
}

std::string Describe(EventPosition p) {
  return absl::StrCat(p.partition.value(), "/", p.sequence.value());
}

// Checks the raw column families that the API does not expose in full: every stream
// index entry and every idempotency entry points at the event it belongs to, and there
// is no entry without its event (nothing partially written).
void CheckIndexFamilies(const std::string& path,
                        const std::map<std::string, EventPosition>& indexed_by_key) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s =
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, families, &handles, &raw);
  INFO(s.ToString());
  REQUIRE(s.ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  auto handle = [&](std::string_view name) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return handles[i];
    }
    FAIL("no column family " << name);
    return handles[0];
  };

  // idempotency: key -> position of the event that used it. Keys are
  // "<stream>/<version>" by the appender's convention.
  size_t idempotency_entries = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handle(kernel::format::kIdempotencyCf)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      ++idempotency_entries;
      const std::string key = it->key().ToString();
      const std::optional<EventPosition> p =
          kernel::format::DecodePosition(it->value().ToStringView());
      INFO("idempotency key " << key);
      REQUIRE(p.has_value());
      const auto found = indexed_by_key.find(key);
      REQUIRE(found != indexed_by_key.end());
      CHECK(Describe(found->second) == Describe(*p));
    }
    REQUIRE(it->status().ok());
  }
  CHECK(idempotency_entries == indexed_by_key.size());

  // streams: stream + '\0' + version -> position.
  size_t stream_entries = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handle(kernel::format::kStreamsCf)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      ++stream_entries;
      const std::string_view k = it->key().ToStringView();
      const size_t nul = k.find('\0');
      REQUIRE(nul != std::string_view::npos);
      REQUIRE(k.size() == nul + 9);
      const std::string key = absl::StrCat(std::string(k.substr(0, nul)), "/",
                                           kernel::format::GetBigEndian64(k.data() + nul + 1));
      INFO("stream index entry " << key);
      const std::optional<EventPosition> p =
          kernel::format::DecodePosition(it->value().ToStringView());
      REQUIRE(p.has_value());
      const auto found = indexed_by_key.find(key);
      REQUIRE(found != indexed_by_key.end());
      CHECK(Describe(found->second) == Describe(*p));
    }
    REQUIRE(it->status().ok());
  }
  CHECK(stream_entries == indexed_by_key.size());
  for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
}

// Opens the log at `path` and checks everything the crash test promises; `acks` are
// appends the child saw succeed, which must all be there.
Contents VerifyLog(const std::string& path, const Acks& acks) {
  Contents contents;
  // Idempotency key ("<stream>/<version>") -> position, from the partition scans.
  std::map<std::string, EventPosition> indexed_by_key;
  {
    kernel::EventLogOptions options;
    options.path = path;
    options.create_if_missing = false;
    absl::StatusOr<std::unique_ptr<EventLog>> opened = EventLog::Open(options);
    INFO("reopening after the kill: " << opened.status().ToString());
    REQUIRE(opened.ok());
    const EventLog& log = **opened;

    for (Partition p : log.Partitions()) CHECK(p.value() <= kCasePartition.value());

    auto collect_case_event = [&](const v1::Event& e) {
      INFO("event " << Describe(PositionOf(e)) << " on stream " << e.stream_id());
      REQUIRE(e.stream_id().starts_with("case/"));
      REQUIRE(e.stream_version() >= 1);
      const std::string key = absl::StrCat(e.stream_id(), "/", e.stream_version());
      CHECK(e.provenance().idempotency_key() == key);
      const bool inserted = indexed_by_key.emplace(key, PositionOf(e)).second;
      CHECK(inserted);  // No version twice.
      ++contents.case_events;
    };

    for (int k = 0; k < kReadingPartitions; ++k) {
      INFO("log partition " << k);
      // A scan refuses a gap with DATA_LOSS. Per-event checks stay outside Catch's
      // assertion macros: there are hundreds of thousands of events per round.
      int64_t expected_offset = 0;
      uint64_t scanned = 0;
      std::string problem;
      v1::Event e;
      const absl::Status scan =
          log.Scan(Partition(k), Sequence(0), [&](Sequence s, std::string_view value) {
            if (absl::Status parsed = EventLog::ParseEvent({Partition(k), s}, value, &e);
                !parsed.ok()) {
              problem = parsed.ToString();
              return false;
            }
            if (s.value() != scanned++) {
              problem = absl::StrCat("sequence ", s.value(), " where ", scanned - 1, " belongs");
              return false;
            }
            if (!e.has_reading()) {
              collect_case_event(e);
              return true;
            }
            const v1::KafkaSource& source = e.provenance().kafka();
            // No gap, no repeat, in order.
            if (source.topic() != testing::kReadingsTopic || source.partition() != k ||
                source.offset() != expected_offset) {
              problem = absl::StrCat("reading at sequence ", s.value(), " came from ",
                                     source.topic(), "/", source.partition(), "@", source.offset(),
                                     "; expected offset ", expected_offset);
              return false;
            }
            ++expected_offset;
            return true;
          });
      INFO(scan.ToString());
      REQUIRE(scan.ok());
      INFO(problem);
      REQUIRE(problem.empty());
      REQUIRE(scanned == log.NextSequence(Partition(k)).value());
      absl::StatusOr<std::optional<KafkaOffset>> stored =
          log.StoredSourcePosition(testing::kReadingsTopic, k);
      REQUIRE(stored.ok());
      CHECK(stored->value_or(KafkaOffset(0)) == KafkaOffset(expected_offset));
      CHECK(expected_offset >= acks.next_offset[k]);  // Acknowledged appends survived.
      contents.readings[k] = expected_offset;
    }

    {
      absl::StatusOr<std::vector<v1::Event>> events = log.Read(kCasePartition, Sequence(0), kAll);
      INFO(events.status().ToString());
      REQUIRE(events.ok());
      for (const v1::Event& e : *events) collect_case_event(e);
      absl::StatusOr<std::optional<kernel::StageCheckpoint>> checkpoint =
          log.StoredCheckpoint(kCasePartition, kStage);
      REQUIRE(checkpoint.ok());
      if (events->empty()) {
        CHECK_FALSE(checkpoint->has_value());
      } else {
        REQUIRE(checkpoint->has_value());
        CHECK((*checkpoint)->next == log.NextSequence(kCasePartition));
      }
    }

    // Every stream's index agrees with the events found by scanning.
    uint64_t indexed_versions = 0;
    std::vector<std::pair<std::string, uint64_t>> streams;
    REQUIRE(log.ListStreams("",
                            [&](std::string_view id, StreamVersion v) {
                              streams.emplace_back(std::string(id), v.value());
                              return true;
                            })
                .ok());
    for (const auto& [id, version] : streams) {
      INFO("stream " << id);
      CHECK(id.starts_with("case/"));
      absl::StatusOr<StreamVersion> current = log.CurrentVersion(id);
      REQUIRE(current.ok());
      CHECK(current->value() == version);
      absl::StatusOr<std::vector<v1::Event>> events = log.ReadStream(id, StreamVersion(1), kAll);
      INFO(events.status().ToString());
      REQUIRE(events.ok());
      REQUIRE(events->size() == version);
      for (size_t i = 0; i < events->size(); ++i) {
        const v1::Event& e = (*events)[i];
        CHECK(e.stream_id() == id);
        REQUIRE(e.stream_version() == i + 1);
        const auto found = indexed_by_key.find(absl::StrCat(id, "/", i + 1));
        REQUIRE(found != indexed_by_key.end());
        CHECK(Describe(found->second) == Describe(PositionOf(e)));
      }
      indexed_versions += version;
      contents.case_versions[id] = version;
    }
    CHECK(indexed_versions == indexed_by_key.size());
    for (const auto& [id, acked] : acks.case_versions) {
      INFO("acknowledged " << id << " version " << acked);
      CHECK(contents.case_versions[id] >= acked);
    }
  }
  CheckIndexFamilies(path, indexed_by_key);
  return contents;
}

// Runs the appender on `path`, kills it with SIGKILL after `delay` (counted from
// "ready", or from the start if `before_ready`), and returns what it acknowledged.
Acks RunAndKill(const std::string& path, uint64_t seed, bool buffered, absl::Duration delay,
                bool before_ready) {
  ChildProcess child(
      {CITYOPS_CRASH_APPENDER, "append", path, absl::StrCat(seed), buffered ? "buffered" : "sync"});
  if (!before_ready) {
    INFO("appender output so far: " << child.output());
    REQUIRE(child.WaitForLine("ready", absl::Seconds(30)));
  }
  // Keep draining its acknowledgements while it runs, so that it never blocks on a
  // full pipe.
  const bool still_writing = child.ReadUntil(absl::Now() + delay);
  child.Kill(SIGKILL);
  child.ReadToEnd();
  const int status = child.Wait();
  INFO("the appender " << ChildProcess::DescribeWaitStatus(status) << " (writing: " << still_writing
                       << "); its output ends with: "
                       << child.output().substr(child.output().size() -
                                                std::min<size_t>(child.output().size(), 400)));
  // It appends until killed: any other end means it found the log broken (see its
  // stderr above the test output).
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  return ParseAcks(child.output());
}

TEST_CASE("a log whose appender is killed at random moments always reopens whole",
          "[crash][slow]") {
  testing::TempDir dir;
  const std::string path = dir.Sub("log");
  {
    // Created up front: a kill during creation is the next test's subject.
    kernel::EventLogOptions options;
    options.path = path;
    REQUIRE(EventLog::Open(options).ok());
  }
  std::mt19937_64 rng(20261122);
  constexpr int kRounds = 40;
  Contents last;
  int rounds_with_progress = 0;
  for (int round = 0; round < kRounds; ++round) {
    // Every fifth kill lands early, while the child starts or recovers the log.
    const bool before_ready = round % 5 == 4;
    const absl::Duration delay =
        before_ready ? absl::Microseconds(std::uniform_int_distribution<int>(0, 20'000)(rng))
                     : absl::Microseconds(std::uniform_int_distribution<int>(2'000, 300'000)(rng));
    const bool buffered = round % 2 == 1;
    const uint64_t seed = rng();
    INFO("round " << round << ", seed " << seed << (buffered ? ", buffered" : ", sync")
                  << ", killed after " << absl::FormatDuration(delay)
                  << (before_ready ? " from the start" : " from ready"));
    const Acks acks = RunAndKill(path, seed, buffered, delay, before_ready);
    const Contents now = VerifyLog(path, acks);
    // Nothing that was there before the round is lost.
    for (int k = 0; k < kReadingPartitions; ++k) CHECK(now.readings[k] >= last.readings[k]);
    CHECK(now.case_events >= last.case_events);
    if (now.readings[0] + now.readings[1] > last.readings[0] + last.readings[1]) {
      ++rounds_with_progress;
    }
    last = now;
  }
  // The test proves something only if the child got to append between kills.
  CHECK(rounds_with_progress >= kRounds / 2);
  CHECK(last.case_events > 0);
  CHECK(last.case_versions.size() > 1);
}

TEST_CASE("a log killed while it is being created opens afterwards", "[crash][slow]") {
  testing::TempDir dir;
  // How long a child takes to create a log and say "ready" on this machine; kills are
  // spread over that span so that some land inside the creation.
  absl::Duration startup;
  {
    const absl::Time start = absl::Now();
    ChildProcess child({CITYOPS_CRASH_APPENDER, "hold", dir.Sub("calibration")});
    REQUIRE(child.WaitForLine("ready", absl::Seconds(30)));
    startup = absl::Now() - start;
    child.CloseStdin();
    REQUIRE(child.Wait() == 0);
  }
  std::mt19937_64 rng(7);
  constexpr int kRounds = 25;
  for (int round = 0; round < kRounds; ++round) {
    const std::string path = dir.Sub(absl::StrCat("log-", round));
    const absl::Duration delay = startup * std::uniform_real_distribution<double>(0.0, 1.2)(rng);
    INFO("round " << round << ": killed " << absl::FormatDuration(delay)
                  << " after the start (startup takes about " << absl::FormatDuration(startup)
                  << ")");
    ChildProcess child({CITYOPS_CRASH_APPENDER, "append", path, absl::StrCat(rng()), "sync"});
    child.ReadUntil(absl::Now() + delay);
    child.Kill(SIGKILL);
    child.ReadToEnd();
    child.Wait();
    kernel::EventLogOptions options;
    options.path = path;
    absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(options);
    INFO(log.status().ToString());
    REQUIRE(log.ok());
    log->reset();
    VerifyLog(path, ParseAcks(child.output()));
  }
}

}  // namespace
}  // namespace cityops
