// The record decoder (ingest/record_decoder.h): every encoding, every reject code, the
// bounds of every metric, the time window and the key check, with a fixed `now`.
#include "ingest/record_decoder.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_format.h"
#include "catalogue/kinds.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace cityops::ingest {
namespace {

using google::protobuf::util::MessageDifferencer;

const absl::Time kNow = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21T14:13:20Z
constexpr double kInf = std::numeric_limits<double>::infinity();

// A record that owns its bytes; view() is what the decoder sees.
struct Record {
  std::string key;
  std::string value;
  std::string content_type;

  KafkaRecord view() const {
    return {.topic = "t", .key = key, .value = value, .content_type = content_type};
  }
};

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t seconds = absl::ToUnixSeconds(t);  // Rounds down.
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
}

v1::SensorReading Reading(v1::DeviceKind kind, const std::string& device_id = "3101040103000001") {
  v1::SensorReading r;
  r.set_device_id(device_id);
  r.set_kind(kind);
  r.set_reading_id(device_id + ":1");
  SetTime(r.mutable_event_time(), kNow - absl::Minutes(1));
  switch (kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER: {
      v1::ManholeCoverMetrics* m = r.mutable_manhole_cover();
      m->set_tilt_deg(1.5);
      m->set_cover_open(false);
      m->set_well_water_level_m(2.4);
      m->set_gas_ppm(3);
      m->set_battery_pct(88);
      break;
    }
    case v1::DEVICE_KIND_ELEVATOR: {
      v1::ElevatorMetrics* m = r.mutable_elevator();
      m->set_floor(-2);
      m->set_direction(v1::DIRECTION_UP);
      m->set_speed_m_per_s(1.4);
      m->set_door_state(v1::DOOR_STATE_CLOSED);
      m->set_passenger_present(true);
      m->set_in_door_zone(false);
      m->set_mains_power(true);
      m->set_machine_room_temp_c(31);
      m->add_fault_codes(37);
      break;
    }
    case v1::DEVICE_KIND_CURTAIN_WALL: {
      v1::CurtainWallMetrics* m = r.mutable_curtain_wall();
      m->set_inclination_deg(-0.12);
      m->set_displacement_mm(0.8);
      m->set_vibration_mm_per_s2(40);
      m->set_natural_frequency_hz(0.9);
      m->set_wind_speed_m_per_s(17.2);
      m->set_temperature_inside_c(24);
      m->set_temperature_outside_c(-3);
      break;
    }
    case v1::DEVICE_KIND_FLOOD_GAUGE: {
      v1::FloodGaugeMetrics* m = r.mutable_flood_gauge();
      m->set_water_depth_cm(27.5);
      m->set_rainfall_mm_per_h(52);
      m->set_battery_pct(91);
      break;
    }
    default:
      break;
  }
  return r;
}

v1::SensorReading Manhole() { return Reading(v1::DEVICE_KIND_MANHOLE_COVER); }

Record Binary(const google::protobuf::Message& m, const std::string& key = "") {
  return {key, m.SerializeAsString(), ""};
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(m, &json).ok());
  return json;
}

Record Json(const google::protobuf::Message& m, const std::string& key = "") {
  return {key, ToJson(m), "application/json"};
}

// Confluent Schema Registry framing: magic byte 0, schema id 7, then `indexes` (raw
// bytes of the message-index list; empty for JSON).
std::string Framed(const std::string& indexes, const std::string& payload) {
  return std::string("\0\0\0\0\x07", 5) + indexes + payload;
}

std::optional<Rejection> DecodeReading(const Record& record, v1::SensorReading* out,
                                       const ValidationPolicy& policy = {}) {
  return ingest::DecodeReading(record.view(), policy, kNow, out);
}

std::optional<Rejection> DecodeReading(const Record& record) {
  v1::SensorReading out;
  return DecodeReading(record, &out);
}

// The code of the rejection, or "OK".
std::string CodeOf(const std::optional<Rejection>& why) {
  return why.has_value() ? std::string(RejectCodeName(why->code)) : "OK";
}

std::string MessageOf(const std::optional<Rejection>& why) {
  return why.has_value() ? why->message : "";
}

v1::SensorReading With(v1::SensorReading r, const std::function<void(v1::SensorReading&)>& f) {
  f(r);
  return r;
}

TEST_CASE("each reject code has a reading that produces it", "[decoder]") {
  const v1::SensorReading good = Manhole();
  const std::vector<std::pair<v1::RejectCode, Record>> cases = {
      {v1::REJECT_CODE_UNDECODABLE, Record{"", std::string("\x0a\xff\xff\xff", 4), ""}},
      {v1::REJECT_CODE_UNSUPPORTED_ENCODING, Record{"", good.SerializeAsString(), "text/csv"}},
      {v1::REJECT_CODE_OVERSIZED, Record{"", std::string(64 * 1024 + 1, 'x'), ""}},
      {v1::REJECT_CODE_MISSING_FIELD, Binary(With(good, [](auto& r) { r.clear_reading_id(); }))},
      {v1::REJECT_CODE_UNKNOWN_DEVICE_KIND,
       Binary(With(good, [](auto& r) { r.set_kind(static_cast<v1::DeviceKind>(99)); }))},
      {v1::REJECT_CODE_KIND_MISMATCH,
       Binary(With(good, [](auto& r) { r.set_kind(v1::DEVICE_KIND_FLOOD_GAUGE); }))},
      {v1::REJECT_CODE_INVALID_METRIC,
       Binary(With(good, [](auto& r) { r.mutable_manhole_cover()->set_tilt_deg(std::nan("")); }))},
      {v1::REJECT_CODE_EVENT_TIME_IN_FUTURE,
       Binary(With(good, [](auto& r) { SetTime(r.mutable_event_time(), kNow + absl::Hours(1)); }))},
      {v1::REJECT_CODE_EVENT_TIME_TOO_OLD,
       Binary(With(good,
                   [](auto& r) { SetTime(r.mutable_event_time(), kNow - absl::Hours(24 * 31)); }))},
      {v1::REJECT_CODE_KEY_MISMATCH, Binary(good, "someone-else")},
      {v1::REJECT_CODE_INVALID_FIELD,
       Binary(With(good, [](auto& r) { r.set_device_id("dev ice"); }), "")},
  };
  std::set<v1::RejectCode> produced;
  for (const auto& [code, record] : cases) {
    const std::optional<Rejection> why = DecodeReading(record);
    INFO(RejectCodeName(code) << ": " << MessageOf(why));
    REQUIRE(why.has_value());
    CHECK(why->code == code);
    CHECK_FALSE(why->message.empty());
    produced.insert(why->code);
  }
  // Every code but UNSPECIFIED.
  CHECK(produced.size() == static_cast<size_t>(v1::RejectCode_MAX));
}

TEST_CASE("a valid reading of every kind decodes from binary protobuf unchanged", "[decoder]") {
  for (v1::DeviceKind kind : {v1::DEVICE_KIND_MANHOLE_COVER, v1::DEVICE_KIND_ELEVATOR,
                              v1::DEVICE_KIND_CURTAIN_WALL, v1::DEVICE_KIND_FLOOD_GAUGE}) {
    const v1::SensorReading r = Reading(kind);
    INFO(v1::DeviceKind_Name(kind));
    for (const char* content_type : {"", "application/x-protobuf", "application/protobuf",
                                     "Application/X-Protobuf; proto=cityops.v1.SensorReading"}) {
      INFO(content_type);
      Record record = Binary(r, r.device_id());
      record.content_type = content_type;
      v1::SensorReading out;
      const std::optional<Rejection> why = DecodeReading(record, &out);
      INFO(MessageOf(why));
      REQUIRE_FALSE(why.has_value());
      CHECK(MessageDifferencer::Equals(out, r));
    }
  }
}

TEST_CASE("a reading decodes from JSON by the protobuf JSON mapping, charset or not", "[decoder]") {
  for (v1::DeviceKind kind : {v1::DEVICE_KIND_MANHOLE_COVER, v1::DEVICE_KIND_ELEVATOR,
                              v1::DEVICE_KIND_CURTAIN_WALL, v1::DEVICE_KIND_FLOOD_GAUGE}) {
    const v1::SensorReading r = Reading(kind);
    for (const char* content_type :
         {"application/json", "Application/JSON; charset=utf-8", " application/json ;x=y"}) {
      INFO(v1::DeviceKind_Name(kind) << " " << content_type);
      Record record = Json(r, r.device_id());
      record.content_type = content_type;
      v1::SensorReading out;
      const std::optional<Rejection> why = DecodeReading(record, &out);
      INFO(MessageOf(why));
      REQUIRE_FALSE(why.has_value());
      CHECK(MessageDifferencer::Equals(out, r));
    }
  }
  // Hand-written, with proto field names (the mapping accepts both spellings).
  const Record handwritten{"gauge-1",
                           R"({"device_id":"gauge-1","kind":"DEVICE_KIND_FLOOD_GAUGE",)"
                           R"("eventTime":"2026-09-21T14:00:00Z","readingId":"gauge-1:7",)"
                           R"("floodGauge":{"waterDepthCm":-0.3}})",
                           "application/json"};
  v1::SensorReading out;
  REQUIRE(CodeOf(DecodeReading(handwritten, &out)) == "OK");
  CHECK(out.flood_gauge().water_depth_cm() == -0.3);
}

TEST_CASE("an unknown content type is UNSUPPORTED_ENCODING", "[decoder]") {
  const v1::SensorReading r = Manhole();
  for (const char* content_type : {"text/csv", "application/xml", "application/jsonx", "; x"}) {
    Record record = Binary(r);
    record.content_type = content_type;
    const std::optional<Rejection> why = DecodeReading(record);
    INFO(content_type << ": " << MessageOf(why));
    CHECK(CodeOf(why) == "UNSUPPORTED_ENCODING");
    CHECK_THAT(MessageOf(why), Catch::Contains(content_type));
  }
}

TEST_CASE("Confluent framing with message indexes [0] or the 0 shorthand is stripped",
          "[decoder]") {
  const v1::SensorReading r = Reading(v1::DEVICE_KIND_ELEVATOR);
  // The shorthand: a single byte 0. The full list [0]: count 1 (zigzag 2), index 0.
  for (const std::string& indexes : {std::string("\0", 1), std::string("\x02\x00", 2)}) {
    v1::SensorReading out;
    const Record record{r.device_id(), Framed(indexes, r.SerializeAsString()), ""};
    const std::optional<Rejection> why = DecodeReading(record, &out);
    INFO(MessageOf(why));
    REQUIRE_FALSE(why.has_value());
    CHECK(MessageDifferencer::Equals(out, r));
  }
}

TEST_CASE("Confluent framed JSON carries no message indexes", "[decoder]") {
  const v1::SensorReading r = Reading(v1::DEVICE_KIND_CURTAIN_WALL);
  v1::SensorReading out;
  const Record record{r.device_id(), Framed("", ToJson(r)), "application/json"};
  const std::optional<Rejection> why = DecodeReading(record, &out);
  INFO(MessageOf(why));
  REQUIRE_FALSE(why.has_value());
  CHECK(MessageDifferencer::Equals(out, r));
}

TEST_CASE("Confluent framing naming another message type is UNSUPPORTED_ENCODING", "[decoder]") {
  const std::string payload = Manhole().SerializeAsString();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("\x02\x02", 2), "[1]"},         // [1]: the second message type.
      {std::string("\x04\x00\x02", 3), "[0, 1]"},  // A nested type.
      {std::string("\x02\x01", 2), "[-1]"},
  };
  for (const auto& [indexes, shown] : cases) {
    const std::optional<Rejection> why = DecodeReading(Record{"", Framed(indexes, payload), ""});
    INFO(MessageOf(why));
    CHECK(CodeOf(why) == "UNSUPPORTED_ENCODING");
    CHECK_THAT(MessageOf(why), Catch::Contains(shown) && Catch::Contains("schema id 7"));
  }
}

TEST_CASE("malformed Confluent framing is UNDECODABLE", "[decoder]") {
  const std::vector<std::string> values = {
      std::string("\0", 1),
      std::string("\0\0\0\x07", 4),                // No room for the schema id.
      std::string("\0\0\0\0\x07", 5),              // No message-index list.
      std::string("\0\0\0\0\x07\x80", 6),          // The count's varint never ends.
      std::string("\0\0\0\0\x07\x01\x00", 7),      // Count -1.
      std::string("\0\0\0\0\x07\x14\x00", 7),      // Count 10, one byte left.
      std::string("\0\0\0\0\x07\x04\x00\xff", 8),  // The second index never ends.
      Framed(std::string(11, '\xff'), "\x01"),     // A varint longer than 10 bytes.
  };
  for (const std::string& value : values) {
    const std::optional<Rejection> why = DecodeReading(Record{"", value, ""});
    INFO(MessageOf(why));
    CHECK(CodeOf(why) == "UNDECODABLE");
    CHECK_THAT(MessageOf(why), Catch::Contains("Confluent"));
  }
}

TEST_CASE("bytes that are not protobuf are UNDECODABLE, naming the type and the size",
          "[decoder]") {
  const std::optional<Rejection> why =
      DecodeReading(Record{"", std::string("\x0a\xff\xff\xff", 4), ""});
  CHECK(CodeOf(why) == "UNDECODABLE");
  CHECK(MessageOf(why) == "4 bytes could not be parsed as protobuf cityops.v1.SensorReading");
}

TEST_CASE("JSON that does not fit the schema is UNDECODABLE with protobuf's reason", "[decoder]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"deviceId":"d","colour":"red"})", "colour"},  // Unknown fields are refused.
      {R"({"deviceId":"d","floodGauge":{"waterDepthCm":"deep"}})", "flood_gauge.water_depth_cm"},
      {R"({"deviceId":"d","kind":"DEVICE_KIND_TRAMPOLINE"})", "kind"},
      {R"({"deviceId":"d")", ""},
      {"", ""},
  };
  for (const auto& [json, field] : cases) {
    const std::optional<Rejection> why = DecodeReading(Record{"", json, "application/json"});
    INFO(json << " -> " << MessageOf(why));
    CHECK(CodeOf(why) == "UNDECODABLE");
    CHECK_THAT(MessageOf(why),
               Catch::Contains("cityops.v1.SensorReading") && Catch::Contains(field));
  }
}

TEST_CASE("a value over the size limit is OVERSIZED, one at the limit is read", "[decoder]") {
  const v1::SensorReading r = Manhole();
  const std::string bytes = r.SerializeAsString();
  ValidationPolicy policy;
  policy.max_record_bytes = bytes.size();
  v1::SensorReading out;
  CHECK(CodeOf(DecodeReading(Binary(r), &out, policy)) == "OK");
  policy.max_record_bytes = bytes.size() - 1;
  const std::optional<Rejection> why = DecodeReading(Binary(r), &out, policy);
  CHECK(CodeOf(why) == "OVERSIZED");
  CHECK(MessageOf(why) == absl::StrFormat("record value is %d bytes; the limit is %d bytes",
                                          bytes.size(), bytes.size() - 1));
}

TEST_CASE("each required field of a reading is MISSING_FIELD, named in both spellings",
          "[decoder]") {
  const v1::SensorReading good = Manhole();
  const std::vector<std::pair<std::function<void(v1::SensorReading&)>, std::string>> cases = {
      {[](auto& r) { r.clear_device_id(); }, "field device_id (deviceId) is required"},
      {[](auto& r) { r.clear_reading_id(); }, "field reading_id (readingId) is required"},
      {[](auto& r) { r.clear_event_time(); }, "field event_time (eventTime) is required"},
      {[](auto& r) { r.clear_metrics(); },
       "field manhole_cover (manholeCover) or values is required: the metrics of a "
       "'manhole_cover', typed or by name (tilt_deg, cover_open, well_water_level_m, gas_ppm, "
       "battery_pct), each as {name, and number, flag, code, count or codes}"},
  };
  for (const auto& [change, message] : cases) {
    const std::optional<Rejection> why = DecodeReading(Binary(With(good, change)));
    CHECK(CodeOf(why) == "MISSING_FIELD");
    CHECK(MessageOf(why) == message);
  }
  // An empty value is a reading with nothing set.
  CHECK(MessageOf(DecodeReading(Record{})) == "field device_id (deviceId) is required");
}

TEST_CASE("ids are 1 to 128 bytes of printable ASCII, device ids without a slash", "[decoder]") {
  const std::vector<std::string> bad_device_ids = {
      std::string("dev\0ice", 7), "dev\nice", "dev ice", "dev/ice", "g\xc3\xa9", "\x7f",
      std::string(129, 'd')};
  for (const std::string& id : bad_device_ids) {
    const std::optional<Rejection> why =
        DecodeReading(Binary(Reading(v1::DEVICE_KIND_FLOOD_GAUGE, id)));
    INFO(MessageOf(why));
    CHECK(CodeOf(why) == "INVALID_FIELD");
    CHECK_THAT(MessageOf(why), Catch::StartsWith("field device_id (deviceId)"));
  }
  const std::string longest(128, 'd');
  CHECK(CodeOf(DecodeReading(Binary(With(Reading(v1::DEVICE_KIND_FLOOD_GAUGE, longest),
                                         [&](auto& r) { r.set_reading_id(longest); })))) == "OK");
  CHECK(CodeOf(DecodeReading(Binary(Reading(v1::DEVICE_KIND_FLOOD_GAUGE, "!~:-_.")))) == "OK");
  // Reading ids may hold a slash: "<device_id>/<reading_id>" still splits at the first one.
  CHECK(CodeOf(DecodeReading(
            Binary(With(Manhole(), [](auto& r) { r.set_reading_id("2026/09/21/1"); })))) == "OK");
  const std::optional<Rejection> why =
      DecodeReading(Binary(With(Manhole(), [](auto& r) { r.set_reading_id("a\tb"); })));
  CHECK(CodeOf(why) == "INVALID_FIELD");
  CHECK_THAT(MessageOf(why),
             Catch::Contains("reading_id (readingId)") && Catch::Contains("0x09 at offset 1"));
}

TEST_CASE("an unset or unknown kind is UNKNOWN_DEVICE_KIND", "[decoder]") {
  const std::optional<Rejection> unset = DecodeReading(
      Binary(With(Manhole(), [](auto& r) { r.set_kind(v1::DEVICE_KIND_UNSPECIFIED); })));
  CHECK(CodeOf(unset) == "UNKNOWN_DEVICE_KIND");
  CHECK_THAT(MessageOf(unset), Catch::StartsWith("field kind_id (kindId) is required (or kind") &&
                                   Catch::Contains("manhole_cover, elevator"));
  const std::optional<Rejection> unknown = DecodeReading(
      Binary(With(Manhole(), [](auto& r) { r.set_kind(static_cast<v1::DeviceKind>(5)); })));
  CHECK(CodeOf(unknown) == "UNKNOWN_DEVICE_KIND");
  CHECK_THAT(MessageOf(unknown), Catch::StartsWith("kind 5 is not a known"));
}

TEST_CASE("metrics of another kind than the reading's are KIND_MISMATCH", "[decoder]") {
  const std::optional<Rejection> why =
      DecodeReading(Binary(With(Manhole(), [](auto& r) { r.set_kind(v1::DEVICE_KIND_ELEVATOR); })));
  CHECK(CodeOf(why) == "KIND_MISMATCH");
  CHECK(MessageOf(why) ==
        "the kind is 'elevator' but the metrics are manhole_cover; send them as elevator");
}

// One bounded metric: how to set it on a reading of its kind, and its documented range.
struct Bounded {
  std::string name;  // As the message names it.
  v1::DeviceKind kind;
  double min;
  double max;
  bool integral;
  std::function<void(v1::SensorReading&, double)> set;
};

std::vector<Bounded> AllBounds() {
  using R = v1::SensorReading;
  const auto manhole = v1::DEVICE_KIND_MANHOLE_COVER;
  const auto elevator = v1::DEVICE_KIND_ELEVATOR;
  const auto wall = v1::DEVICE_KIND_CURTAIN_WALL;
  const auto gauge = v1::DEVICE_KIND_FLOOD_GAUGE;
  return {
      {"manhole_cover.tilt_deg (manholeCover.tiltDeg)", manhole, 0, 180, false,
       [](R& r, double v) { r.mutable_manhole_cover()->set_tilt_deg(v); }},
      {"manhole_cover.well_water_level_m (manholeCover.wellWaterLevelM)", manhole, -10, 10, false,
       [](R& r, double v) { r.mutable_manhole_cover()->set_well_water_level_m(v); }},
      {"manhole_cover.gas_ppm (manholeCover.gasPpm)", manhole, 0, 1e6, false,
       [](R& r, double v) { r.mutable_manhole_cover()->set_gas_ppm(v); }},
      {"manhole_cover.battery_pct (manholeCover.batteryPct)", manhole, 0, 100, false,
       [](R& r, double v) { r.mutable_manhole_cover()->set_battery_pct(v); }},
      {"elevator.floor", elevator, -20, 300, true,
       [](R& r, double v) { r.mutable_elevator()->set_floor(static_cast<int32_t>(v)); }},
      {"elevator.direction", elevator, 0, 3, true,
       [](R& r, double v) {
         r.mutable_elevator()->set_direction(static_cast<v1::Direction>(static_cast<int>(v)));
       }},
      {"elevator.speed_m_per_s (elevator.speedMPerS)", elevator, 0, 25, false,
       [](R& r, double v) { r.mutable_elevator()->set_speed_m_per_s(v); }},
      {"elevator.door_state (elevator.doorState)", elevator, 0, 4, true,
       [](R& r, double v) {
         r.mutable_elevator()->set_door_state(static_cast<v1::DoorState>(static_cast<int>(v)));
       }},
      {"elevator.machine_room_temp_c (elevator.machineRoomTempC)", elevator, -50, 120, false,
       [](R& r, double v) { r.mutable_elevator()->set_machine_room_temp_c(v); }},
      {"elevator.fault_codes[1] (elevator.faultCodes[1])", elevator, 1, 255, true,
       [](R& r, double v) { r.mutable_elevator()->add_fault_codes(static_cast<int32_t>(v)); }},
      {"curtain_wall.inclination_deg (curtainWall.inclinationDeg)", wall, -90, 90, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_inclination_deg(v); }},
      {"curtain_wall.displacement_mm (curtainWall.displacementMm)", wall, -2000, 2000, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_displacement_mm(v); }},
      {"curtain_wall.vibration_mm_per_s2 (curtainWall.vibrationMmPerS2)", wall, 0, 1e5, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_vibration_mm_per_s2(v); }},
      {"curtain_wall.natural_frequency_hz (curtainWall.naturalFrequencyHz)", wall, 0, 100, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_natural_frequency_hz(v); }},
      {"curtain_wall.wind_speed_m_per_s (curtainWall.windSpeedMPerS)", wall, 0, 120, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_wind_speed_m_per_s(v); }},
      {"curtain_wall.temperature_inside_c (curtainWall.temperatureInsideC)", wall, -60, 90, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_temperature_inside_c(v); }},
      {"curtain_wall.temperature_outside_c (curtainWall.temperatureOutsideC)", wall, -60, 90, false,
       [](R& r, double v) { r.mutable_curtain_wall()->set_temperature_outside_c(v); }},
      {"flood_gauge.water_depth_cm (floodGauge.waterDepthCm)", gauge, -10, 1000, false,
       [](R& r, double v) { r.mutable_flood_gauge()->set_water_depth_cm(v); }},
      {"flood_gauge.rainfall_mm_per_h (floodGauge.rainfallMmPerH)", gauge, 0, 500, false,
       [](R& r, double v) { r.mutable_flood_gauge()->set_rainfall_mm_per_h(v); }},
      {"flood_gauge.battery_pct (floodGauge.batteryPct)", gauge, 0, 100, false,
       [](R& r, double v) { r.mutable_flood_gauge()->set_battery_pct(v); }},
  };
}

TEST_CASE("every metric accepts its bounds and rejects values beyond them, NaN and infinities",
          "[decoder]") {
  for (const Bounded& b : AllBounds()) {
    auto decode = [&](double v) {
      v1::SensorReading r = Reading(b.kind);
      b.set(r, v);
      return DecodeReading(Binary(r));
    };
    INFO(b.name);
    CHECK(CodeOf(decode(b.min)) == "OK");
    CHECK(CodeOf(decode(b.max)) == "OK");
    std::vector<double> outside = {b.integral ? b.min - 1 : std::nextafter(b.min, -kInf),
                                   b.integral ? b.max + 1 : std::nextafter(b.max, kInf)};
    if (!b.integral) outside.insert(outside.end(), {std::nan(""), kInf, -kInf});
    for (double v : outside) {
      const std::optional<Rejection> why = decode(v);
      INFO(v << ": " << MessageOf(why));
      CHECK(CodeOf(why) == "INVALID_METRIC");
      CHECK_THAT(MessageOf(why), Catch::StartsWith(b.name + " is "));
    }
  }
  // The message gives the value exactly and the allowed range with its unit.
  const std::optional<Rejection> why = DecodeReading(
      Binary(With(Manhole(), [](auto& r) { r.mutable_manhole_cover()->set_tilt_deg(180.5); })));
  CHECK(MessageOf(why) ==
        "manhole_cover.tilt_deg (manholeCover.tiltDeg) is 180.5, outside the physically "
        "possible range 0..180 deg");
  const std::optional<Rejection> nan = DecodeReading(Binary(
      With(Manhole(), [](auto& r) { r.mutable_manhole_cover()->set_gas_ppm(std::nan("")); })));
  CHECK(MessageOf(nan) ==
        "manhole_cover.gas_ppm (manholeCover.gasPpm) is nan; values must be finite numbers "
        "within 0..1e+06 ppm");
}

TEST_CASE("metrics are optional: a reading with empty metrics of its kind is valid", "[decoder]") {
  v1::SensorReading r = Reading(v1::DEVICE_KIND_FLOOD_GAUGE);
  r.mutable_flood_gauge()->Clear();
  CHECK(CodeOf(DecodeReading(Binary(r))) == "OK");
  CHECK(CodeOf(DecodeReading(Json(r))) == "OK");
}

TEST_CASE("NaN and infinity spelled in JSON are INVALID_METRIC", "[decoder]") {
  for (const char* value : {"\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "1e999"}) {
    const std::string json = absl::StrFormat(
        R"({"deviceId":"g","kind":"DEVICE_KIND_FLOOD_GAUGE","eventTime":"2026-09-21T14:00:00Z",)"
        R"("readingId":"1","floodGauge":{"rainfallMmPerH":%s}})",
        value);
    const std::optional<Rejection> why = DecodeReading(Record{"g", json, "application/json"});
    INFO(value << ": " << MessageOf(why));
    // protobuf refuses 1e999 itself ("double out of range"); the spelled ones parse.
    CHECK((CodeOf(why) == "INVALID_METRIC" || std::string(value) == "1e999"));
    CHECK(why.has_value());
  }
}

TEST_CASE("an event time beyond the clock skew is EVENT_TIME_IN_FUTURE, showing both times",
          "[decoder]") {
  auto at = [](absl::Time t) {
    return Binary(With(Manhole(), [t](auto& r) { SetTime(r.mutable_event_time(), t); }));
  };
  CHECK(CodeOf(DecodeReading(at(kNow + absl::Minutes(5)))) == "OK");
  const std::optional<Rejection> why =
      DecodeReading(at(kNow + absl::Minutes(5) + absl::Nanoseconds(1)));
  CHECK(CodeOf(why) == "EVENT_TIME_IN_FUTURE");
  CHECK(MessageOf(why) ==
        "field event_time (eventTime) 2026-09-21T14:18:20.000000001Z is ahead of ingest's "
        "clock 2026-09-21T14:13:20Z by 5m0.000000001s, more than the allowed clock skew of 5m");
  ValidationPolicy strict;
  strict.max_clock_skew = absl::ZeroDuration();
  v1::SensorReading out;
  CHECK(CodeOf(DecodeReading(at(kNow), &out, strict)) == "OK");
  CHECK(CodeOf(DecodeReading(at(kNow + absl::Seconds(1)), &out, strict)) == "EVENT_TIME_IN_FUTURE");
}

TEST_CASE("an event time older than the retention is EVENT_TIME_TOO_OLD", "[decoder]") {
  auto at = [](absl::Time t) {
    return Binary(With(Manhole(), [t](auto& r) { SetTime(r.mutable_event_time(), t); }));
  };
  const absl::Duration max_age = ValidationPolicy().max_age;
  CHECK(CodeOf(DecodeReading(at(kNow - max_age))) == "OK");
  const std::optional<Rejection> why = DecodeReading(at(kNow - max_age - absl::Nanoseconds(1)));
  CHECK(CodeOf(why) == "EVENT_TIME_TOO_OLD");
  CHECK_THAT(MessageOf(why), Catch::Contains("2026-08-22T14:13:19.999999999Z") &&
                                 Catch::Contains("older than 2026-08-22T14:13:20Z") &&
                                 Catch::Contains("720h"));
}

TEST_CASE("an event time that is no valid timestamp is UNDECODABLE", "[decoder]") {
  for (auto change : std::vector<std::function<void(v1::SensorReading&)>>{
           [](auto& r) { r.mutable_event_time()->set_nanos(-1); },
           [](auto& r) { r.mutable_event_time()->set_nanos(1'000'000'000); },
           [](auto& r) { r.mutable_event_time()->set_seconds(253402300800); },
       }) {
    const std::optional<Rejection> why = DecodeReading(Binary(With(Manhole(), change)));
    CHECK(CodeOf(why) == "UNDECODABLE");
    CHECK_THAT(MessageOf(why), Catch::Contains("event_time (eventTime)"));
  }
}

TEST_CASE("a record key other than the device id is KEY_MISMATCH, no key is fine", "[decoder]") {
  const v1::SensorReading r = Manhole();
  CHECK(CodeOf(DecodeReading(Binary(r, ""))) == "OK");
  CHECK(CodeOf(DecodeReading(Binary(r, r.device_id()))) == "OK");
  const std::optional<Rejection> why = DecodeReading(Json(r, "3101040103000002"));
  CHECK(CodeOf(why) == "KEY_MISMATCH");
  CHECK(MessageOf(why) ==
        "record key \"3101040103000002\" differs from device_id (deviceId) "
        "\"3101040103000001\"; key the record by device_id");
  // Binary keys are shown escaped.
  CHECK_THAT(MessageOf(DecodeReading(Binary(r, std::string("\x01\0", 2)))),
             Catch::Contains(R"("\x01\x00")"));
}

TEST_CASE("decoding into a reused message leaves nothing of the previous record", "[decoder]") {
  v1::SensorReading out;
  REQUIRE(CodeOf(DecodeReading(Binary(Reading(v1::DEVICE_KIND_ELEVATOR)), &out)) == "OK");
  REQUIRE(CodeOf(DecodeReading(Record{"", "{}", "application/json"}, &out)) != "OK");
  const v1::SensorReading gauge = Reading(v1::DEVICE_KIND_FLOOD_GAUGE);
  REQUIRE(CodeOf(DecodeReading(Json(gauge), &out)) == "OK");
  CHECK(MessageDifferencer::Equals(out, gauge));
  const v1::SensorReading manhole = Manhole();
  REQUIRE(CodeOf(DecodeReading(Binary(manhole), &out)) == "OK");
  CHECK(MessageDifferencer::Equals(out, manhole));
}

// ---------------------------------------------------------------------------------------
// Reports.

v1::CitizenReport Report() {
  v1::CitizenReport r;
  r.set_report_id("12345-20260921-0042");
  r.set_source(v1::CASE_SOURCE_HOTLINE_12345);
  r.mutable_grid()->set_grid_code("310104010001001");
  r.mutable_location()->set_latitude_deg(31.19);
  r.mutable_location()->set_longitude_deg(121.43);
  r.mutable_category()->set_code("0103");
  r.mutable_category()->set_name("storm drain manhole");
  r.set_description("cover missing, water rising");
  r.set_reporter("caller 0042");
  SetTime(r.mutable_event_time(), kNow - absl::Minutes(3));
  return r;
}

std::optional<Rejection> DecodeReport(const Record& record, v1::CitizenReport* out = nullptr) {
  v1::CitizenReport scratch;
  return ingest::DecodeReport(record.view(), ValidationPolicy(), kNow, out ? out : &scratch);
}

v1::CitizenReport With(v1::CitizenReport r, const std::function<void(v1::CitizenReport&)>& f) {
  f(r);
  return r;
}

TEST_CASE("a citizen report from each human source decodes from binary and JSON", "[decoder]") {
  for (v1::CaseSource source : {v1::CASE_SOURCE_HOTLINE_12345, v1::CASE_SOURCE_STREET_PATROL,
                                v1::CASE_SOURCE_RESIDENTIAL_STATION}) {
    const v1::CitizenReport r = With(Report(), [source](auto& x) { x.set_source(source); });
    for (const Record& record : {Binary(r, r.report_id()), Json(r, r.report_id())}) {
      v1::CitizenReport out;
      const std::optional<Rejection> why = DecodeReport(record, &out);
      INFO(MessageOf(why));
      REQUIRE_FALSE(why.has_value());
      CHECK(MessageDifferencer::Equals(out, r));
    }
  }
  // Location, description, reporter and originator are optional.
  v1::CitizenReport minimal = Report();
  minimal.clear_location();
  minimal.clear_description();
  minimal.clear_reporter();
  CHECK(CodeOf(DecodeReport(Binary(minimal))) == "OK");
}

TEST_CASE("a report without its required fields or with a bad one is refused with its field",
          "[decoder]") {
  const std::vector<std::tuple<std::function<void(v1::CitizenReport&)>, std::string, std::string>>
      cases = {
          {[](auto& r) { r.clear_report_id(); }, "MISSING_FIELD",
           "field report_id (reportId) is required"},
          {[](auto& r) { r.set_report_id("a/b"); }, "INVALID_FIELD", "report_id (reportId)"},
          {[](auto& r) { r.clear_source(); }, "MISSING_FIELD",
           "field source is required: one of CASE_SOURCE_HOTLINE_12345"},
          {[](auto& r) { r.set_source(v1::CASE_SOURCE_IOT_RULE); }, "INVALID_FIELD",
           "not CASE_SOURCE_IOT_RULE"},
          {[](auto& r) { r.set_source(static_cast<v1::CaseSource>(42)); }, "INVALID_FIELD",
           "not 42"},
          {[](auto& r) { r.clear_grid(); }, "MISSING_FIELD",
           "field grid.grid_code (grid.gridCode) is required"},
          {[](auto& r) { r.mutable_category()->clear_code(); }, "MISSING_FIELD",
           "field category.code is required"},
          {[](auto& r) { r.clear_event_time(); }, "MISSING_FIELD",
           "field event_time (eventTime) is required"},
          {[](auto& r) { r.mutable_location()->set_latitude_deg(91); }, "INVALID_METRIC",
           "location.latitude_deg (location.latitudeDeg) is 91"},
          {[](auto& r) { r.mutable_location()->set_longitude_deg(-kInf); }, "INVALID_METRIC",
           "location.longitude_deg (location.longitudeDeg) is -inf"},
          {[](auto& r) { r.mutable_originator()->set_code("310104010001001"); }, "MISSING_FIELD",
           "field originator.level is required"},
          {[](auto& r) { r.mutable_originator()->set_level(v1::GRID_LEVEL_STREET_CENTER); },
           "MISSING_FIELD", "field originator.code is required"},
          {[](auto& r) {
             r.mutable_originator()->set_level(v1::GRID_LEVEL_STREET_CENTER);
             r.mutable_originator()->set_code("310104010");
             r.mutable_originator()->set_department("Water Authority");
           },
           "INVALID_FIELD", "field originator.department 'Water Authority' is not a department's"},
          {[](auto& r) { SetTime(r.mutable_event_time(), kNow + absl::Minutes(6)); },
           "EVENT_TIME_IN_FUTURE", "event_time"},
          {[](auto& r) { SetTime(r.mutable_event_time(), kNow - absl::Hours(24 * 31)); },
           "EVENT_TIME_TOO_OLD", "event_time"},
      };
  for (const auto& [change, code, message] : cases) {
    const std::optional<Rejection> why = DecodeReport(Binary(With(Report(), change)));
    INFO(MessageOf(why));
    CHECK(CodeOf(why) == code);
    CHECK_THAT(MessageOf(why), Catch::Contains(message));
  }
  const v1::CitizenReport r = Report();
  const std::optional<Rejection> key = DecodeReport(Binary(r, "another-report"));
  CHECK(CodeOf(key) == "KEY_MISMATCH");
  CHECK_THAT(MessageOf(key), Catch::Contains("report_id (reportId)"));
  v1::CitizenReport with_originator = Report();
  with_originator.mutable_originator()->set_level(v1::GRID_LEVEL_STREET_CENTER);
  with_originator.mutable_originator()->set_code("310104010");
  CHECK(CodeOf(DecodeReport(Binary(with_originator))) == "OK");
  // A department's crew reports what it found: it is the originator.
  with_originator.mutable_originator()->set_department("water-authority");
  CHECK(CodeOf(DecodeReport(Binary(with_originator))) == "OK");
}

// ---------------------------------------------------------------------------------------
// Device registrations.

v1::DeviceRegistered Device() {
  v1::DeviceRegistered d;
  d.set_device_id("3101040103000001");
  d.set_kind(v1::DEVICE_KIND_ELEVATOR);
  d.mutable_grid()->set_district_code("310104");
  d.mutable_grid()->set_street_code("310104010");
  d.mutable_grid()->set_grid_code("310104010001001");
  d.mutable_location()->set_latitude_deg(31.19);
  d.mutable_location()->set_longitude_deg(121.43);
  d.set_name("Building 7, car 2");
  d.mutable_reporting_interval()->set_seconds(10);
  d.mutable_elevator()->set_installed_year(2004);
  d.mutable_elevator()->set_rated_speed_m_per_s(1.75);
  d.mutable_elevator()->set_floors(33);
  return d;
}

std::optional<Rejection> DecodeDevice(const Record& record, v1::DeviceRegistered* out = nullptr) {
  v1::DeviceRegistered scratch;
  return ingest::DecodeDevice(record.view(), ValidationPolicy(), out ? out : &scratch);
}

v1::DeviceRegistered With(v1::DeviceRegistered d,
                          const std::function<void(v1::DeviceRegistered&)>& f) {
  f(d);
  return d;
}

TEST_CASE("a device registration decodes from binary, JSON and framed binary", "[decoder]") {
  const v1::DeviceRegistered d = Device();
  for (const Record& record :
       {Binary(d, d.device_id()), Json(d, d.device_id()),
        Record{d.device_id(), Framed(std::string("\0", 1), d.SerializeAsString()), ""}}) {
    v1::DeviceRegistered out;
    const std::optional<Rejection> why = DecodeDevice(record, &out);
    INFO(MessageOf(why));
    REQUIRE_FALSE(why.has_value());
    CHECK(MessageDifferencer::Equals(out, d));
  }
  // Kind, id and grid code are all it needs.
  v1::DeviceRegistered minimal;
  minimal.set_device_id("g-1");
  minimal.set_kind(v1::DEVICE_KIND_FLOOD_GAUGE);
  minimal.mutable_grid()->set_grid_code("310104010001002");
  CHECK(CodeOf(DecodeDevice(Binary(minimal))) == "OK");
}

TEST_CASE("a device registration without its required fields or with a bad one is refused",
          "[decoder]") {
  const std::vector<
      std::tuple<std::function<void(v1::DeviceRegistered&)>, std::string, std::string>>
      cases = {
          {[](auto& d) { d.clear_device_id(); }, "MISSING_FIELD",
           "field device_id (deviceId) is required"},
          {[](auto& d) { d.clear_kind(); }, "UNKNOWN_DEVICE_KIND",
           "field kind_id (kindId) is required"},
          {[](auto& d) { d.set_kind(static_cast<v1::DeviceKind>(-3)); }, "UNKNOWN_DEVICE_KIND",
           "kind -3"},
          {[](auto& d) { d.mutable_grid()->clear_grid_code(); }, "MISSING_FIELD",
           "field grid.grid_code (grid.gridCode) is required"},
          {[](auto& d) { d.set_kind(v1::DEVICE_KIND_CURTAIN_WALL); }, "KIND_MISMATCH",
           "the kind is 'curtain_wall' but the archive data are elevator"},
          {[](auto& d) { d.mutable_elevator()->set_rated_speed_m_per_s(std::nan("")); },
           "INVALID_METRIC", "elevator.rated_speed_m_per_s (elevator.ratedSpeedMPerS) is nan"},
          {[](auto& d) { d.mutable_elevator()->set_floors(-1); }, "INVALID_METRIC",
           "elevator.floors is -1"},
          {[](auto& d) {
             d.set_kind(v1::DEVICE_KIND_CURTAIN_WALL);
             d.mutable_curtain_wall()->set_height_m(1200);
           },
           "INVALID_METRIC", "curtain_wall.height_m (curtainWall.heightM) is 1200"},
          {[](auto& d) { d.mutable_location()->set_longitude_deg(181); }, "INVALID_METRIC",
           "location.longitude_deg"},
          {[](auto& d) { d.mutable_reporting_interval()->set_seconds(-10); }, "INVALID_METRIC",
           "reporting_interval"},
          {[](auto& d) { d.mutable_reporting_interval()->set_nanos(-1); }, "INVALID_METRIC",
           "reporting_interval"},
      };
  for (const auto& [change, code, message] : cases) {
    const std::optional<Rejection> why = DecodeDevice(Binary(With(Device(), change)));
    INFO(MessageOf(why));
    CHECK(CodeOf(why) == code);
    CHECK_THAT(MessageOf(why), Catch::Contains(message));
  }
  const v1::DeviceRegistered d = Device();
  CHECK(CodeOf(DecodeDevice(Binary(d, "3101040103000009"))) == "KEY_MISMATCH");
  CHECK(CodeOf(DecodeDevice(Record{"", "{not json}", "application/json"})) == "UNDECODABLE");
}

TEST_CASE("reject code names drop the REJECT_CODE_ prefix", "[decoder]") {
  CHECK(RejectCodeName(v1::REJECT_CODE_INVALID_METRIC) == "INVALID_METRIC");
  CHECK(RejectCodeName(v1::REJECT_CODE_UNSPECIFIED) == "UNSPECIFIED");
  for (int code = v1::RejectCode_MIN; code <= v1::RejectCode_MAX; ++code) {
    const std::string_view name = RejectCodeName(static_cast<v1::RejectCode>(code));
    INFO(code);
    CHECK("REJECT_CODE_" + std::string(name) ==
          v1::RejectCode_Name(static_cast<v1::RejectCode>(code)));
  }
  CHECK(RejectCodeName(static_cast<v1::RejectCode>(1000)) == "UNKNOWN");
}

// ---------------------------------------------------------------------------------------
// Readings and registrations of any catalogue kind: metrics by name (`values`), archive
// fields by name (`archive_values`).

// A value of `m` that the catalogue admits: mid-range numbers, its first code.
v1::MetricValue ValidValue(const catalogue::KindMetric& m) {
  v1::MetricValue v;
  v.set_name(m.name);
  const int64_t first_code =
      m.spec != nullptr && m.spec->codes_size() > 0 ? m.spec->codes(0).value() : 1;
  if (m.repeated) {
    v.add_codes(first_code);
    return v;
  }
  const double lo = m.has_min ? m.min : 0;
  const double hi = m.has_max ? m.max : lo + 10;
  switch (m.type) {
    case v1::METRIC_TYPE_FLAG:
      v.set_flag(true);
      break;
    case v1::METRIC_TYPE_CODE:
      v.set_code(first_code);
      break;
    case v1::METRIC_TYPE_COUNTER:
      v.set_count(static_cast<uint64_t>(std::ceil(std::max(lo, 0.0))));
      break;
    default:
      v.set_number((lo + hi) / 2);
  }
  return v;
}

// A reading of `kind` with every one of its metrics by name.
v1::SensorReading ValuesReading(const catalogue::Kind& kind) {
  v1::SensorReading r;
  r.set_device_id("dev-" + kind.id);
  r.set_kind_id(kind.id);
  r.set_reading_id(r.device_id() + ":1");
  SetTime(r.mutable_event_time(), kNow - absl::Minutes(1));
  for (const catalogue::KindMetric& m : kind.metrics) {
    *r.mutable_values()->add_values() = ValidValue(m);
  }
  return r;
}

v1::SensorReading GasReading() {
  const catalogue::Kind* gas = catalogue::KindTable::BuiltIn()->Find("gas_detector");
  REQUIRE(gas != nullptr);
  return ValuesReading(*gas);
}

// The value named `name` in a values reading.
v1::MetricValue* ValueNamed(v1::SensorReading& r, const std::string& name) {
  for (v1::MetricValue& v : *r.mutable_values()->mutable_values()) {
    if (v.name() == name) return &v;
  }
  FAIL("no value " << name);
  return nullptr;
}

TEST_CASE("a values reading of every kind of the built-in catalogue decodes from binary and JSON",
          "[decoder][catalogue]") {
  const auto kinds = catalogue::KindTable::BuiltIn();
  REQUIRE(kinds->kinds().size() >= 10);
  for (const catalogue::Kind& kind : kinds->kinds()) {
    const v1::SensorReading r = ValuesReading(kind);
    REQUIRE(r.values().values_size() == static_cast<int>(kind.metrics.size()));
    for (const Record& record : {Binary(r, r.device_id()), Json(r, r.device_id())}) {
      v1::SensorReading out;
      const std::optional<Rejection> why = DecodeReading(record, &out);
      INFO(kind.id << ": " << MessageOf(why) << "\n" << ToJson(r));
      REQUIRE_FALSE(why.has_value());
      // A typed kind named by kind_id alone gets its typed kind filled in.
      CHECK(out.kind() == kind.typed);
      v1::SensorReading expected = r;
      expected.set_kind(kind.typed);
      CHECK(MessageDifferencer::Equals(out, expected));
    }
  }
}

TEST_CASE(
    "a typed kind's reading decodes sent as values, and with its kind_id on the typed message",
    "[decoder][catalogue]") {
  v1::SensorReading r = Reading(v1::DEVICE_KIND_FLOOD_GAUGE);
  r.clear_flood_gauge();
  v1::MetricValue* depth = r.mutable_values()->add_values();
  depth->set_name("water_depth_cm");
  depth->set_number(27.5);
  // By the typed kind alone, by kind_id alone and by both.
  for (const auto& [kind, kind_id] : std::vector<std::pair<v1::DeviceKind, std::string>>{
           {v1::DEVICE_KIND_FLOOD_GAUGE, ""},
           {v1::DEVICE_KIND_UNSPECIFIED, "flood_gauge"},
           {v1::DEVICE_KIND_FLOOD_GAUGE, "flood_gauge"}}) {
    r.set_kind(kind);
    r.set_kind_id(kind_id);
    v1::SensorReading out;
    const std::optional<Rejection> why = DecodeReading(Binary(r), &out);
    INFO(MessageOf(why));
    REQUIRE_FALSE(why.has_value());
    CHECK(out.kind() == v1::DEVICE_KIND_FLOOD_GAUGE);
    CHECK(out.values().values(0).number() == 27.5);
  }
  // Out of the catalogue's bounds by name as in the typed message.
  depth->set_number(2000);
  const std::optional<Rejection> deep = DecodeReading(Binary(r));
  CHECK(CodeOf(deep) == "INVALID_METRIC");
  CHECK_THAT(MessageOf(deep), Catch::Contains("values.values[0] (metric \"water_depth_cm\")") &&
                                  Catch::Contains("outside its physical range [-10, 1000] cm"));

  const v1::SensorReading typed =
      With(Reading(v1::DEVICE_KIND_FLOOD_GAUGE), [](auto& t) { t.set_kind_id("flood_gauge"); });
  CHECK(CodeOf(DecodeReading(Binary(typed))) == "OK");
  v1::SensorReading out;
  const v1::SensorReading by_id =
      With(typed, [](auto& t) { t.set_kind(v1::DEVICE_KIND_UNSPECIFIED); });
  REQUIRE(CodeOf(DecodeReading(Binary(by_id), &out)) == "OK");
  CHECK(out.kind() == v1::DEVICE_KIND_FLOOD_GAUGE);
}

TEST_CASE("a catalogue kind's reading in JSON as an integrator writes it decodes",
          "[decoder][catalogue]") {
  const std::string json = absl::StrFormat(
      R"({"deviceId": "gd-1", "kindId": "gas_detector", "readingId": "gd-1:1",
          "eventTime": "%s",
          "values": {"values": [{"name": "gas_lel_pct", "number": 12.5},
                                {"name": "alarm", "flag": true},
                                {"name": "valve_closed", "flag": false}]}})",
      absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", kNow - absl::Minutes(1), absl::UTCTimeZone()));
  v1::SensorReading out;
  const std::optional<Rejection> why =
      DecodeReading(Record{"gd-1", json, "application/json"}, &out);
  INFO(MessageOf(why));
  REQUIRE_FALSE(why.has_value());
  CHECK(out.kind_id() == "gas_detector");
  CHECK(out.kind() == v1::DEVICE_KIND_UNSPECIFIED);
  REQUIRE(out.values().values_size() == 3);
  CHECK(out.values().values(0).number() == 12.5);
  CHECK(out.values().values(1).flag());
  CHECK(out.values().values(2).value_case() == v1::MetricValue::kFlag);
}

TEST_CASE("a values reading that breaks the catalogue is refused with what, where and what to do",
          "[decoder][catalogue]") {
  const catalogue::Kind* elevator = catalogue::KindTable::BuiltIn()->Find("elevator");
  REQUIRE(elevator != nullptr);
  using Change = std::function<void(v1::SensorReading&)>;
  const std::vector<
      std::tuple<std::string, v1::SensorReading, Change, std::string, std::vector<std::string>>>
      cases = {
          {"unknown kind_id",
           GasReading(),
           [](auto& r) { r.set_kind_id("gas_detektor"); },
           "UNKNOWN_DEVICE_KIND",
           {"field kind_id (kindId) \"gas_detektor\" is not a kind of catalogue 'city'",
            "use one of: manhole_cover, elevator", "gas_detector"}},
          {"kind_id disagreeing with kind",
           GasReading(),
           [](auto& r) { r.set_kind(v1::DEVICE_KIND_FLOOD_GAUGE); },
           "KIND_MISMATCH",
           {"field kind_id (kindId) is \"gas_detector\" but kind is DEVICE_KIND_FLOOD_GAUGE",
            "leave it unset"}},
          {"kind_id disagreeing with the typed message",
           Reading(v1::DEVICE_KIND_FLOOD_GAUGE),
           [](auto& r) {
             r.clear_kind();
             r.set_kind_id("elevator");
           },
           "KIND_MISMATCH",
           {"the kind is 'elevator' but the metrics are flood_gauge; send them as elevator"}},
          {"a catalogue-only kind with a typed message",
           Reading(v1::DEVICE_KIND_FLOOD_GAUGE),
           [](auto& r) {
             r.clear_kind();
             r.set_kind_id("gas_detector");
           },
           "KIND_MISMATCH",
           {"the kind is 'gas_detector' but the metrics are flood_gauge",
            "send the metrics of a 'gas_detector' as values"}},
          {"values without a kind",
           GasReading(),
           [](auto& r) { r.clear_kind_id(); },
           "UNKNOWN_DEVICE_KIND",
           {"field kind_id (kindId) is required", "gas_detector"}},
          {"unknown metric",
           GasReading(),
           [](auto& r) { ValueNamed(r, "alarm")->set_name("alarm_on"); },
           "INVALID_METRIC",
           {"values.values[1].name \"alarm_on\" is not a metric of kind 'gas_detector'",
            "its metrics are: gas_lel_pct, alarm, valve_closed, battery_pct"}},
          {"wrong type member",
           GasReading(),
           [](auto& r) { ValueNamed(r, "alarm")->set_number(1); },
           "INVALID_METRIC",
           {"values.values[1] (metric \"alarm\")", "is a flag in the catalogue: set 'flag'"}},
          {"out of bounds",
           GasReading(),
           [](auto& r) { ValueNamed(r, "gas_lel_pct")->set_number(150); },
           "INVALID_METRIC",
           {"values.values[0] (metric \"gas_lel_pct\")", "150 is outside its physical range",
            "[0, 100]"}},
          {"not a number",
           GasReading(),
           [](auto& r) { ValueNamed(r, "gas_lel_pct")->set_number(std::nan("")); },
           "INVALID_METRIC",
           {"metric 'gas_lel_pct' is not a finite number"}},
          {"no member set",
           GasReading(),
           [](auto& r) { ValueNamed(r, "alarm")->clear_value(); },
           "INVALID_METRIC",
           {"metric 'alarm' has no value: set 'flag'"}},
          {"duplicate metric",
           GasReading(),
           [](auto& r) { *r.mutable_values()->add_values() = *ValueNamed(r, "alarm"); },
           "INVALID_METRIC",
           {"values.values[4] (metric \"alarm\")", "appears more than once",
            "at most once per reading"}},
          {"empty values",
           GasReading(),
           [](auto& r) { r.mutable_values()->clear_values(); },
           "MISSING_FIELD",
           {"field values is required: at least one metric of a 'gas_detector' by name "
            "(gas_lel_pct, alarm, valve_closed, battery_pct), each as {name, and number, flag, "
            "code, count or codes}"}},
          {"no metrics at all",
           GasReading(),
           [](auto& r) { r.clear_values(); },
           "MISSING_FIELD",
           {"field values is required: at least one metric of a 'gas_detector' by name"}},
          {"code not listed",
           ValuesReading(*elevator),
           [](auto& r) { ValueNamed(r, "door_state")->set_code(9); },
           "INVALID_METRIC",
           {"metric 'door_state' has code 9, which the catalogue does not list"}},
          {"repeated code not listed",
           ValuesReading(*elevator),
           [](auto& r) { ValueNamed(r, "fault_codes")->add_codes(999); },
           "INVALID_METRIC",
           {"(metric \"fault_codes\"): codes[1] is 999, which the catalogue does not list",
            "1 (over-travel top)"}},
          {"repeated code as one value",
           ValuesReading(*elevator),
           [](auto& r) {
             ValueNamed(r, "fault_codes")->clear_codes();
             ValueNamed(r, "fault_codes")->set_code(1);
           },
           "INVALID_METRIC",
           {"metric 'fault_codes' is a list of codes", "set 'codes'"}},
          {"codes on a single metric",
           ValuesReading(*elevator),
           [](auto& r) { ValueNamed(r, "door_state")->add_codes(1); },
           "INVALID_METRIC",
           {"'codes' is for a list of codes, but metric 'door_state' holds one value"}},
      };
  for (const auto& [name, base, change, code, parts] : cases) {
    const std::optional<Rejection> why = DecodeReading(Binary(With(base, change)));
    INFO(name << ": " << MessageOf(why));
    CHECK(CodeOf(why) == code);
    for (const std::string& part : parts) CHECK_THAT(MessageOf(why), Catch::Contains(part));
  }
  // No codes at all: none active, which is valid.
  const v1::SensorReading quiet =
      With(ValuesReading(*elevator), [](auto& r) { ValueNamed(r, "fault_codes")->clear_codes(); });
  CHECK(CodeOf(DecodeReading(Binary(quiet))) == "OK");
}

TEST_CASE("a reused message gives the same verdict whatever it decoded before",
          "[decoder][catalogue]") {
  const v1::SensorReading none = With(GasReading(), [](auto& r) { r.clear_values(); });
  const v1::SensorReading empty =
      With(GasReading(), [](auto& r) { r.mutable_values()->clear_values(); });
  const std::string expected = MessageOf(DecodeReading(Binary(none)));
  REQUIRE_FALSE(expected.empty());
  v1::SensorReading reused;
  for (const v1::SensorReading& before :
       {GasReading(), Reading(v1::DEVICE_KIND_ELEVATOR), none, empty}) {
    REQUIRE(CodeOf(DecodeReading(Binary(before), &reused)) != "UNDECODABLE");
    for (const v1::SensorReading& r : {none, empty}) {
      const std::optional<Rejection> why = DecodeReading(Binary(r), &reused);
      CHECK(CodeOf(why) == "MISSING_FIELD");
      CHECK(MessageOf(why) == expected);
    }
    // And a valid reading after it decodes to exactly itself.
    const v1::SensorReading gas = GasReading();
    REQUIRE(CodeOf(DecodeReading(Binary(gas), &reused)) == "OK");
    CHECK(MessageDifferencer::Equals(reused, gas));
    REQUIRE(CodeOf(DecodeReading(Binary(Manhole()), &reused)) == "OK");
    CHECK(MessageDifferencer::Equals(reused, Manhole()));
  }
}

TEST_CASE("the decoder takes the kinds of the catalogue it is given", "[decoder][catalogue]") {
  ValidationPolicy typed_only;
  typed_only.kinds = catalogue::KindTable::TypedOnly();
  v1::SensorReading out;
  const std::optional<Rejection> why = DecodeReading(Binary(GasReading()), &out, typed_only);
  CHECK(CodeOf(why) == "UNKNOWN_DEVICE_KIND");
  CHECK_THAT(MessageOf(why), Catch::Contains("is not a kind of the catalogue in force") &&
                                 Catch::Contains("flood_gauge"));
  CHECK(CodeOf(DecodeReading(Binary(Manhole()), &out, typed_only)) == "OK");
}

v1::DeviceRegistered GasDetector() {
  v1::DeviceRegistered d;
  d.set_device_id("gd-7");
  d.set_kind_id("gas_detector");
  d.mutable_grid()->set_grid_code("310104010001001");
  d.set_name("Block 3 kitchen");
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"site", "kitchen"}, {"gas", "natural gas"}, {"has_shutoff_valve", "true"}}) {
    v1::ArchiveValue* a = d.mutable_archive_values()->add_fields();
    a->set_name(name);
    a->set_value(value);
  }
  return d;
}

v1::ArchiveValue* ArchiveNamed(v1::DeviceRegistered& d, const std::string& name) {
  for (v1::ArchiveValue& a : *d.mutable_archive_values()->mutable_fields()) {
    if (a.name() == name) return &a;
  }
  FAIL("no archive field " << name);
  return nullptr;
}

TEST_CASE("a catalogue kind's registration with archive fields by name decodes",
          "[decoder][catalogue]") {
  const v1::DeviceRegistered d = GasDetector();
  for (const Record& record : {Binary(d, d.device_id()), Json(d, d.device_id())}) {
    v1::DeviceRegistered out;
    const std::optional<Rejection> why = DecodeDevice(record, &out);
    INFO(MessageOf(why));
    REQUIRE_FALSE(why.has_value());
    CHECK(MessageDifferencer::Equals(out, d));
  }
  // A date, a number within its bounds.
  v1::DeviceRegistered noise;
  noise.set_device_id("nm-1");
  noise.set_kind_id("noise_meter");
  noise.mutable_grid()->set_grid_code("310104010001001");
  v1::ArchiveValue* until = noise.mutable_archive_values()->add_fields();
  until->set_name("night_work_permit_until");
  until->set_value("2024-05-01");
  CHECK(CodeOf(DecodeDevice(Binary(noise))) == "OK");
  until->set_value("2024-02-30");
  const std::optional<Rejection> bad_date = DecodeDevice(Binary(noise));
  CHECK(CodeOf(bad_date) == "INVALID_FIELD");
  CHECK_THAT(MessageOf(bad_date), Catch::Contains("a date YYYY-MM-DD"));
}

TEST_CASE("a registration whose archive fields break the catalogue is refused",
          "[decoder][catalogue]") {
  using Change = std::function<void(v1::DeviceRegistered&)>;
  const std::vector<std::tuple<std::string, Change, std::string, std::vector<std::string>>> cases =
      {
          {"unknown kind_id",
           [](auto& d) { d.set_kind_id("gas"); },
           "UNKNOWN_DEVICE_KIND",
           {"field kind_id (kindId) \"gas\" is not a kind of catalogue 'city'"}},
          {"unknown archive field",
           [](auto& d) { ArchiveNamed(d, "gas")->set_name("fuel"); },
           "INVALID_FIELD",
           {"archive_values.fields[1] (archiveValues): name \"fuel\" is not an archive field of "
            "kind 'gas_detector'",
            "its archive fields are: site, gas, has_shutoff_valve"}},
          {"flag not true or false",
           [](auto& d) { ArchiveNamed(d, "has_shutoff_valve")->set_value("yes"); },
           "INVALID_FIELD",
           {"archive field 'has_shutoff_valve'", "\"yes\"", "true or false"}},
          {"a field twice",
           [](auto& d) {
             v1::ArchiveValue* again = d.mutable_archive_values()->add_fields();
             again->set_name("site");
             again->set_value("well");
           },
           "INVALID_FIELD",
           {"archive field 'site' is also fields[0]", "only a records field"}},
          {"a typed archive on a catalogue-only kind",
           [](auto& d) { d.mutable_flood_gauge()->set_low_lying(true); },
           "KIND_MISMATCH",
           {"send the archive data of a 'gas_detector' as archive_values"}},
          {"archive values on a typed kind",
           [](auto& d) { d.set_kind_id("elevator"); },
           "KIND_MISMATCH",
           {"kind 'elevator' has a typed archive: send it as elevator"}},
          {"kind_id disagreeing with kind",
           [](auto& d) { d.set_kind(v1::DEVICE_KIND_ELEVATOR); },
           "KIND_MISMATCH",
           {"field kind_id (kindId) is \"gas_detector\" but kind is"}},
      };
  for (const auto& [name, change, code, parts] : cases) {
    const std::optional<Rejection> why = DecodeDevice(Binary(With(GasDetector(), change)));
    INFO(name << ": " << MessageOf(why));
    CHECK(CodeOf(why) == code);
    for (const std::string& part : parts) CHECK_THAT(MessageOf(why), Catch::Contains(part));
  }
  // Numbers: floors a falling-object camera covers, 0..300.
  v1::DeviceRegistered camera;
  camera.set_device_id("cam-1");
  camera.set_kind_id("falling_object_camera");
  camera.mutable_grid()->set_grid_code("310104010001001");
  v1::ArchiveValue* floors = camera.mutable_archive_values()->add_fields();
  floors->set_name("floors_covered");
  floors->set_value("32");
  CHECK(CodeOf(DecodeDevice(Binary(camera))) == "OK");
  floors->set_value("500");
  const std::optional<Rejection> high = DecodeDevice(Binary(camera));
  CHECK(CodeOf(high) == "INVALID_METRIC");
  CHECK_THAT(MessageOf(high),
             Catch::Contains("archive_values.floors_covered is 500") && Catch::Contains("0..300"));
  floors->set_value("thirty");
  const std::optional<Rejection> words = DecodeDevice(Binary(camera));
  CHECK(CodeOf(words) == "INVALID_FIELD");
  CHECK_THAT(MessageOf(words), Catch::Contains("a number such as 12.5"));
}

}  // namespace
}  // namespace cityops::ingest
