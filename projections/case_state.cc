#include "projections/case_state.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernel/proto_time.h"

namespace cityops::projections {

namespace {

void EnterStage(const v1::Event& event, v1::CaseStage stage, v1::CaseView* view) {
  view->set_stage(stage);
  *view->mutable_stage_time() = event.event_time();
  v1::StageEntry* entry = view->add_history();
  entry->set_stage(stage);
  *entry->mutable_time() = event.event_time();
  if (event.provenance().has_actor()) {
    *entry->mutable_actor() = event.provenance().actor();
  } else {
    entry->set_stage_actor(event.provenance().stage());
  }
  view->set_overdue(v1::OVERDUE_LEVEL_UNSPECIFIED);
  view->clear_deadline();
  if (stage == v1::CASE_STAGE_CLOSED) return;
  if (std::optional<v1::Deadline> deadline =
          StageDeadline(view->deadlines(), stage, kernel::FromTimestamp(event.event_time()))) {
    *view->mutable_deadline() = *std::move(deadline);
  }
}

}  // namespace

std::string CaseStream(std::string_view case_id) {
  return absl::StrFormat("%s%s", kCaseStreamPrefix, case_id);
}

std::string TicketId(std::string_view case_id, int n) {
  return absl::StrFormat("%s-T%d", case_id, n);
}

bool SameUnit(const v1::OrgUnit& a, const v1::OrgUnit& b) {
  return a.level() == b.level() && a.code() == b.code() && a.department() == b.department();
}

std::optional<absl::Duration> StageAllowance(const v1::StageDeadlines& d, v1::CaseStage stage) {
  const google::protobuf::Duration* allowance = nullptr;
  switch (stage) {
    case v1::CASE_STAGE_DISCOVERED:
      if (d.has_register_within()) allowance = &d.register_within();
      break;
    case v1::CASE_STAGE_REGISTERED:
      if (d.has_dispatch_within()) allowance = &d.dispatch_within();
      break;
    case v1::CASE_STAGE_DISPATCHED:
      if (d.has_handle_within()) allowance = &d.handle_within();
      break;
    case v1::CASE_STAGE_HANDLED:
      if (d.has_verify_within()) allowance = &d.verify_within();
      break;
    case v1::CASE_STAGE_VERIFIED:
      if (d.has_close_within()) allowance = &d.close_within();
      break;
    default:
      break;
  }
  if (allowance == nullptr) return std::nullopt;
  const absl::Duration a = kernel::FromDurationProto(*allowance);
  if (a <= absl::ZeroDuration()) return std::nullopt;
  return a;
}

std::optional<v1::Deadline> StageDeadline(const v1::StageDeadlines& deadlines, v1::CaseStage stage,
                                          absl::Time entered) {
  std::optional<absl::Duration> allowance = StageAllowance(deadlines, stage);
  if (!allowance) return std::nullopt;
  v1::Deadline deadline;
  deadline.set_stage(stage);
  kernel::SetTimestamp(entered + *allowance, deadline.mutable_due_time());
  return deadline;
}

std::vector<v1::StageDuration> StageDurations(const v1::CaseView& view, absl::Time close_time) {
  std::vector<v1::StageDuration> out;
  absl::Duration spent[v1::CaseStage_ARRAYSIZE] = {};
  for (int i = 0; i < view.history_size(); ++i) {
    const v1::StageEntry& entry = view.history(i);
    const absl::Time from = kernel::FromTimestamp(entry.time());
    const absl::Time to = i + 1 < view.history_size()
                              ? kernel::FromTimestamp(view.history(i + 1).time())
                              : close_time;
    if (entry.stage() > v1::CASE_STAGE_UNSPECIFIED && entry.stage() < v1::CASE_STAGE_CLOSED) {
      spent[entry.stage()] += std::max(absl::ZeroDuration(), to - from);
    }
  }
  for (int s = v1::CASE_STAGE_DISCOVERED; s < v1::CASE_STAGE_CLOSED; ++s) {
    v1::StageDuration d;
    d.set_stage(static_cast<v1::CaseStage>(s));
    kernel::ToDurationProto(spent[s], d.mutable_duration());
    out.push_back(std::move(d));
  }
  return out;
}

absl::Duration TotalHandlingTime(const v1::CaseView& view, absl::Time close_time) {
  if (!view.has_reported_time()) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), close_time - kernel::FromTimestamp(view.reported_time()));
}

absl::Status ApplyCaseEvent(const v1::Event& event, v1::CaseView* view) {
  if (event.stream_id().rfind(kCaseStreamPrefix, 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("event on stream %s is not a case event", event.stream_id()));
  }
  const std::string_view id = std::string_view(event.stream_id()).substr(kCaseStreamPrefix.size());
  if (!view->case_id().empty() && view->case_id() != id) {
    return absl::InvalidArgumentError(
        absl::StrFormat("event of case %s folded into the view of case %s", id, view->case_id()));
  }
  view->set_case_id(std::string(id));
  switch (event.payload_case()) {
    case v1::Event::kCaseReported: {
      const v1::CaseReported& r = event.case_reported();
      view->set_source(r.source());
      *view->mutable_grid() = r.grid();
      if (r.has_location()) *view->mutable_location() = r.location();
      *view->mutable_category() = r.category();
      view->set_description(r.description());
      view->set_reporter(r.reporter());
      *view->mutable_originator() = r.originator();
      *view->mutable_reported_time() = event.event_time();
      EnterStage(event, v1::CASE_STAGE_DISCOVERED, view);
      break;
    }
    case v1::Event::kCaseOpened: {
      const v1::CaseOpened& o = event.case_opened();
      view->set_source(o.source());
      *view->mutable_category() = o.category();
      view->set_device_id(o.device_id());
      view->set_rule_id(o.rule_id());
      if (!o.alert_id().empty()) view->add_alert_ids(o.alert_id());
      if (o.has_grid()) *view->mutable_grid() = o.grid();
      if (o.has_location()) *view->mutable_location() = o.location();
      view->set_severity(o.severity());
      view->set_department(o.department());
      view->set_level(o.dispatch_level());
      *view->mutable_deadlines() = o.deadlines();
      view->set_auto_register(o.auto_register());
      *view->mutable_verification_window() = o.verification_window();
      *view->mutable_originator() = o.originator();
      if (!o.description().empty()) view->set_description(o.description());
      view->set_opened(true);
      if (view->history_size() == 0) {
        *view->mutable_reported_time() = event.event_time();
        EnterStage(event, v1::CASE_STAGE_DISCOVERED, view);
      } else if (view->stage() == v1::CASE_STAGE_DISCOVERED) {
        // A report opened by the rules stage: its deadline now known, from the report time.
        view->clear_deadline();
        if (std::optional<v1::Deadline> deadline =
                StageDeadline(view->deadlines(), v1::CASE_STAGE_DISCOVERED,
                              kernel::FromTimestamp(view->stage_time()))) {
          *view->mutable_deadline() = *std::move(deadline);
        }
      }
      break;
    }
    case v1::Event::kCaseRegistered:
      EnterStage(event, v1::CASE_STAGE_REGISTERED, view);
      break;
    case v1::Event::kCaseDispatched: {
      const v1::CaseDispatched& d = event.case_dispatched();
      view->set_dispatched_department(d.department());
      view->set_dispatched_level(d.level());
      view->set_dispatched_by_level(event.provenance().has_actor()
                                        ? event.provenance().actor().unit().level()
                                        : view->level());
      if (!d.ticket_id().empty()) view->add_ticket_ids(d.ticket_id());
      EnterStage(event, v1::CASE_STAGE_DISPATCHED, view);
      break;
    }
    case v1::Event::kCaseHandled: {
      const v1::CaseHandled& h = event.case_handled();
      view->set_handling_result(h.result());
      if (h.has_handler()) {
        *view->mutable_handled_by() = h.handler();
        const bool known =
            std::any_of(view->handlers().begin(), view->handlers().end(),
                        [&](const v1::OrgUnit& u) { return SameUnit(u, h.handler()); });
        if (!known) *view->add_handlers() = h.handler();
      } else {
        view->clear_handled_by();  // Logged before handlers were recorded: no one known.
      }
      EnterStage(event, v1::CASE_STAGE_HANDLED, view);
      break;
    }
    case v1::Event::kCaseVerified: {
      const v1::CaseVerified& v = event.case_verified();
      if (v.passed()) {
        EnterStage(event, v1::CASE_STAGE_VERIFIED, view);
      } else {
        view->set_failed_verifications(view->failed_verifications() + 1);
        if (!v.ticket_id().empty()) view->add_ticket_ids(v.ticket_id());
        EnterStage(event, v1::CASE_STAGE_DISPATCHED, view);
      }
      break;
    }
    case v1::Event::kCaseClosed: {
      const v1::CaseClosed& c = event.case_closed();
      *view->mutable_closed_time() = event.event_time();
      *view->mutable_total_handling_time() = c.total_handling_time();
      view->clear_stage_durations();
      for (const v1::StageDuration& d : c.stage_durations()) *view->add_stage_durations() = d;
      EnterStage(event, v1::CASE_STAGE_CLOSED, view);
      break;
    }
    case v1::Event::kCaseUrged:
      view->set_urges(view->urges() + 1);
      break;
    case v1::Event::kCaseEscalated: {
      const v1::CaseEscalated& e = event.case_escalated();
      *view->add_escalations() = e;
      view->set_level(e.to_level());
      EnterStage(event, v1::CASE_STAGE_REGISTERED, view);
      break;
    }
    case v1::Event::kCaseOverdue: {
      const v1::CaseOverdue& o = event.case_overdue();
      if (o.stage() == view->stage() && o.level() > view->overdue()) view->set_overdue(o.level());
      if (o.level() > view->worst_overdue()) view->set_worst_overdue(o.level());
      break;
    }
    case v1::Event::kCaseLinked: {
      const v1::CaseLinked& l = event.case_linked();
      if (l.has_alert_id()) view->add_alert_ids(l.alert_id());
      if (l.has_reported_case_id()) view->add_linked_reports(l.reported_case_id());
      if (l.has_into_case_id()) view->set_linked_to(l.into_case_id());
      break;
    }
    case v1::Event::kCaseRelocated: {
      const v1::CaseRelocated& r = event.case_relocated();
      *view->mutable_grid() = r.grid();
      if (r.has_location()) {
        *view->mutable_location() = r.location();
      } else {
        view->clear_location();
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("event %d/%d on stream %s is not a case event", event.partition(),
                          event.sequence(), event.stream_id()));
  }
  view->set_version(event.stream_version());
  view->set_partition(event.partition());
  return absl::OkStatus();
}

}  // namespace cityops::projections
