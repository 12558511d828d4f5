// The wall clock, injectable. Only the edges read it (the log stamping recorded time,
// ingest deciding when to tick); projections and rules never do.
#ifndef CITYOPS_KERNEL_CLOCK_H_
#define CITYOPS_KERNEL_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cityops::kernel {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock. Never null, never destroyed.
  static const Clock* Real();
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time start) : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

// A clock that stands still at `origin` until Start(), then runs `rate` times as fast as
// `base` from there; Pause() and Resume() stop and restart it where it stands. Simulations played
// in accelerated time hand it to ingest, so that the clock ticks ingest appends on quiet partitions
// carry simulated time, not the wall clock's. Thread-safe.
class ScaledClock final : public Clock {
 public:
  ScaledClock(absl::Time origin, double rate, const Clock* base = Clock::Real())
      : base_(base), rate_(rate), origin_(origin) {}
  // Runs from `origin` as of now.
  void Start(absl::Time origin) {
    absl::MutexLock lock(&mu_);
    origin_ = origin;
    started_ = base_->Now();
    running_ = true;
  }
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return NowLocked();
  }
  // Stands still at the current time until Resume(): a simulation waiting for its
  // consumer does not let time run on without it.
  void Pause() {
    absl::MutexLock lock(&mu_);
    origin_ = NowLocked();
    running_ = false;
  }
  void Resume() {
    absl::MutexLock lock(&mu_);
    if (running_) return;
    started_ = base_->Now();
    running_ = true;
  }

 private:
  absl::Time NowLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!running_) return origin_;
    return origin_ + (base_->Now() - started_) * rate_;
  }

  const Clock* base_;
  const double rate_;
  mutable absl::Mutex mu_;
  absl::Time origin_ ABSL_GUARDED_BY(mu_);
  absl::Time started_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_CLOCK_H_
