#include "analysis/case_text.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "kernel/proto_time.h"
#include "projections/workflow.h"

namespace cityops::analysis {

namespace pb = google::protobuf;

std::string ShortName(const std::string& full, std::string_view prefix, bool spaces) {
  absl::string_view name = full;
  absl::ConsumePrefix(&name, absl::string_view(prefix.data(), prefix.size()));
  std::string out = absl::AsciiStrToLower(name);
  if (spaces) std::replace(out.begin(), out.end(), '_', ' ');
  return out;
}

std::string StageName(v1::CaseStage s) { return ShortName(v1::CaseStage_Name(s), "CASE_STAGE_"); }
std::string SourceName(v1::CaseSource s) {
  return ShortName(v1::CaseSource_Name(s), "CASE_SOURCE_");
}
std::string LevelName(v1::GridLevel l) {
  return ShortName(v1::GridLevel_Name(l), "GRID_LEVEL_", true);
}

std::string Light(const v1::CaseView& c) {
  if (c.stage() == v1::CASE_STAGE_CLOSED) return "-";
  switch (c.overdue()) {
    case v1::OVERDUE_LEVEL_YELLOW:
      return "yellow";
    case v1::OVERDUE_LEVEL_RED:
      return "red";
    default:
      return "green";
  }
}

std::string FormatWhen(const pb::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", kernel::FromTimestamp(ts), absl::LocalTimeZone());
}

std::string FormatDuration(const pb::Duration& d) {
  return absl::FormatDuration(absl::Trunc(kernel::FromDurationProto(d), absl::Seconds(1)));
}

void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string ActorOf(const v1::Event& e) {
  const v1::Provenance& p = e.provenance();
  switch (p.origin_case()) {
    case v1::Provenance::kActor:
      return absl::StrFormat("%s (%s, %s)", p.actor().user(),
                             ShortName(v1::Role_Name(p.actor().role()), "ROLE_"),
                             projections::UnitName(p.actor().unit()));
    case v1::Provenance::kStage:
      return p.stage();
    case v1::Provenance::kKafka:
      return absl::StrFormat("kafka %s[%d]@%d", p.kafka().topic(), p.kafka().partition(),
                             p.kafka().offset());
    default:
      return "-";
  }
}

std::string EventType(const v1::Event& e) {
  const pb::OneofDescriptor* payload = v1::Event::descriptor()->FindOneofByName("payload");
  const pb::FieldDescriptor* f = e.GetReflection()->GetOneofFieldDescriptor(e, payload);
  return f != nullptr ? f->name() : "event";
}

// A deadline says which stage must be left by when; people read it as the next step:
// "dispatch by 10:38".
std::string NextStep(const v1::Deadline& d) {
  if (!d.has_due_time()) return "-";
  const char* step = "";
  switch (d.stage()) {
    case v1::CASE_STAGE_DISCOVERED:
      step = "register";
      break;
    case v1::CASE_STAGE_REGISTERED:
      step = "dispatch";
      break;
    case v1::CASE_STAGE_DISPATCHED:
      step = "handle";
      break;
    case v1::CASE_STAGE_HANDLED:
      step = "verify";
      break;
    case v1::CASE_STAGE_VERIFIED:
      step = "close";
      break;
    default:
      return absl::StrFormat("leave %s by %s", StageName(d.stage()), FormatWhen(d.due_time()));
  }
  return absl::StrFormat("%s by %s", step, FormatWhen(d.due_time()));
}

namespace {

std::string Due(const v1::Deadline& d) { return d.has_due_time() ? "; " + NextStep(d) : ""; }

}  // namespace

std::string EventDetail(const v1::Event& e) {
  switch (e.payload_case()) {
    case v1::Event::kCaseReported: {
      const v1::CaseReported& r = e.case_reported();
      return absl::StrFormat("%s, %s %s, grid %s%s", SourceName(r.source()), r.category().code(),
                             r.category().name(), r.grid().grid_code(),
                             r.reporter().empty() ? "" : ", reporter " + r.reporter());
    }
    case v1::Event::kCaseOpened: {
      const v1::CaseOpened& o = e.case_opened();
      return absl::StrFormat("for %s, dispatched by the %s%s",
                             o.department().empty() ? "(no department)" : o.department(),
                             LevelName(o.dispatch_level()),
                             o.rule_id().empty() ? "" : ", rule " + o.rule_id());
    }
    case v1::Event::kCaseRegistered:
      return e.case_registered().has_next_deadline() ? NextStep(e.case_registered().next_deadline())
                                                     : "";
    case v1::Event::kCaseDispatched: {
      const v1::CaseDispatched& d = e.case_dispatched();
      return absl::StrFormat("to %s at the %s, ticket %s%s", d.department(), LevelName(d.level()),
                             d.ticket_id(), Due(d.next_deadline()));
    }
    case v1::Event::kCaseHandled:
      return "result: " + e.case_handled().result();
    case v1::Event::kCaseVerified: {
      const v1::CaseVerified& v = e.case_verified();
      if (v.passed()) return v.note().empty() ? "passed" : "passed: " + v.note();
      return absl::StrFormat("failed: %s; back to dispatched, re-work ticket %s", v.note(),
                             v.ticket_id());
    }
    case v1::Event::kCaseClosed:
      return "handling time " + FormatDuration(e.case_closed().total_handling_time());
    case v1::Event::kCaseUrged:
      return e.case_urged().note().empty() ? "urged" : "urged: " + e.case_urged().note();
    case v1::Event::kCaseEscalated: {
      const v1::CaseEscalated& x = e.case_escalated();
      return absl::StrFormat("from the %s to the %s%s", LevelName(x.from_level()),
                             LevelName(x.to_level()), x.reason().empty() ? "" : ": " + x.reason());
    }
    case v1::Event::kCaseOverdue: {
      const v1::CaseOverdue& o = e.case_overdue();
      return absl::StrFormat("%s, %s past %s",
                             ShortName(v1::OverdueLevel_Name(o.level()), "OVERDUE_LEVEL_"),
                             StageName(o.stage()), FormatWhen(o.due_time()));
    }
    case v1::Event::kCaseLinked: {
      const v1::CaseLinked& l = e.case_linked();
      if (!l.alert_id().empty()) return "alert " + l.alert_id() + " joined";
      if (!l.reported_case_id().empty()) return "report " + l.reported_case_id() + " joined";
      return "joined case " + l.into_case_id();
    }
    case v1::Event::kCaseRelocated: {
      const v1::CaseRelocated& r = e.case_relocated();
      return absl::StrFormat("moved to grid %s (registration of %s)", r.grid().grid_code(),
                             r.device_id());
    }
    default:
      return "";
  }
}

void PrintCase(const v1::CaseDetail& detail, std::ostream& out) {
  const v1::CaseView& c = detail.case_();
  out << absl::StrFormat("case %s: %s, %s\n", c.case_id(), StageName(c.stage()),
                         Light(c) == "-" ? "closed" : "light " + Light(c));
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"  source", SourceName(c.source()) +
                                  (c.rule_id().empty() ? "" : " (rule " + c.rule_id() + ")")});
  rows.push_back({"  category", absl::StrCat(c.category().code(), " ", c.category().name())});
  rows.push_back({"  grid", c.grid().grid_code()});
  if (!c.device_id().empty()) rows.push_back({"  device", c.device_id()});
  rows.push_back({"  department", c.department().empty() ? "-" : c.department()});
  rows.push_back({"  dispatched by", LevelName(c.level())});
  rows.push_back({"  originator", projections::UnitName(c.originator())});
  if (!c.description().empty()) rows.push_back({"  description", c.description()});
  rows.push_back({"  reported", FormatWhen(c.reported_time())});
  rows.push_back({"  in stage since", FormatWhen(c.stage_time())});
  if (c.has_deadline()) {
    rows.push_back({"  deadline", NextStep(c.deadline())});
  }
  if (c.has_handled_by()) rows.push_back({"  handled by", projections::UnitName(c.handled_by())});
  if (!c.handling_result().empty()) rows.push_back({"  result", c.handling_result()});
  rows.push_back({"  urges", absl::StrCat(c.urges())});
  rows.push_back({"  escalations", absl::StrCat(c.escalations_size())});
  rows.push_back({"  failed checks", absl::StrCat(c.failed_verifications())});
  if (!c.ticket_ids().empty()) rows.push_back({"  tickets", absl::StrJoin(c.ticket_ids(), ", ")});
  if (!c.linked_to().empty()) rows.push_back({"  linked into", c.linked_to()});
  PrintTable(rows, out);

  out << "timeline:\n";
  rows.clear();
  for (const v1::Event& e : detail.timeline()) {
    rows.push_back({absl::StrCat("  ", e.stream_version()), FormatWhen(e.event_time()),
                    EventType(e), ActorOf(e), EventDetail(e)});
  }
  PrintTable(rows, out);

  out << "time in stage:\n";
  rows.clear();
  for (const v1::StageDuration& d : detail.time_in_stage()) {
    rows.push_back({"  " + StageName(d.stage()), FormatDuration(d.duration())});
  }
  PrintTable(rows, out);
  out << absl::StrFormat("handling time: %s%s\n", FormatDuration(detail.handling_time()),
                         c.stage() == v1::CASE_STAGE_CLOSED
                             ? " (closed)"
                             : " so far, as of " + FormatWhen(detail.as_of()));
}

}  // namespace cityops::analysis
