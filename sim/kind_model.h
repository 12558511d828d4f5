// How the simulator makes the readings and archives of a catalogue kind from the
// catalogue alone (catalogue/city.yaml, `simulation` and `archive`): no kind is named in
// code here. A reading carries every modelled metric by name (`MetricValues`):
//
// - a number is its model's baseline plus Gaussian noise of the model's deviation (half of
//   the variance a fixed offset of the device, half fresh each reading), rounded to a
//   resolution that follows the noise, clamped into the metric's bounds;
// - a flag is true with probability `baseline`; a code is `baseline` when it is one of the
//   metric's codes, else its first code; a repeated code lists none;
// - a counter only grows: each reading adds a Poisson count of mean `baseline`, up to the
//   metric's maximum;
// - metrics without a model are left out, except flags, which read false.
//
// Callers may replace a metric's baseline (a diurnal pattern) or its value (an episode of
// a scenario) per reading. Everything is drawn from the caller's generator and the device's
// key: the same calls give the same values.
#ifndef CITYOPS_SIM_KIND_MODEL_H_
#define CITYOPS_SIM_KIND_MODEL_H_

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "catalogue/kinds.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/reading.pb.h"

namespace cityops::sim {

// A uniform [0, 1) number from a hash of its arguments: stateless randomness (offline
// spells, a device's fixed offsets, archive values) that does not depend on the order in
// which devices report.
double HashUnit(uint64_t seed, uint64_t a, uint64_t b);

// What a scenario does to one metric of one reading.
struct MetricOverride {
  std::optional<double> baseline;  // Replaces the model's baseline.
  std::optional<double> noise;     // Replaces the model's noise (standard deviation).
  std::optional<double> value;     // The value itself, within 1 % (0 stays 0).
};

class KindModel {
 public:
  // `kind` must outlive the model (it lives in its KindTable).
  explicit KindModel(const catalogue::Kind& kind);

  const catalogue::Kind& kind() const { return *kind_; }
  // Index of the metric `name` in kind().metrics, or -1.
  int MetricIndex(std::string_view name) const;
  // The model's baseline of metric `index` (0 without a model).
  double Baseline(int index) const { return metrics_[index].baseline; }

  // The values of one reading into `out` (cleared first). `overrides` is empty or has one
  // entry per metric; `counters` has one entry per metric and keeps the counters' totals
  // between readings of the device.
  void Fill(uint64_t device_key, std::mt19937_64& rng, std::span<const MetricOverride> overrides,
            std::span<uint64_t> counters, v1::MetricValues* out) const;

 private:
  struct Metric {
    bool modelled = false;
    double baseline = 0;
    double noise = 0;
    double step = 0.01;  // Resolution of numbers.
  };
  const catalogue::Kind* kind_;
  std::vector<Metric> metrics_;  // Parallel to kind().metrics.
};

// The archive of a device of a catalogue-only kind: a plausible value for every archive
// field of the kind, drawn from `key` (the same key, the same archive). `place` names
// where the device is ("Xuhui street 4"), for fields naming a building or compound.
v1::ArchiveValues ArchiveOf(const catalogue::Kind& kind, uint64_t key, std::string_view place);

}  // namespace cityops::sim

#endif  // CITYOPS_SIM_KIND_MODEL_H_
