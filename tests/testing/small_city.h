// A small simulated city for tests that play a scenario through real parts: one district
// of three streets, eighteen grid cells, enough flood gauges and low-lying grids for a
// typhoon to open cases within minutes. Header-only.
#ifndef CITYOPS_TESTS_TESTING_SMALL_CITY_H_
#define CITYOPS_TESTS_TESTING_SMALL_CITY_H_

#include <cstddef>
#include <cstdint>

#include "sim/city.h"

namespace cityops::testing {

inline sim::CityOptions SmallCity(uint64_t seed, size_t devices) {
  sim::CityOptions city;
  city.seed = seed;
  city.devices = devices;
  city.districts = 1;
  city.streets_per_district = 3;
  city.communities_per_street = 2;
  city.cells_per_community = 3;
  city.elevator_pct = 4;
  city.curtain_wall_pct = 15;
  city.flood_gauge_pct = 30;
  city.low_lying_pct = 30;
  return city;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_SMALL_CITY_H_
