#include "api/auth_limiter.h"

#include <algorithm>

namespace cityops::api {

AuthFailureLimiter::AuthFailureLimiter(const AuthLimits& limits, const kernel::Clock* clock)
    : limits_{std::max(limits.failures, 1), std::max(limits.window, absl::Seconds(1)),
              std::max<size_t>(limits.max_clients, 1)},
      clock_(clock) {}

absl::Duration AuthFailureLimiter::BlockedLocked(Client& c, absl::Time now) const {
  while (!c.failures.empty() && now - c.failures.front() >= limits_.window) {
    c.failures.pop_front();
  }
  if (c.failures.size() < static_cast<size_t>(limits_.failures)) return absl::ZeroDuration();
  // Blocked until the oldest failure that still counts leaves the window.
  return c.failures.front() + limits_.window - now;
}

absl::Duration AuthFailureLimiter::Blocked(const std::string& client) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return absl::ZeroDuration();
  const absl::Duration left = BlockedLocked(it->second, now);
  if (it->second.failures.empty()) {
    order_.erase(it->second.order);
    clients_.erase(it);
  }
  return left;
}

bool AuthFailureLimiter::RecordFailure(const std::string& client) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) {
    if (clients_.size() >= limits_.max_clients) {
      clients_.erase(order_.front());
      order_.pop_front();
    }
    it = clients_.emplace(client, Client{}).first;
    it->second.order = order_.insert(order_.end(), it->first);
  } else {
    order_.splice(order_.end(), order_, it->second.order);
  }
  Client& c = it->second;
  const bool was_blocked = BlockedLocked(c, now) > absl::ZeroDuration();
  c.failures.push_back(now);
  while (c.failures.size() > static_cast<size_t>(limits_.failures)) c.failures.pop_front();
  return !was_blocked && BlockedLocked(c, now) > absl::ZeroDuration();
}

size_t AuthFailureLimiter::tracked_clients() const {
  absl::MutexLock lock(&mu_);
  return clients_.size();
}

}  // namespace cityops::api
