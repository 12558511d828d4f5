// Ingest end to end: the embedded Kafka cluster over loopback, a real RocksDB log in a
// temporary directory, real librdkafka clients on both sides.
#include <sys/wait.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/embedded_kafka.h"
#include "ingest/ingester.h"
#include "kernel/event_log.h"
#include "tests/testing/child_process.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/kafka_client.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace cityops {
namespace {

using ingest::EmbeddedKafka;
using ingest::Ingester;
using ingest::IngestOptions;
using kernel::EventLog;
using kernel::Partition;
using kernel::Sequence;
using testing::TestProducer;
using testing::TestRecord;

constexpr int kPartitions = 4;
const absl::Time kNow = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21

std::unique_ptr<EmbeddedKafka> StartKafka(int brokers = 1) {
  ingest::EmbeddedKafkaOptions options;
  options.brokers = brokers;
  options.topics = {{"cityops.readings", kPartitions},
                    {"cityops.reports", kPartitions},
                    {"cityops.devices", kPartitions},
                    {"cityops.deadletter", 1}};
  absl::StatusOr<std::unique_ptr<EmbeddedKafka>> kafka = EmbeddedKafka::Start(options);
  REQUIRE(kafka.ok());
  return std::move(*kafka);
}

std::unique_ptr<EventLog> OpenLog(const std::string& path, const kernel::Clock* clock) {
  kernel::EventLogOptions options;
  options.path = path;
  options.clock = clock;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(options);
  REQUIRE(log.ok());
  return std::move(*log);
}

IngestOptions Options(const EmbeddedKafka& kafka, const kernel::Clock* clock) {
  IngestOptions options;
  options.bootstrap_servers = kafka.bootstrap_servers();
  options.clock = clock;
  options.clock_tick_interval = absl::ZeroDuration();
  options.poll_timeout = absl::Milliseconds(100);
  // The mock cluster bounds a rebalance by the session timeout; keep restarts quick.
  options.kafka_properties = {{"log_level", "3"}};
  options.consumer_properties = {{"session.timeout.ms", "3000"}, {"heartbeat.interval.ms", "500"}};
  return options;
}

std::unique_ptr<Ingester> MakeIngester(EventLog* log, IngestOptions options) {
  absl::StatusOr<std::unique_ptr<Ingester>> ingester = Ingester::Create(log, std::move(options));
  REQUIRE(ingester.ok());
  return std::move(*ingester);
}

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  ts->set_seconds(absl::ToUnixSeconds(t));
  ts->set_nanos(0);
}

v1::SensorReading ManholeReading(const std::string& device, int n, absl::Time at) {
  v1::SensorReading r;
  r.set_device_id(device);
  r.set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
  r.set_reading_id(absl::StrFormat("r%d", n));
  SetTime(r.mutable_event_time(), at);
  r.mutable_manhole_cover()->set_tilt_deg(1.5 + n % 3);
  r.mutable_manhole_cover()->set_well_water_level_m(0.4);
  r.mutable_manhole_cover()->set_battery_pct(88);
  return r;
}

TestRecord Binary(const v1::SensorReading& r) {
  return TestRecord{r.device_id(), r.SerializeAsString(), {}};
}

TestRecord Json(const v1::SensorReading& r) {
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(r, &json).ok());
  return TestRecord{r.device_id(), json, {{"content-type", "application/json"}}};
}

// Confluent Schema Registry framing: magic 0, schema id 42, message indexes [0] as 0.
TestRecord Framed(const v1::SensorReading& r) {
  std::string value("\0\0\0\0\x2a\0", 6);
  value += r.SerializeAsString();
  return TestRecord{r.device_id(), value, {}};
}

// Polls until `done` holds or 60 s pass.
template <typename Done>
void PollUntil(Ingester& ingester, Done done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!done() && absl::Now() < deadline) {
    absl::StatusOr<size_t> n = ingester.PollOnce();
    INFO(n.status().ToString());
    REQUIRE(n.ok());
  }
  REQUIRE(done());
}

TEST_CASE("ingest stores each valid reading once and dead-letters each bad one with its code",
          "[ingest][kafka]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  std::set<std::pair<std::string, std::string>> valid;
  int produced = 0;
  {
    TestProducer producer(kafka->bootstrap_servers(), &clock);
    for (int i = 0; i < 30; ++i) {
      v1::SensorReading r =
          ManholeReading(absl::StrFormat("310104010%07d", i % 10), i, kNow - absl::Minutes(30 - i));
      producer.Produce("cityops.readings", i % 3 == 0   ? Json(r)
                                           : i % 3 == 1 ? Framed(r)
                                                        : Binary(r));
      valid.insert({r.device_id(), r.reading_id()});
      ++produced;
      if (i % 6 == 0) {  // Published twice: stored once.
        producer.Produce("cityops.readings", Binary(r));
        ++produced;
      }
    }
    const v1::SensorReading good = ManholeReading("3101040100000099", 1000, kNow);
    auto with = [&](auto change) {
      v1::SensorReading r = good;
      change(r);
      return r;
    };
    std::map<std::string, TestRecord> bad = {
        {"UNDECODABLE", TestRecord{"k", std::string("\x0a\xff\xff\xff", 4), {}}},
        {"UNSUPPORTED_ENCODING",
         TestRecord{good.device_id(), good.SerializeAsString(), {{"content-type", "text/csv"}}}},
        {"OVERSIZED", TestRecord{good.device_id(), std::string(70 * 1024, 'x'), {}}},
        {"MISSING_FIELD", Binary(with([](auto& r) { r.clear_reading_id(); }))},
        {"UNKNOWN_DEVICE_KIND",
         Binary(with([](auto& r) { r.set_kind(static_cast<v1::DeviceKind>(99)); }))},
        {"KIND_MISMATCH", Binary(with([](auto& r) { r.set_kind(v1::DEVICE_KIND_ELEVATOR); }))},
        {"INVALID_METRIC",
         Binary(with([](auto& r) { r.mutable_manhole_cover()->set_tilt_deg(std::nan("")); }))},
        {"EVENT_TIME_IN_FUTURE",
         Binary(with([](auto& r) { SetTime(r.mutable_event_time(), kNow + absl::Hours(1)); }))},
        {"EVENT_TIME_TOO_OLD", Binary(with([](auto& r) {
           SetTime(r.mutable_event_time(), kNow - absl::Hours(24 * 90));
         }))},
        {"KEY_MISMATCH", TestRecord{"someone-else", good.SerializeAsString(), {}}},
        {"INVALID_FIELD",
         TestRecord{"", with([](auto& r) { r.set_device_id("dev ice"); }).SerializeAsString(), {}}},
    };
    for (const auto& [code, record] : bad) {
      TestRecord r = record;
      r.headers.emplace_back("trace-id", code);  // Original headers survive dead-lettering.
      producer.Produce("cityops.readings", r);
      ++produced;
    }
    producer.Flush();

    auto ingester = MakeIngester(log.get(), Options(*kafka, &clock));
    PollUntil(*ingester,
              [&] { return ingester->Stats().records == static_cast<uint64_t>(produced); });
    const ingest::IngestStats stats = ingester->Stats();
    CHECK(stats.readings == valid.size());
    CHECK(stats.duplicates == 5);
    CHECK(stats.dead_lettered == bad.size());

    // Caught up: no lag on any readings partition, and the watermarks add up to
    // everything produced.
    absl::StatusOr<std::vector<ingest::ConsumerLag>> lag = ingester->Lag();
    REQUIRE(lag.ok());
    int64_t readings_end = 0;
    for (const ingest::ConsumerLag& l : *lag) {
      if (l.topic != "cityops.readings") continue;
      INFO(l.topic << "/" << l.partition);
      CHECK(l.lag == 0);
      CHECK(l.next_offset == l.high_watermark);
      readings_end += l.high_watermark;
    }
    CHECK(readings_end == produced);

    const auto in_log = testing::ReadingCounts(*log);
    CHECK(in_log.size() == valid.size());
    for (const auto& [id, count] : in_log) {
      CHECK(valid.contains(id));
      CHECK(count == 1);
    }

    const std::vector<testing::ConsumedRecord> dead =
        testing::ReadTopic(kafka->bootstrap_servers(), "cityops.deadletter", 1);
    REQUIRE(dead.size() == bad.size());
    for (const testing::ConsumedRecord& d : dead) {
      const std::string code = d.headers.at("cityops-error-code");
      INFO(code);
      REQUIRE(bad.contains(code));
      CHECK(d.value == bad.at(code).value);
      CHECK(d.key == bad.at(code).key);
      CHECK(d.headers.at("trace-id") == code);
      CHECK_FALSE(d.headers.at("cityops-error-message").empty());
      CHECK(d.headers.at("cityops-source-topic") == "cityops.readings");
      CHECK(std::stoi(d.headers.at("cityops-source-partition")) >= 0);
      CHECK(std::stoll(d.headers.at("cityops-source-offset")) >= 0);
    }
  }
  // Every consumed offset is stored with the events.
  absl::StatusOr<std::vector<kernel::SourcePosition>> positions = log->StoredSourcePositions();
  REQUIRE(positions.ok());
  int64_t stored = 0;
  for (const kernel::SourcePosition& p : *positions) stored += p.next_offset.value();
  CHECK(stored == produced);
}

TEST_CASE("a catalogue kind's reading sent as values is stored and a bad one dead-lettered",
          "[ingest][kafka][catalogue]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  v1::SensorReading gas;
  gas.set_device_id("gd-0001");
  gas.set_kind_id("gas_detector");
  gas.set_reading_id("gd-0001:1");
  SetTime(gas.mutable_event_time(), kNow - absl::Minutes(2));
  v1::MetricValue* lel = gas.mutable_values()->add_values();
  lel->set_name("gas_lel_pct");
  lel->set_number(12.5);
  v1::MetricValue* alarm = gas.mutable_values()->add_values();
  alarm->set_name("alarm");
  alarm->set_flag(true);
  v1::SensorReading bad = gas;
  bad.set_reading_id("gd-0001:2");
  bad.mutable_values()->mutable_values(0)->set_name("methane_pct");
  {
    TestProducer producer(kafka->bootstrap_servers(), &clock);
    producer.Produce("cityops.readings", Binary(gas));
    producer.Produce("cityops.readings", Json(bad));
    producer.Flush();
    auto ingester = MakeIngester(log.get(), Options(*kafka, &clock));
    PollUntil(*ingester, [&] { return ingester->Stats().records == 2; });
    CHECK(ingester->Stats().readings == 1);
    CHECK(ingester->Stats().dead_lettered == 1);
  }
  std::vector<v1::SensorReading> stored;
  for (const auto& events : testing::AllEvents(*log)) {
    for (const v1::Event& e : events) {
      if (e.has_reading()) stored.push_back(e.reading());
    }
  }
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].kind_id() == "gas_detector");
  REQUIRE(stored[0].values().values_size() == 2);
  CHECK(stored[0].values().values(0).name() == "gas_lel_pct");
  CHECK(stored[0].values().values(0).number() == 12.5);
  CHECK(stored[0].values().values(1).flag());

  const std::vector<testing::ConsumedRecord> dead =
      testing::ReadTopic(kafka->bootstrap_servers(), "cityops.deadletter", 1);
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].headers.at("cityops-error-code") == "INVALID_METRIC");
  CHECK_THAT(dead[0].headers.at("cityops-error-message"),
             Catch::Contains("\"methane_pct\" is not a metric of kind 'gas_detector'") &&
                 Catch::Contains("gas_lel_pct, alarm, valve_closed, battery_pct"));
  CHECK(dead[0].value == Json(bad).value);
}

TEST_CASE("ingest restarted at random points while the producer runs loses and doubles nothing",
          "[ingest][kafka][slow]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  constexpr int kReadings = 4000;
  std::atomic<bool> produced_all{false};
  std::thread producer_thread([&] {
    TestProducer producer(kafka->bootstrap_servers(), &clock);
    for (int i = 0; i < kReadings; ++i) {
      producer.Produce("cityops.readings",
                       Binary(ManholeReading(absl::StrFormat("dev-%03d", i % 200), i,
                                             kNow - absl::Seconds(kReadings - i))));
      if (i % 250 == 0) producer.Flush();
    }
    producer.Flush();
    produced_all = true;
  });
  std::mt19937 rng(20261122);
  IngestOptions options = Options(*kafka, &clock);
  options.dedupe_window = 0;  // Only the stored offsets may prevent doubles here.
  options.max_batch_records = 300;
  int restarts = 0;
  for (;;) {
    auto ingester = MakeIngester(log.get(), options);
    const int polls = std::uniform_int_distribution<int>(1, 40)(rng);
    for (int i = 0; i < polls; ++i) {
      absl::StatusOr<size_t> n = ingester->PollOnce();
      REQUIRE(n.ok());
    }
    ++restarts;
    if (produced_all && testing::ReadingCounts(*log).size() == kReadings) break;
    REQUIRE(restarts < 60);
  }
  producer_thread.join();
  const auto in_log = testing::ReadingCounts(*log);
  CHECK(in_log.size() == kReadings);
  for (const auto& [id, count] : in_log) CHECK(count == 1);
  CHECK(restarts >= 2);
}

TEST_CASE(
    "a repeated reading is dropped within the horizon and stored beyond it, the same "
    "with a restart after every poll",
    "[ingest][kafka][slow]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  {
    TestProducer producer(kafka->bootstrap_servers(), &clock);
    int n = 0;
    auto produce = [&](const std::string& device, int id) {
      TestRecord r = Binary(ManholeReading(device, id, kNow - absl::Minutes(60 - n)));
      r.partition = 0;  // Offsets 0, 1, 2, ... in the order produced.
      producer.Produce("cityops.readings", r);
      ++n;
    };
    produce("dev-a", 1);  // Offset 0.
    for (int i = 0; i < 5; ++i) produce("dev-b", 100 + i);
    produce("dev-a", 1);  // Offset 6: 6 after the first, dropped.
    for (int i = 0; i < 10; ++i) produce("dev-b", 200 + i);
    produce("dev-a", 1);  // Offset 17: 17 after the first, stored.
    producer.Flush();
  }
  constexpr uint64_t kProduced = 18;
  auto consume = [&](const std::string& name, size_t batch, bool restart_each_poll) {
    auto log = OpenLog(dir.Sub(name), &clock);
    IngestOptions options = Options(*kafka, &clock);
    options.group_id = "dedupe-" + name;
    options.dedupe_horizon = 10;
    options.max_batch_records = batch;
    uint64_t records = 0;
    uint64_t duplicates = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (records < kProduced && absl::Now() < deadline) {
      auto ingester = MakeIngester(log.get(), options);
      // Polls until this life has stored something (the first polls join the group).
      while (ingester->Stats().records == 0 && records < kProduced && absl::Now() < deadline) {
        REQUIRE(ingester->PollOnce().ok());
        if (!restart_each_poll) {
          while (ingester->Stats().records + records < kProduced && absl::Now() < deadline) {
            REQUIRE(ingester->PollOnce().ok());
          }
        }
      }
      records += ingester->Stats().records;
      duplicates += ingester->Stats().duplicates;
    }
    REQUIRE(records == kProduced);
    CHECK(duplicates == 1);
    return testing::ReadingCounts(*log);
  };
  const auto once = consume("once", 10'000, false);
  CHECK(once.at({"dev-a", "r1"}) == 2);  // Offsets 0 and 17; offset 6 was dropped.
  CHECK(once.size() == 16);
  CHECK(consume("restarted", 1, true) == once);
}

TEST_CASE("ingest resumes after a broker goes down and after injected request errors",
          "[ingest][kafka][slow]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka(/*brokers=*/3);
  auto log = OpenLog(dir.Sub("log"), &clock);
  IngestOptions options = Options(*kafka, &clock);
  auto ingester = MakeIngester(log.get(), options);
  std::atomic<bool> stop{false};
  absl::Status run_status;
  std::thread runner([&] { run_status = ingester->Run(); });

  TestProducer producer(kafka->bootstrap_servers(), &clock);
  int n = 0;
  auto produce = [&](int count) {
    for (int i = 0; i < count; ++i, ++n) {
      producer.Produce("cityops.readings",
                       Binary(ManholeReading(absl::StrFormat("dev-%02d", n % 40), n,
                                             kNow - absl::Seconds(10'000 - n))));
    }
  };
  produce(500);
  producer.Flush();
  // Fetch (API key 1) fails a few times with NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT.
  kafka->PushRequestErrors(1, {6, 7, 6, 7});
  produce(500);
  producer.Flush();
  REQUIRE(kafka->SetBrokerDown(2).ok());
  absl::SleepFor(absl::Milliseconds(500));
  REQUIRE(kafka->SetBrokerUp(2).ok());
  produce(500);
  producer.Flush();

  testing::WaitUntil([&] { return testing::ReadingCounts(*log).size() >= static_cast<size_t>(n); },
                     absl::Seconds(60), absl::Milliseconds(200));
  ingester->Stop();
  runner.join();
  CHECK(run_status.ok());
  const auto in_log = testing::ReadingCounts(*log);
  CHECK(in_log.size() == static_cast<size_t>(n));
  for (const auto& [id, count] : in_log) CHECK(count == 1);
}

TEST_CASE("reports become cases and registrations tell known devices from unknown ones",
          "[ingest][kafka]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  TestProducer producer(kafka->bootstrap_servers(), &clock);

  v1::DeviceRegistered reg;
  reg.set_device_id("3101040101000001");
  reg.set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
  reg.mutable_grid()->set_district_code("310104");
  reg.mutable_grid()->set_street_code("310104010");
  reg.mutable_grid()->set_grid_code("310104010001001");
  // Same key as its readings, so it lands in the same partition before them.
  producer.Produce("cityops.devices", TestRecord{reg.device_id(), reg.SerializeAsString(), {}});
  producer.Flush();

  v1::CitizenReport report;
  report.set_report_id("12345-20260921-0001");
  report.set_source(v1::CASE_SOURCE_HOTLINE_12345);
  report.mutable_grid()->set_grid_code("310104010001001");
  report.mutable_category()->set_code("0103");
  report.set_description("storm drain cover missing at the bus stop");
  SetTime(report.mutable_event_time(), kNow - absl::Minutes(3));
  producer.Produce("cityops.reports",
                   TestRecord{report.report_id(), report.SerializeAsString(), {}});
  producer.Produce("cityops.reports",
                   TestRecord{report.report_id(), report.SerializeAsString(), {}});
  v1::CitizenReport patrol = report;
  patrol.set_report_id("patrol-20260921-0007");
  patrol.set_source(v1::CASE_SOURCE_STREET_PATROL);
  producer.Produce("cityops.reports",
                   TestRecord{patrol.report_id(), patrol.SerializeAsString(), {}});

  auto ingester = MakeIngester(log.get(), Options(*kafka, &clock));
  PollUntil(*ingester, [&] { return ingester->Stats().records == 4; });
  producer.Produce("cityops.readings", Binary(ManholeReading(reg.device_id(), 1, kNow)));
  producer.Produce("cityops.readings", Binary(ManholeReading("3101040101009999", 1, kNow)));
  producer.Flush();
  PollUntil(*ingester, [&] { return ingester->Stats().records == 6; });

  CHECK(ingester->Stats().reports == 3);
  CHECK(ingester->Stats().duplicates == 1);  // The report published twice.
  absl::StatusOr<std::vector<v1::Event>> reported =
      log->ReadStream("case/12345-20260921-0001", kernel::StreamVersion(1), 10);
  REQUIRE(reported.ok());
  REQUIRE(reported->size() == 1);
  const v1::CaseReported& c = reported->front().case_reported();
  CHECK(c.source() == v1::CASE_SOURCE_HOTLINE_12345);
  CHECK(c.category().code() == "0103");
  // The hotline's calls are taken by the district center, the originator by default.
  CHECK(c.originator().level() == v1::GRID_LEVEL_DISTRICT_CENTER);
  CHECK(c.originator().code() == "310104");
  CHECK(reported->front().provenance().kafka().topic() == "cityops.reports");
  // A patrol's report is the grid's residential station's to verify and close.
  absl::StatusOr<std::vector<v1::Event>> patrolled =
      log->ReadStream("case/patrol-20260921-0007", kernel::StreamVersion(1), 10);
  REQUIRE(patrolled.ok());
  REQUIRE(patrolled->size() == 1);
  CHECK(patrolled->front().case_reported().originator().level() ==
        v1::GRID_LEVEL_RESIDENTIAL_STATION);
  CHECK(patrolled->front().case_reported().originator().code() == "310104010001001");

  absl::StatusOr<std::vector<v1::Event>> registered =
      log->ReadStream("registry/3101040101000001", kernel::StreamVersion(1), 10);
  REQUIRE(registered.ok());
  REQUIRE(registered->size() == 1);

  std::map<std::string, bool> unregistered;
  for (Partition p : log->Partitions()) {
    const std::vector<v1::Event> events = *log->Read(p, Sequence(0), 1000);
    for (const v1::Event& e : events) {
      if (e.has_reading()) unregistered[e.reading().device_id()] = e.device_unregistered();
    }
  }
  CHECK(unregistered.at("3101040101000001") == false);
  CHECK(unregistered.at("3101040101009999") == true);
  CHECK(ingester->Stats().unregistered_readings == 1);

  // A restarted ingester remembers registrations and recent reading ids from the log.
  ingester.reset();
  auto again = MakeIngester(log.get(), Options(*kafka, &clock));
  producer.Produce("cityops.readings", Binary(ManholeReading(reg.device_id(), 1, kNow)));
  producer.Produce("cityops.readings", Binary(ManholeReading(reg.device_id(), 2, kNow)));
  producer.Flush();
  PollUntil(*again, [&] { return again->Stats().records == 2; });
  CHECK(again->Stats().duplicates == 1);
  CHECK(again->Stats().unregistered_readings == 0);
}

TEST_CASE(
    "caught-up quiet partitions get clock ticks a delay behind the clock, never behind "
    "their own latest event time",
    "[ingest][kafka]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  IngestOptions options = Options(*kafka, &clock);
  options.clock_tick_interval = absl::Seconds(1);
  options.clock_tick_delay = absl::Seconds(5);
  auto ingester = MakeIngester(log.get(), options);
  // Wait for the assignment (first poll joins the group); the topics are empty, so every
  // partition is caught up as soon as it has been fetched once.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (ingester->Stats().clock_ticks < static_cast<uint64_t>(kPartitions) &&
         absl::Now() < deadline) {
    REQUIRE(ingester->PollOnce().ok());
    clock.Advance(absl::Milliseconds(600));
  }
  REQUIRE(ingester->Stats().clock_ticks >= static_cast<uint64_t>(kPartitions));

  // A reading from the future of partition 0's clock: partition 0's time is now past the
  // next tick's, so that tick would move nothing and is not appended.
  TestProducer producer(kafka->bootstrap_servers(), &clock);
  TestRecord ahead = Binary(ManholeReading("3101040100000001", 1, kNow + absl::Hours(2)));
  ahead.partition = 0;
  ahead.timestamp = kNow + absl::Hours(2);
  producer.Produce("cityops.readings", ahead);
  producer.Flush();
  PollUntil(*ingester, [&] { return ingester->Stats().readings == 1; });

  clock.Set(kNow + absl::Hours(1));
  const uint64_t before = ingester->Stats().clock_ticks;
  // Each partition ticks once it has been fetched again (and found empty) at this time.
  const absl::Time wait_until = absl::Now() + absl::Seconds(30);
  while (ingester->Stats().clock_ticks < before + kPartitions - 1 && absl::Now() < wait_until) {
    REQUIRE(ingester->PollOnce().ok());
  }
  CHECK(ingester->Stats().clock_ticks == before + kPartitions - 1);
  for (int p = 0; p < kPartitions; ++p) {
    std::vector<v1::Event> events = *log->Read(Partition(p), Sequence(0), 100);
    REQUIRE_FALSE(events.empty());
    const v1::Event& last = events.back();
    if (p == 0) {
      CHECK(last.has_reading());
      continue;
    }
    CHECK(last.has_clock_tick());
    CHECK(last.stream_id() == "clock");
    CHECK(last.event_time().seconds() ==
          absl::ToUnixSeconds(kNow + absl::Hours(1) - absl::Seconds(5)));
    CHECK(last.provenance().stage() == "ingest.clock");
  }
}

TEST_CASE("a stored position past the end of a recreated topic stops ingest unless accepted",
          "[ingest][kafka]") {
  testing::TempDir dir;
  kernel::ManualClock clock(kNow);
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  kernel::AppendBatch batch{Partition(0)};
  batch.SetSourcePosition("cityops.readings", 0, kernel::KafkaOffset(500));
  REQUIRE(log->Append(std::move(batch)).ok());
  {
    TestProducer producer(kafka->bootstrap_servers(), &clock);
    TestRecord r = Binary(ManholeReading("dev-x", 1, kNow));
    r.partition = 0;
    producer.Produce("cityops.readings", r);
    producer.Flush();
  }
  {
    auto ingester = MakeIngester(log.get(), Options(*kafka, &clock));
    absl::Status status;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (status.ok() && absl::Now() < deadline) status = ingester->PollOnce().status();
    CHECK(absl::IsFailedPrecondition(status));
    CHECK_THAT(std::string(status.message()),
               Catch::Contains("cityops.readings/0") && Catch::Contains("recreated"));
  }
  IngestOptions accepting = Options(*kafka, &clock);
  accepting.accept_recreated_topics = true;
  auto ingester = MakeIngester(log.get(), accepting);
  PollUntil(*ingester, [&] { return ingester->Stats().readings == 1; });
  CHECK(**log->StoredSourcePosition("cityops.readings", 0) == kernel::KafkaOffset(1));
}

// Runs an integrator's example from proto/examples and requires it to succeed.
void RunExample(const std::vector<std::string>& argv) {
  testing::ChildProcess child(argv);
  child.CloseStdin();
  child.ReadToEnd();
  const int status = child.Wait();
  INFO(argv[1] << ": " << child.output());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

TEST_CASE("kcat publishes JSON readings into the embedded cluster and they land in the log",
          "[ingest][kafka][integrator]") {
  testing::TempDir dir;
  kernel::ManualClock clock(absl::Now());
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  const std::string input = dir.Sub("readings.txt");
  {
    std::FILE* f = std::fopen(input.c_str(), "w");
    REQUIRE(f != nullptr);
    for (int i = 0; i < 5; ++i) {
      v1::SensorReading r;
      r.set_device_id(absl::StrFormat("gauge-%d", i));
      r.set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
      r.set_reading_id("1");
      SetTime(r.mutable_event_time(), clock.Now());
      r.mutable_flood_gauge()->set_water_depth_cm(12.5 + i);
      std::string json;
      REQUIRE(google::protobuf::util::MessageToJsonString(r, &json).ok());
      std::fprintf(f, "%s|%s\n", r.device_id().c_str(), json.c_str());
    }
    std::fclose(f);
  }
  RunExample({"/bin/bash", CITYOPS_SOURCE_DIR "/proto/examples/publish_readings_kcat.sh",
              kafka->bootstrap_servers(), input});
  auto ingester = MakeIngester(log.get(), Options(*kafka, &clock));
  PollUntil(*ingester, [&] { return ingester->Stats().readings == 5; });
  CHECK(ingester->Stats().dead_lettered == 0);
  CHECK(testing::ReadingCounts(*log).size() == 5);
}

TEST_CASE("python3-confluent-kafka publishes JSON and protobuf readings that land in the log",
          "[ingest][kafka][integrator]") {
  testing::TempDir dir;
  kernel::ManualClock clock(absl::Now());
  auto kafka = StartKafka();
  auto log = OpenLog(dir.Sub("log"), &clock);
  const std::string script = CITYOPS_SOURCE_DIR "/proto/examples/publish_readings.py";
  RunExample({"/usr/bin/python3", script, "--bootstrap", kafka->bootstrap_servers(), "--count", "4",
              "--devices", "3"});
  RunExample({"/usr/bin/python3", script, "--bootstrap", kafka->bootstrap_servers(), "--count", "6",
              "--devices", "3", "--encoding", "protobuf"});
  auto ingester = MakeIngester(log.get(), Options(*kafka, &clock));
  // Readings 0-3 of each device are sent twice (once per encoding): stored once.
  PollUntil(*ingester, [&] { return ingester->Stats().records == 30; });
  CHECK(ingester->Stats().dead_lettered == 0);
  CHECK(ingester->Stats().readings == 18);
  CHECK(ingester->Stats().duplicates == 12);
  const auto in_log = testing::ReadingCounts(*log);
  CHECK(in_log.size() == 18);
  CHECK(in_log.contains({"gauge-0002", "gauge-0002:5"}));
}

}  // namespace
}  // namespace cityops
