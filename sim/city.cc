#include "sim/city.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "sim/kind_model.h"
#include "sim/reading_generator.h"

namespace cityops::sim {
namespace {

struct DistrictSeed {
  const char* code;
  const char* name;
  bool urban;
  double lat;
  double lon;
};

// Shanghai's 16 districts with rough centres, clamped later to the simulated box.
constexpr DistrictSeed kDistricts[] = {
    {"310101", "Huangpu", true, 31.23, 121.48},    {"310104", "Xuhui", true, 31.18, 121.44},
    {"310105", "Changning", true, 31.21, 121.40},  {"310106", "Jing'an", true, 31.25, 121.45},
    {"310107", "Putuo", true, 31.26, 121.39},      {"310109", "Hongkou", true, 31.27, 121.49},
    {"310110", "Yangpu", true, 31.29, 121.52},     {"310112", "Minhang", false, 31.11, 121.38},
    {"310113", "Baoshan", false, 31.37, 121.45},   {"310114", "Jiading", false, 31.36, 121.26},
    {"310115", "Pudong", false, 31.20, 121.58},    {"310116", "Jinshan", false, 31.05, 121.30},
    {"310117", "Songjiang", false, 31.04, 121.23}, {"310118", "Qingpu", false, 31.15, 121.22},
    {"310120", "Fengxian", false, 31.02, 121.50},  {"310151", "Chongming", false, 31.38, 121.66},
};

// Manhole minor classes of GB/T 30428 (01 water supply, 02 sewage, 03 storm drain,
// 04 storm grate, 05 power, 06 street light, 07 telecom, 11 gas, 14 owner unknown),
// weighted toward drainage (storm drains and grates).
constexpr uint8_t kManholeMinors[] = {1, 2, 3, 3, 4, 4, 5, 6, 7, 11, 14};

double ClampLat(double v) { return std::clamp(v, 31.0, 31.4); }
double ClampLon(double v) { return std::clamp(v, 121.2, 121.7); }

// Devices of the catalogue-only kinds, after the typed ones, in the catalogue's shares
// (see city.h), from their own generator so that the typed devices do not change.
void AddCatalogueDevices(City* city) {
  const std::vector<catalogue::Kind>& kinds = city->kinds->kinds();
  double typed_share = 0;
  for (const catalogue::Kind& k : kinds) {
    if (k.typed != v1::DEVICE_KIND_UNSPECIFIED && k.spec != nullptr) {
      typed_share += k.spec->simulation().share();
    }
  }
  if (typed_share <= 0) typed_share = 1;
  const double typed = static_cast<double>(city->devices.size());
  std::mt19937_64 rng(city->options.seed ^ 0x5eed'ca7a'1095'0002ULL);
  std::normal_distribution<double> normal(0, 1);
  const uint32_t grids = static_cast<uint32_t>(city->grids.size());
  std::uniform_int_distribution<uint32_t> pick_grid(0, grids - 1);
  int minor = 0;  // Device class 93xx.
  for (const catalogue::Kind& k : kinds) {
    if (k.typed != v1::DEVICE_KIND_UNSPECIFIED || k.spec == nullptr) continue;
    ++minor;
    if (k.index >= kNoKind || minor > 99) continue;
    const double share = std::max(0.0, k.spec->simulation().share());
    size_t count = static_cast<size_t>(std::llround(typed * share / typed_share));
    count = std::min(count, 999'999 - std::min<size_t>(999'999, city->devices.size()));
    for (size_t j = 0; j < count; ++j) {
      Device& d = city->devices.emplace_back();
      d.grid = pick_grid(rng);
      const Grid& g = city->grids[d.grid];
      d.latitude_deg = static_cast<float>(ClampLat(g.latitude_deg + 0.002 * normal(rng)));
      d.longitude_deg = static_cast<float>(ClampLon(g.longitude_deg + 0.002 * normal(rng)));
      d.kind = v1::DEVICE_KIND_UNSPECIFIED;
      d.kind_index = static_cast<uint8_t>(k.index);
      d.minor_class = static_cast<uint8_t>(minor);
    }
  }
}

}  // namespace

const char* ManholeOwner(int minor_class) {
  switch (minor_class) {
    case 1:
      return "water";
    case 2:
    case 3:
    case 4:
      return "drainage";
    case 5:
    case 6:
      return "power";
    case 7:
      return "telecom";
    case 11:
      return "gas";
    default:
      return "unknown";
  }
}

std::string City::DeviceIdOf(size_t i) const {
  return DeviceId(devices[i].kind, devices[i].minor_class, i);
}

v1::DeviceRegistered City::Registration(size_t i) const {
  const Device& d = devices[i];
  const Grid& g = grids[d.grid];
  const Street& s = streets[g.street];
  const District& dist = districts[s.district];
  v1::DeviceRegistered r;
  r.set_device_id(DeviceIdOf(i));
  r.set_kind(d.kind);
  r.mutable_grid()->set_district_code(dist.code);
  r.mutable_grid()->set_street_code(s.code);
  r.mutable_grid()->set_grid_code(g.code);
  r.mutable_location()->set_latitude_deg(std::round(d.latitude_deg * 1e6) / 1e6);
  r.mutable_location()->set_longitude_deg(std::round(d.longitude_deg * 1e6) / 1e6);
  r.mutable_reporting_interval()->set_seconds(absl::ToInt64Seconds(ReportingInterval(i)));
  // Typed kinds register as they always have (by `kind`); catalogue-only ones by kind_id.
  const catalogue::Kind* kind = KindOf(i);
  if (d.kind == v1::DEVICE_KIND_UNSPECIFIED && kind != nullptr) r.set_kind_id(kind->id);
  std::string kind_name = "device";
  switch (d.kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER: {
      kind_name = "manhole cover";
      v1::ManholeCoverArchive* a = r.mutable_manhole_cover();
      a->set_owner(ManholeOwner(d.minor_class));
      a->set_component_minor_class(absl::StrFormat("01%02d", d.minor_class));
      a->set_urban(d.flag);
      break;
    }
    case v1::DEVICE_KIND_ELEVATOR: {
      kind_name = "elevator";
      v1::ElevatorArchive* a = r.mutable_elevator();
      a->set_installed_year(d.year);
      a->set_rated_speed_m_per_s(d.value);
      a->set_floors(d.floors);
      a->set_maintenance_contractor(absl::StrFormat("contractor-%02d", d.contractor + 1));
      break;
    }
    case v1::DEVICE_KIND_CURTAIN_WALL: {
      kind_name = "curtain wall";
      v1::CurtainWallArchive* a = r.mutable_curtain_wall();
      a->set_built_year(d.year);
      a->set_height_m(std::round(d.value * 10) / 10);
      a->set_floors(d.floors);
      a->set_crowded_public_place(d.flag);
      break;
    }
    case v1::DEVICE_KIND_FLOOD_GAUGE: {
      kind_name = d.flag ? "underpass flood gauge" : "road flood gauge";
      v1::FloodGaugeArchive* a = r.mutable_flood_gauge();
      a->set_underpass(d.flag);
      a->set_low_lying(g.low_lying);
      break;
    }
    default:
      if (kind != nullptr) {
        if (kind->spec != nullptr) kind_name = absl::AsciiStrToLower(kind->spec->name().en());
        *r.mutable_archive_values() =
            ArchiveOf(*kind, options.seed ^ (static_cast<uint64_t>(i) << 20), s.name);
      }
      break;
  }
  r.set_name(absl::StrFormat("%s %d, %s, %s", kind_name, i, s.name, dist.name));
  return r;
}

absl::Duration City::ReportingInterval(size_t i) const {
  if (const catalogue::Kind* kind = KindOf(i)) return kind->reporting_interval;
  const catalogue::Kind* built_in = catalogue::KindTable::BuiltIn()->FindTyped(devices[i].kind);
  return built_in != nullptr ? built_in->reporting_interval : absl::Hours(1);
}

City GenerateCity(const CityOptions& options) {
  City city;
  city.options = options;
  city.kinds = options.kinds != nullptr ? options.kinds : catalogue::KindTable::BuiltIn();
  city.options.kinds = city.kinds;
  city.options.devices = std::min<size_t>(options.devices, 999'999);
  city.options.districts = std::clamp(options.districts, 1, 16);
  const CityOptions& o = city.options;
  std::mt19937_64 rng(options.seed ^ 0x5eed'c17f'0000'0001ULL);
  std::uniform_real_distribution<double> unit(0, 1);
  std::normal_distribution<double> normal(0, 1);

  const int streets = std::max(1, o.streets_per_district);
  const int communities = std::max(1, o.communities_per_street);
  const int cells = std::max(1, o.cells_per_community);
  for (int di = 0; di < o.districts; ++di) {
    const DistrictSeed& ds = kDistricts[di];
    city.districts.push_back({ds.code, ds.name, ds.urban});
    const double spread = ds.urban ? 0.025 : 0.05;
    for (int si = 0; si < streets; ++si) {
      Street s;
      s.district = static_cast<uint32_t>(di);
      s.code = absl::StrFormat("%s%03d", ds.code, si + 1);
      s.name = absl::StrFormat("%s street %d", ds.name, si + 1);
      const uint32_t street_index = static_cast<uint32_t>(city.streets.size());
      city.streets.push_back(std::move(s));
      const double slat = ClampLat(ds.lat + spread * normal(rng));
      const double slon = ClampLon(ds.lon + spread * normal(rng));
      for (int c = 0; c < communities; ++c) {
        for (int k = 0; k < cells; ++k) {
          Grid g;
          g.street = street_index;
          g.code = absl::StrFormat("%s%03d%03d", city.streets[street_index].code, c + 1, k + 1);
          g.latitude_deg = ClampLat(slat + 0.006 * normal(rng));
          g.longitude_deg = ClampLon(slon + 0.006 * normal(rng));
          g.low_lying = unit(rng) * 100 < o.low_lying_pct;
          g.elevation_m =
              static_cast<float>(g.low_lying ? 1.0 + 1.4 * unit(rng) : 2.6 + 3.5 * unit(rng));
          city.grids.push_back(std::move(g));
        }
      }
    }
  }

  const size_t n = o.devices;
  city.devices.resize(n);
  const uint32_t grids = static_cast<uint32_t>(city.grids.size());
  std::uniform_int_distribution<uint32_t> pick_grid(0, grids - 1);
  for (size_t i = 0; i < n; ++i) {
    Device& d = city.devices[i];
    d.grid = pick_grid(rng);
    const Grid& g = city.grids[d.grid];
    d.latitude_deg = static_cast<float>(ClampLat(g.latitude_deg + 0.002 * normal(rng)));
    d.longitude_deg = static_cast<float>(ClampLon(g.longitude_deg + 0.002 * normal(rng)));
    const double p = unit(rng) * 100;
    if (p < o.elevator_pct) {
      d.kind = v1::DEVICE_KIND_ELEVATOR;
      // More elevators from the 2000s and 2010s building boom than from the 1990s.
      d.year = static_cast<uint16_t>(1995 + std::min(29.0, 29 * std::sqrt(unit(rng))));
      constexpr float kSpeeds[] = {1.0f, 1.5f, 1.6f, 1.75f, 2.0f, 2.5f};
      d.value = kSpeeds[static_cast<size_t>(unit(rng) * std::size(kSpeeds))];
      d.floors = static_cast<uint16_t>(6 + unit(rng) * (d.value >= 2.0f ? 34 : 18));
      d.contractor =
          static_cast<uint8_t>(unit(rng) * std::clamp(o.maintenance_contractors, 1, 255));
    } else if (p < o.elevator_pct + o.curtain_wall_pct) {
      d.kind = v1::DEVICE_KIND_CURTAIN_WALL;
      d.year = static_cast<uint16_t>(1985 + unit(rng) * 40);
      d.value = static_cast<float>(std::min(300.0, 30 + 45 * -std::log(1 - unit(rng) * 0.99)));
      d.floors = static_cast<uint16_t>(std::max(8.0, d.value / 3.6));
      d.flag = unit(rng) < 0.2;
    } else if (p < o.elevator_pct + o.curtain_wall_pct + o.flood_gauge_pct) {
      d.kind = v1::DEVICE_KIND_FLOOD_GAUGE;
      d.flag = unit(rng) < 0.25;
    } else {
      d.kind = v1::DEVICE_KIND_MANHOLE_COVER;
      d.minor_class = kManholeMinors[static_cast<size_t>(unit(rng) * std::size(kManholeMinors))];
      d.flag = city.districts[city.streets[g.street].district].urban;
    }
    const catalogue::Kind* kind = city.kinds->FindTyped(d.kind);
    if (kind != nullptr && kind->index < kNoKind) d.kind_index = static_cast<uint8_t>(kind->index);
  }
  if (o.catalogue_kinds) AddCatalogueDevices(&city);
  const size_t total = city.devices.size();

  // Index devices by grid (counting sort, stable by device index).
  city.grid_start.assign(grids + 1, 0);
  for (const Device& d : city.devices) ++city.grid_start[d.grid + 1];
  for (uint32_t g = 0; g < grids; ++g) city.grid_start[g + 1] += city.grid_start[g];
  city.devices_in_grid.resize(total);
  std::vector<uint32_t> fill(city.grid_start.begin(), city.grid_start.end() - 1);
  for (size_t i = 0; i < total; ++i) {
    city.devices_in_grid[fill[city.devices[i].grid]++] = static_cast<uint32_t>(i);
  }
  return city;
}

}  // namespace cityops::sim
