#include "projections/rules/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <list>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/civil_time.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "spdlog/spdlog.h"

namespace cityops::rules {

using projections::CaseStream;

namespace {

enum TimerKind : int {
  kRaiseHold = 0,  // A raise condition has held long enough.
  kClearHold = 1,  // A clear condition has held long enough.
  kAbsence = 2,    // A device may have gone silent.
  kOverdue = 3,    // A case stage's deadline (yellow) or twice its allowance (red).
  kVerify = 4,     // An IoT case's verification window has passed.
};

constexpr size_t kMaxAlertReadings = 8;

// Ids are made of rule ids and device ids; a grid's pseudo-device "grid/<code>" becomes
// "grid-<code>" so that ids stay one path segment.
std::string IdPart(std::string_view s) {
  return absl::StrReplaceAll(absl::string_view(s.data(), s.size()), {{"/", "-"}});
}

std::string AlertId(std::string_view rule, std::string_view device, uint32_t n) {
  return absl::StrFormat("al-%s-%s-%d", rule, IdPart(device), n);
}

std::string CaseIdFor(std::string_view rule, std::string_view device, uint32_t n) {
  return absl::StrFormat("iot-%s-%s-%d", rule, IdPart(device), n);
}

double DistanceMeters(const v1::GeoPoint& a, const v1::GeoPoint& b) {
  constexpr double kEarthRadiusM = 6'371'000;
  constexpr double kRad = M_PI / 180;
  const double dlat = (b.latitude_deg() - a.latitude_deg()) * kRad;
  const double dlon = (b.longitude_deg() - a.longitude_deg()) * kRad;
  const double h = std::sin(dlat / 2) * std::sin(dlat / 2) +
                   std::cos(a.latitude_deg() * kRad) * std::cos(b.latitude_deg() * kRad) *
                       std::sin(dlon / 2) * std::sin(dlon / 2);
  return 2 * kEarthRadiusM * std::asin(std::min(1.0, std::sqrt(h)));
}

// The level that dispatches a human-raised case of `source`.
v1::GridLevel DispatchLevelFor(v1::CaseSource source) {
  switch (source) {
    case v1::CASE_SOURCE_RESIDENTIAL_STATION:
      return v1::GRID_LEVEL_RESIDENTIAL_STATION;
    case v1::CASE_SOURCE_STREET_PATROL:
    case v1::CASE_SOURCE_HOTLINE_12345:
    default:
      return v1::GRID_LEVEL_STREET_CENTER;
  }
}

Truth Not(Truth t) {
  switch (t) {
    case Truth::kTrue:
      return Truth::kFalse;
    case Truth::kFalse:
      return Truth::kTrue;
    default:
      return Truth::kUnknown;
  }
}

// True if the elevator reading reports one of `codes`.
bool AnyCode(const Reading& reading, const std::vector<int32_t>& codes) {
  for (int32_t code : reading.codes()) {
    if (std::find(codes.begin(), codes.end(), code) != codes.end()) return true;
  }
  return false;
}

// By name, not by the order of the payload numbers.
bool IsCasePayload(v1::Event::PayloadCase p) {
  switch (p) {
    case v1::Event::kCaseReported:
    case v1::Event::kCaseOpened:
    case v1::Event::kCaseRegistered:
    case v1::Event::kCaseDispatched:
    case v1::Event::kCaseHandled:
    case v1::Event::kCaseVerified:
    case v1::Event::kCaseClosed:
    case v1::Event::kCaseUrged:
    case v1::Event::kCaseEscalated:
    case v1::Event::kCaseOverdue:
    case v1::Event::kCaseLinked:
    case v1::Event::kCaseRelocated:
      return true;
    default:
      return false;
  }
}

}  // namespace

// Per (device, rule id): what outlives a change of the rule's definition. A rule that is
// edited (or removed and added again) goes on numbering its alerts and cases where it
// left off, so ids are never reused, and keeps its open case.
struct RulesEngine::RuleMemory {
  std::string rule_id;
  uint32_t alerts = 0;    // Alerts raised so far; numbers the alert and case ids.
  std::string open_case;  // The open case this rule raised for this device, if any.
  absl::Time cleared_at = absl::InfinitePast();  // When its alert last cleared.
};

// Per (device, rule as defined now): dropped when the rule's definition changes.
struct RulesEngine::RuleState {
  RuleMemory* memory = nullptr;  // In the device's `memory`; never null.
  bool active = false;
  std::string alert_id;
  // Raise condition holding, not yet for long enough.
  bool pending = false;
  absl::Time pending_since;
  std::vector<v1::EventRef> readings;  // That raised (or are raising) the alert.
  // Clear condition holding, not yet for long enough.
  bool clearing = false;
  absl::Time clearing_since;
  double clearing_value = 0;
  v1::EventRef clearing_reading;
  // The metric, value and threshold to report when the pending alert is raised.
  std::string metric;
  double value = 0;
  double threshold = 0;
  // Rate of change: (time, value) within the window (a few readings).
  std::vector<std::pair<absl::Time, double>> window;
  // Stuck value.
  bool run_valid = false;
  double run_value = 0;
  absl::Time run_start;
  uint32_t run_count = 0;
  // Absence: the due time of the scheduled timer, if any.
  absl::Time absence_due = absl::InfinitePast();
  // Grid compounds: recent raises of counted rules (time, device) and active ones.
  std::vector<std::pair<absl::Time, std::string>> recent;
  int active_sources = 0;
};

// Small, for the reading path: what every reading touches sits in the map's node beside
// the key (a few cache lines per device, a few MB for tens of thousands of devices);
// everything else is one pointer away.
struct RulesEngine::DeviceState {
  int kind = -1;  // Its kind's index in the rules' kind table; -1: none known there.
  bool registered = false;
  kernel::Partition partition;
  absl::Time last_seen = absl::InfinitePast();
  // The states of the rules of its kind, in RulesFor(kind) order (null until a rule
  // needs one), and whether each is idle: nothing pending, active or scheduled that a
  // reading must see. A reading that does not trigger an idle rule leaves it alone: most
  // readings are normal, and most devices never need a state for most rules.
  absl::InlinedVector<RuleState*, 7> by_slot;
  absl::InlinedVector<uint8_t, 7> idle;
  struct Cold {
    std::string key;
    // (rule index, state) of the rules that track something for this device. A list,
    // so that adding a state never moves the others (callers hold references).
    std::list<std::pair<int, RuleState>> rules;
    // By rule id, for every rule that has had a state here (states point into it).
    std::list<RuleMemory> memory;
    v1::DeviceRegistered registration;
    v1::GridRef grid;     // From the registration (grids: the grid itself).
    std::string kind_id;  // The catalogue's id of its kind; empty for grids.
  };
  std::unique_ptr<Cold> cold = std::make_unique<Cold>();
};

struct RulesEngine::CaseTrack {
  v1::CaseView view;
  kernel::Partition partition;
  // IoT cases, from CaseOpened: the raising rule, the device (or grid pseudo-device) and
  // the verification window. Kept here, so that a case outlives a change or removal of
  // its rule: it is verified and closed with what it was opened with.
  std::string rule_id;
  std::string device_key;
  absl::Duration verification_window = absl::ZeroDuration();
  std::string link_key;  // In open_by_grid_category_ under this key.
};

struct RulesEngine::Context {
  v1::EventRef cause_ref;
  absl::Time time;  // Event time of what is derived now.
  std::vector<Derived>* out = nullptr;
};

EngineCounters EngineCounters::Since(const EngineCounters& base) const {
  EngineCounters d;
  d.inputs = inputs - base.inputs;
  d.readings = readings - base.readings;
  d.alerts_raised = alerts_raised - base.alerts_raised;
  d.alerts_cleared = alerts_cleared - base.alerts_cleared;
  d.cases_opened = cases_opened - base.cases_opened;
  d.cases_linked = cases_linked - base.cases_linked;
  d.tickets = tickets - base.tickets;
  d.overdue = overdue - base.overdue;
  d.auto_closed = auto_closed - base.auto_closed;
  d.rejected_rule_sets = rejected_rule_sets - base.rejected_rule_sets;
  return d;
}

RulesEngine::RulesEngine() = default;
RulesEngine::~RulesEngine() = default;

namespace {

int KindIndexIn(const CompiledRuleSet& rules, std::string_view kind_id) {
  const catalogue::Kind* k = kind_id.empty() ? nullptr : rules.kinds().Find(kind_id);
  return k == nullptr ? -1 : k->index;
}

}  // namespace

int RulesEngine::KindIndex(std::string_view kind_id) const {
  return rules_ == nullptr ? -1 : KindIndexIn(*rules_, kind_id);
}

RulesEngine::DeviceState& RulesEngine::Device(std::string_view key) {
  auto it = devices_.find(key);
  if (it == devices_.end()) {
    it = devices_.try_emplace(projections::DeviceKey(key)).first;
    it->second.cold->key = std::string(key);
  }
  return it->second;
}

RulesEngine::RuleState& RulesEngine::StateOf(DeviceState& dev, int rule_index) {
  for (auto& [index, state] : dev.cold->rules) {
    if (index == rule_index) return state;
  }
  RuleState& st = dev.cold->rules.emplace_back(rule_index, RuleState()).second;
  st.memory = &MemoryOf(dev, rules_->rules()[rule_index].rule->id());
  return st;
}

RulesEngine::RuleMemory& RulesEngine::MemoryOf(DeviceState& dev, std::string_view rule_id) {
  for (RuleMemory& m : dev.cold->memory) {
    if (m.rule_id == rule_id) return m;
  }
  RuleMemory& m = dev.cold->memory.emplace_back();
  m.rule_id = std::string(rule_id);
  return m;
}

const RulesEngine::RuleState* RulesEngine::FindState(const DeviceState& dev,
                                                     std::string_view rule_id) const {
  if (rules_ == nullptr) return nullptr;
  for (const auto& [index, state] : dev.cold->rules) {
    if (state.memory->rule_id == rule_id) return &state;
  }
  return nullptr;
}

void RulesEngine::AddTimer(Timer t) {
  t.cause = cause_;
  timers_.insert(std::move(t));
}
void RulesEngine::CancelTimer(const Timer& t) { timers_.erase(t); }

RulesEngine::Context RulesEngine::Begin(uint32_t partition, uint64_t sequence, absl::Time now,
                                        std::vector<Derived>* out) {
  Context ctx;
  ctx.cause_ref.set_partition(partition);
  ctx.cause_ref.set_sequence(sequence);
  ctx.out = out;
  if (now > now_) {
    FireTimers(now, ctx);
    now_ = now;
  }
  // FireTimers cited each timer's own cause; what follows is this event's doing.
  cause_ = {kernel::Partition(partition), kernel::Sequence(sequence)};
  ctx.cause_ref.set_partition(partition);
  ctx.cause_ref.set_sequence(sequence);
  ctx.time = now_;
  ++counters_.inputs;
  return ctx;
}

void RulesEngine::ProcessReading(const Reading& reading, kernel::EventPosition position,
                                 absl::Time now, std::vector<Derived>* out) {
  Context ctx = Begin(position.partition.value(), position.sequence.value(), now, out);
  OnReading(reading, ctx);
}

void RulesEngine::Process(const v1::Event& event, absl::Time now, std::vector<Derived>* out) {
  Context ctx = Begin(event.partition(), event.sequence(), now, out);
  switch (event.payload_case()) {
    case v1::Event::kReading:
      reading_.Set(event.reading(), kinds());
      OnReading(reading_, ctx);
      break;
    case v1::Event::kDeviceRegistered:
      OnRegistration(event, ctx);
      break;
    case v1::Event::kRulesetActivated:
      OnRuleset(event, ctx);
      break;
    case v1::Event::kCaseReported:
      OnReported(event, ctx);
      break;
    default:
      if (IsCasePayload(event.payload_case())) OnCaseEvent(event, ctx);
      break;
  }
}

void RulesEngine::FireTimers(absl::Time now, Context& ctx) {
  while (!timers_.empty() && timers_.begin()->due <= now) {
    Timer t = *timers_.begin();
    timers_.erase(timers_.begin());
    now_ = std::max(now_, t.due);
    ctx.time = t.due;
    // What a timer derives is the doing of the event that scheduled it, not of the event
    // that happened to carry stage time past it (which depends on what was appended when).
    cause_ = t.cause;
    ctx.cause_ref.set_partition(t.cause.partition.value());
    ctx.cause_ref.set_sequence(t.cause.sequence.value());
    OnTimer(t, ctx);
  }
}

void RulesEngine::OnTimer(const Timer& t, Context& ctx) {
  if (t.kind == kOverdue || t.kind == kVerify) {
    auto it = cases_.find(t.key);
    if (it == cases_.end()) return;
    CaseTrack& track = *it->second;
    const v1::CaseView& view = track.view;
    if (view.history_size() != t.a || view.stage() == v1::CASE_STAGE_CLOSED) return;
    if (t.kind == kOverdue) {
      EmitOverdue(track, static_cast<v1::OverdueLevel>(t.b), ctx);
      return;
    }
    // Verification window over: verify and close if the device stayed normal. The rule
    // may have changed or gone meanwhile; the case keeps the window it was opened with.
    if (view.stage() != v1::CASE_STAGE_HANDLED) return;
    auto dev_it = devices_.find(track.device_key);
    if (dev_it != devices_.end()) {
      const RuleState* st = FindState(dev_it->second, track.rule_id);
      if (st != nullptr && st->active) return;  // Raised again: that path fails verification.
    }
    const std::string case_id = view.case_id();
    const kernel::Partition partition = track.partition;
    const absl::Duration window = track.verification_window;
    const int entry = view.history_size();
    {
      v1::Event e;
      e.set_stream_id(CaseStream(case_id));
      v1::CaseVerified* v = e.mutable_case_verified();
      v->set_case_id(case_id);
      v->set_passed(true);
      v->set_note(absl::StrFormat("rule %s: %s stayed normal for %s", track.rule_id,
                                  track.device_key, absl::FormatDuration(window)));
      Emit(partition, std::move(e), absl::StrFormat("rules/case/%s/verified/%d", case_id, entry),
           ctx);
    }
    auto again = cases_.find(case_id);
    if (again == cases_.end()) return;
    const v1::CaseView& verified = again->second->view;
    v1::Event e;
    e.set_stream_id(CaseStream(case_id));
    v1::CaseClosed* c = e.mutable_case_closed();
    c->set_case_id(case_id);
    kernel::ToDurationProto(projections::TotalHandlingTime(verified, ctx.time),
                            c->mutable_total_handling_time());
    for (const v1::StageDuration& d : projections::StageDurations(verified, ctx.time)) {
      *c->add_stage_durations() = d;
    }
    ++counters_.auto_closed;
    Emit(partition, std::move(e), absl::StrFormat("rules/case/%s/closed", case_id), ctx);
    return;
  }

  if (rules_ == nullptr) return;
  auto dev_it = devices_.find(t.key);
  if (dev_it == devices_.end()) return;
  DeviceState& dev = dev_it->second;
  if (t.a < 0 || static_cast<size_t>(t.a) >= rules_->rules().size()) return;
  const CompiledRule& rule = rules_->rules()[t.a];
  RuleState& st = StateOf(dev, t.a);
  switch (t.kind) {
    case kRaiseHold:
      if (!st.active && st.pending && st.pending_since + rule.hold == t.due) {
        Raise(rule, dev, st, st.metric, st.value, st.threshold, ctx);
      }
      break;
    case kClearHold:
      if (st.active && st.clearing && st.clearing_since + rule.clear_hold == t.due) {
        v1::EventRef reading = st.clearing_reading;
        Clear(rule, dev, st, st.clearing_value, &reading, ctx);
      }
      break;
    case kAbsence: {
      if (st.absence_due != t.due) break;
      st.absence_due = absl::InfinitePast();
      absl::Duration interval = rule.default_interval;
      if (dev.registered && dev.cold->registration.has_reporting_interval() &&
          kernel::FromDurationProto(dev.cold->registration.reporting_interval()) >
              absl::ZeroDuration()) {
        interval = kernel::FromDurationProto(dev.cold->registration.reporting_interval());
      }
      const absl::Duration limit =
          interval * static_cast<int64_t>(rule.rule->absence().intervals());
      const absl::Time expected = dev.last_seen + limit;
      if (expected > t.due) {
        st.absence_due = expected;
        AddTimer({expected, kAbsence, dev.cold->key, t.a, 0});
      } else if (!st.active) {
        st.readings.clear();
        Raise(rule, dev, st, "silent_s", absl::ToDoubleSeconds(t.due - dev.last_seen),
              absl::ToDoubleSeconds(limit), ctx);
        // The next reading must clear it.
        const std::vector<int>& kind_rules = rules_->RulesFor(dev.kind);
        for (size_t slot = 0; slot < kind_rules.size() && slot < dev.idle.size(); ++slot) {
          if (kind_rules[slot] == t.a) dev.idle[slot] = 0;
        }
      }
      break;
    }
    default:
      break;
  }
}

bool RulesEngine::Applies(const CompiledRule& rule, const DeviceState& dev) const {
  if (!rule.rule->has_applies_to()) return true;
  const v1::DeviceFilter& f = rule.rule->applies_to();
  if (!dev.registered) {
    // No archive data to test: the device is taken to be the variant that needs the
    // most attention (rules/README.md): an urban cover of any owner, a gauge on an open
    // road in a low-lying spot, an old and tall building or elevator. Complementary
    // filters (urban: true / urban: false) so pick exactly one of the two rules.
    if (f.has_urban() && !f.urban()) return false;
    if (f.has_underpass() && f.underpass()) return false;
    if (f.has_low_lying() && !f.low_lying()) return false;
    return true;
  }
  const v1::DeviceRegistered& reg = dev.cold->registration;
  if (f.has_underpass() && reg.flood_gauge().underpass() != f.underpass()) return false;
  if (f.has_low_lying() && reg.flood_gauge().low_lying() != f.low_lying()) return false;
  if (f.has_urban() && reg.manhole_cover().urban() != f.urban()) return false;
  if (f.owners_size() > 0 && std::find(f.owners().begin(), f.owners().end(),
                                       reg.manhole_cover().owner()) == f.owners().end()) {
    return false;
  }
  if (f.has_min_age_years()) {
    const int year =
        reg.has_elevator() ? reg.elevator().installed_year() : reg.curtain_wall().built_year();
    const int64_t now_year = absl::ToCivilYear(now_, absl::UTCTimeZone()).year();
    if (year == 0 || now_year - year < static_cast<int64_t>(f.min_age_years())) return false;
  }
  if (f.has_min_height_m() && reg.curtain_wall().height_m() < f.min_height_m()) return false;
  return true;
}

void RulesEngine::OnRegistration(const v1::Event& event, Context& ctx) {
  const v1::DeviceRegistered& reg = event.device_registered();
  DeviceState& dev = Device(reg.device_id());
  if (!dev.registered && dev.last_seen == absl::InfinitePast()) {
    dev.partition = kernel::Partition(event.partition());
  }
  dev.registered = true;
  dev.cold->registration = reg;
  dev.cold->kind_id = reg.kind_id().empty() ? catalogue::TypedKindId(reg.kind()) : reg.kind_id();
  dev.kind = KindIndex(dev.cold->kind_id);
  dev.cold->grid = reg.grid();
  RelocateOpenCases(dev, event.stream_version(), ctx);
  if (rules_ == nullptr) return;
  // Rules whose filter no longer matches (e.g. a cover first seen unregistered, now
  // registered as suburban) stop watching the device: their alerts end here.
  for (auto& [i, st] : dev.cold->rules) {
    const CompiledRule& rule = rules_->rules()[i];
    if (Applies(rule, dev)) continue;
    if (st.pending) {
      CancelTimer({st.pending_since + rule.hold, kRaiseHold, dev.cold->key, rule.index, 0});
      st.pending = false;
    }
    if (st.clearing) {
      CancelTimer({st.clearing_since + rule.clear_hold, kClearHold, dev.cold->key, rule.index, 0});
      st.clearing = false;
    }
    if (st.active) Clear(rule, dev, st, 0, nullptr, ctx);
  }
}

void RulesEngine::RelocateOpenCases(DeviceState& dev, uint64_t registration_version, Context& ctx) {
  const v1::DeviceRegistered& reg = dev.cold->registration;
  // Collected first: emitting changes the tracked cases.
  std::vector<std::string> moved;
  for (const RuleMemory& m : dev.cold->memory) {
    if (m.open_case.empty()) continue;
    auto it = cases_.find(m.open_case);
    if (it == cases_.end()) continue;
    const v1::CaseView& view = it->second->view;
    if (view.stage() == v1::CASE_STAGE_CLOSED) continue;
    const bool same_grid = view.grid().SerializeAsString() == reg.grid().SerializeAsString();
    const bool same_place =
        view.has_location() == reg.has_location() &&
        view.location().SerializeAsString() == reg.location().SerializeAsString();
    if (!same_grid || !same_place) moved.push_back(m.open_case);
  }
  for (const std::string& case_id : moved) {
    auto it = cases_.find(case_id);
    if (it == cases_.end()) continue;
    v1::Event e;
    e.set_stream_id(CaseStream(case_id));
    v1::CaseRelocated* r = e.mutable_case_relocated();
    r->set_case_id(case_id);
    r->set_device_id(reg.device_id());
    *r->mutable_grid() = reg.grid();
    if (reg.has_location()) *r->mutable_location() = reg.location();
    // The registration's version in its own stream: the same whichever position it has.
    Emit(it->second->partition, std::move(e),
         absl::StrFormat("rules/case/%s/relocated/%d", case_id, registration_version), ctx);
  }
}

void RulesEngine::OnReading(const Reading& reading, Context& ctx) {
  ++counters_.readings;
  DeviceState& dev = Device(reading.device_id());
  if (dev.last_seen == absl::InfinitePast() && !dev.registered) {
    dev.partition = kernel::Partition(ctx.cause_ref.partition());
  }
  const catalogue::Kind* kind = reading.kind();
  if (dev.kind < 0 && kind != nullptr) {
    dev.kind = kind->index;
    dev.cold->kind_id = kind->id;
  }
  const absl::Time previous = dev.last_seen;
  dev.last_seen = now_;
  if (rules_ == nullptr) return;
  const std::vector<int>& kind_rules = rules_->RulesFor(kind == nullptr ? -1 : kind->index);
  if (dev.by_slot.size() != kind_rules.size()) {
    // First reading under this rule set: find the states the device has already.
    dev.by_slot.assign(kind_rules.size(), nullptr);
    dev.idle.assign(kind_rules.size(), 0);
    for (size_t slot = 0; slot < kind_rules.size(); ++slot) {
      for (auto& [index, state] : dev.cold->rules) {
        if (index == kind_rules[slot]) dev.by_slot[slot] = &state;
      }
      dev.idle[slot] = IsIdle(rules_->rules()[kind_rules[slot]], dev.by_slot[slot]);
    }
  }
  for (size_t slot = 0; slot < kind_rules.size(); ++slot) {
    const int index = kind_rules[slot];
    const CompiledRule& rule = rules_->rules()[index];
    if (dev.idle[slot]) {
      switch (rule.type) {
        case RuleType::kThreshold:
          if (rule.raise.Evaluate(reading) != Truth::kTrue) continue;
          break;
        case RuleType::kFaultCode:
          if (!AnyCode(reading, rule.codes)) continue;
          break;
        case RuleType::kAbsence:
          continue;
        default:
          break;
      }
    }
    if (!Applies(rule, dev)) continue;
    if (dev.by_slot[slot] == nullptr) dev.by_slot[slot] = &StateOf(dev, index);
    RuleState& st = *dev.by_slot[slot];
    Evaluate(rule, dev, st, reading, previous, ctx);
    dev.idle[slot] = IsIdle(rule, &st);
  }
}

bool RulesEngine::IsIdle(const CompiledRule& rule, const RuleState* st) {
  switch (rule.type) {
    case RuleType::kThreshold:
    case RuleType::kFaultCode:
      // Without a state, the rule is neither pending nor active.
      return st == nullptr || (!st->active && !st->pending);
    case RuleType::kAbsence:
      return st != nullptr && !st->active && st->absence_due != absl::InfinitePast();
    default:
      return false;  // Rate of change and stuck follow every reading.
  }
}

void RulesEngine::Evaluate(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                           const Reading& reading, absl::Time previous, Context& ctx) {
  const int index = rule.index;
  {
    switch (rule.type) {
      case RuleType::kThreshold:
        EvaluateThreshold(rule, dev, st, reading, ctx.cause_ref, ctx);
        break;
      case RuleType::kRateOfChange:
        EvaluateRate(rule, dev, st, reading, ctx.cause_ref, ctx);
        break;
      case RuleType::kFaultCode:
        EvaluateFault(rule, dev, st, reading, ctx.cause_ref, ctx);
        break;
      case RuleType::kStuck:
        EvaluateStuck(rule, dev, st, reading, ctx.cause_ref, ctx);
        break;
      case RuleType::kAbsence:
        if (st.active) {
          const v1::EventRef ref = ctx.cause_ref;
          Clear(rule, dev, st, absl::ToDoubleSeconds(now_ - previous), &ref, ctx);
        }
        if (st.absence_due == absl::InfinitePast()) {
          absl::Duration interval = rule.default_interval;
          if (dev.registered && dev.cold->registration.has_reporting_interval() &&
              kernel::FromDurationProto(dev.cold->registration.reporting_interval()) >
                  absl::ZeroDuration()) {
            interval = kernel::FromDurationProto(dev.cold->registration.reporting_interval());
          }
          st.absence_due = now_ + interval * static_cast<int64_t>(rule.rule->absence().intervals());
          AddTimer({st.absence_due, kAbsence, dev.cold->key, index, 0});
        }
        break;
      case RuleType::kGridCompound:
        break;
    }
  }
}

void RulesEngine::PendRaise(const CompiledRule& rule, DeviceState& dev, RuleState& st, Truth raise,
                            const v1::EventRef& ref, Context& ctx,
                            absl::FunctionRef<void()> describe) {
  if (raise == Truth::kFalse && st.pending) {
    CancelTimer({st.pending_since + rule.hold, kRaiseHold, dev.cold->key, rule.index, 0});
    st.pending = false;
  }
  if (raise != Truth::kTrue) return;
  if (!st.pending) {
    st.pending = true;
    st.pending_since = now_;
    st.readings.clear();
    describe();
    if (rule.hold > absl::ZeroDuration()) {
      AddTimer({st.pending_since + rule.hold, kRaiseHold, dev.cold->key, rule.index, 0});
    }
  }
  if (st.readings.size() < kMaxAlertReadings) st.readings.push_back(ref);
  if (now_ - st.pending_since >= rule.hold) {
    CancelTimer({st.pending_since + rule.hold, kRaiseHold, dev.cold->key, rule.index, 0});
    Raise(rule, dev, st, st.metric, st.value, st.threshold, ctx);
  }
}

void RulesEngine::EvaluateThreshold(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                                    const Reading& reading, const v1::EventRef& ref, Context& ctx) {
  const Truth raise = rule.raise.Evaluate(reading);
  if (!st.active) {
    PendRaise(rule, dev, st, raise, ref, ctx, [&] {
      st.metric.clear();
      for (const CompiledCondition& c : rule.raise.conditions) {
        if (std::optional<double> v = reading.Get(c.metric)) {
          st.metric = c.metric.name();
          st.value = *v;
          st.threshold = c.operand;
          break;
        }
      }
    });
    return;
  }
  const Truth clear = rule.clear.empty() ? Not(raise) : rule.clear.Evaluate(reading);
  if (clear == Truth::kFalse && st.clearing) {
    CancelTimer({st.clearing_since + rule.clear_hold, kClearHold, dev.cold->key, rule.index, 0});
    st.clearing = false;
  }
  if (clear != Truth::kTrue) return;
  double value = 0;
  const CompiledConditionSet& set = rule.clear.empty() ? rule.raise : rule.clear;
  for (const CompiledCondition& c : set.conditions) {
    if (std::optional<double> v = reading.Get(c.metric)) {
      value = *v;
      break;
    }
  }
  if (!st.clearing) {
    st.clearing = true;
    st.clearing_since = now_;
    st.clearing_value = value;
    st.clearing_reading = ref;
    if (rule.clear_hold > absl::ZeroDuration()) {
      AddTimer({st.clearing_since + rule.clear_hold, kClearHold, dev.cold->key, rule.index, 0});
    }
  }
  if (now_ - st.clearing_since >= rule.clear_hold) {
    CancelTimer({st.clearing_since + rule.clear_hold, kClearHold, dev.cold->key, rule.index, 0});
    Clear(rule, dev, st, value, &ref, ctx);
  }
}

void RulesEngine::EvaluateFault(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                                const Reading& reading, const v1::EventRef& ref, Context& ctx) {
  if (!reading.has_codes()) return;
  int32_t found = 0;
  for (int32_t code : reading.codes()) {
    if (std::find(rule.codes.begin(), rule.codes.end(), code) != rule.codes.end()) {
      found = code;
      break;
    }
  }
  if (!st.active) {
    PendRaise(rule, dev, st, found != 0 ? Truth::kTrue : Truth::kFalse, ref, ctx, [&] {
      st.metric = rule.codes_metric;
      st.value = found;
      st.threshold = found;
    });
  } else if (found == 0) {
    Clear(rule, dev, st, 0, &ref, ctx);
  }
}

void RulesEngine::EvaluateRate(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                               const Reading& reading, const v1::EventRef& ref, Context& ctx) {
  std::optional<double> v = reading.Get(rule.metric);
  if (!v) return;
  st.window.emplace_back(now_, *v);
  std::erase_if(st.window, [&](const auto& p) { return p.first < now_ - rule.window; });
  double lo = *v;
  double hi = *v;
  for (const auto& [t, x] : st.window) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  const v1::RateOfChangeRule& r = rule.rule->rate_of_change();
  double change = 0;
  switch (r.direction()) {
    case v1::CHANGE_DIRECTION_RISE:
      change = *v - lo;
      break;
    case v1::CHANGE_DIRECTION_FALL:
      change = hi - *v;
      break;
    default:
      change = std::max(*v - lo, hi - *v);
      break;
  }
  if (!st.active && change >= r.change_at_least()) {
    st.readings.assign(1, ref);
    Raise(rule, dev, st, rule.metric.name(), change, r.change_at_least(), ctx);
  } else if (st.active && change <= r.clear_at_most()) {
    Clear(rule, dev, st, change, &ref, ctx);
  }
}

void RulesEngine::EvaluateStuck(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                                const Reading& reading, const v1::EventRef& ref, Context& ctx) {
  std::optional<double> v = reading.Get(rule.metric);
  if (!v) return;
  const Truth only = rule.only_while.empty() ? Truth::kTrue : rule.only_while.Evaluate(reading);
  if (only != Truth::kTrue) {
    st.run_valid = false;
    if (st.active && only == Truth::kFalse) Clear(rule, dev, st, *v, &ref, ctx);
    return;
  }
  const v1::StuckRule& r = rule.rule->stuck();
  if (!st.run_valid || std::abs(*v - st.run_value) > r.tolerance()) {
    if (st.active) Clear(rule, dev, st, *v, &ref, ctx);
    st.run_valid = true;
    st.run_value = *v;
    st.run_start = now_;
    st.run_count = 1;
    st.readings.assign(1, ref);
    return;
  }
  ++st.run_count;
  if (st.readings.size() < kMaxAlertReadings) st.readings.push_back(ref);
  if (!st.active && st.run_count >= r.min_readings() && now_ - st.run_start >= rule.min_duration) {
    Raise(rule, dev, st, rule.metric.name(), *v, r.tolerance(), ctx);
  }
}

void RulesEngine::Raise(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                        std::string metric, double value, double threshold, Context& ctx) {
  st.active = true;
  st.pending = false;
  st.clearing = false;
  ++st.memory->alerts;
  st.alert_id = AlertId(rule.rule->id(), dev.cold->key, st.memory->alerts);
  ++counters_.alerts_raised;
  v1::Event e;
  e.set_stream_id(absl::StrFormat("alert/%s", st.alert_id));
  v1::AlertRaised* a = e.mutable_alert_raised();
  a->set_alert_id(st.alert_id);
  a->set_device_id(dev.cold->key);
  a->set_rule_id(rule.rule->id());
  a->set_severity(rule.rule->severity());
  a->set_metric(metric);
  a->set_value(value);
  a->set_threshold(threshold);
  a->set_message(
      absl::StrFormat("%s: %s %g (threshold %g)",
                      rule.rule->description().empty() ? rule.rule->id() : rule.rule->description(),
                      metric, value, threshold));
  for (const v1::EventRef& r : st.readings) *a->add_readings() = r;
  if (!dev.cold->grid.grid_code().empty()) *a->mutable_grid() = dev.cold->grid;
  const std::string alert_id = st.alert_id;
  Emit(dev.partition, std::move(e), absl::StrFormat("rules/alert/%s/raised", alert_id), ctx);
  st.readings.clear();

  CountForCompounds(rule, dev, /*raised=*/true, ctx);

  if (!rule.rule->has_case_() || !rule.rule->case_().open_case()) return;
  auto open = cases_.find(st.memory->open_case);
  if (st.memory->open_case.empty() || open == cases_.end()) {
    OpenCase(rule, dev, st, ctx);
    return;
  }
  // One open case per device and rule: a re-trigger joins it.
  const std::string case_id = st.memory->open_case;
  const kernel::Partition partition = open->second->partition;
  {
    v1::Event link;
    link.set_stream_id(CaseStream(case_id));
    v1::CaseLinked* l = link.mutable_case_linked();
    l->set_case_id(case_id);
    l->set_alert_id(alert_id);
    *l->mutable_event() = ctx.cause_ref;
    ++counters_.cases_linked;
    Emit(partition, std::move(link), absl::StrFormat("rules/case/%s/link/%s", case_id, alert_id),
         ctx);
  }
  open = cases_.find(case_id);
  if (open == cases_.end() || open->second->view.stage() != v1::CASE_STAGE_HANDLED) return;
  // Raised again while the rule waited to verify the handling: verification fails and
  // the case goes back to its department with a re-work ticket.
  const v1::CaseView& view = open->second->view;
  v1::Event fail;
  fail.set_stream_id(CaseStream(case_id));
  v1::CaseVerified* v = fail.mutable_case_verified();
  v->set_case_id(case_id);
  v->set_passed(false);
  v->set_note(absl::StrFormat("rule %s raised alert %s again before %s stayed normal for %s",
                              rule.rule->id(), alert_id, dev.cold->key,
                              absl::FormatDuration(rule.verification_window)));
  v->set_ticket_id(projections::TicketId(case_id, view.ticket_ids_size() + 1));
  Emit(partition, std::move(fail),
       absl::StrFormat("rules/case/%s/verified/%d", case_id, view.history_size()), ctx);
}

void RulesEngine::Clear(const CompiledRule& rule, DeviceState& dev, RuleState& st, double value,
                        const v1::EventRef* reading, Context& ctx) {
  st.active = false;
  st.clearing = false;
  st.memory->cleared_at = ctx.time;
  ++counters_.alerts_cleared;
  v1::Event e;
  e.set_stream_id(absl::StrFormat("alert/%s", st.alert_id));
  v1::AlertCleared* c = e.mutable_alert_cleared();
  c->set_alert_id(st.alert_id);
  c->set_device_id(dev.cold->key);
  c->set_rule_id(rule.rule->id());
  c->set_value(value);
  if (reading != nullptr) *c->mutable_reading() = *reading;
  Emit(dev.partition, std::move(e), absl::StrFormat("rules/alert/%s/cleared", st.alert_id), ctx);
  CountForCompounds(rule, dev, /*raised=*/false, ctx);
  if (!st.memory->open_case.empty()) {
    auto it = cases_.find(st.memory->open_case);
    if (it != cases_.end()) MaybeScheduleVerification(*it->second, ctx);
  }
}

void RulesEngine::CountForCompounds(const CompiledRule& rule, const DeviceState& dev, bool raised,
                                    Context& ctx) {
  if (dev.cold->grid.grid_code().empty()) return;
  for (int index : rules_->CompoundsCounting(rule.index)) {
    const CompiledRule& compound = rules_->rules()[index];
    const std::string key = absl::StrFormat("grid/%s", dev.cold->grid.grid_code());
    DeviceState& grid = Device(key);
    if (grid.cold->grid.grid_code().empty()) {
      grid.cold->grid = dev.cold->grid;
      grid.partition = dev.partition;
    }
    RuleState& st = StateOf(grid, index);
    if (!raised) {
      st.active_sources = std::max(0, st.active_sources - 1);
      if (st.active && st.active_sources == 0) Clear(compound, grid, st, 0, nullptr, ctx);
      continue;
    }
    ++st.active_sources;
    st.recent.emplace_back(ctx.time, dev.cold->key);
    std::erase_if(st.recent, [&](const auto& p) { return p.first < ctx.time - compound.window; });
    std::vector<std::string> distinct;
    for (const auto& [t, d] : st.recent) {
      if (std::find(distinct.begin(), distinct.end(), d) == distinct.end()) distinct.push_back(d);
    }
    if (!st.active && distinct.size() >= compound.rule->grid_compound().min_devices()) {
      st.readings.assign(1, ctx.cause_ref);
      Raise(compound, grid, st, "devices_alerting", static_cast<double>(distinct.size()),
            compound.rule->grid_compound().min_devices(), ctx);
    }
  }
}

void RulesEngine::OpenCase(const CompiledRule& rule, DeviceState& dev, RuleState& st,
                           Context& ctx) {
  const v1::CasePolicy& policy = rule.rule->case_();
  const std::string case_id = CaseIdFor(rule.rule->id(), dev.cold->key, st.memory->alerts);
  st.memory->open_case = case_id;
  ++counters_.cases_opened;
  {
    v1::Event e;
    e.set_stream_id(CaseStream(case_id));
    v1::CaseOpened* o = e.mutable_case_opened();
    o->set_case_id(case_id);
    o->set_source(v1::CASE_SOURCE_IOT_RULE);
    *o->mutable_category() = policy.category();
    o->set_device_id(dev.cold->key);
    o->set_rule_id(rule.rule->id());
    o->set_alert_id(st.alert_id);
    if (!dev.cold->grid.grid_code().empty()) *o->mutable_grid() = dev.cold->grid;
    if (dev.cold->registration.has_location())
      *o->mutable_location() = dev.cold->registration.location();
    o->set_severity(rule.rule->severity());
    o->set_department(policy.department());
    o->set_dispatch_level(policy.dispatch_level());
    *o->mutable_deadlines() = policy.deadlines();
    o->set_auto_register(policy.auto_register());
    *o->mutable_verification_window() = policy.verification_window();
    o->mutable_originator()->set_code(absl::StrFormat("rule/%s", rule.rule->id()));
    o->set_description(absl::StrFormat(
        "%s on %s%s", rule.rule->description().empty() ? rule.rule->id() : rule.rule->description(),
        dev.cold->key, dev.registered ? "" : " (unregistered device)"));
    Emit(dev.partition, std::move(e), absl::StrFormat("rules/case/%s/opened", case_id), ctx);
  }
  if (!policy.auto_register()) return;
  auto it = cases_.find(case_id);
  if (it == cases_.end()) return;
  {
    v1::Event e;
    e.set_stream_id(CaseStream(case_id));
    v1::CaseRegistered* r = e.mutable_case_registered();
    r->set_case_id(case_id);
    if (std::optional<v1::Deadline> next =
            projections::StageDeadline(policy.deadlines(), v1::CASE_STAGE_REGISTERED, ctx.time)) {
      *r->mutable_next_deadline() = *std::move(next);
    }
    Emit(dev.partition, std::move(e), absl::StrFormat("rules/case/%s/registered", case_id), ctx);
  }
  if (!policy.auto_dispatch()) return;
  v1::Event e;
  e.set_stream_id(CaseStream(case_id));
  v1::CaseDispatched* d = e.mutable_case_dispatched();
  d->set_case_id(case_id);
  d->set_department(policy.department());
  d->set_level(policy.dispatch_level());
  d->set_ticket_id(projections::TicketId(case_id, 1));
  if (std::optional<v1::Deadline> next =
          projections::StageDeadline(policy.deadlines(), v1::CASE_STAGE_DISPATCHED, ctx.time)) {
    *d->mutable_next_deadline() = *std::move(next);
  }
  Emit(dev.partition, std::move(e), absl::StrFormat("rules/case/%s/dispatched/1", case_id), ctx);
}

void RulesEngine::OnReported(const v1::Event& event, Context& ctx) {
  const v1::CaseReported& report = event.case_reported();
  if (cases_.contains(report.case_id())) return;  // Seen already (a replayed report).
  const std::string link_key =
      absl::StrFormat("%s|%s", report.grid().grid_code(), report.category().code());
  if (rules_ != nullptr && rules_->rule_set().has_report_linking() &&
      !report.grid().grid_code().empty()) {
    const v1::ReportLinking& linking = rules_->rule_set().report_linking();
    auto open = open_by_grid_category_.find(link_key);
    if (open != open_by_grid_category_.end()) {
      for (const std::string& target : open->second) {
        auto it = cases_.find(target);
        if (it == cases_.end()) continue;
        const v1::CaseView& view = it->second->view;
        if (view.history_size() == 0) continue;
        const absl::Time opened = kernel::FromTimestamp(view.history(0).time());
        if (now_ - opened > kernel::FromDurationProto(linking.window())) continue;
        if (linking.max_distance_m() > 0 && view.has_location() && report.has_location() &&
            DistanceMeters(view.location(), report.location()) > linking.max_distance_m()) {
          continue;
        }
        const std::string into = target;  // Emit may change the list.
        v1::Event e;
        e.set_stream_id(CaseStream(into));
        v1::CaseLinked* l = e.mutable_case_linked();
        l->set_case_id(into);
        l->set_reported_case_id(report.case_id());
        *l->mutable_event() = ctx.cause_ref;
        ++counters_.cases_linked;
        Emit(it->second->partition, std::move(e),
             absl::StrFormat("rules/case/%s/link/%s", into, report.case_id()), ctx);
        // The report's own stream says where it went: it will never be opened itself.
        v1::Event own;
        own.set_stream_id(CaseStream(report.case_id()));
        v1::CaseLinked* o = own.mutable_case_linked();
        o->set_case_id(report.case_id());
        o->set_into_case_id(into);
        *o->mutable_event() = ctx.cause_ref;
        Emit(kernel::Partition(event.partition()), std::move(own),
             absl::StrFormat("rules/case/%s/linked-into/%s", report.case_id(), into), ctx);
        return;
      }
    }
  }
  // Track the report, then open it with the policy of its category.
  ApplyToCase(event, ctx);
  const v1::CategoryPolicy* policy =
      rules_ != nullptr ? rules_->Category(report.category().code()) : nullptr;
  v1::Event e;
  e.set_stream_id(CaseStream(report.case_id()));
  v1::CaseOpened* o = e.mutable_case_opened();
  o->set_case_id(report.case_id());
  o->set_source(report.source());
  *o->mutable_category() = report.category();
  *o->mutable_grid() = report.grid();
  if (report.has_location()) *o->mutable_location() = report.location();
  o->set_severity(v1::SEVERITY_MINOR);
  o->set_dispatch_level(DispatchLevelFor(report.source()));
  if (policy != nullptr) {
    o->set_department(policy->department());
    *o->mutable_deadlines() = policy->deadlines();
  } else if (rules_ != nullptr) {
    *o->mutable_deadlines() = rules_->rule_set().default_deadlines();
  }
  *o->mutable_originator() = report.originator();
  o->set_description(report.description());
  ++counters_.cases_opened;
  Emit(kernel::Partition(event.partition()), std::move(e),
       absl::StrFormat("rules/case/%s/opened", report.case_id()), ctx);
}

void RulesEngine::EmitOverdue(CaseTrack& track, v1::OverdueLevel level, Context& ctx) {
  const v1::CaseView& view = track.view;
  if (view.overdue() >= level) return;
  const std::string case_id = view.case_id();
  v1::Event e;
  v1::CaseOverdue* o = e.mutable_case_overdue();
  o->set_case_id(case_id);
  o->set_stage(view.stage());
  o->set_level(level);
  *o->mutable_due_time() = view.deadline().due_time();
  e.set_stream_id(CaseStream(case_id));
  ++counters_.overdue;
  Emit(track.partition, std::move(e),
       absl::StrFormat("rules/case/%s/overdue/%d/%d", case_id, view.history_size(),
                       static_cast<int>(level)),
       ctx);
}

void RulesEngine::OnCaseEvent(const v1::Event& event, Context& ctx) {
  if (event.payload_case() == v1::Event::kCaseOpened) return;  // Only the engine opens.
  if (event.stream_id().rfind(projections::kCaseStreamPrefix, 0) != 0) return;
  // A command does not move stage time (its time is the clock of whoever acted), so its
  // stage's deadline may have passed in its own time while no reading or tick has
  // carried stage time there yet. The lights the case earned first come first, each at
  // its due time, exactly as the timers would have lit them: a case handled after its
  // deadline is never "closed on time".
  auto it = cases_.find(event.stream_id().substr(projections::kCaseStreamPrefix.size()));
  if (it != cases_.end() && it->second->view.has_deadline()) {
    CaseTrack& track = *it->second;
    const absl::Time acted = kernel::FromTimestamp(event.event_time());
    const absl::Time due = kernel::FromTimestamp(track.view.deadline().due_time());
    std::optional<absl::Duration> allowance =
        projections::StageAllowance(track.view.deadlines(), track.view.stage());
    Context late = ctx;
    if (due <= acted) {
      late.time = due;
      EmitOverdue(track, v1::OVERDUE_LEVEL_YELLOW, late);
    }
    if (allowance && due + *allowance <= acted) {
      late.time = due + *allowance;
      EmitOverdue(track, v1::OVERDUE_LEVEL_RED, late);
    }
  }
  ApplyToCase(event, ctx);
}

void RulesEngine::Emit(kernel::Partition partition, v1::Event event, std::string key,
                       Context& ctx) {
  event.set_partition(partition.value());
  kernel::SetTimestamp(ctx.time, event.mutable_event_time());
  v1::Provenance* p = event.mutable_provenance();
  p->set_stage(kRulesStage);
  p->set_idempotency_key(std::move(key));
  *p->mutable_caused_by() = ctx.cause_ref;
  const bool is_case = IsCasePayload(event.payload_case());
  ctx.out->push_back(Derived{partition, std::move(event)});
  if (is_case) {
    const v1::Event copy = ctx.out->back().event;
    ApplyToCase(copy, ctx);
  }
}

void RulesEngine::ApplyToCase(const v1::Event& event, Context& ctx) {
  const std::string case_id(event.stream_id().substr(projections::kCaseStreamPrefix.size()));
  auto it = cases_.find(case_id);
  if (it == cases_.end()) {
    if (event.payload_case() != v1::Event::kCaseOpened &&
        event.payload_case() != v1::Event::kCaseReported) {
      return;  // Not a case the engine tracks (closed, or linked into another).
    }
    it = cases_.emplace(case_id, std::make_unique<CaseTrack>()).first;
    it->second->partition = kernel::Partition(event.partition());
  }
  CaseTrack& track = *it->second;
  const int entries = track.view.history_size();
  const std::string old_deadline =
      track.view.has_deadline() ? track.view.deadline().SerializeAsString() : std::string();
  if (!projections::ApplyCaseEvent(event, &track.view).ok()) return;
  if (event.has_case_opened()) {
    const v1::CaseOpened& o = event.case_opened();
    track.rule_id = o.rule_id();
    track.device_key = o.device_id();
    track.verification_window = kernel::FromDurationProto(o.verification_window());
    if (!o.grid().grid_code().empty() && track.link_key.empty()) {
      track.link_key = absl::StrFormat("%s|%s", o.grid().grid_code(), o.category().code());
      open_by_grid_category_[track.link_key].push_back(case_id);
    }
  }
  if (event.has_case_relocated()) {
    // Reports about the case's new place join it from now on; those about the old one no
    // longer do.
    const std::string key =
        track.view.grid().grid_code().empty()
            ? std::string()
            : absl::StrFormat("%s|%s", track.view.grid().grid_code(), track.view.category().code());
    if (key != track.link_key) {
      if (auto old = open_by_grid_category_.find(track.link_key);
          old != open_by_grid_category_.end()) {
        std::erase(old->second, case_id);
        if (old->second.empty()) open_by_grid_category_.erase(old);
      }
      track.link_key = key;
      if (!key.empty()) open_by_grid_category_[key].push_back(case_id);
    }
  }
  // A dispatch, and a failed verification, send a ticket to the department.
  std::string ticket_id;
  if (event.has_case_dispatched()) ticket_id = event.case_dispatched().ticket_id();
  if (event.has_case_verified() && !event.case_verified().passed()) {
    ticket_id = event.case_verified().ticket_id();
  }
  const kernel::Partition partition = track.partition;
  if (!ticket_id.empty()) {
    const v1::CaseView& view = track.view;
    v1::Event e;
    e.set_stream_id(absl::StrFormat("%s%s", projections::kTicketStreamPrefix, ticket_id));
    v1::TicketIssued* t = e.mutable_ticket_issued();
    t->set_ticket_id(ticket_id);
    t->set_case_id(case_id);
    t->set_department(view.dispatched_department().empty() ? view.department()
                                                           : view.dispatched_department());
    t->set_level(view.dispatched_level() == v1::GRID_LEVEL_UNSPECIFIED ? view.level()
                                                                       : view.dispatched_level());
    *t->mutable_category() = view.category();
    if (view.has_grid()) *t->mutable_grid() = view.grid();
    if (view.has_location()) *t->mutable_location() = view.location();
    t->set_summary(view.description());
    if (view.has_deadline()) *t->mutable_due_time() = view.deadline().due_time();
    ++counters_.tickets;
    Emit(partition, std::move(e), absl::StrFormat("rules/ticket/%s", ticket_id), ctx);
  }
  it = cases_.find(case_id);
  if (it == cases_.end()) return;
  CaseTrack& again = *it->second;
  const std::string new_deadline =
      again.view.has_deadline() ? again.view.deadline().SerializeAsString() : std::string();
  // A new stage, or new deadlines for the current one (a report being opened).
  if (again.view.history_size() == entries && new_deadline == old_deadline) return;
  if (again.view.stage() == v1::CASE_STAGE_CLOSED) {
    if (!again.link_key.empty()) {
      auto open = open_by_grid_category_.find(again.link_key);
      if (open != open_by_grid_category_.end()) {
        std::erase(open->second, case_id);
        if (open->second.empty()) open_by_grid_category_.erase(open);
      }
    }
    auto dev = devices_.find(again.device_key);
    if (dev != devices_.end()) {
      for (RuleMemory& m : dev->second.cold->memory) {
        if (m.open_case == case_id) m.open_case.clear();
      }
    }
    cases_.erase(it);
    return;
  }
  ScheduleCaseTimers(again);
  MaybeScheduleVerification(again, ctx);
}

void RulesEngine::ScheduleCaseTimers(CaseTrack& track) {
  const v1::CaseView& view = track.view;
  if (!view.has_deadline()) return;
  std::optional<absl::Duration> allowance =
      projections::StageAllowance(view.deadlines(), view.stage());
  if (!allowance) return;
  const absl::Time due = kernel::FromTimestamp(view.deadline().due_time());
  AddTimer({due, kOverdue, view.case_id(), view.history_size(), v1::OVERDUE_LEVEL_YELLOW});
  AddTimer(
      {due + *allowance, kOverdue, view.case_id(), view.history_size(), v1::OVERDUE_LEVEL_RED});
}

void RulesEngine::MaybeScheduleVerification(CaseTrack& track, Context& ctx) {
  const v1::CaseView& view = track.view;
  if (view.stage() != v1::CASE_STAGE_HANDLED || view.source() != v1::CASE_SOURCE_IOT_RULE) {
    return;
  }
  absl::Time cleared_at = absl::InfinitePast();
  auto dev = devices_.find(track.device_key);
  if (dev != devices_.end()) {
    const RuleState* st = FindState(dev->second, track.rule_id);
    if (st != nullptr && st->active) return;  // Wait for the alert to clear.
    cleared_at = MemoryOf(dev->second, track.rule_id).cleared_at;
  }
  const absl::Time from =
      std::max({kernel::FromTimestamp(view.stage_time()), cleared_at, ctx.time});
  AddTimer({from + track.verification_window, kVerify, view.case_id(), view.history_size(), 0});
}

void RulesEngine::OnRuleset(const v1::Event& event, Context& ctx) {
  const v1::RulesetActivated& activated = event.ruleset_activated();
  absl::StatusOr<std::unique_ptr<CompiledRuleSet>> compiled = CompiledRuleSet::Compile(activated);
  if (!compiled.ok()) {
    // The log holds it, so every replay meets it again: say so loudly, keep the rules in
    // force, and count it (RulesStageStats, `cityops replay`).
    ++counters_.rejected_rule_sets;
    rejected_.push_back({activated.name(), activated.sha256(),
                         kernel::EventPosition{kernel::Partition(event.partition()),
                                               kernel::Sequence(event.sequence())},
                         std::string(compiled.status().message())});
    spdlog::error(
        "rules: rule set '{}' (sha256 {}) activated at {}/{} does not compile and is ignored; "
        "the rules in force stay active: {}",
        activated.name(), activated.sha256(), event.partition(), event.sequence(),
        std::string(compiled.status().message()));
    return;
  }
  std::unique_ptr<CompiledRuleSet> next = *std::move(compiled);
  rules_position_ = {kernel::Partition(event.partition()), kernel::Sequence(event.sequence())};
  rules_sha256_ = activated.sha256();
  // carry[i]: the index in `next` of old rule i if its definition is unchanged, else -1.
  std::vector<int> carry(rules_ == nullptr ? 0 : rules_->rules().size(), -1);
  if (rules_ != nullptr) {
    for (const CompiledRule& old : rules_->rules()) {
      if (std::optional<int> now = next->IndexOf(old.rule->id());
          now && google::protobuf::util::MessageDifferencer::Equals(*next->rules()[*now].rule,
                                                                    *old.rule)) {
        carry[old.index] = *now;
      }
    }
  }
  std::vector<std::string> keys;
  keys.reserve(devices_.size());
  for (const auto& [key, dev] : devices_) keys.push_back(key.str());
  std::sort(keys.begin(), keys.end());  // Deterministic order of the clears below.
  // With the old rules still in force, end the alerts of rules that changed or went away
  // as their own clear would: grid compounds counting them notice, and IoT cases waiting
  // for them to clear schedule their verification.
  for (const std::string& key : keys) {
    DeviceState& dev = devices_.find(key)->second;
    for (auto& [i, st] : dev.cold->rules) {
      if (carry[i] < 0 && st.active) Clear(rules_->rules()[i], dev, st, 0, nullptr, ctx);
    }
  }
  // Clearing may have added grid pseudo-devices.
  if (keys.size() != devices_.size()) {
    keys.clear();
    for (const auto& [key, dev] : devices_) keys.push_back(key.str());
    std::sort(keys.begin(), keys.end());
  }
  // Timers that name rule indexes are re-made below for the carried states.
  for (auto t = timers_.begin(); t != timers_.end();) {
    t = t->kind <= kAbsence ? timers_.erase(t) : std::next(t);
  }
  for (const std::string& key : keys) {
    DeviceState& dev = devices_.find(key)->second;
    std::list<std::pair<int, RuleState>> old = std::move(dev.cold->rules);
    dev.cold->rules.clear();
    dev.by_slot.clear();
    dev.idle.clear();
    // A changed rule starts afresh; its memory (alert count, open case) stays.
    for (auto& [i, state] : old) {
      if (carry[i] >= 0) dev.cold->rules.emplace_back(carry[i], std::move(state));
    }
  }
  rules_ = std::move(next);
  // Kind indexes are the new table's.
  for (auto& [key, dev] : devices_) dev.kind = KindIndex(dev.cold->kind_id);
  for (const std::string& key : keys) {
    DeviceState& dev = devices_.find(key)->second;
    for (auto& [i, st] : dev.cold->rules) {
      const CompiledRule& rule = rules_->rules()[i];
      if (st.pending && rule.hold > absl::ZeroDuration()) {
        AddTimer({st.pending_since + rule.hold, kRaiseHold, key, static_cast<int64_t>(i), 0});
      }
      if (st.clearing && rule.clear_hold > absl::ZeroDuration()) {
        AddTimer(
            {st.clearing_since + rule.clear_hold, kClearHold, key, static_cast<int64_t>(i), 0});
      }
      if (st.absence_due != absl::InfinitePast()) {
        AddTimer({st.absence_due, kAbsence, key, static_cast<int64_t>(i), 0});
      }
    }
  }
}

namespace {

using kernel::TimeFromExactNanos;

void SetRef(kernel::EventPosition p, v1::EventRef* r) {
  r->set_partition(p.partition.value());
  r->set_sequence(p.sequence.value());
}

kernel::EventPosition FromRef(const v1::EventRef& r) {
  return {kernel::Partition(r.partition()), kernel::Sequence(r.sequence())};
}

}  // namespace

absl::Status RulesEngine::ExportState(v1::RulesEngineState* out) const {
  out->Clear();
  bool exact = true;
  auto ns = [&exact](absl::Time t) {
    int64_t v = 0;
    if (!kernel::TimeToExactNanos(t, &v)) exact = false;
    return v;
  };
  if (rules_ != nullptr) {
    SetRef(rules_position_, out->mutable_rule_set());
    out->set_rule_set_sha256(rules_sha256_);
  }
  std::vector<const DeviceState*> devices;
  devices.reserve(devices_.size());
  for (const auto& [key, dev] : devices_) devices.push_back(&dev);
  std::sort(devices.begin(), devices.end(),
            [](const DeviceState* a, const DeviceState* b) { return a->cold->key < b->cold->key; });
  for (const DeviceState* dev : devices) {
    v1::EngineDevice* d = out->add_devices();
    d->set_key(dev->cold->key);
    if (const catalogue::Kind* k = dev->kind < 0 ? nullptr : &kinds().kinds()[dev->kind]) {
      d->set_kind(k->typed);
    }
    d->set_kind_id(dev->cold->kind_id);
    d->set_registered(dev->registered);
    d->set_partition(dev->partition.value());
    d->set_last_seen_ns(ns(dev->last_seen));
    for (const RuleMemory& m : dev->cold->memory) {
      v1::EngineRuleMemory* pm = d->add_memory();
      pm->set_rule_id(m.rule_id);
      pm->set_alerts(m.alerts);
      pm->set_open_case(m.open_case);
      pm->set_cleared_at_ns(ns(m.cleared_at));
    }
    for (const auto& [index, st] : dev->cold->rules) {
      v1::EngineRuleState* r = d->add_rules();
      r->set_rule_index(index);
      uint32_t memory_index = 0;
      for (const RuleMemory& m : dev->cold->memory) {
        if (&m == st.memory) break;
        ++memory_index;
      }
      r->set_memory_index(memory_index);
      r->set_active(st.active);
      r->set_alert_id(st.alert_id);
      r->set_pending(st.pending);
      r->set_pending_since_ns(ns(st.pending_since));
      for (const v1::EventRef& ref : st.readings) *r->add_readings() = ref;
      r->set_clearing(st.clearing);
      r->set_clearing_since_ns(ns(st.clearing_since));
      r->set_clearing_value(st.clearing_value);
      *r->mutable_clearing_reading() = st.clearing_reading;
      r->set_metric(st.metric);
      r->set_value(st.value);
      r->set_threshold(st.threshold);
      for (const auto& [t, v] : st.window) {
        v1::EngineTimedValue* w = r->add_window();
        w->set_time_ns(ns(t));
        w->set_value(v);
      }
      r->set_run_valid(st.run_valid);
      r->set_run_value(st.run_value);
      r->set_run_start_ns(ns(st.run_start));
      r->set_run_count(st.run_count);
      r->set_absence_due_ns(ns(st.absence_due));
      for (const auto& [t, device] : st.recent) {
        v1::EngineTimedDevice* e = r->add_recent();
        e->set_time_ns(ns(t));
        e->set_device(device);
      }
      r->set_active_sources(st.active_sources);
    }
    for (const RuleState* slot : dev->by_slot) {
      int32_t at = -1;
      int32_t i = 0;
      for (const auto& [index, st] : dev->cold->rules) {
        if (&st == slot) at = i;
        ++i;
      }
      d->add_slots(at);
    }
    d->mutable_idle()->assign(dev->idle.begin(), dev->idle.end());
    *d->mutable_registration() = dev->cold->registration;
    *d->mutable_grid() = dev->cold->grid;
  }
  std::vector<std::pair<std::string_view, const CaseTrack*>> cases;
  cases.reserve(cases_.size());
  for (const auto& [id, track] : cases_) cases.emplace_back(id, track.get());
  std::sort(cases.begin(), cases.end());
  for (const auto& [id, track] : cases) {
    v1::EngineCase* c = out->add_cases();
    c->set_case_id(std::string(id));
    *c->mutable_view() = track->view;
    c->set_partition(track->partition.value());
    c->set_rule_id(track->rule_id);
    c->set_device_key(track->device_key);
    const int64_t window = absl::ToInt64Nanoseconds(track->verification_window);
    if (absl::Nanoseconds(window) != track->verification_window) exact = false;
    c->set_verification_window_ns(window);
    c->set_link_key(track->link_key);
  }
  std::vector<const std::pair<const std::string, std::vector<std::string>>*> links;
  for (const auto& entry : open_by_grid_category_) links.push_back(&entry);
  std::sort(links.begin(), links.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  for (const auto* entry : links) {
    v1::EngineLinkList* l = out->add_open_by_grid_category();
    l->set_key(entry->first);
    for (const std::string& id : entry->second) l->add_case_ids(id);
  }
  for (const Timer& t : timers_) {
    v1::EngineTimer* pt = out->add_timers();
    pt->set_due_ns(ns(t.due));
    pt->set_kind(t.kind);
    pt->set_key(t.key);
    pt->set_a(t.a);
    pt->set_b(t.b);
    SetRef(t.cause, pt->mutable_cause());
  }
  SetRef(cause_, out->mutable_cause());
  out->set_now_ns(ns(now_));
  v1::EngineCountersState* c = out->mutable_counters();
  c->set_inputs(counters_.inputs);
  c->set_readings(counters_.readings);
  c->set_alerts_raised(counters_.alerts_raised);
  c->set_alerts_cleared(counters_.alerts_cleared);
  c->set_cases_opened(counters_.cases_opened);
  c->set_cases_linked(counters_.cases_linked);
  c->set_tickets(counters_.tickets);
  c->set_overdue(counters_.overdue);
  c->set_auto_closed(counters_.auto_closed);
  c->set_rejected_rule_sets(counters_.rejected_rule_sets);
  for (const RejectedRuleSet& r : rejected_) {
    v1::EngineRejectedRuleSet* pr = out->add_rejected();
    pr->set_name(r.name);
    pr->set_sha256(r.sha256);
    SetRef(r.position, pr->mutable_position());
    pr->set_error(r.error);
  }
  if (!exact) {
    return absl::FailedPreconditionError(
        "rules engine state holds a time that is not a whole number of nanoseconds since the "
        "Unix epoch, so a snapshot could not restore it exactly; no snapshot is written (the "
        "stage replays the log on restart instead)");
  }
  return absl::OkStatus();
}

absl::Status RulesEngine::RestoreState(const v1::RulesEngineState& state,
                                       const v1::Event* ruleset_event) {
  auto bad = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("rules engine snapshot is inconsistent: ", what));
  };
  std::unique_ptr<CompiledRuleSet> rules;
  kernel::EventPosition rules_position{};
  if (state.has_rule_set()) {
    rules_position = FromRef(state.rule_set());
    if (ruleset_event == nullptr || !ruleset_event->has_ruleset_activated() ||
        ruleset_event->partition() != state.rule_set().partition() ||
        ruleset_event->sequence() != state.rule_set().sequence()) {
      return absl::DataLossError(absl::StrFormat(
          "rules engine snapshot names the rule set activated at %d/%d, but that event is not a "
          "RulesetActivated",
          state.rule_set().partition(), state.rule_set().sequence()));
    }
    const v1::RulesetActivated& activated = ruleset_event->ruleset_activated();
    if (activated.sha256() != state.rule_set_sha256()) {
      return absl::DataLossError(absl::StrFormat(
          "rules engine snapshot names rule set sha256 %s at %d/%d, but the log holds %s there",
          state.rule_set_sha256(), state.rule_set().partition(), state.rule_set().sequence(),
          activated.sha256()));
    }
    absl::StatusOr<std::unique_ptr<CompiledRuleSet>> compiled = CompiledRuleSet::Compile(activated);
    if (!compiled.ok()) {
      return absl::DataLossError(absl::StrFormat(
          "rules engine snapshot names the rule set activated at %d/%d, which no longer "
          "compiles: %s",
          state.rule_set().partition(), state.rule_set().sequence(), compiled.status().message()));
    }
    rules = *std::move(compiled);
  }
  const size_t rule_count = rules == nullptr ? 0 : rules->rules().size();
  projections::DeviceMap<DeviceState> devices;
  devices.reserve(state.devices_size());
  for (const v1::EngineDevice& d : state.devices()) {
    auto [it, inserted] = devices.try_emplace(projections::DeviceKey(d.key()));
    if (!inserted) return bad(absl::StrCat("device ", d.key(), " appears twice"));
    DeviceState& dev = it->second;
    dev.cold->key = d.key();
    dev.cold->kind_id = d.kind_id().empty() ? catalogue::TypedKindId(d.kind()) : d.kind_id();
    dev.kind =
        dev.cold->kind_id.empty() || rules == nullptr ? -1 : KindIndexIn(*rules, dev.cold->kind_id);
    dev.registered = d.registered();
    dev.partition = kernel::Partition(d.partition());
    dev.last_seen = TimeFromExactNanos(d.last_seen_ns());
    std::vector<RuleMemory*> memory;
    for (const v1::EngineRuleMemory& pm : d.memory()) {
      RuleMemory& m = dev.cold->memory.emplace_back();
      m.rule_id = pm.rule_id();
      m.alerts = pm.alerts();
      m.open_case = pm.open_case();
      m.cleared_at = TimeFromExactNanos(pm.cleared_at_ns());
      memory.push_back(&m);
    }
    std::vector<RuleState*> states;
    for (const v1::EngineRuleState& r : d.rules()) {
      if (r.rule_index() < 0 || static_cast<size_t>(r.rule_index()) >= rule_count ||
          r.memory_index() >= memory.size()) {
        return bad(absl::StrCat("a rule state of device ", d.key(), " is out of range"));
      }
      RuleState& st = dev.cold->rules.emplace_back(r.rule_index(), RuleState()).second;
      st.memory = memory[r.memory_index()];
      st.active = r.active();
      st.alert_id = r.alert_id();
      st.pending = r.pending();
      st.pending_since = TimeFromExactNanos(r.pending_since_ns());
      st.readings.assign(r.readings().begin(), r.readings().end());
      st.clearing = r.clearing();
      st.clearing_since = TimeFromExactNanos(r.clearing_since_ns());
      st.clearing_value = r.clearing_value();
      st.clearing_reading = r.clearing_reading();
      st.metric = r.metric();
      st.value = r.value();
      st.threshold = r.threshold();
      for (const v1::EngineTimedValue& w : r.window()) {
        st.window.emplace_back(TimeFromExactNanos(w.time_ns()), w.value());
      }
      st.run_valid = r.run_valid();
      st.run_value = r.run_value();
      st.run_start = TimeFromExactNanos(r.run_start_ns());
      st.run_count = r.run_count();
      st.absence_due = TimeFromExactNanos(r.absence_due_ns());
      for (const v1::EngineTimedDevice& e : r.recent()) {
        st.recent.emplace_back(TimeFromExactNanos(e.time_ns()), e.device());
      }
      st.active_sources = r.active_sources();
      states.push_back(&st);
    }
    if (static_cast<size_t>(d.slots_size()) != d.idle().size()) {
      return bad(absl::StrCat("device ", d.key(), " has ", d.slots_size(), " slots but ",
                              d.idle().size(), " idle flags"));
    }
    for (int i = 0; i < d.slots_size(); ++i) {
      const int32_t at = d.slots(i);
      if (at < -1 || at >= static_cast<int32_t>(states.size())) {
        return bad(absl::StrCat("a slot of device ", d.key(), " is out of range"));
      }
      dev.by_slot.push_back(at < 0 ? nullptr : states[at]);
      dev.idle.push_back(static_cast<uint8_t>(d.idle()[i]));
    }
    dev.cold->registration = d.registration();
    dev.cold->grid = d.grid();
  }
  absl::flat_hash_map<std::string, std::unique_ptr<CaseTrack>> cases;
  cases.reserve(state.cases_size());
  for (const v1::EngineCase& c : state.cases()) {
    auto track = std::make_unique<CaseTrack>();
    track->view = c.view();
    track->partition = kernel::Partition(c.partition());
    track->rule_id = c.rule_id();
    track->device_key = c.device_key();
    track->verification_window = absl::Nanoseconds(c.verification_window_ns());
    track->link_key = c.link_key();
    if (!cases.emplace(c.case_id(), std::move(track)).second) {
      return bad(absl::StrCat("case ", c.case_id(), " appears twice"));
    }
  }
  absl::flat_hash_map<std::string, std::vector<std::string>> open_by_grid_category;
  for (const v1::EngineLinkList& l : state.open_by_grid_category()) {
    open_by_grid_category[l.key()].assign(l.case_ids().begin(), l.case_ids().end());
  }
  std::set<Timer> timers;
  for (const v1::EngineTimer& pt : state.timers()) {
    Timer t{
        TimeFromExactNanos(pt.due_ns()), pt.kind(), pt.key(), pt.a(), pt.b(), FromRef(pt.cause())};
    if (!timers.insert(std::move(t)).second) return bad("a timer appears twice");
  }
  EngineCounters counters;
  const v1::EngineCountersState& c = state.counters();
  counters.inputs = c.inputs();
  counters.readings = c.readings();
  counters.alerts_raised = c.alerts_raised();
  counters.alerts_cleared = c.alerts_cleared();
  counters.cases_opened = c.cases_opened();
  counters.cases_linked = c.cases_linked();
  counters.tickets = c.tickets();
  counters.overdue = c.overdue();
  counters.auto_closed = c.auto_closed();
  counters.rejected_rule_sets = c.rejected_rule_sets();
  std::vector<RejectedRuleSet> rejected;
  for (const v1::EngineRejectedRuleSet& r : state.rejected()) {
    rejected.push_back({r.name(), r.sha256(), FromRef(r.position()), r.error()});
  }

  rules_ = std::move(rules);
  rules_position_ = rules_position;
  rules_sha256_ = state.has_rule_set() ? state.rule_set_sha256() : std::string();
  devices_ = std::move(devices);
  cases_ = std::move(cases);
  open_by_grid_category_ = std::move(open_by_grid_category);
  timers_ = std::move(timers);
  cause_ = FromRef(state.cause());
  now_ = TimeFromExactNanos(state.now_ns());
  counters_ = counters;
  rejected_ = std::move(rejected);
  return absl::OkStatus();
}

}  // namespace cityops::rules
