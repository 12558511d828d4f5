// Issue 11, "Same input, same cases and tickets": what cityops derives (alerts, cases,
// tickets, overdue lights, closings: the events of provenance stage "rules") is a
// function of the input records alone; not of when ingest ran, how it batched, how often
// it restarted, or which topic it read first.
//
// Each test feeds the same seeded typhoon (a small simulated city) through real parts in
// different ways and compares the derived events by the identity of what they cite
// (tests/testing/derived_events.h: Kafka source, idempotency key, tick time), up to the
// last input record's event time where ingest's clock ticks could differ:
//   * in process: the embedded Kafka cluster hosted by the test, ingest on a ManualClock,
//     the rules stage on a temporary log; batch sizes, topic order, live vs backlog;
//   * as processes: `cityops serve` daemons on one cluster, one killed with SIGKILL over
//     and over while the records arrive, two started afterwards and left alone.
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cityops/v1/api.pb.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/embedded_kafka.h"
#include "ingest/ingester.h"
#include "ingest/partitioner.h"
#include "ingest/record_producer.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "projections/rules/rules_stage.h"
#include "sim/city.h"
#include "sim/publisher.h"
#include "sim/simulator.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/small_city.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace cityops {
namespace {

using ingest::EmbeddedKafka;
using ingest::Ingester;
using ingest::IngestOptions;
using kernel::EventLog;
using kernel::Partition;
using testing::DerivedFilter;
using testing::SmallCity;
using testing::WaitUntil;

constexpr int kPartitions = 4;
const std::string kReadings = "cityops.readings";
const std::string kReports = "cityops.reports";
const std::string kDevices = "cityops.devices";

// ---------------------------------------------------------------------------------------
// The input.

// A seeded typhoon over a small city, held in memory so that every run publishes the
// very same records.
struct Typhoon {
  std::vector<v1::DeviceRegistered> registrations;
  std::vector<v1::SensorReading> readings;  // In event-time order.
  absl::Time start;                         // Simulated.
  absl::Time end;                           // start + duration.
  absl::Time last_event;                    // Of the last reading: the comparison's cutoff.
};

absl::Time EventTime(const v1::SensorReading& r) { return kernel::FromTimestamp(r.event_time()); }

Typhoon MakeTyphoon(uint64_t seed, size_t devices, absl::Duration duration) {
  const sim::City city = sim::GenerateCity(SmallCity(seed, devices));
  sim::SimulatorOptions options;
  options.scenario = sim::Scenario::kTyphoon;
  options.seed = seed;
  sim::Simulator simulator(city, options);
  Typhoon t;
  t.start = simulator.start();
  t.end = t.start + duration;
  for (size_t i = 0; i < city.devices.size(); ++i) t.registrations.push_back(city.Registration(i));
  simulator.Step(duration, &t.readings);
  REQUIRE(!t.readings.empty());
  t.last_event = absl::InfinitePast();
  for (const v1::SensorReading& r : t.readings) t.last_event = std::max(t.last_event, EventTime(r));
  return t;
}

// The end offset of every input topic partition: what a consumer that stored
// everything has as its next offsets.
using Ends = std::map<std::pair<std::string, int32_t>, int64_t>;

// Publishes with explicit Kafka timestamps (the records' CreateTime): a registration's at
// the start of the simulation, a reading's at its event time, as a publisher that
// publishes each reading when it is taken would. Partitions by key as cityops' producer
// does (murmur2), so that a device's registration and readings share a partition.
class TimestampedProducer {
 public:
  explicit TimestampedProducer(const std::string& bootstrap) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    Set(conf, "bootstrap.servers", bootstrap);
    Set(conf, "enable.idempotence", "true");  // In order, once: offsets are predictable.
    Set(conf, "linger.ms", "5");
    Set(conf, "compression.codec", "lz4");
    Set(conf, "log_level", "3");
    rd_kafka_conf_set_dr_msg_cb(conf, &TimestampedProducer::OnDelivery);
    rd_kafka_conf_set_opaque(conf, this);
    char err[512];
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk_ == nullptr) FAIL(err);
    for (const std::string& topic : {kReadings, kReports, kDevices}) {
      for (int32_t p = 0; p < kPartitions; ++p) ends_[{topic, p}] = 0;
    }
  }
  ~TimestampedProducer() {
    rd_kafka_flush(rk_, 10'000);
    rd_kafka_destroy(rk_);
  }
  TimestampedProducer(const TimestampedProducer&) = delete;
  TimestampedProducer& operator=(const TimestampedProducer&) = delete;

  void Produce(const std::string& topic, const std::string& key, const std::string& value,
               absl::Time timestamp) {
    const int32_t partition = ingest::KafkaPartitionFor(key, kPartitions);
    for (;;) {
      const rd_kafka_resp_err_t err =
          rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
                            RD_KAFKA_V_KEY(key.data(), key.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_TIMESTAMP(absl::ToUnixMillis(timestamp)), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) FAIL(rd_kafka_err2str(err));
      rd_kafka_poll(rk_, 50);
    }
    ++ends_[{topic, partition}];
  }

  void Flush() {
    REQUIRE(rd_kafka_flush(rk_, 30'000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(failed_.load() == 0);
  }

  // Every topic partition's end offset after what was produced so far.
  const Ends& ends() const { return ends_; }
  uint64_t records() const {
    uint64_t n = 0;
    for (const auto& [tp, end] : ends_) n += static_cast<uint64_t>(end);
    return n;
  }

  void Registrations(const Typhoon& t) {
    for (const v1::DeviceRegistered& r : t.registrations) {
      Produce(kDevices, r.device_id(), r.SerializeAsString(), t.start - absl::Minutes(1));
    }
  }
  // Readings from index `next` on with event time before `until`; returns the index of
  // the first reading not published.
  size_t Readings(const Typhoon& t, size_t next, absl::Time until) {
    for (; next < t.readings.size() && EventTime(t.readings[next]) < until; ++next) {
      const v1::SensorReading& r = t.readings[next];
      Produce(kReadings, r.device_id(), r.SerializeAsString(), EventTime(r));
    }
    return next;
  }

 private:
  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) ++static_cast<TimestampedProducer*>(opaque)->failed_;
  }
  static void Set(rd_kafka_conf_t* conf, const char* name, const std::string& value) {
    char err[512];
    if (rd_kafka_conf_set(conf, name, value.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
      FAIL(err);
    }
  }

  rd_kafka_t* rk_ = nullptr;
  Ends ends_;
  std::atomic<uint64_t> failed_{0};
};

std::unique_ptr<EmbeddedKafka> StartKafka() {
  absl::StatusOr<std::unique_ptr<EmbeddedKafka>> kafka =
      EmbeddedKafka::Start({.brokers = 1,
                            .topics = {{kReadings, kPartitions},
                                       {kReports, kPartitions},
                                       {kDevices, kPartitions},
                                       {"cityops.deadletter", 1},
                                       {"cityops.tickets", kPartitions}}});
  REQUIRE(kafka.ok());
  return *std::move(kafka);
}

// ---------------------------------------------------------------------------------------
// In-process runs: ingest and the rules stage over a temporary log.

// A fresh log with the default rules active (at the epoch, in every log alike).
std::unique_ptr<EventLog> NewLog(const std::string& path) {
  absl::StatusOr<std::unique_ptr<EventLog>> log =
      EventLog::Open({.path = path, .durability = kernel::Durability::kBuffered});
  REQUIRE(log.ok());
  absl::StatusOr<rules::LoadedRuleSet> loaded =
      rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
  REQUIRE(loaded.ok());
  kernel::AppendBatch batch{Partition(0)};
  batch.Add(rules::RulesetActivatedEvent(*loaded, absl::UnixEpoch()));
  REQUIRE((*log)->Append(std::move(batch)).ok());
  return *std::move(log);
}

// Ingest as the daemon runs it, on `clock`: ticks on quiet partitions every second,
// stamped 2 s behind the clock (the defaults, spelled out).
std::unique_ptr<Ingester> NewIngester(EventLog& log, const EmbeddedKafka& kafka,
                                      const std::string& group, const kernel::Clock* clock,
                                      size_t max_batch_records = 10'000) {
  IngestOptions options;
  options.bootstrap_servers = kafka.bootstrap_servers();
  options.group_id = group;
  options.clock = clock;
  options.max_batch_records = max_batch_records;
  options.clock_tick_interval = absl::Seconds(1);
  options.clock_tick_delay = absl::Seconds(2);
  options.poll_timeout = absl::Milliseconds(10);
  options.kafka_properties = {{"log_level", "3"}};
  options.consumer_properties = {{"session.timeout.ms", "6000"}, {"heartbeat.interval.ms", "1000"}};
  absl::StatusOr<std::unique_ptr<Ingester>> ingester = Ingester::Create(&log, options);
  REQUIRE(ingester.ok());
  return *std::move(ingester);
}

// True once ingest owns every input topic partition and has stored everything up to
// `ends` (Ingester::Lag() all zero, at those offsets: a lag of zero alone may be read
// before the first fetch has brought the watermarks).
bool ConsumedAll(const Ingester& ingester, const Ends& ends) {
  absl::StatusOr<std::vector<ingest::ConsumerLag>> lag = ingester.Lag();
  REQUIRE(lag.ok());
  if (lag->size() != ends.size()) return false;
  for (const ingest::ConsumerLag& l : *lag) {
    auto it = ends.find({l.topic, l.partition});
    if (it == ends.end() || l.next_offset != it->second || l.lag != 0) return false;
  }
  return true;
}

// Polls until ingest has stored everything `producer` published so far, moving `clock`
// on by `advance` before each poll (time passes while a backlog is consumed).
void IngestAll(Ingester& ingester, kernel::ManualClock& clock, const TimestampedProducer& producer,
               absl::Duration advance = absl::ZeroDuration()) {
  const uint64_t records = producer.records();
  const bool consumed = WaitUntil(
      [&] {
        clock.Advance(advance);
        absl::StatusOr<size_t> n = ingester.PollOnce();
        if (!n.ok()) FAIL(n.status().ToString());
        return ingester.Stats().records >= records && ConsumedAll(ingester, producer.ends());
      },
      absl::Seconds(90), absl::ZeroDuration());
  const ingest::IngestStats stats = ingester.Stats();
  INFO(stats.records << " records consumed of " << records << " published");
  REQUIRE(consumed);
  CHECK(stats.dead_lettered == 0);
  CHECK(stats.duplicates == 0);
}

// Runs the rules stage over the whole log (the log is final: drain).
void DeriveAll(EventLog& log) {
  absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
      rules::RulesStage::Open({.log = &log, .partitions = kPartitions});
  REQUIRE(stage.ok());
  REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
}

size_t CountDerived(const EventLog& log, const DerivedFilter& filter) {
  size_t n = 0;
  for (const auto& events : testing::DerivedByIdentity(log, filter)) n += events.size();
  return n;
}

// Clock ticks that have a reading after them in their partition: ticks that landed
// between records, not only after the last one.
size_t TicksBetweenReadings(const EventLog& log) {
  size_t n = 0;
  for (const auto& events : testing::AllEvents(log)) {
    size_t ticks = 0;
    for (const v1::Event& e : events) {
      if (e.has_clock_tick()) ++ticks;
      if (e.has_reading()) {
        n += ticks;
        ticks = 0;
      }
    }
  }
  return n;
}

size_t CountTicks(const EventLog& log) {
  size_t n = 0;
  for (const auto& events : testing::AllEvents(log)) {
    for (const v1::Event& e : events) n += e.has_clock_tick();
  }
  return n;
}

// Checks that `other` derived what `reference` derived, up to `cutoff`, and that none
// of it depends on where a tick landed; prints the first difference.
void CheckSameDerived(const EventLog& reference, const std::string& reference_name,
                      const EventLog& other, const std::string& other_name, absl::Time cutoff) {
  const DerivedFilter filter{.until = cutoff};
  const std::string difference =
      testing::FirstDerivedDifference(reference, other, filter, reference_name, other_name);
  if (!difference.empty()) std::fprintf(stderr, "%s\n", difference.c_str());
  INFO(difference);
  CHECK(difference.empty());
  const std::vector<std::string> citing = testing::DerivedCitingTicks(other, filter);
  INFO(other_name << ": " << citing.size() << " derived events cite a clock tick; the first: "
                  << (citing.empty() ? "" : citing.front()));
  CHECK(citing.empty());
}

TEST_CASE(
    "the same records give the same derived events in batches of 1 or 10,000, a month later, "
    "and with the devices topic published after the readings",
    "[determinism][kafka]") {
  testing::TempDir dir;
  const Typhoon typhoon = MakeTyphoon(/*seed=*/11, /*devices=*/300, absl::Hours(2));
  const absl::Time after = typhoon.end + absl::Minutes(1);

  // The reference: devices registered first, as an integrator's import would do; the
  // readings published once the registrations are stored; a clock that stands still
  // (no ticks at all).
  auto kafka = StartKafka();
  TimestampedProducer producer(kafka->bootstrap_servers());
  std::unique_ptr<EventLog> reference = NewLog(dir.Sub("reference"));
  {
    kernel::ManualClock clock(after);
    auto ingester = NewIngester(*reference, *kafka, "reference", &clock);
    producer.Registrations(typhoon);
    producer.Flush();
    IngestAll(*ingester, clock, producer);
    producer.Readings(typhoon, 0, absl::InfiniteFuture());
    producer.Flush();
    IngestAll(*ingester, clock, producer);
  }
  DeriveAll(*reference);
  const DerivedFilter up_to_last{.until = typhoon.last_event};
  const size_t derived = CountDerived(*reference, up_to_last);
  std::fprintf(stderr, "determinism: %zu registrations, %zu readings, %zu derived events\n",
               typhoon.registrations.size(), typhoon.readings.size(), derived);
  CHECK(derived > 100);

  // The same records, all in Kafka before ingest starts, consumed while ingest's clock
  // runs on (0.1 s a poll): one record per poll, and up to 10,000.
  for (const size_t batch : {size_t{1}, size_t{10'000}}) {
    const std::string name = absl::StrCat("batch-", batch);
    std::unique_ptr<EventLog> log = NewLog(dir.Sub(name));
    {
      kernel::ManualClock clock(after);
      auto ingester = NewIngester(*log, *kafka, name, &clock, batch);
      IngestAll(*ingester, clock, producer, absl::Milliseconds(100));
    }
    DeriveAll(*log);
    INFO("max_batch_records = " << batch);
    CheckSameDerived(*reference, "reference", *log, name, typhoon.last_event);
  }

  // The same records consumed 31 days after they were published: past the 30 days by
  // which a reading may be older than the time it is validated against. Validated
  // against each record's own timestamp, they are accepted all the same.
  {
    std::unique_ptr<EventLog> log = NewLog(dir.Sub("a-month-later"));
    {
      kernel::ManualClock clock(typhoon.end + absl::Hours(24 * 31));
      auto ingester = NewIngester(*log, *kafka, "a-month-later", &clock);
      IngestAll(*ingester, clock, producer, absl::Milliseconds(100));
    }
    DeriveAll(*log);
    CheckSameDerived(*reference, "reference", *log, "a-month-later", typhoon.last_event);
  }

  // The same records in a second cluster, the devices topic published after the
  // readings. The offsets are the same as in the first cluster (same records, same
  // order per topic partition), and so are the identities of the events.
  auto late_kafka = StartKafka();
  TimestampedProducer late_producer(late_kafka->bootstrap_servers());
  late_producer.Readings(typhoon, 0, absl::InfiniteFuture());
  late_producer.Flush();
  late_producer.Registrations(typhoon);
  late_producer.Flush();
  REQUIRE(late_producer.ends() == producer.ends());
  std::unique_ptr<EventLog> late = NewLog(dir.Sub("devices-last"));
  {
    kernel::ManualClock clock(after);
    auto ingester = NewIngester(*late, *late_kafka, "devices-last", &clock);
    IngestAll(*ingester, clock, late_producer, absl::Milliseconds(100));
  }
  DeriveAll(*late);
  CheckSameDerived(*reference, "reference", *late, "devices-last", typhoon.last_event);
}

TEST_CASE(
    "a backlog of two simulated hours consumed after a stop gives the same derived events as "
    "the same input consumed live",
    "[determinism][kafka]") {
  testing::TempDir dir;
  const Typhoon typhoon = MakeTyphoon(/*seed=*/12, /*devices=*/300, absl::Hours(2));
  auto kafka = StartKafka();
  TimestampedProducer producer(kafka->bootstrap_servers());

  // Live: simulated time goes by in slices of one minute. Each slice's readings reach
  // Kafka and the log before the clock passes their time (they are published as they are
  // taken); then the clock moves to the slice's end plus 1.5 s, more than the tick
  // interval, less than the tick delay: quiet partitions get a tick stamped half a second
  // before the slice's end (the clock minus the 2 s delay), unless a reading of that last
  // half second is later. The rules stage follows live, as in the daemon.
  std::unique_ptr<EventLog> live = NewLog(dir.Sub("live"));
  {
    kernel::ManualClock clock(typhoon.start);
    auto ingester = NewIngester(*live, *kafka, "live", &clock);
    producer.Registrations(typhoon);
    producer.Flush();
    IngestAll(*ingester, clock, producer);
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage =
        rules::RulesStage::Open({.log = live.get(), .partitions = kPartitions});
    REQUIRE(stage.ok());
    size_t next = 0;
    for (absl::Time slice_end = typhoon.start + absl::Minutes(1); next < typhoon.readings.size();
         slice_end += absl::Minutes(1)) {
      next = producer.Readings(typhoon, next, slice_end);
      producer.Flush();
      IngestAll(*ingester, clock, producer);
      clock.Set(slice_end + absl::Milliseconds(1500));
      for (int i = 0; i < 3; ++i) REQUIRE(ingester->PollOnce().ok());
      REQUIRE((*stage)->CatchUp(/*drain=*/false).ok());
    }
    REQUIRE((*stage)->CatchUp(/*drain=*/true).ok());
  }
  // Not vacuous: ticks really landed between readings.
  const size_t ticks_between = TicksBetweenReadings(*live);
  std::fprintf(stderr, "determinism: live log: %zu ticks, %zu of them before a later reading\n",
               CountTicks(*live), ticks_between);
  CHECK(ticks_between > 0);

  // Backlog: the same records, all in Kafka, consumed by an ingest started afterwards,
  // its clock at the end of the input and running on (0.1 s a poll).
  std::unique_ptr<EventLog> backlog = NewLog(dir.Sub("backlog"));
  {
    kernel::ManualClock clock(typhoon.end + absl::Milliseconds(1500));
    auto ingester = NewIngester(*backlog, *kafka, "backlog", &clock);
    IngestAll(*ingester, clock, producer, absl::Milliseconds(100));
  }
  DeriveAll(*backlog);

  // Compared up to the last record's event time. After it only ticks move time, and
  // ticks depend on when ingest ran: a device that really went silent raises its absence
  // alert at whatever time the next tick says, live minutes after the last record, in
  // the backlog run at the tick appended when the backlog was done. That is by design.
  const DerivedFilter up_to_last{.until = typhoon.last_event};
  const size_t derived = CountDerived(*backlog, up_to_last);
  std::fprintf(stderr, "determinism: %zu readings, %zu derived events up to the last one\n",
               typhoon.readings.size(), derived);
  CHECK(derived > 100);
  CheckSameDerived(*backlog, "backlog", *live, "live", typhoon.last_event);
}

// ---------------------------------------------------------------------------------------
// Daemons as processes.

// The configuration of a daemon on the test's cluster. Ticks as in production (the
// defaults, spelled out): a quiet partition gets one every second, stamped 2 s behind the
// clock.
std::string DaemonConfig(const std::string& data, const std::string& bootstrap,
                         const std::string& group) {
  return absl::StrCat("data_dir: ", data,
                      "\n"
                      "durability: buffered\n"
                      "kafka:\n"
                      "  bootstrap_servers: \"",
                      bootstrap,
                      "\"\n"
                      "  group_id: ",
                      group,
                      "\n"
                      "  properties:\n"
                      "    - {name: session.timeout.ms, value: \"6000\"}\n"
                      "    - {name: heartbeat.interval.ms, value: \"1000\"}\n"
                      "    - {name: log_level, value: \"3\"}\n"
                      "http: {port: 0}\n"
                      "ingest: {clock_tick_interval: 1s, clock_tick_delay: 2s}\n");
}

struct StageState {
  std::string state;
  uint64_t lag = 0;
};

// The stages of the daemon on `port` as /readyz reports them (empty if it does not answer).
std::map<std::string, StageState> Stages(int port) {
  const testing::HttpReply r = testing::Get(port, "/readyz");
  std::map<std::string, StageState> out;
  v1::HealthResponse h;
  if (r.status == 0 || !google::protobuf::util::JsonStringToMessage(r.body, &h).ok()) return out;
  for (const v1::StageHealth& s : h.stages()) out[s.name()] = {s.state(), s.lag()};
  return out;
}

// Waits until the daemon has stored every record in Kafka and its rules stage has only
// the latest ticks left (it merges partitions in time order: the newest tick of each
// partition waits for the next), both for 3 s on end.
bool WaitCaughtUp(int port, absl::Duration timeout) {
  absl::Time idle_since = absl::InfiniteFuture();
  return WaitUntil(
      [&] {
        const std::map<std::string, StageState> s = Stages(port);
        const bool idle = s.contains("ingest") && s.contains("rules") &&
                          s.at("ingest").state == "running" && s.at("ingest").lag == 0 &&
                          s.at("rules").state == "running" && s.at("rules").lag <= 2 * kPartitions;
        if (!idle) {
          idle_since = absl::InfiniteFuture();
          return false;
        }
        idle_since = std::min(idle_since, absl::Now());
        return absl::Now() - idle_since >= absl::Seconds(3);
      },
      timeout, absl::Milliseconds(100));
}

std::unique_ptr<EventLog> OpenStopped(const std::string& data) {
  absl::StatusOr<std::unique_ptr<EventLog>> log =
      EventLog::Open({.path = data, .create_if_missing = false});
  REQUIRE(log.ok());
  return *std::move(log);
}

// Checks that the log of a stopped daemon holds every published record and that its rules
// stage processed every input but the ticks at the end; returns the latest reading's time.
absl::Time CheckComplete(const EventLog& log, const std::string& name,
                         const sim::PublishStats& published) {
  INFO("daemon " << name);
  int64_t readings = 0;
  int64_t devices = 0;
  for (int32_t p = 0; p < kPartitions; ++p) {
    absl::StatusOr<std::optional<kernel::KafkaOffset>> r = log.StoredSourcePosition(kReadings, p);
    absl::StatusOr<std::optional<kernel::KafkaOffset>> d = log.StoredSourcePosition(kDevices, p);
    REQUIRE(r.ok());
    REQUIRE(d.ok());
    readings += r->has_value() ? (*r)->value() : 0;
    devices += d->has_value() ? (*d)->value() : 0;
  }
  CHECK(readings == static_cast<int64_t>(published.readings));
  CHECK(devices == static_cast<int64_t>(published.devices));
  absl::Time last = absl::InfinitePast();
  for (const auto& events : testing::AllEvents(log)) {
    if (events.empty()) continue;
    const Partition p(events.front().partition());
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        log.StoredCheckpoint(p, rules::kRulesCheckpoint);
    REQUIRE(cp.ok());
    const uint64_t next = cp->has_value() ? (*cp)->next.value() : 0;
    for (const v1::Event& e : events) {
      if (e.has_reading()) last = std::max(last, kernel::FromTimestamp(e.event_time()));
      if (testing::IsDerived(e) || e.has_clock_tick() || e.sequence() < next) continue;
      INFO("partition " << p.value() << ": the rules stage stopped at " << next
                        << ", before input event " << e.sequence() << ": " << e.ShortDebugString());
      FAIL_CHECK("the daemon's rules stage had not caught up when it was stopped");
      break;
    }
  }
  return last;
}

TEST_CASE(
    "two undisturbed daemons and one killed with SIGKILL 30 times while the records arrive "
    "derive the same events",
    "[determinism][daemon][slow]") {
  testing::TempDir dir;
  auto kafka = StartKafka();
  const std::string bootstrap = kafka->bootstrap_servers();

  // The input: a seeded typhoon over 600 devices. Part 1, its first 90 simulated minutes
  // (the rain is past the drains from about minute 40), is published at once as a
  // backlog whose event times end when part 2 begins; part 2, 70 s of it, is published
  // at real-time pace (acceleration 1), each reading when the wall clock reaches its
  // event time. About 19,000 readings of about 100 bytes: some 0.5 MB per partition
  // before compression, far below the 5 MiB per partition that the embedded (mock)
  // cluster keeps before it silently drops the oldest records.
  constexpr absl::Duration kBacklog = absl::Minutes(90);
  constexpr absl::Duration kLive = absl::Seconds(70);
  const sim::City city = sim::GenerateCity(SmallCity(/*seed=*/23, /*devices=*/600));
  // Part 2 starts at `live_from`, a little ahead: part 1 is published by then.
  const absl::Time live_from =
      absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())) + absl::Seconds(10);
  std::atomic<bool> published{false};
  std::atomic<bool> stop_publishing{false};  // Set if the test fails before the end.
  absl::Status publish_status;
  sim::PublishStats stats;
  std::thread publisher([&] {
    auto done = [&](absl::Status s) {
      publish_status = std::move(s);
      published = true;
    };
    absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
        ingest::RecordProducer::Create(bootstrap);
    if (!producer.ok()) return done(producer.status());
    sim::SimulatorOptions options;
    options.scenario = sim::Scenario::kTyphoon;
    options.seed = 23;
    options.start = live_from - kBacklog;
    sim::Simulator simulator(city, options);
    sim::PublishOptions backlog;
    backlog.duration = kBacklog;
    absl::StatusOr<sim::PublishStats> first =
        sim::PublishToKafka(simulator, **producer, backlog, &stop_publishing);
    if (!first.ok()) return done(first.status());
    if (absl::Now() > live_from) {
      return done(absl::DeadlineExceededError(
          absl::StrCat("part 1 took until ", absl::FormatDuration(absl::Now() - live_from),
                       " past the start of part 2: its readings would reach Kafka late")));
    }
    WaitUntil([&] { return absl::Now() >= live_from; }, absl::Minutes(1), absl::Milliseconds(1));
    sim::PublishOptions live;
    live.duration = kLive;
    live.register_devices = false;
    live.acceleration = 1;
    absl::StatusOr<sim::PublishStats> second =
        sim::PublishToKafka(simulator, **producer, live, &stop_publishing);
    if (!second.ok()) return done(second.status());
    stats.devices = first->devices;
    stats.readings = first->readings + second->readings;
    done(absl::OkStatus());
  });
  struct JoinAtExit {
    std::thread& thread;
    std::atomic<bool>& stop;
    ~JoinAtExit() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } join_publisher{publisher, stop_publishing};

  // Daemon A runs while everything is published and is killed with SIGKILL at random
  // moments (seeded): a third of the time while it starts (opening the log, replaying
  // the rules, joining the group), otherwise up to 2.5 s after it is ready. Each life
  // joins a consumer group of its own: its position is in its log (Kafka's committed
  // offsets are for lag monitoring only), and the mock cluster would otherwise hold the
  // partitions for the killed member until its session times out and a rebalance ends,
  // some 7 s a restart, so that 30 lives would take minutes.
  const std::string a_data = dir.Sub("a");
  auto a_config = [&](int life) {
    return DaemonConfig(a_data, bootstrap, absl::StrCat("determinism-a-", life));
  };
  std::mt19937 rng(20261202);
  int kills = 0;
  int ready_lives = 0;
  while (kills < 30 || !published.load()) {
    testing::DaemonProcess a(a_data, a_config(kills));
    // The moment of the kill is the point of this loop, hence a sleep of a random length.
    if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) {
      absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(50, 1500)(rng)));
    } else {
      if (!a.WaitReady(absl::Seconds(60))) FAIL("daemon A did not get ready:\n" << a.log());
      ++ready_lives;
      absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(0, 2500)(rng)));
    }
    const int status = a.Stop(SIGKILL);
    if (!WIFSIGNALED(status)) {
      FAIL(absl::StrCat("daemon A ", testing::ChildProcess::DescribeWaitStatus(status),
                        " before it was killed:\n", a.log()));
    }
    ++kills;
    REQUIRE(kills < 200);
  }
  publisher.join();
  REQUIRE(publish_status.ok());
  std::fprintf(stderr,
               "determinism: %llu registrations and %llu readings published; daemon A killed %d "
               "times (%d of them after it was ready)\n",
               static_cast<unsigned long long>(stats.devices),
               static_cast<unsigned long long>(stats.readings), kills, ready_lives);

  // B and C start once everything is in Kafka and are left alone; A starts one last time.
  const std::string b_data = dir.Sub("b");
  const std::string c_data = dir.Sub("c");
  testing::DaemonProcess a(a_data, a_config(kills));
  testing::DaemonProcess b(b_data, DaemonConfig(b_data, bootstrap, "determinism-b"));
  testing::DaemonProcess c(c_data, DaemonConfig(c_data, bootstrap, "determinism-c"));
  const std::vector<std::pair<std::string, testing::DaemonProcess*>> daemons = {
      {"A", &a}, {"B", &b}, {"C", &c}};
  for (const auto& [name, d] : daemons) {
    if (!d->WaitReady(absl::Seconds(60)))
      FAIL("daemon " << name << " did not get ready:\n" << d->log());
  }
  for (const auto& [name, d] : daemons) {
    if (!WaitCaughtUp(d->port(), absl::Seconds(150))) {
      FAIL("daemon " << name << " did not catch up:\n" << d->log());
    }
  }
  for (const auto& [name, d] : daemons) {
    const int status = d->Stop(SIGTERM);
    INFO("daemon " << name << " " << testing::ChildProcess::DescribeWaitStatus(status));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }

  std::unique_ptr<EventLog> a_log = OpenStopped(a_data);
  std::unique_ptr<EventLog> b_log = OpenStopped(b_data);
  std::unique_ptr<EventLog> c_log = OpenStopped(c_data);
  const absl::Time cutoff = CheckComplete(*b_log, "B", stats);
  CHECK(CheckComplete(*c_log, "C", stats) == cutoff);
  CHECK(CheckComplete(*a_log, "A", stats) == cutoff);

  // A and B hold the same readings, none doubled.
  const auto a_readings = testing::ReadingCounts(*a_log);
  const auto b_readings = testing::ReadingCounts(*b_log);
  CHECK(a_readings.size() == stats.readings);
  CHECK(b_readings.size() == stats.readings);
  const bool same_readings = a_readings == b_readings;
  CHECK(same_readings);
  int doubled = 0;
  for (const auto& [id, n] : a_readings) doubled += n != 1;
  CHECK(doubled == 0);

  const size_t derived = CountDerived(*b_log, {.until = cutoff});
  std::fprintf(stderr,
               "determinism: %zu derived events up to the last reading; ticks in A, B, C: %zu, "
               "%zu, %zu\n",
               derived, CountTicks(*a_log), CountTicks(*b_log), CountTicks(*c_log));
  CHECK(derived > 100);
  // Two undisturbed daemons agree, and the one killed 30 times agrees with them.
  CheckSameDerived(*b_log, "B", *c_log, "C", cutoff);
  CheckSameDerived(*b_log, "B", *a_log, "A", cutoff);
}

}  // namespace
}  // namespace cityops
