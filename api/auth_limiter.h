// Failed authentication, rate-limited per client (issue 17).
//
// A client (the remote IP address of the connection) that fails authentication `failures`
// times within a sliding `window` is blocked: its further requests to routes that need a
// token are answered 429 without the token being looked at, until the oldest of those
// failures is `window` old. A blocked client's requests are not failures themselves, so
// the block ends on time however often it retries.
//
// Memory is bounded: at most `max_clients` clients are tracked, each with at most
// `failures` times; a new client beyond that evicts the one whose last failure is the
// oldest. Time comes from an injected clock (kernel/clock.h). Thread-safe.
#ifndef CITYOPS_API_AUTH_LIMITER_H_
#define CITYOPS_API_AUTH_LIMITER_H_

#include <cstddef>
#include <deque>
#include <list>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernel/clock.h"

namespace cityops::api {

// The settings of http.auth_failure_limit (proto/cityops/v1/config.proto), defaults included.
struct AuthLimits {
  int failures = 10;                          // Failures within `window` that block.
  absl::Duration window = absl::Seconds(60);  // The sliding window.
  size_t max_clients = 10'000;                // Clients tracked at most.
};

class AuthFailureLimiter {
 public:
  // `clock` must outlive the limiter.
  explicit AuthFailureLimiter(const AuthLimits& limits,
                              const kernel::Clock* clock = kernel::Clock::Real());

  // Zero when `client` may present a token; otherwise how long it stays blocked.
  absl::Duration Blocked(const std::string& client);

  // Records a failed authentication of `client`. True when this failure blocks it.
  bool RecordFailure(const std::string& client);

  // Clients with failures still inside the window, or not yet evicted.
  size_t tracked_clients() const;

  const AuthLimits& limits() const { return limits_; }

 private:
  struct Client {
    std::deque<absl::Time> failures;  // The last `limits_.failures` at most, oldest first.
    std::list<std::string>::iterator order;
  };

  // How long `c` stays blocked as of `now`; drops failures that left the window.
  absl::Duration BlockedLocked(Client& c, absl::Time now) const;

  const AuthLimits limits_;
  const kernel::Clock* const clock_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Client> clients_ ABSL_GUARDED_BY(mu_);
  // Client addresses, the one whose last failure is the oldest first.
  std::list<std::string> order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cityops::api

#endif  // CITYOPS_API_AUTH_LIMITER_H_
