#include "app/sim_commands.h"

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "ingest/record_producer.h"
#include "sim/city.h"
#include "sim/publisher.h"
#include "sim/simulator.h"

namespace cityops::app {

absl::Status SimCommand(const SimCommandOptions& options, std::ostream& out,
                        const std::atomic<bool>* stop) {
  sim::Scenario scenario;
  if (!sim::ParseScenario(options.scenario, &scenario)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unknown scenario '%s'; use normal, typhoon or elevator-wave", options.scenario));
  }
  if (options.bootstrap.empty() == options.out.empty()) {
    return absl::InvalidArgumentError("give either --bootstrap BROKERS or --out FILE");
  }
  sim::CityOptions city_options;
  city_options.seed = options.seed;
  city_options.devices = options.devices;
  city_options.catalogue_kinds = options.catalogue_kinds;
  const sim::City city = sim::GenerateCity(city_options);
  const absl::Duration duration = absl::Minutes(options.minutes);
  sim::SimulatorOptions sim_options;
  sim_options.scenario = scenario;
  sim_options.seed = options.seed;
  sim_options.start = absl::Now() - duration;
  sim::Simulator simulator(city, sim_options);
  if (options.clock != nullptr) options.clock->Start(sim_options.start);
  sim::PublishOptions publish;
  publish.duration = duration;
  publish.acceleration = options.acceleration;
  publish.rate = options.rate;
  publish.devices_path = options.devices_out;
  out << absl::StrFormat("sim: %s scenario, %d devices in %d grids, %s of simulated time%s\n",
                         sim::ScenarioName(scenario), city.devices.size(), city.grids.size(),
                         absl::FormatDuration(duration),
                         options.acceleration > 0 ? absl::StrFormat(" at %gx", options.acceleration)
                                                  : std::string(" as fast as possible"))
      << std::flush;
  absl::StatusOr<sim::PublishStats> stats;
  if (!options.out.empty()) {
    stats = sim::WriteJsonLines(simulator, options.out, publish, stop);
  } else {
    absl::StatusOr<std::unique_ptr<ingest::RecordProducer>> producer =
        ingest::RecordProducer::Create(options.bootstrap);
    if (!producer.ok()) return producer.status();
    stats = sim::PublishToKafka(simulator, **producer, publish, stop);
  }
  if (!stats.ok()) return stats.status();
  out << absl::StrFormat("sim: %d registrations and %d readings in %s (%s simulated)\n",
                         stats->devices, stats->readings, absl::FormatDuration(stats->wall),
                         absl::FormatDuration(stats->simulated));
  return absl::OkStatus();
}

}  // namespace cityops::app
