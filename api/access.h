// Access control of the HTTP API: bearer tokens from the configuration, each standing for
// a user with a role and an organizational unit.
//
//   * Reads need at least viewer; case commands and reports need operator; urging needs
//     supervisor (催办 is a supervisor's lever); reloading rules needs admin.
//   * A case command or report is allowed only inside the user's unit: the unit's code
//     must be a prefix of the case's grid code (the city center covers everything).
//   * The workflow adds what follows from the case itself: only the level that dispatches
//     a case dispatches or escalates it, and only its originator verifies and closes it.
//
// Tokens are compared by their SHA-256, so the time a lookup takes says nothing about the
// secret. Thread-safe after construction.
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
