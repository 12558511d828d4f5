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
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "catalogue/kinds.h"
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

struct ValidationPolicy {
  // Event times are checked against a reference time: the record's Kafka timestamp, or
  // ingest's clock (`now`) for a record without one.
  // Readings may be at most this far ahead of the reference time (device clock skew).
  absl::Duration max_clock_skew = absl::Minutes(5);
  // Readings older than this are beyond the retention of raw readings.
  absl::Duration max_age = absl::Hours(24 * 30);
  // Larger record values are rejected unread.
  size_t max_record_bytes = 64 * 1024;
  // The catalogue in force, compiled: the kinds a reading or registration may name, each
  // kind's metrics (names, types, codes, physical bounds) and archive fields. Null: the
  // built-in catalogue's (catalogue::KindTable::BuiltIn()).
  std::shared_ptr<const catalogue::KindTable> kinds;
};

// Why a record was refused: a stable code and a message that names the field and, where
// it helps, the allowed range.
struct Rejection {
  v1::RejectCode code = v1::REJECT_CODE_UNSPECIFIED;
  std::string message;
};

// Decodes and validates a reading from `cityops.readings`. On success fills `out` and
// returns nullopt. Checks: size, encoding, required fields (device_id, a kind, event_time,
// reading_id, metrics), the kind one of the catalogue in force and matching the metrics,
// every metric finite and physically possible, event time within
// [ref - max_age, ref + max_clock_skew] where ref is the record's timestamp (or `now` when
// it has none), and the record key (when present) equal to device_id.
//
// The kind: `kind_id` (a catalogue kind's id) or the typed `kind`, or both naming the same
// kind. The metrics: the kind's typed message (typed kinds only), or `values`, the metrics
// by the catalogue's names (any kind): each a metric of the kind, at most once, with the
// member of its type set (`codes` for a repeated code) and within the catalogue's bounds
// and codes. A typed kind named by `kind_id` alone gets `kind` filled in `out`.
std::optional<Rejection> DecodeReading(const KafkaRecord& record, const ValidationPolicy& policy,
                                       absl::Time now, v1::SensorReading* out);

// Decodes and validates a citizen or patrol report from `cityops.reports`: report_id,
// a human source, grid_code and category code are required; the key, when present, must
// equal report_id; event time as for readings.
std::optional<Rejection> DecodeReport(const KafkaRecord& record, const ValidationPolicy& policy,
                                      absl::Time now, v1::CitizenReport* out);

// Decodes and validates a registration from the compacted `cityops.devices` topic (a
// `DeviceRegistered`): device_id, a kind of the catalogue in force (`kind_id` and/or the
// typed `kind`, as for readings) and grid_code are required; the key, when present, must
// equal device_id. The archive: a typed kind's typed archive message, a catalogue-only
// kind's `archive_values` (each a field of the kind's archive in the catalogue, its text
// read as the field's type; only a records field may repeat).
std::optional<Rejection> DecodeDevice(const KafkaRecord& record, const ValidationPolicy& policy,
                                      v1::DeviceRegistered* out);

// "INVALID_METRIC" for REJECT_CODE_INVALID_METRIC: the value of the dead-letter header.
std::string_view RejectCodeName(v1::RejectCode code);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_RECORD_DECODER_H_
