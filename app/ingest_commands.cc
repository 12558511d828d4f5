#include "app/ingest_commands.h"

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "app/sim_commands.h"
#include "ingest/device_import.h"
#include "ingest/embedded_kafka.h"
#include "ingest/ingester.h"
#include "ingest/publish.h"
#include "kernel/event_log.h"

namespace cityops::app {
namespace {

ingest::Ingester* g_running = nullptr;  // For the signal handler only.

void StopOnSignal(int) {
  if (g_running != nullptr) g_running->Stop();  // Stop() only stores an atomic flag.
}

void PrintStats(const ingest::IngestStats& s, std::ostream& out) {
  out << absl::StrFormat(
             "ingest: %d records: %d readings (%d from unregistered devices), %d reports, %d "
             "registrations, %d duplicates dropped, %d dead-lettered, %d clock ticks",
             s.records, s.readings, s.unregistered_readings, s.reports, s.registrations,
             s.duplicates, s.dead_lettered, s.clock_ticks)
      << std::endl;
}

}  // namespace

absl::Status PublishCommand(const PublishCommandOptions& options, std::ostream& out,
                            std::ostream& err) {
  ingest::PublishOptions publish;
  publish.topic = options.topic;
  if (options.encoding == "json") {
    publish.encoding = ingest::WireEncoding::kJson;
  } else if (options.encoding != "protobuf") {
    return absl::InvalidArgumentError(
        absl::StrFormat("--encoding must be protobuf or json, not '%s'", options.encoding));
  }
  absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
      ingest::RecordProducer::Create(options.bootstrap);
  if (!producer.ok()) return producer.status();
  std::ifstream file;
  std::istream* in = &std::cin;
  if (options.input != "-") {
    file.open(options.input);
    if (!file) {
      return absl::NotFoundError(absl::StrFormat("cannot read %s", options.input));
    }
    in = &file;
  }
  absl::StatusOr<ingest::PublishSummary> summary =
      ingest::PublishJsonLines(*in, **producer, publish, absl::Now());
  if (!summary.ok()) return summary.status();
  for (const ingest::LineError& e : summary->errors) {
    err << absl::StrFormat("%s:%d: %s: %s\n", options.input, e.line, e.code, e.message);
  }
  out << absl::StrFormat("published %d readings to %s\n", summary->published, options.topic);
  if (!summary->errors.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%d lines were not published (listed above); fix them and publish those lines again",
        summary->errors.size()));
  }
  return absl::OkStatus();
}

absl::Status ImportDevicesCommand(const ImportCommandOptions& options, std::ostream& out,
                                  std::ostream& err) {
  absl::StatusOr<ingest::ParsedDevices> parsed = ingest::ParseDeviceFile(options.file);
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
      kernel::EventLog::Open({.path = options.data_dir});
  if (!log.ok()) return log.status();
  absl::StatusOr<ingest::ImportResult> result =
      ingest::ImportDevices(**log, parsed->devices, options.partitions, absl::Now());
  if (!result.ok()) return result.status();
  for (const ingest::ImportError& e : parsed->errors) {
    err << absl::StrFormat("%s:%d: %s\n", options.file, e.line, e.message);
  }
  out << absl::StrFormat("imported %d registrations (%d unchanged) into %s\n", result->appended,
                         result->unchanged, options.data_dir);
  if (!parsed->errors.empty()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%d lines were not imported (listed above)", parsed->errors.size()));
  }
  return absl::OkStatus();
}

absl::Status IngestCommand(const IngestCommandOptions& options, std::ostream& out) {
  std::unique_ptr<ingest::EmbeddedKafka> kafka;
  ingest::IngestOptions ingest_options;
  ingest_options.bootstrap_servers = options.bootstrap;
  ingest_options.group_id = options.group_id;
  if (options.embedded) {
    absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> started =
        ingest::EmbeddedKafka::Start({.brokers = 1,
                                      .topics = {{"cityops.readings", options.partitions},
                                                 {"cityops.reports", options.partitions},
                                                 {"cityops.devices", options.partitions},
                                                 {"cityops.deadletter", 1}}});
    if (!started.ok()) return started.status();
    kafka = std::move(*started);
    ingest_options.bootstrap_servers = kafka->bootstrap_servers();
    // Its topics start empty on every run: a log from an earlier run has positions past
    // their end, which is expected here.
    ingest_options.accept_recreated_topics = true;
    // The embedded cluster bounds a rebalance by the session timeout: keep restarts quick.
    ingest_options.consumer_properties = {{"session.timeout.ms", "6000"},
                                          {"heartbeat.interval.ms", "1000"}};
    out << "kafka: " << kafka->bootstrap_servers()
        << " (embedded development cluster: topics live in memory and are lost at exit)"
        << std::endl;
  } else if (options.bootstrap.empty()) {
    return absl::InvalidArgumentError("give --bootstrap BROKERS, or --embedded");
  }
  // A simulation plays hours in minutes: ingest's clock (its clock ticks, and the window
  // of event times it accepts) follows simulated time, not the wall clock.
  constexpr double kSimAcceleration = 120;
  kernel::ScaledClock sim_clock(absl::Now() - absl::Minutes(options.sim_minutes), kSimAcceleration);
  if (!options.simulate.empty()) ingest_options.clock = &sim_clock;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
      kernel::EventLog::Open({.path = options.data_dir});
  if (!log.ok()) return log.status();
  absl::StatusOr<std::unique_ptr<ingest::Ingester>> ingester =
      ingest::Ingester::Create(log->get(), ingest_options);
  if (!ingester.ok()) return ingester.status();

  g_running = ingester->get();
  std::signal(SIGINT, StopOnSignal);
  std::signal(SIGTERM, StopOnSignal);
  absl::Status run_status;
  std::atomic<bool> finished{false};
  std::thread runner([&] {
    run_status = (*ingester)->Run();  // Returns after Stop(), or on an error it can't retry.
    finished = true;
  });
  // The simulated city publishes from its own thread while ingest runs.
  std::atomic<bool> sim_stop{false};
  std::atomic<bool> sim_done{options.simulate.empty()};
  absl::Status sim_status;
  std::thread simulator;
  if (!options.simulate.empty()) {
    simulator = std::thread([&] {
      SimCommandOptions sim;
      sim.scenario = options.simulate;
      sim.devices = options.sim_devices;
      sim.bootstrap = ingest_options.bootstrap_servers;
      sim.acceleration = kSimAcceleration;
      sim.clock = &sim_clock;
      sim.minutes = options.sim_minutes;
      sim_status = SimCommand(sim, out, &sim_stop);
      sim_done = true;
    });
  }
  const absl::Time deadline =
      options.seconds > 0 ? absl::Now() + absl::Seconds(options.seconds) : absl::InfiniteFuture();
  absl::Time next_report = absl::Now() + absl::Seconds(5);
  uint64_t reported = UINT64_MAX;
  uint64_t last_records = 0;
  absl::Time quiet_since = absl::Now();
  while (!finished) {
    absl::SleepFor(absl::Milliseconds(100));
    if (absl::Now() >= deadline) (*ingester)->Stop();
    const uint64_t records = (*ingester)->Stats().records;
    if (records != last_records) {
      last_records = records;
      quiet_since = absl::Now();
    } else if (!options.simulate.empty() && sim_done &&
               absl::Now() >= quiet_since + absl::Seconds(3)) {
      (*ingester)->Stop();  // The simulation is over and everything it sent is in.
    }
    if (absl::Now() >= next_report) {
      const ingest::IngestStats stats = (*ingester)->Stats();
      if (stats.records != reported) PrintStats(stats, out);
      reported = stats.records;
      next_report = absl::Now() + absl::Seconds(5);
    }
  }
  runner.join();
  sim_stop = true;
  if (simulator.joinable()) simulator.join();
  g_running = nullptr;
  if (!sim_status.ok()) return sim_status;
  PrintStats((*ingester)->Stats(), out);
  return run_status;
}

}  // namespace cityops::app
