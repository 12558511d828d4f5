// Reading a named metric out of a `SensorReading`: the bridge between a rule's text
// ("water_depth_cm") and the metrics of a device kind in the catalogue
// (catalogue/kinds.h). Resolved once when a rule set is compiled. Per reading, `Reading`
// decodes every metric once (from a parsed SensorReading, or straight from its stored
// bytes) for all the rules that test it.
#ifndef CITYOPS_PROJECTIONS_RULES_METRIC_H_
#define CITYOPS_PROJECTIONS_RULES_METRIC_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "catalogue/kinds.h"
#include "cityops/v1/reading.pb.h"

namespace cityops::rules {

// A metric of one device kind of the rule set's kind table: resolved once when a rule set
// is compiled.
struct MetricRef {
  int kind = -1;                                  // The kind's index in the table.
  const catalogue::KindMetric* metric = nullptr;  // Into the table.
  int slot = 0;
  std::string name() const { return metric == nullptr ? "" : metric->name; }
};

// A reading as the rules see it: its device, its kind and every metric it carries,
// decoded once by slot, whichever form it came in (a typed metrics message, or
// `MetricValues` by the catalogue's names). Reused from reading to reading, it allocates
// nothing once warm.
class Reading {
 public:
  // From a parsed SensorReading, as Decode would from its bytes. `kinds` must outlive
  // the use of kind().
  void Set(const v1::SensorReading& reading, const catalogue::KindTable& kinds);
  // From a serialized SensorReading (a stored reading event's payload); `bytes` must
  // outlive the use of device_id(). False if the bytes are not well-formed (parse them to
  // learn why).
  bool Decode(std::string_view bytes, const catalogue::KindTable& kinds);

  std::string_view device_id() const { return device_id_; }
  // The reading's kind in the table: by its kind_id, else by its typed kind; null when
  // the table has no such kind (or the two disagree).
  const catalogue::Kind* kind() const { return kind_; }
  // The metric's value, or nullopt when the reading does not carry it (another kind, or
  // absent). Flags read as 1/0, codes and enums as their numbers.
  std::optional<double> Get(const MetricRef& metric) const {
    if (kind_ == nullptr || metric.kind != kind_->index) return std::nullopt;
    if (present_ & (uint64_t{1} << metric.slot)) return values_[metric.slot];
    return std::nullopt;
  }
  // True when the reading carries its kind's list of active codes (an elevator's fault
  // codes), possibly empty.
  bool has_codes() const { return has_codes_; }
  const absl::InlinedVector<int32_t, 8>& codes() const { return codes_; }

 private:
  void Clear();
  bool DecodeValue(std::string_view bytes);
  std::string_view device_id_;
  std::string_view kind_id_;
  v1::DeviceKind typed_ = v1::DEVICE_KIND_UNSPECIFIED;
  const catalogue::Kind* kind_ = nullptr;
  int member_ = 0;  // SensorReading field number of the metrics present; 0: none.
  bool has_codes_ = false;
  uint64_t present_ = 0;
  std::array<double, catalogue::kMaxMetricSlots> values_{};
  absl::InlinedVector<int32_t, 8> codes_;
  absl::InlinedVector<std::string_view, 16> named_;  // MetricValue bytes, until the kind is known.
  std::string scratch_;                              // Set's serialization.
};

// Resolves `name`, a metric of `kind` a rule can test (not a list of codes).
// INVALID_ARGUMENT names the kind and lists the metrics it has.
absl::StatusOr<MetricRef> ResolveMetric(const catalogue::Kind& kind, std::string_view name);

// Parses the operand of an `equals` test for `metric`: a number, `true`/`false` for
// flags, or for a code its value's name (an enum value's name for the typed kinds'
// enums, e.g. `DOOR_STATE_CLOSED`; the catalogue's code name otherwise).
absl::StatusOr<double> ParseMetricValue(const MetricRef& metric, std::string_view text);

}  // namespace cityops::rules

#endif  // CITYOPS_PROJECTIONS_RULES_METRIC_H_
