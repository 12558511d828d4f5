#include "sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <string_view>
#include <utility>

#include "absl/strings/str_format.h"
#include "kernel/proto_time.h"

namespace cityops::sim {
namespace {

constexpr int64_t kTickMs = 60'000;
constexpr double kTickHours = 1.0 / 60;
constexpr double kPi = 3.14159265358979323846;

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer.
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Rounded to the sensor's resolution; never -0, which JSON would not round-trip.
double Round(double v, double step) { return std::round(v / step) * step + 0.0; }

// Piecewise-linear interpolation over (x, y) points, flat outside.
template <size_t N>
double Interpolate(const std::pair<double, double> (&points)[N], double x) {
  if (x <= points[0].first) return points[0].second;
  for (size_t i = 1; i < N; ++i) {
    if (x <= points[i].first) {
      const auto& [x0, y0] = points[i - 1];
      const auto& [x1, y1] = points[i];
      return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
    }
  }
  return points[N - 1].second;
}

struct FaultWeight {
  uint8_t code;
  int weight;
};
// Door faults (4, 11, 12, 13, 20) make about three quarters of failures (public figures
// from Chinese elevator IoT platforms: up to 80 %); entrapments (7, 8) about 1.3 per
// 10,000 elevators a day at the base rate.
constexpr FaultWeight kFaults[] = {{11, 35}, {12, 30}, {20, 5}, {13, 5}, {4, 1}, {7, 8},
                                   {8, 6},   {21, 3},  {19, 2}, {10, 2}, {3, 1}, {38, 2}};
constexpr double kBaseFailuresPerDay = 9e-4;

bool IsDoorFault(int code) {
  return code == 4 || code == 11 || code == 12 || code == 13 || code == 20;
}

// The scenario roles of the catalogue-only kinds (catalogue/city.yaml, `scenario_role`):
// the one place the simulator names such kinds and their metrics. Whatever the catalogue
// lacks is skipped.

// A metric's baseline during some hours of the local day (UTC+8), in every scenario.
struct DiurnalRole {
  const char* kind;
  const char* metric;
  double from_hour;  // Wraps past midnight when after to_hour.
  double to_hour;
  double baseline;
  double noise;  // < 0: the model's.
};
constexpr DiurnalRole kDiurnal[] = {
    // Sites stop at night (22-6 h): the meters hear the street.
    {"noise_meter", "noise_leq_dba", 22, 6, 45, 2},
    {"noise_meter", "noise_lmax_dba", 22, 6, 56, 3},
    // Evening peak 18-22 h: residents plug in.
    {"ebike_charging_shed", "current_a", 18, 22, 30, -1},
    {"ebike_charging_shed", "temperature_c", 18, 22, 29, -1},
    {"ebike_charging_shed", "sockets_in_use", 18, 22, 20, -1},
};

// An episode played on a few devices of a kind: its metrics follow curves over the
// minutes since it began, flags come on when a metric's reported value first reaches a
// level and stay on to its end, and the device reports every minute while it lasts.
struct Curve {
  const char* metric;
  std::vector<std::pair<double, double>> points;  // (minute, value), linear between.
};
struct EpisodeFlag {
  const char* flag;
  const char* metric;  // On from the first reading where this metric reads...
  double level;        // ...at least this (or, with at_most, at most this).
  bool at_most = false;
};
struct Episode {
  const char* kind;
  std::vector<Scenario> scenarios;
  // Minutes after the simulation's start; with start_hour >= 0, the local hour instead:
  // the latest one at or before the start when the episode would still be on, else the
  // next.
  double start_minute;
  double start_hour;
  double minutes;    // How long it lasts.
  int devices_per;   // One device in so many of the kind (at least one)...
  double stagger_m;  // ...each this many minutes after the previous one.
  std::vector<Curve> curves;
  std::vector<EpisodeFlag> flags;
};

const std::vector<Episode>& Episodes() {
  static const auto* episodes = new std::vector<Episode>{
      // A kitchen hose leaks; the detector alarms at 25 %LEL (GB/T 50493 first level) and
      // its shut-off valve closes; the gas disperses.
      {"gas_detector",
       {Scenario::kNormalDay},
       90,
       -1,
       120,
       100,
       47,
       {{"gas_lel_pct",
         {{0, 0.3}, {6, 8}, {12, 31}, {15, 38}, {20, 30}, {35, 12}, {60, 3}, {120, 0.5}}}},
       {{"alarm", "gas_lel_pct", 25}, {"valve_closed", "gas_lel_pct", 25}}},
      // A faulty battery overheats in the evening peak: current and temperature climb,
      // smoke from 60 C, the protection cuts the power at 90 C (current 0, power_cut),
      // the battery burns on a while.
      {"ebike_charging_shed",
       {Scenario::kNormalDay, Scenario::kElevatorWave},
       0,
       19.5,
       90,
       50,
       23,
       {{"temperature_c",
         {{0, 30}, {10, 42}, {20, 65}, {25, 90}, {30, 110}, {40, 80}, {60, 45}, {90, 32}}},
        {"current_a", {{0, 32}, {10, 44}, {20, 52}, {24.99, 55}, {25, 0}, {90, 0}}}},
       {{"smoke", "temperature_c", 60}, {"power_cut", "current_a", 0, true}}},
      // Cooking smoke at dinner time sets off a few stairwell detectors (false alarms).
      {"smoke_detector",
       {Scenario::kNormalDay},
       0,
       18,
       20,
       100,
       37,
       {{"smoke_db_per_m", {{0, 0.02}, {5, 0.22}, {10, 0.3}, {20, 0.02}}}},
       {{"alarm", "smoke_db_per_m", 0.15}}},
      // A hydrant opened without a permit (street cleaning, a construction site): the
      // network's pressure sags while it runs.
      {"fire_hydrant",
       {Scenario::kNormalDay},
       150,
       -1,
       45,
       150,
       95,
       {{"pressure_mpa", {{0, 0.3}, {2, 0.16}, {40, 0.17}, {45, 0.3}}}},
       {{"opened", "pressure_mpa", 0.2, true}}},
      // Sites pouring concrete past 22 h without a night permit (limit 55 dB(A) at night,
      // GB 12523).
      {"noise_meter",
       {Scenario::kNormalDay},
       0,
       22,
       200,
       5,
       0,
       {{"noise_leq_dba", {{0, 64}, {120, 66}, {180, 63}, {200, 48}}},
        {"noise_lmax_dba", {{0, 78}, {120, 82}, {180, 77}, {200, 60}}}},
       {}},
  };
  return *episodes;
}

double CurveAt(const std::vector<std::pair<double, double>>& points, double x) {
  if (points.empty()) return 0;
  if (x <= points.front().first) return points.front().second;
  for (size_t i = 1; i < points.size(); ++i) {
    if (x <= points[i].first) {
      const auto& [x0, y0] = points[i - 1];
      const auto& [x1, y1] = points[i];
      return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
    }
  }
  return points.back().second;
}

}  // namespace

bool ParseScenario(const std::string& name, Scenario* out) {
  if (name == "normal" || name == "normal-day") {
    *out = Scenario::kNormalDay;
  } else if (name == "typhoon") {
    *out = Scenario::kTyphoon;
  } else if (name == "elevator-wave") {
    *out = Scenario::kElevatorWave;
  } else {
    return false;
  }
  return true;
}

const char* ScenarioName(Scenario scenario) {
  switch (scenario) {
    case Scenario::kTyphoon:
      return "typhoon";
    case Scenario::kElevatorWave:
      return "elevator-wave";
    default:
      return "normal";
  }
}

Simulator::Simulator(const City& city, const SimulatorOptions& options)
    : city_(city),
      options_(options),
      rng_(options.seed ^ 0x51a7'0000'0000'0001ULL),
      now_(options.start),
      catalogue_rng_(options.seed ^ 0xca7a'1095'0000'0001ULL) {
  run_tag_ = Mix(options.seed ^ Mix(static_cast<uint64_t>(absl::ToUnixSeconds(options.start))) ^
                 static_cast<uint64_t>(options.scenario)) &
             0xffff'ffffULL;
  start_year_ =
      static_cast<int>(absl::ToCivilYear(options.start, absl::FixedTimeZone(8 * 3600)).year());
  std::uniform_real_distribution<double> unit(0, 1);
  std::normal_distribution<double> normal(0, 1);

  // Grids: drainage capacity 36-50 mm/h (low-lying grids at the low end), rain and wind
  // factors per district and grid.
  std::vector<float> district_rain(city.districts.size());
  for (float& f : district_rain) f = static_cast<float>(0.85 + 0.3 * unit(rng_));
  grids_.resize(city.grids.size());
  for (size_t g = 0; g < grids_.size(); ++g) {
    const Grid& grid = city.grids[g];
    GridState& s = grids_[g];
    s.capacity = static_cast<float>(grid.low_lying ? 36 + 6 * unit(rng_) : 38 + 12 * unit(rng_));
    s.rain_factor = district_rain[city.streets[grid.street].district] *
                    static_cast<float>(0.97 + 0.06 * unit(rng_));
    s.wind_factor = static_cast<float>(0.85 + 0.3 * unit(rng_));
  }
  rescue_queue_.assign(256, 0);
  rescue_queue_since_.assign(256, 0);

  // The tick goes first so that the environment is set before the first reports.
  Push(0, 0, kTick);
  devices_.resize(city.devices.size());
  for (size_t i = 0; i < devices_.size(); ++i) {
    const Device& d = city.devices[i];
    if (d.kind == v1::DEVICE_KIND_UNSPECIFIED) continue;  // StartCatalogueKinds.
    DeviceState& s = devices_[i];
    s.battery = static_cast<float>(unit(rng_) < 0.02 ? 6 + 14 * unit(rng_) : 60 + 40 * unit(rng_));
    s.is_stuck = unit(rng_) < 0.003;
    switch (d.kind) {
      case v1::DEVICE_KIND_MANHOLE_COVER:
        manholes_.push_back(static_cast<uint32_t>(i));
        s.base = static_cast<float>(std::abs(normal(rng_)) * 0.8);
        s.depth = static_cast<float>(1.2 + 2.3 * unit(rng_));
        s.stuck = s.depth;
        break;
      case v1::DEVICE_KIND_CURTAIN_WALL:
        s.base = static_cast<float>(46.0 / d.value * (0.9 + 0.2 * unit(rng_)));
        s.drift = static_cast<float>(0.004 * normal(rng_));
        s.hazard = unit(rng_) < 0.035;
        s.stuck = static_cast<float>(0.05 * normal(rng_));
        break;
      case v1::DEVICE_KIND_FLOOD_GAUGE:
        // Underpasses collect the water of the roads around them.
        s.depth = static_cast<float>(d.flag ? 2.0 + 0.4 * unit(rng_) : 0.7 + 0.6 * unit(rng_));
        s.base = static_cast<float>(0.5 * unit(rng_));
        // Sun-heated housings drift about +2 cm a day.
        s.drift = static_cast<float>(unit(rng_) < 0.2 ? 1.5 + unit(rng_) : 0.1 * unit(rng_));
        s.stuck = static_cast<float>(3 * unit(rng_));
        break;
      default:
        break;
    }
    const int64_t interval_ms = absl::ToInt64Milliseconds(city.ReportingInterval(i));
    Push(static_cast<int64_t>(unit(rng_) * static_cast<double>(interval_ms)),
         static_cast<uint32_t>(i), kReport);
  }
  if (!manholes_.empty()) {
    const double per_day_ms = 86'400'000.0;
    spike_rate_per_ms_ = static_cast<double>(manholes_.size()) * 0.4 / per_day_ms;
    cover_fault_rate_per_ms_ = static_cast<double>(manholes_.size()) * 2e-4 / per_day_ms;
    std::exponential_distribution<double> spike(spike_rate_per_ms_);
    std::exponential_distribution<double> fault(cover_fault_rate_per_ms_);
    Push(static_cast<int64_t>(spike(rng_)), 0, kSpikeGen);
    Push(static_cast<int64_t>(fault(rng_)), 0, kCoverFaultGen);
  }
  if (options.scenario == Scenario::kElevatorWave && !city.streets.empty()) {
    std::uniform_int_distribution<uint32_t> pick(0, static_cast<uint32_t>(city.streets.size() - 1));
    for (int k = 0; k < 3; ++k) wave_cut_streets_.push_back(pick(rng_));
  }
  StartCatalogueKinds();
}

void Simulator::StartCatalogueKinds() {
  const std::vector<catalogue::Kind>& kinds = city_.kinds->kinds();
  models_.reserve(kinds.size());
  for (const catalogue::Kind& k : kinds) models_.emplace_back(k);
  diurnal_.resize(kinds.size());
  for (const DiurnalRole& r : kDiurnal) {
    const catalogue::Kind* k = city_.kinds->Find(r.kind);
    if (k == nullptr) continue;
    const int m = models_[static_cast<size_t>(k->index)].MetricIndex(r.metric);
    if (m >= 0)
      diurnal_[static_cast<size_t>(k->index)].push_back(
          {m, r.from_hour, r.to_hour, r.baseline, r.noise});
  }
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<std::vector<uint32_t>> by_kind(kinds.size());
  for (uint32_t i = 0; i < city_.devices.size(); ++i) {
    const Device& d = city_.devices[i];
    if (d.kind != v1::DEVICE_KIND_UNSPECIFIED || d.kind_index == kNoKind) continue;
    by_kind[d.kind_index].push_back(i);
    const catalogue::Kind& k = kinds[d.kind_index];
    bool counts = false;
    for (const catalogue::KindMetric& m : k.metrics) counts |= m.type == v1::METRIC_TYPE_COUNTER;
    if (counts) counters_[i].assign(k.metrics.size(), 0);
    const int64_t interval_ms = absl::ToInt64Milliseconds(city_.ReportingInterval(i));
    Push(static_cast<int64_t>(unit(catalogue_rng_) * static_cast<double>(interval_ms)), i, kReport);
  }
  const std::vector<Episode>& episodes = Episodes();
  for (size_t e = 0; e < episodes.size(); ++e) {
    const Episode& ep = episodes[e];
    if (std::find(ep.scenarios.begin(), ep.scenarios.end(), options_.scenario) ==
        ep.scenarios.end()) {
      continue;
    }
    const catalogue::Kind* k = city_.kinds->Find(ep.kind);
    if (k == nullptr || by_kind[static_cast<size_t>(k->index)].empty()) continue;
    const std::vector<uint32_t>& pool = by_kind[static_cast<size_t>(k->index)];
    const KindModel& model = models_[static_cast<size_t>(k->index)];
    double t0_m = ep.start_minute;
    if (ep.start_hour >= 0) {
      const double since_h = std::fmod(Hour(0) - ep.start_hour + 48, 24);
      t0_m = since_h * 60 < ep.minutes ? -since_h * 60 : (24 - since_h) * 60;
    }
    const size_t n = std::max<size_t>(1, pool.size() / static_cast<size_t>(ep.devices_per));
    for (size_t j = 0; j < n; ++j) {
      const uint32_t i =
          pool[static_cast<size_t>(unit(catalogue_rng_) * static_cast<double>(pool.size()))];
      if (episodes_.contains(i)) continue;
      DeviceEpisode de;
      de.episode = e;
      de.t0_ms = static_cast<int64_t>((t0_m + ep.stagger_m * static_cast<double>(j)) * 60'000);
      de.end_ms = de.t0_ms + static_cast<int64_t>(ep.minutes * 60'000);
      for (const Curve& c : ep.curves) de.metrics.push_back(model.MetricIndex(c.metric));
      for (const EpisodeFlag& f : ep.flags) de.flags.push_back(model.MetricIndex(f.flag));
      de.on.assign(ep.flags.size(), false);
      for (int64_t t = de.t0_ms; t <= de.end_ms; t += 60'000) {
        if (t >= 0) Push(t, i, kEpisodeReport);
      }
      episodes_[i] = std::move(de);
    }
  }
}

void Simulator::Push(int64_t t_ms, uint32_t device, EntryType type) {
  heap_.push_back({t_ms, seq_++, device, type});
  std::push_heap(heap_.begin(), heap_.end(), std::greater<>());
}

double Simulator::Hour(int64_t t_ms) const {
  const double h = absl::ToDoubleHours(options_.start - absl::UnixEpoch()) +
                   static_cast<double>(t_ms) / 3.6e6 + 8;  // UTC+8
  return std::fmod(h, 24);
}

double Simulator::CityRain(double m) const {
  if (options_.scenario != Scenario::kTyphoon) return 0;
  static constexpr std::pair<double, double> kRain[] = {{0, 2},    {20, 6},   {80, 85},
                                                        {170, 85}, {230, 10}, {300, 0}};
  double r = Interpolate(kRain, m);
  if (m > 80 && m < 170) r += 8 * std::sin((m - 80) / 30 * kPi);  // Rain bands.
  return std::max(0.0, r);
}

double Simulator::CityGust(double m) const {
  if (options_.scenario == Scenario::kTyphoon) {
    static constexpr std::pair<double, double> kGust[] = {
        {0, 8}, {120, 32}, {180, 28}, {300, 10}, {360, 8}};
    return Interpolate(kGust, m);
  }
  return 4 + 1.5 * std::sin(m / 1440 * 2 * kPi);
}

double Simulator::GustMPerS(uint32_t grid) const { return gust_ * grids_[grid].wind_factor; }

bool Simulator::Offline(uint32_t device, int64_t t_s) const {
  // 1-2 % offline on a normal day, in spells of 4 h slots.
  if (HashUnit(options_.seed, device, static_cast<uint64_t>(t_s / 14'400)) < 0.015) return true;
  const Device& d = city_.devices[device];
  if (d.kind == v1::DEVICE_KIND_FLOOD_GAUGE || d.kind == v1::DEVICE_KIND_MANHOLE_COVER) {
    const GridState& g = grids_[d.grid];
    // Offline under standing water, in half-hour spells.
    if (g.road_cm > 12 &&
        HashUnit(options_.seed ^ 0xf100d, device, static_cast<uint64_t>(t_s / 1800)) < 0.3) {
      return true;
    }
  }
  return false;
}

void Simulator::UpdateWeather(int64_t t_s) {
  const double m = static_cast<double>(t_s) / 60;
  gust_ = static_cast<float>(CityGust(m));
  const double city_rain = CityRain(m);
  std::normal_distribution<double> normal(0, 1);
  for (size_t g = 0; g < grids_.size(); ++g) {
    GridState& s = grids_[g];
    const bool low = city_.grids[g].low_lying;
    const double rain =
        city_rain > 0 ? std::max(0.0, city_rain * s.rain_factor * (1 + 0.03 * normal(rng_))) : 0;
    s.rain = static_cast<float>(rain);
    const double cap = s.capacity;
    // Wells fill once rain nears drainage capacity; they empty when it eases.
    double fill = s.fill;
    if (rain > 0.6 * cap) {
      fill += kTickHours * 0.9 * (rain - 0.6 * cap) / cap * (low ? 1.6 : 1.0);
    } else {
      fill -= kTickHours * 1.2;
    }
    s.fill = static_cast<float>(std::clamp(fill, 0.0, low ? 1.3 : 1.0));
    // Surface runoff reaches the road points 10-30 min after the rain.
    const double excess = std::max(0.0, rain - cap);
    s.excess += static_cast<float>((excess - s.excess) * kTickHours / 0.25);
    const double inflow = 0.15 * s.excess * (low ? 2.0 : 1.0) * (s.fill >= 1 ? 1.5 : 1.0);
    const double drain_hours = rain > cap ? 1.0 : 0.4;
    const double road = s.road_cm + kTickHours * (inflow - s.road_cm / drain_hours);
    s.road_cm = static_cast<float>(road < 0.05 ? 0.0 : road);
  }
}

void Simulator::StartPowerCut(uint32_t grid, int64_t t_s, int64_t until_s) {
  GridState& g = grids_[grid];
  g.power_out_until = std::max(g.power_out_until, until_s);
  if (g.power_out) return;
  g.power_out = true;
  std::uniform_real_distribution<double> unit(0, 1);
  const bool wave = options_.scenario == Scenario::kElevatorWave;
  for (uint32_t k = city_.grid_start[grid]; k < city_.grid_start[grid + 1]; ++k) {
    const uint32_t i = city_.devices_in_grid[k];
    const Device& d = city_.devices[i];
    if (d.kind != v1::DEVICE_KIND_ELEVATOR) continue;
    DeviceState& s = devices_[i];
    s.power_loss = true;
    // Cars running with passengers stop where they are: entrapments come with power loss.
    if (unit(rng_) < (wave ? 0.45 : 0.3)) {
      s.fault = unit(rng_) < 0.6 ? 8 : 7;
      // Few crews: each contractor rescues one car after another.
      const uint8_t c = d.contractor;
      if (t_s - rescue_queue_since_[c] > 7200) {
        rescue_queue_[c] = 0;
        rescue_queue_since_[c] = t_s;
      }
      const double minutes = 12 + 10 * unit(rng_) + (wave ? 8.0 : 4.0) * rescue_queue_[c]++;
      s.fault_until = t_s + static_cast<int64_t>(minutes * 60);
    }
    Push(t_s * 1000 + static_cast<int64_t>(unit(rng_) * 5000), i, kAlarm);
  }
}

uint8_t Simulator::ManholeAlarmState(uint32_t i) const {
  const DeviceState& s = devices_[i];
  if (s.lifted) return 3;
  const double fill = grids_[city_.devices[i].grid].fill;
  if (fill >= 1) return 2;                   // Water at or above the cover.
  if (s.depth * (1 - fill) < 0.5) return 1;  // Within 0.5 m of the cover.
  return 0;
}

void Simulator::Tick(int64_t t_ms) {
  const int64_t t_s = t_ms / 1000;
  tick_s_ = t_s;
  UpdateWeather(t_s);
  std::uniform_real_distribution<double> unit(0, 1);
  const double m = static_cast<double>(t_s) / 60;

  // Power cuts: gusts and flooded substations in the typhoon; three streets in the wave.
  if (options_.scenario == Scenario::kTyphoon && m >= 80 && m <= 240) {
    for (uint32_t g = 0; g < grids_.size(); ++g) {
      if (grids_[g].power_out) continue;
      const double gust = GustMPerS(g) / 30;
      const double p = 0.0006 * gust * gust * (city_.grids[g].low_lying ? 2.5 : 1.0);
      if (unit(rng_) < p)
        StartPowerCut(g, t_s, t_s + static_cast<int64_t>((40 + 80 * unit(rng_)) * 60));
    }
  }
  if (options_.scenario == Scenario::kElevatorWave && t_s == 7200) {
    for (uint32_t street : wave_cut_streets_) {
      for (uint32_t g = 0; g < grids_.size(); ++g) {
        if (city_.grids[g].street == street) StartPowerCut(g, t_s, t_s + 50 * 60);
      }
    }
  }
  for (uint32_t g = 0; g < grids_.size(); ++g) {
    GridState& s = grids_[g];
    if (s.power_out && s.power_out_until <= t_s) {
      s.power_out = false;
      for (uint32_t k = city_.grid_start[g]; k < city_.grid_start[g + 1]; ++k) {
        const uint32_t i = city_.devices_in_grid[k];
        if (city_.devices[i].kind != v1::DEVICE_KIND_ELEVATOR) continue;
        devices_[i].power_loss = false;
        Push(t_ms + static_cast<int64_t>(unit(rng_) * 5000), i, kAlarm);
      }
    }
    // Wells: covers lift and alarms go out where the water is high.
    const bool tracked = s.fill > 0.55;
    if (!tracked && !s.tracked) continue;
    s.tracked = tracked;
    for (uint32_t k = city_.grid_start[g]; k < city_.grid_start[g + 1]; ++k) {
      const uint32_t i = city_.devices_in_grid[k];
      if (city_.devices[i].kind != v1::DEVICE_KIND_MANHOLE_COVER) continue;
      DeviceState& d = devices_[i];
      if (!d.lifted && s.fill > 1.05 && unit(rng_) < 0.006 * (s.fill - 1) / 0.3) {
        d.lifted = true;
        d.last = static_cast<float>(15 + 60 * unit(rng_));
      }
      const uint8_t state = ManholeAlarmState(i);
      if (state != d.fault) {
        d.fault = state;
        Push(t_ms + static_cast<int64_t>(unit(rng_) * 60'000), i, kAlarm);
      }
    }
  }
  Push(t_ms + kTickMs, 0, kTick);
}

double Simulator::ElevatorFaultRatePerDay(uint32_t i, int64_t t_ms) const {
  const Device& d = city_.devices[i];
  const bool old = start_year_ - d.year > 15;
  const double h = Hour(t_ms);
  double rate = kBaseFailuresPerDay * (h >= 7 && h < 22 ? 1.3 : 0.4);
  if (options_.scenario == Scenario::kElevatorWave) {
    // Heat wave: machine rooms near 40 C; the evening peak doubles the load.
    rate *= 40 * (old ? 3.0 : 1.0) * (h >= 17 && h < 22 ? 2.0 : 1.0);
  } else {
    rate *= old ? 2.5 : 1.0;
  }
  return rate;
}

void Simulator::FillManhole(uint32_t i, int64_t t_ms, v1::SensorReading* out) {
  DeviceState& s = devices_[i];
  const Device& d = city_.devices[i];
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  v1::ManholeCoverMetrics* m = out->mutable_manhole_cover();
  double tilt = s.base + 0.05 * normal(rng_);
  if (s.lifted || s.spiking) tilt = s.last + 0.3 * normal(rng_);
  m->set_tilt_deg(Round(std::clamp(tilt, 0.0, 180.0), 0.01));
  m->set_cover_open(s.lifted);
  const double fill = grids_[d.grid].fill;
  double level = fill <= 1 ? s.depth * (1 - fill) : -(fill - 1);
  level += 0.01 * normal(rng_);                    // ±0.5 % of 5 m.
  if (unit(rng_) < 0.005) level = 5 * unit(rng_);  // Outlier.
  if (s.is_stuck) level = s.stuck;                 // Stuck float switch.
  m->set_well_water_level_m(Round(std::clamp(level, -1.0, 5.0), 0.01));
  if (d.minor_class == 11 || d.minor_class == 2) {
    m->set_gas_ppm(Round(2 + 1.5 * std::abs(normal(rng_)), 0.1));
  }
  const double days = static_cast<double>(t_ms) / 8.64e7;
  m->set_battery_pct(Round(std::clamp(s.battery - 0.05 * days, 0.0, 100.0), 1));
}

void Simulator::FillElevator(uint32_t i, int64_t t_ms, v1::SensorReading* out) {
  DeviceState& s = devices_[i];
  const Device& d = city_.devices[i];
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  const double h = Hour(t_ms);
  const bool wave = options_.scenario == Scenario::kElevatorWave;
  v1::ElevatorMetrics* m = out->mutable_elevator();
  const double busy = h >= 7 && h < 22 ? (h >= 17 && h < 20 ? 0.6 : 0.45) : 0.12;
  bool moving = unit(rng_) < busy;
  bool passenger = unit(rng_) < busy + 0.1;
  bool door_zone = !moving;
  double speed = moving ? d.value * (0.9 + 0.05 * normal(rng_)) : 0;
  v1::DoorState door = moving ? v1::DOOR_STATE_CLOSED
                              : (unit(rng_) < 0.5 ? v1::DOOR_STATE_OPEN : v1::DOOR_STATE_CLOSED);
  if (s.power_loss) m->add_fault_codes(9);
  if (s.power_loss || s.fault != 0) {
    moving = false;
    speed = 0;
    door = v1::DOOR_STATE_CLOSED;
    door_zone = true;
  }
  switch (s.fault) {
    case 7:
    case 8:
      passenger = true;
      door_zone = s.fault == 7;
      break;
    case 12:
      door = v1::DOOR_STATE_OPEN;
      break;
    case 20:
      door = v1::DOOR_STATE_OPENING;
      break;
    case 4:
    case 3:
    case 38:
      moving = true;
      door_zone = false;
      speed = d.value * (s.fault == 3 ? 1.18 : 0.9);
      door = s.fault == 4 ? v1::DOOR_STATE_OPEN : v1::DOOR_STATE_CLOSED;
      break;
    case 21:
      passenger = true;
      break;
    case 6:
    case 19:
      door_zone = false;
      break;
    default:
      break;
  }
  if (s.fault != 0) m->add_fault_codes(s.fault);
  m->set_floor(1 + static_cast<int>(unit(rng_) * std::max<int>(1, d.floors)));
  m->set_direction(moving ? (unit(rng_) < 0.5 ? v1::DIRECTION_UP : v1::DIRECTION_DOWN)
                          : v1::DIRECTION_STOPPED);
  m->set_speed_m_per_s(Round(std::max(0.0, speed), 0.01));
  m->set_door_state(door);
  m->set_passenger_present(passenger);
  m->set_in_door_zone(door_zone);
  m->set_mains_power(!s.power_loss);
  const double room = wave ? 38 + 3 * std::sin((h - 10) / 24 * 2 * kPi) : 28;
  m->set_machine_room_temp_c(Round(room + 1.5 * normal(rng_), 0.1));
  // E-bikes in the car: a momentary alarm, peaking 18-22 h.
  if (s.fault == 0 && !s.power_loss && passenger && !moving) {
    const double per_day = (wave ? 0.01 : 0.003) * (h >= 18 && h < 22 ? 4.0 : 0.3);
    if (unit(rng_) < per_day * 10 / 86'400) m->add_fault_codes(37);
  }
}

void Simulator::FillCurtainWall(uint32_t i, int64_t t_ms, v1::SensorReading* out) {
  DeviceState& s = devices_[i];
  const Device& d = city_.devices[i];
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  const double h = Hour(t_ms);
  const double days = static_cast<double>(t_ms) / 8.64e7;
  const double age = std::max(0, start_year_ - d.year);
  const double age_f = 1 + std::max(0.0, age - 10) / 25;  // Older facades loosen.
  const double height_f = 0.5 + d.value / 150;            // Taller ones sway more.
  const double gust = std::max(0.0, GustMPerS(d.grid) * (1 + 0.12 * normal(rng_)));
  const double g2 = gust * gust;
  v1::CurtainWallMetrics* m = out->mutable_curtain_wall();
  const double thermal = 0.03 * std::sin((h - 8) / 24 * 2 * kPi);  // Daily cycle.
  double incl = thermal + s.drift * days + 0.01 * normal(rng_) +
                0.0002 * g2 * age_f * height_f * (s.hazard ? 3 : 1) / 2;
  if (s.is_stuck) incl = s.stuck;
  m->set_inclination_deg(Round(incl, 0.001));
  double disp = 0.5 * normal(rng_) + 0.002 * g2 * height_f * (s.hazard ? 3 : 1);
  if (unit(rng_) < 0.002) disp += 8 + 12 * unit(rng_);  // Outlier.
  m->set_displacement_mm(Round(disp, 0.01));
  // Vibration grows with the square of the gust, more for old and tall buildings.
  m->set_vibration_mm_per_s2(
      Round(std::max(0.0, 2 + 0.1 * g2 * age_f * height_f + 0.3 * normal(rng_)), 0.1));
  if (s.hazard && gust > 25) s.fault = 1;  // Stiffness lost in the storm: stays lost.
  m->set_natural_frequency_hz(
      Round(std::max(0.05, s.base * (s.fault ? 0.92 : 1.0) + 0.005 * normal(rng_)), 0.001));
  m->set_wind_speed_m_per_s(Round(gust, 0.1));
  double outside = 26 + 6 * std::sin((h - 9) / 24 * 2 * kPi);
  if (options_.scenario == Scenario::kElevatorWave) outside += 10;
  if (options_.scenario == Scenario::kTyphoon) outside = 24 + normal(rng_);
  m->set_temperature_inside_c(Round(24 + normal(rng_), 0.1));
  m->set_temperature_outside_c(Round(outside, 0.1));
}

void Simulator::FillCatalogueKind(uint32_t i, int64_t t_ms, v1::SensorReading* out) {
  const catalogue::Kind* kind = city_.KindOf(i);
  const size_t k = static_cast<size_t>(kind->index);
  const KindModel& model = models_[k];
  out->set_kind_id(kind->id);
  std::vector<MetricOverride> overrides;
  if (!diurnal_[k].empty()) {
    const double h = Hour(t_ms);
    for (const Diurnal& d : diurnal_[k]) {
      const bool on = d.from_hour <= d.to_hour ? h >= d.from_hour && h < d.to_hour
                                               : h >= d.from_hour || h < d.to_hour;
      if (!on) continue;
      overrides.resize(kind->metrics.size());
      overrides[static_cast<size_t>(d.metric)].baseline = d.baseline;
      if (d.noise >= 0) overrides[static_cast<size_t>(d.metric)].noise = d.noise;
    }
  }
  if (auto it = episodes_.find(i); it != episodes_.end()) {
    const DeviceEpisode& de = it->second;
    if (t_ms >= de.t0_ms && t_ms <= de.end_ms) {
      const Episode& ep = Episodes()[de.episode];
      const double minute = static_cast<double>(t_ms - de.t0_ms) / 60'000;
      overrides.resize(kind->metrics.size());
      for (size_t c = 0; c < ep.curves.size(); ++c) {
        if (de.metrics[c] >= 0) {
          overrides[static_cast<size_t>(de.metrics[c])].value =
              CurveAt(ep.curves[c].points, minute);
        }
      }
      for (size_t f = 0; f < ep.flags.size(); ++f) {
        if (de.flags[f] >= 0) overrides[static_cast<size_t>(de.flags[f])].value = 0;
      }
    }
  }
  std::span<uint64_t> counters;
  if (auto it = counters_.find(i); it != counters_.end()) counters = it->second;
  v1::MetricValues* values = out->mutable_values();
  model.Fill(options_.seed ^ (static_cast<uint64_t>(i) << 24), catalogue_rng_, overrides, counters,
             values);
  // The episode's flags, from the values just reported.
  if (auto it = episodes_.find(i); it != episodes_.end()) {
    DeviceEpisode& de = it->second;
    if (t_ms < de.t0_ms || t_ms > de.end_ms) return;
    const Episode& ep = Episodes()[de.episode];
    for (size_t f = 0; f < ep.flags.size(); ++f) {
      for (const v1::MetricValue& v : values->values()) {
        const EpisodeFlag& flag = ep.flags[f];
        if (v.name() != flag.metric) continue;
        if (flag.at_most ? v.number() <= flag.level : v.number() >= flag.level) de.on[f] = true;
      }
    }
    for (v1::MetricValue& v : *values->mutable_values()) {
      for (size_t f = 0; f < ep.flags.size(); ++f) {
        if (v.name() == ep.flags[f].flag) v.set_flag(de.on[f]);
      }
    }
  }
}

void Simulator::FillFloodGauge(uint32_t i, int64_t t_ms, v1::SensorReading* out) {
  DeviceState& s = devices_[i];
  const Device& d = city_.devices[i];
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  const GridState& g = grids_[d.grid];
  const double days = static_cast<double>(t_ms) / 8.64e7;
  const double water = g.road_cm * s.depth;
  double depth = water + s.base + s.drift * days + 0.15 * normal(rng_);
  if (unit(rng_) < 0.01) depth += 5 + 20 * unit(rng_);  // About 1 reading in 100 false.
  if (s.is_stuck) depth = s.stuck;
  v1::FloodGaugeMetrics* m = out->mutable_flood_gauge();
  m->set_water_depth_cm(Round(std::clamp(depth, -1.0, 1000.0), 0.1));
  m->set_rainfall_mm_per_h(Round(std::max(0.0, g.rain * (1 + 0.05 * normal(rng_))), 0.1));
  m->set_battery_pct(Round(std::clamp(s.battery - 0.05 * days, 0.0, 100.0), 1));
}

bool Simulator::Emit(const Entry& e, v1::SensorReading* out) {
  std::uniform_real_distribution<double> unit(0, 1);
  const int64_t t_s = e.t_ms / 1000;
  uint32_t i = e.device;
  switch (e.type) {
    case kTick:
      Tick(e.t_ms);
      return false;
    case kSpikeGen: {
      std::exponential_distribution<double> next(spike_rate_per_ms_);
      Push(e.t_ms + 1 + static_cast<int64_t>(next(rng_)), 0, kSpikeGen);
      i = manholes_[static_cast<size_t>(unit(rng_) * static_cast<double>(manholes_.size()))];
      DeviceState& s = devices_[i];
      // Suburban covers see a quarter of the traffic.
      if (!city_.devices[i].flag && unit(rng_) >= 0.25) return false;
      if (s.lifted || s.spiking || Offline(i, t_s)) return false;
      s.spiking = true;
      s.last = static_cast<float>(s.base + 5.5 + 6.5 * unit(rng_));  // A truck's wheel.
      Push(e.t_ms + 300 + static_cast<int64_t>(1500 * unit(rng_)), i, kSpikeEnd);
      break;
    }
    case kSpikeEnd:
      devices_[i].spiking = false;
      if (Offline(i, t_s)) return false;
      break;
    case kCoverFaultGen: {
      std::exponential_distribution<double> next(cover_fault_rate_per_ms_);
      Push(e.t_ms + 1 + static_cast<int64_t>(next(rng_)), 0, kCoverFaultGen);
      i = manholes_[static_cast<size_t>(unit(rng_) * static_cast<double>(manholes_.size()))];
      DeviceState& s = devices_[i];
      if (s.lifted) return false;
      s.lifted = true;
      s.spiking = false;
      s.fault = 3;
      s.last = static_cast<float>(12 + 70 * unit(rng_));
      if (Offline(i, t_s)) return false;
      break;
    }
    case kAlarm:
      if (Offline(i, t_s)) return false;
      break;
    case kEpisodeReport:  // An episode's readings get through.
      break;
    case kReport: {
      const Device& d = city_.devices[i];
      DeviceState& s = devices_[i];
      int64_t next_ms = absl::ToInt64Milliseconds(city_.ReportingInterval(i));
      if (d.kind == v1::DEVICE_KIND_ELEVATOR) {
        if (s.fault != 0 && t_s >= s.fault_until) s.fault = 0;
        if (s.fault == 0 && !s.power_loss &&
            unit(rng_) < ElevatorFaultRatePerDay(i, e.t_ms) * 10 / 86'400) {
          int total = 0;
          for (const FaultWeight& f : kFaults) total += f.weight;
          int pick = static_cast<int>(unit(rng_) * total);
          s.fault = kFaults[0].code;
          for (const FaultWeight& f : kFaults) {
            if (pick < f.weight) {
              s.fault = f.code;
              break;
            }
            pick -= f.weight;
          }
          double minutes = 2 + 15 * unit(rng_);
          if (IsDoorFault(s.fault)) minutes = 3 + 25 * unit(rng_);
          if (s.fault == 7 || s.fault == 8) minutes = 10 + 15 * unit(rng_);
          s.fault_until = t_s + static_cast<int64_t>(minutes * 60);
        }
      } else if (d.kind == v1::DEVICE_KIND_CURTAIN_WALL && GustMPerS(d.grid) >= 17.2) {
        next_ms = 60'000;  // Vibration bursts in high wind.
      } else if (d.kind == v1::DEVICE_KIND_FLOOD_GAUGE) {
        const double water = grids_[d.grid].road_cm * s.depth;
        if (water > 2 && water > s.last + 0.3) next_ms = 60'000;  // Faster while rising.
        s.last = static_cast<float>(water);
      }
      Push(e.t_ms + next_ms, i, kReport);
      if (Offline(i, t_s)) return false;
      break;
    }
  }
  out->Clear();
  const Device& d = city_.devices[i];
  DeviceState& s = devices_[i];
  out->set_device_id(city_.DeviceIdOf(i));
  out->set_kind(d.kind);
  out->set_reading_id(absl::StrFormat("%08x-%d", run_tag_, s.counter++));
  kernel::SetTimestamp(options_.start + absl::Milliseconds(e.t_ms), out->mutable_event_time());
  switch (d.kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER:
      FillManhole(i, e.t_ms, out);
      break;
    case v1::DEVICE_KIND_ELEVATOR:
      FillElevator(i, e.t_ms, out);
      break;
    case v1::DEVICE_KIND_CURTAIN_WALL:
      FillCurtainWall(i, e.t_ms, out);
      break;
    case v1::DEVICE_KIND_FLOOD_GAUGE:
      FillFloodGauge(i, e.t_ms, out);
      break;
    default:
      if (city_.KindOf(i) == nullptr) return false;
      FillCatalogueKind(i, e.t_ms, out);
      break;
  }
  return true;
}

bool Simulator::Next(absl::Time until, v1::SensorReading* out) {
  const int64_t until_ms = absl::ToInt64Milliseconds(until - options_.start);
  while (!heap_.empty() && heap_.front().t_ms < until_ms) {
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
    const Entry e = heap_.back();
    heap_.pop_back();
    now_ = std::max(now_, options_.start + absl::Milliseconds(e.t_ms));
    if (Emit(e, out)) {
      ++readings_;
      return true;
    }
  }
  now_ = std::max(now_, until);
  return false;
}

void Simulator::Step(absl::Duration d, const std::function<void(const v1::SensorReading&)>& sink) {
  const absl::Time until = now_ + d;
  v1::SensorReading reading;
  while (Next(until, &reading)) sink(reading);
}

void Simulator::Step(absl::Duration d, std::vector<v1::SensorReading>* out) {
  const absl::Time until = now_ + d;
  v1::SensorReading reading;
  while (Next(until, &reading)) out->push_back(reading);
}

}  // namespace cityops::sim
