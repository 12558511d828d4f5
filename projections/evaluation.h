// The evaluation figures of grid management over a period and a scope (`v1::Evaluation`):
// cases found, filed, due and closed, close and on-time close rates, lights, urges,
// escalations, time per stage, quick handling at street level, dispatches by a district,
// open cases and their lights at the end, and the 12345 hotline's categories over time;
// for the whole selection and broken down by district, street, department, unit, category
// or source. Each figure is defined in docs/analysis.md ("stats").
//
// One implementation for both users: `cityops stats` on a copy of a log
// (analysis/stats.h) and the daemon's `GET /api/v1/statistics?from=&to=&by=&scope=` on the
// live log. Both read the indexed `case/` streams (EventLog::ListStreams, ReadStream) and
// fold each case with `ApplyCaseEvent`, one case at a time: the cost grows with the number
// of cases, not with the readings in the log, and memory holds the figures (and, for the
// percentiles, the durations of the cases closed in the period), never a whole log.
//
// Only events with an event time before the period's end count, so the figures of a past
// period do not change as the log grows. Thread safety: `Evaluate` only reads the log; it
// may run while other threads append.
#ifndef CITYOPS_PROJECTIONS_EVALUATION_H_
#define CITYOPS_PROJECTIONS_EVALUATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cityops/v1/evaluation.pb.h"
#include "kernel/event_log.h"

namespace cityops::projections {

// The events of case streams kept between evaluations, so that a daemon answering the
// statistics again reads from the log only what was appended since (a case's events are
// scattered among the readings, one compressed block read each): the first answer reads
// every case, the next ones the cases that changed. Holds at most `max_events` events
// (serialized, a few hundred bytes each); the streams past that are read each time.
// Thread-safe; evaluations that share it take turns reading.
class CaseStreamCache {
 public:
  explicit CaseStreamCache(size_t max_events = 500'000) : max_events_(max_events) {}
  CaseStreamCache(const CaseStreamCache&) = delete;
  CaseStreamCache& operator=(const CaseStreamCache&) = delete;

  // The events of `stream` up to `version` (its current version as listed), from the cache
  // and, for what is newer, from `log`; replaces `*out`.
  absl::Status Read(const kernel::EventLog& log, const std::string& stream,
                    kernel::StreamVersion version, std::vector<v1::Event>* out);
  size_t events() const;

 private:
  const size_t max_events_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<std::string>> streams_ ABSL_GUARDED_BY(mu_);
  size_t events_ ABSL_GUARDED_BY(mu_) = 0;
};

// The breakdowns `by` accepts, in the order help texts list them.
const std::vector<std::string>& EvaluationBreakdowns();

struct EvaluationRequest {
  // The period [from, to) by event time. InfinitePast: from the log's first event (down to
  // the whole hour); InfiniteFuture: to just after the log's last event.
  absl::Time from = absl::InfinitePast();
  absl::Time to = absl::InfiniteFuture();
  std::string by;          // "" (no breakdown) or one of EvaluationBreakdowns().
  std::string scope;       // A district, street, community or grid code; "" = the city.
  std::string department;  // Only cases dispatched to this department; "" = all.
  // Called after each case folded, with the cases done and the total; returning false
  // stops the run (CANCELLED). Optional.
  std::function<bool(uint64_t done, uint64_t total)> on_case;
  // Where case events come from besides the log (the daemon keeps one); optional.
  CaseStreamCache* cache = nullptr;
};

// The event times of a log's first and last events (over all partitions), for periods.
struct LogTimeRange {
  bool empty = true;
  absl::Time first = absl::InfiniteFuture();
  absl::Time last = absl::InfinitePast();
};
absl::StatusOr<LogTimeRange> EventTimeRange(const kernel::EventLog& log);

// The figures of `request` over `log`. Errors, each naming what to change:
//   INVALID_ARGUMENT     the period ends before it starts, an unknown `by`, a scope that is
//                        not a district (6 digits), street (9), community (12) or grid (15)
//                        code;
//   OUT_OF_RANGE         the period lies wholly before the log's first event or after
//                        its last;
//   NOT_FOUND            no case or device of the log is in `scope`, or no case was ever
//                        dispatched to `department` (the message lists the known ones);
//   FAILED_PRECONDITION  the log has no events;
//   CANCELLED            `on_case` asked to stop;
//   other codes          the log cannot be read.
absl::StatusOr<v1::Evaluation> Evaluate(const kernel::EventLog& log,
                                        const EvaluationRequest& request);

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_EVALUATION_H_
