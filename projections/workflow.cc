#include "projections/workflow.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ingest/partitioner.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"

namespace cityops::projections {

namespace {

// "CASE_STAGE_DISPATCHED" -> "dispatched", "GRID_LEVEL_STREET_CENTER" -> "street center".
std::string HumanName(const std::string& full, std::string_view prefix) {
  std::string name = full.rfind(prefix, 0) == 0 ? full.substr(prefix.size()) : full;
  name = absl::AsciiStrToLower(name);
  std::replace(name.begin(), name.end(), '_', ' ');
  return name;
}

// The payload a command appends, to recognize what a request id was used for.
v1::Event::PayloadCase PayloadOf(CommandKind kind) {
  switch (kind) {
    case CommandKind::kRegister:
      return v1::Event::kCaseRegistered;
    case CommandKind::kDispatch:
      return v1::Event::kCaseDispatched;
    case CommandKind::kHandle:
      return v1::Event::kCaseHandled;
    case CommandKind::kVerify:
      return v1::Event::kCaseVerified;
    case CommandKind::kClose:
      return v1::Event::kCaseClosed;
    case CommandKind::kUrge:
      return v1::Event::kCaseUrged;
    case CommandKind::kEscalate:
      return v1::Event::kCaseEscalated;
    case CommandKind::kReport:
      return v1::Event::kCaseReported;
  }
  return v1::Event::PAYLOAD_NOT_SET;
}

bool ValidCaseId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

}  // namespace

std::string StageName(v1::CaseStage stage) {
  return HumanName(v1::CaseStage_Name(stage), "CASE_STAGE_");
}

std::string LevelName(v1::GridLevel level) {
  return HumanName(v1::GridLevel_Name(level), "GRID_LEVEL_");
}

std::string UnitName(const v1::OrgUnit& unit) {
  const std::string area = unit.level() == v1::GRID_LEVEL_CITY_CENTER
                               ? LevelName(unit.level())
                               : absl::StrFormat("%s %s", LevelName(unit.level()), unit.code());
  if (unit.department().empty()) return area;
  return absl::StrFormat("%s crew, %s", unit.department(), area);
}

std::string CommandIdempotencyKey(std::string_view case_id, std::string_view request_id) {
  if (request_id.empty()) return "";
  return absl::StrFormat("cmd/case/%s/%s", case_id, request_id);
}

const char* CommandName(CommandKind kind) {
  switch (kind) {
    case CommandKind::kRegister:
      return "register";
    case CommandKind::kDispatch:
      return "dispatch";
    case CommandKind::kHandle:
      return "handle";
    case CommandKind::kVerify:
      return "verify";
    case CommandKind::kClose:
      return "close";
    case CommandKind::kUrge:
      return "urge";
    case CommandKind::kEscalate:
      return "escalate";
    case CommandKind::kReport:
      return "report";
  }
  return "?";
}

v1::GridLevel LevelAbove(v1::GridLevel level) {
  switch (level) {
    case v1::GRID_LEVEL_RESIDENTIAL_STATION:
      return v1::GRID_LEVEL_STREET_CENTER;
    case v1::GRID_LEVEL_STREET_CENTER:
      return v1::GRID_LEVEL_DISTRICT_CENTER;
    case v1::GRID_LEVEL_DISTRICT_CENTER:
      return v1::GRID_LEVEL_CITY_CENTER;
    default:
      return v1::GRID_LEVEL_UNSPECIFIED;
  }
}

bool UnitCovers(const v1::OrgUnit& unit, const v1::GridRef& grid) {
  if (unit.level() == v1::GRID_LEVEL_CITY_CENTER) return true;
  return !unit.code().empty() && grid.grid_code().rfind(unit.code(), 0) == 0;
}

v1::OrgUnit GridUnitAbove(const v1::OrgUnit& unit, const v1::GridRef& grid) {
  v1::OrgUnit above;
  const std::string& code = grid.grid_code();
  switch (unit.level()) {
    case v1::GRID_LEVEL_RESIDENTIAL_STATION:
      above.set_level(v1::GRID_LEVEL_STREET_CENTER);
      above.set_code(code.substr(0, std::min<size_t>(code.size(), 9)));
      break;
    case v1::GRID_LEVEL_STREET_CENTER:
      above.set_level(v1::GRID_LEVEL_DISTRICT_CENTER);
      above.set_code(code.substr(0, std::min<size_t>(code.size(), 6)));
      break;
    default:  // A district, the city (nothing is above it) or no level: the city center.
      above.set_level(v1::GRID_LEVEL_CITY_CENTER);
      above.set_code("city");
      break;
  }
  return above;
}

namespace {

bool HasHandled(const v1::CaseView& view, const v1::OrgUnit& unit) {
  return std::any_of(view.handlers().begin(), view.handlers().end(),
                     [&](const v1::OrgUnit& h) { return SameUnit(h, unit); });
}

}  // namespace

v1::OrgUnit VerifyingUnit(const v1::CaseView& view) {
  if (!HasHandled(view, view.originator())) return view.originator();
  return GridUnitAbove(view.originator(), view.grid());
}

absl::StatusOr<std::vector<v1::Event>> Decide(const v1::CaseView& view, const CaseCommand& command,
                                              absl::Time now) {
  const std::string& id =
      command.kind == CommandKind::kReport ? command.report.case_id() : command.case_id;
  if (command.actor.user().empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s on case %s: a command needs the acting user; every event records who acted",
        CommandName(command.kind), id));
  }
  v1::Event e;
  e.set_stream_id(CaseStream(id));
  kernel::SetTimestamp(now, e.mutable_event_time());
  *e.mutable_provenance()->mutable_actor() = command.actor;
  auto refuse = [&](std::string_view why) {
    return absl::FailedPreconditionError(absl::StrFormat("cannot %s case %s: it is %s; %s",
                                                         CommandName(command.kind), id,
                                                         StageName(view.stage()), why));
  };
  // Verify and close: the originator's, or the grid unit above it if it handled the case.
  auto not_verifier = [&](std::string_view what) {
    const v1::OrgUnit verifier = VerifyingUnit(view);
    const std::string who =
        absl::StrFormat("%s is %s", command.actor.user(), UnitName(command.actor.unit()));
    if (!SameUnit(verifier, view.originator())) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "cannot %s case %s (%s): its originator, %s, handled it, and a unit that handled a "
          "case never verifies or closes it: the grid unit above, %s, %s it instead; %s",
          CommandName(command.kind), id, StageName(view.stage()), UnitName(view.originator()),
          UnitName(verifier), what, who));
    }
    return absl::PermissionDeniedError(absl::StrFormat(
        "cannot %s case %s (%s): only its originator, %s, %s it; %s%s", CommandName(command.kind),
        id, StageName(view.stage()), UnitName(view.originator()), what, who,
        HasHandled(view, command.actor.unit())
            ? ", which handled it: a unit that handled a case never verifies or closes it"
            : ""));
  };

  if (command.kind == CommandKind::kReport) {
    const v1::CaseReported& r = command.report;
    if (view.history_size() > 0) {
      return absl::AlreadyExistsError(
          absl::StrFormat("case %s already exists (%s); report the new case under another id", id,
                          StageName(view.stage())));
    }
    if (!ValidCaseId(id)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "report: case id '%s' must be 1 to 64 letters, digits, '-', '_' or '.'", id));
    }
    if (r.source() != v1::CASE_SOURCE_HOTLINE_12345 &&
        r.source() != v1::CASE_SOURCE_STREET_PATROL &&
        r.source() != v1::CASE_SOURCE_RESIDENTIAL_STATION) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "report %s: source must be the 12345 hotline, a street patrol or a residential "
          "station, not %s",
          id, v1::CaseSource_Name(r.source())));
    }
    const std::string& grid = r.grid().grid_code();
    if (grid.size() != 15 || !std::all_of(grid.begin(), grid.end(), absl::ascii_isdigit)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "report %s: grid code '%s' must be the 15 digits of a residential grid", id, grid));
    }
    if (r.category().code().empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("report %s: a category code is required (e.g. \"E0111\")", id));
    }
    if (command.actor.unit().level() == v1::GRID_LEVEL_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "report %s: the reporting user %s needs an organizational unit, which verifies and "
          "closes the case",
          id, command.actor.user()));
    }
    v1::CaseReported* out = e.mutable_case_reported();
    *out = r;
    out->mutable_grid()->set_street_code(grid.substr(0, 9));
    out->mutable_grid()->set_district_code(grid.substr(0, 6));
    *out->mutable_originator() = command.actor.unit();
    return std::vector<v1::Event>{std::move(e)};
  }

  if (view.history_size() == 0) {
    return absl::NotFoundError(absl::StrFormat("case %s does not exist", id));
  }
  if (!view.linked_to().empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot %s case %s: it was linked into case %s (an open case of the same category "
        "nearby) and is handled there; act on case %s",
        CommandName(command.kind), id, view.linked_to(), view.linked_to()));
  }
  if (!view.opened()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot %s case %s: it is reported but not yet opened by the rules stage; retry shortly",
        CommandName(command.kind), id));
  }
  if (view.stage() == v1::CASE_STAGE_CLOSED) {
    return refuse("a closed case takes no more commands; report a new one if the problem is back");
  }
  const bool iot = view.source() == v1::CASE_SOURCE_IOT_RULE;
  const v1::GridLevel actor_level = command.actor.unit().level();
  switch (command.kind) {
    case CommandKind::kRegister: {
      if (view.stage() != v1::CASE_STAGE_DISCOVERED) return refuse("it is registered already");
      v1::CaseRegistered* r = e.mutable_case_registered();
      r->set_case_id(id);
      if (std::optional<v1::Deadline> next =
              StageDeadline(view.deadlines(), v1::CASE_STAGE_REGISTERED, now)) {
        *r->mutable_next_deadline() = *std::move(next);
      }
      break;
    }
    case CommandKind::kDispatch: {
      if (view.stage() == v1::CASE_STAGE_DISCOVERED) {
        return refuse("it must be registered before it can be dispatched");
      }
      if (view.stage() != v1::CASE_STAGE_REGISTERED) {
        return refuse("it is dispatched already; escalate it, or wait for the handling");
      }
      if (command.department.empty()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("dispatch case %s: name the department to dispatch it to", id));
      }
      if (!kernel::IsDepartmentName(command.department)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "dispatch case %s: department '%s' must be lowercase words joined by '-', e.g. "
            "water-authority (as its crews' units name it)",
            id, command.department));
      }
      if (actor_level < view.level()) {
        return absl::PermissionDeniedError(
            absl::StrFormat("cannot dispatch case %s (%s): the %s dispatches it; %s is at the %s",
                            id, StageName(view.stage()), LevelName(view.level()),
                            command.actor.user(), LevelName(actor_level)));
      }
      if (!UnitCovers(command.actor.unit(), view.grid())) {
        return absl::PermissionDeniedError(absl::StrFormat(
            "cannot dispatch case %s (%s): it is in grid %s, which %s (%s) does not serve", id,
            StageName(view.stage()), view.grid().grid_code(), command.actor.user(),
            UnitName(command.actor.unit())));
      }
      const v1::GridLevel level =
          command.level == v1::GRID_LEVEL_UNSPECIFIED ? view.level() : command.level;
      if (level > actor_level) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "dispatch case %s: dispatch runs downward; the %s cannot dispatch to the %s", id,
            LevelName(actor_level), LevelName(level)));
      }
      v1::CaseDispatched* d = e.mutable_case_dispatched();
      d->set_case_id(id);
      d->set_department(command.department);
      d->set_level(level);
      d->set_ticket_id(TicketId(id, view.ticket_ids_size() + 1));
      if (std::optional<v1::Deadline> next =
              StageDeadline(view.deadlines(), v1::CASE_STAGE_DISPATCHED, now)) {
        *d->mutable_next_deadline() = *std::move(next);
      }
      break;
    }
    case CommandKind::kHandle: {
      if (view.stage() < v1::CASE_STAGE_DISPATCHED) {
        return refuse(
            "it must be dispatched before it can be handled, by a crew of the department it is "
            "dispatched to");
      }
      if (view.stage() != v1::CASE_STAGE_DISPATCHED) return refuse("it is handled already");
      const v1::OrgUnit& unit = command.actor.unit();
      const std::string& department = view.dispatched_department();
      const std::string named = department.empty() ? "(no department)" : department;
      std::string_view why;
      if (unit.department().empty()) {
        why = ", not a department's crew";
      } else if (unit.department() != department) {
        why = ", another department's";
      } else if (!UnitCovers(unit, view.grid())) {
        why = ", which does not serve it";
      }
      if (!why.empty()) {
        return absl::PermissionDeniedError(absl::StrFormat(
            "cannot handle case %s (%s): only a crew of the department it is dispatched to, "
            "%s, serving grid %s handles it; %s is %s%s",
            id, StageName(view.stage()), named, view.grid().grid_code(), command.actor.user(),
            UnitName(unit), why));
      }
      if (command.result.empty()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("handle case %s: say what was done (the result)", id));
      }
      v1::CaseHandled* h = e.mutable_case_handled();
      h->set_case_id(id);
      h->set_result(command.result);
      *h->mutable_handler() = unit;
      break;
    }
    case CommandKind::kVerify: {
      if (view.stage() < v1::CASE_STAGE_HANDLED) {
        return refuse("it must be handled before it can be verified");
      }
      if (view.stage() != v1::CASE_STAGE_HANDLED) return refuse("it is verified already");
      if (iot) {
        return refuse(absl::StrFormat(
            "it is verified automatically by rule %s once the device has stayed normal for %ds",
            view.rule_id(), view.verification_window().seconds()));
      }
      if (!SameUnit(command.actor.unit(), VerifyingUnit(view))) return not_verifier("verifies");
      if (!command.passed && command.note.empty()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "verify case %s: a failed verification needs a note saying what is still wrong", id));
      }
      v1::CaseVerified* v = e.mutable_case_verified();
      v->set_case_id(id);
      v->set_passed(command.passed);
      v->set_note(command.note);
      if (!command.passed) {
        v->set_ticket_id(TicketId(id, view.ticket_ids_size() + 1));
      }
      break;
    }
    case CommandKind::kClose: {
      if (view.stage() < v1::CASE_STAGE_VERIFIED) {
        return refuse("it must be verified before it can be closed");
      }
      if (iot) {
        return refuse(absl::StrFormat("it is closed automatically by rule %s", view.rule_id()));
      }
      if (!SameUnit(command.actor.unit(), VerifyingUnit(view))) return not_verifier("closes");
      v1::CaseClosed* c = e.mutable_case_closed();
      c->set_case_id(id);
      kernel::ToDurationProto(TotalHandlingTime(view, now), c->mutable_total_handling_time());
      for (const v1::StageDuration& d : StageDurations(view, now)) *c->add_stage_durations() = d;
      break;
    }
    case CommandKind::kUrge: {
      v1::CaseUrged* u = e.mutable_case_urged();
      u->set_case_id(id);
      u->set_note(command.note);
      break;
    }
    case CommandKind::kEscalate: {
      if (view.stage() != v1::CASE_STAGE_REGISTERED && view.stage() != v1::CASE_STAGE_DISPATCHED) {
        return refuse("only a registered or dispatched case can be escalated");
      }
      if (actor_level != view.level()) {
        return absl::PermissionDeniedError(absl::StrFormat(
            "cannot escalate case %s (%s): the %s that dispatches it escalates it; %s is at the "
            "%s",
            id, StageName(view.stage()), LevelName(view.level()), command.actor.user(),
            LevelName(actor_level)));
      }
      const v1::GridLevel above = LevelAbove(view.level());
      if (above == v1::GRID_LEVEL_UNSPECIFIED) {
        return refuse("the city center is the top level; there is no one to escalate to");
      }
      v1::CaseEscalated* x = e.mutable_case_escalated();
      x->set_case_id(id);
      x->set_from_level(view.level());
      x->set_to_level(above);
      x->set_reason(command.reason);
      break;
    }
    case CommandKind::kReport:
      break;
  }
  return std::vector<v1::Event>{std::move(e)};
}

CaseWorkflow::CaseWorkflow(Options options)
    : options_(std::move(options)), partitions_(options_.partitions) {}

namespace {

// The case's events and their fold.
struct Loaded {
  v1::CaseView view;
  std::vector<v1::Event> events;
};

absl::StatusOr<Loaded> LoadEvents(const kernel::EventLog& log, std::string_view case_id) {
  Loaded out;
  const std::string stream = CaseStream(case_id);
  for (;;) {
    absl::StatusOr<std::vector<v1::Event>> page =
        log.ReadStream(stream, kernel::StreamVersion(out.events.size() + 1), 1000);
    if (!page.ok()) return page.status();
    for (v1::Event& e : *page) {
      if (absl::Status s = ApplyCaseEvent(e, &out.view); !s.ok()) return s;
      out.events.push_back(std::move(e));
    }
    if (page->size() < 1000) break;
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::CaseView> CaseWorkflow::Load(std::string_view case_id) const {
  absl::StatusOr<Loaded> loaded = LoadEvents(*options_.log, case_id);
  if (!loaded.ok()) return loaded.status();
  if (loaded->events.empty()) {
    return absl::NotFoundError(absl::StrFormat("case %s does not exist", case_id));
  }
  return std::move(loaded->view);
}

absl::StatusOr<CommandResult> CaseWorkflow::Execute(const CaseCommand& command) {
  const std::string& id =
      command.kind == CommandKind::kReport ? command.report.case_id() : command.case_id;
  if (!ValidCaseId(id)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: case id '%s' must be 1 to 64 letters, digits, '-', '_' or '.'",
                        CommandName(command.kind), id));
  }
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<Loaded> loaded = LoadEvents(*options_.log, id);
    if (!loaded.ok()) return loaded.status();
    CommandResult result;
    // A retried request that went through already. Request ids are the client's: they
    // live under the case, so no client can collide with another case's or with the
    // rules stage's keys.
    const std::string key = CommandIdempotencyKey(id, command.request_id);
    if (!key.empty()) {
      for (const v1::Event& e : loaded->events) {
        if (e.provenance().idempotency_key() != key) continue;
        if (e.payload_case() != PayloadOf(command.kind)) {
          return absl::AlreadyExistsError(absl::StrFormat(
              "request id '%s' was used on case %s for another command (%s); give this %s a "
              "request id of its own",
              command.request_id, id,
              e.GetDescriptor()->FindFieldByNumber(e.payload_case())->name(),
              CommandName(command.kind)));
        }
        result.view = std::move(loaded->view);
        result.duplicate = true;
        return result;
      }
    }
    const v1::CaseView& view = loaded->view;
    absl::Time now = options_.clock->Now();
    if (view.has_stage_time()) now = std::max(now, kernel::FromTimestamp(view.stage_time()));
    absl::StatusOr<std::vector<v1::Event>> events = Decide(view, command, now);
    if (!events.ok()) return events.status();
    const uint32_t partitions = partitions_.load();
    if (view.history_size() == 0 && partitions == 0) {
      return absl::UnavailableError(absl::StrFormat(
          "report %s cannot be stored yet: the daemon has not learned the input topics' "
          "partition count from Kafka (see /readyz); retry with the same request id",
          id));
    }
    const kernel::Partition partition =
        view.history_size() > 0 ? kernel::Partition(view.partition())
                                : kernel::Partition(static_cast<uint32_t>(ingest::KafkaPartitionFor(
                                      id, static_cast<int32_t>(partitions))));
    kernel::AppendBatch batch(partition);
    uint64_t version = view.version();
    for (v1::Event& e : *events) {
      // Without a request id there is nothing to recognize a retry by: the expected
      // version alone keeps two commands from both acting on one stage.
      e.mutable_provenance()->set_idempotency_key(key);
      batch.Add(e, kernel::StreamVersion(version));
      ++version;
    }
    absl::StatusOr<kernel::AppendResult> appended = options_.log->Append(std::move(batch));
    if (absl::IsAborted(appended.status()) && attempt < 3) continue;  // Someone was first.
    if (!appended.ok()) return appended.status();
    result.view = view;
    for (size_t i = 0; i < events->size(); ++i) {
      const kernel::AppendOutcome& o = appended->outcomes[i];
      result.duplicate = result.duplicate || o.duplicate;
      if (o.duplicate) continue;
      result.appended.push_back(o.position);
      v1::Event& e = (*events)[i];
      e.set_partition(o.position.partition.value());
      e.set_sequence(o.position.sequence.value());
      e.set_stream_version(view.version() + i + 1);
      if (absl::Status s = ApplyCaseEvent(e, &result.view); !s.ok()) return s;
    }
    return result;
  }
}

}  // namespace cityops::projections
