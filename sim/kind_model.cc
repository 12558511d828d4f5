#include "sim/kind_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"

namespace cityops::sim {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer.
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A standard normal number from a hash (Box-Muller).
double HashNormal(uint64_t seed, uint64_t a, uint64_t b) {
  const double u1 = std::max(1e-12, HashUnit(seed, a, b));
  const double u2 = HashUnit(seed ^ 0xb0c5, a, b);
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * 3.14159265358979323846 * u2);
}

// Units of things counted whole.
bool Whole(const std::string& unit) {
  return unit == "sockets" || unit == "floor" || unit == "floors" || unit == "objects";
}

// Text values an archive field may plausibly hold, by "kind.field" or by field name.
struct TextChoices {
  const char* field;
  std::vector<const char*> values;
};
const std::vector<TextChoices>& TextTable() {
  static const auto* table = new std::vector<TextChoices>{
      {"fire_hydrant.hydrant_type", {"above ground", "below ground"}},
      {"water_company",
       {"Shanghai Chengtou Water", "Shanghai Shibei Water", "Pudong Veolia Water"}},
      {"smoke_detector.site", {"stairwell", "stairwell", "charging shed", "corridor"}},
      {"gas_detector.site", {"kitchen", "kitchen", "gas well", "boiler room"}},
      {"gas", {"natural gas", "natural gas", "natural gas", "LPG"}},
      {"operator", {"Xiaoha Charging", "Tietachongdian", "compound property management"}},
      {"structure", {"hidden-frame glass", "exposed-frame glass", "point-supported glass"}},
  };
  return *table;
}

// Plausible numbers of an archive field (whole numbers in [lo, hi]), by field name.
struct NumberRange {
  const char* field;
  double lo;
  double hi;
};
constexpr NumberRange kNumberRanges[] = {{"sockets", 10, 40}, {"floors_covered", 6, 33}};

}  // namespace

double HashUnit(uint64_t seed, uint64_t a, uint64_t b) {
  return static_cast<double>(Mix(Mix(seed ^ Mix(a)) ^ b) >> 11) * 0x1.0p-53;
}

KindModel::KindModel(const catalogue::Kind& kind) : kind_(&kind), metrics_(kind.metrics.size()) {
  if (kind.spec == nullptr) return;
  for (const v1::MetricModel& model : kind.spec->simulation().metrics()) {
    const int index = MetricIndex(model.metric());
    if (index < 0) continue;
    Metric& m = metrics_[static_cast<size_t>(index)];
    m.modelled = true;
    m.baseline = model.baseline();
    m.noise = std::abs(model.noise());
  }
  for (size_t k = 0; k < metrics_.size(); ++k) {
    Metric& m = metrics_[k];
    if (Whole(kind.metrics[k].unit)) {
      m.step = 1;
    } else if (m.noise > 0) {
      m.step = std::clamp(std::pow(10.0, std::floor(std::log10(m.noise)) - 1), 0.001, 1.0);
    }
  }
}

int KindModel::MetricIndex(std::string_view name) const {
  for (size_t k = 0; k < kind_->metrics.size(); ++k) {
    if (kind_->metrics[k].name == name) return static_cast<int>(k);
  }
  return -1;
}

void KindModel::Fill(uint64_t device_key, std::mt19937_64& rng,
                     std::span<const MetricOverride> overrides, std::span<uint64_t> counters,
                     v1::MetricValues* out) const {
  out->Clear();
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  for (size_t k = 0; k < metrics_.size(); ++k) {
    const catalogue::KindMetric& metric = kind_->metrics[k];
    const Metric& m = metrics_[k];
    const MetricOverride* o = k < overrides.size() ? &overrides[k] : nullptr;
    const bool overridden = o != nullptr && (o->baseline || o->value);
    if (!m.modelled && !overridden && metric.type != v1::METRIC_TYPE_FLAG) continue;
    const double baseline = o != nullptr && o->baseline ? *o->baseline : m.baseline;
    const double noise = o != nullptr && o->noise ? *o->noise : m.noise;
    v1::MetricValue* v = out->add_values();
    v->set_name(metric.name);
    switch (metric.type) {
      case v1::METRIC_TYPE_FLAG:
        v->set_flag(o != nullptr && o->value ? *o->value >= 0.5 : unit(rng) < baseline);
        break;
      case v1::METRIC_TYPE_CODE: {
        if (metric.repeated) {
          v->clear_value();
          break;
        }
        int64_t code = std::llround(o != nullptr && o->value ? *o->value : baseline);
        bool known = false;
        if (metric.spec != nullptr) {
          for (const v1::MetricCode& c : metric.spec->codes()) known |= c.value() == code;
          if (!known && metric.spec->codes_size() > 0) code = metric.spec->codes(0).value();
        }
        v->set_code(code);
        break;
      }
      case v1::METRIC_TYPE_COUNTER: {
        uint64_t none = 0;  // Without a place to keep it, the count of this reading.
        uint64_t& total = k < counters.size() ? counters[k] : none;
        if (o != nullptr && o->value) {
          total = std::max(total, static_cast<uint64_t>(std::max(0.0, *o->value)));
        } else if (baseline > 0) {
          std::poisson_distribution<uint64_t> add(baseline);
          total += add(rng);
        }
        if (metric.has_max) total = std::min(total, static_cast<uint64_t>(metric.max));
        if (metric.has_min)
          total = std::max(total, static_cast<uint64_t>(std::max(0.0, metric.min)));
        v->set_count(total);
        break;
      }
      default: {
        double value;
        if (o != nullptr && o->value) {
          value = *o->value * (1 + 0.01 * normal(rng));
        } else {
          // Half the variance is the device's own offset, half the reading's noise.
          const double own = HashNormal(device_key, static_cast<uint64_t>(metric.slot), 0x0ff5e7);
          value = baseline + noise * std::sqrt(0.5) * (own + normal(rng));
        }
        value = std::round(value / m.step) * m.step + 0.0;
        if (metric.has_min) value = std::max(value, metric.min);
        if (metric.has_max) value = std::min(value, metric.max);
        v->set_number(value);
        break;
      }
    }
  }
}

v1::ArchiveValues ArchiveOf(const catalogue::Kind& kind, uint64_t key, std::string_view place) {
  v1::ArchiveValues archive;
  if (kind.spec == nullptr) return archive;
  for (int f = 0; f < kind.spec->archive_size(); ++f) {
    const v1::ArchiveFieldSpec& spec = kind.spec->archive(f);
    const double u = HashUnit(key, static_cast<uint64_t>(f), 0xa6c1);
    const double lo = spec.has_min() ? spec.min() : 0;
    const double hi = spec.has_max() ? spec.max() : std::max(lo, 100.0);
    v1::ArchiveValue* v = archive.add_fields();
    v->set_name(spec.name());
    switch (spec.type()) {
      case v1::ARCHIVE_FIELD_TYPE_NUMBER: {
        double a = lo, b = hi;
        for (const NumberRange& r : kNumberRanges) {
          if (spec.name() == r.field) a = std::max(lo, r.lo), b = std::min(hi, r.hi);
        }
        v->set_value(absl::StrFormat("%d", static_cast<int64_t>(std::floor(a + (b - a + 1) * u))));
        break;
      }
      case v1::ARCHIVE_FIELD_TYPE_YEAR: {
        // Installed in the last eighteen years.
        const double year = std::clamp(std::floor(2008 + 18 * u), lo, hi);
        v->set_value(absl::StrFormat("%d", static_cast<int64_t>(year)));
        break;
      }
      case v1::ARCHIVE_FIELD_TYPE_FLAG:
        v->set_value(u < 0.6 ? "true" : "false");
        break;
      case v1::ARCHIVE_FIELD_TYPE_DATE:
      case v1::ARCHIVE_FIELD_TYPE_RECORDS: {
        // Within 2026 (a permit's end, a record's date).
        const int day = static_cast<int>(u * 365);
        const absl::CivilDay date = absl::CivilDay(2026, 1, 1) + day;
        v->set_value(spec.type() == v1::ARCHIVE_FIELD_TYPE_DATE
                         ? absl::StrFormat("%04d-%02d-%02d", date.year(), date.month(), date.day())
                         : absl::StrFormat("%04d-%02d-%02d inspection", date.year(), date.month(),
                                           date.day()));
        break;
      }
      default: {
        const std::string qualified = kind.id + "." + spec.name();
        const std::vector<const char*>* choices = nullptr;
        for (const TextChoices& t : TextTable()) {
          if (t.field == qualified) choices = &t.values;
        }
        for (const TextChoices& t : TextTable()) {
          if (choices == nullptr && t.field == spec.name()) choices = &t.values;
        }
        if (choices != nullptr) {
          v->set_value((*choices)[static_cast<size_t>(u * static_cast<double>(choices->size()))]);
        } else if (spec.name() == "compound" || spec.name() == "building") {
          v->set_value(
              absl::StrFormat("%s %d, %s", spec.name(), 1 + static_cast<int>(u * 40), place));
        } else {
          // A reference number: "site_permit" -> "SITE-PERMIT-2026-04217".
          std::string prefix = absl::AsciiStrToUpper(spec.name());
          std::replace(prefix.begin(), prefix.end(), '_', '-');
          v->set_value(absl::StrFormat("%s-2026-%05d", prefix, static_cast<int>(u * 100000)));
        }
        break;
      }
    }
  }
  return archive;
}

}  // namespace cityops::sim
