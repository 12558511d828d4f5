// The fold of a case's stream into a `v1::CaseView`. One function, used by everything
// that needs to know where a case stands: the workflow (to validate a command against
// the case's own events), the cases read model, and the rules stage (deadlines,
// automatic verification). Pure: no I/O, no clock; time comes from the events.
#ifndef CITYOPS_PROJECTIONS_CASE_STATE_H_
#define CITYOPS_PROJECTIONS_CASE_STATE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/views.pb.h"

namespace cityops::projections {

inline constexpr std::string_view kCaseStreamPrefix = "case/";
inline constexpr std::string_view kTicketStreamPrefix = "ticket/";

// "case/<id>".
std::string CaseStream(std::string_view case_id);

// The id of a case's n-th dispatch ticket (n from 1): "<case id>-T<n>". Dispatches and
// failed verifications number their tickets by the case's ticket count so far.
std::string TicketId(std::string_view case_id, int n);

// Folds one event of the stream `case/<id>` into `view` (an empty view for the first
// event). Handles CaseReported, CaseOpened, CaseRegistered, CaseDispatched,
// CaseHandled, CaseVerified, CaseClosed, CaseUrged, CaseEscalated, CaseOverdue and
// CaseLinked; sets `version`, `partition`, the stage, its entry time and deadline, and
// the history. INVALID_ARGUMENT for an event of another type or another case.
//
// Stage rules of the fold (the workflow refuses commands that would break them; the
// fold itself trusts the log):
//   CaseReported            -> DISCOVERED (reported_time)
//   CaseOpened              -> DISCOVERED (for reports: fills in the policy fields)
//   CaseRegistered          -> REGISTERED
//   CaseDispatched          -> DISPATCHED
//   CaseHandled             -> HANDLED (handled_by: its handler, or unset for an event
//                              logged before handlers were recorded; handlers: + it)
//   CaseVerified passed     -> VERIFIED; failed -> DISPATCHED again
//   CaseClosed              -> CLOSED
//   CaseEscalated           -> REGISTERED at the upper level (which then dispatches)
//   CaseUrged, CaseOverdue, CaseLinked, CaseRelocated: no stage change. CaseLinked adds
//   the alert or report that joined this case, or (into_case_id, on a report's own
//   stream) sets `linked_to`: the report joined that case instead of opening.
//   CaseRelocated replaces the grid and location.
// Every stage entry resets `overdue` and sets `deadline` from `deadlines`.
absl::Status ApplyCaseEvent(const v1::Event& event, v1::CaseView* view);

// True if `a` and `b` are the same unit: level, code and department.
bool SameUnit(const v1::OrgUnit& a, const v1::OrgUnit& b);

// Time spent in each stage DISCOVERED..VERIFIED (summed over re-entries) if the case
// closes at `close_time`, from its history.
std::vector<v1::StageDuration> StageDurations(const v1::CaseView& view, absl::Time close_time);

// From discovery to `close_time`.
absl::Duration TotalHandlingTime(const v1::CaseView& view, absl::Time close_time);

// The allowance of `stage` in `deadlines` (register_within for DISCOVERED,
// dispatch_within for REGISTERED, ...), or nullopt when it has none.
std::optional<absl::Duration> StageAllowance(const v1::StageDeadlines& deadlines,
                                             v1::CaseStage stage);

// The deadline of `stage` when it is entered at `entered`: due at `entered` plus the
// stage's allowance; nullopt when the stage has none. The one place that computes it
// (the fold, the workflow's commands and the rules engine's events agree by using it).
std::optional<v1::Deadline> StageDeadline(const v1::StageDeadlines& deadlines, v1::CaseStage stage,
                                          absl::Time entered);

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_CASE_STATE_H_
