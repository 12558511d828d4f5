// A generated city: districts, streets and residential grids in the Beijing grid-cell
// code style (district 6 digits, street 9, grid 15; see proto/README.md, `GridRef`), and
// devices placed in the grids with coordinates and archive data. Seeded and deterministic:
// the same options give the same city.
//
// The devices: `devices` of the four typed kinds in the shares of the options (their
// generation does not depend on the catalogue), then, on top of them, devices of every
// catalogue-only kind of the catalogue in the catalogue's `simulation.share`: a kind of
// share s gets devices x s / (sum of the typed kinds' shares), so that of the whole city it
// has about its share.
//
// Devices are stored compactly (about 32 bytes each) so that a city of 500,000 devices
// takes a few seconds and a few tens of megabytes; `Registration(i)` builds the
// `cityops.v1.DeviceRegistered` of a device on demand.
#ifndef CITYOPS_SIM_CITY_H_
#define CITYOPS_SIM_CITY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "catalogue/kinds.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/reading.pb.h"

namespace cityops::sim {

struct CityOptions {
  uint64_t seed = 1;
  // At most 999,999: device serials are 6 digits (sim::DeviceId).
  size_t devices = 10'000;
  int districts = 16;             // 1..16, Shanghai's districts in code order.
  int streets_per_district = 14;  // 16 x 14 = 224, about Shanghai's streets and towns.
  int communities_per_street = 4;
  int cells_per_community = 3;
  // Shares of the four kinds, in percent; the rest are manhole covers.
  int elevator_pct = 30;
  int curtain_wall_pct = 5;
  int flood_gauge_pct = 10;
  int low_lying_pct = 15;  // Share of grids that are low-lying.
  int maintenance_contractors = 8;
  // The catalogue whose kinds the city has; null: catalogue::KindTable::BuiltIn().
  std::shared_ptr<const catalogue::KindTable> kinds;
  // Add the devices of the catalogue-only kinds on top of `devices`.
  bool catalogue_kinds = true;
};

struct District {
  std::string code;  // 6 digits, e.g. "310104".
  std::string name;  // e.g. "Xuhui".
  bool urban = false;
};

struct Street {
  uint32_t district = 0;  // Index into City::districts.
  std::string code;       // 9 digits.
  std::string name;
};

struct Grid {
  uint32_t street = 0;  // Index into City::streets.
  std::string code;     // 15 digits.
  double latitude_deg = 0;
  double longitude_deg = 0;
  float elevation_m = 0;
  bool low_lying = false;
};

inline constexpr uint8_t kNoKind = 255;

// One device, compactly. Kind-specific fields are documented per kind.
struct Device {
  uint32_t grid = 0;  // Index into City::grids.
  float latitude_deg = 0;
  float longitude_deg = 0;
  float value = 0;      // Elevator: rated speed m/s. Curtain wall: height m.
  uint16_t year = 0;    // Elevator: installed. Curtain wall: built.
  uint16_t floors = 0;  // Elevator and curtain wall.
  v1::DeviceKind kind = v1::DEVICE_KIND_UNSPECIFIED;  // UNSPECIFIED: a catalogue-only kind.
  uint8_t kind_index = kNoKind;  // Into City::kinds->kinds(); kNoKind when not in it.
  uint8_t minor_class = 0;  // Catalogue-only kinds: device class 93xx (sim::DeviceId).  // Manhole
                            // covers: GB/T 30428 minor class (1 = 0101 ...).
  uint8_t contractor = 0;   // Elevators: maintenance contractor index.
  // Manhole: urban road. Curtain wall: crowded public place. Flood gauge: underpass.
  bool flag = false;
};

struct City {
  CityOptions options;
  std::shared_ptr<const catalogue::KindTable> kinds;  // Never null.
  std::vector<District> districts;
  std::vector<Street> streets;
  std::vector<Grid> grids;
  std::vector<Device> devices;
  // Devices of each grid: devices_in_grid[grid_start[g] .. grid_start[g + 1]).
  std::vector<uint32_t> grid_start;
  std::vector<uint32_t> devices_in_grid;

  // sim::DeviceId(kind, minor, i).
  std::string DeviceIdOf(size_t i) const;
  // The catalogue's kind of device i; null for a typed kind the catalogue lacks.
  const catalogue::Kind* KindOf(size_t i) const {
    const uint8_t k = devices[i].kind_index;
    return k == kNoKind ? nullptr : &kinds->kinds()[k];
  }
  // The heartbeat of device i: its catalogue kind's reporting interval (for a typed kind
  // the catalogue lacks, the built-in catalogue's).
  absl::Duration ReportingInterval(size_t i) const;
  // The registration of device i: grid, location, name, reporting interval, archive.
  v1::DeviceRegistered Registration(size_t i) const;
  const Grid& GridOf(size_t i) const { return grids[devices[i].grid]; }
};

// Pipe owner of a manhole minor class ("drainage", "power", "telecom", "gas", "water",
// "unknown").
const char* ManholeOwner(int minor_class);

// Seeded and deterministic. Clamps `devices` to 999,999 and the district count to 1..16.
City GenerateCity(const CityOptions& options);

}  // namespace cityops::sim

#endif  // CITYOPS_SIM_CITY_H_
