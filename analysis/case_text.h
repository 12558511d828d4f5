// A case as people read it: its summary, the timeline of its stream (when, what, who
// acted, what it said) and the time it spent in each stage. One formatter for
// `cityops cases show` (a case from the daemon's API) and `cityops state --at --case`
// (a case as it stood at a moment of a log), so that both read the same.
#ifndef CITYOPS_ANALYSIS_CASE_TEXT_H_
#define CITYOPS_ANALYSIS_CASE_TEXT_H_

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "cityops/v1/api.pb.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/views.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace cityops::analysis {

// "CASE_STAGE_DISPATCHED" with prefix "CASE_STAGE_" -> "dispatched"; with `spaces`, '_'
// becomes ' '.
std::string ShortName(const std::string& full, std::string_view prefix, bool spaces = false);
std::string StageName(v1::CaseStage s);    // "dispatched"
std::string SourceName(v1::CaseSource s);  // "iot"
std::string LevelName(v1::GridLevel l);    // "street center"
// An open case's light: "green", "yellow" or "red"; "-" for a closed one.
std::string Light(const v1::CaseView& c);
// "2026-09-21 19:40:00" in the local time zone; "-" for an unset timestamp.
std::string FormatWhen(const google::protobuf::Timestamp& ts);
// "1h5m3s", to the second.
std::string FormatDuration(const google::protobuf::Duration& d);
// A table with left-aligned columns separated by two spaces.
void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out);
// Who acted: "user (role, unit)" for people, the stage's name for derived events, the
// Kafka topic, partition and offset for recorded input.
std::string ActorOf(const v1::Event& e);
// The event's type as named in events.proto: "case_dispatched".
std::string EventType(const v1::Event& e);
// What one event of a case's stream says, in a line ("to water-authority at the street
// center, ticket ...; handle by ...").
std::string EventDetail(const v1::Event& e);
// "dispatch by 2026-09-21 10:38:00": a deadline read as the next step.
std::string NextStep(const v1::Deadline& d);

// The case's summary, its timeline (one row per event: version, when, type, who acted,
// what it said), the time in each stage and the handling time (so far, as of
// `detail.as_of()`, for an open case).
void PrintCase(const v1::CaseDetail& detail, std::ostream& out);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_CASE_TEXT_H_
