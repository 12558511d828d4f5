#include "api/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "analysis/lineage.h"
#include "api/access.h"
#include "api/auth_limiter.h"
#include "api/change_feed.h"
#include "api/dashboard_files.h"
#include "api/front_door.h"
#include "api/openapi.h"
#include "api/requests.h"
#include "api/routes.h"
#include "catalogue/catalogue.h"
#include "google/protobuf/util/json_util.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "projections/evaluation.h"
#include "projections/rules/compile.h"
#include "spdlog/spdlog.h"

namespace cityops::api {

namespace pb = google::protobuf;

std::string ToJson(const pb::Message& message) {
  pb::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!pb::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

namespace {

// The dashboard's own files and API calls only: no inline script or style (app.js sets
// sizes through the CSSOM, which the policy allows), no other origin, no framing.
constexpr char kContentSecurityPolicy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

constexpr size_t kDeviceAlerts = 50;  // Alerts shown with one device, newest first.

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

std::string ErrorJson(absl::StatusCode code, int http_status, std::string_view message) {
  v1::ErrorResponse e;
  e.mutable_error()->set_code(absl::StatusCodeToString(code));
  e.mutable_error()->set_http_status(http_status);
  e.mutable_error()->set_message(std::string(message));
  return ToJson(e);
}

void WriteJson(const pb::Message& m, httplib::Response& res, int status = 200) {
  res.status = status;
  res.set_content(ToJson(m), "application/json");
}

// "/api/v1/cases/{case_id}/{command}" -> "/api/v1/cases/([^/]+)/([^/]+)".
std::string PathRegex(const std::string& path) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      i = path.find('}', i);
      out += "([^/]+)";
    } else if (path[i] == '.') {
      out += "\\.";
    } else {
      out += path[i];
    }
  }
  return out;
}

std::string ShortName(const std::string& full, std::string_view prefix) {
  std::string name = full;
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

// Every answer, errors included (api/README.md#security-headers). The dashboard's files
// hold no inline script or style, so the policy allows only this origin's own files and
// API, and no framing.
httplib::Headers SecurityHeaders() {
  return {
      {"Content-Security-Policy", kContentSecurityPolicy},
      {"X-Content-Type-Options", "nosniff"},
      {"Referrer-Policy", "no-referrer"},
      {"X-Frame-Options", "DENY"},
  };
}

ConnectionLimits LimitsOf(const ServerOptions& o) {
  ConnectionLimits l;
  l.max_connections = o.max_connections;
  l.max_connections_per_client = o.max_connections_per_client;
  l.request_timeout = o.request_timeout;
  l.idle_timeout = o.idle_timeout;
  l.workers = o.workers;
  l.max_event_streams = o.max_event_streams;
  l.max_body_bytes = o.max_body_bytes;
  return l;
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(const ServerOptions& options, const Backend& backend)
      : options_(options),
        backend_(backend),
        access_(std::make_shared<const AccessPolicy>(options.tokens)),
        limiter_(options.auth_limits, kernel::Clock::Real()),
        feed_(backend.log, backend.views),
        server_(LimitsOf(options), SecurityHeaders(),
                [](int status, std::string_view code, std::string_view message) {
                  v1::ErrorResponse e;
                  e.mutable_error()->set_code(std::string(code));
                  e.mutable_error()->set_http_status(status);
                  e.mutable_error()->set_message(std::string(message));
                  return ToJson(e);
                }) {}

  ~Impl() { Stop(); }

  absl::Status Start() {
    // Threads, timeouts and keep-alive are the front door's (api/front_door.h).
    server_.set_payload_max_length(options_.max_body_bytes);
    server_.set_error_handler(
        [this](const httplib::Request& req, httplib::Response& res) { OnHttpError(req, res); });
    server_.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          spdlog::error("http: {} {}: {}", req.method, req.path, what);
          res.status = 500;
          res.set_content(ErrorJson(absl::StatusCode::kInternal, 500,
                                    "internal error: " + what + "; see the daemon's log"),
                          "application/json");
        });
    server_.set_default_headers(SecurityHeaders());
    // The path without its query string. Tokens travel only in the Authorization header
    // (the dashboard keeps its own in sessionStorage, from the URL fragment, which browsers
    // never send), so no URL that reaches this log carries one.
    server_.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      spdlog::debug("http: {} {} -> {}", req.method, req.path, res.status);
    });
    for (const Route& route : Routes()) {
      const std::string pattern = PathRegex(route.path);
      auto handler = [this, &route](const httplib::Request& req, httplib::Response& res) {
        Serve(route, req, res);
      };
      if (route.method == "GET") {
        server_.Get(pattern, handler);
      } else {
        server_.Post(pattern, handler);
      }
    }
    if (options_.dashboard) {
      for (const StaticFile& f : DashboardFiles()) {
        const std::string path = f.path == "/index.html" ? "/" : std::string(f.path);
        auto handler = [&f](const httplib::Request&, httplib::Response& res) {
          res.set_header("Cache-Control", "no-cache");
          res.set_content(f.body.data(), f.body.size(), std::string(f.content_type).c_str());
        };
        server_.Get(PathRegex(path), handler);
        if (path == "/") server_.Get("/index\\.html", handler);
      }
    }
    if (options_.port == 0) {
      port_ = server_.bind_to_any_port(options_.listen_address);
    } else {
      port_ = server_.bind_to_port(options_.listen_address, options_.port) ? options_.port : -1;
    }
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot listen on %s:%d: the port is taken or the address is not this machine's; "
          "change http.port or http.listen_address",
          options_.listen_address, options_.port));
    }
    if (options_.tls != nullptr) {
      if (absl::Status s = server_.SetTls(options_.tls); !s.ok()) return s;
    }
    if (absl::Status s = server_.StartRoom(); !s.ok()) return s;
    feed_thread_ = std::thread([this] {
      if (absl::Status s = feed_.Run(); !s.ok()) {
        spdlog::error("http: change stream: {}", s.ToString());
      }
    });
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      listen_returned_.store(true);
    });
    // httplib's stop() does nothing until the listening loop runs: a Stop() right after
    // Start() would leave the thread in accept() for ever. Return once it listens.
    while (!server_.is_running() && !listen_returned_.load()) {
      absl::SleepFor(absl::Microseconds(200));
    }
    return absl::OkStatus();
  }

  void Stop() {
    if (stopped_.exchange(true)) return;
    feed_.Stop();
    server_.stop();
    if (thread_.joinable()) thread_.join();
    server_.StopRoom();
    if (feed_thread_.joinable()) feed_thread_.join();
  }

  int port() const { return port_; }

  void SetTokens(const std::vector<v1::ApiToken>& tokens) {
    auto policy = std::make_shared<const AccessPolicy>(tokens);
    absl::MutexLock lock(&access_mu_);
    access_ = std::move(policy);
  }

  absl::Status SetTls(std::shared_ptr<const TlsContext> tls) {
    if (tls == nullptr || options_.tls == nullptr) {
      return absl::FailedPreconditionError(
          "this HTTP server serves plain HTTP: turning TLS on or off takes a restart");
    }
    return server_.SetTls(std::move(tls));
  }

 private:
  std::shared_ptr<const AccessPolicy> Access() const {
    absl::MutexLock lock(&access_mu_);
    return access_;
  }

  // The actor behind the request's token. A client past the limit of failed
  // authentications gets 429 with Retry-After, its token not even looked at; a failure
  // is counted, for the limit and for /metrics.
  absl::Status Authenticate(const httplib::Request& req, httplib::Response& res, v1::Actor* actor) {
    const std::string& client = req.remote_addr;
    if (const absl::Duration wait = limiter_.Blocked(client); wait > absl::ZeroDuration()) {
      const int64_t seconds =
          std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1))));
      res.set_header("Retry-After", absl::StrCat(seconds));
      rate_limited_.fetch_add(1);
      const AuthLimits& limits = limiter_.limits();
      return WithRefusal(
          absl::ResourceExhaustedError(absl::StrFormat(
              "too many failed authentications from %s (%d within %s, the limit of "
              "http.auth_failure_limit): no token is checked for it for another %d s",
              client, limits.failures, absl::FormatDuration(limits.window), seconds)),
          Refusal::kRateLimited);
    }
    absl::StatusOr<v1::Actor> who = Access()->Authenticate(req.get_header_value("Authorization"));
    if (who.ok()) {
      *actor = *std::move(who);
      return absl::OkStatus();
    }
    const Refusal why = RefusalOf(who.status());
    for (size_t i = 0; i < std::size(kAuthFailures); ++i) {
      if (kAuthFailures[i] == why) auth_failures_[i].fetch_add(1);
    }
    if (limiter_.RecordFailure(client)) {
      const AuthLimits& limits = limiter_.limits();
      spdlog::warn(
          "http: client {} failed authentication {} times within {}: its requests that need a "
          "token are answered 429 until the oldest failure is {} old",
          client, limits.failures, absl::FormatDuration(limits.window),
          absl::FormatDuration(limits.window));
    }
    return who.status();
  }

  // One line for every write refused by access control (401, 403, 429): who tried, from
  // where, what and why. Never the token.
  static void LogRefusedWrite(const httplib::Request& req, const v1::Actor* actor,
                              const absl::Status& s) {
    const std::string who =
        actor == nullptr ? std::string("anonymous")
                         : absl::StrFormat("%s (%s, %s)", actor->user(), RoleName(actor->role()),
                                           projections::UnitName(actor->unit()));
    spdlog::warn("http: refused {} {} from {}: actor {}: {}: {}", req.method, req.path,
                 req.remote_addr, who, RefusalText(RefusalOf(s)), std::string(s.message()));
  }

  static bool IsWrite(const std::string& method) {
    return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
  }

  void Serve(const Route& route, const httplib::Request& req, httplib::Response& res) {
    absl::Status s;
    v1::Actor actor;
    bool authenticated = false;
    if (route.role != v1::ROLE_UNSPECIFIED) {
      s = Authenticate(req, res, &actor);
      if (s.ok()) {
        authenticated = true;
        s = AccessPolicy::RequireRole(actor, route.role,
                                      absl::StrFormat("%s %s", route.method, route.path));
      }
    }
    if (s.ok()) s = Query(req, route).CheckNames();
    if (s.ok()) s = Handle(route, req, actor, res);
    // API answers carry data behind tokens (and health that is stale in a second): no
    // cache, shared or private, keeps them. The change stream sets its own.
    if (!res.has_header("Cache-Control")) res.set_header("Cache-Control", "no-store");
    if (!s.ok()) {
      const int status = HttpStatusOf(s.code());
      if (status >= 500) spdlog::warn("http: {} {}: {}", req.method, req.path, s.ToString());
      res.status = status;
      if (status == 401) res.set_header("WWW-Authenticate", "Bearer");
      if ((status == 401 || status == 403 || status == 429) && IsWrite(req.method)) {
        LogRefusedWrite(req, authenticated ? &actor : nullptr, s);
      }
      res.set_content(ErrorJson(s.code(), status, std::string(s.message())), "application/json");
    }
    // A handler that only set content leaves the status to httplib (-1 until it writes
    // 200); count what the client gets.
    if (res.status == -1) res.status = 200;
    absl::MutexLock lock(&counts_mu_);
    ++requests_[{route.path, res.status}];
  }

  // With any of from, to, by, scope or department: the evaluation figures of that period
  // and scope (projections/evaluation.h, as `cityops stats` computes them) in
  // `evaluation`. Without them the answer stays the big screen's counters alone.
  absl::Status AddEvaluation(const Query& q, v1::Statistics* out) {
    absl::StatusOr<std::optional<projections::EvaluationRequest>> request =
        ParseEvaluationQuery(q, backend_.clock->Now());
    if (!request.ok()) return request.status();
    if (!request->has_value()) return absl::OkStatus();
    (*request)->cache = &evaluation_cache_;
    absl::StatusOr<v1::Evaluation> evaluation = projections::Evaluate(*backend_.log, **request);
    if (!evaluation.ok()) return evaluation.status();
    *out->mutable_evaluation() = *std::move(evaluation);
    return absl::OkStatus();
  }

  // Errors httplib answers itself: no route, body too large, malformed request.
  void OnHttpError(const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    absl::StatusCode code = absl::StatusCode::kInvalidArgument;
    std::string message;
    switch (res.status) {
      case 404:
        code = absl::StatusCode::kNotFound;
        message = absl::StrFormat("no route %s %s; the routes are listed in /api/v1/openapi.yaml",
                                  req.method, req.path);
        break;
      case 413:
        code = absl::StatusCode::kResourceExhausted;
        message = absl::StrFormat(
            "the request body is larger than %d bytes, the limit of http.max_body_bytes",
            options_.max_body_bytes);
        break;
      default:
        message = absl::StrFormat("the request could not be read (HTTP %d)", res.status);
        break;
    }
    if (!res.has_header("Cache-Control")) res.set_header("Cache-Control", "no-store");
    res.set_content(ErrorJson(code, res.status, message), "application/json");
    absl::MutexLock lock(&counts_mu_);
    ++requests_[{"(none)", res.status}];
  }

  absl::Status Handle(const Route& route, const httplib::Request& req, const v1::Actor& actor,
                      httplib::Response& res) {
    const Query q(req, route);
    switch (route.id) {
      case RouteId::kHealthz:
      case RouteId::kReadyz: {
        const v1::HealthResponse h = backend_.health(route.id == RouteId::kReadyz);
        WriteJson(h, res, h.status() == "ok" ? 200 : 503);
        return absl::OkStatus();
      }
      case RouteId::kMetrics:
        res.set_content(Metrics(), MetricsText::kContentType);
        return absl::OkStatus();
      case RouteId::kOpenApi:
        res.set_content(OpenApiYaml(), "application/yaml");
        return absl::OkStatus();
      case RouteId::kWhoAmI: {
        v1::WhoAmIResponse who;
        *who.mutable_actor() = actor;
        WriteJson(who, res);
        return absl::OkStatus();
      }
      case RouteId::kListDevices:
        return ListDevices(q, res);
      case RouteId::kGetDevice:
        return GetDevice(req.matches[1], res);
      case RouteId::kMap:
        return Map(res);
      case RouteId::kCatalogue:
        return Catalogue(res);
      case RouteId::kListAlerts:
        return ListAlerts(q, res);
      case RouteId::kListCases:
        return ListCases(q, res);
      case RouteId::kGetCase:
        return GetCase(req.matches[1], res);
      case RouteId::kCaseLineage: {
        analysis::LineageQuery query;
        query.case_id = req.matches[1];
        absl::StatusOr<v1::Lineage> lineage =
            analysis::TraceLineage(*backend_.log, query, "of this daemon");
        if (!lineage.ok()) return lineage.status();
        WriteJson(*lineage, res);
        return absl::OkStatus();
      }
      case RouteId::kCaseCommand:
        return CaseCommand(req.matches[1], req.matches[2], req, actor, res);
      case RouteId::kReport:
        return Report(req, actor, res);
      case RouteId::kListTickets: {
        absl::StatusOr<Paging> paging = ParsePaging(q);
        if (!paging.ok()) return paging.status();
        absl::StatusOr<views::Page<v1::TicketView>> page =
            backend_.views->ListTickets(paging->page_size, paging->page_token);
        if (!page.ok()) return page.status();
        v1::ListTicketsResponse out;
        for (v1::TicketView& t : page->items) *out.add_tickets() = std::move(t);
        out.set_next_page_token(page->next_page_token);
        WriteJson(out, res);
        return absl::OkStatus();
      }
      case RouteId::kStatistics: {
        absl::StatusOr<v1::Statistics> s = backend_.views->GetStatistics();
        if (!s.ok()) return s.status();
        if (absl::Status e = AddEvaluation(q, &*s); !e.ok()) return e;
        WriteJson(*s, res);
        return absl::OkStatus();
      }
      case RouteId::kGetRules: {
        absl::StatusOr<std::optional<v1::RulesetActivated>> r = backend_.views->ActiveRuleSet();
        if (!r.ok()) return r.status();
        if (!r->has_value()) {
          return absl::NotFoundError(
              "no rule set is active yet: the daemon activates one at start; if it just "
              "started, retry in a moment");
        }
        WriteJson(**r, res);
        return absl::OkStatus();
      }
      case RouteId::kReloadRules: {
        absl::StatusOr<v1::ReloadRulesResponse> r = backend_.reload_rules();
        if (!r.ok()) return r.status();
        spdlog::info("http: {} reloaded the rules: {}", actor.user(),
                     r->activated() ? "activated " + r->sha256().substr(0, 12) : "unchanged");
        WriteJson(*r, res);
        return absl::OkStatus();
      }
      case RouteId::kBackup: {
        absl::StatusOr<v1::BackupResponse> r = backend_.backup();
        if (!r.ok()) return r.status();
        spdlog::info("http: {} took a backup of the event log: {}", actor.user(), r->path());
        WriteJson(*r, res, 201);
        return absl::OkStatus();
      }
      case RouteId::kListEvents:
        return ListEvents(q, res);
      case RouteId::kChanges:
        return Changes(res);
    }
    return absl::InternalError("route without a handler");
  }

  absl::Status ListDevices(const Query& q, httplib::Response& res) {
    absl::StatusOr<DeviceListQuery> query = ParseDeviceListQuery(q);
    if (!query.ok()) return query.status();
    if (!query->filter.kind_id.empty()) {
      absl::StatusOr<v1::ActivatedCatalogue> in_force = backend_.views->CatalogueInForce();
      if (!in_force.ok()) return in_force.status();
      if (catalogue::FindKind(in_force->catalogue(), query->filter.kind_id) == nullptr) {
        std::vector<std::string> ids;
        for (const v1::DeviceKindSpec& k : in_force->catalogue().kinds()) ids.push_back(k.id());
        return absl::InvalidArgumentError(absl::StrFormat(
            "query parameter 'kind' has no value '%s': the catalogue in force has no such "
            "kind; use one of: %s",
            query->filter.kind_id, absl::StrJoin(ids, ", ")));
      }
    }
    absl::StatusOr<views::Page<v1::DeviceView>> page = backend_.views->ListDevices(
        query->filter, query->paging.page_size, query->paging.page_token);
    if (!page.ok()) return page.status();
    v1::ListDevicesResponse out;
    for (v1::DeviceView& d : page->items) *out.add_devices() = std::move(d);
    out.set_next_page_token(page->next_page_token);
    WriteJson(out, res);
    return absl::OkStatus();
  }

  absl::Status GetDevice(const std::string& id, httplib::Response& res) {
    absl::StatusOr<std::optional<v1::DeviceView>> d = backend_.views->GetDevice(id);
    if (!d.ok()) return d.status();
    if (!d->has_value()) {
      return absl::NotFoundError(absl::StrFormat(
          "device %s is not known: it is not registered and has sent no reading (the read "
          "models may lag the log by a moment)",
          id));
    }
    v1::DeviceDetail out;
    *out.mutable_device() = **std::move(d);
    views::AlertFilter f;
    f.device_id = id;
    std::vector<v1::AlertView> alerts;
    std::string token;
    do {
      absl::StatusOr<views::Page<v1::AlertView>> page =
          backend_.views->ListAlerts(f, kMaxPageSize, token);
      if (!page.ok()) return page.status();
      for (v1::AlertView& a : page->items) alerts.push_back(std::move(a));
      token = page->next_page_token;
    } while (!token.empty());
    std::sort(alerts.begin(), alerts.end(), [](const v1::AlertView& a, const v1::AlertView& b) {
      return std::make_pair(a.raised_time().seconds(), a.raised_time().nanos()) >
             std::make_pair(b.raised_time().seconds(), b.raised_time().nanos());
    });
    if (alerts.size() > kDeviceAlerts) alerts.resize(kDeviceAlerts);
    for (v1::AlertView& a : alerts) *out.add_alerts() = std::move(a);
    WriteJson(out, res);
    return absl::OkStatus();
  }

  // The catalogue in force. The built-in one's digest is that of its compiled-in text.
  absl::Status Catalogue(httplib::Response& res) {
    absl::StatusOr<v1::ActivatedCatalogue> in_force = backend_.views->CatalogueInForce();
    if (!in_force.ok()) return in_force.status();
    v1::CatalogueResponse out;
    *out.mutable_catalogue() = std::move(*in_force->mutable_catalogue());
    out.set_sha256(in_force->sha256());
    out.set_source_path(in_force->source_path());
    out.set_built_in(in_force->source_path() == catalogue::kDefaultCatalogueFile);
    if (out.sha256().empty() && out.built_in()) {
      out.set_sha256(rules::Sha256Hex(catalogue::BuiltInCatalogue().source_yaml));
    }
    WriteJson(out, res);
    return absl::OkStatus();
  }

  // The map changes only when the read models commit: it is built once per commit.
  absl::Status Map(httplib::Response& res) {
    std::vector<std::pair<uint32_t, uint64_t>> key;
    for (const views::PartitionLag& l : backend_.views->Lag()) {
      key.emplace_back(l.partition.value(), l.next.value());
    }
    absl::MutexLock lock(&map_mu_);
    if (key != map_key_ || map_json_.empty()) {
      v1::DeviceMap map;
      std::string token;
      do {
        absl::StatusOr<views::Page<v1::DeviceView>> page =
            backend_.views->ListDevices({}, kMaxPageSize, token);
        if (!page.ok()) return page.status();
        for (const v1::DeviceView& d : page->items) {
          v1::MapPoint* p = map.add_points();
          p->set_device_id(d.device_id());
          p->set_kind(d.kind());
          p->set_kind_id(d.kind_id());
          p->set_latitude_deg(d.registration().location().latitude_deg());
          p->set_longitude_deg(d.registration().location().longitude_deg());
          p->set_alert_severity(d.alert_severity());
          p->set_online(d.online());
          p->set_registered(d.registered());
          p->set_grid_code(d.registration().grid().grid_code());
        }
        token = page->next_page_token;
      } while (!token.empty());
      map_json_ = ToJson(map);
      map_key_ = std::move(key);
    }
    res.set_content(map_json_, "application/json");
    return absl::OkStatus();
  }

  absl::Status ListAlerts(const Query& q, httplib::Response& res) {
    absl::StatusOr<AlertListQuery> query = ParseAlertListQuery(q);
    if (!query.ok()) return query.status();
    absl::StatusOr<views::Page<v1::AlertView>> page = backend_.views->ListAlerts(
        query->filter, query->paging.page_size, query->paging.page_token);
    if (!page.ok()) return page.status();
    v1::ListAlertsResponse out;
    for (v1::AlertView& a : page->items) *out.add_alerts() = std::move(a);
    out.set_next_page_token(page->next_page_token);
    WriteJson(out, res);
    return absl::OkStatus();
  }

  absl::Status ListCases(const Query& q, httplib::Response& res) {
    absl::StatusOr<CaseListQuery> query = ParseCaseListQuery(q);
    if (!query.ok()) return query.status();
    absl::StatusOr<views::Page<v1::CaseView>> page =
        backend_.views->ListCases(query->filter, query->paging.page_size, query->paging.page_token);
    if (!page.ok()) return page.status();
    v1::ListCasesResponse out;
    for (v1::CaseView& c : page->items) *out.add_cases() = std::move(c);
    out.set_next_page_token(page->next_page_token);
    WriteJson(out, res);
    return absl::OkStatus();
  }

  // A case is read from its own stream in the log, not the read models: it is what the
  // next command will be checked against, and never behind.
  absl::Status GetCase(const std::string& id, httplib::Response& res) {
    absl::StatusOr<v1::CaseView> view = backend_.workflow->Load(id);
    if (!view.ok()) return view.status();
    v1::CaseDetail out;
    const std::string stream = projections::CaseStream(id);
    for (uint64_t from = 1;;) {
      absl::StatusOr<std::vector<v1::Event>> events =
          backend_.log->ReadStream(stream, kernel::StreamVersion(from), kMaxPageSize);
      if (!events.ok()) return events.status();
      for (v1::Event& e : *events) *out.add_timeline() = std::move(e);
      if (events->size() < kMaxPageSize) break;
      from += events->size();
    }
    if (view->stage() == v1::CASE_STAGE_CLOSED) {
      *out.mutable_time_in_stage() = view->stage_durations();
      *out.mutable_handling_time() = view->total_handling_time();
    } else {
      const absl::Time now =
          std::max(backend_.clock->Now(), kernel::FromTimestamp(view->stage_time()));
      for (const v1::StageDuration& d : projections::StageDurations(*view, now)) {
        *out.add_time_in_stage() = d;
      }
      kernel::ToDurationProto(projections::TotalHandlingTime(*view, now),
                              out.mutable_handling_time());
      kernel::SetTimestamp(now, out.mutable_as_of());
    }
    *out.mutable_case_() = *std::move(view);
    WriteJson(out, res);
    return absl::OkStatus();
  }

  absl::Status CaseCommand(const std::string& case_id, const std::string& name,
                           const httplib::Request& req, const v1::Actor& actor,
                           httplib::Response& res) {
    absl::StatusOr<const CaseCommandSpec*> spec = FindCaseCommand(name);
    if (!spec.ok()) return spec.status();
    const std::string action = absl::StrFormat("%s case %s", name, case_id);
    if (absl::Status s = AccessPolicy::RequireRole(actor, (*spec)->role, action); !s.ok()) {
      return s;
    }
    v1::CaseCommandRequest body;
    if (absl::Status s = ParseCaseCommandBody(name, **spec, req.get_header_value("Content-Type"),
                                              req.body, &body);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<v1::CaseView> view = backend_.workflow->Load(case_id);
    if (!view.ok()) return view.status();
    if ((*spec)->unit_must_cover) {
      if (absl::Status s = AccessPolicy::RequireUnitCovers(actor, view->grid(), action); !s.ok()) {
        return s;
      }
    }
    projections::CaseCommand command;
    command.kind = (*spec)->kind;
    command.case_id = case_id;
    command.actor = actor;
    command.request_id = body.request_id();
    command.department = body.department();
    command.level = body.level();
    command.result = body.result();
    command.passed = body.passed();
    command.note = body.note();
    command.reason = body.reason();
    return Execute(command, res, 200);
  }

  absl::Status Report(const httplib::Request& req, const v1::Actor& actor, httplib::Response& res) {
    v1::ReportRequest body;
    if (absl::Status s = ParseReportBody(req.get_header_value("Content-Type"), req.body, &body);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = AccessPolicy::RequireUnitCovers(
            actor, body.grid(), absl::StrFormat("report case %s", body.case_id()));
        !s.ok()) {
      return s;
    }
    projections::CaseCommand command;
    command.kind = projections::CommandKind::kReport;
    command.actor = actor;
    command.request_id = body.request_id();
    v1::CaseReported& r = command.report;
    r.set_case_id(body.case_id());
    r.set_source(body.source());
    *r.mutable_grid() = body.grid();
    *r.mutable_location() = body.location();
    *r.mutable_category() = body.category();
    r.set_description(body.description());
    r.set_reporter(body.reporter());
    return Execute(command, res, 201);
  }

  absl::Status Execute(const projections::CaseCommand& command, httplib::Response& res,
                       int status) {
    absl::StatusOr<projections::CommandResult> result = backend_.workflow->Execute(command);
    if (!result.ok()) return result.status();
    v1::CommandResponse out;
    *out.mutable_case_() = std::move(result->view);
    for (const kernel::EventPosition& p : result->appended) {
      v1::EventRef* ref = out.add_appended();
      ref->set_partition(p.partition.value());
      ref->set_sequence(p.sequence.value());
    }
    out.set_duplicate(result->duplicate);
    spdlog::info("http: {} ({}): {} case {}{}", command.actor.user(),
                 projections::UnitName(command.actor.unit()),
                 projections::CommandName(command.kind), out.case_().case_id(),
                 result->duplicate ? " (repeated request, done before)" : "");
    WriteJson(out, res, result->duplicate ? 200 : status);
    return absl::OkStatus();
  }

  absl::Status ListEvents(const Query& q, httplib::Response& res) {
    absl::StatusOr<EventsQuery> query = ParseEventsQuery(q);
    if (!query.ok()) return query.status();
    const uint64_t limit = query->limit;
    v1::ListEventsResponse out;
    if (!query->stream.empty()) {
      absl::StatusOr<std::vector<v1::Event>> events =
          backend_.log->ReadStream(query->stream, kernel::StreamVersion(query->from), limit);
      if (!events.ok()) return events.status();
      for (v1::Event& e : *events) *out.add_events() = std::move(e);
      if (out.events_size() == static_cast<int>(limit)) {
        out.set_next_from(out.events(out.events_size() - 1).stream_version() + 1);
      }
    } else {
      const kernel::Partition partition(query->partition);
      const std::vector<kernel::Partition> partitions = backend_.log->Partitions();
      if (std::find(partitions.begin(), partitions.end(), partition) == partitions.end()) {
        std::vector<std::string> held;
        for (kernel::Partition p : partitions) held.push_back(absl::StrCat(p.value()));
        return absl::NotFoundError(
            absl::StrFormat("partition %d holds no events; these do: %s", query->partition,
                            held.empty() ? std::string("none yet") : absl::StrJoin(held, ", ")));
      }
      absl::StatusOr<std::vector<v1::Event>> events =
          backend_.log->Read(partition, kernel::Sequence(query->from), limit);
      if (!events.ok()) return events.status();
      for (v1::Event& e : *events) *out.add_events() = std::move(e);
      if (out.events_size() == static_cast<int>(limit)) {
        out.set_next_from(out.events(out.events_size() - 1).sequence() + 1);
      }
    }
    WriteJson(out, res);
    return absl::OkStatus();
  }

  absl::Status Changes(httplib::Response& res) {
    // A stream past the limit is served on the requests' threads (api/front_door.h) and
    // must not hold one of them.
    const bool over =
        !FrontDoor::OnStreamLane() || streams_.fetch_add(1) >= options_.max_event_streams;
    if (over) {
      if (FrontDoor::OnStreamLane()) streams_.fetch_sub(1);
      return absl::UnavailableError(absl::StrFormat(
          "%d event streams are open, the limit of http.max_event_streams; close one or raise "
          "the limit",
          options_.max_event_streams));
    }
    std::shared_ptr<ChangeFeed::Subscription> sub = feed_.Subscribe();
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Accel-Buffering", "no");
    struct StreamState {
      bool started = false;
      absl::Time last_statistics = absl::InfinitePast();
      absl::Time last_write = absl::InfinitePast();
    };
    auto state = std::make_shared<StreamState>();
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, sub, state](size_t, httplib::DataSink& sink) {
          if (stopped_.load() || sub->closed()) return false;
          std::string out;
          if (!state->started) {
            out += "retry: 2000\n\n";
            state->started = true;
          }
          bool overflowed = false;
          for (const Change& c : sub->Next(absl::Milliseconds(250), &overflowed)) {
            absl::StrAppend(&out, "id: ", c.id, "\nevent: ", c.type, "\ndata: ", c.json, "\n\n");
          }
          if (overflowed) out += "event: resync\ndata: {}\n\n";
          const absl::Time now = absl::Now();
          if (now - state->last_statistics >= options_.statistics_interval) {
            state->last_statistics = now;
            if (absl::StatusOr<v1::Statistics> s = backend_.views->GetStatistics(); s.ok()) {
              pb::util::JsonPrintOptions one_line;
              one_line.always_print_primitive_fields = true;
              std::string json;
              if (pb::util::MessageToJsonString(*s, &json, one_line).ok()) {
                absl::StrAppend(&out, "event: statistics\ndata: ", json, "\n\n");
              }
            }
          }
          if (out.empty() && now - state->last_write >= absl::Seconds(15)) out = ": keepalive\n\n";
          if (out.empty()) return true;
          state->last_write = now;
          return sink.write(out.data(), out.size());
        },
        [this](bool) { streams_.fetch_sub(1); });
    return absl::OkStatus();
  }

  std::string Metrics() {
    MetricsText m;
    if (backend_.metrics) backend_.metrics(m);
    if (absl::StatusOr<v1::Statistics> s = backend_.views->GetStatistics(); s.ok()) {
      MetricsText::Family& open =
          m.Add("cityops_cases_open", "gauge",
                "Open cases by stage (cases not closed), from the read models.");
      for (const v1::Count& c : s->by_stage()) {
        if (c.key() == "CASE_STAGE_CLOSED") continue;
        open.Sample({{"stage", ShortName(c.key(), "CASE_STAGE_")}}, static_cast<double>(c.count()));
      }
      m.Add("cityops_cases_overdue", "gauge", "Open cases past a deadline, by light.")
          .Sample({{"level", "yellow"}}, static_cast<double>(s->overdue_yellow()))
          .Sample({{"level", "red"}}, static_cast<double>(s->overdue_red()));
      m.Add("cityops_cases_total", "gauge",
            "Cases opened so far (reports linked into another case not counted).")
          .Sample({}, static_cast<double>(s->cases_total()));
      m.Add("cityops_alerts_active", "gauge", "Active alerts.")
          .Sample({}, static_cast<double>(s->alerts_active()));
      m.Add("cityops_devices", "gauge", "Devices known to the read models, by state.")
          .Sample({{"state", "online"}}, static_cast<double>(s->devices_online()))
          .Sample({{"state", "offline"}},
                  static_cast<double>(s->devices_total() - s->devices_online()))
          .Sample({{"state", "unregistered"}}, static_cast<double>(s->devices_unregistered()));
    }
    m.Add("cityops_http_event_streams", "gauge", "Open server-sent-event streams.")
        .Sample({}, streams_.load());
    const ConnectionStats c = server_.stats();
    m.Add("cityops_http_connections", "gauge",
          "Open HTTP connections by state: idle (keep-alive, waiting for its next request), "
          "receiving (its request has not arrived whole), serving (a whole request queued or "
          "being answered, event streams included).")
        .Sample({{"state", "idle"}}, static_cast<double>(c.idle))
        .Sample({{"state", "receiving"}}, static_cast<double>(c.receiving))
        .Sample({{"state", "serving"}}, static_cast<double>(c.serving));
    m.Add("cityops_http_connections_accepted_total", "counter",
          "HTTP connections accepted, refused ones included.")
        .Sample({}, static_cast<double>(c.accepted));
    m.Add("cityops_http_connections_refused_total", "counter",
          "HTTP connections refused (503) at once, by reason: per_client (the client address "
          "had http.max_connections_per_client open), total (http.max_connections open, none "
          "of them waiting).")
        .Sample({{"reason", "per_client"}}, static_cast<double>(c.refused_per_client))
        .Sample({{"reason", "total"}}, static_cast<double>(c.refused_total));
    m.Add("cityops_http_connections_closed_total", "counter",
          "HTTP connections the server closed by a limit, by reason: request_timeout (the "
          "request had not arrived whole within http.request_timeout), idle_timeout (no next "
          "request within http.idle_timeout), evicted (the longest waiting, closed at "
          "http.max_connections to let a new one in), header_too_large (431).")
        .Sample({{"reason", "request_timeout"}}, static_cast<double>(c.request_timeouts))
        .Sample({{"reason", "idle_timeout"}}, static_cast<double>(c.idle_timeouts))
        .Sample({{"reason", "evicted"}}, static_cast<double>(c.evicted))
        .Sample({{"reason", "header_too_large"}}, static_cast<double>(c.headers_too_large));
    if (const std::shared_ptr<const TlsContext> tls = server_.tls(); tls != nullptr) {
      m.Add("cityops_http_tls_handshakes_total", "counter",
            "TLS handshakes completed with HTTPS clients.")
          .Sample({}, static_cast<double>(c.tls_handshakes));
      m.Add("cityops_http_tls_handshake_failures_total", "counter",
            "TLS handshakes that failed: the client spoke no TLS (plain HTTP to the HTTPS "
            "port), refused the certificate, or closed mid-handshake. One that had not "
            "completed within http.request_timeout counts as a request_timeout instead.")
          .Sample({}, static_cast<double>(c.tls_handshake_failures));
      m.Add("cityops_http_tls_certificate_expiry_seconds", "gauge",
            "The end of the validity (notAfter) of the certificate new HTTPS connections "
            "get, in Unix seconds: alert well before time() reaches it.")
          .Sample({}, static_cast<double>(absl::ToUnixSeconds(tls->not_after())));
    }
    MetricsText::Family& failures =
        m.Add("cityops_api_auth_failures_total", "counter",
              "Requests refused for failed authentication (401), by reason: no_token, "
              "malformed_header, unknown_token.");
    for (size_t i = 0; i < std::size(kAuthFailures); ++i) {
      failures.Sample({{"reason", std::string(RefusalLabel(kAuthFailures[i]))}},
                      static_cast<double>(auth_failures_[i].load()));
    }
    m.Add("cityops_api_auth_rate_limited_total", "counter",
          "Requests answered 429 without a token check: their client failed authentication "
          "too often (http.auth_failure_limit).")
        .Sample({}, static_cast<double>(rate_limited_.load()));
    MetricsText::Family& requests = m.Add("cityops_http_requests_total", "counter",
                                          "HTTP requests answered, by route and status.");
    absl::MutexLock lock(&counts_mu_);
    for (const auto& [key, n] : requests_) {
      requests.Sample({{"route", key.first}, {"code", absl::StrCat(key.second)}},
                      static_cast<double>(n));
    }
    return m.Render();
  }

  ServerOptions options_;
  Backend backend_;
  // Swapped whole by SetTokens; a request authenticates against the one in place when it
  // starts.
  mutable absl::Mutex access_mu_;
  std::shared_ptr<const AccessPolicy> access_ ABSL_GUARDED_BY(access_mu_);
  AuthFailureLimiter limiter_;
  std::array<std::atomic<uint64_t>, std::size(kAuthFailures)> auth_failures_{};
  std::atomic<uint64_t> rate_limited_{0};
  ChangeFeed feed_;
  FrontDoor server_;
  std::thread thread_;
  std::thread feed_thread_;
  int port_ = -1;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> listen_returned_{false};
  std::atomic<int> streams_{0};
  absl::Mutex counts_mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_ ABSL_GUARDED_BY(counts_mu_);
  absl::Mutex map_mu_;
  std::vector<std::pair<uint32_t, uint64_t>> map_key_ ABSL_GUARDED_BY(map_mu_);
  std::string map_json_ ABSL_GUARDED_BY(map_mu_);
  // Case events kept between the statistics' evaluations: a repeated question (the
  // dashboard's department league) reads only the cases that changed.
  projections::CaseStreamCache evaluation_cache_;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const ServerOptions& options,
                                                              const Backend& backend) {
  if (backend.log == nullptr || backend.views == nullptr || backend.workflow == nullptr ||
      !backend.health) {
    return absl::InvalidArgumentError(
        "the HTTP server needs a log, read models, a workflow "
        "and a health callback");
  }
  auto impl = std::make_unique<Impl>(options, backend);
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;
int HttpServer::port() const { return impl_->port(); }
void HttpServer::SetTokens(const std::vector<v1::ApiToken>& tokens) { impl_->SetTokens(tokens); }
absl::Status HttpServer::SetTls(std::shared_ptr<const TlsContext> tls) {
  return impl_->SetTls(std::move(tls));
}
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace cityops::api
