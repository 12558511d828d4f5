#include "analysis/lineage.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "analysis/export.h"
#include "analysis/open_log.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "projections/rules/compile.h"
#include "projections/stored_event.h"

namespace cityops::analysis {
namespace {

using google::protobuf::util::TimeUtil;
using kernel::EventLog;
using kernel::Partition;
using kernel::Sequence;

constexpr size_t kChunk = 1000;
constexpr char kAlertStreamPrefix[] = "alert/";
constexpr char kRulesetStreamPrefix[] = "ruleset/";

v1::EventRef Ref(const v1::Event& e) {
  v1::EventRef ref;
  ref.set_partition(e.partition());
  ref.set_sequence(e.sequence());
  return ref;
}

std::string PayloadName(const v1::Event& e) {
  if (e.payload_case() == v1::Event::PAYLOAD_NOT_SET) return "(no payload)";
  return v1::Event::descriptor()->FindFieldByNumber(e.payload_case())->name();
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(c); });
}

// One RulesetActivated, with where the rules stage met it.
struct Activation {
  v1::Event event;
  bool compiles = false;  // The stage ignores one that does not compile.
  // The stage time at which the rules stage processed it: its partition's running
  // maximum of reading, tick and report event times before it.
  absl::Time stage_time = absl::InfinitePast();
};

class Tracer {
 public:
  Tracer(const EventLog& log, std::string log_name) : log_(log), log_name_(std::move(log_name)) {}

  absl::StatusOr<v1::Lineage> FromTicket(const std::string& ticket_id) {
    absl::StatusOr<std::optional<v1::TicketView>> ticket = Ticket(ticket_id);
    if (!ticket.ok()) return ticket.status();
    if (!ticket->has_value()) {
      return absl::NotFoundError(absl::StrFormat(
          "no ticket '%s' in the event log %s (stream ticket/%s is empty); ticket ids look like "
          "<case id>-T1: list them with 'cityops export --type ticket_issued' or "
          "GET /api/v1/tickets",
          ticket_id, log_name_, ticket_id));
    }
    v1::Lineage out;
    out.set_ticket_id(ticket_id);
    if (absl::Status s = AddCase((*ticket)->ticket().case_id(), &out); !s.ok()) return s;
    return out;
  }

  absl::StatusOr<v1::Lineage> FromCase(const std::string& case_id) {
    v1::Lineage out;
    out.set_case_id(case_id);
    if (absl::Status s = AddCase(case_id, &out); !s.ok()) return s;
    return out;
  }

  absl::StatusOr<v1::Lineage> FromAlert(const std::string& alert_id) {
    absl::StatusOr<std::vector<std::string>> cases = CasesOfAlert(alert_id);
    if (!cases.ok()) return cases.status();
    v1::Lineage out;
    out.set_alert_id(alert_id);
    for (const std::string& id : *cases) {
      if (absl::Status s = AddCase(id, &out); !s.ok()) return s;
    }
    if (cases->empty()) {
      absl::StatusOr<v1::LineageAlert> alert = Alert(alert_id, false, nullptr, "");
      if (!alert.ok()) return alert.status();
      *out.mutable_alert() = *std::move(alert);
    }
    return out;
  }

 private:
  absl::StatusOr<std::vector<v1::Event>> ReadAll(const std::string& stream) const {
    std::vector<v1::Event> all;
    for (uint64_t from = 1;;) {
      absl::StatusOr<std::vector<v1::Event>> chunk =
          log_.ReadStream(stream, kernel::StreamVersion(from), kChunk);
      if (!chunk.ok()) return chunk.status();
      for (v1::Event& e : *chunk) all.push_back(std::move(e));
      if (chunk->size() < kChunk) return all;
      from += chunk->size();
    }
  }

  absl::StatusOr<v1::LineageInput> Input(const v1::EventRef& ref, std::string_view cited_by) const {
    absl::StatusOr<std::vector<v1::Event>> read =
        log_.Read(Partition(ref.partition()), Sequence(ref.sequence()), 1);
    if (!read.ok()) return read.status();
    if (read->empty()) {
      return absl::DataLossError(absl::StrFormat(
          "%s cites event %u/%u, which the event log %s does not hold; the log is damaged or "
          "truncated: restore it from a backup",
          cited_by, ref.partition(), ref.sequence(), log_name_));
    }
    return InputOf(read->front());
  }

  static v1::LineageInput InputOf(const v1::Event& e) {
    v1::LineageInput in;
    *in.mutable_event() = Ref(e);
    in.set_stream_id(e.stream_id());
    in.set_event_type(PayloadName(e));
    if (e.has_event_time()) *in.mutable_event_time() = e.event_time();
    if (e.provenance().has_kafka()) *in.mutable_kafka() = e.provenance().kafka();
    if (e.provenance().has_actor()) *in.mutable_actor() = e.provenance().actor();
    if (e.has_reading()) *in.mutable_reading() = e.reading();
    if (e.has_case_reported()) *in.mutable_report() = e.case_reported();
    return in;
  }

  absl::StatusOr<std::optional<v1::TicketView>> Ticket(const std::string& ticket_id) const {
    absl::StatusOr<std::vector<v1::Event>> events =
        ReadAll(absl::StrCat(std::string(projections::kTicketStreamPrefix), ticket_id));
    if (!events.ok()) return events.status();
    for (const v1::Event& e : *events) {
      if (!e.has_ticket_issued()) continue;
      v1::TicketView view;
      *view.mutable_ticket() = e.ticket_issued();
      *view.mutable_event() = Ref(e);
      *view.mutable_issued_time() = e.event_time();
      return view;
    }
    return std::nullopt;
  }

  // Traces `case_id` into `out`, and the case a report was linked into, once each.
  absl::Status AddCase(const std::string& case_id, v1::Lineage* out) {
    if (!traced_cases_.insert(case_id).second) return absl::OkStatus();
    absl::StatusOr<std::vector<v1::Event>> events = ReadAll(projections::CaseStream(case_id));
    if (!events.ok()) return events.status();
    if (events->empty()) {
      return absl::NotFoundError(absl::StrFormat(
          "no case '%s' in the event log %s (stream case/%s is empty); list case ids with "
          "GET /api/v1/cases ('cityops cases list') or 'cityops export --stream-prefix case/ "
          "--type case_opened,case_reported'",
          case_id, log_name_, case_id));
    }
    v1::LineageCase traced;
    v1::CaseView view;
    for (const v1::Event& e : *events) {
      if (absl::Status s = projections::ApplyCaseEvent(e, &view); !s.ok()) return s;
    }
    for (const v1::Event& e : *events) {
      if (e.has_case_reported()) *traced.add_reports() = InputOf(e);
      if (e.has_case_opened() && !e.case_opened().alert_id().empty()) {
        absl::StatusOr<v1::LineageAlert> alert =
            Alert(e.case_opened().alert_id(), /*opened_case=*/true, nullptr, case_id);
        if (!alert.ok()) return alert.status();
        *traced.add_alerts() = *std::move(alert);
      }
      if (e.has_case_linked()) {
        const v1::CaseLinked& link = e.case_linked();
        if (link.has_alert_id()) {
          absl::StatusOr<v1::LineageAlert> alert =
              Alert(link.alert_id(), /*opened_case=*/false, &link.event(), case_id);
          if (!alert.ok()) return alert.status();
          *traced.add_alerts() = *std::move(alert);
        } else if (link.has_reported_case_id()) {
          absl::StatusOr<v1::LineageInput> report =
              Input(link.event(), absl::StrFormat("the link of report %s into case %s",
                                                  link.reported_case_id(), case_id));
          if (!report.ok()) return report.status();
          *traced.add_reports() = *std::move(report);
        }
      }
    }
    for (const std::string& ticket_id : view.ticket_ids()) {
      absl::StatusOr<std::optional<v1::TicketView>> ticket = Ticket(ticket_id);
      if (!ticket.ok()) return ticket.status();
      if (ticket->has_value()) {
        *traced.add_tickets() = **std::move(ticket);
      } else {
        // Dispatched, but the rules stage has not issued the ticket (yet).
        v1::TicketView pending;
        pending.mutable_ticket()->set_ticket_id(ticket_id);
        pending.mutable_ticket()->set_case_id(case_id);
        *traced.add_tickets() = std::move(pending);
      }
    }
    const std::string linked_to = view.linked_to();
    *traced.mutable_case_() = std::move(view);
    *out->add_cases() = std::move(traced);
    if (!linked_to.empty()) return AddCase(linked_to, out);
    return absl::OkStatus();
  }

  absl::StatusOr<v1::LineageAlert> Alert(const std::string& alert_id, bool opened_case,
                                         const v1::EventRef* link, const std::string& case_id) {
    absl::StatusOr<std::vector<v1::Event>> events =
        ReadAll(absl::StrCat(kAlertStreamPrefix, alert_id));
    if (!events.ok()) return events.status();
    v1::LineageAlert out;
    v1::AlertView& view = *out.mutable_alert();
    const v1::Event* raised = nullptr;
    for (const v1::Event& e : *events) {
      if (e.has_alert_raised()) {
        raised = &e;
        *view.mutable_raised() = e.alert_raised();
        *view.mutable_raised_event() = Ref(e);
        *view.mutable_raised_time() = e.event_time();
        view.set_active(true);
      } else if (e.has_alert_cleared()) {
        *view.mutable_cleared() = e.alert_cleared();
        *view.mutable_cleared_time() = e.event_time();
        view.set_active(false);
      }
    }
    if (raised == nullptr) {
      return absl::NotFoundError(absl::StrFormat(
          "no alert '%s' in the event log %s (stream alert/%s holds no AlertRaised)%s; alert "
          "ids look like al-<rule>-<device>-<n>: list them with GET /api/v1/alerts or "
          "'cityops export --type alert_raised'",
          alert_id, log_name_, alert_id,
          case_id.empty() ? "" : absl::StrFormat(", though case %s names it", case_id)));
    }
    view.set_case_id(case_id);
    out.set_opened_case(opened_case);

    const std::string cited_by = absl::StrFormat("alert %s", alert_id);
    for (const v1::EventRef& ref : view.raised().readings()) {
      absl::StatusOr<v1::LineageInput> in = Input(ref, cited_by);
      if (!in.ok()) return in.status();
      *out.add_readings() = *std::move(in);
    }
    // An alert raised by the absence of readings cites none; the event that caused it
    // (the device's last reading, or what started the wait) is what there is.
    if (view.raised().readings().empty() && raised->provenance().has_caused_by()) {
      absl::StatusOr<v1::LineageInput> in = Input(raised->provenance().caused_by(), cited_by);
      if (!in.ok()) return in.status();
      *out.add_readings() = *std::move(in);
    }
    if (link != nullptr) {
      const bool cited = std::any_of(view.raised().readings().begin(),
                                     view.raised().readings().end(), [&](const v1::EventRef& r) {
                                       return r.partition() == link->partition() &&
                                              r.sequence() == link->sequence();
                                     });
      if (!cited) {
        absl::StatusOr<v1::LineageInput> in =
            Input(*link, absl::StrFormat("the link of alert %s into case %s", alert_id, case_id));
        if (!in.ok()) return in.status();
        *out.add_readings() = *std::move(in);
      }
    }

    absl::StatusOr<const Activation*> in_force = InForce(*raised);
    if (!in_force.ok()) return in_force.status();
    if (*in_force != nullptr) {
      const v1::Event& e = (*in_force)->event;
      const v1::RulesetActivated& a = e.ruleset_activated();
      v1::LineageRuleSet& set = *out.mutable_rule_set();
      set.set_name(a.name());
      set.set_sha256(a.sha256());
      *set.mutable_event() = Ref(e);
      if (e.has_event_time()) *set.mutable_activated_time() = e.event_time();
      set.set_source_path(a.source_path());
      for (const v1::Rule& rule : a.rule_set().rules()) {
        if (rule.id() == view.raised().rule_id()) *out.mutable_rule() = rule;
      }
    }
    return out;
  }

  // The cases an alert opened or joined: the case it opened has its number
  // (al-<rule>-<device>-<n> opens iot-<rule>-<device>-<n>); a re-triggered alert joined
  // the open case of the same rule and device, one of iot-<rule>-<device>-<m>.
  absl::StatusOr<std::vector<std::string>> CasesOfAlert(const std::string& alert_id) {
    absl::StatusOr<std::vector<v1::Event>> events =
        ReadAll(absl::StrCat(kAlertStreamPrefix, alert_id));
    if (!events.ok()) return events.status();
    if (std::none_of(events->begin(), events->end(),
                     [](const v1::Event& e) { return e.has_alert_raised(); })) {
      return absl::NotFoundError(absl::StrFormat(
          "no alert '%s' in the event log %s (stream alert/%s is empty); alert ids look like "
          "al-<rule>-<device>-<n>: list them with GET /api/v1/alerts or 'cityops export "
          "--type alert_raised'",
          alert_id, log_name_, alert_id));
    }
    std::vector<std::string> found;
    if (!alert_id.starts_with("al-")) return found;
    const std::string body = alert_id.substr(3);  // <rule>-<device>-<n>
    const size_t dash = body.rfind('-');
    if (dash == std::string::npos) return found;
    const std::string prefix =
        absl::StrCat(std::string(projections::kCaseStreamPrefix), "iot-", body.substr(0, dash + 1));
    std::vector<std::string> candidates;
    absl::Status listed =
        log_.ListStreams(prefix, [&](std::string_view stream, kernel::StreamVersion) {
          if (AllDigits(stream.substr(prefix.size()))) candidates.emplace_back(stream);
          return true;
        });
    if (!listed.ok()) return listed;
    for (const std::string& stream : candidates) {
      absl::StatusOr<std::vector<v1::Event>> case_events = ReadAll(stream);
      if (!case_events.ok()) return case_events.status();
      for (const v1::Event& e : *case_events) {
        const bool opened = e.has_case_opened() && e.case_opened().alert_id() == alert_id;
        const bool linked = e.has_case_linked() && e.case_linked().has_alert_id() &&
                            e.case_linked().alert_id() == alert_id;
        if (opened || linked) {
          found.push_back(stream.substr(projections::kCaseStreamPrefix.size()));
          break;
        }
      }
    }
    return found;
  }

  // The rule set the rules stage had in force when it derived `raised`: the last
  // compiling activation it processed before the event that raised the alert. The stage
  // processes events in order of (stage time, partition, sequence); the alert's event time
  // is the stage time it was raised at, its `caused_by` the event being processed.
  absl::StatusOr<const Activation*> InForce(const v1::Event& raised) {
    if (absl::Status s = LoadActivations(); !s.ok()) return s;
    const absl::Time at = kernel::FromTimestamp(raised.event_time());
    const auto cause = std::make_tuple(raised.provenance().caused_by().partition(),
                                       raised.provenance().caused_by().sequence());
    const Activation* best = nullptr;
    for (const Activation& a : activations_) {
      if (!a.compiles) continue;
      const auto position = std::make_tuple(a.event.partition(), a.event.sequence());
      const bool before = a.stage_time < at || (a.stage_time == at && position < cause);
      if (!before) continue;
      if (best == nullptr ||
          std::make_tuple(best->stage_time, best->event.partition(), best->event.sequence()) <
              std::make_tuple(a.stage_time, a.event.partition(), a.event.sequence())) {
        best = &a;
      }
    }
    return best;
  }

  absl::Status LoadActivations() {
    if (activations_loaded_) return absl::OkStatus();
    std::vector<std::string> streams;
    absl::Status listed =
        log_.ListStreams(kRulesetStreamPrefix, [&](std::string_view stream, kernel::StreamVersion) {
          streams.emplace_back(stream);
          return true;
        });
    if (!listed.ok()) return listed;
    for (const std::string& stream : streams) {
      absl::StatusOr<std::vector<v1::Event>> events = ReadAll(stream);
      if (!events.ok()) return events.status();
      for (v1::Event& e : *events) {
        if (!e.has_ruleset_activated()) continue;
        Activation& a = activations_.emplace_back();
        a.compiles = rules::CompiledRuleSet::Compile(e.ruleset_activated()).ok();
        a.event = std::move(e);
      }
    }
    // The stage time of each activation: one scan of its partition's prefix, once per
    // process (the API answers many requests; the prefix before an activation never
    // changes).
    std::map<uint32_t, std::vector<Activation*>> by_partition;
    for (Activation& a : activations_) {
      if (std::optional<absl::Time> known = KnownStageTime(a.event)) {
        a.stage_time = *known;
        continue;
      }
      by_partition[a.event.partition()].push_back(&a);
    }
    for (auto& [partition, list] : by_partition) {
      std::sort(list.begin(), list.end(), [](const Activation* x, const Activation* y) {
        return x->event.sequence() < y->event.sequence();
      });
      size_t next = 0;
      absl::Time time = absl::InfinitePast();
      absl::Status failure;
      absl::Status scanned = log_.Scan(
          Partition(partition), Sequence(0), [&](Sequence sequence, std::string_view value) {
            while (next < list.size() && list[next]->event.sequence() == sequence.value()) {
              list[next++]->stage_time = time;
            }
            if (next == list.size()) return false;
            projections::StoredEnvelope envelope;
            if (!projections::DecodeEnvelope(value, &envelope)) {
              failure = absl::DataLossError(absl::StrFormat(
                  "event %u/%u of %s does not decode; the log is damaged: restore it from a "
                  "backup",
                  partition, sequence.value(), log_name_));
              return false;
            }
            if (envelope.provenance_stage == "rules") return true;  // Output, not input.
            if (envelope.payload == v1::Event::kReading ||
                envelope.payload == v1::Event::kClockTick ||
                envelope.payload == v1::Event::kCaseReported) {
              time = std::max(time, envelope.event_time);
            }
            return true;
          });
      if (!scanned.ok()) return scanned;
      if (!failure.ok()) return failure;
      for (const Activation* a : list) RememberStageTime(a->event, a->stage_time);
    }
    activations_loaded_ = true;
    return absl::OkStatus();
  }

  // Activations are identified by their log, position and idempotency key (which holds
  // the rule set's digest and activation time), so that another log created later at the
  // same path is not mistaken for this one.
  using ActivationKey = std::tuple<std::string, uint32_t, uint64_t, std::string>;
  ActivationKey KeyOf(const v1::Event& e) const {
    return {log_.path(), e.partition(), e.sequence(), e.provenance().idempotency_key()};
  }
  static absl::Mutex& CacheMutex() {
    static absl::Mutex* mu = new absl::Mutex;
    return *mu;
  }
  static std::map<ActivationKey, absl::Time>& Cache() {
    static auto* cache = new std::map<ActivationKey, absl::Time>;
    return *cache;
  }
  std::optional<absl::Time> KnownStageTime(const v1::Event& e) const {
    absl::MutexLock lock(&CacheMutex());
    auto it = Cache().find(KeyOf(e));
    if (it == Cache().end()) return std::nullopt;
    return it->second;
  }
  void RememberStageTime(const v1::Event& e, absl::Time t) const {
    absl::MutexLock lock(&CacheMutex());
    Cache()[KeyOf(e)] = t;
  }

  const EventLog& log_;
  const std::string log_name_;
  std::set<std::string> traced_cases_;
  bool activations_loaded_ = false;
  std::vector<Activation> activations_;
};

std::string Time(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return TimeUtil::ToString(t);
}

std::string EnumName(const google::protobuf::EnumDescriptor* type, int value,
                     std::string_view prefix) {
  const google::protobuf::EnumValueDescriptor* v = type->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat(value);
  std::string name = v->name();
  if (name.starts_with(prefix)) name = name.substr(prefix.size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

// "water_depth_cm=32 rainfall_mm_per_h=40": the metrics a reading carries.
std::string ReadingValues(const v1::SensorReading& reading) {
  const google::protobuf::Reflection* r = reading.GetReflection();
  const google::protobuf::OneofDescriptor* metrics =
      v1::SensorReading::descriptor()->FindOneofByName("metrics");
  const google::protobuf::FieldDescriptor* set = r->GetOneofFieldDescriptor(reading, metrics);
  if (set == nullptr) return "(no metrics)";
  const google::protobuf::Message& m = r->GetMessage(reading, set);
  const google::protobuf::Reflection* mr = m.GetReflection();
  std::vector<std::string> parts;
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  mr->ListFields(m, &fields);
  for (const google::protobuf::FieldDescriptor* f : fields) {
    std::string value;
    switch (f->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
        value = absl::StrCat(mr->GetDouble(m, f));
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
        if (f->is_repeated()) {
          std::vector<int32_t> codes;
          for (int i = 0; i < mr->FieldSize(m, f); ++i)
            codes.push_back(mr->GetRepeatedInt32(m, f, i));
          value = absl::StrCat("[", absl::StrJoin(codes, ","), "]");
        } else {
          value = absl::StrCat(mr->GetInt32(m, f));
        }
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_BOOL:
        value = mr->GetBool(m, f) ? "true" : "false";
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_ENUM:
        value = mr->GetEnum(m, f)->name();
        break;
      default:
        continue;
    }
    parts.push_back(absl::StrCat(f->name(), "=", value));
  }
  return absl::StrJoin(parts, " ");
}

void PrintInput(const v1::LineageInput& in, std::ostream& out) {
  out << absl::StrFormat("      %u/%u  %s  %s", in.event().partition(), in.event().sequence(),
                         Time(in.event_time()), in.stream_id());
  if (in.has_kafka()) {
    out << absl::StrFormat("  kafka %s partition %d offset %d", in.kafka().topic(),
                           in.kafka().partition(), in.kafka().offset());
  } else if (in.has_actor()) {
    out << absl::StrFormat("  filed by %s", in.actor().user());
  }
  if (in.has_reading()) {
    out << "\n        " << ReadingValues(in.reading());
  } else if (in.has_report()) {
    out << absl::StrFormat(
        "\n        %s report, category %s %s: %s",
        EnumName(v1::CaseSource_descriptor(), in.report().source(), "CASE_SOURCE_"),
        in.report().category().code(), in.report().category().name(), in.report().description());
  } else {
    out << "  (" << in.event_type() << ")";
  }
  out << "\n";
}

void PrintAlert(const v1::LineageAlert& a, std::ostream& out) {
  const v1::AlertRaised& r = a.alert().raised();
  out << absl::StrFormat("  alert %s (%s the case)\n", r.alert_id(),
                         a.opened_case() ? "opened" : "re-triggered and joined");
  out << absl::StrFormat("    raised %s at %u/%u on %s: %s %g, threshold %g, severity %s\n",
                         Time(a.alert().raised_time()), a.alert().raised_event().partition(),
                         a.alert().raised_event().sequence(), r.device_id(), r.metric(), r.value(),
                         r.threshold(),
                         EnumName(v1::Severity_descriptor(), r.severity(), "SEVERITY_"));
  if (a.alert().active()) {
    out << "    still active\n";
  } else {
    out << absl::StrFormat("    cleared %s (value %g)\n", Time(a.alert().cleared_time()),
                           a.alert().cleared().value());
  }
  out << absl::StrFormat(
      "    rule %s%s\n", r.rule_id(),
      a.rule().description().empty() ? "" : absl::StrFormat(" (%s)", a.rule().description()));
  if (a.has_rule_set()) {
    out << absl::StrFormat("    rule set %s sha256 %s, activated at %u/%u %s%s\n",
                           a.rule_set().name(), a.rule_set().sha256(),
                           a.rule_set().event().partition(), a.rule_set().event().sequence(),
                           Time(a.rule_set().activated_time()),
                           a.rule_set().source_path().empty()
                               ? ""
                               : absl::StrFormat(" from %s", a.rule_set().source_path()));
  } else {
    out << "    rule set: none found in the log before the alert\n";
  }
  out << absl::StrFormat("    readings (%d):\n", a.readings_size());
  for (const v1::LineageInput& in : a.readings()) PrintInput(in, out);
}

}  // namespace

absl::StatusOr<v1::Lineage> TraceLineage(const EventLog& log, const LineageQuery& query,
                                         const std::string& log_name) {
  const int given = !query.ticket_id.empty() + !query.case_id.empty() + !query.alert_id.empty();
  if (given != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --ticket ID, --case ID or --alert ID to start the lineage from");
  }
  Tracer tracer(log, log_name);
  if (!query.ticket_id.empty()) return tracer.FromTicket(query.ticket_id);
  if (!query.case_id.empty()) return tracer.FromCase(query.case_id);
  return tracer.FromAlert(query.alert_id);
}

void PrintLineage(const v1::Lineage& lineage, std::ostream& out) {
  switch (lineage.start_case()) {
    case v1::Lineage::kTicketId:
      out << "lineage of ticket " << lineage.ticket_id() << "\n";
      break;
    case v1::Lineage::kCaseId:
      out << "lineage of case " << lineage.case_id() << "\n";
      break;
    case v1::Lineage::kAlertId:
      out << "lineage of alert " << lineage.alert_id() << "\n";
      break;
    case v1::Lineage::START_NOT_SET:
      break;
  }
  for (const v1::LineageCase& c : lineage.cases()) {
    const v1::CaseView& v = c.case_();
    out << absl::StrFormat(
        "case %s: %s, category %s %s, stage %s, grid %s, department %s\n", v.case_id(),
        EnumName(v1::CaseSource_descriptor(), v.source(), "CASE_SOURCE_"), v.category().code(),
        v.category().name(), EnumName(v1::CaseStage_descriptor(), v.stage(), "CASE_STAGE_"),
        v.grid().grid_code().empty() ? "-" : v.grid().grid_code(),
        v.department().empty() ? "-" : v.department());
    if (!v.linked_to().empty()) out << "  linked into case " << v.linked_to() << "\n";
    for (const v1::TicketView& t : c.tickets()) {
      if (!t.has_event()) {
        out << absl::StrFormat("  ticket %s: dispatched, not issued yet\n", t.ticket().ticket_id());
        continue;
      }
      out << absl::StrFormat(
          "  ticket %s: issued %s at %u/%u to %s (%s), due %s\n", t.ticket().ticket_id(),
          Time(t.issued_time()), t.event().partition(), t.event().sequence(),
          t.ticket().department(),
          EnumName(v1::GridLevel_descriptor(), t.ticket().level(), "GRID_LEVEL_"),
          Time(t.ticket().due_time()));
    }
    for (const v1::LineageAlert& a : c.alerts()) PrintAlert(a, out);
    if (c.reports_size() > 0) out << absl::StrFormat("  reports (%d):\n", c.reports_size());
    for (const v1::LineageInput& in : c.reports()) PrintInput(in, out);
  }
  if (lineage.has_alert()) {
    out << "in no case (its rule opens none)\n";
    PrintAlert(lineage.alert(), out);
  }
}

absl::Status LineageCommand(const LineageOptions& options, std::ostream& out) {
  absl::StatusOr<std::unique_ptr<EventLog>> log = OpenLogToRead(options.data_dir, "lineage");
  if (!log.ok()) return log.status();
  absl::StatusOr<v1::Lineage> lineage = TraceLineage(**log, options.query, options.data_dir);
  if (!lineage.ok()) return lineage.status();
  if (options.json) {
    std::string json;
    auto printed = google::protobuf::util::MessageToJsonString(*lineage, &json, EventJsonOptions());
    if (!printed.ok()) {
      return absl::InternalError(
          absl::StrCat("cannot print the lineage as JSON: ", std::string(printed.message())));
    }
    out << json << "\n";
  } else {
    PrintLineage(*lineage, out);
  }
  return absl::OkStatus();
}

}  // namespace cityops::analysis
