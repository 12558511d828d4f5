#include "daemon/daemon.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "api/http_server.h"
#include "catalogue/catalogue.h"
#include "catalogue/kinds.h"
#include "daemon/config.h"
#include "daemon/rule_activation.h"
#include "ingest/embedded_kafka.h"
#include "ingest/ingester.h"
#include "kernel/proto_time.h"
#include "projections/rules/rules_stage.h"
#include "projections/ticket_outbox.h"
#include "projections/views/views.h"
#include "projections/workflow.h"
#include "spdlog/spdlog.h"

namespace cityops::daemon {

namespace {

// The read models count as caught up within this many events of the log's end.
constexpr uint64_t kReadyLag = 10'000;

std::vector<std::pair<std::string, std::string>> KafkaProperties(const v1::KafkaConfig& k) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const v1::KafkaProperty& p : k.properties()) out.emplace_back(p.name(), p.value());
  return out;
}

v1::StageHealth* AddStage(v1::HealthResponse* h, const char* name, const char* state,
                          std::string detail = {}) {
  v1::StageHealth* s = h->add_stages();
  s->set_name(name);
  s->set_state(state);
  s->set_detail(std::move(detail));
  return s;
}

// The start's refusal of a damaged log (DATA_LOSS: RocksDB found Corruption on open or
// in the first reads): what is damaged, as the kernel names it, and what to do. A full
// check of every block is no part of a start (it reads the whole log); `cityops log
// verify` does it.
absl::Status RefuseDamagedLog(const absl::Status& status, const std::string& data_dir) {
  if (!absl::IsDataLoss(status)) return status;
  return absl::DataLossError(absl::StrFormat(
      "refusing to start: the event log in %s is damaged: %s. Run 'cityops log verify "
      "--data-dir %s' for every damaged file and the partitions and sequences it holds, then "
      "restore the data directory from a backup made with 'cityops log backup' (see "
      "OPERATIONS.md, \"A damaged log\"); no changelog topic exists yet to restore from",
      data_dir, status.message(), data_dir));
}

}  // namespace

class Daemon::Impl {
 public:
  explicit Impl(const DaemonOptions& options)
      : options_(options),
        config_(options.config),
        tokens_(options.config.tokens().begin(), options.config.tokens().end()) {}

  ~Impl() {
    RequestStop();
    (void)Wait();
  }

  absl::Status Start() {
    // The API's exposure first: nothing starts that a refusal would have to stop.
    if (absl::Status s = CheckPlaintextExposure(config_.http()); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("refusing to start: http.", s.message()));
    }
    absl::StatusOr<std::shared_ptr<const api::TlsContext>> tls = LoadTls(config_.http());
    if (!tls.ok()) return tls.status();
    tls_ = *std::move(tls);
    const v1::KafkaConfig& kafka = config_.kafka();
    kernel::EventLogOptions log_options;
    log_options.path = config_.data_dir();
    log_options.clock = kernel::Clock::Real();
    log_options.memtable_budget_bytes = size_t{config_.log_memtable_mib()} << 20;
    log_options.durability = config_.durability() == "buffered"
                                 ? kernel::Durability::kBuffered
                                 : kernel::Durability::kSyncEachAppend;
    log_options.testing = options_.log_testing;
    absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(log_options);
    if (!log.ok()) return RefuseDamagedLog(log.status(), config_.data_dir());
    log_ = *std::move(log);
    spdlog::info("daemon: event log {} ({} partitions hold events)", config_.data_dir(),
                 log_->Partitions().size());

    absl::StatusOr<v1::ReloadRulesResponse> rules = ReloadRules();
    if (!rules.ok()) return rules.status();

    std::string bootstrap = kafka.bootstrap_servers();
    if (UsesEmbeddedKafka(config_)) {
      const int p = kafka.embedded_partitions();
      const v1::KafkaTopics& t = kafka.topics();
      absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> embedded =
          ingest::EmbeddedKafka::Start({.brokers = 1,
                                        .topics = {{t.readings(), p},
                                                   {t.reports(), p},
                                                   {t.devices(), p},
                                                   {t.deadletter(), 1},
                                                   {t.tickets(), p}}});
      if (!embedded.ok()) return embedded.status();
      embedded_ = *std::move(embedded);
      bootstrap = embedded_->bootstrap_servers();
      spdlog::warn(
          "daemon: DEVELOPMENT MODE: no kafka.bootstrap_servers configured, so the built-in "
          "Kafka cluster runs in this process at {}; its topics live in memory and are lost "
          "when the daemon stops",
          bootstrap);
    }
    bootstrap_ = bootstrap;

    absl::StatusOr<std::unique_ptr<views::Projections>> views =
        views::Projections::Open({.log = log_.get(), .dir = config_.data_dir() + "/views"});
    if (!views.ok()) return views.status();
    views_ = *std::move(views);

    // Partitions of the log = partitions of the input topics. With real brokers the
    // daemon learns them from ingest's assignment (see RunRules).
    partitions_ =
        UsesEmbeddedKafka(config_) ? static_cast<uint32_t>(kafka.embedded_partitions()) : 0;
    projections::CaseWorkflow::Options workflow;
    workflow.log = log_.get();
    workflow.clock = options_.clock;
    workflow.partitions = partitions_;  // 0 with real brokers: set once learned (RunRules).
    workflow_ = std::make_unique<projections::CaseWorkflow>(workflow);

    projections::OutboxOptions outbox;
    outbox.log = log_.get();
    outbox.bootstrap_servers = bootstrap;
    outbox.topic = kafka.topics().tickets();
    outbox.kafka_properties = KafkaProperties(kafka);
    absl::StatusOr<std::unique_ptr<projections::TicketOutbox>> created =
        projections::TicketOutbox::Create(outbox);
    if (!created.ok()) return created.status();
    outbox_ = *std::move(created);

    // The kinds ingest accepts (their metrics, codes, bounds and archive fields), from the
    // configured catalogue as it is at start (a changed catalogue takes effect at the next
    // start).
    absl::StatusOr<catalogue::LoadedCatalogue> catalogue =
        catalogue::LoadConfiguredCatalogue(config_.catalogue().file());
    if (!catalogue.ok()) return catalogue.status();

    ingest::IngestOptions ingest;
    ingest.validation.kinds = catalogue::KindTable::FromCatalogue(catalogue->catalogue);
    ingest.bootstrap_servers = bootstrap;
    ingest.group_id = kafka.group_id();
    ingest.topics.readings = kafka.topics().readings();
    ingest.topics.reports = kafka.topics().reports();
    ingest.topics.devices = kafka.topics().devices();
    ingest.topics.deadletter = kafka.topics().deadletter();
    ingest.kafka_properties = KafkaProperties(kafka);
    ingest.max_batch_records = static_cast<size_t>(config_.ingest().max_batch_records());
    ingest.clock_tick_interval = ClockTickInterval(config_);
    ingest.clock_tick_delay = ClockTickDelay(config_);
    ingest.clock = options_.clock;
    if (embedded_ != nullptr) {
      // The embedded topics start empty on every run: positions from an earlier run lie
      // past their end, which is expected here. Keep rebalances quick.
      ingest.accept_recreated_topics = true;
      ingest.consumer_properties = {{"session.timeout.ms", "6000"},
                                    {"heartbeat.interval.ms", "1000"}};
    }
    absl::StatusOr<std::unique_ptr<ingest::Ingester>> ingester =
        ingest::Ingester::Create(log_.get(), ingest);
    if (!ingester.ok()) return ingester.status();
    ingester_ = *std::move(ingester);

    api::ServerOptions http;
    http.listen_address = config_.http().listen_address();
    http.port = config_.http().port();
    http.max_body_bytes = static_cast<size_t>(config_.http().max_body_bytes());
    http.max_event_streams = config_.http().max_event_streams();
    http.max_connections = config_.http().max_connections();
    http.max_connections_per_client = config_.http().max_connections_per_client();
    http.request_timeout = kernel::FromDurationProto(config_.http().request_timeout());
    http.idle_timeout = kernel::FromDurationProto(config_.http().idle_timeout());
    http.workers = config_.http().workers();
    http.tls = tls_;
    http.dashboard = config_.http().dashboard();
    http.tokens.assign(config_.tokens().begin(), config_.tokens().end());
    const v1::AuthFailureLimit& limit = config_.http().auth_failure_limit();
    http.auth_limits.failures = limit.failures();
    http.auth_limits.window = kernel::FromDurationProto(limit.window());
    http.auth_limits.max_clients = static_cast<size_t>(limit.clients());
    api::Backend backend;
    backend.log = log_.get();
    backend.views = views_.get();
    backend.workflow = workflow_.get();
    backend.clock = options_.clock;
    backend.reload_rules = [this] { return ReloadRules(); };
    backend.backup = [this] { return Backup(); };
    backend.health = [this](bool ready) { return Health(ready); };
    backend.metrics = [this](api::MetricsText& m) { Metrics(m); };
    absl::StatusOr<std::unique_ptr<api::HttpServer>> server = api::HttpServer::Start(http, backend);
    if (!server.ok()) return server.status();
    http_ = *std::move(server);
    if (absl::Status s = WritePortFile(); !s.ok()) return s;
    if (config_.tokens_size() == 0) {
      spdlog::warn(
          "daemon: no API tokens are configured: every API request but /healthz, "
          "/readyz, /metrics and the dashboard's files is refused (401)");
    }
    if (tls_ != nullptr) {
      spdlog::info("daemon: HTTPS with the certificate {} ({})", tls_->cert_path(),
                   tls_->Describe());
      WarnOfExpiry(*tls_);
    } else if (!IsLoopbackAddress(config_.http().listen_address())) {
      spdlog::warn(
          "daemon: http.allow_plaintext: the API and the dashboard listen on {}:{} beyond "
          "this machine in plain HTTP: API tokens and the city's data cross the network "
          "unencrypted unless a TLS-terminating proxy in front sees to it. Set http.tls.cert "
          "and http.tls.key to serve HTTPS (OPERATIONS.md, \"TLS\")",
          config_.http().listen_address(), http_->port());
    }

    threads_.emplace_back([this] { Track("ingest", ingester_->Run()); });
    threads_.emplace_back([this] { Track("views", views_->Run()); });
    threads_.emplace_back([this] { Track("outbox", outbox_->Run()); });
    threads_.emplace_back([this] { Track("rules", RunRules()); });
    threads_.emplace_back([this] { WatchReadiness(); });
    threads_.emplace_back([this] { WatchDisk(); });

    Announce(
        absl::StrFormat("kafka: %s%s", bootstrap_,
                        embedded_ ? " (embedded development cluster: topics live in memory)" : ""));
    Announce(absl::StrFormat("http: %s://%s:%d/", tls_ != nullptr ? "https" : "http",
                             AddressForUrl(), http_->port()));
    started_ = true;
    return absl::OkStatus();
  }

  absl::Status Wait() {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&stop_requested_));
      if (shut_down_) return failure_;
      shut_down_ = true;
    }
    if (started_) spdlog::info("daemon: stopping");
    // Commands and event streams first, then input: ingest stores the batch in hand.
    if (http_ != nullptr) http_->Stop();
    if (ingester_ != nullptr) ingester_->Stop();
    {
      absl::MutexLock lock(&mu_);
      if (rules_ != nullptr) rules_->Stop();
    }
    if (views_ != nullptr) views_->Stop();
    if (outbox_ != nullptr) outbox_->Stop();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    ingester_.reset();
    outbox_.reset();
    {
      absl::MutexLock lock(&mu_);
      rules_.reset();
    }
    {
      absl::MutexLock lock(&tokens_mu_);  // A SIGHUP now finds no server to give tokens to.
      http_.reset();
    }
    views_.reset();
    embedded_.reset();
    log_.reset();
    absl::MutexLock lock(&mu_);
    if (started_ && failure_.ok()) {
      spdlog::info("daemon: stopped cleanly; every stage resumes from its checkpoint");
    }
    return failure_;
  }

  void RequestStop() {
    absl::MutexLock lock(&mu_);
    stop_requested_ = true;
  }

  absl::StatusOr<v1::ReloadRulesResponse> ReloadRules() {
    absl::MutexLock reload(&reload_mu_);
    absl::StatusOr<rules::LoadedRuleSet> loaded =
        LoadConfiguredRuleSet(config_.rules().file(), config_.catalogue().file());
    if (!loaded.ok()) return loaded.status();
    absl::StatusOr<Activation> a = ActivateRuleSet(*log_, *loaded, options_.clock->Now());
    if (!a.ok()) return a.status();
    v1::ReloadRulesResponse out;
    out.set_activated(a->activated);
    out.set_name(loaded->rule_set.name());
    out.set_sha256(loaded->sha256);
    out.set_source_path(loaded->source_path);
    if (a->activated) {
      out.mutable_event()->set_partition(a->position.partition.value());
      out.mutable_event()->set_sequence(a->position.sequence.value());
      spdlog::info("daemon: activated rule set '{}' from {} ({} rules, sha256 {})",
                   loaded->rule_set.name(), loaded->source_path, loaded->rule_set.rules_size(),
                   loaded->sha256.substr(0, 12));
    } else {
      spdlog::info("daemon: rule set '{}' from {} is the active one already",
                   loaded->rule_set.name(), loaded->source_path);
    }
    return out;
  }

  absl::Status ReloadTokens() {
    absl::MutexLock reload(&tokens_mu_);
    const std::string& path = options_.config_path;
    if (path.empty()) {
      spdlog::info("daemon: started without a configuration file: no tokens to re-read");
      return absl::OkStatus();
    }
    if (http_ == nullptr) return absl::FailedPreconditionError("the daemon is stopping");
    // Tokens only: the certificate and key have a reload of their own (ReloadTls), and a
    // broken certificate must not keep a leaked token in place.
    absl::StatusOr<v1::ServeConfig> reread = LoadServeConfig(path, NamedFiles::kSkip);
    if (!reread.ok()) return reread.status();
    if (absl::Status s = CheckTokenFilePermissions(path, *reread); !s.ok()) return s;
    std::map<std::string, const v1::ApiToken*> before;
    std::map<std::string, const v1::ApiToken*> after;
    for (const v1::ApiToken& t : tokens_) before[t.token()] = &t;
    for (const v1::ApiToken& t : reread->tokens()) after[t.token()] = &t;
    std::vector<std::string> added;
    std::vector<std::string> removed;
    std::vector<std::string> changed;
    for (const auto& [secret, t] : after) {
      auto it = before.find(secret);
      if (it == before.end()) {
        added.push_back(t->user());
      } else if (it->second->SerializeAsString() != t->SerializeAsString()) {
        changed.push_back(t->user());
      }
    }
    for (const auto& [secret, t] : before) {
      if (!after.contains(secret)) removed.push_back(t->user());
    }
    std::vector<v1::ApiToken> tokens(reread->tokens().begin(), reread->tokens().end());
    http_->SetTokens(tokens);
    tokens_ = std::move(tokens);
    // Users, not secrets: a token is named by whom it stands for.
    std::string who;
    if (!added.empty()) absl::StrAppend(&who, "; added for ", absl::StrJoin(added, ", "));
    if (!removed.empty()) absl::StrAppend(&who, "; removed from ", absl::StrJoin(removed, ", "));
    if (!changed.empty()) {
      absl::StrAppend(&who, "; user, role or unit changed for ", absl::StrJoin(changed, ", "));
    }
    spdlog::info("daemon: tokens reloaded: {} tokens (added {}, removed {}) from {}{}",
                 tokens_.size(), added.size(), removed.size(), path, who);
    if (tokens_.empty()) {
      spdlog::warn(
          "daemon: no API tokens are configured now: every API request but /healthz, "
          "/readyz, /metrics and the dashboard's files is refused (401)");
    }
    if (const std::vector<std::string> restart = SettingsNeedingRestart(config_, *reread);
        !restart.empty()) {
      spdlog::warn(
          "daemon: {} changed {}, which needs a restart: until then the daemon keeps what it "
          "started with (SIGHUP applies only tokens and the contents of the rule set's and "
          "the TLS certificate's and key's files)",
          path, absl::StrJoin(restart, ", "));
    }
    return absl::OkStatus();
  }

  absl::Status ReloadTls() {
    absl::MutexLock reload(&tokens_mu_);           // Also keeps Wait() from taking http_ away.
    if (tls_ == nullptr) return absl::OkStatus();  // Plain HTTP: nothing to reload.
    if (http_ == nullptr) return absl::FailedPreconditionError("the daemon is stopping");
    absl::StatusOr<std::shared_ptr<const api::TlsContext>> loaded = LoadTls(config_.http());
    absl::Status set = loaded.ok() ? http_->SetTls(*loaded) : loaded.status();
    if (!set.ok()) {
      tls_reloads_failed_.fetch_add(1);
      return set;
    }
    tls_reloads_ok_.fetch_add(1);
    tls_ = *std::move(loaded);
    spdlog::info(
        "daemon: TLS certificate reloaded from {}: {}; new connections get it, open ones "
        "(event streams) keep the one they began with",
        tls_->cert_path(), tls_->Describe());
    WarnOfExpiry(*tls_);
    return absl::OkStatus();
  }

  // A consistent copy of the log in backups.dir, taken while everything runs.
  absl::StatusOr<v1::BackupResponse> Backup() {
    const std::string& dir = config_.backups().dir();
    if (dir.empty()) {
      return absl::FailedPreconditionError(
          "online backups are off: set backups.dir in the configuration (a directory on the "
          "same filesystem as data_dir is cheapest) and restart the daemon");
    }
    const absl::Time now = absl::Now();
    const std::string path = absl::StrFormat(
        "%s/cityops-%s", dir, absl::FormatTime("%Y%m%dT%H%M%E3SZ", now, absl::UTCTimeZone()));
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrFormat("cannot create the backup directory %s: %s", dir, ec.message()));
    }
    if (absl::Status s = log_->Backup(path); !s.ok()) return s;
    v1::BackupResponse out;
    out.set_path(path);
    kernel::SetTimestamp(now, out.mutable_taken_at());
    return out;
  }

  v1::HealthResponse Health(bool ready) const {
    v1::HealthResponse h;
    bool failed = false;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [stage, error] : stage_errors_) {
        AddStage(&h, stage.c_str(), "failed", error);
        failed = true;
      }
      if (stop_requested_ && !failed) AddStage(&h, "daemon", "stopped", "stopping");
    }
    // A full disk: the log takes no appends until there is room (/readyz 503, the reason).
    std::string disk_problem;
    if (log_ != nullptr) {
      if (const kernel::DiskFullState disk = log_->disk_full(); disk.full) {
        disk_problem = DiskProblem(disk);
        AddStage(&h, "log", "disk_full", disk.error);
      }
    }
    // Kafka out of reach: the process lives (/healthz 200) but the kernel is cut off from
    // its input (/readyz 503, with the reason).
    std::string kafka_problem;
    if (ingester_ != nullptr) {
      kafka_problem = ingester_->link().Problem(absl::Now());
      absl::StatusOr<std::vector<ingest::ConsumerLag>> lag = ingester_->Lag();
      uint64_t behind = 0;
      if (lag.ok()) {
        for (const ingest::ConsumerLag& l : *lag) behind += static_cast<uint64_t>(l.lag);
      }
      const bool assigned = lag.ok() && !lag->empty();
      if (!kafka_problem.empty() && ingester_->link().State().ever_connected) {
        // The watermarks are from before the loss: the lag is unknown, not `behind`.
        AddStage(&h, "ingest", "disconnected", kafka_problem + "; lag unknown until it is back");
      } else {
        AddStage(&h, "ingest", assigned ? "running" : "starting",
                 assigned                ? absl::StrFormat("%d topic partitions", lag->size())
                 : kafka_problem.empty() ? "joining the consumer group"
                                         : kafka_problem)
            ->set_lag(behind);
      }
    }
    if (views_ != nullptr) {
      uint64_t behind = 0;
      for (const views::PartitionLag& l : views_->Lag()) behind += l.lag;
      AddStage(&h, "views", behind <= kReadyLag ? "running" : "catching_up")->set_lag(behind);
    }
    {
      absl::MutexLock lock(&mu_);
      if (rules_ == nullptr) {
        AddStage(&h, "rules", "starting", "replaying the log up to its checkpoint");
      } else {
        uint64_t behind = 0;
        for (const rules::PartitionLag& l : rules_->Lag()) behind += l.lag;
        AddStage(&h, "rules", behind <= kReadyLag ? "running" : "catching_up")->set_lag(behind);
      }
    }
    const bool stopping = [&] {
      absl::MutexLock lock(&mu_);
      return stop_requested_;
    }();
    if (failed || stopping) {
      h.set_status("failing");
      for (const v1::StageHealth& stage : h.stages()) {
        if (stage.state() == "failed" || stage.state() == "stopped") {
          h.set_reason(absl::StrFormat("%s: %s", stage.name(), stage.detail()));
          break;
        }
      }
    } else if (ready && !ready_.load()) {
      h.set_status("starting");
      h.set_reason(kafka_problem.empty()
                       ? "waiting for ingest to own its partitions and the read models to catch up"
                       : kafka_problem);
    } else if (ready && !disk_problem.empty()) {
      h.set_status("unavailable");
      h.set_reason(disk_problem);
    } else if (ready && !kafka_problem.empty()) {
      h.set_status("unavailable");
      h.set_reason(kafka_problem);
    } else {
      h.set_status("ok");
    }
    return h;
  }

  bool Ready() const { return ready_.load(); }
  bool Stopping() const { return StopRequested(); }
  // While Kafka is unreachable the last known lag (the demo pauses on it).
  int64_t MaxConsumerLag() const {
    int64_t most = 0;
    if (absl::StatusOr<std::vector<ingest::ConsumerLag>> lag = ingester_->Lag(); lag.ok()) {
      for (const ingest::ConsumerLag& l : *lag) most = std::max(most, l.lag);
    }
    return most;
  }
  kernel::EventLog& log() { return *log_; }
  views::Projections& views() { return *views_; }
  const std::string& kafka_bootstrap() const { return bootstrap_; }
  int http_port() const { return http_ != nullptr ? http_->port() : -1; }

 private:
  static void WarnOfExpiry(const api::TlsContext& tls) {
    const absl::Duration left = tls.not_after() - absl::Now();
    if (left < absl::ZeroDuration()) {
      spdlog::error(
          "daemon: the TLS certificate {} expired {} days ago ({}): clients refuse it; put a "
          "renewed certificate and key in place and send SIGHUP (systemctl reload cityops)",
          tls.cert_path(), absl::ToInt64Hours(-left) / 24, tls.Describe());
    } else if (left < absl::Hours(24 * 14)) {
      spdlog::warn(
          "daemon: the TLS certificate {} expires in {} days ({}): renew it, then send SIGHUP "
          "(systemctl reload cityops)",
          tls.cert_path(), absl::ToInt64Hours(left) / 24, tls.Describe());
    }
  }

  void Announce(const std::string& line) {
    spdlog::info("daemon: {}", line);
    if (options_.announce != nullptr) *options_.announce << line << std::endl;
  }

  std::string AddressForUrl() const {
    const std::string& a = config_.http().listen_address();
    if (a == "0.0.0.0") return "127.0.0.1";
    if (a.find(':') != std::string::npos) return "[" + a + "]";
    return a;
  }

  absl::Status WritePortFile() {
    const std::string path = config_.data_dir() + "/http.port";
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << http_->port() << "\n";
      if (!out) return absl::UnavailableError("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return absl::UnavailableError("cannot write " + path);
    }
    return absl::OkStatus();
  }

  // Records how a stage's thread ended; an error stops the daemon.
  void Track(const std::string& stage, absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (status.ok()) return;
    spdlog::error("daemon: the {} stage failed and the daemon stops: {}", stage, status.ToString());
    stage_errors_.emplace_back(stage, std::string(status.message()));
    if (failure_.ok()) {
      failure_ =
          absl::Status(status.code(), absl::StrFormat("%s stage: %s", stage, status.message()));
    }
    stop_requested_ = true;
  }

  // The rules stage needs every partition of the input topics before it can merge them
  // in time order: with real brokers it learns how many there are from the readings
  // topic's metadata (not from an assignment, which may hold only some of them).
  absl::Status RunRules() {
    uint32_t partitions = partitions_;
    absl::Duration backoff = absl::Milliseconds(100);
    while (partitions == 0 && !StopRequested()) {
      absl::StatusOr<uint32_t> counted = ingester_->ReadingsPartitions(absl::Seconds(10));
      if (counted.ok()) {
        partitions = *counted;
        workflow_->SetPartitions(partitions);
        break;
      }
      spdlog::warn("daemon: rules stage waits for the readings topic: {}",
                   counted.status().ToString());
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
    if (StopRequested()) return absl::OkStatus();
    rules::RulesStageOptions options;
    options.log = log_.get();
    options.partitions = partitions;
    spdlog::info("daemon: rules stage: replaying the log up to its checkpoint");
    absl::StatusOr<std::unique_ptr<rules::RulesStage>> stage = rules::RulesStage::Open(options);
    if (!stage.ok()) return stage.status();
    spdlog::info("daemon: rules stage: running on {} partitions", partitions);
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        rules_ = *std::move(stage);
        if (stop_requested_) return absl::OkStatus();
      }
      absl::Status ran = rules_->Run();
      // A full disk: the stage's state is past what the log holds. Once there is room,
      // reopen it, which replays from its checkpoints (RulesStage::Step).
      if (!absl::IsUnavailable(ran) || !absl::StrContains(ran.message(), "disk full: ")) {
        return ran;
      }
      spdlog::warn("daemon: rules stage paused: {}", std::string(ran.message()));
      while (!StopRequested() && log_->disk_full().full) {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stop_requested_), absl::Milliseconds(200));
      }
      if (StopRequested()) return absl::OkStatus();
      stage = rules::RulesStage::Open(options);
      if (!stage.ok()) return stage.status();
      spdlog::info("daemon: rules stage reopened from its checkpoint: the log takes appends again");
    }
  }

  // While the log's disk is full: says so once, tries to resume the log every second
  // (ingest's and the stages' own appends also try, EventLogOptions::disk_full_retry), and
  // says when it is over.
  void WatchDisk() {
    bool was_full = false;
    while (!StopRequested()) {
      const kernel::DiskFullState disk = log_->disk_full();
      if (disk.full && !was_full) {
        spdlog::error("daemon: {}", DiskProblem(disk));
      } else if (!disk.full && was_full) {
        spdlog::info(
            "daemon: disk space is back: the event log {} takes appends again after {:.1f} s; "
            "ingest resumes from its stored positions",
            config_.data_dir(), absl::ToDoubleSeconds(disk.total - full_before_));
      }
      if (disk.full && !was_full) full_before_ = disk.total - (absl::Now() - disk.since);
      was_full = disk.full;
      if (disk.full) {
        if (absl::Status s = log_->Resume(); s.ok()) continue;
      }
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_requested_), absl::Seconds(1));
    }
  }

  std::string DiskProblem(const kernel::DiskFullState& disk) const {
    return absl::StrFormat(
        "disk full: the event log %s has had no room to write for %d s (%s); ingest is "
        "paused (readings wait in Kafka) and commands are refused (503) while reads go on. "
        "Free space on the disk that holds %s (old backups, logs), or move the data "
        "directory to a larger disk: the daemon resumes by itself, without a restart",
        config_.data_dir(), absl::ToInt64Seconds(absl::Now() - disk.since), disk.error,
        config_.data_dir());
  }

  bool StopRequested() const {
    absl::MutexLock lock(&mu_);
    return stop_requested_;
  }

  // Ready once ingest owns its partitions, reaches Kafka, and the read models have caught
  // up once. (Afterwards /readyz also answers 503 while Kafka is out of reach: Health.)
  void WatchReadiness() {
    while (!StopRequested() && !ready_.load()) {
      absl::StatusOr<std::vector<ingest::ConsumerLag>> lag = ingester_->Lag();
      uint64_t behind = 0;
      for (const views::PartitionLag& l : views_->Lag()) behind += l.lag;
      if (lag.ok() && !lag->empty() && behind <= kReadyLag && ingester_->link().State().connected) {
        ready_.store(true);
        Announce("ready");
        return;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  }

  void Metrics(api::MetricsText& m) const {
    m.Add("cityops_up", "gauge", "1 while the daemon runs and no stage has failed.")
        .Sample({}, Health(false).status() == "ok" ? 1 : 0);
    m.Add("cityops_ready", "gauge", "1 while /readyz answers 200.")
        .Sample({}, Health(true).status() == "ok" ? 1 : 0);
    if (ingester_ != nullptr) {
      const ingest::IngestStats s = ingester_->Stats();
      m.Add("cityops_ingest_records_total", "counter", "Kafka records consumed, good or bad.")
          .Sample({}, static_cast<double>(s.records));
      m.Add("cityops_ingest_events_total", "counter", "Events ingest stored, by kind.")
          .Sample({{"kind", "reading"}}, static_cast<double>(s.readings))
          .Sample({{"kind", "report"}}, static_cast<double>(s.reports))
          .Sample({{"kind", "registration"}}, static_cast<double>(s.registrations))
          .Sample({{"kind", "clock_tick"}}, static_cast<double>(s.clock_ticks));
      m.Add("cityops_ingest_duplicates_total", "counter",
            "Readings dropped as duplicates by reading id, and reports the log had already.")
          .Sample({}, static_cast<double>(s.duplicates));
      m.Add("cityops_ingest_unregistered_readings_total", "counter",
            "Readings stored from devices without a registration.")
          .Sample({}, static_cast<double>(s.unregistered_readings));
      api::MetricsText::Family& dead =
          m.Add("cityops_ingest_deadlettered_total", "counter",
                "Records set aside on the dead-letter topic, by code.");
      dead.Sample({{"code", "ALL"}}, static_cast<double>(s.dead_lettered));
      for (const auto& [code, n] : s.dead_lettered_by_code) {
        dead.Sample({{"code", code}}, static_cast<double>(n));
      }
      m.Add("cityops_ingest_rewinds_total", "counter",
            "Batches given back after a failure, to be consumed again.")
          .Sample({}, static_cast<double>(s.rewinds));
      const ingest::KafkaLinkState link = ingester_->link().State();
      const absl::Time now = absl::Now();
      m.Add("cityops_kafka_connected", "gauge",
            "1 while ingest's consumer reaches a Kafka broker that answers, 0 while not "
            "(ingest paused; /readyz says since when).")
          .Sample({}, link.connected ? 1 : 0);
      // Absent until a broker first answered: there is no time to count from.
      if (link.last_receive != absl::InfinitePast()) {
        m.Add("cityops_kafka_seconds_since_last_receive", "gauge",
              "Seconds since a Kafka broker last sent ingest's consumer anything (fetch "
              "responses come every fetch.wait.max.ms while connected); refreshed every "
              "second.")
            .Sample({}, absl::ToDoubleSeconds(now - link.last_receive));
      }
      if (absl::StatusOr<std::vector<ingest::ConsumerLag>> lag = ingester_->Lag(); lag.ok()) {
        api::MetricsText::Family& f =
            m.Add("cityops_consumer_lag", "gauge",
                  "Records in Kafka not yet stored in the log, per owned topic partition. No "
                  "samples while cityops_kafka_connected is 0: the lag is unknown then (the "
                  "high watermarks are from before the loss), not 0.");
        if (!link.connected) lag->clear();
        for (const ingest::ConsumerLag& l : *lag) {
          f.Sample({{"topic", l.topic}, {"partition", absl::StrCat(l.partition)}},
                   static_cast<double>(l.lag));
        }
      }
    }
    if (log_ != nullptr) {
      const kernel::DiskFullState disk = log_->disk_full();
      m.Add("cityops_log_disk_full", "gauge",
            "1 while the event log's disk has no room to write (appends refused, ingest "
            "paused; /readyz says why), 0 otherwise.")
          .Sample({}, disk.full ? 1 : 0);
      m.Add("cityops_log_disk_full_total", "counter",
            "Times the event log's disk ran full since the daemon started.")
          .Sample({}, static_cast<double>(disk.outages));
      m.Add("cityops_log_disk_full_seconds_total", "counter",
            "Seconds the event log's disk was full since the daemon started, the current "
            "outage included.")
          .Sample({}, absl::ToDoubleSeconds(disk.total));
      m.Add("cityops_log_append_seconds", "histogram",
            "Time of each write to the event log, fsync included.")
          .Histogram({}, log_->append_latency().Read());
      const kernel::LogMemory memory = log_->Memory();
      m.Add("cityops_log_memory_bytes", "gauge",
            "Memory the event log's RocksDB holds, as it estimates it: memtables (appends not "
            "yet in files), table_readers (index and filter blocks of open files), block_cache "
            "(of which block_cache_pinned is pinned).")
          .Sample({{"part", "memtables"}}, static_cast<double>(memory.memtables))
          .Sample({{"part", "table_readers"}}, static_cast<double>(memory.table_readers))
          .Sample({{"part", "block_cache"}}, static_cast<double>(memory.block_cache))
          .Sample({{"part", "block_cache_pinned"}}, static_cast<double>(memory.block_cache_pinned));
      api::MetricsText::Family& next =
          m.Add("cityops_log_events", "gauge", "Events in the log, per partition.");
      for (kernel::Partition p : log_->Partitions()) {
        next.Sample({{"partition", absl::StrCat(p.value())}},
                    static_cast<double>(log_->NextSequence(p).value()));
      }
    }
    if (views_ != nullptr) {
      api::MetricsText::Family& f = m.Add(
          "cityops_views_lag", "gauge", "Events appended but not yet folded into the read models.");
      for (const views::PartitionLag& l : views_->Lag()) {
        f.Sample({{"partition", absl::StrCat(l.partition.value())}}, static_cast<double>(l.lag));
      }
    }
    {
      absl::MutexLock lock(&mu_);
      if (rules_ != nullptr) {
        api::MetricsText::Family& f = m.Add("cityops_rules_lag", "gauge",
                                            "Events appended but not yet seen by the rules stage.");
        for (const rules::PartitionLag& l : rules_->Lag()) {
          f.Sample({{"partition", absl::StrCat(l.partition.value())}}, static_cast<double>(l.lag));
        }
        const rules::RulesStageStats s = rules_->Stats();
        m.Add("cityops_rules_processed_total", "counter",
              "Input events the rules stage processed since the daemon started.")
            .Sample({}, static_cast<double>(s.processed));
        m.Add("cityops_rules_derived_total", "counter",
              "Events the rules stage appended since the daemon started.")
            .Sample({}, static_cast<double>(s.derived));
      }
    }
    if (!config_.http().tls().cert().empty()) {
      m.Add("cityops_http_tls_reloads_total", "counter",
            "Reloads of the TLS certificate and key (SIGHUP) since the daemon started, by "
            "result: ok (new connections get the new certificate), failed (the one in use "
            "stays; the log says why).")
          .Sample({{"result", "ok"}}, static_cast<double>(tls_reloads_ok_.load()))
          .Sample({{"result", "failed"}}, static_cast<double>(tls_reloads_failed_.load()));
    }
    if (outbox_ != nullptr) {
      m.Add("cityops_tickets_published_total", "counter",
            "Dispatch tickets Kafka acknowledged on the tickets topic since the daemon started.")
          .Sample({}, static_cast<double>(outbox_->Stats().published));
    }
  }

  const DaemonOptions options_;
  const v1::ServeConfig config_;
  std::unique_ptr<kernel::EventLog> log_;
  std::unique_ptr<ingest::EmbeddedKafka> embedded_;
  std::string bootstrap_;
  uint32_t partitions_ = 0;
  std::unique_ptr<views::Projections> views_;
  std::unique_ptr<projections::CaseWorkflow> workflow_;
  std::unique_ptr<projections::TicketOutbox> outbox_;
  std::unique_ptr<ingest::Ingester> ingester_;
  std::unique_ptr<api::HttpServer> http_;
  // The certificate and key new HTTPS connections get (null: plain HTTP); replaced by
  // ReloadTls, under tokens_mu_.
  std::shared_ptr<const api::TlsContext> tls_;
  std::atomic<uint64_t> tls_reloads_ok_{0};
  std::atomic<uint64_t> tls_reloads_failed_{0};
  std::vector<std::thread> threads_;
  std::atomic<bool> ready_{false};
  absl::Duration full_before_;  // WatchDisk's: time full before the current outage.
  bool started_ = false;        // Start() got through; set before any thread may read it.
  absl::Mutex reload_mu_;
  absl::Mutex tokens_mu_;
  // The tokens in use: the configuration's, then the last ones reloaded.
  std::vector<v1::ApiToken> tokens_ ABSL_GUARDED_BY(tokens_mu_);

  mutable absl::Mutex mu_;
  std::unique_ptr<rules::RulesStage> rules_ ABSL_GUARDED_BY(mu_);
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::string>> stage_errors_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status s = impl->Start(); !s.ok()) {
    impl->RequestStop();
    (void)impl->Wait();
    return s;
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Daemon::~Daemon() = default;
absl::Status Daemon::Wait() { return impl_->Wait(); }
void Daemon::RequestStop() { impl_->RequestStop(); }
absl::StatusOr<v1::ReloadRulesResponse> Daemon::ReloadRules() { return impl_->ReloadRules(); }
absl::Status Daemon::ReloadTokens() { return impl_->ReloadTokens(); }
absl::Status Daemon::ReloadTls() { return impl_->ReloadTls(); }
v1::HealthResponse Daemon::Health(bool ready) const { return impl_->Health(ready); }
bool Daemon::Ready() const { return impl_->Ready(); }
bool Daemon::Stopping() const { return impl_->Stopping(); }
int64_t Daemon::MaxConsumerLag() const { return impl_->MaxConsumerLag(); }
views::Projections& Daemon::views() { return impl_->views(); }
kernel::EventLog& Daemon::log() { return impl_->log(); }
const std::string& Daemon::kafka_bootstrap() const { return impl_->kafka_bootstrap(); }
int Daemon::http_port() const { return impl_->http_port(); }

}  // namespace cityops::daemon
