// The operations-center daemon: one process that runs every stage of cityops over one
// data directory. Front door of daemon/.
//
//   Kafka ──► ingest ──► event log ──► rules stage ──► (derived events) ──► event log
//                              ├──► read models ──► HTTP API, change stream, dashboard
//                              └──► ticket outbox ──► Kafka cityops.tickets
//   HTTP commands ──► case workflow ──► event log
//
// Start() opens the log (refusing a directory another process holds), activates the
// configured rule set if it differs from the active one, hosts the embedded Kafka cluster
// when no brokers are configured, opens the read models, starts the HTTP server, and then
// runs ingest, the rules stage, the read models and the outbox on threads of their own.
//
// Disk full. While the log's disk has no room (kernel/event_log.h, "Disk full"), /readyz
// answers 503 "disk full: ..." with what to do, ingest pauses (its records wait in Kafka
// and are consumed again from the stored positions), commands that append get 503, reads
// go on, and the rules stage reopens from its checkpoint once there is room. A thread
// tries to resume the log every second and logs the outage's start and end;
// `cityops_log_disk_full*` count it. No restart is needed.
//
// Stop. RequestStop() (SIGTERM, SIGINT) makes Wait() shut down in order: the HTTP server
// stops taking commands, ingest finishes and syncs the batch in hand, then the rules stage,
// the read models and the outbox stop at their next checkpoint. Nothing is lost: every
// stage resumes from its checkpoint in the log. A stage that fails stops the daemon the
// same way, and Wait() returns its error (systemd then restarts it).
//
// Thread safety: RequestStop, ReloadRules, ReloadTokens, ReloadTls, Health and the
// accessors from any thread;
// Wait from one.
#ifndef CITYOPS_DAEMON_DAEMON_H_
#define CITYOPS_DAEMON_DAEMON_H_

#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "cityops/v1/api.pb.h"
#include "cityops/v1/config.pb.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "projections/views/views.h"

namespace cityops::daemon {

struct DaemonOptions {
  v1::ServeConfig config;  // Complete and checked (daemon/config.h).
  // The file `config` was read from, re-read for its tokens on ReloadTokens (SIGHUP).
  // Empty: none (every default, or a demo's own configuration).
  std::string config_path;
  // The time of commands, clock ticks and rule activations. The real clock, or a demo's
  // accelerated one. Must outlive the daemon.
  const kernel::Clock* clock = kernel::Clock::Real();
  // Where the daemon announces its addresses for people and scripts: "kafka: HOST:PORT",
  // "http: http://HOST:PORT/" (https:// with http.tls), then "ready". May be null.
  std::ostream* announce = nullptr;
  // Tests only: passed to the event log (kernel/event_log_testing.h), e.g. a file system
  // that runs out of space. Null in production.
  std::shared_ptr<kernel::EventLogTestHooks> log_testing = nullptr;
};

class Daemon {
 public:
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonOptions& options);
  // Stops (as RequestStop + Wait) if still running.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Blocks until RequestStop() or a stage fails, then shuts down in order. OK after a
  // requested stop; the first stage's error otherwise.
  absl::Status Wait();
  void RequestStop();

  // Re-reads the configured rule set and activates it if it changed (SIGHUP, the API).
  // INVALID_ARGUMENT with file and line if the file does not check; the active rules stay.
  absl::StatusOr<v1::ReloadRulesResponse> ReloadRules();

  // Re-reads the configuration file (options.config_path) and puts its tokens in place of
  // the API's at once (SIGHUP): requests that start afterwards see only the new ones;
  // requests in flight and open change streams go on. Logs "tokens reloaded: N tokens
  // (added X, removed Y)" (never a secret), and names the settings that changed but take
  // a restart. A file that does not parse or check (file:line), or that its group or
  // others may read (daemon/config.h), keeps the tokens in use and returns why. Without a
  // configuration file there is nothing to re-read: OK.
  absl::Status ReloadTokens();

  // Loads the certificate and key of http.tls again, from the paths the daemon started
  // with (SIGHUP), and puts them in place for new connections; connections already open
  // (event streams) keep the certificate they began with and stay open. Logs the new
  // certificate's subject, serial and end of validity. A pair that does not load (the
  // key not the certificate's, a key file others may read, ...) keeps the one in use and
  // returns why. Counted in cityops_http_tls_reloads_total{result}. OK without TLS.
  absl::Status ReloadTls();

  // Liveness (`ready` false) or readiness (`ready` true). Kafka out of reach and a full
  // disk are not liveness problems (the process is alive and recovers by itself): /healthz
  // stays "ok" with the ingest stage "disconnected" or the log stage "disk_full"; /readyz
  // is "unavailable" with the reason.
  v1::HealthResponse Health(bool ready) const;
  // True once ingest owns its partitions, reached Kafka, and the read models caught up
  // with the log; it stays true. /readyz (Health(true)) is also 503 while Kafka is out of
  // reach.
  bool Ready() const;
  // True once a stop was requested or a stage failed: Wait() is about to shut down.
  bool Stopping() const;
  // The largest lag of ingest on any input topic partition it owns, in records (0 before
  // the group join; while Kafka is out of reach, the last one known).
  int64_t MaxConsumerLag() const;

  kernel::EventLog& log();
  views::Projections& views();
  const std::string& kafka_bootstrap() const;
  int http_port() const;

 private:
  class Impl;
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_DAEMON_H_
