// Decoding and validation of the records integrators publish. Pure functions: no I/O, no
// clock of their own (the caller passes `now`), so they are cheap to test and fuzz.
//
// Encodings, chosen per record:
//   * protobuf binary (the default; header `content-type: application/x-protobuf` or none);
//   * JSON by the protobuf JSON mapping (header `content-type: application/json`);
//   * either of them inside the Confluent Schema Registry framing: magic byte 0, a 4-byte
//     schema id, and for protobuf the message-index list; the framing is stripped (a plain
//     protobuf record never starts with byte 0, so the two cannot be confused).
// Unknown fields are rejected in JSON and ignored in protobuf (protobuf's own rule, so
// that producers on a newer schema keep working).
#ifndef CITYOPS_INGEST_RECORD_DECODER_H_
#define CITYOPS_INGEST_RECORD_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/catalogue.pb.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/ingest.pb.h"

namespace cityops::ingest {

// A consumed Kafka record, as views into librdkafka's buffers.
struct KafkaRecord {
  std::string_view topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string_view key;
  std::string_view value;
  std::string_view content_type;  // Header "content-type"; empty if absent.
  // The record's Kafka timestamp (CreateTime or LogAppendTime); InfinitePast when the
  // record has none. Event times are validated against it, so that a record gets the same
  // verdict whenever it is consumed.
  absl::Time timestamp = absl::InfinitePast();
};

// The physical bounds of the numbers that readings and registrations carry, taken from
// a catalogue (catalogue/catalogue.h): every number metric of a typed kind
// ("flood_gauge.water_depth_cm") and every number and year of its archive. They reject
// garbage (a unit mix-up, an uninitialised register), never alarms. Enum fields and an
// elevator's fault codes are bounded by the schema instead.
class PhysicalBounds {
 public:
  struct Bounds {
    double min = 0;
    double max = 0;
    std::string unit;
  };
  // INVALID_ARGUMENT naming what is missing when the catalogue lacks one of the four
  // typed kinds or a bounded number of one that the decoder checks.
  static absl::StatusOr<PhysicalBounds> FromCatalogue(const v1::Catalogue& catalogue);
  // Those of the built-in catalogue (catalogue/city.yaml), loaded on first use.
  static const PhysicalBounds& BuiltIn();

  // By row of the decoder's tables of readings' and archives' numbers.
  const std::vector<Bounds>& readings() const { return readings_; }
  const std::vector<Bounds>& archives() const { return archives_; }

 private:
  std::vector<Bounds> readings_;
  std::vector<Bounds> archives_;
};

struct ValidationPolicy {
  // Event times are checked against a reference time: the record's Kafka timestamp, or
  // ingest's clock (`now`) for a record without one.
  // Readings may be at most this far ahead of the reference time (device clock skew).
  absl::Duration max_clock_skew = absl::Minutes(5);
  // Readings older than this are beyond the retention of raw readings.
  absl::Duration max_age = absl::Hours(24 * 30);
  // Larger record values are rejected unread.
  size_t max_record_bytes = 64 * 1024;
  // The bounds of numbers; null: PhysicalBounds::BuiltIn(). Must outlive the policy's use.
  const PhysicalBounds* bounds = nullptr;
};

// Why a record was refused: a stable code and a message that names the field and, where
// it helps, the allowed range.
struct Rejection {
  v1::RejectCode code = v1::REJECT_CODE_UNSPECIFIED;
  std::string message;
};

// Decodes and validates a reading from `cityops.readings`. On success fills `out` and
// returns nullopt. Checks: size, encoding, required fields (device_id, kind, event_time,
// reading_id, metrics), kind known and matching the metrics, every metric finite and
// physically possible, event time within [ref - max_age, ref + max_clock_skew] where ref
// is the record's timestamp (or `now` when it has none), and the
// record key (when present) equal to device_id.
std::optional<Rejection> DecodeReading(const KafkaRecord& record, const ValidationPolicy& policy,
                                       absl::Time now, v1::SensorReading* out);

// Decodes and validates a citizen or patrol report from `cityops.reports`: report_id,
// a human source, grid_code and category code are required; the key, when present, must
// equal report_id; event time as for readings.
std::optional<Rejection> DecodeReport(const KafkaRecord& record, const ValidationPolicy& policy,
                                      absl::Time now, v1::CitizenReport* out);

// Decodes and validates a registration from the compacted `cityops.devices` topic (a
// `DeviceRegistered`): device_id, a known kind and grid_code are required; the key, when
// present, must equal device_id.
std::optional<Rejection> DecodeDevice(const KafkaRecord& record, const ValidationPolicy& policy,
                                      v1::DeviceRegistered* out);

// "INVALID_METRIC" for REJECT_CODE_INVALID_METRIC: the value of the dead-letter header.
std::string_view RejectCodeName(v1::RejectCode code);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_RECORD_DECODER_H_
