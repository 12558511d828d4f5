// The read models: devices, alerts, cases, tickets and the big screen's statistics,
// folded from the event log into a RocksDB database of their own.
//
// Layout. `<dir>/CURRENT` names the live generation, `<dir>/gen-<n>/` a RocksDB
// database holding serialized `cityops.v1` views by key:
//   d/<device id> DeviceView      a/<alert id> AlertView     c/<case id> CaseView
//   t/<ticket id> TicketView      s/<partition> Statistics (that partition's share)
//   p/<partition> checkpoint: the next sequence folded and the partition's time
//   r/active      the latest RulesetActivated
// State and checkpoints are written in one WriteBatch, so after a crash the models
// match their checkpoints and folding resumes there.
//
// Folding. Partition by partition, in log order. Time is the partition's event time
// (the running maximum over its events, clock ticks included), never the wall clock:
// a device goes offline once that time passes its last reading by three reporting
// intervals (its registered one, else its kind's in the catalogue in force: the latest
// RulesetActivated's catalogue, else the built-in one). Devices' live state is kept in memory
// (about 1 KB per device) and written when it changes; alerts, cases and tickets are read when
// touched and written at the next commit. Statistics are kept incrementally: when a case changes,
// its old contribution is taken out and its new one added.
//
// Rebuild. `Rebuild()` folds a new generation from sequence 0 beside the live one,
// which keeps serving queries and following the log; when the new one has caught up it
// takes over (CURRENT is replaced by rename). The old one is deleted (database closed,
// directory removed) when the last query still reading it finishes.
//
// Thread safety: queries from any thread; CatchUp/Run/Rebuild from one thread at a
// time (Run in its own thread; Stop from any).
#ifndef CITYOPS_PROJECTIONS_VIEWS_VIEWS_H_
#define CITYOPS_PROJECTIONS_VIEWS_VIEWS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cityops/v1/views.pb.h"
#include "kernel/event_log.h"

namespace cityops::views {

// Readings kept per device in `DeviceView.recent_readings`, newest first.
inline constexpr size_t kRecentReadings = 8;

struct DeviceFilter {
  std::string kind_id;      // The catalogue's id of a kind ("gas_detector"); empty: any.
  std::string grid_prefix;  // District, street or grid code.
  std::optional<bool> online;
  bool unregistered_only = false;
};

struct CaseFilter {
  v1::CaseStage stage = v1::CASE_STAGE_UNSPECIFIED;
  v1::CaseSource source = v1::CASE_SOURCE_UNSPECIFIED;
  v1::OverdueLevel overdue = v1::OVERDUE_LEVEL_UNSPECIFIED;  // At least this level.
  std::string grid_prefix;
  absl::Time reported_from = absl::InfinitePast();
  absl::Time reported_to = absl::InfiniteFuture();
};

struct AlertFilter {
  bool active_only = false;
  std::string device_id;
  std::string rule_id;
};

// One page of a listing. `next_page_token` is empty on the last page.
template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_page_token;
};

struct PartitionLag {
  kernel::Partition partition;
  kernel::Sequence next;  // Folded up to here.
  uint64_t lag = 0;       // Appended but not yet folded.
};

struct ProjectionOptions {
  kernel::EventLog* log = nullptr;
  std::string dir;               // e.g. <data dir>/views
  size_t commit_every = 50'000;  // Events per commit, at most.
  absl::Duration idle_wait = absl::Milliseconds(50);
  // The city as of a moment (`cityops state --at`), for a scratch directory over a log
  // that is no longer appended to. Finite: only events whose event time is at most
  // `until` are folded (later ones are skipped, not stopped at: the rules stage dates a
  // light or a closing at its due time and appends it after the event that carried time
  // past it, which may be later than `until`), and once a partition is folded to its
  // end its time is set to `until`, so devices silent for three intervals at `until` are
  // offline. Infinite (the default): every event, and time moves with the events alone.
  absl::Time until = absl::InfiniteFuture();
  // Tests only: called by GetDevice while it holds the generation it reads.
  std::function<void()> while_querying_for_testing = nullptr;
};

class Projections {
 public:
  static absl::StatusOr<std::unique_ptr<Projections>> Open(const ProjectionOptions& options);
  ~Projections();

  // Folds everything appended so far and commits it.
  absl::Status CatchUp();
  // Follows the log until Stop().
  absl::Status Run();
  void Stop();
  // Builds a new generation from sequence 0 beside the live one and swaps it in.
  absl::Status Rebuild();

  absl::StatusOr<std::optional<v1::DeviceView>> GetDevice(std::string_view id) const;
  absl::StatusOr<Page<v1::DeviceView>> ListDevices(const DeviceFilter& filter, size_t limit,
                                                   std::string_view page_token = {}) const;
  absl::StatusOr<std::optional<v1::AlertView>> GetAlert(std::string_view id) const;
  absl::StatusOr<Page<v1::AlertView>> ListAlerts(const AlertFilter& filter, size_t limit,
                                                 std::string_view page_token = {}) const;
  absl::StatusOr<std::optional<v1::CaseView>> GetCase(std::string_view id) const;
  absl::StatusOr<Page<v1::CaseView>> ListCases(const CaseFilter& filter, size_t limit,
                                               std::string_view page_token = {}) const;
  absl::StatusOr<Page<v1::TicketView>> ListTickets(size_t limit,
                                                   std::string_view page_token = {}) const;
  absl::StatusOr<v1::Statistics> GetStatistics() const;
  absl::StatusOr<std::optional<v1::RulesetActivated>> ActiveRuleSet() const;
  // The catalogue in force: that of the latest rule set activation, else (a log written
  // before activations carried one) the built-in catalogue, with an empty source path
  // and digest. Devices are named and go offline by it.
  absl::StatusOr<v1::ActivatedCatalogue> CatalogueInForce() const;
  std::vector<PartitionLag> Lag() const;
  // Every key and value of the live generation, for comparing two of them.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Dump() const;
  uint64_t generation() const;

 private:
  class Generation;
  explicit Projections(const ProjectionOptions& options);
  std::shared_ptr<Generation> Live() const;

  ProjectionOptions options_;
  absl::Mutex fold_mu_;  // One folder at a time on the live generation.
  mutable absl::Mutex mu_;
  std::shared_ptr<Generation> live_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
};

}  // namespace cityops::views

#endif  // CITYOPS_PROJECTIONS_VIEWS_VIEWS_H_
