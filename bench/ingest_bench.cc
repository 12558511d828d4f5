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
// The embedded cluster keeps only about 5 MiB per partition; the bench spreads the
// readings over enough partitions (zstd-compressed batches) and checks that nothing was
// dropped before it measures.
#include <librdkafka/rdkafka.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/bare_rocksdb.h"
#include "ingest/embedded_kafka.h"
#include "ingest/ingester.h"
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
  CLI11_PARSE(app, argc, argv);

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
