// The live stream behind GET /api/v1/changes: the events that change what people watch
// (alerts, case events, tickets), as JSON, in log order within each partition.
//
// A change is delivered only once the read models have committed it, so a client that
// reloads a view when a change arrives sees the change there. The feed starts at the read
// models' position when Run() starts: what came before is served by the API's reads.
//
// Subscribers each get a bounded queue. One that falls more than `kMaxQueued` changes
// behind loses the oldest and is told so (`overflowed`), so that it reloads its views;
// a slow client never holds up the feed or the daemon.
//
// Thread safety: Run() on one thread; Subscribe, Stop and the subscriptions from any.
#ifndef CITYOPS_API_CHANGE_FEED_H_
#define CITYOPS_API_CHANGE_FEED_H_

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernel/event_log.h"
#include "projections/views/views.h"

namespace cityops::api {

struct Change {
  std::string id;    // "<partition>/<sequence>" of the event.
  std::string type;  // The payload's field name: "alert_raised", "case_dispatched", ...
  std::string json;  // The cityops.v1.Event, by the protobuf JSON mapping, on one line.
};

class ChangeFeed {
 public:
  static constexpr size_t kMaxQueued = 10'000;

  class Subscription {
   public:
    // Waits up to `timeout` for changes and takes them (possibly none). `overflowed` is
    // set when changes were dropped since the last call. Returns early, with nothing, once
    // the feed stops.
    std::vector<Change> Next(absl::Duration timeout, bool* overflowed);
    bool closed() const;

   private:
    friend class ChangeFeed;
    mutable absl::Mutex mu_;
    std::deque<Change> queue_ ABSL_GUARDED_BY(mu_);
    bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
  };

  ChangeFeed(kernel::EventLog* log, const views::Projections* views);

  // Follows the read models' committed positions until Stop(). Errors reading the log
  // end it.
  absl::Status Run();
  void Stop();

  // A new subscription; it ends when the caller drops it.
  std::shared_ptr<Subscription> Subscribe();
  size_t subscribers() const;
  uint64_t delivered() const { return delivered_.load(); }

 private:
  void Broadcast(std::vector<Change>& changes);

  kernel::EventLog* const log_;
  const views::Projections* const views_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> delivered_{0};
  mutable absl::Mutex mu_;
  std::vector<std::weak_ptr<Subscription>> subscribers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cityops::api

#endif  // CITYOPS_API_CHANGE_FEED_H_
