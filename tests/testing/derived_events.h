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
//   * `DerivedByIdentity`: references become the IDENTITY of the event they name, which
//     does not depend on where the event landed in the log (`EventIdentity`). Right for
//     logs ingested from the same Kafka records at different times, in different
//     batches, with restarts. `FirstDerivedDifference` describes where two logs part.
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

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"

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

// Appended by the rules stage (its provenance stage is "rules").
inline bool IsDerived(const v1::Event& e) { return e.provenance().stage() == "rules"; }

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

// What an event IS, independent of where it landed in a log:
//   * ingested from Kafka: its source, `<topic>/<partition>@<offset>`;
//   * a clock tick: `tick@<event time>` (ticks are the one input whose place and time
//     depend on when ingest ran: a derived event citing one depends on that timing, which
//     is itself a finding);
//   * a rule-set activation: `ruleset/<name>/<sha256>` (its idempotency key also holds
//     the activation time, i.e. when the daemon that activated it started);
//   * anything else with an idempotency key (human commands, derived events): that key.
// An event with none of these is named by its stream and version, which is as good as it
// gets.
inline std::string EventIdentity(const v1::Event& e) {
  const v1::Provenance& p = e.provenance();
  if (p.has_kafka()) {
    return absl::StrCat(p.kafka().topic(), "/", p.kafka().partition(), "@", p.kafka().offset());
  }
  if (e.has_clock_tick()) {
    return absl::StrCat(
        "tick@", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", kernel::FromTimestamp(e.event_time()),
                                  absl::UTCTimeZone()));
  }
  if (e.has_ruleset_activated()) {
    return absl::StrCat("ruleset/", e.ruleset_activated().name(), "/",
                        e.ruleset_activated().sha256());
  }
  if (!p.idempotency_key().empty()) return p.idempotency_key();
  return absl::StrCat("stream ", e.stream_id(), " v", e.stream_version(), " (no identity)");
}

// Which derived events to compare.
struct DerivedFilter {
  // Only derived events whose event time is at or before this. After the last input
  // record only clock ticks move time, and ticks depend on when and how long ingest ran:
  // what they make rules derive (a device that really went silent raises its absence
  // alert at whatever time the next tick says) legitimately differs between runs.
  absl::Time cutoff = absl::InfiniteFuture();
};

// One derived event with its references replaced by identities.
struct IdentifiedEvent {
  // The event with its references, sequence and recorded time cleared.
  v1::Event event;
  // `<field path>=<identity>` for each reference, in field order, e.g.
  // "provenance.caused_by=cityops.readings/2@1234".
  std::vector<std::string> refs;
  // True if a reference names a clock tick (see EventIdentity).
  bool cites_tick = false;

  // The event as one line of protobuf text, then its references.
  std::string Text() const {
    google::protobuf::TextFormat::Printer printer;
    printer.SetSingleLineMode(true);
    std::string text;
    printer.PrintToString(event, &text);
    while (!text.empty() && text.back() == ' ') text.pop_back();
    std::string out = absl::StrCat("{", text, "}");
    for (const std::string& r : refs) absl::StrAppend(&out, " ", r);
    return out;
  }

  bool operator==(const IdentifiedEvent& o) const {
    return refs == o.refs && Bytes(event) == Bytes(o.event);
  }

 private:
  static std::string Bytes(const v1::Event& e) {
    std::string bytes;
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    e.SerializeToCodedStream(&coded);
    return bytes;
  }
};

namespace internal {

// Replaces every EventRef inside `m` (at any depth: found by reflection, so a reference
// field added later is covered too) by its identity in `out->refs`, and clears it.
inline void IdentifyRefs(
    google::protobuf::Message* m, const std::string& path,
    const std::map<std::pair<uint32_t, uint64_t>, const v1::Event*>& by_position,
    IdentifiedEvent* out) {
  const google::protobuf::Reflection* reflection = m->GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(*m, &fields);
  for (const google::protobuf::FieldDescriptor* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const bool is_ref = f->message_type() == v1::EventRef::descriptor();
    const int n = f->is_repeated() ? reflection->FieldSize(*m, f) : 1;
    for (int i = 0; i < n; ++i) {
      google::protobuf::Message* sub = f->is_repeated()
                                           ? reflection->MutableRepeatedMessage(m, f, i)
                                           : reflection->MutableMessage(m, f);
      std::string sub_path = absl::StrCat(path, path.empty() ? "" : ".", f->name());
      if (f->is_repeated()) absl::StrAppend(&sub_path, "[", i, "]");
      if (!is_ref) {
        IdentifyRefs(sub, sub_path, by_position, out);
        continue;
      }
      auto* ref = static_cast<v1::EventRef*>(sub);
      auto it = by_position.find({ref->partition(), ref->sequence()});
      if (it == by_position.end()) {
        out->refs.push_back(
            absl::StrCat(sub_path, "=missing ", ref->partition(), "/", ref->sequence()));
      } else {
        out->refs.push_back(absl::StrCat(sub_path, "=", EventIdentity(*it->second)));
        out->cites_tick = out->cites_tick || it->second->has_clock_tick();
      }
      ref->Clear();
    }
  }
}

}  // namespace internal

// Derived events, partition by partition, in log order, each with its references
// replaced by the identities of the events they name (EventIdentity) and the log's own
// stamps (sequence, recorded time) cleared. Only those `filter` selects.
inline std::vector<std::vector<IdentifiedEvent>> DerivedByIdentity(
    const kernel::EventLog& log, const DerivedFilter& filter = {}) {
  const std::vector<std::vector<v1::Event>> all = AllEvents(log);
  std::map<std::pair<uint32_t, uint64_t>, const v1::Event*> by_position;
  for (const auto& events : all) {
    for (const v1::Event& e : events) by_position[{e.partition(), e.sequence()}] = &e;
  }
  std::vector<std::vector<IdentifiedEvent>> out(all.size());
  for (size_t p = 0; p < all.size(); ++p) {
    for (const v1::Event& e : all[p]) {
      if (!IsDerived(e) || kernel::FromTimestamp(e.event_time()) > filter.cutoff) continue;
      IdentifiedEvent& id = out[p].emplace_back();
      id.event = e;
      id.event.clear_sequence();
      id.event.clear_recorded_time();
      internal::IdentifyRefs(&id.event, "", by_position, &id);
    }
  }
  return out;
}

// Derived events (selected by `filter`) that cite a clock tick, as text: each depends on
// where a tick landed, that is on when ingest ran.
inline std::vector<std::string> DerivedCitingTicks(const kernel::EventLog& log,
                                                   const DerivedFilter& filter = {}) {
  std::vector<std::string> out;
  for (const auto& events : DerivedByIdentity(log, filter)) {
    for (const IdentifiedEvent& e : events) {
      if (e.cites_tick) out.push_back(e.Text());
    }
  }
  return out;
}

// The first place where the derived events of `a` and `b` (by identity, selected by
// `filter`) differ: partition, index among that partition's selected derived events, and
// both events as text (or that one log has no event there); empty when they are equal.
// `a_name` and `b_name` label the logs in the text.
inline std::string FirstDerivedDifference(const kernel::EventLog& a, const kernel::EventLog& b,
                                          const DerivedFilter& filter = {},
                                          const std::string& a_name = "A",
                                          const std::string& b_name = "B") {
  std::vector<std::vector<IdentifiedEvent>> x = DerivedByIdentity(a, filter);
  std::vector<std::vector<IdentifiedEvent>> y = DerivedByIdentity(b, filter);
  const size_t partitions = std::max(x.size(), y.size());
  x.resize(partitions);
  y.resize(partitions);
  size_t x_total = 0;
  size_t y_total = 0;
  for (size_t p = 0; p < partitions; ++p) {
    x_total += x[p].size();
    y_total += y[p].size();
  }
  for (size_t p = 0; p < partitions; ++p) {
    const size_t n = std::max(x[p].size(), y[p].size());
    for (size_t i = 0; i < n; ++i) {
      const bool in_x = i < x[p].size();
      const bool in_y = i < y[p].size();
      if (in_x && in_y && x[p][i] == y[p][i]) continue;
      std::string out =
          absl::StrCat("derived events differ in partition ", p, " at derived event ", i, " (",
                       a_name, ": ", x[p].size(), " in this partition, ", x_total, " in all; ",
                       b_name, ": ", y[p].size(), " in this partition, ", y_total, " in all)\n");
      absl::StrAppend(&out, "  ", a_name, ": ", in_x ? x[p][i].Text() : "(none)", "\n");
      absl::StrAppend(&out, "  ", b_name, ": ", in_y ? y[p][i].Text() : "(none)", "\n");
      return out;
    }
  }
  return "";
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
