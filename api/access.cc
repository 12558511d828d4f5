#include "api/access.h"

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "projections/rules/compile.h"
#include "projections/workflow.h"

namespace cityops::api {

namespace {

constexpr char kRefusalPayload[] = "type.cityops.dev/cityops.api.Refusal";

std::string ShortName(const std::string& full, std::string_view prefix) {
  absl::string_view name = full;
  absl::ConsumePrefix(&name, absl::string_view(prefix.data(), prefix.size()));
  std::string out = absl::AsciiStrToLower(name);
  for (char& c : out) {
    if (c == '_') c = ' ';
  }
  return out;
}

}  // namespace

std::string RoleName(v1::Role role) { return ShortName(v1::Role_Name(role), "ROLE_"); }

std::string_view RefusalLabel(Refusal r) {
  switch (r) {
    case Refusal::kNone:
      return "none";
    case Refusal::kNoToken:
      return "no_token";
    case Refusal::kMalformedHeader:
      return "malformed_header";
    case Refusal::kUnknownToken:
      return "unknown_token";
    case Refusal::kRoleTooLow:
      return "role_too_low";
    case Refusal::kOutsideUnit:
      return "outside_unit";
    case Refusal::kWorkflow:
      return "workflow";
    case Refusal::kRateLimited:
      return "rate_limited";
  }
  return "none";
}

std::string_view RefusalText(Refusal r) {
  switch (r) {
    case Refusal::kNone:
      return "not refused";
    case Refusal::kNoToken:
      return "no token";
    case Refusal::kMalformedHeader:
      return "malformed Authorization header";
    case Refusal::kUnknownToken:
      return "unknown token";
    case Refusal::kRoleTooLow:
      return "role too low";
    case Refusal::kOutsideUnit:
      return "outside the unit";
    case Refusal::kWorkflow:
      return "refused by the case workflow";
    case Refusal::kRateLimited:
      return "rate limited";
  }
  return "not refused";
}

absl::Status WithRefusal(absl::Status status, Refusal r) {
  const std::string_view label = RefusalLabel(r);
  status.SetPayload(kRefusalPayload, absl::Cord(absl::string_view(label.data(), label.size())));
  return status;
}

Refusal RefusalOf(const absl::Status& status) {
  if (const auto mark = status.GetPayload(kRefusalPayload); mark.has_value()) {
    const std::string label(*mark);
    for (Refusal r :
         {Refusal::kNoToken, Refusal::kMalformedHeader, Refusal::kUnknownToken,
          Refusal::kRoleTooLow, Refusal::kOutsideUnit, Refusal::kWorkflow, Refusal::kRateLimited}) {
      if (label == RefusalLabel(r)) return r;
    }
  }
  return status.code() == absl::StatusCode::kPermissionDenied ? Refusal::kWorkflow : Refusal::kNone;
}

AccessPolicy::AccessPolicy(const std::vector<v1::ApiToken>& tokens) {
  for (const v1::ApiToken& t : tokens) {
    v1::Actor actor;
    actor.set_user(t.user());
    actor.set_role(t.role());
    *actor.mutable_unit() = t.unit();
    by_digest_[rules::Sha256Hex(t.token())] = std::move(actor);
  }
}

absl::StatusOr<v1::Actor> AccessPolicy::Authenticate(std::string_view authorization) const {
  if (authorization.empty()) {
    return WithRefusal(absl::UnauthenticatedError(
                           "no token: send the header 'Authorization: Bearer <token>' with a "
                           "token from the daemon's configuration"),
                       Refusal::kNoToken);
  }
  absl::string_view token(authorization.data(), authorization.size());
  if (!absl::ConsumePrefix(&token, "Bearer ") && !absl::ConsumePrefix(&token, "bearer ")) {
    return WithRefusal(
        absl::UnauthenticatedError("the Authorization header must read 'Bearer <token>'"),
        Refusal::kMalformedHeader);
  }
  token = absl::StripAsciiWhitespace(token);
  auto it = by_digest_.find(rules::Sha256Hex(std::string_view(token.data(), token.size())));
  if (it == by_digest_.end()) {
    return WithRefusal(
        absl::UnauthenticatedError("the token is not one of the daemon's configured tokens; ask "
                                   "the operations center for yours"),
        Refusal::kUnknownToken);
  }
  return it->second;
}

absl::Status AccessPolicy::RequireRole(const v1::Actor& actor, v1::Role need,
                                       std::string_view action) {
  if (actor.role() >= need) return absl::OkStatus();
  return WithRefusal(absl::PermissionDeniedError(
                         absl::StrFormat("%s needs the %s role or higher; %s is a %s", action,
                                         RoleName(need), actor.user(), RoleName(actor.role()))),
                     Refusal::kRoleTooLow);
}

absl::Status AccessPolicy::RequireUnitCovers(const v1::Actor& actor, const v1::GridRef& grid,
                                             std::string_view action) {
  if (projections::UnitCovers(actor.unit(), grid)) return absl::OkStatus();
  return WithRefusal(absl::PermissionDeniedError(absl::StrFormat(
                         "%s: grid %s is outside %s's unit (%s); ask a unit that serves it", action,
                         grid.grid_code().empty() ? std::string("(none)") : grid.grid_code(),
                         actor.user(), projections::UnitName(actor.unit()))),
                     Refusal::kOutsideUnit);
}

}  // namespace cityops::api
