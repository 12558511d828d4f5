// Comparing what the rules stage derived in two logs: the derived events of each
// partition, normalized so that logs whose derived events interleave their inputs
// differently compare byte for byte. Used to check that a log built with restarts (of the
// stage, or of the whole daemon) holds exactly what one uninterrupted run derives.
//
// Two normalizations:
//   * `NormalizedDerived`: references become the ordinal of the input event they name in
//     its partition. Right for logs with the same inputs in the same order (a replay of a
//     log's own inputs), wrong for logs whose clock ticks landed elsewhere: every tick
//     shifts the ordinals after it.
//   * by identity (projections/derived_diff.h, which `cityops log compare` uses too):
//     references become the identity of the event they name, whatever its position. Right
//     for logs ingested from the same Kafka records at different times, in different
//     batches, with restarts.
//
// Header-only and free of Catch2; errors throw std::runtime_error.
#ifndef CITYOPS_TESTS_TESTING_DERIVED_EVENTS_H_
#define CITYOPS_TESTS_TESTING_DERIVED_EVENTS_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/derived_diff.h"

namespace cityops::testing {

// Every event of the log, by partition, in order.
inline std::vector<std::vector<v1::Event>> AllEvents(const kernel::EventLog& log) {
  std::vector<std::vector<v1::Event>> out;
  for (kernel::Partition p : log.Partitions()) {
    if (out.size() <= p.value()) out.resize(p.value() + 1);
    absl::StatusOr<std::vector<v1::Event>> events = log.Read(p, kernel::Sequence(0), 100'000'000);
    if (!events.ok()) throw std::runtime_error(events.status().ToString());
    out[p.value()] = *std::move(events);
  }
  return out;
}

// (device id, reading id) of every reading in the log, with how often each occurs: a
// reading stored exactly once counts 1.
inline std::map<std::pair<std::string, std::string>, int> ReadingCounts(
    const kernel::EventLog& log) {
  std::map<std::pair<std::string, std::string>, int> out;
  for (const auto& events : AllEvents(log)) {
    for (const v1::Event& e : events) {
      if (e.has_reading()) ++out[{e.reading().device_id(), e.reading().reading_id()}];
    }
  }
  return out;
}

// Appended by the rules stage (its provenance stage is "rules").
inline bool IsDerived(const v1::Event& e) { return projections::IsDerivedEvent(e); }

// Derived events, partition by partition, with positions replaced by the ordinal of the
// input event they refer to, and the log's own stamps (sequence, recorded time) cleared.
inline std::vector<std::vector<std::string>> NormalizedDerived(const kernel::EventLog& log) {
  std::vector<std::vector<v1::Event>> all = AllEvents(log);
  std::map<std::pair<uint32_t, uint64_t>, uint64_t> ordinal;
  for (const auto& events : all) {
    uint64_t n = 0;
    for (const v1::Event& e : events) {
      if (!IsDerived(e)) ordinal[{e.partition(), e.sequence()}] = n++;
    }
  }
  auto map_ref = [&](v1::EventRef* r) {
    auto it = ordinal.find({r->partition(), r->sequence()});
    if (it == ordinal.end()) {
      throw std::runtime_error("a derived event refers to an event that is not an input");
    }
    r->set_sequence(it->second);
  };
  std::vector<std::vector<std::string>> out(all.size());
  for (size_t p = 0; p < all.size(); ++p) {
    for (v1::Event e : all[p]) {
      if (!IsDerived(e)) continue;
      e.clear_sequence();
      e.clear_recorded_time();
      map_ref(e.mutable_provenance()->mutable_caused_by());
      if (e.has_alert_raised()) {
        for (v1::EventRef& r : *e.mutable_alert_raised()->mutable_readings()) map_ref(&r);
      }
      if (e.has_alert_cleared() && e.alert_cleared().has_reading()) {
        map_ref(e.mutable_alert_cleared()->mutable_reading());
      }
      if (e.has_case_linked()) map_ref(e.mutable_case_linked()->mutable_event());
      std::string bytes;
      {
        google::protobuf::io::StringOutputStream stream(&bytes);
        google::protobuf::io::CodedOutputStream coded(&stream);
        coded.SetSerializationDeterministic(true);
        e.SerializeToCodedStream(&coded);
      }
      out[p].push_back(std::move(bytes));
    }
  }
  return out;
}

// Which derived events to compare (projections/derived_diff.h): `.until` an event time.
using DerivedFilter = projections::DerivedDiffOptions;
using projections::IdentifiedEvent;

// Derived events by identity (projections::DerivedByIdentity), throwing on errors.
inline std::vector<std::vector<IdentifiedEvent>> DerivedByIdentity(
    const kernel::EventLog& log, const DerivedFilter& filter = {}) {
  absl::StatusOr<std::vector<std::vector<IdentifiedEvent>>> out =
      projections::DerivedByIdentity(log, filter);
  if (!out.ok()) throw std::runtime_error(out.status().ToString());
  return *std::move(out);
}

// Derived events (selected by `filter`) that cite a clock tick, as text: each depends on
// where a tick landed, that is on when ingest ran.
inline std::vector<std::string> DerivedCitingTicks(const kernel::EventLog& log,
                                                   const DerivedFilter& filter = {}) {
  std::vector<std::string> out;
  for (const auto& events : testing::DerivedByIdentity(log, filter)) {
    for (const IdentifiedEvent& e : events) {
      if (e.cites_tick) out.push_back(e.Text());
    }
  }
  return out;
}

// The first place where the derived events of `a` and `b` differ, as text
// (projections::CompareDerived); empty when they are equal.
inline std::string FirstDerivedDifference(const kernel::EventLog& a, const kernel::EventLog& b,
                                          const DerivedFilter& filter = {},
                                          const std::string& a_name = "A",
                                          const std::string& b_name = "B") {
  absl::StatusOr<projections::DerivedDiff> diff =
      projections::CompareDerived(a, b, filter, a_name, b_name);
  if (!diff.ok()) throw std::runtime_error(diff.status().ToString());
  return diff->difference.value_or("");
}

// Appends the input events (not derived) of `from` to the empty log `to`, partition by
// partition, up to `end[p]` (exclusive) where given.
inline void CopyInputs(const kernel::EventLog& from, kernel::EventLog& to,
                       const std::map<uint32_t, uint64_t>& end = {}) {
  for (const auto& events : AllEvents(from)) {
    if (events.empty()) continue;
    const uint32_t p = events[0].partition();
    kernel::AppendBatch batch{kernel::Partition(p)};
    for (const v1::Event& e : events) {
      if (auto it = end.find(p); it != end.end() && e.sequence() >= it->second) break;
      if (IsDerived(e)) continue;
      v1::Event copy = e;
      copy.clear_stream_version();
      batch.Add(std::move(copy));
    }
    if (batch.empty()) continue;
    absl::StatusOr<kernel::AppendResult> r = to.Append(std::move(batch));
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
  }
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_DERIVED_EVENTS_H_
