// Waiting for a condition in tests, instead of sleeping for a fixed time.
//
//   REQUIRE(testing::WaitUntil([&] { return Lag(port) == 0; }, absl::Seconds(60)));
//
// The condition is checked at once, then every `poll` until it holds or `timeout` has
// passed; it is checked one last time at the deadline, so a condition that became true
// while the waiter slept is never reported as a timeout. A condition may do work itself
// (poll a consumer, step a stage): pass `poll = absl::ZeroDuration()` to call it back to
// back.
//
// Header-only and free of Catch2 (a REQUIRE inside the condition works all the same: its
// exception passes through).
#ifndef CITYOPS_TESTS_TESTING_WAIT_H_
#define CITYOPS_TESTS_TESTING_WAIT_H_

#include <algorithm>
#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cityops::testing {

// True as soon as `condition()` returns true; false if it still returns false once
// `timeout` (wall time) has passed. Sleeps `poll` between checks.
inline bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout,
                      absl::Duration poll = absl::Milliseconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (condition()) return true;
    const absl::Time now = absl::Now();
    if (now >= deadline) return false;
    if (poll > absl::ZeroDuration()) absl::SleepFor(std::min(poll, deadline - now));
  }
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_WAIT_H_
