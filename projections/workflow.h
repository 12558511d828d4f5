// The case workflow: the commands people give on cases, validated against the case's
// own events and appended with the expected stream version.
//
// Stages follow each other without skipping: discovered -> registered -> dispatched ->
// handled -> verified -> closed. A failed verification sends the case back to
// dispatched. A level that cannot solve a case escalates it to the level above, which
// then dispatches it. Every refused command is an error naming the case, its stage and
// the reason; every appended event records who acted.
//
// Accountability ("谁发单、谁验收、谁结案", issue 15):
//   * Handle (处置): only a crew of the department the case is dispatched to
//     (OrgUnit.department equal to dispatched_department) whose area covers the case's
//     grid (UnitCovers). CaseHandled records that crew as its handler. A grid unit,
//     another department's crew and a crew of another area are refused
//     (PERMISSION_DENIED); a case that is not dispatched is not handled by anyone
//     (FAILED_PRECONDITION, as every command out of its stage).
//   * Verify (核查) and close (结案): the originator, unless the originator has itself
//     handled the case (a crew that reported it): then the grid unit one level above the
//     originator that serves the grid (VerifyingUnit). A unit that handled a case never
//     verifies or closes it. For IoT cases the raising rule is the originator and does
//     both itself (see rules/engine.h); no person does.
//   * Handlings logged before handlers were recorded name no handler: they restrict no
//     one.
//
// Roles (viewer, operator ...) are the HTTP layer's business; the workflow checks what
// follows from the case itself: its stage, its originator, its department and handlers,
// and the level that dispatches it.
#ifndef CITYOPS_PROJECTIONS_WORKFLOW_H_
#define CITYOPS_PROJECTIONS_WORKFLOW_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cityops/v1/events.pb.h"
#include "cityops/v1/views.pb.h"
#include "kernel/clock.h"
#include "kernel/department.h"
#include "kernel/event_log.h"

namespace cityops::projections {

enum class CommandKind {
  kRegister,
  kDispatch,
  kHandle,
  kVerify,
  kClose,
  kUrge,
  kEscalate,
  kReport
};

// "register", "dispatch", ...
const char* CommandName(CommandKind kind);

// Names for people: "dispatched", "street center", "street center 310104001", "city center",
// and for a department's crew "water-authority crew, district center 310104".
std::string StageName(v1::CaseStage stage);
std::string LevelName(v1::GridLevel level);
std::string UnitName(const v1::OrgUnit& unit);

// The idempotency key a command with the client's `request_id` appends under:
// "cmd/case/<case id>/<request id>" ("" without a request id). Namespaced by case, so that
// a client's ids cannot collide with another case's or with the rules stage's keys.
std::string CommandIdempotencyKey(std::string_view case_id, std::string_view request_id);

struct CaseCommand {
  CommandKind kind = CommandKind::kUrge;
  std::string case_id;
  v1::Actor actor;  // Who acts; recorded in every event's provenance.
  // The client's idempotency key: a retry with it is done once; the same id for another
  // command on the case is refused (ALREADY_EXISTS).
  std::string request_id;
  // dispatch: the receiving department and its level (default: the case's level).
  std::string department;
  v1::GridLevel level = v1::GRID_LEVEL_UNSPECIFIED;
  std::string result;   // handle
  bool passed = false;  // verify
  std::string note;     // verify (required when failing), urge
  std::string reason;   // escalate
  // report: the new case (case_id, source, grid, location, category, description,
  // reporter). The originator is the actor's unit.
  v1::CaseReported report;
};

struct CommandResult {
  v1::CaseView view;  // The case after the command.
  std::vector<kernel::EventPosition> appended;
  bool duplicate = false;  // The same request was already carried out.
};

// The level above `level` (residential station -> street -> district -> city), or
// UNSPECIFIED for the city.
v1::GridLevel LevelAbove(v1::GridLevel level);

// True if `unit` serves the place `grid` (its code is a prefix of the grid code, or it
// is the city). For a department's crew: its area.
bool UnitCovers(const v1::OrgUnit& unit, const v1::GridRef& grid);

// The grid unit (no department) one level above `unit` that serves `grid`: a station's
// street center, a street's district center, a district's city center. Nothing is above
// the city: for a city-level unit, the city center itself.
v1::OrgUnit GridUnitAbove(const v1::OrgUnit& unit, const v1::GridRef& grid);

// The unit that verifies and closes the case of `view` (not an IoT case): its
// originator, or, if the originator is among the units that handled it (a department's
// crew that reported the case and then handled it), GridUnitAbove(originator, grid).
v1::OrgUnit VerifyingUnit(const v1::CaseView& view);

// Pure: the events `command` appends to the case folded into `view` at time `now`, or
// why not. For kReport, `view` is the empty view of a case that does not exist yet.
absl::StatusOr<std::vector<v1::Event>> Decide(const v1::CaseView& view, const CaseCommand& command,
                                              absl::Time now);

class CaseWorkflow {
 public:
  struct Options {
    kernel::EventLog* log = nullptr;
    const kernel::Clock* clock = kernel::Clock::Real();
    // Reports are spread over this many log partitions by their case id, with Kafka's
    // default partitioner (ingest::KafkaPartitionFor), as a report keyed by its case id
    // on a topic of this many partitions would be (the input topics' partition count).
    // 0: not known yet (the daemon learns it from the cluster); a new report is refused
    // with UNAVAILABLE until SetPartitions.
    uint32_t partitions = 1;
  };
  explicit CaseWorkflow(Options options);

  // Sets the partition count new reports are spread over (see Options). From any thread.
  void SetPartitions(uint32_t partitions) { partitions_.store(partitions); }

  // Reads the case, decides, and appends with the expected stream version; when another
  // writer got there first (ABORTED), reads again and re-decides, up to three times.
  // The command's time is max(clock, the case's current stage time), so that stage times
  // never run backwards even if the clock does.
  absl::StatusOr<CommandResult> Execute(const CaseCommand& command);

  // The fold of the case's stream. NOT_FOUND if it has no events.
  absl::StatusOr<v1::CaseView> Load(std::string_view case_id) const;

 private:
  Options options_;
  std::atomic<uint32_t> partitions_;
};

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_WORKFLOW_H_
