#include "sim/reading_generator.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "kernel/proto_time.h"

namespace cityops::sim {
namespace {

// GB/T 30428 manhole minor classes (see city.cc).
constexpr int kManholeMinors[] = {1, 2, 3, 4, 5, 7, 11};

// Rounded to the sensor's resolution, as devices report them.
double Round(double v, double step) { return std::round(v / step) * step; }

}  // namespace

std::string DeviceId(v1::DeviceKind kind, int minor_class, size_t serial) {
  int major = 1;
  switch (kind) {
    case v1::DEVICE_KIND_ELEVATOR:
      major = 90, minor_class = 1;
      break;
    case v1::DEVICE_KIND_CURTAIN_WALL:
      major = 90, minor_class = 2;
      break;
    case v1::DEVICE_KIND_FLOOD_GAUGE:
      major = 90, minor_class = 3;
      break;
    case v1::DEVICE_KIND_UNSPECIFIED:
      major = 93;
      break;
    default:
      break;
  }
  return absl::StrFormat("310104%02d%02d%06d", major, minor_class, serial % 1'000'000);
}

ReadingGenerator::ReadingGenerator(const FleetOptions& options)
    : options_(options), rng_(options.seed) {
  devices_.reserve(options.devices);
  std::uniform_int_distribution<int> percent(0, 99);
  std::normal_distribution<double> noise(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  // The catalogue-only kinds and their cumulative shares.
  std::vector<double> shares;
  if (options.catalogue_pct > 0) {
    kinds_ = options.kinds != nullptr ? options.kinds : catalogue::KindTable::BuiltIn();
    double total = 0;
    for (const catalogue::Kind& k : kinds_->kinds()) {
      if (k.typed != v1::DEVICE_KIND_UNSPECIFIED || k.spec == nullptr) continue;
      models_.emplace_back(k);
      total += std::max(0.0, k.spec->simulation().share());
      shares.push_back(total);
    }
    for (double& s : shares) s = total > 0 ? s / total : 1;
  }
  const int catalogue_pct = models_.empty() ? 0 : options.catalogue_pct;
  for (size_t i = 0; i < options.devices; ++i) {
    const int p = percent(rng_) - catalogue_pct;
    if (p < 0) {
      const double u = unit(rng_);
      size_t m = 0;
      while (m + 1 < shares.size() && u >= shares[m]) ++m;
      Device d{DeviceId(v1::DEVICE_KIND_UNSPECIFIED, static_cast<int>(m) + 1, i),
               v1::DEVICE_KIND_UNSPECIFIED,
               0,
               0,
               -1,
               {}};
      d.model = static_cast<int>(m);
      d.counters.assign(models_[m].kind().metrics.size(), 0);
      devices_.push_back(std::move(d));
      continue;
    }
    v1::DeviceKind kind = v1::DEVICE_KIND_MANHOLE_COVER;
    if (p < options.elevator_pct) {
      kind = v1::DEVICE_KIND_ELEVATOR;
    } else if (p < options.elevator_pct + options.curtain_wall_pct) {
      kind = v1::DEVICE_KIND_CURTAIN_WALL;
    } else if (p < options.elevator_pct + options.curtain_wall_pct + options.flood_gauge_pct) {
      kind = v1::DEVICE_KIND_FLOOD_GAUGE;
    }
    const int minor = kManholeMinors[i % std::size(kManholeMinors)];
    Device d{DeviceId(kind, minor, i), kind, 0, 0, -1, {}};
    switch (kind) {
      case v1::DEVICE_KIND_MANHOLE_COVER:
        d.baseline = std::abs(noise(rng_)) * 0.8;  // Installed tilt, degrees.
        break;
      case v1::DEVICE_KIND_CURTAIN_WALL:
        d.baseline = 0.9 + 0.4 * std::abs(noise(rng_));  // Natural frequency, Hz.
        break;
      case v1::DEVICE_KIND_FLOOD_GAUGE:
        d.baseline = std::abs(noise(rng_)) * 0.5;  // Sensor drift, cm.
        break;
      default:
        d.baseline = 15 + std::abs(noise(rng_)) * 10;  // Floors served.
    }
    devices_.push_back(std::move(d));
  }
}

void ReadingGenerator::Next(v1::SensorReading* out) {
  out->Clear();
  Device& d = devices_[next_device_];
  const absl::Time t = options_.start + options_.interval * static_cast<double>(round_) +
                       options_.interval * (static_cast<double>(next_device_) /
                                            static_cast<double>(devices_.size()));
  out->set_device_id(d.id);
  out->set_kind(d.kind);
  out->set_reading_id(absl::StrFormat("%d", d.readings++));
  kernel::SetTimestamp(t, out->mutable_event_time());
  std::normal_distribution<double> noise(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  const double hour = std::fmod(absl::ToDoubleHours(t - absl::UnixEpoch()) + 8, 24);  // UTC+8
  if (d.model >= 0) {
    const KindModel& model = models_[static_cast<size_t>(d.model)];
    out->set_kind_id(model.kind().id);
    model.Fill(options_.seed ^ (static_cast<uint64_t>(next_device_) << 24), rng_, {}, d.counters,
               out->mutable_values());
  }
  switch (d.kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER: {
      v1::ManholeCoverMetrics* m = out->mutable_manhole_cover();
      double tilt = d.baseline + 0.05 * noise(rng_);
      if (unit(rng_) < 0.002) tilt += 3 + 6 * unit(rng_);  // A passing truck's spike.
      m->set_tilt_deg(Round(std::max(0.0, tilt), 0.01));
      m->set_cover_open(false);
      m->set_well_water_level_m(Round(2.2 + 0.3 * noise(rng_), 0.01));
      m->set_battery_pct(Round(std::clamp(92 - 0.0001 * d.readings, 5.0, 100.0), 1));
      break;
    }
    case v1::DEVICE_KIND_ELEVATOR: {
      v1::ElevatorMetrics* m = out->mutable_elevator();
      const bool moving = unit(rng_) < 0.4;
      m->set_floor(1 + static_cast<int>(unit(rng_) * d.baseline));
      m->set_direction(moving ? (unit(rng_) < 0.5 ? v1::DIRECTION_UP : v1::DIRECTION_DOWN)
                              : v1::DIRECTION_STOPPED);
      m->set_speed_m_per_s(moving ? Round(1.4 + 0.05 * noise(rng_), 0.01) : 0.0);
      m->set_door_state(moving ? v1::DOOR_STATE_CLOSED : v1::DOOR_STATE_OPEN);
      m->set_passenger_present(unit(rng_) < (hour > 7 && hour < 22 ? 0.5 : 0.1));
      m->set_in_door_zone(!moving);
      m->set_mains_power(true);
      m->set_machine_room_temp_c(Round(28 + 3 * noise(rng_), 0.1));
      if (unit(rng_) < 0.0005) m->add_fault_codes(unit(rng_) < 0.8 ? 11 : 7);  // Doors first.
      break;
    }
    case v1::DEVICE_KIND_CURTAIN_WALL: {
      v1::CurtainWallMetrics* m = out->mutable_curtain_wall();
      const double thermal = 0.03 * std::sin((hour - 8) / 24 * 2 * M_PI);  // Daily cycle.
      const double wind = std::max(0.0, 4 + 2 * noise(rng_));
      m->set_inclination_deg(Round(thermal + 0.01 * noise(rng_), 0.001));
      m->set_displacement_mm(Round(0.5 * noise(rng_), 0.01));
      m->set_vibration_mm_per_s2(Round(2 + 0.1 * wind * wind, 0.1));
      m->set_natural_frequency_hz(Round(d.baseline + 0.005 * noise(rng_), 0.001));
      m->set_wind_speed_m_per_s(Round(wind, 0.1));
      m->set_temperature_inside_c(Round(24 + noise(rng_), 0.1));
      m->set_temperature_outside_c(Round(26 + 6 * std::sin((hour - 9) / 24 * 2 * M_PI), 0.1));
      break;
    }
    case v1::DEVICE_KIND_FLOOD_GAUGE: {
      v1::FloodGaugeMetrics* m = out->mutable_flood_gauge();
      double depth = d.baseline + 0.3 * noise(rng_);
      if (unit(rng_) < 0.01) depth += 5 + 20 * unit(rng_);  // About 1 reading in 100 false.
      m->set_water_depth_cm(Round(std::max(0.0, depth), 0.1));
      m->set_rainfall_mm_per_h(0.0);
      m->set_battery_pct(Round(std::clamp(88 - 0.0002 * d.readings, 5.0, 100.0), 1));
      break;
    }
    default:
      break;
  }
  if (++next_device_ == devices_.size()) {
    next_device_ = 0;
    ++round_;
  }
}

}  // namespace cityops::sim
