#include "api/requests.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"

namespace cityops::api {

namespace pb = google::protobuf;

absl::Status Query::CheckNames() const {
  std::set<std::string> known;
  for (const QueryParam& q : route_.query) known.insert(q.name);
  const size_t question = req_.target.find('?');
  if (question == std::string::npos) return absl::OkStatus();
  httplib::Params in_url;
  httplib::detail::parse_query_text(req_.target.substr(question + 1), in_url);
  for (const auto& [name, value] : in_url) {
    if (known.contains(name)) continue;
    std::vector<std::string> names(known.begin(), known.end());
    return absl::InvalidArgumentError(absl::StrFormat(
        "unknown query parameter '%s' for %s %s; %s", name, route_.method, route_.path,
        names.empty() ? std::string("it takes none")
                      : "expected one of: " + absl::StrJoin(names, ", ")));
  }
  return absl::OkStatus();
}

std::string Query::String(const std::string& name) const {
  return req_.has_param(name) ? req_.get_param_value(name) : std::string();
}

absl::StatusOr<std::optional<bool>> Query::Bool(const std::string& name) const {
  if (!req_.has_param(name)) return std::optional<bool>();
  const std::string v = req_.get_param_value(name);
  if (v == "true" || v == "1") return std::optional<bool>(true);
  if (v == "false" || v == "0") return std::optional<bool>(false);
  return absl::InvalidArgumentError(
      absl::StrFormat("query parameter '%s' must be true or false, got '%s'", name, v));
}

absl::StatusOr<uint64_t> Query::Number(const std::string& name, uint64_t fallback, uint64_t min,
                                       uint64_t max) const {
  if (!req_.has_param(name)) return fallback;
  const std::string v = req_.get_param_value(name);
  uint64_t n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < min || n > max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query parameter '%s' must be a whole number from %d to %d, got '%s'", name, min, max, v));
  }
  return n;
}

absl::StatusOr<absl::Time> Query::Time(const std::string& name, absl::Time fallback) const {
  if (!req_.has_param(name)) return fallback;
  const std::string v = req_.get_param_value(name);
  absl::Time t;
  std::string err;
  // absl::ParseTime also takes "infinite-future" and "infinite-past", which are no RFC 3339
  // and would stand for "no bound" where the parameter is meant to set one.
  if (!absl::ParseTime(absl::RFC3339_full, v, &t, &err) || t == absl::InfiniteFuture() ||
      t == absl::InfinitePast()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query parameter '%s' must be an RFC 3339 time such as 2026-09-21T08:00:00Z, got "
        "'%s'",
        name, v));
  }
  return t;
}

absl::StatusOr<int> Query::Enum(const std::string& name, const pb::EnumDescriptor* enum_type,
                                const std::string& prefix) const {
  if (!req_.has_param(name)) return 0;
  const std::string v = req_.get_param_value(name);
  const pb::EnumValueDescriptor* e = enum_type->FindValueByName(prefix + absl::AsciiStrToUpper(v));
  if (e == nullptr || e->number() == 0) {
    std::vector<std::string> allowed;
    for (const QueryParam& q : route_.query) {
      if (q.name == name) allowed = q.values;
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("query parameter '%s' has no value '%s'; use one of: %s", name, v,
                        absl::StrJoin(allowed, ", ")));
  }
  return e->number();
}

absl::StatusOr<size_t> Query::PageSize() const {
  absl::StatusOr<uint64_t> n = Number("page_size", kDefaultPageSize, 1, kMaxPageSize);
  if (!n.ok()) return n.status();
  return static_cast<size_t>(*n);
}

absl::StatusOr<Paging> ParsePaging(const Query& q) {
  Paging out;
  absl::StatusOr<size_t> size = q.PageSize();
  if (!size.ok()) return size.status();
  out.page_size = *size;
  out.page_token = q.String("page_token");
  return out;
}

absl::StatusOr<DeviceListQuery> ParseDeviceListQuery(const Query& q) {
  DeviceListQuery out;
  // A catalogue kind id; the typed kinds also as their enum names (FLOOD_GAUGE,
  // DEVICE_KIND_FLOOD_GAUGE), as before the catalogue. Whether the catalogue in force has
  // the kind is the handler's to check.
  std::string kind = absl::AsciiStrToLower(q.String("kind"));
  if (absl::StartsWith(kind, "device_kind_"))
    kind.erase(0, std::string_view("device_kind_").size());
  const bool well_formed = kind.size() <= 64 && std::all_of(kind.begin(), kind.end(), [](char c) {
                             return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                           });
  if (!well_formed) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query parameter 'kind' must be a device kind's id in the catalogue (snake_case, such "
        "as flood_gauge or gas_detector; GET /api/v1/catalogue lists them), got '%s'",
        q.String("kind")));
  }
  out.filter.kind_id = std::move(kind);
  out.filter.grid_prefix = q.String("grid");
  absl::StatusOr<std::optional<bool>> online = q.Bool("online");
  if (!online.ok()) return online.status();
  out.filter.online = *online;
  absl::StatusOr<std::optional<bool>> unregistered = q.Bool("unregistered");
  if (!unregistered.ok()) return unregistered.status();
  out.filter.unregistered_only = unregistered->value_or(false);
  absl::StatusOr<Paging> paging = ParsePaging(q);
  if (!paging.ok()) return paging.status();
  out.paging = *std::move(paging);
  return out;
}

absl::StatusOr<AlertListQuery> ParseAlertListQuery(const Query& q) {
  AlertListQuery out;
  absl::StatusOr<std::optional<bool>> active = q.Bool("active");
  if (!active.ok()) return active.status();
  out.filter.active_only = active->value_or(false);
  out.filter.device_id = q.String("device");
  out.filter.rule_id = q.String("rule");
  absl::StatusOr<Paging> paging = ParsePaging(q);
  if (!paging.ok()) return paging.status();
  out.paging = *std::move(paging);
  return out;
}

absl::StatusOr<CaseListQuery> ParseCaseListQuery(const Query& q) {
  CaseListQuery out;
  absl::StatusOr<int> stage = q.Enum("stage", v1::CaseStage_descriptor(), "CASE_STAGE_");
  if (!stage.ok()) return stage.status();
  out.filter.stage = static_cast<v1::CaseStage>(*stage);
  absl::StatusOr<int> source = q.Enum("source", v1::CaseSource_descriptor(), "CASE_SOURCE_");
  if (!source.ok()) return source.status();
  out.filter.source = static_cast<v1::CaseSource>(*source);
  absl::StatusOr<int> overdue = q.Enum("overdue", v1::OverdueLevel_descriptor(), "OVERDUE_LEVEL_");
  if (!overdue.ok()) return overdue.status();
  out.filter.overdue = static_cast<v1::OverdueLevel>(*overdue);
  out.filter.grid_prefix = q.String("grid");
  absl::StatusOr<absl::Time> after = q.Time("reported_after", absl::InfinitePast());
  if (!after.ok()) return after.status();
  absl::StatusOr<absl::Time> before = q.Time("reported_before", absl::InfiniteFuture());
  if (!before.ok()) return before.status();
  out.filter.reported_from = *after;
  out.filter.reported_to = *before;
  absl::StatusOr<Paging> paging = ParsePaging(q);
  if (!paging.ok()) return paging.status();
  out.paging = *std::move(paging);
  return out;
}

absl::StatusOr<EventsQuery> ParseEventsQuery(const Query& q) {
  EventsQuery out;
  absl::StatusOr<uint64_t> limit = q.Number("limit", kDefaultPageSize, 1, kMaxPageSize);
  if (!limit.ok()) return limit.status();
  out.limit = *limit;
  out.stream = q.String("stream");
  if (!out.stream.empty()) {
    absl::StatusOr<uint64_t> from = q.Number("from", 1, 1, UINT64_MAX);
    if (!from.ok()) return from.status();
    out.from = *from;
    return out;
  }
  absl::StatusOr<uint64_t> partition = q.Number("partition", 0, 0, UINT32_MAX);
  if (!partition.ok()) return partition.status();
  out.partition = static_cast<uint32_t>(*partition);
  absl::StatusOr<uint64_t> from = q.Number("from", 0, 0, UINT64_MAX);
  if (!from.ok()) return from.status();
  out.from = *from;
  return out;
}

absl::StatusOr<std::optional<projections::EvaluationRequest>> ParseEvaluationQuery(const Query& q,
                                                                                   absl::Time now) {
  bool asked = false;
  for (const char* name : {"from", "to", "by", "scope", "department"}) {
    asked |= !q.String(name).empty();
  }
  if (!asked) return std::nullopt;
  projections::EvaluationRequest request;
  absl::StatusOr<absl::Time> from = q.Time("from", absl::InfinitePast());
  if (!from.ok()) return from.status();
  absl::StatusOr<absl::Time> to = q.Time("to", now);
  if (!to.ok()) return to.status();
  if (*to <= *from) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query parameter 'to' (%s) is not after 'from' (%s): give a period that ends after "
        "it starts",
        q.String("to").empty() ? "now" : q.String("to"), q.String("from")));
  }
  request.from = *from;
  request.to = *to;
  request.by = q.String("by");
  request.scope = q.String("scope");
  request.department = q.String("department");
  return request;
}

absl::Status ParseJsonBody(std::string_view content_type, std::string_view body, pb::Message* out) {
  if (!content_type.empty() && content_type.rfind("application/json", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the request body is %s, but it must be JSON: send 'Content-Type: application/json' "
        "(with curl: -H 'Content-Type: application/json')",
        content_type));
  }
  if (body.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the request needs a JSON body (%s, by the protobuf JSON mapping); send {} for none",
        out->GetDescriptor()->full_name()));
  }
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  pb::util::Status s =
      pb::util::JsonStringToMessage(pb::StringPiece(body.data(), body.size()), out, options);
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the request body is not a valid %s: %s; see /api/v1/openapi.yaml",
                        out->GetDescriptor()->full_name(), std::string(s.message())));
  }
  return absl::OkStatus();
}

namespace {

const std::map<std::string, CaseCommandSpec, std::less<>>& CaseCommandSpecs() {
  using projections::CommandKind;
  static const auto* specs = new std::map<std::string, CaseCommandSpec, std::less<>>{
      {"register", {CommandKind::kRegister, v1::ROLE_OPERATOR, {}}},
      {"dispatch", {CommandKind::kDispatch, v1::ROLE_OPERATOR, {"department", "level"}}},
      {"handle", {CommandKind::kHandle, v1::ROLE_OPERATOR, {"result"}, false}},
      {"verify", {CommandKind::kVerify, v1::ROLE_OPERATOR, {"passed", "note"}}},
      {"close", {CommandKind::kClose, v1::ROLE_OPERATOR, {}}},
      {"urge", {CommandKind::kUrge, v1::ROLE_SUPERVISOR, {"note"}}},
      {"escalate", {CommandKind::kEscalate, v1::ROLE_OPERATOR, {"reason"}}},
  };
  return *specs;
}

}  // namespace

absl::StatusOr<const CaseCommandSpec*> FindCaseCommand(std::string_view name) {
  auto spec = CaseCommandSpecs().find(name);
  if (spec == CaseCommandSpecs().end()) {
    return absl::NotFoundError(absl::StrFormat("there is no case command '%s'; use one of: %s",
                                               name, absl::StrJoin(CaseCommandNames(), ", ")));
  }
  return &spec->second;
}

absl::Status ParseCaseCommandBody(std::string_view name, const CaseCommandSpec& spec,
                                  std::string_view content_type, std::string_view body,
                                  v1::CaseCommandRequest* out) {
  if (absl::Status s = ParseJsonBody(content_type, body, out); !s.ok()) return s;
  // A field the command does not read is a mistake worth telling the client about.
  std::vector<const pb::FieldDescriptor*> set;
  out->GetReflection()->ListFields(*out, &set);
  for (const pb::FieldDescriptor* f : set) {
    if (f->name() == "request_id" || spec.fields.contains(f->name())) continue;
    std::vector<std::string> takes(spec.fields.begin(), spec.fields.end());
    takes.push_back("request_id");
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s does not take '%s'; it takes: %s", name, f->json_name(),
        absl::StrJoin(takes, ", ", [](std::string* o, const std::string& n) {
          o->append(v1::CaseCommandRequest::descriptor()->FindFieldByName(n)->json_name());
        })));
  }
  return absl::OkStatus();
}

absl::Status ParseReportBody(std::string_view content_type, std::string_view body,
                             v1::ReportRequest* out) {
  if (absl::Status s = ParseJsonBody(content_type, body, out); !s.ok()) return s;
  const std::string& grid = out->grid().grid_code();
  if (grid.size() != 15 || !std::all_of(grid.begin(), grid.end(), absl::ascii_isdigit)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("report %s: grid.gridCode '%s' must be the 15 digits of a residential grid",
                        out->case_id(), grid));
  }
  return absl::OkStatus();
}

}  // namespace cityops::api
