// The city simulator: deterministic by seed, valid by ingest's rules, and the scenario
// invariants it is built to reproduce (a typhoon fills wells before roads flood and
// recede, traffic spikes on covers stay short, older elevators fail more often, ...).
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/civil_time.h"
#include "catalogue/kinds.h"
#include "google/protobuf/util/json_util.h"
#include "ingest/device_import.h"
#include "ingest/embedded_kafka.h"
#include "ingest/record_decoder.h"
#include "sim/city.h"
#include "sim/publisher.h"
#include "sim/simulator.h"
#include "tests/testing/temp_dir.h"

namespace cityops::sim {
namespace {

absl::Time TimeOf(const v1::SensorReading& r) {
  return absl::FromUnixSeconds(r.event_time().seconds()) +
         absl::Nanoseconds(r.event_time().nanos());
}

std::vector<v1::SensorReading> Run(const City& city, Scenario scenario, uint64_t seed,
                                   absl::Duration d,
                                   absl::Time start = absl::FromUnixSeconds(1'790'000'000)) {
  SimulatorOptions options;
  options.scenario = scenario;
  options.seed = seed;
  options.start = start;
  Simulator sim(city, options);
  std::vector<v1::SensorReading> out;
  sim.Step(d, &out);
  return out;
}

// The readings of a JSON-lines file, each line parsed by the protobuf JSON mapping.
std::vector<v1::SensorReading> ReadJsonLines(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  std::vector<v1::SensorReading> out;
  std::string line;
  while (std::getline(in, line)) {
    REQUIRE(google::protobuf::util::JsonStringToMessage(line, &out.emplace_back()).ok());
  }
  return out;
}

std::unordered_map<std::string, uint32_t> IndexById(const City& city) {
  std::unordered_map<std::string, uint32_t> index;
  for (size_t i = 0; i < city.devices.size(); ++i) {
    index[city.DeviceIdOf(i)] = static_cast<uint32_t>(i);
  }
  return index;
}

// The kind id of a reading or registration: kind_id, else the typed kind's.
template <typename T>
std::string KindIdOf(const T& m) {
  return m.kind_id().empty() ? catalogue::TypedKindId(m.kind()) : m.kind_id();
}

// A catalogue-only kind's registration against its kind: kind_id, interval, and every
// archive field once, of its type and within its bounds.
void CheckCatalogueRegistration(const catalogue::KindTable& kinds, const v1::DeviceRegistered& r) {
  INFO(r.ShortDebugString());
  REQUIRE(r.kind() == v1::DEVICE_KIND_UNSPECIFIED);
  const catalogue::Kind* kind = kinds.Find(r.kind_id());
  REQUIRE(kind != nullptr);
  REQUIRE(kind->typed == v1::DEVICE_KIND_UNSPECIFIED);
  CHECK(r.reporting_interval().seconds() == absl::ToInt64Seconds(kind->reporting_interval));
  CHECK(r.grid().grid_code().size() == 15);
  CHECK(!r.name().empty());
  REQUIRE(r.has_archive_values());
  REQUIRE(r.archive_values().fields_size() == kind->spec->archive_size());
  for (int f = 0; f < kind->spec->archive_size(); ++f) {
    const v1::ArchiveFieldSpec& spec = kind->spec->archive(f);
    const v1::ArchiveValue& v = r.archive_values().fields(f);
    CHECK(v.name() == spec.name());
    CHECK(!v.value().empty());
    switch (spec.type()) {
      case v1::ARCHIVE_FIELD_TYPE_NUMBER:
      case v1::ARCHIVE_FIELD_TYPE_YEAR: {
        double x = 0;
        REQUIRE(absl::SimpleAtod(v.value(), &x));
        if (spec.has_min()) CHECK(x >= spec.min());
        if (spec.has_max()) CHECK(x <= spec.max());
        if (spec.type() == v1::ARCHIVE_FIELD_TYPE_YEAR) CHECK((x >= 1990 && x <= 2026));
        break;
      }
      case v1::ARCHIVE_FIELD_TYPE_FLAG:
        CHECK((v.value() == "true" || v.value() == "false"));
        break;
      case v1::ARCHIVE_FIELD_TYPE_DATE: {
        absl::CivilDay day;
        CHECK(absl::ParseCivilTime(v.value(), &day));
        break;
      }
      default:
        break;
    }
  }
}

// A values reading against its kind: every metric a metric of the kind, at most once,
// of its type and within its bounds.
void CheckValuesReading(const catalogue::KindTable& kinds, const v1::SensorReading& r) {
  INFO(r.ShortDebugString());
  REQUIRE(r.kind() == v1::DEVICE_KIND_UNSPECIFIED);
  REQUIRE(r.has_values());
  const catalogue::Kind* kind = kinds.KindOf(r);
  REQUIRE(kind != nullptr);
  REQUIRE(r.values().values_size() > 0);
  std::set<std::string> seen;
  for (const v1::MetricValue& v : r.values().values()) {
    const catalogue::KindMetric* metric = kind->Metric(v.name());
    REQUIRE(metric != nullptr);
    REQUIRE(seen.insert(v.name()).second);
    const absl::StatusOr<double> x = catalogue::MetricValueNumber(*metric, v);
    INFO(x.status());
    REQUIRE(x.ok());
  }
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

TEST_CASE("the same seed gives the same city and readings, another seed other ones", "[sim]") {
  CityOptions options;
  options.devices = 3000;
  const City a = GenerateCity(options);
  const City b = GenerateCity(options);
  options.seed = 2;
  const City c = GenerateCity(options);
  // 3000 of the typed kinds, the catalogue-only kinds on top.
  REQUIRE(a.devices.size() > 3000);
  CHECK(std::count_if(a.devices.begin(), a.devices.end(), [](const Device& d) {
          return d.kind != v1::DEVICE_KIND_UNSPECIFIED;
        }) == 3000);
  int differ = 0;
  for (size_t i = 0; i < a.devices.size(); ++i) {
    REQUIRE(a.Registration(i).SerializeAsString() == b.Registration(i).SerializeAsString());
    differ += a.Registration(i).SerializeAsString() != c.Registration(i).SerializeAsString();
  }
  CHECK(differ > 2500);
  REQUIRE(a.grids.size() == c.grids.size());
  for (Scenario scenario : {Scenario::kNormalDay, Scenario::kTyphoon, Scenario::kElevatorWave}) {
    const auto ra = Run(a, scenario, 7, absl::Minutes(20));
    const auto rb = Run(b, scenario, 7, absl::Minutes(20));
    const auto rc = Run(a, scenario, 8, absl::Minutes(20));
    REQUIRE(ra.size() == rb.size());
    REQUIRE(ra.size() > 1000);
    CHECK(std::count_if(ra.begin(), ra.end(),
                        [](const v1::SensorReading& r) { return r.has_values(); }) > 100);
    for (size_t i = 0; i < ra.size(); ++i) {
      REQUIRE(ra[i].SerializeAsString() == rb[i].SerializeAsString());
    }
    size_t same = 0;
    for (size_t i = 0; i < std::min(ra.size(), rc.size()); ++i) {
      same += ra[i].SerializeAsString() == rc[i].SerializeAsString();
    }
    CHECK(same < ra.size() / 10);
  }
}

TEST_CASE("a city of 500,000 devices generates in seconds", "[sim]") {
  CityOptions options;
  options.devices = 500'000;
  const auto t0 = std::chrono::steady_clock::now();
  const City city = GenerateCity(options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(seconds < 5);
  REQUIRE(city.devices.size() > 500'000);  // The catalogue-only kinds on top.
  REQUIRE(city.devices[499'999].kind != v1::DEVICE_KIND_UNSPECIFIED);
  REQUIRE(city.devices[500'000].kind == v1::DEVICE_KIND_UNSPECIFIED);
  CHECK(city.districts.size() == 16);
  CHECK(city.streets.size() == 224);
  CHECK(city.grids.size() == 224 * 12);
  for (const Grid& g : city.grids) {
    REQUIRE(g.code.size() == 15);
    REQUIRE(g.code.substr(0, 9) == city.streets[g.street].code);
    REQUIRE(g.latitude_deg >= 31.0);
    REQUIRE(g.latitude_deg <= 31.4);
    REQUIRE(g.longitude_deg >= 121.2);
    REQUIRE(g.longitude_deg <= 121.7);
  }
  std::set<std::string> ids;
  for (size_t i = 0; i < city.devices.size(); i += 7) ids.insert(city.DeviceIdOf(i));
  CHECK(ids.size() == (city.devices.size() + 6) / 7);
  CHECK(city.devices.capacity() * sizeof(Device) < 40'000'000);
  // The simulator over it starts and runs a simulated minute.
  Simulator sim(city, SimulatorOptions{});
  uint64_t n = 0;
  sim.Step(absl::Seconds(20), [&](const v1::SensorReading&) { ++n; });
  CHECK(n > 150'000 * 2 * 0.9);  // Elevators every 10 s.
}

TEST_CASE("the city has devices of every catalogue kind in about its share", "[sim]") {
  CityOptions options;
  options.devices = 20'000;
  const City city = GenerateCity(options);
  std::map<std::string, double> count;
  for (size_t i = 0; i < city.devices.size(); ++i) {
    const catalogue::Kind* kind = city.KindOf(i);
    REQUIRE(kind != nullptr);
    ++count[kind->id];
  }
  const catalogue::KindTable& kinds = *catalogue::KindTable::BuiltIn();
  REQUIRE(kinds.kinds().size() == 10);
  CHECK(count.size() == 10);
  const double total = static_cast<double>(city.devices.size());
  for (const catalogue::Kind& kind : kinds.kinds()) {
    const double share = kind.spec->simulation().share();
    INFO(kind.id << ": " << count[kind.id] << " of " << total << ", share " << share);
    // The typed kinds keep the city options' shares, close to the catalogue's.
    const double tolerance = kind.typed == v1::DEVICE_KIND_UNSPECIFIED ? 0.05 : 0.2;
    CHECK(std::abs(count[kind.id] / total - share) <= tolerance * share);
  }
  // Without them, the typed devices alone, the same ones.
  options.catalogue_kinds = false;
  const City typed = GenerateCity(options);
  REQUIRE(typed.devices.size() == 20'000);
  for (size_t i = 0; i < typed.devices.size(); i += 97) {
    REQUIRE(typed.Registration(i).SerializeAsString() == city.Registration(i).SerializeAsString());
  }
}

TEST_CASE("adding the catalogue-only kinds changes no typed reading", "[sim]") {
  CityOptions options;
  options.devices = 1500;
  const City with = GenerateCity(options);
  options.catalogue_kinds = false;
  const City without = GenerateCity(options);
  for (Scenario scenario : {Scenario::kNormalDay, Scenario::kTyphoon, Scenario::kElevatorWave}) {
    std::vector<v1::SensorReading> typed;
    for (const v1::SensorReading& r : Run(with, scenario, 5, absl::Hours(2))) {
      if (!r.has_values()) typed.push_back(r);
    }
    const auto expected = Run(without, scenario, 5, absl::Hours(2));
    REQUIRE(typed.size() == expected.size());
    for (size_t k = 0; k < typed.size(); ++k) {
      REQUIRE(typed[k].SerializeAsString() == expected[k].SerializeAsString());
    }
  }
}

TEST_CASE("every reading and registration passes ingest validation", "[sim]") {
  // Typed kinds through ingest's decoder; catalogue-only kinds against the catalogue
  // (names, types, bounds, archive fields).
  CityOptions options;
  options.devices = 2000;
  options.elevator_pct = 10;
  const City city = GenerateCity(options);
  const catalogue::KindTable& kinds = *city.kinds;
  v1::DeviceRegistered device;
  for (size_t i = 0; i < city.devices.size(); ++i) {
    const v1::DeviceRegistered r = city.Registration(i);
    if (r.kind() == v1::DEVICE_KIND_UNSPECIFIED) {
      CheckCatalogueRegistration(kinds, r);
      continue;
    }
    const std::string bytes = r.SerializeAsString();
    ingest::KafkaRecord record;
    record.key = r.device_id();
    record.value = bytes;
    const auto why = ingest::DecodeDevice(record, ingest::ValidationPolicy(), &device);
    INFO(r.ShortDebugString() << " -> " << (why ? why->message : ""));
    REQUIRE_FALSE(why.has_value());
  }
  for (Scenario scenario : {Scenario::kNormalDay, Scenario::kTyphoon, Scenario::kElevatorWave}) {
    std::map<std::string, int> by_kind;
    std::map<std::pair<std::string, std::string>, uint64_t> counts;  // Device, metric.
    v1::SensorReading decoded;
    absl::Time last = absl::InfinitePast();
    for (const v1::SensorReading& reading :
         Run(city, scenario, 3, absl::Hours(scenario == Scenario::kTyphoon ? 4 : 3))) {
      ++by_kind[KindIdOf(reading)];
      REQUIRE(TimeOf(reading) >= last);  // Event-time order.
      last = TimeOf(reading);
      if (reading.has_values()) {
        CheckValuesReading(kinds, reading);
        for (const v1::MetricValue& v : reading.values().values()) {
          if (v.value_case() != v1::MetricValue::kCount) continue;
          uint64_t& previous = counts[{reading.device_id(), v.name()}];
          REQUIRE(v.count() >= previous);  // Counters only grow.
          previous = v.count();
        }
        continue;
      }
      const std::string bytes = reading.SerializeAsString();
      ingest::KafkaRecord record;
      record.key = reading.device_id();
      record.value = bytes;
      const auto why =
          ingest::DecodeReading(record, ingest::ValidationPolicy(), TimeOf(reading), &decoded);
      INFO(reading.ShortDebugString() << " -> " << (why ? why->message : ""));
      REQUIRE_FALSE(why.has_value());
    }
    CHECK(by_kind.size() == 10);
  }
}

TEST_CASE("typhoon: rain past capacity fills wells, then roads flood and recede", "[sim]") {
  CityOptions options;
  options.devices = 20'000;
  options.elevator_pct = 0;
  options.curtain_wall_pct = 5;
  options.flood_gauge_pct = 20;
  const City city = GenerateCity(options);
  SimulatorOptions so;
  so.scenario = Scenario::kTyphoon;
  so.seed = 11;
  Simulator sim(city, so);
  const auto index = IndexById(city);
  // The minute each grid's rain first crosses its drainage capacity.
  std::vector<double> crossed(city.grids.size(), -1);
  std::vector<v1::SensorReading> readings;
  for (int minute = 0; minute < 7 * 60; ++minute) {
    sim.Step(absl::Minutes(1), &readings);
    for (uint32_t g = 0; g < city.grids.size(); ++g) {
      if (crossed[g] < 0 && sim.RainfallMmPerH(g) > sim.DrainageCapacityMmPerH(g)) {
        crossed[g] = minute;
      }
    }
  }
  // Per gauge: depth readings over time. Per grid: first time a well overflows.
  std::map<uint32_t, std::vector<std::pair<double, double>>> gauges;  // minute, depth
  std::map<uint32_t, double> well_full;                               // grid -> minute
  std::set<uint32_t> lifted;
  double underpass_max = 0;
  int gauges_reporting_low = 0;
  for (const v1::SensorReading& r : readings) {
    const uint32_t i = index.at(r.device_id());
    const Device& d = city.devices[i];
    const double minute = absl::ToDoubleMinutes(TimeOf(r) - so.start);
    if (r.has_flood_gauge()) {
      gauges[i].emplace_back(minute, r.flood_gauge().water_depth_cm());
      if (d.flag) underpass_max = std::max(underpass_max, r.flood_gauge().water_depth_cm());
    } else if (r.has_manhole_cover()) {
      if (r.manhole_cover().well_water_level_m() < 0 && !well_full.contains(d.grid)) {
        well_full[d.grid] = minute;
      }
      if (r.manhole_cover().cover_open() && minute > 60) lifted.insert(i);
    }
  }
  std::vector<double> at_start, after_40;
  int before = 0, compared = 0;
  for (auto& [i, series] : gauges) {
    const Device& d = city.devices[i];
    if (!city.grids[d.grid].low_lying || crossed[d.grid] < 0) continue;
    ++gauges_reporting_low;
    at_start.push_back(series.front().second);
    for (const auto& [minute, depth] : series) {
      if (minute >= crossed[d.grid] + 40) {
        after_40.push_back(depth);
        break;
      }
    }
    // The peak of the 3-reading rolling median (ignores single false readings).
    double peak = -1, peak_minute = 0;
    for (size_t k = 1; k + 1 < series.size(); ++k) {
      double w[3] = {series[k - 1].second, series[k].second, series[k + 1].second};
      std::sort(w, w + 3);
      if (w[1] > peak) peak = w[1], peak_minute = series[k].first;
    }
    if (well_full.contains(d.grid) && peak > 5) {
      ++compared;
      before += well_full[d.grid] < peak_minute;
    }
  }
  INFO("start " << Median(at_start) << " cm, 40 min after crossing " << Median(after_40)
                << " cm, underpass max " << underpass_max << ", wells first " << before << "/"
                << compared);
  REQUIRE(gauges_reporting_low > 50);
  CHECK(Median(after_40) > Median(at_start) + 2);
  CHECK(underpass_max >= 25);
  REQUIRE(compared > 20);
  CHECK(before >= compared * 9 / 10);
  // Displaced covers cluster in low-lying grids.
  int lifted_low = 0, lifted_other = 0;
  for (uint32_t i : lifted)
    (city.grids[city.devices[i].grid].low_lying ? lifted_low : lifted_other)++;
  INFO("covers displaced: " << lifted_low << " in low-lying grids, " << lifted_other
                            << " elsewhere");
  CHECK(lifted_low > 20);
  CHECK(lifted_low > 3 * lifted_other);
  // Water recedes: 2 h after the rain has eased everywhere, roads are nearly dry.
  int wet = 0;
  for (uint32_t g = 0; g < city.grids.size(); ++g) wet += sim.RoadWaterCm(g) > 3;
  CHECK(wet == 0);
}

TEST_CASE("typhoon: curtain-wall vibration grows with the square of the gust", "[sim]") {
  CityOptions options;
  options.devices = 6000;
  options.elevator_pct = 0;
  options.curtain_wall_pct = 60;
  const City city = GenerateCity(options);
  double calm = 0, storm = 0;
  int n_calm = 0, n_storm = 0;
  for (const v1::SensorReading& r : Run(city, Scenario::kTyphoon, 5, absl::Hours(3))) {
    if (!r.has_curtain_wall()) continue;
    const double wind = r.curtain_wall().wind_speed_m_per_s();
    const double vib = r.curtain_wall().vibration_mm_per_s2();
    if (wind < 10) calm += vib, ++n_calm;
    if (wind > 28) storm += vib, ++n_storm;
  }
  REQUIRE(n_calm > 100);
  REQUIRE(n_storm > 100);
  CHECK(storm / n_storm > 6 * calm / n_calm);
}

TEST_CASE("normal day: traffic spikes on covers never hold past 3 s", "[sim]") {
  CityOptions options;
  options.devices = 20'000;
  options.elevator_pct = 0;
  options.curtain_wall_pct = 0;
  options.flood_gauge_pct = 0;
  const City city = GenerateCity(options);
  std::map<std::string, std::vector<const v1::SensorReading*>> by_device;
  const auto readings = Run(city, Scenario::kNormalDay, 9, absl::Hours(24));
  for (const v1::SensorReading& r : readings) by_device[r.device_id()].push_back(&r);
  int spikes = 0, faults = 0, held = 0;
  for (const auto& [id, rs] : by_device) {
    for (size_t k = 0; k < rs.size(); ++k) {
      const auto& m = rs[k]->manhole_cover();
      if (m.cover_open()) {
        ++faults;  // A deliberate fault: a displaced cover, flagged open.
        break;
      }
      if (m.tilt_deg() <= 5) continue;
      ++spikes;
      size_t e = k;
      while (e < rs.size() && rs[e]->manhole_cover().tilt_deg() > 5) ++e;
      const absl::Time until = e < rs.size() ? TimeOf(*rs[e]) : absl::InfiniteFuture();
      held += until - TimeOf(*rs[k]) > absl::Seconds(3);
      k = e;
    }
  }
  INFO(spikes << " spikes, " << faults << " faults");
  CHECK(spikes > 100);
  CHECK(held == 0);
  // About 2e-4 displaced covers per cover per day.
  CHECK(faults <= 20);
  // 1-2 % of covers send nothing in a 4 h slot: some heartbeats are missing.
  const double reporting = static_cast<double>(by_device.size()) / city.devices.size();
  CHECK(reporting > 0.97);
}

TEST_CASE("elevator wave: older elevators fail at least twice as often", "[sim]") {
  CityOptions options;
  options.devices = 3000;
  options.elevator_pct = 100;
  const City city = GenerateCity(options);
  const auto index = IndexById(city);
  // 17:00 in Shanghai.
  const absl::Time start =
      absl::FromCivil(absl::CivilSecond(2026, 7, 20, 17, 0, 0), absl::FixedTimeZone(8 * 3600));
  std::vector<std::set<int>> previous(city.devices.size());
  std::vector<double> trapped_since(city.devices.size(), -1);
  std::map<int, int> onsets_by_code;
  double old_onsets = 0, new_onsets = 0, old_n = 0, new_n = 0, long_rescues = 0;
  int ebikes = 0, power_losses = 0;
  for (const Device& d : city.devices) {
    if (d.kind == v1::DEVICE_KIND_ELEVATOR) (2026 - d.year > 15 ? old_n : new_n) += 1;
  }
  for (const v1::SensorReading& r : Run(city, Scenario::kElevatorWave, 4, absl::Hours(3), start)) {
    if (!r.has_elevator()) continue;
    const uint32_t i = index.at(r.device_id());
    const auto& m = r.elevator();
    std::set<int> now(m.fault_codes().begin(), m.fault_codes().end());
    const double minute = absl::ToDoubleMinutes(TimeOf(r) - start);
    const bool trapped = now.contains(7) || now.contains(8);
    if (trapped && trapped_since[i] < 0) trapped_since[i] = minute;
    if (!trapped && trapped_since[i] >= 0) {
      long_rescues += minute - trapped_since[i] > 30;
      trapped_since[i] = -1;
    }
    ebikes += now.contains(37);
    power_losses += now.contains(9) && !previous[i].contains(9);
    for (int code : now) {
      if (previous[i].contains(code) || code == 9 || code == 37 || !m.mains_power()) continue;
      ++onsets_by_code[code];
      (2026 - city.devices[i].year > 15 ? old_onsets : new_onsets) += 1;
    }
    now.erase(37);
    previous[i] = std::move(now);
  }
  int door = 0, all = 0;
  for (const auto& [code, n] : onsets_by_code) {
    all += n;
    door += code == 11 || code == 12 || code == 13 || code == 20 || code == 4 ? n : 0;
  }
  const double old_rate = old_onsets / old_n, new_rate = new_onsets / new_n;
  INFO("old " << old_onsets << "/" << old_n << ", new " << new_onsets << "/" << new_n << ", door "
              << door << "/" << all << ", e-bikes " << ebikes << ", power losses " << power_losses
              << ", rescues past 30 min " << long_rescues);
  REQUIRE(old_onsets > 20);
  CHECK(old_rate >= 2 * new_rate);
  CHECK(door > all / 2);
  CHECK(power_losses > 5);
  CHECK(long_rescues > 0);
}

// The value of metric `name` in a values reading (flags 1/0); NaN when absent.
double ValueOf(const v1::SensorReading& r, std::string_view name) {
  for (const v1::MetricValue& v : r.values().values()) {
    if (v.name() != name) continue;
    switch (v.value_case()) {
      case v1::MetricValue::kNumber:
        return v.number();
      case v1::MetricValue::kFlag:
        return v.flag() ? 1 : 0;
      case v1::MetricValue::kCode:
        return static_cast<double>(v.code());
      case v1::MetricValue::kCount:
        return static_cast<double>(v.count());
      default:
        break;
    }
  }
  return std::nan("");
}

// Local (UTC+8) hours since midnight of the start's day.
double LocalHours(absl::Time t) {
  const absl::TimeZone shanghai = absl::FixedTimeZone(8 * 3600);
  const absl::CivilDay day = absl::ToCivilDay(t, shanghai);
  return absl::ToDoubleHours(t - absl::FromCivil(day, shanghai));
}

TEST_CASE("normal day: a gas leak crosses 25 %LEL, alarms and closes the valve", "[sim]") {
  CityOptions options;
  options.devices = 10'000;
  options.elevator_pct = 0;
  const City city = GenerateCity(options);
  SimulatorOptions so;
  so.seed = 21;
  Simulator sim(city, so);
  std::vector<v1::SensorReading> readings;
  sim.Step(absl::Hours(4), &readings);
  std::map<std::string, std::vector<const v1::SensorReading*>> detectors;
  for (const v1::SensorReading& r : readings) {
    if (r.kind_id() == "gas_detector") detectors[r.device_id()].push_back(&r);
  }
  REQUIRE(detectors.size() > 200);
  double first_cross = 1e9;
  int leaking = 0;
  for (const auto& [id, rs] : detectors) {
    size_t cross = rs.size();
    for (size_t k = 0; k < rs.size(); ++k) {
      if (ValueOf(*rs[k], "gas_lel_pct") >= 25) {
        cross = k;
        break;
      }
    }
    if (cross == rs.size()) {
      // No leak: no alarm, the valve open.
      for (const v1::SensorReading* r : rs) {
        REQUIRE(ValueOf(*r, "alarm") == 0);
        REQUIRE(ValueOf(*r, "valve_closed") == 0);
      }
      continue;
    }
    ++leaking;
    const double minute = absl::ToDoubleMinutes(TimeOf(*rs[cross]) - so.start);
    first_cross = std::min(first_cross, minute);
    INFO(id << " crosses 25 %LEL at minute " << minute);
    // Below it before and quiet, alarm and valve closed with it, every minute around it.
    for (size_t k = 0; k < cross; ++k) {
      CHECK(ValueOf(*rs[k], "gas_lel_pct") < 25);
      CHECK(ValueOf(*rs[k], "alarm") == 0);
    }
    CHECK(ValueOf(*rs[cross], "alarm") == 1);
    CHECK(ValueOf(*rs[cross], "valve_closed") == 1);
    REQUIRE(cross > 0);
    CHECK(TimeOf(*rs[cross]) - TimeOf(*rs[cross - 1]) <= absl::Minutes(1));
    // The valve stays closed while the gas disperses below 12 %LEL.
    bool dispersed = false;
    for (size_t k = cross; k < rs.size(); ++k) {
      if (TimeOf(*rs[k]) - TimeOf(*rs[cross]) > absl::Minutes(60)) break;
      if (ValueOf(*rs[k], "gas_lel_pct") < 12) {
        dispersed = true;
        CHECK(ValueOf(*rs[k], "valve_closed") == 1);
      }
    }
    CHECK(dispersed);
  }
  INFO("first crossing at minute " << first_cross);
  CHECK(leaking >= 2);
  CHECK(leaking <= 6);
  // The first leak begins 90 minutes into the day and crosses 25 %LEL 11 minutes later.
  CHECK(first_cross >= 100);
  CHECK(first_cross <= 102);
}

TEST_CASE("evening: charging sheds draw more and a faulty battery overheats and smokes", "[sim]") {
  CityOptions options;
  options.devices = 10'000;
  options.elevator_pct = 0;
  const City city = GenerateCity(options);
  const absl::Time start =
      absl::FromCivil(absl::CivilSecond(2026, 7, 20, 17, 0, 0), absl::FixedTimeZone(8 * 3600));
  double before = 0, evening = 0;
  int n_before = 0, n_evening = 0;
  std::map<std::string, std::vector<const v1::SensorReading*>> smoking;
  const auto readings = Run(city, Scenario::kNormalDay, 6, absl::Hours(5), start);
  for (const v1::SensorReading& r : readings) {
    if (r.kind_id() != "ebike_charging_shed") continue;
    const double h = LocalHours(TimeOf(r));
    if (h < 18) before += ValueOf(r, "current_a"), ++n_before;
    if (h >= 18 && h < 19.5) evening += ValueOf(r, "current_a"), ++n_evening;
    if (ValueOf(r, "smoke") == 1) smoking[r.device_id()].push_back(&r);
  }
  REQUIRE(n_before > 1000);
  REQUIRE(n_evening > 1000);
  INFO("current before 18 h " << before / n_before << " A, after " << evening / n_evening << " A");
  CHECK(evening / n_evening > 2 * before / n_before);
  // A few sheds smoke, from about 19:48, hot and drawing hard; the protection then cuts
  // the power.
  REQUIRE(smoking.size() >= 1);
  CHECK(smoking.size() <= 5);
  double first = 24;
  for (const auto& [id, rs] : smoking) {
    first = std::min(first, LocalHours(TimeOf(*rs.front())));
    CHECK(ValueOf(*rs.front(), "temperature_c") >= 59);
    CHECK(ValueOf(*rs.front(), "current_a") > 45);
    bool cut = false;
    for (const v1::SensorReading* r : rs) {
      if (ValueOf(*r, "power_cut") == 1) {
        cut = true;
        CHECK(ValueOf(*r, "current_a") < 1);
      }
    }
    CHECK(cut);
  }
  INFO("first smoke at " << first << " h");
  CHECK(first >= 19.75);
  CHECK(first <= 19.85);
}

TEST_CASE("normal day: a few sites stay above 55 dB(A) after 22 h, the rest fall quiet", "[sim]") {
  CityOptions options;
  options.devices = 10'000;
  options.elevator_pct = 0;
  const City city = GenerateCity(options);
  const absl::Time start =
      absl::FromCivil(absl::CivilSecond(2026, 7, 20, 21, 0, 0), absl::FixedTimeZone(8 * 3600));
  std::map<std::string, int> loud_at_night, readings_at_night;
  double day = 0;
  int n_day = 0;
  for (const v1::SensorReading& r : Run(city, Scenario::kNormalDay, 8, absl::Hours(4), start)) {
    if (r.kind_id() != "noise_meter") continue;
    const double leq = ValueOf(r, "noise_leq_dba");
    if (TimeOf(r) - start < absl::Hours(1)) {  // 21-22 h.
      day += leq, ++n_day;
    } else {
      ++readings_at_night[r.device_id()];
      loud_at_night[r.device_id()] += leq > 55;
    }
  }
  REQUIRE(n_day > 1000);
  CHECK(day / n_day > 58);  // Sites run loud by day.
  int loud_sites = 0, quiet_sites = 0;
  for (const auto& [id, n] : readings_at_night) {
    // Loud for the 3 h after 22:00 (the episode lasts 200 minutes), or never.
    if (loud_at_night[id] >= n * 9 / 10) {
      ++loud_sites;
    } else {
      CHECK(loud_at_night[id] == 0);
      ++quiet_sites;
    }
  }
  INFO(loud_sites << " sites loud at night, " << quiet_sites << " quiet");
  CHECK(loud_sites >= 5);
  CHECK(quiet_sites >= 3 * loud_sites);
}

TEST_CASE("JSON lines output round-trips", "[sim]") {
  CityOptions options;
  options.devices = 400;
  const City city = GenerateCity(options);
  const std::string path = "/tmp/cityops_sim_test_readings.jsonl";
  const std::string devices_path = "/tmp/cityops_sim_test_devices.jsonl";
  Simulator sim(city, SimulatorOptions{});
  PublishOptions po;
  po.duration = absl::Minutes(10);
  po.devices_path = devices_path;
  const absl::StatusOr<PublishStats> stats = WriteJsonLines(sim, path, po);
  REQUIRE(stats.ok());
  CHECK(stats->devices == city.devices.size());
  const auto expected = Run(city, Scenario::kNormalDay, 1, absl::Minutes(10));
  REQUIRE(stats->readings == expected.size());
  const std::vector<v1::SensorReading> written = ReadJsonLines(path);
  REQUIRE(written.size() == expected.size());
  for (size_t k = 0; k < written.size(); ++k) {
    REQUIRE(written[k].SerializeAsString() == expected[k].SerializeAsString());
  }
  CHECK(std::count_if(written.begin(), written.end(),
                      [](const v1::SensorReading& r) { return r.has_values(); }) > 0);
  // The device file import takes every typed kind's registration (the catalogue-only
  // kinds' once ingest knows them; until then each is one error line).
  const auto parsed = ingest::ParseDeviceFile(devices_path);
  REQUIRE(parsed.ok());
  size_t typed = 0;
  for (const Device& d : city.devices) typed += d.kind != v1::DEVICE_KIND_UNSPECIFIED;
  CHECK(typed == 400);
  CHECK(parsed->devices.size() >= typed);
  CHECK(parsed->devices.size() + parsed->errors.size() == city.devices.size());
  std::remove(path.c_str());
  std::remove(devices_path.c_str());
}

TEST_CASE("backpressure is asked every 1000 readings and loses or reorders nothing", "[sim]") {
  CityOptions options;
  options.devices = 400;
  const City city = GenerateCity(options);
  testing::TempDir dir;
  Simulator sim(city, SimulatorOptions{});
  PublishOptions po;
  po.duration = absl::Minutes(10);
  po.acceleration = 60'000;  // Paced, so that the pacer's clock matters.
  int asked = 0;
  po.wait_while_behind = [&] {
    ++asked;
    if (asked == 2) absl::SleepFor(absl::Milliseconds(200));  // The consumer is behind once.
  };
  const absl::StatusOr<PublishStats> stats = WriteJsonLines(sim, dir.Sub("r.jsonl"), po);
  REQUIRE(stats.ok());
  const auto expected = Run(city, Scenario::kNormalDay, 1, absl::Minutes(10));
  REQUIRE(stats->readings == expected.size());
  CHECK(asked == static_cast<int>((expected.size() + 999) / 1000));
  const std::vector<v1::SensorReading> written = ReadJsonLines(dir.Sub("r.jsonl"));
  REQUIRE(written.size() == expected.size());
  for (size_t k = 0; k < written.size(); ++k) {
    CHECK(written[k].reading_id() == expected[k].reading_id());
  }
}

TEST_CASE("publishing to Kafka registers devices and delivers every reading", "[sim]") {
  ingest::EmbeddedKafkaOptions ko;
  ko.topics = {{"cityops.readings", 3}, {"cityops.devices", 3}};
  auto kafka = ingest::EmbeddedKafka::Start(ko);
  REQUIRE(kafka.ok());
  auto producer = ingest::RecordProducer::Create((*kafka)->bootstrap_servers());
  REQUIRE(producer.ok());
  CityOptions options;
  options.devices = 300;
  const City city = GenerateCity(options);
  Simulator sim(city, SimulatorOptions{});
  PublishOptions po;
  po.duration = absl::Minutes(2);
  po.acceleration = 240;  // Two simulated minutes in about half a second.
  const auto t0 = std::chrono::steady_clock::now();
  const absl::StatusOr<PublishStats> stats = PublishToKafka(sim, **producer, po);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(stats.ok());
  CHECK(stats->devices == city.devices.size());
  CHECK(stats->readings > 1000);
  CHECK(stats->delivered == stats->devices + stats->readings);
  CHECK(stats->failed == 0);
  CHECK(stats->simulated == absl::Minutes(2));
  CHECK(wall > 0.4);
}

}  // namespace
}  // namespace cityops::sim
