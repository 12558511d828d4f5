#include "daemon/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/department.h"
#include "kernel/proto_time.h"
#include "kernel/yaml_proto.h"

namespace cityops::daemon {

namespace {

constexpr int64_t kKiB = 1024;

void Default(const char* value, std::string* field) {
  if (field->empty()) *field = value;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), absl::ascii_isdigit);
}

// Checks one configuration against the bounds of config.proto, naming where each value
// was written.
class Checker {
 public:
  explicit Checker(const kernel::YamlSourceMap& map) : map_(map) {}

  absl::Status Check(const v1::ServeConfig& c) {
    if (!c.durability().empty() && c.durability() != "sync" && c.durability() != "buffered") {
      return Error(
          c, "durability",
          absl::StrFormat("durability '%s' is not known; use sync or buffered", c.durability()));
    }
    if (c.log_memtable_mib() != 0 && (c.log_memtable_mib() < 16 || c.log_memtable_mib() > 65536)) {
      return Error(c, "log_memtable_mib",
                   absl::StrFormat("log_memtable_mib %u is out of range; use 16 to 65536 (MiB "
                                   "of memtables for the whole log; 256 by default)",
                                   c.log_memtable_mib()));
    }
    if (!c.backups().dir().empty()) {
      const std::filesystem::path data =
          std::filesystem::absolute(c.data_dir().empty() ? "cityops-data" : c.data_dir())
              .lexically_normal();
      const std::filesystem::path backups =
          std::filesystem::absolute(c.backups().dir()).lexically_normal();
      const auto [d, b] = std::mismatch(data.begin(), data.end(), backups.begin(), backups.end());
      if (d == data.end()) {
        return Error(c.backups(), "dir",
                     absl::StrFormat("backups.dir %s lies inside data_dir %s; put backups "
                                     "beside the data directory, e.g. %s",
                                     backups.string(), data.string(),
                                     (data.parent_path() / "cityops-backups").string()));
      }
    }
    if (absl::Status s = CheckKafka(c.kafka()); !s.ok()) return s;
    if (absl::Status s = CheckHttp(c.http()); !s.ok()) return s;
    if (absl::Status s = CheckTokens(c); !s.ok()) return s;
    const v1::LoggingConfig& l = c.logging();
    static const std::set<std::string> kLevels = {"debug", "info", "warn", "error"};
    if (!l.level().empty() && !kLevels.contains(l.level())) {
      return Error(
          l, "level",
          absl::StrFormat("level '%s' is not known; use debug, info, warn or error", l.level()));
    }
    if (!l.format().empty() && l.format() != "text" && l.format() != "json") {
      return Error(l, "format",
                   absl::StrFormat("format '%s' is not known; use text or json", l.format()));
    }
    const v1::IngestConfig& i = c.ingest();
    if (i.has_clock_tick_interval()) {
      const absl::Duration d = kernel::FromDurationProto(i.clock_tick_interval());
      if (d < absl::Milliseconds(100) || d > absl::Minutes(1)) {
        return Error(i, "clock_tick_interval",
                     absl::StrFormat("clock_tick_interval %s is out of range; use 100ms to 1m",
                                     absl::FormatDuration(d)));
      }
    }
    if (i.has_clock_tick_delay()) {
      const absl::Duration d = kernel::FromDurationProto(i.clock_tick_delay());
      if (d < absl::ZeroDuration() || d > absl::Minutes(10)) {
        return Error(i, "clock_tick_delay",
                     absl::StrFormat("clock_tick_delay %s is out of range; use 0s to 10m",
                                     absl::FormatDuration(d)));
      }
    }
    if (i.max_batch_records() < 0 || i.max_batch_records() > 100'000) {
      return Error(i, "max_batch_records",
                   absl::StrFormat("max_batch_records %d is out of range; use 1 to 100000",
                                   i.max_batch_records()));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckKafka(const v1::KafkaConfig& k) {
    if (k.embedded_partitions() != 0) {
      if (!k.bootstrap_servers().empty()) {
        return Error(k, "embedded_partitions",
                     "embedded_partitions applies to the built-in cluster only, but "
                     "bootstrap_servers is set; drop one of them");
      }
      if (k.embedded_partitions() < 1 || k.embedded_partitions() > 64) {
        return Error(k, "embedded_partitions",
                     absl::StrFormat("embedded_partitions %d is out of range; use 1 to 64",
                                     k.embedded_partitions()));
      }
    }
    std::set<std::string> names;
    for (int i = 0; i < k.properties_size(); ++i) {
      const v1::KafkaProperty& p = k.properties(i);
      if (p.name().empty()) return Error(k, "properties", "a Kafka property needs a name", i);
      if (p.name() == "bootstrap.servers" || p.name() == "group.id") {
        return Error(k, "properties",
                     absl::StrFormat("set '%s' with kafka.%s, not as a property", p.name(),
                                     p.name() == "group.id" ? "group_id" : "bootstrap_servers"),
                     i);
      }
      if (!names.insert(p.name()).second) {
        return Error(k, "properties",
                     absl::StrFormat("Kafka property '%s' is given twice; keep one", p.name()), i);
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckHttp(const v1::HttpConfig& h) {
    if (!h.listen_address().empty()) {
      unsigned char buf[sizeof(struct in6_addr)];
      if (inet_pton(AF_INET, h.listen_address().c_str(), buf) != 1 &&
          inet_pton(AF_INET6, h.listen_address().c_str(), buf) != 1) {
        return Error(h, "listen_address",
                     absl::StrFormat("listen_address '%s' is not an IP address; use e.g. "
                                     "127.0.0.1, ::1 or 0.0.0.0",
                                     h.listen_address()));
      }
    }
    if (h.port() < 0 || h.port() > 65535) {
      return Error(h, "port",
                   absl::StrFormat("port %d is out of range; use 1 to 65535, or 0 for any free "
                                   "port",
                                   h.port()));
    }
    if (h.max_body_bytes() != 0 &&
        (h.max_body_bytes() < kKiB || h.max_body_bytes() > 16 * kKiB * kKiB)) {
      return Error(h, "max_body_bytes",
                   absl::StrFormat("max_body_bytes %d is out of range; use 1024 to 16777216",
                                   h.max_body_bytes()));
    }
    if (h.max_event_streams() < 0 || h.max_event_streams() > 1024) {
      return Error(h, "max_event_streams",
                   absl::StrFormat("max_event_streams %d is out of range; use 1 to 1024",
                                   h.max_event_streams()));
    }
    if (h.max_connections() != 0 && (h.max_connections() < 16 || h.max_connections() > 1'000'000)) {
      return Error(h, "max_connections",
                   absl::StrFormat("max_connections %d is out of range; use 16 to 1000000",
                                   h.max_connections()));
    }
    const int max_connections = h.max_connections() != 0 ? h.max_connections() : 4096;
    if (h.max_connections_per_client() < 0 || h.max_connections_per_client() > max_connections) {
      return Error(h, "max_connections_per_client",
                   absl::StrFormat("max_connections_per_client %d is out of range; use 1 to "
                                   "max_connections (%d)",
                                   h.max_connections_per_client(), max_connections));
    }
    if (h.has_request_timeout()) {
      const absl::Duration d = kernel::FromDurationProto(h.request_timeout());
      if (d < absl::Seconds(1) || d > absl::Minutes(5)) {
        return Error(h, "request_timeout",
                     absl::StrFormat("request_timeout %s is out of range; use 1s to 5m",
                                     absl::FormatDuration(d)));
      }
    }
    if (h.has_idle_timeout()) {
      const absl::Duration d = kernel::FromDurationProto(h.idle_timeout());
      if (d < absl::Seconds(1) || d > absl::Hours(1)) {
        return Error(h, "idle_timeout",
                     absl::StrFormat("idle_timeout %s is out of range; use 1s to 1h",
                                     absl::FormatDuration(d)));
      }
    }
    if (h.workers() < 0 || h.workers() > 256) {
      return Error(h, "workers",
                   absl::StrFormat("workers %d is out of range; use 1 to 256", h.workers()));
    }
    const v1::AuthFailureLimit& a = h.auth_failure_limit();
    if (a.failures() < 0 || a.failures() > 10'000) {
      return Error(a, "failures",
                   absl::StrFormat("failures %d is out of range; use 1 to 10000", a.failures()));
    }
    if (a.has_window()) {
      const absl::Duration d = kernel::FromDurationProto(a.window());
      if (d < absl::Seconds(1) || d > absl::Hours(1)) {
        return Error(
            a, "window",
            absl::StrFormat("window %s is out of range; use 1s to 1h", absl::FormatDuration(d)));
      }
    }
    if (a.clients() < 0 || a.clients() > 1'000'000) {
      return Error(a, "clients",
                   absl::StrFormat("clients %d is out of range; use 1 to 1000000", a.clients()));
    }
    const v1::TlsConfig& t = h.tls();
    if (t.cert().empty() != t.key().empty()) {
      const bool has_cert = !t.cert().empty();
      return Error(t, has_cert ? "cert" : "key",
                   absl::StrFormat("tls has a %s but no %s: give both, the certificate and its "
                                   "private key (PEM files), or neither for plain HTTP",
                                   has_cert ? "cert" : "key", has_cert ? "key" : "cert"));
    }
    if (absl::Status s = CheckPlaintextExposure(h); !s.ok()) {
      return Error(h, "listen_address", std::string(s.message()));
    }
    return absl::OkStatus();
  }

 public:
  // The files the configuration names: http.tls's certificate and key load, the key file
  // its owner's only. Errors at the line of the file's setting.
  absl::Status CheckFiles(const v1::ServeConfig& c) {
    const v1::TlsConfig& t = c.http().tls();
    if (t.cert().empty()) return absl::OkStatus();
    if (absl::Status s = CheckPrivateFile(t.key(), "the TLS private key"); !s.ok()) {
      return absl::Status(s.code(), absl::StrFormat("%s: %s", map_.Where(t, "key"), s.message()));
    }
    api::TlsContext::Culprit culprit = api::TlsContext::Culprit::kCertificate;
    absl::StatusOr<std::shared_ptr<const api::TlsContext>> loaded =
        api::TlsContext::Load(t.cert(), t.key(), &culprit);
    if (!loaded.ok()) {
      return Error(t, culprit == api::TlsContext::Culprit::kKey ? "key" : "cert",
                   std::string(loaded.status().message()));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckTokens(const v1::ServeConfig& c) {
    std::set<std::string> secrets;
    for (int i = 0; i < c.tokens_size(); ++i) {
      const v1::ApiToken& t = c.tokens(i);
      if (t.token().size() < 16) {
        return Error(t, "token",
                     "a token must be at least 16 characters; generate one with e.g. "
                     "`openssl rand -hex 24`");
      }
      if (!secrets.insert(t.token()).second) {
        return Error(t, "token", "this token is given to two users; give each user its own");
      }
      if (t.user().empty()) {
        return Error(t, "user", "a token needs the user it stands for (recorded as the actor)");
      }
      if (t.role() == v1::ROLE_UNSPECIFIED) {
        return Error(t, "role", "a token needs a role: viewer, operator, supervisor or admin");
      }
      const v1::OrgUnit& u = t.unit();
      if (u.level() == v1::GRID_LEVEL_UNSPECIFIED) {
        return Error(t, "unit",
                     "a token needs a unit, e.g. {level: street_center, code: \"310104001\"} or "
                     "{level: city_center, code: city}");
      }
      const std::string& code = u.code();
      bool ok = false;
      std::string want;
      switch (u.level()) {
        case v1::GRID_LEVEL_CITY_CENTER:
          ok = code == "city";
          want = "\"city\"";
          break;
        case v1::GRID_LEVEL_DISTRICT_CENTER:
          ok = AllDigits(code) && code.size() == 6;
          want = "the 6 digits of its district";
          break;
        case v1::GRID_LEVEL_STREET_CENTER:
          ok = AllDigits(code) && code.size() == 9;
          want = "the 9 digits of its street";
          break;
        case v1::GRID_LEVEL_RESIDENTIAL_STATION:
          ok = AllDigits(code) && (code.size() == 12 || code.size() == 15);
          want = "the 12 digits of its community or the 15 of its grid";
          break;
        default:
          break;
      }
      if (!ok) {
        return Error(u, "code",
                     absl::StrFormat("unit code '%s' does not fit its level; give %s", code, want));
      }
      // A department's crew (issue 15): level and code say the area it serves.
      if (!u.department().empty() && !kernel::IsDepartmentName(u.department())) {
        return Error(u, "department",
                     absl::StrFormat("department '%s' is not a department's name: give it as "
                                     "cases carry it when dispatched, lowercase words joined by "
                                     "'-' (e.g. water-authority), or leave it out for a grid unit",
                                     u.department()));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Error(const google::protobuf::Message& m, std::string_view field,
                     std::string_view what, int index = -1) const {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", map_.Where(m, field, index), what));
  }

  const kernel::YamlSourceMap& map_;
};

void FillDefaults(v1::ServeConfig* c) {
  Default("cityops-data", c->mutable_data_dir());
  Default("sync", c->mutable_durability());
  if (c->log_memtable_mib() == 0) c->set_log_memtable_mib(256);
  v1::KafkaConfig* k = c->mutable_kafka();
  if (k->bootstrap_servers().empty() && k->embedded_partitions() == 0) {
    k->set_embedded_partitions(4);
  }
  Default("cityops", k->mutable_group_id());
  v1::KafkaTopics* t = k->mutable_topics();
  Default("cityops.readings", t->mutable_readings());
  Default("cityops.reports", t->mutable_reports());
  Default("cityops.devices", t->mutable_devices());
  Default("cityops.deadletter", t->mutable_deadletter());
  Default("cityops.tickets", t->mutable_tickets());
  v1::HttpConfig* h = c->mutable_http();
  Default("127.0.0.1", h->mutable_listen_address());
  if (!h->has_dashboard()) h->set_dashboard(true);
  // "port: 0" (any free port) is kept: the field has presence, so it is told from no port.
  if (!h->has_port()) h->set_port(8080);
  if (h->max_body_bytes() == 0) h->set_max_body_bytes(64 * kKiB);
  if (h->max_event_streams() == 0) h->set_max_event_streams(64);
  if (h->max_connections() == 0) h->set_max_connections(4096);
  if (h->max_connections_per_client() == 0) h->set_max_connections_per_client(256);
  if (!h->has_request_timeout())
    kernel::ToDurationProto(absl::Seconds(10), h->mutable_request_timeout());
  if (!h->has_idle_timeout()) kernel::ToDurationProto(absl::Seconds(30), h->mutable_idle_timeout());
  if (h->workers() == 0) h->set_workers(8);
  v1::AuthFailureLimit* a = h->mutable_auth_failure_limit();
  if (a->failures() == 0) a->set_failures(10);
  if (!a->has_window()) kernel::ToDurationProto(absl::Minutes(1), a->mutable_window());
  if (a->clients() == 0) a->set_clients(10'000);
  v1::LoggingConfig* l = c->mutable_logging();
  Default("info", l->mutable_level());
  Default("text", l->mutable_format());
  v1::IngestConfig* i = c->mutable_ingest();
  if (!i->has_clock_tick_interval())
    kernel::ToDurationProto(absl::Seconds(1), i->mutable_clock_tick_interval());
  if (!i->has_clock_tick_delay())
    kernel::ToDurationProto(absl::Seconds(2), i->mutable_clock_tick_delay());
  if (i->max_batch_records() == 0) i->set_max_batch_records(10'000);
}

}  // namespace

v1::ServeConfig DefaultServeConfig() {
  v1::ServeConfig c;
  FillDefaults(&c);
  return c;
}

namespace {

// `map` refers to `*c` by address: check before anything moves or changes it.
absl::StatusOr<v1::ServeConfig> CheckAndFill(v1::ServeConfig* c, const kernel::YamlSourceMap& map,
                                             NamedFiles files = NamedFiles::kSkip) {
  Checker checker(map);
  if (absl::Status s = checker.Check(*c); !s.ok()) return s;
  if (files == NamedFiles::kCheck) {
    if (absl::Status s = checker.CheckFiles(*c); !s.ok()) return s;
  }
  FillDefaults(c);
  return std::move(*c);
}

}  // namespace

absl::StatusOr<v1::ServeConfig> ParseServeConfig(std::string_view yaml, std::string_view file) {
  v1::ServeConfig c;
  kernel::YamlSourceMap map;
  if (absl::Status s = kernel::ParseYamlToProto(yaml, file, &c, &map); !s.ok()) return s;
  return CheckAndFill(&c, map);
}

absl::StatusOr<v1::ServeConfig> LoadServeConfig(const std::string& path, NamedFiles files) {
  v1::ServeConfig c;
  kernel::YamlSourceMap map;
  if (absl::Status s = kernel::ParseYamlFileToProto(path, &c, &map); !s.ok()) return s;
  return CheckAndFill(&c, map, files);
}

std::string DescribeServeConfig(const v1::ServeConfig& config) {
  v1::ServeConfig shown = config;
  for (v1::ApiToken& t : *shown.mutable_tokens()) t.set_token("<hidden>");
  for (v1::KafkaProperty& p : *shown.mutable_kafka()->mutable_properties()) {
    if (absl::StrContains(p.name(), "password") || absl::StrContains(p.name(), "secret")) {
      p.set_value("<hidden>");
    }
  }
  return kernel::ProtoToYaml(shown);
}

absl::Status CheckPrivateFile(const std::string& path, std::string_view holds) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrFormat("cannot read the mode of %s: %s", path, std::strerror(errno)));
  }
  const unsigned mode = st.st_mode & 07777;
  if ((mode & 077) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrFormat("%s holds %s but its mode is %04o: its group or others may read or write it; "
                      "run `chmod 600 %s` (and keep it owned by the daemon's user)",
                      path, holds, mode, path));
}

absl::Status CheckTokenFilePermissions(const std::string& path, const v1::ServeConfig& config) {
  if (config.tokens_size() == 0) return absl::OkStatus();
  return CheckPrivateFile(path, "API tokens");
}

bool IsLoopbackAddress(std::string_view address) {
  const std::string text(address);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

absl::Status CheckPlaintextExposure(const v1::HttpConfig& http) {
  const std::string& address =
      http.listen_address().empty() ? std::string("127.0.0.1") : http.listen_address();
  if (IsLoopbackAddress(address) || !http.tls().cert().empty() || http.allow_plaintext()) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrFormat(
      "listen_address %s is not a loopback address and http.tls is not set: API tokens and "
      "the city's data would cross the network in plain text. Set http.tls.cert and "
      "http.tls.key (OPERATIONS.md, \"TLS\"); or listen on 127.0.0.1 behind a TLS-terminating "
      "proxy; or, if something else encrypts the traffic, set http.allow_plaintext: true",
      address));
}

absl::StatusOr<std::shared_ptr<const api::TlsContext>> LoadTls(const v1::HttpConfig& http) {
  const v1::TlsConfig& t = http.tls();
  if (t.cert().empty() && t.key().empty()) return std::shared_ptr<const api::TlsContext>();
  if (t.cert().empty() || t.key().empty()) {
    return absl::InvalidArgumentError(
        "http.tls needs both cert and key (PEM files), or neither for plain HTTP");
  }
  if (absl::Status s = CheckPrivateFile(t.key(), "the TLS private key"); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("http.tls.key: ", s.message()));
  }
  api::TlsContext::Culprit culprit = api::TlsContext::Culprit::kCertificate;
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> loaded =
      api::TlsContext::Load(t.cert(), t.key(), &culprit);
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        absl::StrCat(culprit == api::TlsContext::Culprit::kKey ? "http.tls.key: "
                                                                               : "http.tls.cert: ",
                                     loaded.status().message()));
  }
  return loaded;
}

namespace {

// Collects the dotted field names of every difference it is told of.
class FieldNames : public google::protobuf::util::MessageDifferencer::Reporter {
 public:
  using SpecificField = google::protobuf::util::MessageDifferencer::SpecificField;
  explicit FieldNames(std::set<std::string>* out) : out_(out) {}
  void ReportAdded(const google::protobuf::Message&, const google::protobuf::Message&,
                   const std::vector<SpecificField>& path) override {
    Add(path);
  }
  void ReportDeleted(const google::protobuf::Message&, const google::protobuf::Message&,
                     const std::vector<SpecificField>& path) override {
    Add(path);
  }
  void ReportModified(const google::protobuf::Message&, const google::protobuf::Message&,
                      const std::vector<SpecificField>& path) override {
    Add(path);
  }

 private:
  void Add(const std::vector<SpecificField>& path) {
    std::vector<std::string> names;
    for (const SpecificField& f : path) {
      if (f.field != nullptr) names.push_back(f.field->name());
    }
    if (!names.empty()) out_->insert(absl::StrJoin(names, "."));
  }
  std::set<std::string>* out_;
};

}  // namespace

std::vector<std::string> SettingsNeedingRestart(const v1::ServeConfig& running,
                                                const v1::ServeConfig& reread) {
  v1::ServeConfig a = running;
  v1::ServeConfig b = reread;
  a.clear_tokens();
  b.clear_tokens();
  std::set<std::string> names;
  {
    FieldNames reporter(&names);
    google::protobuf::util::MessageDifferencer differ;
    differ.ReportDifferencesTo(&reporter);
    differ.Compare(a, b);
  }  // The differencer reports to `names` until it is gone.
  // It names a changed message as well as the fields inside it: keep the innermost.
  std::vector<std::string> out;
  for (auto it = names.begin(); it != names.end(); ++it) {
    const auto next = std::next(it);
    if (next != names.end() && next->starts_with(*it + ".")) continue;
    out.push_back(*it);
  }
  return out;
}

absl::Duration ClockTickInterval(const v1::ServeConfig& config) {
  return kernel::FromDurationProto(config.ingest().clock_tick_interval());
}

absl::Duration ClockTickDelay(const v1::ServeConfig& config) {
  return kernel::FromDurationProto(config.ingest().clock_tick_delay());
}

}  // namespace cityops::daemon
