// libFuzzer target for the record decoder (ingest/record_decoder.h).
//
// Input layout: byte 0 picks the content-type header (kContentTypes[byte % 8]) and, with
// its top bit, a 256-byte size limit instead of the default 64 KiB; byte 1 is the key
// length (cut to what is left); then the key, then the record value. Every input
// goes through DecodeReading, DecodeReport and DecodeDevice, and each answer must hold:
//   * a rejection has a known code other than UNSPECIFIED and a non-empty message;
//   * an accepted record has every required field set and well formed, its kind one of the
//     built-in catalogue's and matching its metrics or archive (values: each a metric of the
//     kind, once, of its type, within its bounds; archive values: each a field of the kind's
//     archive), its event time inside the window, its key empty or equal to its id, every
//     floating-point number in it finite; and it is accepted again, equal, after a round
//     trip through binary protobuf and through the JSON mapping.
// A broken invariant prints what broke and aborts, which libFuzzer reports as a crash.
// With CITYOPS_FUZZ_TRACE set, every decoder's answer is printed (run_fuzz.sh uses it to
// check that the seeds are accepted records).
//
// Build and run: fuzz/run_fuzz.sh --target record_decoder SECONDS.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "catalogue/kinds.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/reflection.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "ingest/record_decoder.h"

namespace cityops::ingest {
namespace {

constexpr std::string_view kContentTypes[8] = {
    "",
    "application/x-protobuf",
    "application/json",
    "Application/JSON; charset=utf-8",
    "application/protobuf",
    "text/csv",
    " application/json ;",
    "application/x-protobuf; proto=cityops.v1.SensorReading",
};

const absl::Time kNow = absl::FromUnixSeconds(1'790'000'000);  // 2026-09-21T14:13:20Z

bool trace = false;

void Trace(const char* decoder, const std::optional<Rejection>& why) {
  if (!trace) return;
  if (why.has_value()) {
    std::fprintf(stderr, "%s: %s: %s\n", decoder, std::string(RejectCodeName(why->code)).c_str(),
                 why->message.c_str());
  } else {
    std::fprintf(stderr, "%s: accepted\n", decoder);
  }
}

void Require(bool ok, const char* what, std::string_view detail = "") {
  if (ok) return;
  std::fprintf(stderr, "record_decoder_fuzz: invariant broken: %s %.*s\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void RequireValidRejection(const Rejection& why) {
  Require(why.code != v1::REJECT_CODE_UNSPECIFIED, "rejection without a code", why.message);
  Require(v1::RejectCode_IsValid(why.code), "rejection with an unknown code", why.message);
  Require(!why.message.empty(), "rejection without a message");
  Require(!RejectCodeName(why.code).empty() && RejectCodeName(why.code) != "UNKNOWN",
          "reject code without a name");
}

// Identifier rule of record_decoder.cc, restated independently.
void RequireId(std::string_view id, bool slash_allowed, const char* what) {
  Require(!id.empty() && id.size() <= 128, what, "is empty or longer than 128 bytes");
  for (char c : id) {
    const auto u = static_cast<unsigned char>(c);
    Require(u >= 0x21 && u <= 0x7e && (slash_allowed || c != '/'), what,
            "holds a byte outside the id rule");
  }
}

void RequireKey(std::string_view key, std::string_view id) {
  Require(key.empty() || key == id, "accepted a key that differs from the id");
}

void RequireEventTime(const google::protobuf::Timestamp& ts, const ValidationPolicy& policy) {
  Require(ts.nanos() >= 0 && ts.nanos() <= 999'999'999, "accepted invalid timestamp nanos");
  const absl::Time t = absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  Require(t <= kNow + policy.max_clock_skew, "accepted an event time in the future");
  Require(t >= kNow - policy.max_age, "accepted an event time beyond retention");
}

// Every double and float anywhere in `m` is finite.
void RequireFinite(const google::protobuf::Message& m) {
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const google::protobuf::FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      switch (f->cpp_type()) {
        case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
          Require(
              std::isfinite(f->is_repeated() ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f)),
              "accepted a non-finite number in", f->full_name());
          break;
        case google::protobuf::FieldDescriptor::CPPTYPE_FLOAT:
          Require(
              std::isfinite(f->is_repeated() ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f)),
              "accepted a non-finite number in", f->full_name());
          break;
        case google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE:
          RequireFinite(f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f));
          break;
        default:
          break;
      }
    }
  }
}

bool KindMatches(v1::DeviceKind kind, int oneof_case) { return oneof_case - 9 == kind; }

// The catalogue kind of an accepted record: by kind_id, else by the typed kind; its typed
// kind must be the record's.
const catalogue::Kind& RequireKind(const std::string& kind_id, v1::DeviceKind typed) {
  const catalogue::KindTable& kinds = *catalogue::KindTable::BuiltIn();
  const catalogue::Kind* kind = kind_id.empty() ? kinds.FindTyped(typed) : kinds.Find(kind_id);
  Require(kind != nullptr, "accepted a kind the catalogue does not have", kind_id);
  Require(kind->typed == typed, "accepted a record whose kind is not its kind_id's", kind_id);
  return *kind;
}

// Each value a metric of `kind`, once, with the member of its type, within its bounds.
void RequireValues(const catalogue::Kind& kind, const v1::MetricValues& values) {
  Require(values.values_size() > 0, "accepted a reading with empty values");
  std::set<std::string> seen;
  for (const v1::MetricValue& v : values.values()) {
    const catalogue::KindMetric* m = kind.Metric(v.name());
    Require(m != nullptr, "accepted a value that is not a metric of its kind", v.name());
    Require(seen.insert(v.name()).second, "accepted a metric twice", v.name());
    if (m->repeated) {
      Require(v.value_case() == v1::MetricValue::VALUE_NOT_SET,
              "accepted a single value for a list of codes", v.name());
      continue;
    }
    Require(v.codes().empty(), "accepted codes for a single-valued metric", v.name());
    double x = 0;
    switch (m->type) {
      case v1::METRIC_TYPE_NUMBER:
        Require(v.value_case() == v1::MetricValue::kNumber, "accepted a number of another type",
                v.name());
        x = v.number();
        break;
      case v1::METRIC_TYPE_FLAG:
        Require(v.value_case() == v1::MetricValue::kFlag, "accepted a flag of another type",
                v.name());
        continue;
      case v1::METRIC_TYPE_CODE:
        Require(v.value_case() == v1::MetricValue::kCode, "accepted a code of another type",
                v.name());
        continue;
      default:
        Require(v.value_case() == v1::MetricValue::kCount, "accepted a counter of another type",
                v.name());
        x = static_cast<double>(v.count());
    }
    Require(std::isfinite(x), "accepted a non-finite value", v.name());
    Require(!m->has_min || x >= m->min, "accepted a value below its bounds", v.name());
    Require(!m->has_max || x <= m->max, "accepted a value above its bounds", v.name());
  }
}

// An accepted message stays accepted, and equal, through both encodings.
template <typename M, typename Decode>
void RequireRoundTrip(const M& accepted, std::string_view key, Decode decode) {
  M expected = accepted;
  expected.DiscardUnknownFields();  // JSON cannot carry them.
  std::string binary;
  Require(accepted.SerializeToString(&binary), "cannot serialize an accepted message");
  std::string json;
  Require(google::protobuf::util::MessageToJsonString(expected, &json).ok(),
          "cannot print an accepted message as JSON", expected.ShortDebugString());
  for (const auto& [value, content_type] :
       {std::pair<std::string_view, std::string_view>{binary, ""}, {json, "application/json"}}) {
    KafkaRecord record{.key = key, .value = value, .content_type = content_type};
    M again;
    std::optional<Rejection> why = decode(record, &again);
    Require(!why.has_value(), "an accepted message is refused after a round trip",
            why.has_value() ? why->message : "");
    again.DiscardUnknownFields();
    Require(google::protobuf::util::MessageDifferencer::Equals(again, expected),
            "a round trip changed an accepted message", expected.ShortDebugString());
  }
}

void FuzzReading(const KafkaRecord& record, const ValidationPolicy& policy) {
  static auto* out = new v1::SensorReading;  // Reused, as ingest does.
  auto decode = [&](const KafkaRecord& r, v1::SensorReading* m) {
    return DecodeReading(r, ValidationPolicy{.max_record_bytes = 1 << 20}, kNow, m);
  };
  const std::optional<Rejection> why = DecodeReading(record, policy, kNow, out);
  Trace("reading", why);
  if (why.has_value()) {
    RequireValidRejection(*why);
    return;
  }
  RequireId(out->device_id(), false, "reading device_id");
  RequireId(out->reading_id(), true, "reading_id");
  RequireKey(record.key, out->device_id());
  const catalogue::Kind& kind = RequireKind(out->kind_id(), out->kind());
  Require(out->has_event_time(), "accepted a reading without event_time");
  RequireEventTime(out->event_time(), policy);
  Require(out->metrics_case() != v1::SensorReading::METRICS_NOT_SET,
          "accepted a reading without metrics");
  if (out->metrics_case() == v1::SensorReading::kValues) {
    RequireValues(kind, out->values());
  } else {
    Require(KindMatches(kind.typed, out->metrics_case()), "accepted metrics of another kind");
  }
  RequireFinite(*out);
  RequireRoundTrip(*out, record.key, decode);
}

void FuzzReport(const KafkaRecord& record, const ValidationPolicy& policy) {
  static auto* out = new v1::CitizenReport;
  auto decode = [&](const KafkaRecord& r, v1::CitizenReport* m) {
    return DecodeReport(r, ValidationPolicy{.max_record_bytes = 1 << 20}, kNow, m);
  };
  const std::optional<Rejection> why = DecodeReport(record, policy, kNow, out);
  Trace("report", why);
  if (why.has_value()) {
    RequireValidRejection(*why);
    return;
  }
  RequireId(out->report_id(), false, "report_id");
  RequireKey(record.key, out->report_id());
  Require(out->source() == v1::CASE_SOURCE_HOTLINE_12345 ||
              out->source() == v1::CASE_SOURCE_STREET_PATROL ||
              out->source() == v1::CASE_SOURCE_RESIDENTIAL_STATION,
          "accepted a report from a source that is not human");
  RequireId(out->grid().grid_code(), true, "report grid_code");
  RequireId(out->category().code(), true, "report category code");
  Require(out->has_event_time(), "accepted a report without event_time");
  RequireEventTime(out->event_time(), policy);
  RequireFinite(*out);
  RequireRoundTrip(*out, record.key, decode);
}

void FuzzDevice(const KafkaRecord& record, const ValidationPolicy& policy) {
  static auto* out = new v1::DeviceRegistered;
  auto decode = [&](const KafkaRecord& r, v1::DeviceRegistered* m) {
    return DecodeDevice(r, ValidationPolicy{.max_record_bytes = 1 << 20}, m);
  };
  const std::optional<Rejection> why = DecodeDevice(record, policy, out);
  Trace("device", why);
  if (why.has_value()) {
    RequireValidRejection(*why);
    return;
  }
  RequireId(out->device_id(), false, "registration device_id");
  RequireKey(record.key, out->device_id());
  const catalogue::Kind& kind = RequireKind(out->kind_id(), out->kind());
  RequireId(out->grid().grid_code(), true, "registration grid_code");
  if (out->archive_case() == v1::DeviceRegistered::kArchiveValues) {
    Require(kind.typed == v1::DEVICE_KIND_UNSPECIFIED, "accepted archive values of a typed kind");
    for (const v1::ArchiveValue& a : out->archive_values().fields()) {
      bool known = false;
      for (const v1::ArchiveFieldSpec& f : kind.spec->archive()) known |= f.name() == a.name();
      Require(known, "accepted an archive value that is no archive field of its kind", a.name());
    }
  } else {
    Require(out->archive_case() == v1::DeviceRegistered::ARCHIVE_NOT_SET ||
                KindMatches(kind.typed, out->archive_case()),
            "accepted archive data of another kind");
  }
  RequireFinite(*out);
  RequireRoundTrip(*out, record.key, decode);
}

}  // namespace
}  // namespace cityops::ingest

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // protobuf logs invalid UTF-8 in string fields at ERROR; the decoder already says so.
  google::protobuf::SetLogHandler(nullptr);
  cityops::ingest::trace = std::getenv("CITYOPS_FUZZ_TRACE") != nullptr;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cityops::ingest;
  if (size < 2) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string_view content_type = kContentTypes[data[0] % 8];
  const size_t key_size = std::min<size_t>(data[1], size - 2);
  const KafkaRecord record{
      .topic = "fuzz",
      .key = input.substr(2, key_size),
      .value = input.substr(2 + key_size),
      .content_type = content_type,
  };
  ValidationPolicy policy;
  if (data[0] & 0x80) policy.max_record_bytes = 256;
  FuzzReading(record, policy);
  FuzzReport(record, policy);
  FuzzDevice(record, policy);
  return 0;
}
