// Reading a named metric out of a `SensorReading`: the bridge between a rule's text
// ("water_depth_cm") and the typed metrics of a device kind. Resolved once when a rule
// set is compiled. Per reading, `Reading` decodes every metric once (from a parsed
// SensorReading, or straight from its stored bytes) for all the rules that test it.
#ifndef CITYOPS_PROJECTIONS_RULES_METRIC_H_
#define CITYOPS_PROJECTIONS_RULES_METRIC_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "cityops/v1/reading.pb.h"
#include "google/protobuf/descriptor.h"

namespace cityops::rules {

// A metric of one device kind: the kind's member of `SensorReading.metrics` and the
// field inside it.
struct MetricRef {
  v1::DeviceKind kind = v1::DEVICE_KIND_UNSPECIFIED;
  const google::protobuf::FieldDescriptor* member = nullptr;  // e.g. `flood_gauge`
  const google::protobuf::FieldDescriptor* field = nullptr;   // e.g. `water_depth_cm`
  // The same, as numbers for the per-reading path.
  int member_number = 0;
  int field_number = 0;
  bool has_presence = true;
  std::string name() const;
};

// A reading as the rules see it: its device, its kind and every metric of its metrics
// message, decoded once. Metric field numbers must be below kMaxMetricField
// (ResolveMetric refuses others). Reused from reading to reading, it allocates nothing
// once warm.
class Reading {
 public:
  static constexpr int kMaxMetricField = 64;

  // From a parsed SensorReading; `reading` must outlive the use of device_id().
  void Set(const v1::SensorReading& reading);
  // From a serialized SensorReading (a stored reading event's payload), as parsing it
  // and Set would; `bytes` must outlive the use of device_id(). False if the bytes are
  // not well-formed (parse them to learn why).
  bool Decode(std::string_view bytes);

  std::string_view device_id() const { return device_id_; }
  v1::DeviceKind kind() const { return kind_; }
  // The metric's value, or nullopt when the reading does not carry it (another kind, or
  // the optional field is absent). Booleans read as 1/0, enums as their numbers.
  std::optional<double> Get(const MetricRef& metric) const;
  bool has_elevator() const;
  // The elevator's active fault codes (empty for other kinds).
  const absl::InlinedVector<int32_t, 8>& fault_codes() const { return codes_; }

 private:
  void Clear();
  std::string_view device_id_;
  v1::DeviceKind kind_ = v1::DEVICE_KIND_UNSPECIFIED;
  int member_ = 0;  // SensorReading field number of the metrics present; 0: none.
  uint64_t present_ = 0;
  std::array<double, kMaxMetricField> values_{};
  absl::InlinedVector<int32_t, 8> codes_;
};

// Resolves `name` (a field of the kind's metrics message: a double, integer, bool or
// enum, not repeated). INVALID_ARGUMENT names the kind and lists the metrics it has.
absl::StatusOr<MetricRef> ResolveMetric(v1::DeviceKind kind, std::string_view name);

// The metric's value in `reading`, or nullopt when the reading does not carry it (another
// kind, or the optional field is absent). Booleans read as 1/0, enums as their numbers.
std::optional<double> ReadMetric(const v1::SensorReading& reading, const MetricRef& metric);

// Parses the operand of an `equals` test for `metric`: a number, `true`/`false` for
// booleans, or an enum value's name for enums.
absl::StatusOr<double> ParseMetricValue(const MetricRef& metric, std::string_view text);

// The metrics message member of SensorReading for `kind` (nullptr for UNSPECIFIED).
const google::protobuf::FieldDescriptor* MetricsMember(v1::DeviceKind kind);

}  // namespace cityops::rules

#endif  // CITYOPS_PROJECTIONS_RULES_METRIC_H_
