// Shared test fixtures: a temporary directory that cleans up after itself, and builders
// for realistic events (readings on `device/<id>` streams with their Kafka provenance,
// case events on `case/<id>` streams with an idempotency key).
//
// Header-only and free of Catch2, so that helper programs (tests/crash_appender.cc) can
// use it too.
#ifndef CITYOPS_TESTS_TESTING_TEMP_DIR_H_
#define CITYOPS_TESTS_TESTING_TEMP_DIR_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"

namespace cityops::testing {

// A fresh, unique directory under $TMPDIR (or /tmp), removed with everything in it when
// the object goes away. Set CITYOPS_KEEP_TEST_DIRS=1 to keep it for a post-mortem.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/cityops-test-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error(absl::StrCat("mkdtemp failed for ", pattern));
    }
    path_ = std::move(pattern);
  }
  ~TempDir() {
    const char* keep = std::getenv("CITYOPS_KEEP_TEST_DIRS");
    if (keep != nullptr && std::string_view(keep) == "1") return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // Best effort: a test must not throw here.
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // `path()/name`, not created.
  std::string Sub(std::string_view name) const {
    return absl::StrCat(path_, "/", std::string(name));
  }

 private:
  std::string path_;
};

// A fixed, plausible "now" for tests: 2026-09-21 07:06:40 UTC.
inline const absl::Time kTestNow = absl::FromUnixSeconds(1'790'000'000);

inline const std::string kReadingsTopic = "cityops.readings";

inline void SetTimestamp(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t seconds = absl::ToUnixSeconds(t);
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
}

// A manhole cover reading of `device_id` as ingest would store it: stream
// `device/<id>`, provenance `topic`/`kafka_partition`/`offset`, reading id `r<offset>`
// and idempotency key `<device id>/r<offset>`. Metric values vary with the offset.
inline v1::Event ReadingEvent(std::string_view device_id, int64_t offset,
                              int32_t kafka_partition = 0, absl::Time event_time = kTestNow,
                              std::string_view topic = kReadingsTopic) {
  v1::Event e;
  e.set_stream_id(absl::StrCat("device/", std::string(device_id)));
  SetTimestamp(e.mutable_event_time(), event_time);
  v1::SensorReading& r = *e.mutable_reading();
  r.set_device_id(std::string(device_id));
  r.set_kind(v1::DEVICE_KIND_MANHOLE_COVER);
  r.set_reading_id(absl::StrCat("r", offset));
  *r.mutable_event_time() = e.event_time();
  v1::ManholeCoverMetrics& m = *r.mutable_manhole_cover();
  m.set_tilt_deg(0.5 + static_cast<double>(offset % 7) * 0.25);
  m.set_cover_open(offset % 97 == 0);
  m.set_well_water_level_m(1.2 + static_cast<double>(offset % 11) * 0.05);
  m.set_battery_pct(93.0 - static_cast<double>(offset % 5));
  v1::Provenance& p = *e.mutable_provenance();
  v1::KafkaSource& k = *p.mutable_kafka();
  k.set_topic(std::string(topic));
  k.set_partition(kafka_partition);
  k.set_offset(offset);
  p.set_idempotency_key(absl::StrCat(r.device_id(), "/", r.reading_id()));
  return e;
}

// A citizen report (hotline 12345) opening case `case_id` on stream `case/<id>`, issued
// by an operator, with `idempotency_key` as the client's request id.
inline v1::Event CaseReportedEvent(std::string_view case_id, std::string_view idempotency_key,
                                   absl::Time event_time = kTestNow) {
  v1::Event e;
  e.set_stream_id(absl::StrCat("case/", std::string(case_id)));
  SetTimestamp(e.mutable_event_time(), event_time);
  v1::CaseReported& c = *e.mutable_case_reported();
  c.set_case_id(std::string(case_id));
  c.set_source(v1::CASE_SOURCE_HOTLINE_12345);
  c.mutable_grid()->set_district_code("310104");
  c.mutable_grid()->set_street_code("310104010");
  c.mutable_grid()->set_grid_code("310104010001001");
  c.mutable_location()->set_latitude_deg(31.1883);
  c.mutable_location()->set_longitude_deg(121.4365);
  c.mutable_category()->set_code("0103");
  c.mutable_category()->set_name("storm drain manhole");
  c.set_description("manhole cover missing at the bus stop");
  c.set_reporter("call-0001");
  c.mutable_originator()->set_level(v1::GRID_LEVEL_RESIDENTIAL_STATION);
  c.mutable_originator()->set_code("310104010001");
  v1::Provenance& p = *e.mutable_provenance();
  p.mutable_actor()->set_user("zhang.wei");
  p.mutable_actor()->set_role(v1::ROLE_OPERATOR);
  p.set_idempotency_key(std::string(idempotency_key));
  return e;
}

// An urge (催办) of case `case_id` with `note`, issued by a supervisor.
inline v1::Event CaseUrgedEvent(std::string_view case_id, std::string_view idempotency_key,
                                std::string_view note = "please hurry",
                                absl::Time event_time = kTestNow) {
  v1::Event e;
  e.set_stream_id(absl::StrCat("case/", std::string(case_id)));
  SetTimestamp(e.mutable_event_time(), event_time);
  e.mutable_case_urged()->set_case_id(std::string(case_id));
  e.mutable_case_urged()->set_note(std::string(note));
  v1::Provenance& p = *e.mutable_provenance();
  p.mutable_actor()->set_user("li.na");
  p.mutable_actor()->set_role(v1::ROLE_SUPERVISOR);
  p.set_idempotency_key(std::string(idempotency_key));
  return e;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_TEMP_DIR_H_
