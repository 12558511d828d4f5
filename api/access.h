// Access control of the HTTP API: bearer tokens from the configuration, each standing for
// a user with a role and an organizational unit.
//
//   * Reads need at least viewer; case commands and reports need operator; urging needs
//     supervisor (催办 is a supervisor's lever); reloading rules needs admin.
//   * A case command or report is allowed only inside the user's unit: the unit's code
//     must be a prefix of the case's grid code (the city center covers everything).
//     Handle is the exception: who handles is wholly the workflow's rule (below).
//   * The workflow adds what follows from the case itself (projections/workflow.h): only
//     the level that dispatches a case dispatches or escalates it; only a crew of the
//     department it is dispatched to (a unit with a department) serving its grid handles
//     it; only its originator verifies and closes it, never a unit that handled it (when
//     the originator handled it, the grid unit above the originator does).
//
// Tokens are compared by their SHA-256, so the time a lookup takes says nothing about the
// secret. Thread-safe after construction; the HTTP server swaps a whole new policy in when
// the daemon re-reads its tokens (SIGHUP), it never changes one.
//
// Every refusal carries why (`RefusalOf`): what the refused-write log line and the
// authentication-failure metrics name.
#ifndef CITYOPS_API_ACCESS_H_
#define CITYOPS_API_ACCESS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cityops/v1/config.pb.h"
#include "cityops/v1/views.pb.h"

namespace cityops::api {

// "viewer", "operator", ...
std::string RoleName(v1::Role role);

// Why a request was refused.
enum class Refusal {
  kNone,             // Not refused by access control.
  kNoToken,          // 401: no Authorization header.
  kMalformedHeader,  // 401: an Authorization header that is not "Bearer <token>".
  kUnknownToken,     // 401: a token that is not configured.
  kRoleTooLow,       // 403: the token's role is below the route's or the command's.
  kOutsideUnit,      // 403: the case's grid is outside the token's unit.
  kWorkflow,         // 403: the case workflow's own rule (level, originator).
  kRateLimited,      // 429: too many failed authentications from the client.
};

// The refusals of authentication (401), in the order of their metric labels.
inline constexpr Refusal kAuthFailures[] = {Refusal::kNoToken, Refusal::kMalformedHeader,
                                            Refusal::kUnknownToken};

// "no_token", "malformed_header", ...: the label value in /metrics.
std::string_view RefusalLabel(Refusal r);
// "no token", "role too low", ...: the words of the refused-write log line.
std::string_view RefusalText(Refusal r);

// `status` marked with why it refuses.
absl::Status WithRefusal(absl::Status status, Refusal r);
// Why `status` refuses: the mark WithRefusal left, else kWorkflow for PERMISSION_DENIED
// (the workflow's refusals carry none) and kNone for anything else.
Refusal RefusalOf(const absl::Status& status);

class AccessPolicy {
 public:
  explicit AccessPolicy(const std::vector<v1::ApiToken>& tokens);

  // The actor behind an `Authorization: Bearer <token>` header value. UNAUTHENTICATED
  // (401) when the header is missing, malformed or names no configured token.
  absl::StatusOr<v1::Actor> Authenticate(std::string_view authorization) const;

  // PERMISSION_DENIED (403) unless `actor`'s role is at least `need`; the message names
  // the action, the role it needs and the role the user has.
  static absl::Status RequireRole(const v1::Actor& actor, v1::Role need, std::string_view action);

  // PERMISSION_DENIED unless `actor`'s unit serves `grid`.
  static absl::Status RequireUnitCovers(const v1::Actor& actor, const v1::GridRef& grid,
                                        std::string_view action);

  bool empty() const { return by_digest_.empty(); }

 private:
  absl::flat_hash_map<std::string, v1::Actor> by_digest_;  // SHA-256 hex of the token.
};

}  // namespace cityops::api

#endif  // CITYOPS_API_ACCESS_H_
