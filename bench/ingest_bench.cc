// Ingest against its raw limits on the same machine, in the same run.
//
// Pre-fills `cityops.readings` on the embedded cluster with N simulated readings, then
// consumes the whole topic three times:
//   1. a bare librdkafka consumer that does nothing with the records (the Kafka limit);
//   2. a bare pipeline: consume, parse each SensorReading, append to bare RocksDB in
//      batches of --batch records (10,000, the daemon's default) with one WAL fsync each
//      (the same key layout, options and durability as the log), no cityops code;
//   3. cityops' Ingester: consume, decode, validate, drop duplicates, wrap, append with
//      the offsets, into an EventLog.
// Each run is timed from its first record to its last, so the consumer-group join of the
// ingester (about 3 s on the embedded cluster) is not counted.
//
// With --decoder, it measures the decoder alone instead (no Kafka, no log), in memory:
// ingest::DecodeReading on the simulator's typed readings, on the same readings sent by
// name (`values`), and on readings by name of the catalogue-only kinds (every metric of the
// kind set), in alternating rounds, the best round of each; it prints the three rates and
// the ratios to the typed path (issue 14 asks for at least 0.9).
//
// The embedded cluster keeps only about 5 MiB per partition; the bench spreads the
// readings over enough partitions (zstd-compressed batches) and checks that nothing was
// dropped before it measures.
#include <librdkafka/rdkafka.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "bench/bare_rocksdb.h"
#include "catalogue/kinds.h"
#include "google/protobuf/reflection.h"
#include "ingest/embedded_kafka.h"
#include "ingest/ingester.h"
#include "ingest/record_decoder.h"
#include "ingest/record_producer.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "rocksdb/db.h"
#include "sim/reading_generator.h"

namespace cityops::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr char kTopic[] = "cityops.readings";

double Since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// A plain consumer assigned to every partition from the beginning (no group).
class BareConsumer {
 public:
  BareConsumer(const std::string& bootstrap, int partitions) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    for (const auto& [k, v] :
         std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", bootstrap},
                                                          {"group.id", "bench-bare"},
                                                          {"enable.auto.commit", "false"},
                                                          {"fetch.wait.max.ms", "10"},
                                                          {"queued.min.messages", "100000"}}) {
      rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof(err));
    }
    rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk_ == nullptr) throw std::runtime_error(err);
    rd_kafka_poll_set_consumer(rk_);
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p) {
      rd_kafka_topic_partition_list_add(list, kTopic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(rk_, list);
    rd_kafka_topic_partition_list_destroy(list);
    queue_ = rd_kafka_queue_get_consumer(rk_);
  }
  ~BareConsumer() {
    rd_kafka_queue_destroy(queue_);
    rd_kafka_consumer_close(rk_);
    rd_kafka_destroy(rk_);
  }
  // Records between the low and high watermarks, if every low watermark is 0 (none
  // dropped); 0 otherwise.
  uint64_t Available(int partitions) {
    uint64_t total = 0;
    for (int p = 0; p < partitions; ++p) {
      int64_t low = 0;
      int64_t high = 0;
      if (rd_kafka_query_watermark_offsets(rk_, kTopic, p, &low, &high, 10000) !=
              RD_KAFKA_RESP_ERR_NO_ERROR ||
          low != 0) {
        return 0;
      }
      total += static_cast<uint64_t>(high);
    }
    return total;
  }

  // Calls `f` on each batch until `total` records were seen; returns seconds from the
  // first record to the last.
  template <typename F>
  double ConsumeAll(uint64_t total, F f) {
    std::vector<rd_kafka_message_t*> msgs(10000);
    uint64_t seen = 0;
    SteadyClock::time_point first{};
    while (seen < total) {
      const ssize_t n = rd_kafka_consume_batch_queue(queue_, 200, msgs.data(), msgs.size());
      if (n <= 0) continue;
      if (seen == 0) first = SteadyClock::now();
      size_t good = 0;
      for (ssize_t i = 0; i < n; ++i) good += msgs[i]->err == RD_KAFKA_RESP_ERR_NO_ERROR;
      f(msgs.data(), static_cast<size_t>(n));
      for (ssize_t i = 0; i < n; ++i) rd_kafka_message_destroy(msgs[i]);
      seen += good;
    }
    return Since(first);
  }

 private:
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_queue_t* queue_ = nullptr;
};

// A typed reading's metrics by name: every field it sets, as the catalogue names it.
v1::SensorReading AsValues(const v1::SensorReading& typed, const catalogue::Kind& kind) {
  namespace pb = google::protobuf;
  v1::SensorReading out = typed;
  out.clear_metrics();
  out.set_kind_id(kind.id);
  const pb::Message& m = typed.GetReflection()->GetMessage(typed, kind.member);
  const pb::Reflection* r = m.GetReflection();
  for (const catalogue::KindMetric& metric : kind.metrics) {
    const pb::FieldDescriptor* f = metric.field;
    if (f->is_repeated() ? r->FieldSize(m, f) == 0 : !r->HasField(m, f)) continue;
    v1::MetricValue* v = out.mutable_values()->add_values();
    v->set_name(metric.name);
    if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(m, f); ++i) v->add_codes(r->GetRepeatedInt32(m, f, i));
      continue;
    }
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        v->set_flag(r->GetBool(m, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        v->set_code(r->GetEnumValue(m, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_INT32:
        v->set_number(r->GetInt32(m, f));
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        v->set_number(r->GetUInt32(m, f));
        break;
      default:
        v->set_number(r->GetDouble(m, f));
    }
  }
  return out;
}

// A reading by name of a catalogue-only `kind`: every metric, numbers uniform within
// their bounds, flags mostly false, the first listed code.
v1::SensorReading CatalogueReading(const catalogue::Kind& kind, int device, uint64_t n,
                                   absl::Time at, std::mt19937_64& rng) {
  v1::SensorReading r;
  r.set_device_id(absl::StrFormat("%s-%06d", kind.id, device));
  r.set_kind_id(kind.id);
  r.set_reading_id(absl::StrFormat("%s:%d", r.device_id(), n));
  const int64_t ns = absl::ToUnixNanos(at);
  r.mutable_event_time()->set_seconds(ns / 1'000'000'000);
  r.mutable_event_time()->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
  std::uniform_real_distribution<double> unit(0, 1);
  for (const catalogue::KindMetric& m : kind.metrics) {
    v1::MetricValue* v = r.mutable_values()->add_values();
    v->set_name(m.name);
    const int64_t code = m.spec->codes_size() > 0 ? m.spec->codes(0).value() : 0;
    const double lo = m.has_min ? m.min : 0;
    const double hi = m.has_max ? m.max : lo + 100;
    if (m.repeated) {
      if (unit(rng) < 0.1) v->add_codes(code);
    } else if (m.type == v1::METRIC_TYPE_FLAG) {
      v->set_flag(unit(rng) < 0.05);
    } else if (m.type == v1::METRIC_TYPE_CODE) {
      v->set_code(code);
    } else if (m.type == v1::METRIC_TYPE_COUNTER) {
      v->set_count(static_cast<uint64_t>(std::max(lo, 0.0) + unit(rng) * 10));
    } else {
      v->set_number(lo + unit(rng) * (hi - lo));
    }
  }
  return r;
}

struct Encoded {
  std::vector<std::string> keys;
  std::vector<std::string> values;
  size_t bytes = 0;
  void Add(const v1::SensorReading& r) {
    keys.push_back(r.device_id());
    values.push_back(r.SerializeAsString());
    bytes += values.back().size();
  }
};

// Seconds to decode every record of `in` into one reused message, as ingest does.
double DecodeAll(const Encoded& in, absl::Time now) {
  const ingest::ValidationPolicy policy;
  v1::SensorReading out;
  const auto t0 = SteadyClock::now();
  for (size_t i = 0; i < in.values.size(); ++i) {
    ingest::KafkaRecord record;
    record.topic = kTopic;
    record.offset = static_cast<int64_t>(i);
    record.key = in.keys[i];
    record.value = in.values[i];
    if (std::optional<ingest::Rejection> why = ingest::DecodeReading(record, policy, now, &out)) {
      throw std::runtime_error("decoder bench: a generated reading is refused: " + why->message);
    }
  }
  return Since(t0);
}

int RunDecoder(uint64_t readings, size_t devices, uint64_t seed, int rounds) {
  const auto kinds = catalogue::KindTable::BuiltIn();
  const absl::Time now = absl::Now();
  sim::FleetOptions fleet;
  fleet.seed = seed;
  fleet.devices = devices;
  fleet.start = now - absl::Hours(1);
  fleet.interval = absl::Seconds(3600) / static_cast<double>(readings / devices + 1);
  sim::ReadingGenerator generator(fleet);
  Encoded typed;
  Encoded typed_values;
  Encoded catalogue_values;
  std::vector<const catalogue::Kind*> only;
  for (const catalogue::Kind& k : kinds->kinds()) {
    if (k.typed == v1::DEVICE_KIND_UNSPECIFIED) only.push_back(&k);
  }
  std::mt19937_64 rng(seed);
  v1::SensorReading reading;
  for (uint64_t i = 0; i < readings; ++i) {
    generator.Next(&reading);
    typed.Add(reading);
    typed_values.Add(AsValues(reading, *kinds->FindTyped(reading.kind())));
    const catalogue::Kind& kind = *only[i % only.size()];
    catalogue_values.Add(CatalogueReading(kind, static_cast<int>(i / only.size() % devices), i,
                                          now - absl::Minutes(30), rng));
  }
  double best[3] = {1e300, 1e300, 1e300};
  const Encoded* sets[3] = {&typed, &typed_values, &catalogue_values};
  for (int round = 0; round < rounds; ++round) {
    for (int j = 0; j < 3; ++j) {
      const int which = (round + j) % 3;  // Each set goes first in turn.
      best[which] = std::min(best[which], DecodeAll(*sets[which], now));
    }
  }
  const double n = static_cast<double>(readings);
  const char* names[3] = {"typed kinds, typed messages", "typed kinds, the same readings as values",
                          "catalogue-only kinds as values"};
  std::printf("ingest_bench --decoder: %llu readings per set, best of %d rounds, %u cores\n",
              static_cast<unsigned long long>(readings), rounds,
              std::thread::hardware_concurrency());
  std::printf("%-44s %12s %10s %12s %10s\n", "", "readings/s", "ns each", "mean bytes", "vs typed");
  for (int j = 0; j < 3; ++j) {
    std::printf("%-44s %12.0f %10.1f %12.1f %10.2f\n", names[j], n / best[j], best[j] / n * 1e9,
                static_cast<double>(sets[j]->bytes) / n, best[0] / best[j]);
  }
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"Ingest rate against a bare consumer and a bare pipeline"};
  uint64_t readings = 5'000'000;
  int partitions = 64;
  size_t devices = 100'000;
  uint64_t seed = 1;
  size_t batch_records = 10'000;
  app.add_option("--readings", readings, "Readings to pre-fill (default 5,000,000)");
  app.add_option("--partitions", partitions, "Topic partitions (default 64)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--devices", devices, "Simulated devices (default 100,000)");
  app.add_option("--seed", seed, "Generator seed (default 1)");
  app.add_option("--batch", batch_records,
                 "Records per append (one WAL fsync each) on both pipelines; cityops ingest's "
                 "max_batch_records (default 10,000, the daemon's default)")
      ->check(CLI::Range(size_t{1}, size_t{10'000}));
  bool decoder = false;
  int rounds = 5;
  app.add_flag("--decoder", decoder,
               "Measure DecodeReading alone, in memory: typed readings against readings by name "
               "(values) of the typed and the catalogue-only kinds; --readings per set "
               "(default 1,000,000 then)");
  app.add_option("--rounds", rounds, "With --decoder: rounds, the best of each (default 5)")
      ->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  if (decoder) {
    return RunDecoder(app.count("--readings") > 0 ? readings : 1'000'000, devices, seed, rounds);
  }

  char pattern[] = "/tmp/cityops-ingest-bench-XXXXXX";
  if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  const std::string dir = pattern;

  absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> kafka = ingest::EmbeddedKafka::Start(
      {.brokers = 1, .topics = {{kTopic, partitions}, {"cityops.deadletter", 1}}});
  if (!kafka.ok()) throw std::runtime_error(kafka.status().ToString());
  const std::string bootstrap = (*kafka)->bootstrap_servers();

  // Pre-fill, untimed for the comparison (its rate is printed for reference).
  sim::FleetOptions fleet;
  fleet.seed = seed;
  fleet.devices = devices;
  // Event times near now, so that validation accepts them.
  fleet.start = absl::Now() - absl::Hours(1);
  fleet.interval = absl::Seconds(3600) / static_cast<double>(readings / devices + 1);
  sim::ReadingGenerator generator(fleet);
  absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer = ingest::RecordProducer::Create(
      bootstrap, {{"compression.type", "zstd"}, {"linger.ms", "50"}, {"batch.size", "1000000"}});
  if (!producer.ok()) throw std::runtime_error(producer.status().ToString());
  v1::SensorReading reading;
  std::string value;
  size_t value_bytes = 0;
  auto t0 = SteadyClock::now();
  for (uint64_t i = 0; i < readings; ++i) {
    generator.Next(&reading);
    reading.SerializeToString(&value);
    value_bytes += value.size();
    absl::Status s = (*producer)->Produce(kTopic, reading.device_id(), value);
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }
  if (absl::Status s = (*producer)->Flush(absl::Minutes(5)); !s.ok()) {
    throw std::runtime_error(s.ToString());
  }
  const double fill_s = Since(t0);
  producer->reset();
  std::fprintf(stderr, "pre-filled %llu readings in %.1f s\n",
               static_cast<unsigned long long>(readings), fill_s);
  {
    // The embedded cluster drops old records beyond ~5 MiB per partition: make sure
    // every reading is still there, or the comparison would be meaningless.
    BareConsumer probe(bootstrap, partitions);
    const uint64_t available = probe.Available(partitions);
    if (available != readings) {
      std::fprintf(stderr,
                   "ingest_bench: the embedded cluster kept %llu of %llu readings (about 5 MiB "
                   "per partition); run with more --partitions\n",
                   static_cast<unsigned long long>(available),
                   static_cast<unsigned long long>(readings));
      return 1;
    }
  }

  // 1. Bare consumer.
  double consumer_s = 0;
  {
    BareConsumer consumer(bootstrap, partitions);
    consumer_s = consumer.ConsumeAll(readings, [](rd_kafka_message_t**, size_t) {});
  }
  // 2. Bare pipeline: consume, parse, append to RocksDB in batches of --batch, fsync each.
  double pipeline_s = 0;
  {
    BareRocksDb store(dir + "/bare", kernel::Durability::kSyncEachAppend);
    BareConsumer consumer(bootstrap, partitions);
    std::vector<uint64_t> next(static_cast<size_t>(partitions), 0);
    rocksdb::WriteBatch batch;
    size_t in_batch = 0;
    char key[kernel::format::kEventKeySize];
    char offset[8];
    pipeline_s = consumer.ConsumeAll(readings, [&](rd_kafka_message_t** msgs, size_t n) {
      for (size_t i = 0; i < n; ++i) {
        const rd_kafka_message_t* m = msgs[i];
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        if (!reading.ParseFromArray(m->payload, static_cast<int>(m->len))) {
          throw std::runtime_error("bare pipeline: unparsable reading");
        }
        kernel::format::EncodeEventKey(kernel::Sequence(next[m->partition]++), key);
        batch.Put(store.events(kernel::Partition(static_cast<uint32_t>(m->partition))),
                  rocksdb::Slice(key, sizeof(key)),
                  rocksdb::Slice(static_cast<const char*>(m->payload), m->len));
        if (++in_batch == batch_records) {
          kernel::format::PutBigEndian64(static_cast<uint64_t>(m->offset + 1), offset);
          batch.Put(store.meta(), "position", rocksdb::Slice(offset, sizeof(offset)));
          store.Write(&batch);
          batch.Clear();
          in_batch = 0;
        }
      }
    });
    if (in_batch > 0) store.Write(&batch);
  }
  // 3. cityops ingest.
  double cityops_s = 0;
  ingest::IngestStats stats;
  {
    absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
        kernel::EventLog::Open({.path = dir + "/cityops"});
    if (!log.ok()) throw std::runtime_error(log.status().ToString());
    ingest::IngestOptions options;
    options.bootstrap_servers = bootstrap;
    options.topics.reports.clear();
    options.topics.devices.clear();
    options.clock_tick_interval = absl::ZeroDuration();
    options.max_batch_records = batch_records;
    options.kafka_properties = {{"log_level", "3"}};
    absl::StatusOr<std::unique_ptr<ingest::Ingester>> ingester =
        ingest::Ingester::Create(log->get(), options);
    if (!ingester.ok()) throw std::runtime_error(ingester.status().ToString());
    SteadyClock::time_point first{};
    while ((*ingester)->Stats().records < readings) {
      absl::StatusOr<size_t> n = (*ingester)->PollOnce();
      if (!n.ok()) throw std::runtime_error(n.status().ToString());
      if (*n > 0 && first == SteadyClock::time_point{}) first = SteadyClock::now();
    }
    cityops_s = Since(first);
    stats = (*ingester)->Stats();
  }
  if (stats.readings + stats.duplicates != readings || stats.dead_lettered != 0) {
    std::fprintf(stderr, "ingest_bench: ingested %llu readings, %llu duplicates, %llu rejected\n",
                 static_cast<unsigned long long>(stats.readings),
                 static_cast<unsigned long long>(stats.duplicates),
                 static_cast<unsigned long long>(stats.dead_lettered));
    return 1;
  }

  const double n = static_cast<double>(readings);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("ingest_bench: %llu readings (mean %.1f bytes) on %d partitions, %u cores\n",
              static_cast<unsigned long long>(readings), static_cast<double>(value_bytes) / n,
              partitions, std::thread::hardware_concurrency());
  std::printf("pre-fill with RecordProducer (zstd): %.0f readings/s\n", n / fill_s);
  std::printf("%-44s %12s %16s\n", "", "readings/s", "vs bare pipeline");
  std::printf("%-44s %12.0f %16.2f\n", "bare librdkafka consumer (does nothing)", n / consumer_s,
              pipeline_s / consumer_s);
  std::printf("%-44s %12.0f %16s\n", "bare pipeline (consume, parse, RocksDB)", n / pipeline_s,
              "1.00");
  std::printf("%-44s %12.0f %16.2f\n", "cityops ingest (decode, validate, log)", n / cityops_s,
              pipeline_s / cityops_s);
  std::printf("cityops appends: %llu (batches of up to %zu records), duplicates dropped: %llu\n",
              static_cast<unsigned long long>(stats.appends), batch_records,
              static_cast<unsigned long long>(stats.duplicates));
  std::printf("peak RSS: %ld MiB (includes the embedded cluster holding the topic)\n",
              usage.ru_maxrss / 1024);
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  try {
    return cityops::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_bench: %s\n", e.what());
    return 1;
  }
}
