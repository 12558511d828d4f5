// The work behind `cityops sim`: a simulated city's readings, to Kafka or to JSON lines.
#ifndef CITYOPS_APP_SIM_COMMANDS_H_
#define CITYOPS_APP_SIM_COMMANDS_H_

#include <atomic>
#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "kernel/clock.h"

namespace cityops::app {

struct SimCommandOptions {
  std::string scenario = "typhoon";  // normal, typhoon or elevator-wave.
  uint32_t devices = 10'000;
  uint64_t seed = 1;
  double minutes = 180;      // Simulated time to play.
  double acceleration = 60;  // Simulated seconds per wall second; 0 = as fast as possible.
  double rate = 0;           // Readings per wall second at most; 0 = no limit.
  std::string bootstrap;     // Kafka, or:
  std::string out;           // a JSON-lines file of readings,
  std::string devices_out;   // and one of registrations (for `cityops devices import`).
  // Add devices of the catalogue-only kinds (sim::CityOptions::catalogue_kinds, from the
  // built-in catalogue), on top of the typed devices.
  bool catalogue_kinds = true;
  // If set, started at the simulated start time when the first reading goes out, so that
  // it reads simulated time from then on (for ingest's clock ticks).
  kernel::ScaledClock* clock = nullptr;
};

// Plays the scenario. Simulated time ends at the wall-clock time of the call, so that
// no reading is in the future for ingest however fast time runs. Stops early when
// `*stop` becomes true.
absl::Status SimCommand(const SimCommandOptions& options, std::ostream& out,
                        const std::atomic<bool>* stop = nullptr);

}  // namespace cityops::app

#endif  // CITYOPS_APP_SIM_COMMANDS_H_
