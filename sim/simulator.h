// The city simulator: per-kind device models over a generated City, driven by one of
// three scenarios (a normal day, a typhoon with rainstorm, an elevator fault wave),
// yielding `cityops.v1.SensorReading`s in event-time order.
//
// Every device reports at its kind's interval (the catalogue's `reporting_interval`; flood
// gauges every minute while the water rises, curtain walls every minute in gusts >= 17.2
// m/s), plus immediate alarm readings when its state changes (a cover lifted or the well
// full, an elevator fault or power loss, a traffic spike on a cover and its "back to
// normal"). The environment (rain, wells, road water, wind, power) advances in 1-minute
// ticks.
//
// The four typed kinds have their own models below and send typed readings. Devices of
// the catalogue-only kinds send `values` readings (kind_id set) made from the catalogue's
// simulation spec (sim/kind_model.h), from a generator of their own so that adding them
// changes no typed reading. Their scenario roles (simulator.cc, kDiurnal and kEpisodes)
// change baselines by the hour of the day (sites quiet at night, sheds busy in the
// evening) and play episodes on a few devices, reporting every minute while they last: a
// kitchen gas leak on a normal day (gas_lel_pct past 25 %LEL about 11 minutes after 90
// minutes into the day, alarm and shut-off valve with it), an e-bike charging shed
// overheating at 19:30 (normal day and elevator wave: current and temperature up, smoke
// from 60 C, protection cuts the power at 90 C), construction sites pouring concrete
// from 22:00 into the night at 63-66 dB(A), cooking smoke setting off a few detectors at
// 18:00 and a hydrant opened without a permit 150 minutes in (normal day).
//
// Simulated time is independent of wall time: the caller paces it. Seeded and
// deterministic: the same city, options and calls give the same readings.
#ifndef CITYOPS_SIM_SIMULATOR_H_
#define CITYOPS_SIM_SIMULATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "cityops/v1/reading.pb.h"
#include "sim/city.h"
#include "sim/kind_model.h"

namespace cityops::sim {

enum class Scenario {
  // Base rates, traffic spikes, 1-2 % offline, noise, outliers, drift, thermal cycles.
  kNormalDay,
  // Rain rises past drainage capacity from ~40 min, peaks ~85 mm/h from 80 to 170 min,
  // eases below capacity by ~200 min; gusts to ~32 m/s at ~2 h; power cuts in some grids.
  kTyphoon,
  // Heat wave and evening peak, elevator failures ~15x (older 3x), a power cut over three
  // streets 2 h after the start trapping many at once against few maintenance crews.
  kElevatorWave,
};

// "normal", "typhoon", "elevator-wave"; false if unknown.
bool ParseScenario(const std::string& name, Scenario* out);
const char* ScenarioName(Scenario scenario);

struct SimulatorOptions {
  Scenario scenario = Scenario::kNormalDay;
  uint64_t seed = 1;
  absl::Time start = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21T14:13:20Z
};

class Simulator {
 public:
  // Keeps a reference to `city`, which must outlive the simulator.
  Simulator(const City& city, const SimulatorOptions& options);

  // The next reading with event time before `until`, in event-time order (ties in a
  // fixed order). False, with now() == until, when there is none before `until`.
  bool Next(absl::Time until, v1::SensorReading* out);

  // Every reading in [now(), now() + d), in order; advances now() by d.
  void Step(absl::Duration d, const std::function<void(const v1::SensorReading&)>& sink);
  // The same, appending to `out`.
  void Step(absl::Duration d, std::vector<v1::SensorReading>* out);

  // Simulated time: all readings before it have been yielded.
  absl::Time now() const { return now_; }
  absl::Time start() const { return options_.start; }
  const City& city() const { return city_; }
  const SimulatorOptions& options() const { return options_; }
  uint64_t readings() const { return readings_; }

  // The environment at the last tick (for dashboards and tests).
  double RainfallMmPerH(uint32_t grid) const { return grids_[grid].rain; }
  double DrainageCapacityMmPerH(uint32_t grid) const { return grids_[grid].capacity; }
  // Fill of the grid's wells, 0 = normal level, 1 = water at the cover, > 1 above it.
  double WellFill(uint32_t grid) const { return grids_[grid].fill; }
  double RoadWaterCm(uint32_t grid) const { return grids_[grid].road_cm; }
  bool PowerOut(uint32_t grid) const { return grids_[grid].power_out_until > tick_s_; }
  double GustMPerS(uint32_t grid) const;

 private:
  enum EntryType : uint8_t {
    kReport,
    kAlarm,
    kSpikeEnd,
    kTick,
    kSpikeGen,
    kCoverFaultGen,
    kEpisodeReport,
  };
  struct Entry {
    int64_t t_ms;
    uint64_t seq;
    uint32_t device;
    EntryType type;
    bool operator>(const Entry& o) const { return t_ms != o.t_ms ? t_ms > o.t_ms : seq > o.seq; }
  };
  struct GridState {
    float rain = 0;       // mm/h
    float capacity = 40;  // mm/h
    float fill = 0;       // Well fill, see WellFill.
    float excess = 0;     // Smoothed rain above capacity (surface runoff), mm/h.
    float road_cm = 0;
    float wind_factor = 1;
    float rain_factor = 1;
    int64_t power_out_until = 0;  // Simulated seconds since start.
    bool tracked = false;         // Wells evaluated on the last tick.
    bool power_out = false;
  };
  struct DeviceState {
    float base = 0;     // Manhole: installed tilt deg. Wall: natural frequency Hz.
    float depth = 0;    // Manhole: well depth to the water at normal level, m. Gauge:
                        // multiplier of the grid's road water.
    float drift = 0;    // Per day: gauge cm, wall deg.
    float battery = 0;  // %, at the start.
    float last = 0;     // Gauge: last depth. Manhole: tilt while lifted.
    float stuck = 0;    // Value a stuck sensor repeats.
    uint32_t counter = 0;
    int64_t fault_until = 0;  // Simulated s. Elevator: current fault's end.
    uint8_t fault = 0;        // Elevator fault code; manhole alarm state.
    bool is_stuck = false;
    bool lifted = false;      // Manhole cover displaced.
    bool spiking = false;     // Manhole: in a traffic spike.
    bool power_loss = false;  // Elevator on battery.
    bool hazard = false;      // Curtain wall with a hidden hazard (about 3.5 %).
  };

  void Push(int64_t t_ms, uint32_t device, EntryType type);
  void Tick(int64_t t_ms);
  void UpdateWeather(int64_t t_s);
  void StartPowerCut(uint32_t grid, int64_t t_s, int64_t until_s);
  bool Emit(const Entry& e, v1::SensorReading* out);
  bool Offline(uint32_t device, int64_t t_s) const;
  double Hour(int64_t t_ms) const;
  double CityRain(double minutes) const;
  double CityGust(double minutes) const;
  void FillManhole(uint32_t i, int64_t t_ms, v1::SensorReading* out);
  void FillElevator(uint32_t i, int64_t t_ms, v1::SensorReading* out);
  void FillCurtainWall(uint32_t i, int64_t t_ms, v1::SensorReading* out);
  void FillFloodGauge(uint32_t i, int64_t t_ms, v1::SensorReading* out);
  // A device of a catalogue-only kind: `values` by its kind's model and roles.
  void FillCatalogueKind(uint32_t i, int64_t t_ms, v1::SensorReading* out);
  void StartCatalogueKinds();
  uint8_t ManholeAlarmState(uint32_t i) const;
  double ElevatorFaultRatePerDay(uint32_t i, int64_t t_ms) const;

  const City& city_;
  SimulatorOptions options_;
  std::mt19937_64 rng_;
  std::vector<Entry> heap_;
  uint64_t seq_ = 0;
  absl::Time now_;
  int64_t tick_s_ = 0;  // Simulated seconds since start of the last tick.
  uint64_t readings_ = 0;
  uint64_t run_tag_ = 0;  // Prefix of reading ids: differs between runs.
  int start_year_ = 2026;
  float gust_ = 4;  // City gust at the last tick, m/s.
  double spike_rate_per_ms_ = 0;
  double cover_fault_rate_per_ms_ = 0;
  std::vector<uint32_t> wave_cut_streets_;
  std::vector<GridState> grids_;
  std::vector<DeviceState> devices_;
  std::vector<uint32_t> manholes_;  // Indexes of manhole covers.
  // The catalogue-only kinds: a generator of their own, a model per kind (indexed as
  // city_.kinds), the metrics each kind's diurnal roles change, counters' totals, the
  // episodes played on devices.
  struct Diurnal {
    int metric;
    double from_hour;
    double to_hour;
    double baseline;
    double noise;  // < 0: the model's.
  };
  struct DeviceEpisode {
    size_t episode;            // Into kEpisodes.
    int64_t t0_ms;             // Its start, since the simulation's start (may be before it).
    int64_t end_ms;            // Its end.
    std::vector<int> metrics;  // Per curve of the episode: the kind's metric, or -1.
    std::vector<int> flags;    // Per flag of the episode: the kind's metric, or -1.
    std::vector<bool> on;      // Per flag of the episode: on (it stays on to the end).
  };
  std::mt19937_64 catalogue_rng_;
  std::vector<KindModel> models_;
  std::vector<std::vector<Diurnal>> diurnal_;
  absl::flat_hash_map<uint32_t, std::vector<uint64_t>> counters_;
  absl::flat_hash_map<uint32_t, DeviceEpisode> episodes_;
  // Pending rescues per maintenance contractor (elevator wave and typhoon power cuts).
  std::vector<int> rescue_queue_;
  std::vector<int64_t> rescue_queue_since_;
};

}  // namespace cityops::sim

#endif  // CITYOPS_SIM_SIMULATOR_H_
