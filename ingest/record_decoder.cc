// Decoding and validation of integrators' records (see record_decoder.h).
//
// Order of checks, cheapest and most fundamental first, so that a record gets the code of
// its first problem: size; encoding and framing; parse; identity (id, then key); the other
// required fields; kind against the metrics; metric values; event time.
//
// Cost. DecodeReading runs for every consumed reading (about 1 M/s), so a valid record
// costs the parse into the caller's reused message plus a few passes over fixed tables:
// no allocation, no reflection, no formatting. Messages are built on the failure path
// only. (About 70 ns on top of a 90 ns parse for a 93-byte manhole reading here.) A
// reading by name (`values`) adds a name lookup per metric (the catalogue's order tried
// first) and reuses the previous reading's MetricValues (KeepValues); `ingest_bench
// --decoder` compares the two forms.
//
// Identifier rule. Ids end up in stream ids (`device/<id>`, `registry/<id>`, `case/<id>`),
// in idempotency keys (`report/<report_id>`, `registry/<device_id>/...`), in Kafka keys,
// in log lines and in URLs of the API. So every id (device_id, reading_id, report_id, a grid
// code, a category code) is 1..128 bytes of visible ASCII, '!' (0x21) to '~' (0x7e): no
// NUL, no control characters, no spaces, nothing beyond ASCII. device_id and report_id
// may not contain '/', which keeps `device/<id>` a single path segment and lets a
// reading be named `<device_id>/<reading_id>` (in messages and the API) without
// ambiguity; reading ids may.
// GB/T 30428 codes, UUIDs and "<device_id>:<counter>" all pass.
//
// Codes:
//   * an id that breaks the identifier rule, a report source that is set but not a human
//     one, an originator's department that is not a department's name: INVALID_FIELD;
//     an originator without level or code: MISSING_FIELD;
//   * an event time that is not a valid google.protobuf.Timestamp (nanos outside
//     0..999999999, seconds outside years 1..9999): UNDECODABLE, which is what the JSON
//     mapping answers for the same value;
//   * coordinates and device archive numbers out of range: INVALID_METRIC;
//   * no kind (neither kind_id nor kind), or one the catalogue in force does not have:
//     UNKNOWN_DEVICE_KIND, listing its kinds; kind_id and kind naming different kinds,
//     metrics or archive data of another kind: KIND_MISMATCH;
//   * in `values`: a name that is not a metric of the kind (listing its metrics), a metric
//     twice, the member of another type, out of bounds, a code not listed: INVALID_METRIC;
//     no value at all: MISSING_FIELD, as for absent metrics;
//   * in `archive_values`: a name that is not an archive field of the kind, a field twice
//     (records excepted), a value that is not of the field's type: INVALID_FIELD; a number
//     or year out of the field's bounds: INVALID_METRIC.
#include "ingest/record_decoder.h"

#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "catalogue/kinds.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/department.h"

namespace cityops::ingest {
namespace {

using v1::DeviceRegistered;
using v1::SensorReading;

// A field as the two encodings spell it: proto name and JSON mapping name.
struct Field {
  std::string_view name;
  std::string_view json_name;
};

std::string Describe(const Field& f) {
  if (f.name == f.json_name) return std::string(f.name);
  return absl::StrFormat("%s (%s)", f.name, f.json_name);
}

Rejection Reject(v1::RejectCode code, std::string message) { return {code, std::move(message)}; }

Rejection Missing(const Field& f) {
  return Reject(v1::REJECT_CODE_MISSING_FIELD,
                absl::StrFormat("field %s is required", Describe(f)));
}

// Shortest text that reads back as the same double ("0.1", "180.00000000000003", "nan").
std::string Number(double v) {
  char buf[64];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// Bytes of untrusted text, quoted and C-escaped, cut after 64 bytes.
std::string Quote(std::string_view bytes) {
  constexpr size_t kShown = 64;
  const bool cut = bytes.size() > kShown;
  const std::string escaped =
      absl::CHexEscape(absl::string_view(bytes.data(), cut ? kShown : bytes.size()));
  return absl::StrFormat("\"%s\"%s", escaped,
                         cut ? absl::StrFormat("... (%d bytes)", bytes.size()) : "");
}

// ---------------------------------------------------------------------------------------
// Identifiers and keys.

constexpr size_t kMaxIdBytes = 128;

enum class Slash { kAllowed, kForbidden };

// What is wrong with an id that CheckId refused (the failure path).
[[gnu::noinline]] Rejection BadId(std::string_view id, const Field& f, Slash slash) {
  if (id.empty()) return Missing(f);
  const char* rule = slash == Slash::kForbidden
                         ? "1..128 bytes of printable ASCII without spaces or '/'"
                         : "1..128 bytes of printable ASCII without spaces";
  if (id.size() > kMaxIdBytes) {
    return Reject(
        v1::REJECT_CODE_INVALID_FIELD,
        absl::StrFormat("field %s is %d bytes long; ids are %s", Describe(f), id.size(), rule));
  }
  size_t i = 0;
  while (i < id.size() && id[i] >= 0x21 && id[i] <= 0x7e &&
         (id[i] != '/' || slash == Slash::kAllowed)) {
    ++i;
  }
  return Reject(v1::REJECT_CODE_INVALID_FIELD,
                absl::StrFormat("field %s %s has byte 0x%02x at offset %d; ids are %s", Describe(f),
                                Quote(id), static_cast<unsigned char>(id[i]), i, rule));
}

inline std::optional<Rejection> CheckId(std::string_view id, const Field& f, Slash slash) {
  // Branch-free over the bytes (this runs twice per reading): a byte outside 0x21..0x7e
  // wraps to more than 0x5d.
  unsigned outside = 0;
  for (const char c : id) {
    outside |= static_cast<unsigned char>(static_cast<unsigned char>(c) - 0x21) > 0x7e - 0x21;
  }
  if (outside == 0 && !id.empty() && id.size() <= kMaxIdBytes &&
      (slash == Slash::kAllowed || id.find('/') == std::string_view::npos)) {
    return std::nullopt;
  }
  return BadId(id, f, slash);
}

std::optional<Rejection> CheckKey(std::string_view key, std::string_view id, const Field& f) {
  if (key.empty() || key == id) return std::nullopt;
  return Reject(v1::REJECT_CODE_KEY_MISMATCH,
                absl::StrFormat("record key %s differs from %s %s; key the record by %s",
                                Quote(key), Describe(f), Quote(id), f.name));
}

// ---------------------------------------------------------------------------------------
// Encodings and the Confluent Schema Registry framing.

enum class Encoding { kBinary, kJson };

std::string_view TrimAscii(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view lower_b) {
  if (a.size() != lower_b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower_b[i]) return false;
  }
  return true;
}

// The encoding that the content-type header names (parameters such as "; charset=utf-8"
// are ignored), or nullopt for one we do not read.
std::optional<Encoding> EncodingOf(std::string_view content_type) {
  if (TrimAscii(content_type).empty()) return Encoding::kBinary;
  const std::string_view media = TrimAscii(content_type.substr(0, content_type.find(';')));
  if (EqualsIgnoreCase(media, "application/json")) return Encoding::kJson;
  if (EqualsIgnoreCase(media, "application/x-protobuf") ||
      EqualsIgnoreCase(media, "application/protobuf")) {
    return Encoding::kBinary;
  }
  return std::nullopt;
}

// Reads one base-128 varint of at most 10 bytes from the front of `in`.
bool ReadVarint(std::string_view* in, uint64_t* value) {
  uint64_t result = 0;
  for (int i = 0; i < 10 && !in->empty(); ++i) {
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

int64_t ZigZagDecode(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

constexpr size_t kConfluentHeaderBytes = 5;  // Magic byte 0, then a big-endian schema id.

// Strips the Confluent framing from `payload` (which starts with the magic byte 0). For
// protobuf the header is followed by the message-index list: a zigzag varint count and
// that many zigzag varint indexes, a count of 0 being short for [0]. Only the schema's
// first message type is ours; any other index list names a type we cannot know.
std::optional<Rejection> StripConfluentFraming(Encoding encoding, std::string_view* payload) {
  if (payload->size() < kConfluentHeaderBytes) {
    return Reject(v1::REJECT_CODE_UNDECODABLE,
                  absl::StrFormat("value starts with the Confluent magic byte 0 but has only %d "
                                  "bytes; the framing needs 5 (magic byte and schema id)",
                                  payload->size()));
  }
  const auto* b = reinterpret_cast<const unsigned char*>(payload->data());
  const uint32_t schema_id = static_cast<uint32_t>(b[1]) << 24 | static_cast<uint32_t>(b[2]) << 16 |
                             static_cast<uint32_t>(b[3]) << 8 | static_cast<uint32_t>(b[4]);
  payload->remove_prefix(kConfluentHeaderBytes);
  if (encoding == Encoding::kJson) return std::nullopt;  // JSON has no message indexes.

  auto malformed = [&](std::string_view what) {
    return Reject(v1::REJECT_CODE_UNDECODABLE,
                  absl::StrFormat("Confluent framing (schema id %d): %s", schema_id, what));
  };
  uint64_t raw = 0;
  if (!ReadVarint(payload, &raw)) return malformed("the message-index count is a broken varint");
  const int64_t count = ZigZagDecode(raw);
  if (count == 0) return std::nullopt;  // Short for [0].
  if (count < 0) return malformed(absl::StrFormat("message-index count %d is negative", count));
  if (static_cast<uint64_t>(count) > payload->size()) {
    return malformed(absl::StrFormat("message-index count %d does not fit the %d bytes left", count,
                                     payload->size()));
  }
  std::vector<int64_t> indexes;  // Failure path only: the common [0] is a single byte 0.
  for (int64_t i = 0; i < count; ++i) {
    if (!ReadVarint(payload, &raw)) {
      return malformed(absl::StrFormat("message index %d of %d is a broken varint", i, count));
    }
    indexes.push_back(ZigZagDecode(raw));
  }
  if (count == 1 && indexes[0] == 0) return std::nullopt;
  constexpr size_t kShown = 8;
  const bool cut = indexes.size() > kShown;
  if (cut) indexes.resize(kShown);
  return Reject(v1::REJECT_CODE_UNSUPPORTED_ENCODING,
                absl::StrFormat("Confluent framing (schema id %d) names message indexes [%s%s]; "
                                "only the schema's first message type ([0]) is accepted",
                                schema_id, absl::StrJoin(indexes, ", "), cut ? ", ..." : ""));
}

// Size, encoding, framing and parse, shared by every record type. Fills `out`.
// Clears `out` for a binary parse; the default, Clear(), frees a oneof's message member.
// Prepares `out` for a binary parse: true when it cleared `out` itself, keeping a member
// to parse into; false leaves it to ParseFromArray (which clears it all).
bool NoReuse(google::protobuf::Message*) { return false; }

// A reading decoded last as `values` keeps its MetricValues (and their names' buffers),
// emptied, as the oneof member: protobuf's Clear() would free it, and a parse into it then
// reuses them, which saves an allocation per metric. A record without metrics then decodes
// to empty `values`, which the decoder treats exactly as absent metrics.
bool KeepValues(google::protobuf::Message* message) {
  auto* out = static_cast<SensorReading*>(message);
  if (!out->has_values()) return false;
  v1::MetricValues* kept = out->release_values();
  out->Clear();
  kept->Clear();
  out->set_allocated_values(kept);
  return true;
}

bool ParseBinary(std::string_view payload, bool (*keep)(google::protobuf::Message*),
                 google::protobuf::Message* out) {
  if (!keep(out)) return out->ParseFromArray(payload.data(), static_cast<int>(payload.size()));
  google::protobuf::io::CodedInputStream input(reinterpret_cast<const uint8_t*>(payload.data()),
                                               static_cast<int>(payload.size()));
  return out->MergeFromCodedStream(&input) && input.ConsumedEntireMessage();
}

std::optional<Rejection> Parse(const KafkaRecord& record, const ValidationPolicy& policy,
                               google::protobuf::Message* out,
                               bool (*keep)(google::protobuf::Message*) = &NoReuse) {
  std::string_view payload = record.value;
  if (payload.size() > policy.max_record_bytes) {
    return Reject(v1::REJECT_CODE_OVERSIZED,
                  absl::StrFormat("record value is %d bytes; the limit is %d bytes", payload.size(),
                                  policy.max_record_bytes));
  }
  const std::optional<Encoding> encoding = EncodingOf(record.content_type);
  if (!encoding.has_value()) {
    return Reject(v1::REJECT_CODE_UNSUPPORTED_ENCODING,
                  absl::StrFormat("content-type %s is not supported; use application/json "
                                  "(protobuf JSON mapping) or application/x-protobuf (or no "
                                  "header) for binary protobuf",
                                  Quote(record.content_type)));
  }
  if (!payload.empty() && payload.front() == '\0') {
    if (std::optional<Rejection> why = StripConfluentFraming(*encoding, &payload)) return why;
  }
  if (*encoding == Encoding::kBinary) {
    if (payload.size() > static_cast<size_t>(INT_MAX) || !ParseBinary(payload, keep, out)) {
      return Reject(v1::REJECT_CODE_UNDECODABLE,
                    absl::StrFormat("%d bytes could not be parsed as protobuf %s", payload.size(),
                                    out->GetDescriptor()->full_name()));
    }
    return std::nullopt;
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const google::protobuf::util::Status status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(payload.data(), payload.size()), out, options);
  if (!status.ok()) {
    return Reject(v1::REJECT_CODE_UNDECODABLE,
                  absl::StrFormat("JSON is not a %s by the protobuf JSON mapping: %s",
                                  out->GetDescriptor()->full_name(), status.message().ToString()));
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Bounds of every number a record carries.
//
// They reject garbage (a unit mix-up, an uninitialised register, a corrupted frame), never
// alarms: each bound is what the physical world (or the device) can produce, with room to
// spare, so that a real extreme still reaches the rules. Thresholds belong to the rules.
// Bounds are inclusive; NaN and infinities fail every bound. Typical values are in
// proto/README.md (the metrics) and rules/README.md (the default thresholds).

struct Range {
  double min;
  double max;
  std::string_view unit;
};

// Where a metrics or archive message sits in its record: the oneof case and the accessor.
template <typename M>
struct OneofOf;
template <>
struct OneofOf<v1::ManholeCoverMetrics> {
  using Root = SensorReading;
  static constexpr auto kCase = SensorReading::kManholeCover;
  static const v1::ManholeCoverMetrics& Get(const Root& r) { return r.manhole_cover(); }
};
template <>
struct OneofOf<v1::ElevatorMetrics> {
  using Root = SensorReading;
  static constexpr auto kCase = SensorReading::kElevator;
  static const v1::ElevatorMetrics& Get(const Root& r) { return r.elevator(); }
};
template <>
struct OneofOf<v1::CurtainWallMetrics> {
  using Root = SensorReading;
  static constexpr auto kCase = SensorReading::kCurtainWall;
  static const v1::CurtainWallMetrics& Get(const Root& r) { return r.curtain_wall(); }
};
template <>
struct OneofOf<v1::FloodGaugeMetrics> {
  using Root = SensorReading;
  static constexpr auto kCase = SensorReading::kFloodGauge;
  static const v1::FloodGaugeMetrics& Get(const Root& r) { return r.flood_gauge(); }
};
template <>
struct OneofOf<v1::ElevatorArchive> {
  using Root = DeviceRegistered;
  static constexpr auto kCase = DeviceRegistered::kElevator;
  static const v1::ElevatorArchive& Get(const Root& d) { return d.elevator(); }
};
template <>
struct OneofOf<v1::CurtainWallArchive> {
  using Root = DeviceRegistered;
  static constexpr auto kCase = DeviceRegistered::kCurtainWall;
  static const v1::CurtainWallArchive& Get(const Root& d) { return d.curtain_wall(); }
};

template <typename Getter>
struct ClassOf;
template <typename C, typename R>
struct ClassOf<R (C::*)() const> {
  using Type = C;
};
template <auto kGet>
using OneofOfGetter = OneofOf<typename ClassOf<decltype(kGet)>::Type>;

// One bounded number of a record of type Root, inside the oneof member `kind`.
// `value(root, i)` is the i-th value of the field (always i = 0 for a singular field),
// nullopt when the field is absent or i is past its end.
// `range` is the schema's own (enum numbers, fault codes); a row without one (`measured`,
// the field's number in its message) takes its bounds from the catalogue in force: the
// kind's metric in that slot (catalogue::KindMetric) or the kind's archive field of that
// name.
template <typename Root, typename Case>
struct Bound {
  Case kind;
  std::optional<double> (*value)(const Root&, int i);
  Field field;
  bool repeated;
  Range range;
  int measured = 0;
};
using ReadingBound = Bound<SensorReading, SensorReading::MetricsCase>;
using ArchiveBound = Bound<DeviceRegistered, DeviceRegistered::ArchiveCase>;

// The value of a singular field: kHas is the presence accessor, or nullptr for a field
// without presence (read as its default, 0).
template <auto kHas, auto kGet>
std::optional<double> Singular(const typename OneofOfGetter<kGet>::Root& root, int i) {
  if (i != 0) return std::nullopt;
  const auto& m = OneofOfGetter<kGet>::Get(root);
  if constexpr (!std::is_null_pointer_v<decltype(kHas)>) {
    if (!(m.*kHas)()) return std::nullopt;
  }
  return static_cast<double>((m.*kGet)());
}

template <auto kHas, auto kGet>
constexpr auto Bounded(Field field, Range range) {
  using O = OneofOfGetter<kGet>;
  return Bound<typename O::Root, std::remove_const_t<decltype(O::kCase)>>{
      O::kCase, &Singular<kHas, kGet>, field, false, range};
}

// A measured number, bounded by the catalogue; `number` is its field number.
template <auto kHas, auto kGet>
constexpr auto Measured(Field field, int number) {
  using O = OneofOfGetter<kGet>;
  return Bound<typename O::Root, std::remove_const_t<decltype(O::kCase)>>{
      O::kCase, &Singular<kHas, kGet>, field, false, Range{0, 0, ""}, number};
}

std::optional<double> FaultCode(const SensorReading& r, int i) {
  if (i >= r.elevator().fault_codes_size()) return std::nullopt;
  return r.elevator().fault_codes(i);
}

using Manhole = v1::ManholeCoverMetrics;
using Elevator = v1::ElevatorMetrics;
using CurtainWall = v1::CurtainWallMetrics;
using FloodGauge = v1::FloodGaugeMetrics;

// The numbers of readings, grouped by kind. Measured ones are bounded by the catalogue
// (catalogue/city.yaml says why each bound is what it is); enum fields by their enum's
// numbers (contiguous in reading.proto), which rejects numbers from an unknown schema.
constexpr ReadingBound kReadingBounds[] = {
    Measured<&Manhole::has_tilt_deg, &Manhole::tilt_deg>(
        {"manhole_cover.tilt_deg", "manholeCover.tiltDeg"}, Manhole::kTiltDegFieldNumber),
    Measured<&Manhole::has_well_water_level_m, &Manhole::well_water_level_m>(
        {"manhole_cover.well_water_level_m", "manholeCover.wellWaterLevelM"},
        Manhole::kWellWaterLevelMFieldNumber),
    Measured<&Manhole::has_gas_ppm, &Manhole::gas_ppm>(
        {"manhole_cover.gas_ppm", "manholeCover.gasPpm"}, Manhole::kGasPpmFieldNumber),
    Measured<&Manhole::has_battery_pct, &Manhole::battery_pct>(
        {"manhole_cover.battery_pct", "manholeCover.batteryPct"}, Manhole::kBatteryPctFieldNumber),

    Measured<&Elevator::has_floor, &Elevator::floor>({"elevator.floor", "elevator.floor"},
                                                     Elevator::kFloorFieldNumber),
    Bounded<&Elevator::has_direction, &Elevator::direction>(
        {"elevator.direction", "elevator.direction"},
        {v1::Direction_MIN, v1::Direction_MAX, "(a cityops.v1.Direction number)"}),
    Measured<&Elevator::has_speed_m_per_s, &Elevator::speed_m_per_s>(
        {"elevator.speed_m_per_s", "elevator.speedMPerS"}, Elevator::kSpeedMPerSFieldNumber),
    Bounded<&Elevator::has_door_state, &Elevator::door_state>(
        {"elevator.door_state", "elevator.doorState"},
        {v1::DoorState_MIN, v1::DoorState_MAX, "(a cityops.v1.DoorState number)"}),
    Measured<&Elevator::has_machine_room_temp_c, &Elevator::machine_room_temp_c>(
        {"elevator.machine_room_temp_c", "elevator.machineRoomTempC"},
        Elevator::kMachineRoomTempCFieldNumber),
    // Government reporting codes are small positive numbers (1..38 today); a controller
    // register is a byte.
    {SensorReading::kElevator,
     &FaultCode,
     {"elevator.fault_codes", "elevator.faultCodes"},
     true,
     {1, 255, "(a fault code)"}},

    Measured<&CurtainWall::has_inclination_deg, &CurtainWall::inclination_deg>(
        {"curtain_wall.inclination_deg", "curtainWall.inclinationDeg"},
        CurtainWall::kInclinationDegFieldNumber),
    Measured<&CurtainWall::has_displacement_mm, &CurtainWall::displacement_mm>(
        {"curtain_wall.displacement_mm", "curtainWall.displacementMm"},
        CurtainWall::kDisplacementMmFieldNumber),
    Measured<&CurtainWall::has_vibration_mm_per_s2, &CurtainWall::vibration_mm_per_s2>(
        {"curtain_wall.vibration_mm_per_s2", "curtainWall.vibrationMmPerS2"},
        CurtainWall::kVibrationMmPerS2FieldNumber),
    Measured<&CurtainWall::has_natural_frequency_hz, &CurtainWall::natural_frequency_hz>(
        {"curtain_wall.natural_frequency_hz", "curtainWall.naturalFrequencyHz"},
        CurtainWall::kNaturalFrequencyHzFieldNumber),
    Measured<&CurtainWall::has_wind_speed_m_per_s, &CurtainWall::wind_speed_m_per_s>(
        {"curtain_wall.wind_speed_m_per_s", "curtainWall.windSpeedMPerS"},
        CurtainWall::kWindSpeedMPerSFieldNumber),
    Measured<&CurtainWall::has_temperature_inside_c, &CurtainWall::temperature_inside_c>(
        {"curtain_wall.temperature_inside_c", "curtainWall.temperatureInsideC"},
        CurtainWall::kTemperatureInsideCFieldNumber),
    Measured<&CurtainWall::has_temperature_outside_c, &CurtainWall::temperature_outside_c>(
        {"curtain_wall.temperature_outside_c", "curtainWall.temperatureOutsideC"},
        CurtainWall::kTemperatureOutsideCFieldNumber),

    Measured<&FloodGauge::has_water_depth_cm, &FloodGauge::water_depth_cm>(
        {"flood_gauge.water_depth_cm", "floodGauge.waterDepthCm"},
        FloodGauge::kWaterDepthCmFieldNumber),
    Measured<&FloodGauge::has_rainfall_mm_per_h, &FloodGauge::rainfall_mm_per_h>(
        {"flood_gauge.rainfall_mm_per_h", "floodGauge.rainfallMmPerH"},
        FloodGauge::kRainfallMmPerHFieldNumber),
    Measured<&FloodGauge::has_battery_pct, &FloodGauge::battery_pct>(
        {"flood_gauge.battery_pct", "floodGauge.batteryPct"}, FloodGauge::kBatteryPctFieldNumber),
};

// The numbers of device archives (fields without presence: 0 means unknown), bounded by
// the catalogue.
constexpr ArchiveBound kArchiveBounds[] = {
    Measured<nullptr, &v1::ElevatorArchive::installed_year>(
        {"elevator.installed_year", "elevator.installedYear"},
        v1::ElevatorArchive::kInstalledYearFieldNumber),
    Measured<nullptr, &v1::ElevatorArchive::rated_speed_m_per_s>(
        {"elevator.rated_speed_m_per_s", "elevator.ratedSpeedMPerS"},
        v1::ElevatorArchive::kRatedSpeedMPerSFieldNumber),
    Measured<nullptr, &v1::ElevatorArchive::floors>({"elevator.floors", "elevator.floors"},
                                                    v1::ElevatorArchive::kFloorsFieldNumber),
    Measured<nullptr, &v1::CurtainWallArchive::built_year>(
        {"curtain_wall.built_year", "curtainWall.builtYear"},
        v1::CurtainWallArchive::kBuiltYearFieldNumber),
    Measured<nullptr, &v1::CurtainWallArchive::height_m>(
        {"curtain_wall.height_m", "curtainWall.heightM"},
        v1::CurtainWallArchive::kHeightMFieldNumber),
    Measured<nullptr, &v1::CurtainWallArchive::floors>(
        {"curtain_wall.floors", "curtainWall.floors"}, v1::CurtainWallArchive::kFloorsFieldNumber),
};

// WGS-84 coordinates.
constexpr Range kLatitude = {-90, 90, "deg"};
constexpr Range kLongitude = {-180, 180, "deg"};
// A device's expected heartbeat: real ones run from 10 s (elevators) to 24 h (manhole
// covers); a year is plainly wrong.
constexpr Range kReportingIntervalSeconds = {0, 366 * 24 * 3600, "s"};

[[gnu::noinline]] Rejection OutOfRange(double v, const Field& f, int index, bool repeated,
                                       const Range& range) {
  const std::string name =
      repeated ? absl::StrFormat("%s[%d] (%s[%d])", f.name, index, f.json_name, index)
               : Describe(f);
  const std::string allowed =
      absl::StrFormat("%s..%s %s", Number(range.min), Number(range.max), range.unit);
  if (!std::isfinite(v)) {
    return Reject(v1::REJECT_CODE_INVALID_METRIC,
                  absl::StrFormat("%s is %s; values must be finite numbers within %s", name,
                                  Number(v), allowed));
  }
  return Reject(v1::REJECT_CODE_INVALID_METRIC,
                absl::StrFormat("%s is %s, outside the physically possible range %s", name,
                                Number(v), allowed));
}

inline std::optional<Rejection> CheckRange(double v, const Field& f, int index, bool repeated,
                                           const Range& range) {
  if (v >= range.min && v <= range.max) return std::nullopt;  // False for NaN.
  return OutOfRange(v, f, index, repeated, range);
}

// The bounds the catalogue gives a measured number: `has_min`/`has_max` from its spec; a
// side without a bound admits every finite number.
Range CatalogueRange(bool has_min, double min, bool has_max, double max, std::string_view unit) {
  return {has_min ? min : std::numeric_limits<double>::lowest(),
          has_max ? max : std::numeric_limits<double>::max(),
          unit.empty() ? std::string_view("(a whole number)") : unit};
}

// The bounds of each row of `table` for `kind`'s record: the schema's own, or for a
// measured row those `measured(row)` gives from the catalogue.
template <typename Root, typename Case, size_t kRows, typename MeasuredRange>
std::optional<Rejection> CheckBounds(const Root& root, Case kind,
                                     const Bound<Root, Case> (&table)[kRows],
                                     const MeasuredRange& measured) {
  for (size_t row = 0; row < kRows; ++row) {
    const Bound<Root, Case>& b = table[row];
    if (b.kind != kind) continue;
    const Range range = b.measured != 0 ? measured(b) : b.range;
    for (int i = 0;; ++i) {
      const std::optional<double> v = b.value(root, i);
      if (!v.has_value()) break;
      if (std::optional<Rejection> why = CheckRange(*v, b.field, i, b.repeated, range)) {
        return why;
      }
    }
  }
  return std::nullopt;
}

std::optional<Rejection> CheckLocation(const v1::GeoPoint& p) {
  if (auto why = CheckRange(p.latitude_deg(), {"location.latitude_deg", "location.latitudeDeg"}, 0,
                            false, kLatitude)) {
    return why;
  }
  return CheckRange(p.longitude_deg(), {"location.longitude_deg", "location.longitudeDeg"}, 0,
                    false, kLongitude);
}

// ---------------------------------------------------------------------------------------
// Kinds, sources and times.

constexpr Field kKindIdField = {"kind_id", "kindId"};

// "catalogue 'city'": the catalogue in force, for messages.
std::string CatalogueName(const catalogue::KindTable& kinds) {
  if (kinds.catalogue().name().empty()) return "the catalogue in force";
  return absl::StrFormat("catalogue '%s'", kinds.catalogue().name());
}

[[gnu::noinline]] Rejection BadKind(std::string_view kind_id, v1::DeviceKind typed,
                                    const catalogue::KindTable& kinds) {
  const std::string known = kinds.KindIds();
  if (!kind_id.empty()) {
    const catalogue::Kind* k = kinds.Find(kind_id);
    if (k == nullptr) {
      return Reject(
          v1::REJECT_CODE_UNKNOWN_DEVICE_KIND,
          absl::StrFormat("field %s %s is not a kind of %s; use one of: %s", Describe(kKindIdField),
                          Quote(kind_id), CatalogueName(kinds), known));
    }
    return Reject(
        v1::REJECT_CODE_KIND_MISMATCH,
        absl::StrFormat("field %s is \"%s\" but kind is %s, which is %s; set kind to %s or leave "
                        "it unset (kind_id alone names the kind)",
                        Describe(kKindIdField), k->id,
                        v1::DeviceKind_IsValid(typed)
                            ? v1::DeviceKind_Name(typed)
                            : absl::StrFormat("%d", static_cast<int>(typed)),
                        v1::DeviceKind_IsValid(typed) && typed != v1::DEVICE_KIND_UNSPECIFIED
                            ? absl::StrFormat("kind '%s'", catalogue::TypedKindId(typed))
                            : std::string("no kind"),
                        k->typed == v1::DEVICE_KIND_UNSPECIFIED ? "DEVICE_KIND_UNSPECIFIED"
                                                                : v1::DeviceKind_Name(k->typed)));
  }
  if (typed == v1::DEVICE_KIND_UNSPECIFIED) {
    return Reject(v1::REJECT_CODE_UNKNOWN_DEVICE_KIND,
                  absl::StrFormat("field %s is required (or kind, for a typed kind): the id of "
                                  "the device's kind in %s, one of: %s",
                                  Describe(kKindIdField), CatalogueName(kinds), known));
  }
  if (!v1::DeviceKind_IsValid(typed)) {
    return Reject(v1::REJECT_CODE_UNKNOWN_DEVICE_KIND,
                  absl::StrFormat("kind %d is not a known cityops.v1.DeviceKind; set %s to one "
                                  "of: %s",
                                  static_cast<int>(typed), Describe(kKindIdField), known));
  }
  return Reject(v1::REJECT_CODE_UNKNOWN_DEVICE_KIND,
                absl::StrFormat("kind %s ('%s') is not a kind of %s; use one of: %s",
                                v1::DeviceKind_Name(typed), catalogue::TypedKindId(typed),
                                CatalogueName(kinds), known));
}

// The kind a record names by `kind_id` and/or its typed `kind`, which must agree.
inline std::optional<Rejection> ResolveKind(std::string_view kind_id, v1::DeviceKind typed,
                                            const catalogue::KindTable& kinds,
                                            const catalogue::Kind** out) {
  const catalogue::Kind* k = kind_id.empty() ? kinds.FindTyped(typed) : kinds.Find(kind_id);
  if (k == nullptr ||
      (!kind_id.empty() && typed != v1::DEVICE_KIND_UNSPECIFIED && typed != k->typed)) {
    return BadKind(kind_id, typed, kinds);
  }
  *out = k;
  return std::nullopt;
}

// The catalogue in force: the policy's, else the built-in one.
const catalogue::KindTable& KindsOf(const ValidationPolicy& policy) {
  if (policy.kinds != nullptr) return *policy.kinds;
  static const catalogue::KindTable* const kBuiltIn = catalogue::KindTable::BuiltIn().get();
  return *kBuiltIn;
}

// "values.values[2] (metric 'alarm')": where a value sits, for messages.
std::string ValueAt(int i, std::string_view name) {
  return absl::StrFormat("values.values[%d] (metric %s)", i, Quote(name));
}

Field MemberOf(v1::DeviceKind kind);  // Below, with the typed kinds.

// No metrics: neither the typed member nor a value (absent and empty `values` alike).
[[gnu::noinline]] Rejection NoMetrics(const catalogue::Kind& kind) {
  const std::string each = "each as {name, and number, flag, code, count or codes}";
  if (kind.typed == v1::DEVICE_KIND_UNSPECIFIED) {
    return Reject(v1::REJECT_CODE_MISSING_FIELD,
                  absl::StrFormat("field values is required: at least one metric of a '%s' by "
                                  "name (%s), %s",
                                  kind.id, kind.MetricNames(), each));
  }
  return Reject(v1::REJECT_CODE_MISSING_FIELD,
                absl::StrFormat("field %s or values is required: the metrics of a '%s', typed or "
                                "by name (%s), %s",
                                Describe(MemberOf(kind.typed)), kind.id, kind.MetricNames(), each));
}

[[gnu::noinline]] Rejection UnknownMetric(const catalogue::Kind& kind, int i,
                                          std::string_view name) {
  return Reject(v1::REJECT_CODE_INVALID_METRIC,
                absl::StrFormat("values.values[%d].name %s is not a metric of kind '%s'; its "
                                "metrics are: %s",
                                i, Quote(name), kind.id, kind.MetricNames()));
}

[[gnu::noinline]] Rejection DuplicateMetric(const catalogue::Kind& kind, int i,
                                            std::string_view name) {
  return Reject(v1::REJECT_CODE_INVALID_METRIC,
                absl::StrFormat("%s: metric '%s' of kind '%s' appears more than once; send each "
                                "metric at most once per reading",
                                ValueAt(i, name), name, kind.id));
}

[[gnu::noinline]] Rejection BadValue(int i, std::string_view name, const absl::Status& why) {
  return Reject(v1::REJECT_CODE_INVALID_METRIC,
                absl::StrFormat("%s: %s", ValueAt(i, name), why.message()));
}

[[gnu::noinline]] Rejection CodesOnSingle(const catalogue::KindMetric& m, int i) {
  return Reject(v1::REJECT_CODE_INVALID_METRIC,
                absl::StrFormat("%s: 'codes' is for a list of codes, but metric '%s' holds one "
                                "value; drop 'codes' and set the member of its type",
                                ValueAt(i, m.name), m.name));
}

[[gnu::noinline]] Rejection UnlistedCode(const catalogue::KindMetric& m, int i, int j,
                                         int64_t code) {
  std::string listed;
  for (const v1::MetricCode& c : m.spec->codes()) {
    absl::StrAppend(&listed, listed.empty() ? "" : ", ", c.value(), " (", c.name(), ")");
  }
  return Reject(v1::REJECT_CODE_INVALID_METRIC,
                absl::StrFormat("%s: codes[%d] is %d, which the catalogue does not list for "
                                "metric '%s'; its codes: %s",
                                ValueAt(i, m.name), j, code, m.name, listed));
}

// A repeated code metric: `codes` only, each listed in the catalogue.
std::optional<Rejection> CheckCodes(const catalogue::KindMetric& m, const v1::MetricValue& v,
                                    int i) {
  if (v.value_case() != v1::MetricValue::VALUE_NOT_SET) {
    absl::StatusOr<double> refused = catalogue::MetricValueNumber(m, v);
    return BadValue(i, v.name(),
                    refused.ok() ? absl::InvalidArgumentError(absl::StrFormat(
                                       "metric '%s' is a list of codes: set 'codes'", m.name))
                                 : refused.status());
  }
  if (m.spec == nullptr || m.spec->codes().empty()) return std::nullopt;
  for (int j = 0; j < v.codes_size(); ++j) {
    bool listed = false;
    for (const v1::MetricCode& c : m.spec->codes()) listed |= c.value() == v.codes(j);
    if (!listed) return UnlistedCode(m, i, j, v.codes(j));
  }
  return std::nullopt;
}

// A reading's `values`: each a metric of `kind`, once, of its type, within its bounds.
std::optional<Rejection> CheckValues(const catalogue::Kind& kind, const v1::MetricValues& values) {
  if (values.values().empty()) return NoMetrics(kind);
  static_assert(catalogue::kMaxMetricSlots <= 64, "slots are bits of a uint64_t");
  uint64_t seen = 0;
  // Producers mostly send a kind's metrics in the catalogue's order, some left out: try
  // the metric after the last one found before the name lookup.
  size_t next = 0;
  for (int i = 0; i < values.values_size(); ++i) {
    const v1::MetricValue& v = values.values(i);
    const catalogue::KindMetric* m = nullptr;
    while (next < kind.metrics.size() && kind.metrics[next].name.size() != v.name().size()) {
      ++next;
    }
    if (next < kind.metrics.size() && kind.metrics[next].name == v.name()) {
      m = &kind.metrics[next++];
    } else {
      m = kind.Metric(v.name());
      next = m == nullptr ? kind.metrics.size() : static_cast<size_t>(m - kind.metrics.data()) + 1;
    }
    if (m == nullptr) return UnknownMetric(kind, i, v.name());
    const uint64_t bit = uint64_t{1} << m->slot;
    if ((seen & bit) != 0) return DuplicateMetric(kind, i, v.name());
    seen |= bit;
    if (m->repeated) {
      if (auto why = CheckCodes(*m, v, i)) return why;
      continue;
    }
    if (v.codes_size() != 0) return CodesOnSingle(*m, i);
    const absl::StatusOr<double> number = catalogue::MetricValueNumber(*m, v);
    if (!number.ok()) return BadValue(i, v.name(), number.status());
  }
  return std::nullopt;
}

// The catalogue's bounds of a typed reading's measured number: the kind's metric in that
// slot (its field number).
Range MetricRange(const catalogue::Kind& kind, int slot) {
  const catalogue::KindMetric* m = kind.AtSlot(slot);
  if (m == nullptr) return CatalogueRange(false, 0, false, 0, "");
  return CatalogueRange(m->has_min, m->min, m->has_max, m->max, m->unit);
}

// The catalogue's archive field `name` of `kind`, or null.
const v1::ArchiveFieldSpec* ArchiveField(const catalogue::Kind& kind, std::string_view name) {
  if (kind.spec == nullptr) return nullptr;
  for (const v1::ArchiveFieldSpec& f : kind.spec->archive()) {
    if (f.name() == name) return &f;
  }
  return nullptr;
}

std::string ArchiveFieldNames(const catalogue::Kind& kind) {
  if (kind.spec == nullptr || kind.spec->archive().empty()) return "none";
  return absl::StrJoin(
      kind.spec->archive(), ", ",
      [](std::string* out, const v1::ArchiveFieldSpec& f) { out->append(f.name()); });
}

// The bounds of a typed archive's measured number: the kind's archive field of that name
// ("elevator.installed_year" -> installed_year).
Range ArchiveRange(const catalogue::Kind& kind, std::string_view dotted) {
  const v1::ArchiveFieldSpec* f = ArchiveField(kind, dotted.substr(dotted.find('.') + 1));
  if (f == nullptr) return CatalogueRange(false, 0, false, 0, "");
  return CatalogueRange(f->has_min(), f->min(), f->has_max(), f->max(), f->unit());
}

// "YYYY-MM-DD", a real day.
bool IsDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  absl::CivilDay day;
  return absl::ParseCivilTime(absl::string_view(s.data(), s.size()), &day) &&
         absl::FormatCivilTime(day) == absl::string_view(s.data(), s.size());
}

// A registration's `archive_values`: each a field of the kind's archive, its text of the
// field's type; only records repeat.
std::optional<Rejection> CheckArchiveValues(const catalogue::Kind& kind,
                                            const v1::ArchiveValues& archive) {
  for (int i = 0; i < archive.fields_size(); ++i) {
    const v1::ArchiveValue& a = archive.fields(i);
    const std::string where = absl::StrFormat("archive_values.fields[%d] (archiveValues)", i);
    const v1::ArchiveFieldSpec* f = ArchiveField(kind, a.name());
    if (f == nullptr) {
      return Reject(v1::REJECT_CODE_INVALID_FIELD,
                    absl::StrFormat("%s: name %s is not an archive field of kind '%s'; its "
                                    "archive fields are: %s",
                                    where, Quote(a.name()), kind.id, ArchiveFieldNames(kind)));
    }
    if (f->type() != v1::ARCHIVE_FIELD_TYPE_RECORDS) {
      for (int j = 0; j < i; ++j) {
        if (archive.fields(j).name() == a.name()) {
          return Reject(v1::REJECT_CODE_INVALID_FIELD,
                        absl::StrFormat("%s: archive field '%s' is also fields[%d]; only a "
                                        "records field may repeat, keep one",
                                        where, a.name(), j));
        }
      }
    }
    const std::string_view text = a.value();
    auto malformed = [&](std::string_view want) {
      return Reject(v1::REJECT_CODE_INVALID_FIELD,
                    absl::StrFormat("%s: archive field '%s' of kind '%s' is %s; its value must "
                                    "be %s",
                                    where, a.name(), kind.id, Quote(text), want));
    };
    switch (f->type()) {
      case v1::ARCHIVE_FIELD_TYPE_NUMBER:
      case v1::ARCHIVE_FIELD_TYPE_YEAR: {
        const bool year = f->type() == v1::ARCHIVE_FIELD_TYPE_YEAR;
        double v = 0;
        int64_t whole = 0;
        const bool parsed =
            year ? absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &whole)
                 : absl::SimpleAtod(absl::string_view(text.data(), text.size()), &v);
        if (year) v = static_cast<double>(whole);
        if (!parsed || !std::isfinite(v)) {
          return malformed(year ? "a year, a whole number such as 2009" : "a number such as 12.5");
        }
        const Range range =
            CatalogueRange(f->has_min(), f->min(), f->has_max(), f->max(), f->unit());
        const std::string dotted = absl::StrFormat("archive_values.%s", a.name());
        if (auto why = CheckRange(v, {dotted, dotted}, 0, false, range)) return why;
        break;
      }
      case v1::ARCHIVE_FIELD_TYPE_FLAG:
        if (text != "true" && text != "false") return malformed("true or false");
        break;
      case v1::ARCHIVE_FIELD_TYPE_DATE:
        if (!IsDate(text)) return malformed("a date YYYY-MM-DD such as 2024-05-01");
        break;
      default:  // Text and records: any text.
        break;
    }
  }
  return std::nullopt;
}

// The oneof member that carries a kind's metrics (readings) or archive (devices); the
// members are named alike in both messages.
Field MemberOf(v1::DeviceKind kind) {
  switch (kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER:
      return {"manhole_cover", "manholeCover"};
    case v1::DEVICE_KIND_ELEVATOR:
      return {"elevator", "elevator"};
    case v1::DEVICE_KIND_CURTAIN_WALL:
      return {"curtain_wall", "curtainWall"};
    case v1::DEVICE_KIND_FLOOD_GAUGE:
      return {"flood_gauge", "floodGauge"};
    default:
      return {"none", "none"};
  }
}

// The oneof case numbers are the field numbers 10..13 in both messages, in the order of
// the kinds 1..4 (reading.proto, events.proto).
v1::DeviceKind KindOfMember(int oneof_case) { return static_cast<v1::DeviceKind>(oneof_case - 9); }
static_assert(SensorReading::kManholeCover - 9 == v1::DEVICE_KIND_MANHOLE_COVER &&
              SensorReading::kElevator - 9 == v1::DEVICE_KIND_ELEVATOR &&
              SensorReading::kCurtainWall - 9 == v1::DEVICE_KIND_CURTAIN_WALL &&
              SensorReading::kFloodGauge - 9 == v1::DEVICE_KIND_FLOOD_GAUGE);
static_assert(DeviceRegistered::kManholeCover - 9 == v1::DEVICE_KIND_MANHOLE_COVER &&
              DeviceRegistered::kElevator - 9 == v1::DEVICE_KIND_ELEVATOR &&
              DeviceRegistered::kCurtainWall - 9 == v1::DEVICE_KIND_CURTAIN_WALL &&
              DeviceRegistered::kFloodGauge - 9 == v1::DEVICE_KIND_FLOOD_GAUGE);

// A typed member (metrics or archive) that is not the kind's own: `values_member` is
// where a catalogue-only kind's go ("values", "archive_values").
[[gnu::noinline]] Rejection KindMismatch(const catalogue::Kind& kind, int oneof_case,
                                         std::string_view what, std::string_view values_member) {
  const std::string_view sent = MemberOf(KindOfMember(oneof_case)).name;
  if (kind.typed == v1::DEVICE_KIND_UNSPECIFIED) {
    return Reject(v1::REJECT_CODE_KIND_MISMATCH,
                  absl::StrFormat("the kind is '%s' but the %s are %s, the typed message of kind "
                                  "'%s'; send the %s of a '%s' as %s",
                                  kind.id, what, sent, sent, what, kind.id, values_member));
  }
  return Reject(v1::REJECT_CODE_KIND_MISMATCH,
                absl::StrFormat("the kind is '%s' but the %s are %s; send them as %s", kind.id,
                                what, sent, MemberOf(kind.typed).name));
}
// RFC 3339 in UTC with a "Z" and as many fractional digits as needed.
std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

// The bounds of google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;

constexpr Field kEventTimeField = {"event_time", "eventTime"};

// Checks an event time against the record's timestamp, or against ingest's clock `now`
// when the record has none (the only case in which the verdict depends on when the
// record is consumed).
std::optional<Rejection> CheckEventTime(bool present, const google::protobuf::Timestamp& ts,
                                        const ValidationPolicy& policy, const KafkaRecord& record,
                                        absl::Time clock_now) {
  const bool stamped = record.timestamp != absl::InfinitePast();
  const absl::Time now = stamped ? record.timestamp : clock_now;
  const char* reference = stamped ? "the record's Kafka timestamp" : "ingest's clock";
  if (!present) return Missing(kEventTimeField);
  if (ts.seconds() < kMinTimestampSeconds || ts.seconds() > kMaxTimestampSeconds ||
      ts.nanos() < 0 || ts.nanos() > 999'999'999) {
    return Reject(v1::REJECT_CODE_UNDECODABLE,
                  absl::StrFormat("field %s is not a valid google.protobuf.Timestamp: seconds "
                                  "%d, nanos %d (years 1..9999, nanos 0..999999999)",
                                  Describe(kEventTimeField), ts.seconds(), ts.nanos()));
  }
  const absl::Time t = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  if (t > now + policy.max_clock_skew) {
    return Reject(v1::REJECT_CODE_EVENT_TIME_IN_FUTURE,
                  absl::StrFormat("field %s %s is ahead of %s %s by %s, more than "
                                  "the allowed clock skew of %s",
                                  Describe(kEventTimeField), Rfc3339(t), reference, Rfc3339(now),
                                  absl::FormatDuration(t - now),
                                  absl::FormatDuration(policy.max_clock_skew)));
  }
  if (t < now - policy.max_age) {
    return Reject(
        v1::REJECT_CODE_EVENT_TIME_TOO_OLD,
        absl::StrFormat("field %s %s is older than %s (%s %s minus the "
                        "retention of raw readings, %s)",
                        Describe(kEventTimeField), Rfc3339(t), Rfc3339(now - policy.max_age),
                        reference, Rfc3339(now), absl::FormatDuration(policy.max_age)));
  }
  return std::nullopt;
}

constexpr Field kDeviceIdField = {"device_id", "deviceId"};
constexpr Field kReadingIdField = {"reading_id", "readingId"};
constexpr Field kReportIdField = {"report_id", "reportId"};
constexpr Field kGridCodeField = {"grid.grid_code", "grid.gridCode"};
constexpr Field kCategoryCodeField = {"category.code", "category.code"};

}  // namespace

std::optional<Rejection> DecodeReading(const KafkaRecord& record, const ValidationPolicy& policy,
                                       absl::Time now, v1::SensorReading* out) {
  if (std::optional<Rejection> why = Parse(record, policy, out, &KeepValues)) return why;
  const SensorReading& r = *out;
  if (auto why = CheckId(r.device_id(), kDeviceIdField, Slash::kForbidden)) return why;
  if (auto why = CheckKey(record.key, r.device_id(), kDeviceIdField)) return why;
  if (auto why = CheckId(r.reading_id(), kReadingIdField, Slash::kAllowed)) return why;
  const catalogue::Kind* kind = nullptr;
  if (auto why = ResolveKind(r.kind_id(), r.kind(), KindsOf(policy), &kind)) return why;
  if (!r.has_event_time()) return Missing(kEventTimeField);
  switch (r.metrics_case()) {
    case SensorReading::METRICS_NOT_SET:
      return NoMetrics(*kind);
    case SensorReading::kValues:
      if (auto why = CheckValues(*kind, r.values())) return why;
      break;
    default:
      if (KindOfMember(r.metrics_case()) != kind->typed) {
        return KindMismatch(*kind, r.metrics_case(), "metrics", "values");
      }
      if (auto why = CheckBounds(
              r, r.metrics_case(), kReadingBounds,
              [kind](const ReadingBound& b) { return MetricRange(*kind, b.measured); })) {
        return why;
      }
  }
  // A typed kind named by kind_id alone: stages that read `kind` see it too.
  if (r.kind() == v1::DEVICE_KIND_UNSPECIFIED) out->set_kind(kind->typed);
  return CheckEventTime(r.has_event_time(), r.event_time(), policy, record, now);
}

std::optional<Rejection> DecodeReport(const KafkaRecord& record, const ValidationPolicy& policy,
                                      absl::Time now, v1::CitizenReport* out) {
  if (std::optional<Rejection> why = Parse(record, policy, out)) return why;
  const v1::CitizenReport& r = *out;
  if (auto why = CheckId(r.report_id(), kReportIdField, Slash::kForbidden)) return why;
  if (auto why = CheckKey(record.key, r.report_id(), kReportIdField)) return why;
  switch (r.source()) {
    case v1::CASE_SOURCE_HOTLINE_12345:
    case v1::CASE_SOURCE_STREET_PATROL:
    case v1::CASE_SOURCE_RESIDENTIAL_STATION:
      break;
    default:
      return Reject(
          r.source() == v1::CASE_SOURCE_UNSPECIFIED ? v1::REJECT_CODE_MISSING_FIELD
                                                    : v1::REJECT_CODE_INVALID_FIELD,
          absl::StrFormat("field source is required: one of CASE_SOURCE_HOTLINE_12345, "
                          "CASE_SOURCE_STREET_PATROL or CASE_SOURCE_RESIDENTIAL_STATION, not %s",
                          v1::CaseSource_IsValid(r.source())
                              ? v1::CaseSource_Name(r.source())
                              : absl::StrFormat("%d", static_cast<int>(r.source()))));
  }
  if (auto why = CheckId(r.grid().grid_code(), kGridCodeField, Slash::kAllowed)) return why;
  if (auto why = CheckId(r.category().code(), kCategoryCodeField, Slash::kAllowed)) return why;
  if (r.has_location()) {
    if (auto why = CheckLocation(r.location())) return why;
  }
  if (r.has_originator()) {
    const v1::OrgUnit& o = r.originator();
    if (o.level() == v1::GRID_LEVEL_UNSPECIFIED || !v1::GridLevel_IsValid(o.level())) {
      return Reject(v1::REJECT_CODE_MISSING_FIELD,
                    absl::StrFormat("field originator.level is required when originator is "
                                    "set: a known cityops.v1.GridLevel, not %d",
                                    static_cast<int>(o.level())));
    }
    if (auto why = CheckId(o.code(), {"originator.code", "originator.code"}, Slash::kAllowed)) {
      return why;
    }
    if (!o.department().empty() && !kernel::IsDepartmentName(o.department())) {
      return Reject(v1::REJECT_CODE_INVALID_FIELD,
                    absl::StrFormat("field originator.department '%s' is not a department's "
                                    "name: lowercase words joined by '-', e.g. water-authority, "
                                    "or empty for a grid unit",
                                    absl::CHexEscape(o.department())));
    }
  }
  return CheckEventTime(r.has_event_time(), r.event_time(), policy, record, now);
}

std::optional<Rejection> DecodeDevice(const KafkaRecord& record, const ValidationPolicy& policy,
                                      v1::DeviceRegistered* out) {
  if (std::optional<Rejection> why = Parse(record, policy, out)) return why;
  const DeviceRegistered& d = *out;
  if (auto why = CheckId(d.device_id(), kDeviceIdField, Slash::kForbidden)) return why;
  if (auto why = CheckKey(record.key, d.device_id(), kDeviceIdField)) return why;
  const catalogue::Kind* kind = nullptr;
  if (auto why = ResolveKind(d.kind_id(), d.kind(), KindsOf(policy), &kind)) return why;
  if (auto why = CheckId(d.grid().grid_code(), kGridCodeField, Slash::kAllowed)) return why;
  switch (d.archive_case()) {
    case DeviceRegistered::ARCHIVE_NOT_SET:
      break;
    case DeviceRegistered::kArchiveValues:
      if (kind->typed != v1::DEVICE_KIND_UNSPECIFIED) {
        return Reject(v1::REJECT_CODE_KIND_MISMATCH,
                      absl::StrFormat("kind '%s' has a typed archive: send it as %s, not "
                                      "archive_values (archiveValues)",
                                      kind->id, Describe(MemberOf(kind->typed))));
      }
      if (auto why = CheckArchiveValues(*kind, d.archive_values())) return why;
      break;
    default:
      if (KindOfMember(d.archive_case()) != kind->typed) {
        return KindMismatch(*kind, d.archive_case(), "archive data", "archive_values");
      }
      if (auto why = CheckBounds(
              d, d.archive_case(), kArchiveBounds,
              [kind](const ArchiveBound& b) { return ArchiveRange(*kind, b.field.name); })) {
        return why;
      }
  }
  // A typed kind named by kind_id alone: stages that read `kind` see it too.
  if (d.kind() == v1::DEVICE_KIND_UNSPECIFIED) out->set_kind(kind->typed);
  if (d.has_location()) {
    if (auto why = CheckLocation(d.location())) return why;
  }
  if (d.has_reporting_interval()) {
    const google::protobuf::Duration& i = d.reporting_interval();
    if (i.nanos() < 0 || i.nanos() > 999'999'999) {
      return Reject(v1::REJECT_CODE_INVALID_METRIC,
                    absl::StrFormat("reporting_interval (reportingInterval) has nanos %d, "
                                    "outside 0..999999999",
                                    i.nanos()));
    }
    // Seconds are int64; as a double they only lose precision far outside the range.
    if (auto why = CheckRange(static_cast<double>(i.seconds()),
                              {"reporting_interval.seconds", "reportingInterval"}, 0, false,
                              kReportingIntervalSeconds)) {
      return why;
    }
  }
  return std::nullopt;
}

std::string_view RejectCodeName(v1::RejectCode code) {
  constexpr std::string_view kPrefix = "REJECT_CODE_";
  std::string_view name = v1::RejectCode_Name(code);  // A static string; empty if unknown.
  if (name.empty()) return "UNKNOWN";
  if (name.starts_with(kPrefix)) name.remove_prefix(kPrefix.size());
  return name;
}

}  // namespace cityops::ingest
