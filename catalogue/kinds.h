// A catalogue's device kinds, compiled for the per-reading paths: ingest validates a
// reading of any kind through `Kind`, the rules engine resolves a rule's metric to a
// `KindMetric` and reads it from a reading of either form (a typed metrics message or
// `MetricValues` by name), the read models and the simulator name kinds and metrics
// through it. This is the one path every kind takes; no stage names a kind in code.
//
// Metric slots. Each metric of a kind has a slot below `kMaxMetricSlots`: for the four
// typed kinds its field number in the typed message (so a typed reading needs no name
// lookup), for a catalogue-only kind its position in the catalogue plus one.
#ifndef CITYOPS_CATALOGUE_KINDS_H_
#define CITYOPS_CATALOGUE_KINDS_H_

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/catalogue.pb.h"
#include "cityops/v1/reading.pb.h"
#include "google/protobuf/descriptor.h"

namespace cityops::catalogue {

inline constexpr int kMaxMetricSlots = 64;

struct KindMetric {
  std::string name;
  int slot = 0;
  v1::MetricType type = v1::METRIC_TYPE_NUMBER;
  bool repeated = false;  // A repeated code: the codes active now.
  bool has_min = false;
  bool has_max = false;
  double min = 0;
  double max = 0;
  std::string unit;
  // The typed kinds: the field of the typed metrics message. Null for catalogue-only
  // kinds.
  const google::protobuf::FieldDescriptor* field = nullptr;
  // The catalogue's entry; null for a table without a catalogue (TypedOnly()).
  const v1::MetricSpec* spec = nullptr;
};

struct Kind {
  int index = 0;  // Position in the table.
  std::string id;
  v1::DeviceKind typed = v1::DEVICE_KIND_UNSPECIFIED;
  // The typed kinds: SensorReading's metrics member (e.g. `flood_gauge`), else null.
  const google::protobuf::FieldDescriptor* member = nullptr;
  std::vector<KindMetric> metrics;  // In the catalogue's order (field order when typed).
  absl::Duration reporting_interval = absl::Hours(1);
  const v1::DeviceKindSpec* spec = nullptr;  // Null in TypedOnly().

  // The metric `name`, or null.
  const KindMetric* Metric(std::string_view name) const;
  // The metric in `slot`, or null.
  const KindMetric* AtSlot(int slot) const;
  // "water_depth_cm, rainfall_mm_per_h, battery_pct": for errors that say what to use.
  std::string MetricNames() const;

 private:
  friend class KindTable;
  absl::flat_hash_map<std::string, int> by_name_;  // Into metrics.
  std::vector<int> by_slot_;                       // Into metrics; -1: none.
};

// The kinds of one catalogue. Owns a copy of the catalogue, so it outlives its source.
class KindTable {
 public:
  // From a checked catalogue (CheckCatalogue).
  static std::shared_ptr<const KindTable> FromCatalogue(const v1::Catalogue& catalogue);
  // The four typed kinds only, from the typed messages: how logs written before the
  // catalogue are read.
  static std::shared_ptr<const KindTable> TypedOnly();
  // The built-in catalogue's (catalogue/city.yaml), built on first use.
  static std::shared_ptr<const KindTable> BuiltIn();

  const std::vector<Kind>& kinds() const { return kinds_; }
  // The kind with catalogue id `id`, or null.
  const Kind* Find(std::string_view id) const;
  // The kind that `typed` readings belong to, or null.
  const Kind* FindTyped(v1::DeviceKind typed) const;
  // The kind of a reading: by `kind_id` when set, else by its typed `kind`. Null when
  // neither names a kind of the table, or they disagree.
  const Kind* KindOf(const v1::SensorReading& reading) const;
  // Every kind id, comma-separated, for errors.
  std::string KindIds() const;
  // The catalogue it was built from; empty for TypedOnly().
  const v1::Catalogue& catalogue() const { return catalogue_; }

 private:
  KindTable() = default;
  void Index();
  v1::Catalogue catalogue_;
  std::vector<Kind> kinds_;
  absl::flat_hash_map<std::string, int> by_id_;
  std::array<int, v1::DeviceKind_ARRAYSIZE> by_typed_ = MakeNone();
  static std::array<int, v1::DeviceKind_ARRAYSIZE> MakeNone() {
    std::array<int, v1::DeviceKind_ARRAYSIZE> a;
    a.fill(-1);
    return a;
  }
};

// The catalogue id of a typed kind ("flood_gauge"), or "" for UNSPECIFIED.
std::string TypedKindId(v1::DeviceKind kind);

// The value of `metric` in the `MetricValue` `v`, as a number (flags 1/0), or an error
// naming the metric, what type the catalogue gives it and which member to set; checks
// the bounds. Repeated codes are not read here (see `codes`).
absl::StatusOr<double> MetricValueNumber(const KindMetric& metric, const v1::MetricValue& v);

}  // namespace cityops::catalogue

#endif  // CITYOPS_CATALOGUE_KINDS_H_
