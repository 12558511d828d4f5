// The HTTP API under /api/v1, the live change stream, /metrics, /healthz, /readyz and the
// dashboard's files. Front door of api/.
//
// The server owns no logic of the domain: reads come from the read models
// (projections/views), commands go through the case workflow, and everything about the
// running daemon (health, metrics, rule reloads) through the callbacks of `Backend`. It
// adds what only the edge knows: tokens, roles and units (api/access.h), JSON by the
// protobuf JSON mapping, request limits, paging parameters, and HTTP status codes.
//
// Errors are `{"error": {"code", "httpStatus", "message"}}` with the status of the
// canonical code: INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
// NOT_FOUND 404, FAILED_PRECONDITION/ABORTED/ALREADY_EXISTS 409, body too large 413,
// RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, anything else 500.
//
// Threads: connections wait in one thread until a whole request has arrived, which then
// goes to one of three pools: event streams, /healthz, /readyz and /metrics, and the rest
// (api/front_door.h; all started by Start, joined by Stop). Every Backend callback may be
// called from any of their threads at once.
#ifndef CITYOPS_API_HTTP_SERVER_H_
#define CITYOPS_API_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/auth_limiter.h"
#include "api/metrics_text.h"
#include "api/tls_context.h"
#include "cityops/v1/api.pb.h"
#include "cityops/v1/config.pb.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "projections/views/views.h"
#include "projections/workflow.h"

namespace cityops::api {

struct Backend {
  kernel::EventLog* log = nullptr;
  views::Projections* views = nullptr;
  projections::CaseWorkflow* workflow = nullptr;
  // "Now" for an open case's time in stage. The daemon's clock (simulated in a demo).
  const kernel::Clock* clock = kernel::Clock::Real();
  // POST /api/v1/rules/reload.
  std::function<absl::StatusOr<v1::ReloadRulesResponse>()> reload_rules;
  // POST /api/v1/backups.
  std::function<absl::StatusOr<v1::BackupResponse>()> backup;
  // GET /healthz (`ready` false) and /readyz (`ready` true); status "ok" answers 200.
  std::function<v1::HealthResponse(bool ready)> health;
  // Adds the daemon's metric families (ingest, stages, log) to a scrape.
  std::function<void(MetricsText&)> metrics;
};

struct ServerOptions {
  std::string listen_address = "127.0.0.1";
  int port = 0;  // 0: any free port; see HttpServer::port().
  size_t max_body_bytes = 64 * 1024;
  int max_event_streams = 64;
  // Connections (api/front_door.h): open at once, in all and from one client address; the
  // time a request has to arrive whole, and a keep-alive connection to send its next one;
  // threads serving requests (event streams and /healthz, /readyz, /metrics have their own).
  int max_connections = 4096;
  int max_connections_per_client = 256;
  absl::Duration request_timeout = absl::Seconds(10);
  absl::Duration idle_timeout = absl::Seconds(30);
  int workers = 8;
  // HTTPS with this certificate and key (api/tls_context.h); null: plain HTTP.
  std::shared_ptr<const TlsContext> tls;
  bool dashboard = true;
  std::vector<v1::ApiToken> tokens;
  // Failed authentication per client (remote address): past the limit, 429 with
  // Retry-After (api/auth_limiter.h). Counted on the real clock, also in a demo.
  AuthLimits auth_limits;
  absl::Duration statistics_interval = absl::Seconds(2);  // Of the change stream.
};

class HttpServer {
 public:
  // Binds and starts serving (and following the log for the change stream).
  // UNAVAILABLE when the address cannot be bound, naming it.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const ServerOptions& options,
                                                           const Backend& backend);
  // Stops as Stop() does.
  ~HttpServer();

  // The port it listens on (the one it got when options.port was 0).
  int port() const;
  // Replaces the tokens (the daemon's SIGHUP) at once for every request that starts
  // afterwards: requests in flight and open change streams keep the access they were
  // given. Thread-safe.
  void SetTokens(const std::vector<v1::ApiToken>& tokens);
  // Replaces the certificate and key of a server started with options.tls (the daemon's
  // SIGHUP) for the connections accepted from then on; open ones (event streams) keep the
  // one they began with. FAILED_PRECONDITION on a server of plain HTTP. Thread-safe.
  absl::Status SetTls(std::shared_ptr<const TlsContext> tls);
  // Stops accepting, ends the change streams, waits for requests in flight. Idempotent.
  void Stop();

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The JSON of `message` by the protobuf JSON mapping, as the API writes it (every scalar
// field printed, lowerCamelCase names).
std::string ToJson(const google::protobuf::Message& message);

}  // namespace cityops::api

#endif  // CITYOPS_API_HTTP_SERVER_H_
