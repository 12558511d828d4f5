// The clocks of kernel/clock.h: the scaled clock that accelerated simulations run on.
#include "kernel/clock.h"

#include <catch2/catch.hpp>

namespace cityops {
namespace {

TEST_CASE("a scaled clock stands still until started, runs at its rate, and pauses", "[clock]") {
  const absl::Time t0 = absl::FromUnixSeconds(1'790'000'000);
  kernel::ManualClock wall(t0);
  const absl::Time origin = absl::FromUnixSeconds(1'700'000'000);
  kernel::ScaledClock clock(origin, 120, &wall);
  wall.Advance(absl::Seconds(10));
  CHECK(clock.Now() == origin);  // Not started.
  clock.Start(origin);
  wall.Advance(absl::Seconds(2));
  CHECK(clock.Now() == origin + absl::Minutes(4));
  clock.Pause();
  wall.Advance(absl::Seconds(30));
  CHECK(clock.Now() == origin + absl::Minutes(4));  // Stood still while paused.
  clock.Resume();
  clock.Resume();  // Resuming a running clock changes nothing.
  wall.Advance(absl::Seconds(1));
  CHECK(clock.Now() == origin + absl::Minutes(6));
}

}  // namespace
}  // namespace cityops
