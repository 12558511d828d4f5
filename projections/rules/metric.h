// Reading a named metric out of a `SensorReading`: the bridge between a rule's text
// ("water_depth_cm") and the typed metrics of a device kind. Resolved once when a rule
// set is compiled; read per reading through protobuf reflection.
#ifndef CITYOPS_PROJECTIONS_RULES_METRIC_H_
#define CITYOPS_PROJECTIONS_RULES_METRIC_H_

#include <optional>
#include <string>
#include <string_view>

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
  std::string name() const;
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
