// The event log (kernel/event_log.h) against real RocksDB in temporary directories,
// with a ManualClock stamping recorded time. Each test states one guarantee of the
// header and tries to break it.
#include "kernel/event_log.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/log_format.h"
#include "rocksdb/db.h"
#include "tests/testing/child_process.h"
#include "tests/testing/temp_dir.h"

namespace Catch {
template <>
struct StringMaker<absl::StatusCode> {
  static std::string convert(absl::StatusCode code) { return absl::StatusCodeToString(code); }
};
template <>
struct StringMaker<cityops::kernel::EventPosition> {
  static std::string convert(const cityops::kernel::EventPosition& p) {
    return absl::StrCat(p.partition.value(), "/", p.sequence.value());
  }
};
}  // namespace Catch

namespace cityops {
namespace {

using kernel::AppendBatch;
using kernel::AppendResult;
using kernel::Durability;
using kernel::EventLog;
using kernel::EventLogOptions;
using kernel::EventPosition;
using kernel::KafkaOffset;
using kernel::ManualClock;
using kernel::Partition;
using kernel::Sequence;
using kernel::SourcePosition;
using kernel::StageCheckpoint;
using kernel::StreamVersion;
using testing::CaseReportedEvent;
using testing::CaseUrgedEvent;
using testing::kReadingsTopic;
using testing::kTestNow;
using testing::ReadingEvent;
using testing::TempDir;
namespace fs = std::filesystem;
namespace format = kernel::format;

constexpr size_t kAll = 1'000'000;

EventLogOptions Options(const std::string& path, const kernel::Clock* clock) {
  EventLogOptions options;
  options.path = path;
  options.clock = clock;
  return options;
}

std::unique_ptr<EventLog> OpenLog(const EventLogOptions& options) {
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(options);
  INFO("opening " << options.path << ": " << log.status().ToString());
  REQUIRE(log.ok());
  return std::move(*log);
}

std::unique_ptr<EventLog> OpenLog(const std::string& path, const kernel::Clock* clock) {
  return OpenLog(Options(path, clock));
}

AppendResult AppendOk(EventLog& log, AppendBatch batch) {
  absl::StatusOr<AppendResult> result = log.Append(std::move(batch));
  INFO("append: " << result.status().ToString());
  REQUIRE(result.ok());
  return std::move(*result);
}

std::vector<v1::Event> ReadAll(const EventLog& log, Partition partition) {
  absl::StatusOr<std::vector<v1::Event>> events = log.Read(partition, Sequence(0), kAll);
  INFO("reading partition " << partition << ": " << events.status().ToString());
  REQUIRE(events.ok());
  return std::move(*events);
}

std::vector<v1::Event> ReadStreamOk(const EventLog& log, std::string_view stream, uint64_t from = 1,
                                    size_t max = kAll) {
  absl::StatusOr<std::vector<v1::Event>> events = log.ReadStream(stream, StreamVersion(from), max);
  INFO("reading stream " << stream << ": " << events.status().ToString());
  REQUIRE(events.ok());
  return std::move(*events);
}

uint64_t VersionOf(const EventLog& log, std::string_view stream) {
  absl::StatusOr<StreamVersion> v = log.CurrentVersion(stream);
  INFO(v.status().ToString());
  REQUIRE(v.ok());
  return v->value();
}

std::optional<KafkaOffset> StoredPosition(const EventLog& log, std::string_view topic,
                                          int32_t kafka_partition) {
  absl::StatusOr<std::optional<KafkaOffset>> stored =
      log.StoredSourcePosition(topic, kafka_partition);
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  return *stored;
}

std::optional<StageCheckpoint> Checkpoint(const EventLog& log, Partition partition,
                                          std::string_view stage) {
  absl::StatusOr<std::optional<StageCheckpoint>> stored = log.StoredCheckpoint(partition, stage);
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  return *stored;
}

EventPosition PositionOf(const v1::Event& e) {
  return {Partition(e.partition()), Sequence(e.sequence())};
}

// Passes if the two events are equal field by field; shows the difference otherwise.
void CheckSameEvent(const v1::Event& expected, const v1::Event& actual) {
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  const bool same = differencer.Compare(expected, actual);
  INFO("differences (expected -> actual):\n" << diff);
  CHECK(same);
}

void CheckSameEvents(const std::vector<v1::Event>& expected, const std::vector<v1::Event>& actual) {
  REQUIRE(expected.size() == actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("event " << i);
    CheckSameEvent(expected[i], actual[i]);
  }
}

// `event` as the log should return it from `position`, appended at `recorded`.
v1::Event AsStored(v1::Event event, EventPosition position, absl::Time recorded,
                   uint64_t stream_version = 0) {
  event.set_partition(position.partition.value());
  event.set_sequence(position.sequence.value());
  testing::SetTimestamp(event.mutable_recorded_time(), recorded);
  event.set_stream_version(stream_version);
  return event;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// ---------------------------------------------------------------------------------------
// Round trips and sequences

TEST_CASE("appended readings and case events read back whole with position and recorded time",
          "[event_log]") {
  TempDir dir;
  // Sub-second recorded times must survive too.
  const absl::Time first_time = kTestNow + absl::Milliseconds(250) + absl::Nanoseconds(7);
  ManualClock clock(first_time);
  auto log = OpenLog(dir.Sub("log"), &clock);

  std::vector<v1::Event> expected;
  AppendBatch first{Partition(0)};
  std::vector<v1::Event> first_events = {
      ReadingEvent("3101040101000001", 0), ReadingEvent("3101040101000002", 1),
      CaseReportedEvent("12345-0001", "req-1"), ReadingEvent("3101040101000001", 2)};
  // Whatever the caller put in the fields the log assigns is overwritten.
  first_events[1].set_partition(7);
  first_events[1].set_sequence(999);
  first_events[1].set_stream_version(42);
  testing::SetTimestamp(first_events[1].mutable_recorded_time(), absl::UnixEpoch());
  first_events[2].set_stream_version(42);
  for (const v1::Event& e : first_events) first.Add(e);
  first.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(3));
  const AppendResult r1 = AppendOk(*log, std::move(first));
  CHECK(r1.appended == 4);
  CHECK(r1.duplicates == 0);
  CHECK(r1.next == Sequence(4));
  REQUIRE(r1.outcomes.size() == 4);
  for (uint64_t i = 0; i < 4; ++i) {
    CHECK(r1.outcomes[i].position == EventPosition{Partition(0), Sequence(i)});
    CHECK_FALSE(r1.outcomes[i].duplicate);
    expected.push_back(
        AsStored(first_events[i], {Partition(0), Sequence(i)}, first_time, i == 2 ? 1 : 0));
  }

  clock.Advance(absl::Seconds(5));
  const absl::Time second_time = clock.Now();
  AppendBatch second{Partition(0)};
  std::vector<v1::Event> second_events = {ReadingEvent("3101040101000002", 3),
                                          CaseUrgedEvent("12345-0001", "req-2", "still open")};
  for (const v1::Event& e : second_events) second.Add(e);
  const AppendResult r2 = AppendOk(*log, std::move(second));
  CHECK(r2.next == Sequence(6));
  expected.push_back(AsStored(second_events[0], {Partition(0), Sequence(4)}, second_time));
  expected.push_back(AsStored(second_events[1], {Partition(0), Sequence(5)}, second_time, 2));

  CheckSameEvents(expected, ReadAll(*log, Partition(0)));

  SECTION("Read honours its start and its limit") {
    absl::StatusOr<std::vector<v1::Event>> middle = log->Read(Partition(0), Sequence(2), 3);
    REQUIRE(middle.ok());
    CheckSameEvents({expected[2], expected[3], expected[4]}, *middle);
    absl::StatusOr<std::vector<v1::Event>> past_end = log->Read(Partition(0), Sequence(6), 10);
    REQUIRE(past_end.ok());
    CHECK(past_end->empty());
    absl::StatusOr<std::vector<v1::Event>> none = log->Read(Partition(0), Sequence(0), 0);
    REQUIRE(none.ok());
    CHECK(none->empty());
    absl::StatusOr<std::vector<v1::Event>> other = log->Read(Partition(1), Sequence(0), 10);
    REQUIRE(other.ok());
    CHECK(other->empty());
  }
  SECTION("ReadStream returns the same case events") {
    CheckSameEvents({expected[2], expected[5]}, ReadStreamOk(*log, "case/12345-0001"));
  }
}

TEST_CASE("sequences are dense from zero in every partition across many appends", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  const std::vector<Partition> partitions = {Partition(0), Partition(1), Partition(5)};
  std::map<uint32_t, int64_t> count;  // Events appended per partition.
  std::mt19937 rng(42);
  for (int round = 0; round < 60; ++round) {
    const Partition p = partitions[rng() % partitions.size()];
    const int n = 1 + static_cast<int>(rng() % 40);
    AppendBatch batch{p};
    for (int i = 0; i < n; ++i) {
      // The Kafka offset doubles as the expected sequence.
      batch.Add(ReadingEvent(absl::StrCat("dev-", i % 3), count[p.value()] + i,
                             static_cast<int32_t>(p.value())));
    }
    const AppendResult result = AppendOk(*log, std::move(batch));
    REQUIRE(result.outcomes.size() == static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      CHECK(result.outcomes[i].position ==
            EventPosition{p, Sequence(static_cast<uint64_t>(count[p.value()] + i))});
    }
    count[p.value()] += n;
    CHECK(result.next == Sequence(static_cast<uint64_t>(count[p.value()])));
    CHECK(log->NextSequence(p) == result.next);
  }
  CHECK(log->Partitions() == partitions);
  for (Partition p : partitions) {
    INFO("partition " << p);
    const uint64_t n = static_cast<uint64_t>(count[p.value()]);
    REQUIRE(n > 0);
    CHECK(log->NextSequence(p) == Sequence(n));
    CHECK(log->LastSequence(p) == Sequence(n - 1));
    const std::vector<v1::Event> events = ReadAll(*log, p);
    REQUIRE(events.size() == n);
    for (uint64_t i = 0; i < n; ++i) {
      CHECK(events[i].partition() == p.value());
      CHECK(events[i].sequence() == i);
      CHECK(events[i].provenance().kafka().offset() == static_cast<int64_t>(i));
    }
  }
  CHECK(log->NextSequence(Partition(2)) == Sequence(0));
  CHECK(log->LastSequence(Partition(2)) == std::nullopt);
  // Every one of the 60 appends wrote, and each was timed once.
  const kernel::LatencyHistogram::Snapshot latency = log->append_latency().Read();
  CHECK(latency.count == 60);
  CHECK(latency.cumulative.back() <= latency.count);
  CHECK(latency.sum_seconds > 0);
}

TEST_CASE("the latency histogram counts each observation in its bucket and above", "[event_log]") {
  kernel::LatencyHistogram h;
  h.Record(std::chrono::microseconds(40));   // <= 50 us
  h.Record(std::chrono::microseconds(300));  // <= 500 us
  h.Record(std::chrono::milliseconds(3));    // <= 5 ms
  h.Record(std::chrono::seconds(20));        // beyond the last bound: +Inf only
  const kernel::LatencyHistogram::Snapshot s = h.Read();
  CHECK(s.count == 4);
  CHECK(s.cumulative[0] == 1);      // 50 us
  CHECK(s.cumulative[2] == 1);      // 250 us
  CHECK(s.cumulative[3] == 2);      // 500 us
  CHECK(s.cumulative[6] == 3);      // 5 ms
  CHECK(s.cumulative.back() == 3);  // 10 s
  CHECK(s.sum_seconds == Approx(20.00334));
}

TEST_CASE("an empty log has no partitions and no positions", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  CHECK(log->path() == dir.Sub("log"));
  CHECK(log->Partitions().empty());
  CHECK(log->NextSequence(Partition(0)) == Sequence(0));
  CHECK(log->LastSequence(Partition(0)) == std::nullopt);
  CHECK(StoredPosition(*log, kReadingsTopic, 0) == std::nullopt);
  absl::StatusOr<std::vector<SourcePosition>> all = log->StoredSourcePositions();
  REQUIRE(all.ok());
  CHECK(all->empty());
  CHECK(Checkpoint(*log, Partition(0), "projections.devices") == std::nullopt);
  CHECK(VersionOf(*log, "case/none") == 0);
  CHECK(ReadStreamOk(*log, "case/none").empty());
  // An append with nothing in it is no event and no position.
  const AppendResult nothing = AppendOk(*log, AppendBatch{Partition(3)});
  CHECK(nothing.appended == 0);
  CHECK(nothing.next == Sequence(0));
  CHECK(log->Partitions().empty());
}

TEST_CASE("AppendAll writes batches for several partitions as one", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  {
    std::vector<AppendBatch> batches;
    for (int k = 0; k < 3; ++k) {
      batches.emplace_back(Partition(k));
      for (int i = 0; i <= k; ++i) batches.back().Add(ReadingEvent("dev", i, k));
      batches.back().SetSourcePosition(kReadingsTopic, k, KafkaOffset(k + 1));
    }
    batches[1].Add(CaseReportedEvent("A", "a-1"), StreamVersion(0));
    absl::StatusOr<std::vector<AppendResult>> results = log->AppendAll(std::move(batches));
    INFO(results.status().ToString());
    REQUIRE(results.ok());
    REQUIRE(results->size() == 3);
    CHECK((*results)[0].next == Sequence(1));
    CHECK((*results)[1].next == Sequence(3));
    CHECK((*results)[2].next == Sequence(3));
    CHECK((*results)[1].outcomes.back().position == EventPosition{Partition(1), Sequence(2)});
  }
  CHECK(log->NextSequence(Partition(1)) == Sequence(3));
  CHECK(StoredPosition(*log, kReadingsTopic, 2) == KafkaOffset(3));
  CHECK(VersionOf(*log, "case/A") == 1);

  SECTION("a conflict in one batch writes none of them") {
    std::vector<AppendBatch> batches;
    batches.emplace_back(Partition(0));
    batches.back().Add(ReadingEvent("dev", 1, 0));
    batches.back().SetSourcePosition(kReadingsTopic, 0, KafkaOffset(2));
    batches.emplace_back(Partition(2));
    batches.back().Add(CaseUrgedEvent("A", "a-2"), StreamVersion(0));  // A is at 1.
    absl::StatusOr<std::vector<AppendResult>> results = log->AppendAll(std::move(batches));
    CHECK(results.status().code() == absl::StatusCode::kAborted);
    CHECK(log->NextSequence(Partition(0)) == Sequence(1));
    CHECK(log->NextSequence(Partition(2)) == Sequence(3));
    CHECK(StoredPosition(*log, kReadingsTopic, 0) == KafkaOffset(1));
    CHECK(ReadAll(*log, Partition(0)).size() == 1);
  }
  SECTION("two batches for one partition are refused") {
    std::vector<AppendBatch> batches;
    batches.emplace_back(Partition(4));
    batches.back().Add(ReadingEvent("dev", 0, 4));
    batches.emplace_back(Partition(4));
    batches.back().Add(ReadingEvent("dev", 1, 4));
    absl::StatusOr<std::vector<AppendResult>> results = log->AppendAll(std::move(batches));
    CHECK(results.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(Message(results.status()), Catch::Contains("partition 4"));
    CHECK(log->NextSequence(Partition(4)) == Sequence(0));
  }
}

// ---------------------------------------------------------------------------------------
// Scan and ParseEvent

TEST_CASE("Scan visits events in order from any sequence and stops when the visitor says so",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  AppendBatch batch{Partition(1)};
  for (int i = 0; i < 20; ++i) batch.Add(ReadingEvent("dev-scan", i, 1));
  AppendOk(*log, std::move(batch));
  const std::vector<v1::Event> all = ReadAll(*log, Partition(1));
  REQUIRE(all.size() == 20);

  std::vector<uint64_t> seen;
  auto collect_until = [&](uint64_t stop_at) {
    return [&seen, stop_at](Sequence s, std::string_view value) {
      seen.push_back(s.value());
      CHECK_FALSE(value.empty());
      return s.value() != stop_at;
    };
  };
  SECTION("a visitor that returns false is not called again") {
    REQUIRE(log->Scan(Partition(1), Sequence(0), collect_until(4)).ok());
    CHECK(seen == std::vector<uint64_t>{0, 1, 2, 3, 4});
  }
  SECTION("a scan from the middle starts there and runs to the end") {
    REQUIRE(log->Scan(Partition(1), Sequence(12), collect_until(999)).ok());
    CHECK(seen == std::vector<uint64_t>{12, 13, 14, 15, 16, 17, 18, 19});
  }
  SECTION("a scan from the end or of an empty partition visits nothing") {
    REQUIRE(log->Scan(Partition(1), Sequence(20), collect_until(999)).ok());
    REQUIRE(log->Scan(Partition(0), Sequence(0), collect_until(999)).ok());
    CHECK(seen.empty());
  }
  SECTION("ParseEvent decodes a scanned value into the event Read returns") {
    REQUIRE(
        log->Scan(Partition(1), Sequence(0),
                  [&](Sequence s, std::string_view value) {
                    v1::Event e;
                    const absl::Status status = EventLog::ParseEvent({Partition(1), s}, value, &e);
                    REQUIRE(status.ok());
                    CheckSameEvent(all[s.value()], e);
                    seen.push_back(s.value());
                    return true;
                  })
            .ok());
    CHECK(seen.size() == 20);
  }
}

TEST_CASE("AddStored appends a stored event as Add of the parsed event would, restamped only",
          "[event_log]") {
  TempDir dir;
  ManualClock first_clock(kTestNow);
  auto source = OpenLog(dir.Sub("source"), &first_clock);
  AppendBatch batch{Partition(0)};
  for (int i = 0; i < 5; ++i) batch.Add(ReadingEvent("dev-stored", i, 2));
  v1::Event tick;
  tick.set_stream_id("clock");
  testing::SetTimestamp(tick.mutable_event_time(), kTestNow + absl::Seconds(9));
  tick.mutable_provenance()->set_stage("ingest.clock");
  tick.mutable_clock_tick();
  batch.Add(tick);
  batch.Add(CaseReportedEvent("case-stored", "req-9"));
  AppendOk(*source, std::move(batch));
  std::vector<std::string> stored;
  REQUIRE(source
              ->Scan(Partition(0), Sequence(0),
                     [&](Sequence, std::string_view value) {
                       stored.emplace_back(value);
                       return true;
                     })
              .ok());
  REQUIRE(stored.size() == 7);

  // Two fresh logs with a later clock: one gets the stored bytes, one the parsed events.
  ManualClock later(kTestNow + absl::Hours(5));
  auto copied = OpenLog(dir.Sub("copied"), &later);
  auto parsed = OpenLog(dir.Sub("parsed"), &later);
  AppendBatch by_bytes{Partition(4)};
  AppendBatch by_event{Partition(4)};
  for (size_t i = 0; i < stored.size(); ++i) {
    v1::Event e;
    REQUIRE(EventLog::ParseEvent({Partition(0), Sequence(i)}, stored[i], &e).ok());
    by_event.Add(e);
    if (i == 6) {  // The case stream is indexed: parsed, in the same batch, order kept.
      by_bytes.Add(e);
    } else {
      const absl::Status added = by_bytes.AddStored(stored[i]);
      INFO(added.ToString());
      REQUIRE(added.ok());
    }
  }
  REQUIRE(by_bytes.size() == 7);
  AppendOk(*copied, std::move(by_bytes));
  AppendOk(*parsed, std::move(by_event));

  std::vector<std::string> from_bytes;
  std::vector<std::string> from_events;
  auto collect = [](std::vector<std::string>* out) {
    return [out](Sequence, std::string_view value) {
      out->emplace_back(value);
      return true;
    };
  };
  REQUIRE(copied->Scan(Partition(4), Sequence(0), collect(&from_bytes)).ok());
  REQUIRE(parsed->Scan(Partition(4), Sequence(0), collect(&from_events)).ok());
  CHECK(from_bytes == from_events);  // Byte for byte, the field order included.

  const std::vector<v1::Event> original = ReadAll(*source, Partition(0));
  const std::vector<v1::Event> copy = ReadAll(*copied, Partition(4));
  REQUIRE(copy.size() == original.size());
  for (size_t i = 0; i < 6; ++i) {
    INFO("event " << i);
    CheckSameEvent(AsStored(original[i], {Partition(4), Sequence(i)}, later.Now()), copy[i]);
  }
}

TEST_CASE("AddStored refuses what it cannot copy as is and adds nothing", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  AppendOk(*log, [] {
    AppendBatch b{Partition(0)};
    b.Add(CaseReportedEvent("case-indexed", "req-1"));
    return b;
  }());
  std::string case_value;
  REQUIRE(log->Scan(Partition(0), Sequence(0),
                    [&](Sequence, std::string_view value) {
                      case_value = value;
                      return false;
                    })
              .ok());
  v1::Event no_payload;
  no_payload.set_stream_id("device/dev-empty");
  const std::string truncated(
      "\x1a\x10"
      "abc",
      5);

  AppendBatch batch{Partition(0)};
  const absl::Status indexed = batch.AddStored(case_value);
  CHECK(indexed.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(indexed), Catch::Contains("case/case-indexed") && Catch::Contains("indexed"));
  const absl::Status empty = batch.AddStored(no_payload.SerializeAsString());
  CHECK(empty.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(empty), Catch::Contains("no payload"));
  const absl::Status garbage = batch.AddStored(truncated);
  CHECK(garbage.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(garbage), Catch::Contains("not well-formed"));
  CHECK(batch.empty());
}

TEST_CASE("ParseEvent reports bytes that are not an event as DATA_LOSS naming the position",
          "[event_log]") {
  // Field 3 (stream_id) claims 16 bytes but 3 follow; 0xff... is an invalid tag.
  const std::string truncated(
      "\x1a\x10"
      "abc",
      5);
  const std::string bad_tag("\xff\xff\xff\xff\xff\xff", 6);
  for (const std::string& garbage : {truncated, bad_tag}) {
    v1::Event e;
    const absl::Status status = EventLog::ParseEvent({Partition(3), Sequence(77)}, garbage, &e);
    CHECK(status.code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(Message(status), Catch::Contains("3/77"));
  }
}

// ---------------------------------------------------------------------------------------
// Streams

TEST_CASE("a case stream reads from any version and CurrentVersion follows it", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  // Case A gets five events over three appends in two partitions, mixed with readings
  // and with case B.
  std::vector<EventPosition> a_positions;
  {
    AppendBatch b{Partition(0)};
    b.Add(ReadingEvent("dev-1", 0));
    b.Add(CaseReportedEvent("A", "a-1"));
    b.Add(CaseReportedEvent("B", "b-1"));
    b.Add(CaseUrgedEvent("A", "a-2", "urge 2"));
    const AppendResult r = AppendOk(*log, std::move(b));
    a_positions.push_back(r.outcomes[1].position);
    a_positions.push_back(r.outcomes[3].position);
  }
  {
    AppendBatch b{Partition(1)};
    b.Add(CaseUrgedEvent("A", "a-3", "urge 3"));
    b.Add(ReadingEvent("dev-2", 0, 1));
    b.Add(CaseUrgedEvent("B", "b-2", "urge b"));
    const AppendResult r = AppendOk(*log, std::move(b));
    a_positions.push_back(r.outcomes[0].position);
  }
  {
    AppendBatch b{Partition(0)};
    b.Add(CaseUrgedEvent("A", "a-4", "urge 4"));
    b.Add(CaseUrgedEvent("A", "a-5", "urge 5"));
    const AppendResult r = AppendOk(*log, std::move(b));
    a_positions.push_back(r.outcomes[0].position);
    a_positions.push_back(r.outcomes[1].position);
  }
  CHECK(VersionOf(*log, "case/A") == 5);
  CHECK(VersionOf(*log, "case/B") == 2);
  CHECK(VersionOf(*log, "case/C") == 0);

  const std::vector<v1::Event> a = ReadStreamOk(*log, "case/A");
  REQUIRE(a.size() == 5);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("version " << i + 1);
    CHECK(a[i].stream_id() == "case/A");
    CHECK(a[i].stream_version() == i + 1);
    CHECK(PositionOf(a[i]) == a_positions[i]);
    CHECK(a[i].provenance().idempotency_key() == absl::StrCat("a-", i + 1));
    // The stream read returns the very event the partition holds there.
    absl::StatusOr<std::vector<v1::Event>> at =
        log->Read(Partition(a[i].partition()), Sequence(a[i].sequence()), 1);
    REQUIRE(at.ok());
    REQUIRE(at->size() == 1);
    CheckSameEvent(at->front(), a[i]);
  }
  CHECK(a[0].has_case_reported());
  CHECK(a[4].case_urged().note() == "urge 5");

  const std::vector<v1::Event> from_three = ReadStreamOk(*log, "case/A", 3);
  REQUIRE(from_three.size() == 3);
  CheckSameEvents({a[2], a[3], a[4]}, from_three);
  const std::vector<v1::Event> two_from_two = ReadStreamOk(*log, "case/A", 2, 2);
  CheckSameEvents({a[1], a[2]}, two_from_two);
  CHECK(ReadStreamOk(*log, "case/A", 6).empty());
  CHECK(ReadStreamOk(*log, "case/C").empty());
  const std::vector<v1::Event> b = ReadStreamOk(*log, "case/B");
  REQUIRE(b.size() == 2);
  CHECK(b[1].case_urged().note() == "urge b");
  CHECK(b[1].stream_version() == 2);

  std::vector<std::pair<std::string, uint64_t>> listed;
  REQUIRE(log->ListStreams("case/",
                           [&](std::string_view id, StreamVersion v) {
                             listed.emplace_back(std::string(id), v.value());
                             return true;
                           })
              .ok());
  CHECK(listed == std::vector<std::pair<std::string, uint64_t>>{{"case/A", 5}, {"case/B", 2}});
  listed.clear();
  REQUIRE(log->ListStreams("case/",
                           [&](std::string_view id, StreamVersion v) {
                             listed.emplace_back(std::string(id), v.value());
                             return false;
                           })
              .ok());
  CHECK(listed.size() == 1);
  listed.clear();
  REQUIRE(log->ListStreams("registry/",
                           [&](std::string_view id, StreamVersion v) {
                             listed.emplace_back(std::string(id), v.value());
                             return true;
                           })
              .ok());
  CHECK(listed.empty());
}

TEST_CASE("device and clock streams cannot be read as streams", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  AppendBatch b{Partition(0)};
  b.Add(ReadingEvent("3101040101000001", 0));
  AppendOk(*log, std::move(b));
  for (const std::string stream : {"device/3101040101000001", "clock"}) {
    absl::StatusOr<std::vector<v1::Event>> events = log->ReadStream(stream, StreamVersion(1), 10);
    CHECK(events.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(Message(events.status()), Catch::Contains(stream));
  }
  CHECK(kernel::IsIndexedStream("case/1"));
  CHECK(kernel::IsIndexedStream("ticket/1"));
  CHECK(kernel::IsIndexedStream("registry/3101040101000001"));
  CHECK(kernel::IsIndexedStream("ruleset/default"));
  CHECK_FALSE(kernel::IsIndexedStream("device/3101040101000001"));
  CHECK_FALSE(kernel::IsIndexedStream("clock"));
}

// ---------------------------------------------------------------------------------------
// Idempotency

TEST_CASE("a repeated idempotency key of an indexed stream is skipped and reported",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  const AppendResult first = [&] {
    AppendBatch b{Partition(0)};
    b.Add(ReadingEvent("dev-1", 0));
    b.Add(CaseReportedEvent("A", "req-1"));
    return AppendOk(*log, std::move(b));
  }();
  const EventPosition original = first.outcomes[1].position;
  REQUIRE(original == EventPosition{Partition(0), Sequence(1)});

  SECTION("in a later batch") {
    AppendBatch b{Partition(0)};
    b.Add(CaseUrgedEvent("A", "req-2"));
    b.Add(CaseReportedEvent("A", "req-1"));  // A client's retry.
    b.Add(CaseUrgedEvent("A", "req-3"));
    const AppendResult r = AppendOk(*log, std::move(b));
    REQUIRE(r.outcomes.size() == 3);
    CHECK_FALSE(r.outcomes[0].duplicate);
    CHECK(r.outcomes[0].position == EventPosition{Partition(0), Sequence(2)});
    CHECK(r.outcomes[1].duplicate);
    CHECK(r.outcomes[1].position == original);
    CHECK_FALSE(r.outcomes[2].duplicate);
    CHECK(r.outcomes[2].position == EventPosition{Partition(0), Sequence(3)});
    CHECK(r.appended == 2);
    CHECK(r.duplicates == 1);
    CHECK(r.next == Sequence(4));
    const std::vector<v1::Event> a = ReadStreamOk(*log, "case/A");
    REQUIRE(a.size() == 3);
    CHECK(a[1].provenance().idempotency_key() == "req-2");
    CHECK(a[2].provenance().idempotency_key() == "req-3");
    CHECK(a[2].stream_version() == 3);
    CHECK(ReadAll(*log, Partition(0)).size() == 4);
  }
  SECTION("within one batch") {
    AppendBatch b{Partition(0)};
    b.Add(CaseReportedEvent("B", "req-b"));
    b.Add(CaseUrgedEvent("B", "req-b2"));
    b.Add(CaseReportedEvent("B", "req-b"));
    const AppendResult r = AppendOk(*log, std::move(b));
    REQUIRE(r.outcomes.size() == 3);
    CHECK(r.outcomes[2].duplicate);
    CHECK(r.outcomes[2].position == r.outcomes[0].position);
    CHECK(r.appended == 2);
    CHECK(r.duplicates == 1);
    CHECK(VersionOf(*log, "case/B") == 2);
    CHECK(log->NextSequence(Partition(0)) == Sequence(4));
  }
  SECTION("in another partition") {
    AppendBatch b{Partition(6)};
    b.Add(CaseReportedEvent("A", "req-1"));
    const AppendResult r = AppendOk(*log, std::move(b));
    REQUIRE(r.outcomes.size() == 1);
    CHECK(r.outcomes[0].duplicate);
    CHECK(r.outcomes[0].position == original);
    CHECK(r.appended == 0);
    CHECK(r.next == Sequence(0));
    CHECK(log->NextSequence(Partition(6)) == Sequence(0));
  }
  SECTION("after the log is reopened") {
    log.reset();
    log = OpenLog(dir.Sub("log"), &clock);
    AppendBatch b{Partition(0)};
    b.Add(CaseReportedEvent("A", "req-1"));
    const AppendResult r = AppendOk(*log, std::move(b));
    CHECK(r.outcomes[0].duplicate);
    CHECK(r.outcomes[0].position == original);
    CHECK(log->NextSequence(Partition(0)) == Sequence(2));
  }
  SECTION("a batch of duplicates alone still stores its source position") {
    AppendBatch b{Partition(0)};
    b.Add(CaseReportedEvent("A", "req-1"));
    b.SetSourcePosition("cityops.reports", 0, KafkaOffset(8));
    const AppendResult r = AppendOk(*log, std::move(b));
    CHECK(r.duplicates == 1);
    CHECK(r.appended == 0);
    CHECK(log->NextSequence(Partition(0)) == Sequence(2));
    CHECK(StoredPosition(*log, "cityops.reports", 0) == KafkaOffset(8));
  }
  CHECK(VersionOf(*log, "case/A") >= 1);
  CHECK(ReadStreamOk(*log, "case/A").front().provenance().idempotency_key() == "req-1");
}

TEST_CASE("a retried command whose first attempt went through is a duplicate not a conflict",
          "[event_log]") {
  // A client that lost the answer to a command resends it with the same request id and
  // the same expected version. The stream has moved on by the first attempt itself; the
  // retry must be reported as that attempt, not refused as a conflict.
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  AppendBatch first{Partition(0)};
  first.Add(CaseReportedEvent("A", "req-1"), StreamVersion(0));
  const EventPosition original = AppendOk(*log, std::move(first)).outcomes[0].position;
  AppendBatch retry{Partition(0)};
  retry.Add(CaseReportedEvent("A", "req-1"), StreamVersion(0));
  const AppendResult r = AppendOk(*log, std::move(retry));
  REQUIRE(r.outcomes.size() == 1);
  CHECK(r.outcomes[0].duplicate);
  CHECK(r.outcomes[0].position == original);
  CHECK(VersionOf(*log, "case/A") == 1);
}

TEST_CASE("readings are not deduplicated by the log since ingest's window does that",
          "[event_log]") {
  // Documented in event_log.h: device streams get no stored idempotency keys, so that
  // the reading path stays on sequential keys. The same reading twice is two events.
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  const v1::Event reading = ReadingEvent("3101040101000001", 5);
  REQUIRE(reading.provenance().idempotency_key() == "3101040101000001/r5");
  AppendBatch b{Partition(0)};
  b.Add(reading);
  b.Add(reading);
  const AppendResult r1 = AppendOk(*log, std::move(b));
  CHECK(r1.appended == 2);
  CHECK(r1.duplicates == 0);
  AppendBatch again{Partition(0)};
  again.Add(reading);
  const AppendResult r2 = AppendOk(*log, std::move(again));
  CHECK(r2.appended == 1);
  CHECK_FALSE(r2.outcomes[0].duplicate);
  CHECK(r2.outcomes[0].position == EventPosition{Partition(0), Sequence(2)});
  const std::vector<v1::Event> events = ReadAll(*log, Partition(0));
  REQUIRE(events.size() == 3);
  for (const v1::Event& e : events) {
    CHECK(e.stream_version() == 0);  // Unindexed streams have no versions.
    CHECK(e.provenance().idempotency_key() == "3101040101000001/r5");
  }
  // Clock ticks are unindexed as well.
  v1::Event tick;
  tick.set_stream_id("clock");
  tick.mutable_clock_tick();
  testing::SetTimestamp(tick.mutable_event_time(), kTestNow);
  tick.mutable_provenance()->set_stage("ingest.clock");
  tick.mutable_provenance()->set_idempotency_key("tick-1");
  AppendBatch ticks{Partition(0)};
  ticks.Add(tick);
  ticks.Add(tick);
  CHECK(AppendOk(*log, std::move(ticks)).appended == 2);
}

// ---------------------------------------------------------------------------------------
// Optimistic concurrency

TEST_CASE("an expected version that does not match aborts the whole append and writes nothing",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  {
    AppendBatch b{Partition(0)};
    b.Add(ReadingEvent("dev-1", 0));
    b.Add(CaseReportedEvent("A", "a-1"), StreamVersion(0));
    b.Add(CaseUrgedEvent("A", "a-2"), StreamVersion(1));
    b.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(1));
    AppendOk(*log, std::move(b));
  }
  const std::vector<v1::Event> before = ReadAll(*log, Partition(0));
  REQUIRE(before.size() == 3);

  AppendBatch conflicting{Partition(0)};
  conflicting.Add(ReadingEvent("dev-1", 1));
  conflicting.Add(CaseReportedEvent("B", "b-1"), StreamVersion(0));  // Fine on its own.
  conflicting.Add(CaseUrgedEvent("A", "a-3"), StreamVersion(1));     // A is at 2.
  conflicting.Add(ReadingEvent("dev-1", 2));
  conflicting.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(3));
  const absl::StatusOr<AppendResult> result = log->Append(std::move(conflicting));
  CHECK(result.status().code() == absl::StatusCode::kAborted);
  CHECK_THAT(Message(result.status()), Catch::Contains("case/A"));

  // Nothing of it: no events, no index entries, no idempotency keys, no position.
  CHECK(log->NextSequence(Partition(0)) == Sequence(3));
  CheckSameEvents(before, ReadAll(*log, Partition(0)));
  CHECK(VersionOf(*log, "case/A") == 2);
  CHECK(VersionOf(*log, "case/B") == 0);
  CHECK(StoredPosition(*log, kReadingsTopic, 0) == KafkaOffset(1));
  {
    // The keys of the failed batch were not stored: the same events go through now.
    AppendBatch retry{Partition(0)};
    retry.Add(CaseReportedEvent("B", "b-1"), StreamVersion(0));
    retry.Add(CaseUrgedEvent("A", "a-3"), StreamVersion(2));
    const AppendResult r = AppendOk(*log, std::move(retry));
    CHECK(r.appended == 2);
    CHECK(r.duplicates == 0);
    CHECK(r.outcomes[0].position == EventPosition{Partition(0), Sequence(3)});
  }
  CHECK(VersionOf(*log, "case/A") == 3);
  CHECK(VersionOf(*log, "case/B") == 1);

  // Ahead of the stream is as wrong as behind it.
  AppendBatch ahead{Partition(0)};
  ahead.Add(CaseUrgedEvent("A", "a-9"), StreamVersion(7));
  const absl::StatusOr<AppendResult> ahead_result = log->Append(std::move(ahead));
  CHECK(ahead_result.status().code() == absl::StatusCode::kAborted);
  CHECK_THAT(Message(ahead_result.status()), Catch::Contains("case/A"));
  CHECK(log->NextSequence(Partition(0)) == Sequence(5));
}

TEST_CASE("expected versions within one batch count the batch's own earlier events",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  AppendBatch b{Partition(2)};
  b.Add(CaseReportedEvent("C", "c-1"), StreamVersion(0));  // A new stream.
  b.Add(CaseUrgedEvent("C", "c-2"), StreamVersion(1));
  b.Add(CaseUrgedEvent("C", "c-3"));  // No expectation: appended at the head.
  const AppendResult r = AppendOk(*log, std::move(b));
  CHECK(r.appended == 3);
  const std::vector<v1::Event> c = ReadStreamOk(*log, "case/C");
  REQUIRE(c.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(c[i].stream_version() == i + 1);
    CHECK(PositionOf(c[i]) == EventPosition{Partition(2), Sequence(i)});
  }

  SECTION("expecting 0 for a stream that exists conflicts") {
    AppendBatch again{Partition(2)};
    again.Add(CaseReportedEvent("C", "c-again"), StreamVersion(0));
    CHECK(log->Append(std::move(again)).status().code() == absl::StatusCode::kAborted);
  }
  SECTION("a second event expecting what the first one expected conflicts") {
    AppendBatch twice{Partition(2)};
    twice.Add(CaseUrgedEvent("C", "c-4"), StreamVersion(3));
    twice.Add(CaseUrgedEvent("C", "c-5"), StreamVersion(3));
    const absl::StatusOr<AppendResult> conflict = log->Append(std::move(twice));
    CHECK(conflict.status().code() == absl::StatusCode::kAborted);
    CHECK_THAT(Message(conflict.status()), Catch::Contains("case/C"));
  }
  SECTION("the right expectation goes through") {
    AppendBatch next{Partition(2)};
    next.Add(CaseUrgedEvent("C", "c-4"), StreamVersion(3));
    CHECK(AppendOk(*log, std::move(next)).outcomes[0].position ==
          EventPosition{Partition(2), Sequence(3)});
    CHECK(VersionOf(*log, "case/C") == 4);
  }
  CHECK(VersionOf(*log, "case/C") >= 3);
  CHECK(log->NextSequence(Partition(2)) == Sequence(VersionOf(*log, "case/C")));
}

// ---------------------------------------------------------------------------------------
// Malformed batches

TEST_CASE("malformed entries are INVALID_ARGUMENT naming the entry and write nothing",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);

  struct Case {
    std::string what;
    std::function<void(AppendBatch&)> add_bad;
    std::vector<std::string> message_names;
  };
  const std::vector<Case> cases = {
      {"an entry without payload",
       [](AppendBatch& b) {
         v1::Event e = CaseUrgedEvent("A", "a-bad");
         e.clear_case_urged();
         b.Add(e);
       },
       {"entry 1", "payload"}},
      {"an entry without stream id",
       [](AppendBatch& b) {
         v1::Event e = ReadingEvent("dev-1", 1);
         e.clear_stream_id();
         b.Add(e);
       },
       {"entry 1", "stream id"}},
      {"an expected version on a device stream",
       [](AppendBatch& b) { b.Add(ReadingEvent("dev-1", 1), StreamVersion(0)); },
       {"entry 1", "device/dev-1"}},
      {"both source positions and a checkpoint",
       [](AppendBatch& b) {
         b.SetCheckpoint({"rules", Sequence(1), "state"});
       },
       {"partition 3", "checkpoint"}},
  };
  for (const Case& c : cases) {
    INFO("batch with " << c.what);
    AppendBatch b{Partition(3)};
    b.Add(CaseReportedEvent("A", "a-1"), StreamVersion(0));  // A valid entry 0.
    c.add_bad(b);
    b.SetSourcePosition(kReadingsTopic, 3, KafkaOffset(10));
    const absl::StatusOr<AppendResult> result = log->Append(std::move(b));
    CHECK(result.status().code() == absl::StatusCode::kInvalidArgument);
    for (const std::string& name : c.message_names) {
      CHECK_THAT(Message(result.status()), Catch::Contains(name, Catch::CaseSensitive::No));
    }
    CHECK(log->NextSequence(Partition(3)) == Sequence(0));
    CHECK(log->Partitions().empty());
    CHECK(VersionOf(*log, "case/A") == 0);
    CHECK(StoredPosition(*log, kReadingsTopic, 3) == std::nullopt);
    CHECK(Checkpoint(*log, Partition(3), "rules") == std::nullopt);
  }
  // The valid entry's idempotency key was not stored by any of those: it appends now.
  AppendBatch valid{Partition(3)};
  valid.Add(CaseReportedEvent("A", "a-1"), StreamVersion(0));
  const AppendResult r = AppendOk(*log, std::move(valid));
  CHECK(r.appended == 1);
  CHECK(r.duplicates == 0);
}

// ---------------------------------------------------------------------------------------
// Source positions and checkpoints

TEST_CASE("source positions and checkpoints are stored with their events and later values win",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);

  {
    AppendBatch b{Partition(0)};
    for (int i = 0; i < 3; ++i) b.Add(ReadingEvent("dev-0", i, 0));
    b.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(2));
    b.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(3));  // The later call wins.
    AppendOk(*log, std::move(b));
  }
  {
    AppendBatch b{Partition(1)};
    for (int i = 0; i < 5; ++i) b.Add(ReadingEvent("dev-1", i, 1));
    b.Add(CaseReportedEvent("R-7", "cityops.reports/0/6"));
    b.SetSourcePosition(kReadingsTopic, 1, KafkaOffset(5));
    b.SetSourcePosition("cityops.reports", 0, KafkaOffset(7));
    AppendOk(*log, std::move(b));
  }
  CHECK(StoredPosition(*log, kReadingsTopic, 0) == KafkaOffset(3));
  CHECK(StoredPosition(*log, kReadingsTopic, 1) == KafkaOffset(5));
  CHECK(StoredPosition(*log, "cityops.reports", 0) == KafkaOffset(7));
  CHECK(StoredPosition(*log, kReadingsTopic, 2) == std::nullopt);
  CHECK(StoredPosition(*log, "cityops.readings.v2", 0) == std::nullopt);

  SECTION("every stored position, ordered by topic then partition") {
    absl::StatusOr<std::vector<SourcePosition>> all = log->StoredSourcePositions();
    REQUIRE(all.ok());
    REQUIRE(all->size() == 3);
    CHECK((*all)[0].topic == kReadingsTopic);
    CHECK((*all)[0].kafka_partition == 0);
    CHECK((*all)[0].next_offset == KafkaOffset(3));
    CHECK((*all)[1].topic == kReadingsTopic);
    CHECK((*all)[1].kafka_partition == 1);
    CHECK((*all)[1].next_offset == KafkaOffset(5));
    CHECK((*all)[2].topic == "cityops.reports");
    CHECK((*all)[2].kafka_partition == 0);
    CHECK((*all)[2].next_offset == KafkaOffset(7));
  }
  SECTION("a batch with only a position moves it on and appends nothing") {
    AppendBatch b{Partition(0)};
    b.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(10));  // All dead-lettered.
    const AppendResult r = AppendOk(*log, std::move(b));
    CHECK(r.appended == 0);
    CHECK(r.next == Sequence(3));
    CHECK(log->NextSequence(Partition(0)) == Sequence(3));
    CHECK(StoredPosition(*log, kReadingsTopic, 0) == KafkaOffset(10));
  }
  SECTION("checkpoints are per partition and stage and keep their state bytes") {
    const std::string state("devices\0snapshot\xff", 17);
    {
      AppendBatch b{Partition(1)};
      v1::Event derived = CaseUrgedEvent("R-7", "rules/1/5");
      derived.mutable_provenance()->set_stage("rules");
      derived.mutable_provenance()->mutable_caused_by()->set_partition(1);
      derived.mutable_provenance()->mutable_caused_by()->set_sequence(5);
      b.Add(derived);
      b.SetCheckpoint({"rules", Sequence(6), state});
      AppendOk(*log, std::move(b));
    }
    std::optional<StageCheckpoint> cp = Checkpoint(*log, Partition(1), "rules");
    REQUIRE(cp.has_value());
    CHECK(cp->stage == "rules");
    CHECK(cp->next == Sequence(6));
    CHECK(cp->state == state);
    CHECK(Checkpoint(*log, Partition(0), "rules") == std::nullopt);
    CHECK(Checkpoint(*log, Partition(1), "rule") == std::nullopt);
    CHECK(Checkpoint(*log, Partition(1), "rules.v2") == std::nullopt);
    CHECK(ReadStreamOk(*log, "case/R-7").back().provenance().caused_by().sequence() == 5);

    // A checkpoint alone (a projection that derived nothing) moves it on; later wins.
    AppendBatch only{Partition(1)};
    only.SetCheckpoint({"rules", Sequence(7), "s2"});
    CHECK(AppendOk(*log, std::move(only)).appended == 0);
    cp = Checkpoint(*log, Partition(1), "rules");
    REQUIRE(cp.has_value());
    CHECK(cp->next == Sequence(7));
    CHECK(cp->state == "s2");
    CHECK(log->NextSequence(Partition(1)) == Sequence(7));
    // Stored positions are untouched by checkpoints.
    CHECK(StoredPosition(*log, kReadingsTopic, 1) == KafkaOffset(5));
  }
}

TEST_CASE("a stage snapshot is stored in the same write as its checkpoints, or not at all",
          "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("log");
  auto log = OpenLog(path, &clock);
  auto stored = [&](std::string_view stage) {
    absl::StatusOr<std::optional<std::string>> s = log->StoredSnapshot(stage);
    INFO(s.status().ToString());
    REQUIRE(s.ok());
    return *s;
  };
  CHECK(stored("rules") == std::nullopt);
  const std::string first("engine\0state\xff", 13);
  {
    std::vector<AppendBatch> batches;
    batches.emplace_back(Partition(0));
    batches.back().Add(CaseUrgedEvent("A", "a-1"));
    batches.back().SetCheckpoint({"rules", Sequence(1), ""});
    batches.emplace_back(Partition(2));
    batches.back().SetCheckpoint({"rules", Sequence(0), ""});
    absl::StatusOr<std::vector<AppendResult>> r =
        log->AppendAll(batches, kernel::StageSnapshot{"rules", first});
    INFO(r.status().ToString());
    REQUIRE(r.ok());
  }
  CHECK(stored("rules") == first);
  CHECK(stored("rule") == std::nullopt);
  CHECK(Checkpoint(*log, Partition(0), "rules").value().next == Sequence(1));

  // An append that fails writes neither its checkpoint nor its snapshot.
  {
    std::vector<AppendBatch> batches;
    batches.emplace_back(Partition(0));
    batches.back().Add(CaseUrgedEvent("A", "a-2"), StreamVersion(7));  // The stream is at 1.
    batches.back().SetCheckpoint({"rules", Sequence(2), ""});
    absl::StatusOr<std::vector<AppendResult>> r =
        log->AppendAll(batches, kernel::StageSnapshot{"rules", "second"});
    CHECK(r.status().code() == absl::StatusCode::kAborted);
  }
  CHECK(stored("rules") == first);
  CHECK(Checkpoint(*log, Partition(0), "rules").value().next == Sequence(1));

  // A snapshot alone is a valid write; the latest replaces the one before, across reopening.
  {
    std::vector<AppendBatch> none;
    REQUIRE(log->AppendAll(none, kernel::StageSnapshot{"rules", "third"}).ok());
    CHECK(log->AppendAll(none, kernel::StageSnapshot{"", "x"}).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  log.reset();
  log = OpenLog(path, &clock);
  CHECK(stored("rules") == "third");
  CHECK(log->NextSequence(Partition(0)) == Sequence(1));
}

// ---------------------------------------------------------------------------------------
// Reopening

TEST_CASE("a reopened log keeps everything and continues the sequences densely", "[event_log]") {
  const Durability durability =
      GENERATE(Durability::kSyncEachAppend, Durability::kBuffered, Durability::kUnlogged);
  INFO("durability " << static_cast<int>(durability));
  TempDir dir;
  ManualClock clock(kTestNow);
  EventLogOptions options = Options(dir.Sub("log"), &clock);
  options.durability = durability;
  std::map<uint32_t, std::vector<v1::Event>> before;
  {
    auto log = OpenLog(options);
    for (int round = 0; round < 4; ++round) {
      for (uint32_t p : {0u, 3u}) {
        AppendBatch b{Partition(p)};
        for (int i = 0; i < 10; ++i) {
          b.Add(ReadingEvent("dev", round * 10 + i, static_cast<int32_t>(p)));
        }
        if (p == 3) b.Add(CaseUrgedEvent("A", absl::StrCat("a-", round)));
        b.SetSourcePosition(kReadingsTopic, static_cast<int32_t>(p), KafkaOffset(round * 10 + 10));
        AppendOk(*log, std::move(b));
      }
      clock.Advance(absl::Seconds(1));
    }
    AppendBatch cp{Partition(0)};
    cp.SetCheckpoint({"projections.devices", Sequence(40), "snapshot"});
    AppendOk(*log, std::move(cp));
    before[0] = ReadAll(*log, Partition(0));
    before[3] = ReadAll(*log, Partition(3));
  }

  auto log = OpenLog(options);
  CHECK(log->Partitions() == std::vector<Partition>{Partition(0), Partition(3)});
  CHECK(log->NextSequence(Partition(0)) == Sequence(40));
  CHECK(log->NextSequence(Partition(3)) == Sequence(44));
  CheckSameEvents(before[0], ReadAll(*log, Partition(0)));
  CheckSameEvents(before[3], ReadAll(*log, Partition(3)));
  CHECK(VersionOf(*log, "case/A") == 4);
  CHECK(StoredPosition(*log, kReadingsTopic, 0) == KafkaOffset(40));
  CHECK(StoredPosition(*log, kReadingsTopic, 3) == KafkaOffset(40));
  const std::optional<StageCheckpoint> cp = Checkpoint(*log, Partition(0), "projections.devices");
  REQUIRE(cp.has_value());
  CHECK(cp->next == Sequence(40));
  CHECK(cp->state == "snapshot");

  AppendBatch more{Partition(3)};
  more.Add(ReadingEvent("dev", 40, 3));
  more.Add(CaseUrgedEvent("A", "a-4"), StreamVersion(4));
  const AppendResult r = AppendOk(*log, std::move(more));
  CHECK(r.outcomes[0].position == EventPosition{Partition(3), Sequence(44)});
  CHECK(r.next == Sequence(46));
  const std::vector<v1::Event> a = ReadStreamOk(*log, "case/A");
  REQUIRE(a.size() == 5);
  CHECK(a[4].stream_version() == 5);
  CHECK(ReadAll(*log, Partition(3)).size() == 46);
}

TEST_CASE("an unlogged log holds what Flush wrote even when it is never closed", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  EventLogOptions options = Options(dir.Sub("log"), &clock);
  options.durability = Durability::kUnlogged;
  auto log = OpenLog(options);
  AppendBatch b{Partition(1)};
  for (int i = 0; i < 25; ++i) b.Add(ReadingEvent("dev", i, 1));
  b.Add(CaseUrgedEvent("A", "a-0"));
  AppendOk(*log, std::move(b));
  const std::vector<v1::Event> appended = ReadAll(*log, Partition(1));
  const absl::Status flushed = log->Flush();
  INFO(flushed);
  REQUIRE(flushed.ok());

  // What a crash leaves: the directory as it is while the log is still open. It has no
  // write-ahead log to replay, so only what Flush wrote can be there.
  const std::string crashed = dir.Sub("crashed");
  std::filesystem::copy(options.path, crashed, std::filesystem::copy_options::recursive);
  EventLogOptions crashed_options = options;
  crashed_options.path = crashed;
  crashed_options.create_if_missing = false;
  auto reopened = OpenLog(crashed_options);
  CHECK(reopened->NextSequence(Partition(1)) == Sequence(26));
  CheckSameEvents(appended, ReadAll(*reopened, Partition(1)));
  CHECK(VersionOf(*reopened, "case/A") == 1);
}

// ---------------------------------------------------------------------------------------
// Refusing to open

TEST_CASE("a log open in this process cannot be opened a second time", "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("log");
  auto log = OpenLog(path, &clock);
  const absl::StatusOr<std::unique_ptr<EventLog>> second = EventLog::Open(Options(path, &clock));
  CHECK(second.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(second.status()), Catch::Contains(path));
  // The first one is unharmed, and once it is closed the directory opens again.
  AppendBatch b{Partition(0)};
  b.Add(ReadingEvent("dev", 0));
  AppendOk(*log, std::move(b));
  log.reset();
  auto again = OpenLog(path, &clock);
  CHECK(again->NextSequence(Partition(0)) == Sequence(1));
}

TEST_CASE("a log held by another process is refused until that process lets go",
          "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("log");
  testing::ChildProcess holder({CITYOPS_CRASH_APPENDER, "hold", path});
  REQUIRE(holder.WaitForLine("ready", absl::Seconds(30)));

  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(path, &clock));
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(refused.status()), Catch::Contains(path));
  // LOG_FORMAT.md: the lock file holds the owner's pid for this message.
  CHECK_THAT(Message(refused.status()), Catch::Contains(absl::StrCat(holder.pid())));

  holder.CloseStdin();
  const int status = holder.Wait();
  INFO(testing::ChildProcess::DescribeWaitStatus(status));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  auto log = OpenLog(path, &clock);
  CHECK(log->Partitions().empty());
}

TEST_CASE("a directory of other files is refused as not a cityops log and left alone",
          "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("photos");
  fs::create_directory(path);
  std::ofstream(path + "/holiday.jpg") << "not an event log";
  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(path, &clock));
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(refused.status()), Catch::Contains(path));
  std::vector<std::string> files;
  for (const fs::directory_entry& e : fs::directory_iterator(path)) {
    files.push_back(e.path().filename().string());
  }
  CHECK(files == std::vector<std::string>{"holiday.jpg"});

  SECTION("so is a plain file") {
    const std::string file = path + "/holiday.jpg";
    const absl::StatusOr<std::unique_ptr<EventLog>> not_dir = EventLog::Open(Options(file, &clock));
    CHECK(not_dir.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(Message(not_dir.status()), Catch::Contains(file));
  }
}

// A RocksDB database made without cityops, with the given column families besides
// "default" and one key in the default family.
void CreateBareRocksDb(const std::string& path, const std::vector<std::string>& extra_families) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()}};
  for (const std::string& name : extra_families) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, path, families, &handles, &raw);
  INFO(s.ToString());
  REQUIRE(s.ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  REQUIRE(db->Put(rocksdb::WriteOptions(), "inventory/42", "someone else's data").ok());
  for (rocksdb::ColumnFamilyHandle* h : handles) REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
  REQUIRE(db->Close().ok());
}

TEST_CASE("a plain RocksDB database is refused as not a cityops log", "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("inventory");
  SECTION("with only the default column family") {
    CreateBareRocksDb(path, {});
    const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(path, &clock));
    CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(Message(refused.status()), Catch::Contains(path));
    // Nothing was added to it.
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
    CHECK(names == std::vector<std::string>{rocksdb::kDefaultColumnFamilyName});
  }
  SECTION("with cityops' column families but without its marker") {
    CreateBareRocksDb(path,
                      {format::EventsCfName(Partition(0)), std::string(format::kStreamsCf),
                       std::string(format::kIdempotencyCf), std::string(format::kPositionsCf)});
    const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(path, &clock));
    CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(Message(refused.status()), Catch::Contains(path));
  }
  // Its data is intact either way.
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::Options(), path, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string value;
  REQUIRE(db->Get(rocksdb::ReadOptions(), "inventory/42", &value).ok());
  CHECK(value == "someone else's data");
}

// Rewrites the format version of the closed log at `path` with bare RocksDB; returns
// the previous one.
std::string OverwriteFormatVersion(const std::string& path, const std::string& version) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(), path, families, &handles, &raw);
  INFO(s.ToString());
  REQUIRE(s.ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string old;
  REQUIRE(db->Get(rocksdb::ReadOptions(), format::kFormatVersionKey, &old).ok());
  rocksdb::WriteOptions sync;
  sync.sync = true;
  REQUIRE(db->Put(sync, format::kFormatVersionKey, version).ok());
  for (rocksdb::ColumnFamilyHandle* h : handles) REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
  REQUIRE(db->Close().ok());
  return old;
}

TEST_CASE("a log of another format version is refused", "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("log");
  {
    auto log = OpenLog(path, &clock);
    AppendBatch b{Partition(0)};
    b.Add(ReadingEvent("dev", 0));
    AppendOk(*log, std::move(b));
  }
  std::string version;
  std::string advice;
  SECTION("a newer one") {
    version = std::to_string(format::kFormatVersion + 1);
    advice = "upgrade";
  }
  SECTION("version 1, which has an upgrade") {
    version = "1";
    advice = "cityops log upgrade --data-dir " + path;
  }
  SECTION("an older one without a migration") {
    version = "0";
    advice = "no migration";
  }
  const std::string current = std::to_string(format::kFormatVersion);
  CHECK(OverwriteFormatVersion(path, version) == current);
  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(Options(path, &clock));
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Message(refused.status()), Catch::Contains(path));
  CHECK_THAT(Message(refused.status()), Catch::Contains(version));
  CHECK_THAT(Message(refused.status()), Catch::Contains(advice));
  // With its version put back it is a normal log again: the refusal changed nothing.
  CHECK(OverwriteFormatVersion(path, current) == version);
  CHECK(OpenLog(path, &clock)->NextSequence(Partition(0)) == Sequence(1));
}

TEST_CASE("a missing log without create_if_missing is NOT_FOUND and nothing is created",
          "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("missing");
  EventLogOptions options = Options(path, &clock);
  options.create_if_missing = false;
  const absl::StatusOr<std::unique_ptr<EventLog>> missing = EventLog::Open(options);
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(Message(missing.status()), Catch::Contains(path));
  CHECK_FALSE(fs::exists(path));
  // An existing log opens without creation.
  OpenLog(Options(path, &clock)).reset();
  CHECK(OpenLog(options)->Partitions().empty());
}

TEST_CASE("bad options are INVALID_ARGUMENT", "[event_log][open]") {
  TempDir dir;
  EventLogOptions no_path;
  no_path.path = "";
  CHECK(EventLog::Open(no_path).status().code() == absl::StatusCode::kInvalidArgument);
  EventLogOptions no_clock;
  no_clock.path = dir.Sub("log");
  no_clock.clock = nullptr;
  CHECK(EventLog::Open(no_clock).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE(
    "Memory says what RocksDB holds: appends in memtables until a flush, then table "
    "readers and cached blocks once read",
    "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(Options(dir.Sub("log"), &clock));
  const uint64_t empty = log->Memory().memtables;
  for (int i = 0; i < 20; ++i) {
    AppendBatch b{Partition(static_cast<uint32_t>(i % 2))};
    for (int j = 0; j < 100; ++j) b.Add(ReadingEvent(absl::StrCat("dev-", j), i * 100 + j));
    AppendOk(*log, std::move(b));
  }
  const kernel::LogMemory appended = log->Memory();
  CHECK(appended.memtables > empty);
  REQUIRE(log->Flush().ok());
  const kernel::LogMemory flushed = log->Memory();
  CHECK(flushed.memtables < appended.memtables);
  CHECK(flushed.table_readers > 0);
  // Reading the events back through the cache fills it.
  size_t read = 0;
  REQUIRE(log->Scan(Partition(0), Sequence(0),
                    [&](Sequence, std::string_view) {
                      ++read;
                      return true;
                    })
              .ok());
  CHECK(read == 1000);
  CHECK(log->Memory().block_cache >= flushed.block_cache);
}

TEST_CASE("the memtable budget is the log's, and a budget below 16 MiB is refused",
          "[event_log][open]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  EventLogOptions options = Options(dir.Sub("log"), &clock);
  options.memtable_budget_bytes = size_t{1} << 20;
  const absl::StatusOr<std::unique_ptr<EventLog>> refused = EventLog::Open(options);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Message(refused.status()), Catch::Contains("16 MiB"));

  options.memtable_budget_bytes = size_t{32} << 20;
  {
    auto log = OpenLog(options);
    for (uint32_t p = 0; p < 3; ++p) {
      AppendBatch b{Partition(p)};
      b.Add(ReadingEvent("dev", p));
      AppendOk(*log, std::move(b));
    }
  }
  // RocksDB records what the log gave it: the whole budget, a quarter of it per partition.
  std::string latest;  // OPTIONS-<number>, the same width: the last name is the newest.
  for (const fs::directory_entry& e : fs::directory_iterator(options.path)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("OPTIONS-") && name > latest) latest = name;
  }
  std::ifstream in(fs::path(options.path) / latest);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Catch::Contains("db_write_buffer_size=33554432"));
  CHECK_THAT(text, Catch::Contains("[CFOptions \"events/2\"]"));
  const size_t events = text.find("[CFOptions \"events/2\"]");
  CHECK(text.find("write_buffer_size=8388608", events) != std::string::npos);
}

// ---------------------------------------------------------------------------------------
// The on-disk format

TEST_CASE("the log is laid out on disk as LOG_FORMAT.md says", "[event_log][format]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  const std::string path = dir.Sub("log");
  {
    auto log = OpenLog(path, &clock);
    AppendBatch b{Partition(258)};
    b.Add(ReadingEvent("dev", 0, 1));
    b.Add(CaseReportedEvent("A", "req-1"));
    b.SetSourcePosition(kReadingsTopic, 1, KafkaOffset(1));
    AppendOk(*log, std::move(b));
  }
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::sort(names.begin(), names.end());
  CHECK(names ==
        std::vector<std::string>{"default", "events/258", "idempotency", "positions", "streams"});
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> h;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, families, &h, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  // h[i] is names[i]: default, events/258, idempotency, positions, streams.
  std::string value;
  REQUIRE(db->Get({}, h[0], format::kMagicKey, &value).ok());
  CHECK(value == format::kMagicValue);
  REQUIRE(db->Get({}, h[0], format::kFormatVersionKey, &value).ok());
  CHECK(value == std::to_string(format::kFormatVersion));

  // events/<partition>: sequence u64 BE; the value leaves partition and sequence unset.
  const std::string key1("\x00\x00\x00\x00\x00\x00\x00\x01", 8);
  CHECK(format::EventKey(Sequence(1)) == key1);
  REQUIRE(db->Get({}, h[1], key1, &value).ok());
  v1::Event raw_event;
  REQUIRE(raw_event.ParseFromString(value));
  CHECK(raw_event.partition() == 0);
  CHECK(raw_event.sequence() == 0);
  CHECK(raw_event.stream_id() == "case/A");
  CHECK(raw_event.stream_version() == 1);
  CHECK(raw_event.recorded_time().seconds() == absl::ToUnixSeconds(kTestNow));

  // idempotency: key -> position: partition u32 BE + sequence u64 BE; readings have none.
  const std::string position1("\x00\x00\x01\x02\x00\x00\x00\x00\x00\x00\x00\x01", 12);
  CHECK(format::EncodePosition({Partition(258), Sequence(1)}) == position1);
  REQUIRE(db->Get({}, h[2], "req-1", &value).ok());
  CHECK(value == position1);
  CHECK(db->Get({}, h[2], "dev/r0", &value).IsNotFound());

  // positions: 's' + topic + '\0' + partition u32 BE -> next offset u64 BE.
  REQUIRE(db->Get({}, h[3], std::string("scityops.readings\0\0\0\0\x01", 22), &value).ok());
  CHECK(value == std::string("\0\0\0\0\0\0\0\x01", 8));

  // streams: stream id + '\0' + version u64 BE -> position; one entry for the case only.
  REQUIRE(db->Get({}, h[4], std::string("case/A\0\0\0\0\0\0\0\0\x01", 15), &value).ok());
  CHECK(value == position1);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, h[4]));
  int stream_entries = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++stream_entries;
  CHECK(stream_entries == 1);
  it.reset();
  for (rocksdb::ColumnFamilyHandle* handle : h) db->DestroyColumnFamilyHandle(handle);
}

// ---------------------------------------------------------------------------------------
// Following the log

TEST_CASE("WaitForEvents wakes a follower when another thread appends", "[event_log][wait]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  constexpr int kBatches = 25;
  constexpr int kPerBatch = 4;
  // The follower reads from its position, then waits with its new position, as the
  // header describes. Its waits are unbounded: a lost wake-up hangs the test and CTest's
  // timeout fails it.
  std::vector<int64_t> followed;
  absl::Status follower_status;
  std::thread follower([&] {
    Sequence position(0);
    while (followed.size() < kBatches * kPerBatch) {
      const Sequence next = log->WaitForEvents(Partition(2), position, absl::InfiniteDuration());
      if (next <= position) {
        follower_status = absl::InternalError("woke up without news");
        return;
      }
      absl::StatusOr<std::vector<v1::Event>> events = log->Read(Partition(2), position, kAll);
      if (!events.ok()) {
        follower_status = events.status();
        return;
      }
      for (const v1::Event& e : *events) followed.push_back(e.provenance().kafka().offset());
      position = Sequence(position.value() + events->size());
    }
  });
  for (int b = 0; b < kBatches; ++b) {
    AppendBatch batch{Partition(2)};
    for (int i = 0; i < kPerBatch; ++i) batch.Add(ReadingEvent("dev", b * kPerBatch + i, 2));
    AppendOk(*log, std::move(batch));
  }
  follower.join();
  INFO(follower_status.ToString());
  REQUIRE(follower_status.ok());
  REQUIRE(followed.size() == kBatches * kPerBatch);
  for (size_t i = 0; i < followed.size(); ++i) CHECK(followed[i] == static_cast<int64_t>(i));
}

TEST_CASE("WaitForEvents returns at its timeout when nothing is appended", "[event_log][wait]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  CHECK(log->WaitForEvents(Partition(0), Sequence(0), absl::Milliseconds(20)) == Sequence(0));
  AppendBatch b{Partition(0)};
  for (int i = 0; i < 3; ++i) b.Add(ReadingEvent("dev", i));
  AppendOk(*log, std::move(b));
  CHECK(log->WaitForEvents(Partition(0), Sequence(3), absl::Milliseconds(20)) == Sequence(3));
  // Events beyond the caller's position are news at once, however long it would wait.
  CHECK(log->WaitForEvents(Partition(0), Sequence(1), absl::InfiniteDuration()) == Sequence(3));
  CHECK(log->WaitForEvents(Partition(0), Sequence(0), absl::ZeroDuration()) == Sequence(3));
  // Other partitions' events are not.
  CHECK(log->WaitForEvents(Partition(1), Sequence(0), absl::Milliseconds(20)) == Sequence(0));
}

TEST_CASE("closing the log wakes a reader that waits for events", "[event_log][wait]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  std::atomic<bool> started{false};
  std::atomic<bool> returned{false};
  Sequence result(99);
  EventLog* reader = log.get();
  std::thread waiter([&] {
    started = true;
    // Unbounded: only the close can end this wait (a missed wake-up hangs the test).
    result = reader->WaitForEvents(Partition(0), Sequence(0), absl::InfiniteDuration());
    returned = true;
  });
  // The log offers no signal that a reader has begun to wait, and a reader that came
  // after the close would use a destroyed log: wait until the thread runs, then give it
  // ample time to block inside WaitForEvents.
  while (!started.load()) std::this_thread::yield();
  absl::SleepFor(absl::Milliseconds(50));
  CHECK_FALSE(returned.load());
  log.reset();
  waiter.join();
  CHECK(returned.load());
  CHECK(result == Sequence(0));
}

// ---------------------------------------------------------------------------------------
// Concurrency

TEST_CASE("concurrent appenders keep every partition dense and every stream version unique",
          "[event_log][threads]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  constexpr int kThreads = 4;
  constexpr int kBatches = 40;
  std::mutex mu;
  std::vector<std::string> errors;
  std::atomic<int> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      int64_t offset = 0;
      for (int b = 0; b < kBatches; ++b) {
        const int n = 1 + static_cast<int>(rng() % 30);
        // Each batch also urges one shared case, expecting the version it just read;
        // a conflict retries the whole batch, which must not have left anything behind.
        for (;;) {
          absl::StatusOr<StreamVersion> v = log->CurrentVersion("case/shared");
          if (!v.ok()) break;
          AppendBatch batch{Partition(t)};
          for (int i = 0; i < n; ++i) batch.Add(ReadingEvent("dev", offset + i, t));
          batch.Add(CaseUrgedEvent("shared", absl::StrCat("urge-", t, "-", b)), *v);
          batch.SetSourcePosition(kReadingsTopic, t, KafkaOffset(offset + n));
          absl::StatusOr<AppendResult> r = log->Append(std::move(batch));
          if (absl::IsAborted(r.status())) {
            ++conflicts;
            continue;
          }
          std::lock_guard<std::mutex> lock(mu);
          if (!r.ok()) errors.push_back(r.status().ToString());
          break;
        }
        offset += n;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& e : errors) FAIL_CHECK(e);
  INFO(conflicts.load() << " conflicts were retried");
  std::set<std::string> keys;
  for (int t = 0; t < kThreads; ++t) {
    INFO("partition " << t);
    const std::vector<v1::Event> events = ReadAll(*log, Partition(t));
    int64_t next_offset = 0;
    for (size_t i = 0; i < events.size(); ++i) {
      REQUIRE(events[i].sequence() == i);
      if (events[i].has_reading()) {
        REQUIRE(events[i].provenance().kafka().offset() == next_offset);
        ++next_offset;
      }
    }
    CHECK(StoredPosition(*log, kReadingsTopic, t) == KafkaOffset(next_offset));
  }
  const std::vector<v1::Event> shared = ReadStreamOk(*log, "case/shared");
  CHECK(shared.size() == kThreads * kBatches);
  for (size_t i = 0; i < shared.size(); ++i) {
    CHECK(shared[i].stream_version() == i + 1);
    keys.insert(shared[i].provenance().idempotency_key());
  }
  CHECK(keys.size() == kThreads * kBatches);
}

// ---------------------------------------------------------------------------------------
// Backup

TEST_CASE("a backup taken while another thread appends is a consistent log", "[event_log]") {
  TempDir dir;
  ManualClock clock(kTestNow);
  auto log = OpenLog(dir.Sub("log"), &clock);
  std::atomic<bool> stop{false};
  absl::Status appender_status;
  std::thread appender([&] {
    std::mt19937 rng(5);
    int64_t readings = 0;
    while (!stop.load()) {
      AppendBatch batch{Partition(0)};
      const int n = 1 + static_cast<int>(rng() % 50);
      for (int i = 0; i < n; ++i) batch.Add(ReadingEvent("dev", readings + i));
      if (rng() % 4 == 0) batch.Add(CaseUrgedEvent("A", absl::StrCat("u-", readings)));
      readings += n;
      batch.SetSourcePosition(kReadingsTopic, 0, KafkaOffset(readings));
      absl::StatusOr<AppendResult> r = log->Append(std::move(batch));
      if (!r.ok()) {
        appender_status = r.status();
        return;
      }
    }
  });
  // Let it get going, then take backups while it runs.
  Sequence seen = log->WaitForEvents(Partition(0), Sequence(200), absl::Seconds(60));
  std::vector<std::string> backups;
  for (int i = 0; i < 3; ++i) {
    backups.push_back(dir.Sub(absl::StrCat("backup-", i)));
    const absl::Status s = log->Backup(backups.back());
    INFO(s.ToString());
    CHECK(s.ok());
    seen = log->WaitForEvents(Partition(0), seen, absl::Seconds(60));
  }
  const absl::Status again = log->Backup(backups.front());
  CHECK_FALSE(again.ok());  // The target must not exist.
  stop = true;
  appender.join();
  INFO(appender_status.ToString());
  REQUIRE(appender_status.ok());

  const std::vector<v1::Event> original = ReadAll(*log, Partition(0));
  for (const std::string& path : backups) {
    INFO("backup " << path);
    // It opens as a log of its own while the original stays open.
    auto copy = OpenLog(path, &clock);
    const std::vector<v1::Event> events = ReadAll(*copy, Partition(0));
    REQUIRE_FALSE(events.empty());
    REQUIRE(events.size() <= original.size());
    int64_t readings = 0;
    for (size_t i = 0; i < events.size(); ++i) {
      REQUIRE(events[i].sequence() == i);
      CheckSameEvent(original[i], events[i]);  // A prefix of the original.
      if (events[i].has_reading()) ++readings;
    }
    CHECK(StoredPosition(*copy, kReadingsTopic, 0) == KafkaOffset(readings));
    // Its index covers exactly the case events it holds.
    const std::vector<v1::Event> a = ReadStreamOk(*copy, "case/A");
    CHECK(a.size() == events.size() - static_cast<size_t>(readings));
    // And it is writable.
    AppendBatch b{Partition(0)};
    b.Add(ReadingEvent("dev", readings));
    CHECK(AppendOk(*copy, std::move(b)).next == Sequence(events.size() + 1));
  }
}

}  // namespace
}  // namespace cityops

namespace cityops::kernel {
namespace {

TEST_CASE("a reused batch appends its new events each time and keeps none of the old ones",
          "[event_log]") {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open({.path = dir.Sub("log")});
  REQUIRE(log.ok());
  AppendBatch batch{Partition(0)};
  int64_t offset = 0;
  for (int round = 0; round < 3; ++round) {
    batch.Clear();
    const int n = 5 - round;  // Fewer events than the batch keeps from earlier rounds.
    for (int i = 0; i < n; ++i, ++offset) {
      v1::Event* e = batch.AddNew();
      *e = testing::ReadingEvent(absl::StrCat("dev-", round), offset);
    }
    batch.SetSourcePosition("cityops.readings", 0, KafkaOffset(offset));
    REQUIRE(batch.size() == static_cast<size_t>(n));
    absl::StatusOr<AppendResult> r = (*log)->Append(batch);
    REQUIRE(r.ok());
    CHECK(r->appended == static_cast<size_t>(n));
  }
  absl::StatusOr<std::vector<v1::Event>> events = (*log)->Read(Partition(0), Sequence(0), 100);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 12);  // 5 + 4 + 3
  for (size_t i = 0; i < events->size(); ++i) {
    const std::string expected = i < 5 ? "dev-0" : i < 9 ? "dev-1" : "dev-2";
    CHECK((*events)[i].reading().device_id() == expected);
    CHECK((*events)[i].provenance().kafka().offset() == static_cast<int64_t>(i));
  }
  CHECK(**(*log)->StoredSourcePosition("cityops.readings", 0) == KafkaOffset(12));
}

}  // namespace
}  // namespace cityops::kernel
