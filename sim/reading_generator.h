// A seeded, deterministic source of realistic sensor readings for a fleet of devices of
// the four kinds, with value ranges from public practice in Shanghai (the metrics and
// their units are in proto/README.md). Used by the benches, the tests and `cityops log
// generate`; the city simulator builds on it.
//
// Devices report in turn (device 0, 1, ..., n-1, 0, ...); each round advances event time
// by `interval`. The same options give the same readings, byte for byte.
#ifndef CITYOPS_SIM_READING_GENERATOR_H_
#define CITYOPS_SIM_READING_GENERATOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "catalogue/kinds.h"
#include "cityops/v1/reading.pb.h"
#include "sim/kind_model.h"

namespace cityops::sim {

struct FleetOptions {
  uint64_t seed = 1;
  size_t devices = 10'000;
  absl::Time start = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21T14:13:20Z
  absl::Duration interval = absl::Seconds(10);              // One round of all devices.
  // Shares of the four kinds, in percent; the rest are manhole covers.
  int elevator_pct = 30;
  int curtain_wall_pct = 5;
  int flood_gauge_pct = 15;
  // Share of devices of the catalogue-only kinds, in percent, split between them in their
  // catalogue shares; they send `values` readings (sim/kind_model.h). 0 (the default)
  // keeps the four typed kinds, and the readings exactly as they were.
  int catalogue_pct = 0;
  // The catalogue; null: catalogue::KindTable::BuiltIn().
  std::shared_ptr<const catalogue::KindTable> kinds;
};

// A device id in the GB/T 30428 component-code style: county 6 digits ("310104",
// Xuhui), major class 2, minor class 2, serial 6. Manhole covers use the manhole minors
// (0101 water supply ... 0111 gas); elevators (9001), curtain walls (9002) and flood
// gauges (9003) use extension classes, as the standard has none for them; so do the
// catalogue-only kinds (DEVICE_KIND_UNSPECIFIED): 93xx, xx the kind's place among the
// catalogue's catalogue-only kinds (9301 the first).
std::string DeviceId(v1::DeviceKind kind, int minor_class, size_t serial);

class ReadingGenerator {
 public:
  explicit ReadingGenerator(const FleetOptions& options);

  // Writes the next reading into `out` (cleared first).
  void Next(v1::SensorReading* out);

  size_t devices() const { return devices_.size(); }
  const std::string& device_id(size_t i) const { return devices_[i].id; }
  v1::DeviceKind kind(size_t i) const { return devices_[i].kind; }
  // The catalogue-only kind of device i, or null for a typed one.
  const catalogue::Kind* catalogue_kind(size_t i) const {
    return devices_[i].model < 0 ? nullptr : &models_[devices_[i].model].kind();
  }

 private:
  struct Device {
    std::string id;
    v1::DeviceKind kind;
    uint64_t readings = 0;
    double baseline = 0;             // Kind-specific: installed tilt, gauge drift, ...
    int model = -1;                  // Catalogue-only kinds: into models_.
    std::vector<uint64_t> counters;  // Catalogue-only kinds: the counters' totals.
  };
  FleetOptions options_;
  std::shared_ptr<const catalogue::KindTable> kinds_;
  std::vector<KindModel> models_;  // The catalogue-only kinds.
  std::vector<Device> devices_;
  size_t next_device_ = 0;
  uint64_t round_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace cityops::sim

#endif  // CITYOPS_SIM_READING_GENERATOR_H_
