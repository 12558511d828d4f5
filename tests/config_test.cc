// The daemon's configuration (daemon/config.h): strict YAML onto cityops.v1.ServeConfig,
// bounds checked with file and line, every default filled in.
#include "daemon/config.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernel/proto_time.h"
#include "kernel/yaml_proto.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tls_files.h"

namespace cityops {
namespace {

using daemon::ParseServeConfig;

std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<v1::ServeConfig> c = ParseServeConfig(yaml, "cityops.yaml");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST_CASE("an empty mapping gives every default of config.proto", "[config]") {
  absl::StatusOr<v1::ServeConfig> c = ParseServeConfig("{}", "cityops.yaml");
  REQUIRE(c.ok());
  CHECK(c->data_dir() == "cityops-data");
  CHECK(c->durability() == "sync");
  CHECK(c->log_memtable_mib() == 256);
  CHECK(c->kafka().bootstrap_servers().empty());
  CHECK(c->kafka().embedded_partitions() == 4);
  CHECK(c->kafka().group_id() == "cityops");
  CHECK(c->kafka().topics().readings() == "cityops.readings");
  CHECK(c->kafka().topics().tickets() == "cityops.tickets");
  CHECK(c->http().listen_address() == "127.0.0.1");
  CHECK(c->http().port() == 8080);
  CHECK(c->http().max_body_bytes() == 64 * 1024);
  CHECK(c->http().max_event_streams() == 64);
  CHECK(c->http().dashboard());
  CHECK(c->http().auth_failure_limit().failures() == 10);
  CHECK(kernel::FromDurationProto(c->http().auth_failure_limit().window()) == absl::Minutes(1));
  CHECK(c->http().auth_failure_limit().clients() == 10000);
  CHECK(c->http().max_connections() == 4096);
  CHECK(c->http().max_connections_per_client() == 256);
  CHECK(kernel::FromDurationProto(c->http().request_timeout()) == absl::Seconds(10));
  CHECK(kernel::FromDurationProto(c->http().idle_timeout()) == absl::Seconds(30));
  CHECK(c->http().workers() == 8);
  CHECK(c->logging().level() == "info");
  CHECK(c->logging().format() == "text");
  CHECK(daemon::ClockTickInterval(*c) == absl::Seconds(1));
  CHECK(c->ingest().max_batch_records() == 10000);
  CHECK(c->SerializeAsString() == daemon::DefaultServeConfig().SerializeAsString());
}

TEST_CASE("port 0 written out is kept: it asks for any free port", "[config]") {
  absl::StatusOr<v1::ServeConfig> c = ParseServeConfig("http: {port: 0}", "cityops.yaml");
  REQUIRE(c.ok());
  CHECK(c->http().port() == 0);
}

TEST_CASE("configuration errors name the file, line and column and say what to do", "[config]") {
  CHECK(ErrorOf("data_dir: x\nhttp:\n  prot: 80\n") ==
        "cityops.yaml:3:3: unknown key 'prot' in cityops.v1.HttpConfig; expected one of: "
        "listen_address, port, max_body_bytes, max_event_streams, dashboard, auth_failure_limit, "
        "max_connections, max_connections_per_client, request_timeout, idle_timeout, workers, "
        "tls, allow_plaintext");
  CHECK(ErrorOf("http:\n  port: 70000\n") ==
        "cityops.yaml:2:3: port 70000 is out of range; use 1 to 65535, or 0 for any free port");
  CHECK(ErrorOf("http: {listen_address: localhost}") ==
        "cityops.yaml:1:8: listen_address 'localhost' is not an IP address; use e.g. "
        "127.0.0.1, ::1 or 0.0.0.0");
  CHECK(ErrorOf("http: {max_body_bytes: 10}").find("use 1024 to 16777216") != std::string::npos);
  CHECK(ErrorOf("http:\n  auth_failure_limit: {failures: 20000}\n") ==
        "cityops.yaml:2:24: failures 20000 is out of range; use 1 to 10000");
  CHECK_THAT(ErrorOf("http: {auth_failure_limit: {window: 0s}}"),
             Catch::Contains("window 0 is out of range; use 1s to 1h"));
  CHECK_THAT(ErrorOf("http: {auth_failure_limit: {window: 2h}}"),
             Catch::Contains("window 2h is out of range; use 1s to 1h"));
  CHECK_THAT(ErrorOf("http: {auth_failure_limit: {clients: -1}}"),
             Catch::Contains("clients -1 is out of range; use 1 to 1000000"));
  CHECK_THAT(ErrorOf("http: {max_connections: 8}"),
             Catch::Contains("max_connections 8 is out of range; use 16 to 1000000"));
  CHECK_THAT(ErrorOf("http: {max_connections: 100, max_connections_per_client: 101}"),
             Catch::Contains("max_connections_per_client 101 is out of range; use 1 to "
                             "max_connections (100)"));
  CHECK_THAT(ErrorOf("http: {request_timeout: 500ms}"),
             Catch::Contains("request_timeout 500ms is out of range; use 1s to 5m"));
  CHECK_THAT(ErrorOf("http: {idle_timeout: 2h}"),
             Catch::Contains("idle_timeout 2h is out of range; use 1s to 1h"));
  CHECK_THAT(ErrorOf("http: {workers: 300}"),
             Catch::Contains("workers 300 is out of range; use 1 to 256"));
  CHECK(ErrorOf("durability: fast").find("use sync or buffered") != std::string::npos);
  CHECK_THAT(ErrorOf("log_memtable_mib: 8"),
             Catch::Contains("log_memtable_mib 8 is out of range; use 16 to 65536"));
  CHECK(ErrorOf("logging: {level: loud}").find("use debug, info, warn or error") !=
        std::string::npos);
  CHECK(ErrorOf("ingest: {clock_tick_interval: 5ms}").find("use 100ms to 1m") != std::string::npos);
  CHECK(ErrorOf("ingest: {clock_tick_delay: 1h}")
            .find("clock_tick_delay 1h is out of range; use "
                  "0s to 10m") != std::string::npos);
  CHECK(ErrorOf("kafka: {bootstrap_servers: \"b:9092\", embedded_partitions: 3}")
            .find("applies to the built-in cluster only") != std::string::npos);
  CHECK(ErrorOf("data_dir: /srv/cityops\nbackups: {dir: /srv/cityops/backups}")
            .find("lies inside data_dir /srv/cityops; put backups beside the data directory, "
                  "e.g. /srv/cityops-backups") != std::string::npos);
  CHECK(ErrorOf("kafka:\n  properties:\n    - {name: group.id, value: x}\n")
            .find("set 'group.id' with kafka.group_id") != std::string::npos);
}

TEST_CASE("tokens are checked: length, uniqueness, user, role, and a unit that fits its level",
          "[config]") {
  const std::string ok_unit = "unit: {level: street_center, code: \"310104001\"}";
  CHECK(ErrorOf("tokens:\n  - {token: short, user: a, role: viewer, " + ok_unit + "}\n")
            .find("at least 16 characters") != std::string::npos);
  CHECK(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, role: viewer, " + ok_unit +
                "}\n  - {token: aaaaaaaaaaaaaaaa, user: b, role: viewer, " + ok_unit + "}\n")
            .starts_with("cityops.yaml:3:"));
  CHECK(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, role: viewer, " + ok_unit + "}\n")
            .find("needs the user") != std::string::npos);
  CHECK(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, " + ok_unit + "}\n")
            .find("needs a role") != std::string::npos);
  CHECK(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, role: viewer}\n")
            .find("needs a unit") != std::string::npos);
  CHECK(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, role: viewer, unit: {level: "
                "street_center, code: \"3101\"}}\n")
            .find("the 9 digits of its street") != std::string::npos);
  CHECK(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, role: boss, " + ok_unit + "}\n")
            .find("use one of: viewer, operator, supervisor, admin") != std::string::npos);
}

TEST_CASE("a token's unit may be a department's crew, its department named as cases carry it",
          "[config]") {
  auto crew = [](const std::string& department) {
    return "tokens:\n"
           "  - token: aaaaaaaaaaaaaaaa\n"
           "    user: crew.water\n"
           "    role: operator\n"
           "    unit: {level: district_center, code: \"310104\", department: " +
           department + "}\n";
  };
  absl::StatusOr<v1::ServeConfig> c = ParseServeConfig(crew("water-authority"), "cityops.yaml");
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  CHECK(c->tokens(0).unit().department() == "water-authority");
  for (const char* bad : {"Water", "\"water authority\"", "water_authority", "water-"}) {
    INFO(bad);
    CHECK_THAT(ErrorOf(crew(bad)),
               Catch::StartsWith("cityops.yaml:5:") &&
                   Catch::Contains("is not a department's name: give it as cases carry it when "
                                   "dispatched, lowercase words joined by '-'"));
  }
  // Its area is checked as a grid unit's.
  CHECK_THAT(ErrorOf("tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, role: operator, unit: "
                     "{level: district_center, code: \"3101\", department: water-authority}}\n"),
             Catch::Contains("the 6 digits of its district"));
}

TEST_CASE("the configuration as printed by --validate reads back the same, secrets hidden",
          "[config]") {
  absl::StatusOr<v1::ServeConfig> c = ParseServeConfig(
      "data_dir: /var/lib/cityops\n"
      "kafka:\n"
      "  bootstrap_servers: \"broker-1:9093,broker-2:9093\"\n"
      "  properties:\n"
      "    - {name: security.protocol, value: SASL_SSL}\n"
      "    - {name: sasl.password, value: hunter2}\n"
      "ingest: {clock_tick_interval: 1500ms}\n"
      "tokens:\n"
      "  - {token: s3cr3t-s3cr3t-s3cr3t, user: zhang.wei, role: supervisor,"
      " unit: {level: district_center, code: \"310104\"}}\n",
      "cityops.yaml");
  REQUIRE(c.ok());
  const std::string shown = daemon::DescribeServeConfig(*c);
  CHECK(shown.find("s3cr3t") == std::string::npos);
  CHECK(shown.find("hunter2") == std::string::npos);
  CHECK(shown.find("<hidden>") != std::string::npos);
  CHECK(shown.find("1.5s") != std::string::npos);
  // Put the secrets back: the same configuration.
  v1::ServeConfig back;
  REQUIRE(kernel::ParseYamlToProto(shown, "shown.yaml", &back).ok());
  back.mutable_tokens(0)->set_token("s3cr3t-s3cr3t-s3cr3t");
  back.mutable_kafka()->mutable_properties(1)->set_value("hunter2");
  CHECK(back.SerializeAsString() == c->SerializeAsString());
}

TEST_CASE("the example configuration in the repository is valid and says what it shows",
          "[config]") {
  const std::string path = std::string(CITYOPS_SOURCE_DIR) + "/daemon/cityops.example.yaml";
  absl::StatusOr<v1::ServeConfig> c = daemon::LoadServeConfig(path);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  CHECK(c->data_dir() == "/var/lib/cityops");
  CHECK_FALSE(daemon::UsesEmbeddedKafka(*c));
  CHECK(c->kafka().properties_size() == 5);
  CHECK(c->tokens_size() == 4);
  CHECK(c->tokens(3).unit().department() == "water-authority");  // A department's crew.
  CHECK(c->logging().format() == "json");
  // Every default the comments claim is the default.
  const v1::ServeConfig defaults = daemon::DefaultServeConfig();
  CHECK(c->http().SerializeAsString() == defaults.http().SerializeAsString());
  CHECK(c->kafka().topics().SerializeAsString() == defaults.kafka().topics().SerializeAsString());
  CHECK(c->ingest().SerializeAsString() == defaults.ingest().SerializeAsString());
  CHECK(c->durability() == defaults.durability());
  CHECK(c->log_memtable_mib() == defaults.log_memtable_mib());
}

// A file with `yaml` at `path` with `mode`, and its configuration.
v1::ServeConfig WriteConfig(const std::string& path, const std::string& yaml,
                            std::filesystem::perms mode) {
  { std::ofstream(path, std::ios::trunc) << yaml; }
  std::filesystem::permissions(path, mode, std::filesystem::perm_options::replace);
  absl::StatusOr<v1::ServeConfig> c = daemon::LoadServeConfig(path);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return *std::move(c);
}

TEST_CASE("a configuration file holding tokens is refused unless only its owner may read it",
          "[config]") {
  using std::filesystem::perms;
  testing::TempDir dir;
  const std::string path = dir.Sub("cityops.yaml");
  const std::string with_tokens =
      "tokens:\n  - {token: aaaaaaaaaaaaaaaa, user: a, role: viewer, unit: {level: city_center, "
      "code: city}}\n";
  const perms owner = perms::owner_read | perms::owner_write;
  CHECK(daemon::CheckTokenFilePermissions(path, WriteConfig(path, with_tokens, owner)).ok());
  CHECK(daemon::CheckTokenFilePermissions(path, WriteConfig(path, with_tokens, perms::owner_read))
            .ok());
  const struct {
    perms mode;
    const char* octal;
  } open_modes[] = {{owner | perms::group_read, "0640"},
                    {owner | perms::others_read, "0604"},
                    {owner | perms::group_write, "0620"},
                    {owner | perms::group_read | perms::others_read, "0644"}};
  for (const auto& [mode, octal] : open_modes) {
    INFO(octal);
    const absl::Status s =
        daemon::CheckTokenFilePermissions(path, WriteConfig(path, with_tokens, mode));
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(s.message()) ==
          path + " holds API tokens but its mode is " + octal +
              ": its group or others may read or write it; run `chmod 600 " + path +
              "` (and keep it owned by the daemon's user)");
  }
  // Without tokens there is no secret to keep: any mode will do.
  CHECK(
      daemon::CheckTokenFilePermissions(
          path, WriteConfig(path, "data_dir: x\n", owner | perms::group_read | perms::others_read))
          .ok());
  // Tokens from a file that is gone.
  const v1::ServeConfig c = WriteConfig(path, with_tokens, owner);
  std::filesystem::remove(path);
  CHECK(daemon::CheckTokenFilePermissions(path, c).code() == absl::StatusCode::kNotFound);
}

TEST_CASE("the settings a reload cannot apply are named, tokens and secrets left out", "[config]") {
  // The same file but for the Kafka password and what follows it.
  auto config = [](const std::string& password, const std::string& rest) {
    absl::StatusOr<v1::ServeConfig> c = ParseServeConfig(
        "data_dir: /var/lib/cityops\n"
        "kafka:\n"
        "  bootstrap_servers: \"b:9093\"\n"
        "  properties:\n"
        "    - {name: sasl.password, value: " +
            password + "}\n" + rest,
        "cityops.yaml");
    REQUIRE(c.ok());
    return *c;
  };
  const v1::ServeConfig running = config(
      "hunter2",
      "tokens:\n"
      "  - {token: aaaaaaaaaaaaaaaa, user: a, role: viewer, unit: {level: city_center, code: "
      "city}}\n");
  // Other tokens only: nothing needs a restart.
  const v1::ServeConfig tokens_only =
      config("hunter2",
             "tokens:\n"
             "  - {token: bbbbbbbbbbbbbbbb, user: b, role: admin, unit: {level: city_center, code: "
             "city}}\n");
  CHECK(daemon::SettingsNeedingRestart(running, tokens_only).empty());
  const v1::ServeConfig changed = config("hunter3",
                                         "http: {port: 9090, auth_failure_limit: {failures: 5}}\n"
                                         "logging: {level: debug}\n");
  const std::vector<std::string> names = daemon::SettingsNeedingRestart(running, changed);
  CHECK(names == std::vector<std::string>{"http.auth_failure_limit.failures", "http.port",
                                          "kafka.properties.value", "logging.level"});
}

TEST_CASE("a missing configuration file is named", "[config]") {
  absl::StatusOr<v1::ServeConfig> c = daemon::LoadServeConfig("/nonexistent/cityops.yaml");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == absl::StatusCode::kNotFound);
  CHECK(c.status().message().find("/nonexistent/cityops.yaml") != std::string::npos);
}

// Found by fuzz/serve_config_fuzz.cc (fuzz/regressions/serve_config/).
TEST_CASE("bytes that are not UTF-8 are refused with their line and column", "[config]") {
  CHECK(ErrorOf("durability: sync\ndata_dir: /var/lib/city\x80ops\n") ==
        "cityops.yaml:2:24: byte 0x80 is not valid UTF-8; save the file as UTF-8");
  CHECK_THAT(ErrorOf("# caf\xe9\n{}"), Catch::Contains("cityops.yaml:1:6: byte 0xe9"));
  CHECK(ParseServeConfig("data_dir: /var/lib/\xe5\x9f\x8e\xe5\xb8\x82\n", "cityops.yaml").ok());
}

TEST_CASE("durations beyond what a Duration holds, or empty, are refused", "[config]") {
  CHECK_THAT(ErrorOf("ingest: {clock_tick_interval: 999999999999999999d}"),
             Catch::Contains("longer than 10000 years"));
  CHECK_THAT(ErrorOf("ingest: {clock_tick_interval: 3660001d}"),
             Catch::Contains("longer than 10000 years"));
  CHECK_THAT(ErrorOf("ingest: {clock_tick_delay: \"\"}"), Catch::Contains("is not a duration"));
  CHECK_THAT(ErrorOf("ingest: {clock_tick_delay: \"-\"}"), Catch::Contains("is not a duration"));
}

// Found by fuzz/serve_config_fuzz.cc: ProtoToYaml wrote a zero duration as "0", which
// does not read back (fuzz/regressions/serve_config/zero_duration_round_trip.yaml).
TEST_CASE("a zero duration is printed with its unit and reads back", "[config]") {
  absl::StatusOr<v1::ServeConfig> c =
      ParseServeConfig("ingest: {clock_tick_delay: 0s}", "cityops.yaml");
  REQUIRE(c.ok());
  const std::string shown = daemon::DescribeServeConfig(*c);
  CHECK_THAT(shown, Catch::Contains("clock_tick_delay: 0s"));
  absl::StatusOr<v1::ServeConfig> back = ParseServeConfig(shown, "shown.yaml");
  REQUIRE(back.ok());
  CHECK(back->ingest().has_clock_tick_delay());
  CHECK(back->ingest().clock_tick_delay().seconds() == 0);
}

// Found by fuzz/serve_config_fuzz.cc: "port: 0" (any free port) was left out of the printed
// YAML, which then read back as the default 8080
// (fuzz/regressions/serve_config/port_zero_round_trip.yaml).
TEST_CASE("port 0 is printed and reads back as 0, no port as 8080", "[config]") {
  absl::StatusOr<v1::ServeConfig> any = ParseServeConfig("http: {port: 0}", "cityops.yaml");
  REQUIRE(any.ok());
  CHECK(any->http().port() == 0);
  const std::string shown = daemon::DescribeServeConfig(*any);
  CHECK_THAT(shown, Catch::Contains("port: 0"));
  absl::StatusOr<v1::ServeConfig> back = ParseServeConfig(shown, "shown.yaml");
  REQUIRE(back.ok());
  CHECK(back->http().port() == 0);
  absl::StatusOr<v1::ServeConfig> none = ParseServeConfig("http: {dashboard: false}", "c.yaml");
  REQUIRE(none.ok());
  CHECK(none->http().port() == 8080);
  CHECK(daemon::DefaultServeConfig().http().port() == 8080);
}

TEST_CASE("http.tls takes a certificate and a key, both or neither", "[config][tls]") {
  CHECK(ErrorOf("http:\n  tls: {cert: /etc/cityops/cert.pem}\n") ==
        "cityops.yaml:2:9: tls has a cert but no key: give both, the certificate and its "
        "private key (PEM files), or neither for plain HTTP");
  CHECK(ErrorOf("http:\n  tls:\n    key: /etc/cityops/key.pem\n") ==
        "cityops.yaml:3:5: tls has a key but no cert: give both, the certificate and its "
        "private key (PEM files), or neither for plain HTTP");
  // Both: parsed without reading them (ParseServeConfig has no file to be relative to).
  absl::StatusOr<v1::ServeConfig> c = ParseServeConfig(
      "http: {listen_address: 0.0.0.0, tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}",
      "cityops.yaml");
  REQUIRE(c.ok());
  CHECK(c->http().tls().cert() == "/nonexistent/c.pem");
  CHECK_FALSE(c->http().allow_plaintext());
}

TEST_CASE("listening beyond loopback in plain HTTP is refused unless http.allow_plaintext says so",
          "[config][tls]") {
  const std::string refusal =
      " is not a loopback address and http.tls is not set: API tokens and the city's data "
      "would cross the network in plain text. Set http.tls.cert and http.tls.key "
      "(OPERATIONS.md, \"TLS\"); or listen on 127.0.0.1 behind a TLS-terminating proxy; or, "
      "if something else encrypts the traffic, set http.allow_plaintext: true";
  CHECK(ErrorOf("http:\n  listen_address: 0.0.0.0\n") ==
        "cityops.yaml:2:3: listen_address 0.0.0.0" + refusal);
  CHECK(ErrorOf("http: {listen_address: \"::\"}") ==
        "cityops.yaml:1:8: listen_address ::" + refusal);
  CHECK(ErrorOf("http: {listen_address: 10.1.2.3, allow_plaintext: false}") ==
        "cityops.yaml:1:8: listen_address 10.1.2.3" + refusal);
  for (const char* loopback :
       {"127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "::ffff:127.0.0.1"}) {
    INFO(loopback);
    CHECK(ParseServeConfig(absl::StrCat("http: {listen_address: \"", loopback, "\"}"), "c.yaml")
              .ok());
  }
  absl::StatusOr<v1::ServeConfig> allowed =
      ParseServeConfig("http: {listen_address: 0.0.0.0, allow_plaintext: true}", "c.yaml");
  REQUIRE(allowed.ok());
  CHECK(allowed->http().allow_plaintext());
  CHECK(daemon::CheckPlaintextExposure(allowed->http()).ok());
  // The daemon's own check, for configurations made in code (cityops demo --listen).
  v1::HttpConfig exposed;
  exposed.set_listen_address("192.0.2.7");
  CHECK(daemon::CheckPlaintextExposure(exposed).code() == absl::StatusCode::kFailedPrecondition);
  CHECK_FALSE(daemon::IsLoopbackAddress("128.0.0.1"));
  CHECK_FALSE(daemon::IsLoopbackAddress("::ffff:10.0.0.1"));
  CHECK_FALSE(daemon::IsLoopbackAddress("localhost"));
  CHECK(daemon::DefaultServeConfig().http().listen_address() == "127.0.0.1");
}

TEST_CASE(
    "a configuration file's certificate and key are loaded: unreadable, not a certificate, a "
    "key that is not the certificate's, and a key file others may read are errors at their "
    "line",
    "[config][tls]") {
  using std::filesystem::perms;
  testing::TempDir dir;
  const testing::TestCertificate one =
      testing::WriteSelfSignedCertificate(dir.Sub("one.pem"), dir.Sub("one.key"), 1);
  const testing::TestCertificate two =
      testing::WriteSelfSignedCertificate(dir.Sub("two.pem"), dir.Sub("two.key"), 2);
  const std::string path = dir.Sub("cityops.yaml");
  auto load = [&](const std::string& cert, const std::string& key) {
    {
      std::ofstream(path, std::ios::trunc)
          << "http:\n  tls:\n    cert: " << cert << "\n    key: " << key << "\n";
    }
    return daemon::LoadServeConfig(path);
  };
  // The pair as it should be: loaded, and in effect.
  absl::StatusOr<v1::ServeConfig> good = load(one.cert_path, one.key_path);
  INFO(good.status().ToString());
  REQUIRE(good.ok());
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> tls = daemon::LoadTls(good->http());
  REQUIRE(tls.ok());
  REQUIRE(*tls != nullptr);
  CHECK((*tls)->serial() == one.serial);
  CHECK((*tls)->subject() == "CN=cityops-test");
  CHECK((*tls)->not_after() == one.not_after);
  // No TLS: nothing to load.
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> none =
      daemon::LoadTls(daemon::DefaultServeConfig().http());
  REQUIRE(none.ok());
  CHECK(*none == nullptr);

  // Unreadable.
  absl::StatusOr<v1::ServeConfig> missing = load(dir.Sub("gone.pem"), one.key_path);
  REQUIRE_FALSE(missing.ok());
  CHECK(std::string(missing.status().message()) == path + ":3:5: cannot read the certificate " +
                                                       dir.Sub("gone.pem") +
                                                       ": No such file or directory");
  // Not a certificate: the key where the certificate goes.
  absl::StatusOr<v1::ServeConfig> not_cert = load(one.key_path, one.key_path);
  REQUIRE_FALSE(not_cert.ok());
  CHECK(std::string(not_cert.status().message()) ==
        path + ":3:5: the certificate " + one.key_path +
            " holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" block that parses); "
            "give the server's certificate there, then its chain");
  // Not a key: the certificate where the key goes (a certificate is no secret: mode 0644,
  // so made the owner's only first).
  std::filesystem::copy_file(one.cert_path, dir.Sub("cert-as-key.pem"));
  std::filesystem::permissions(dir.Sub("cert-as-key.pem"), perms::owner_read,
                               std::filesystem::perm_options::replace);
  absl::StatusOr<v1::ServeConfig> not_key = load(one.cert_path, dir.Sub("cert-as-key.pem"));
  REQUIRE_FALSE(not_key.ok());
  CHECK_THAT(std::string(not_key.status().message()),
             Catch::StartsWith(path + ":4:5: the private key " + dir.Sub("cert-as-key.pem") +
                               " holds no PEM private key the daemon can read"));
  // A key that is not the certificate's.
  absl::StatusOr<v1::ServeConfig> mismatch = load(one.cert_path, two.key_path);
  REQUIRE_FALSE(mismatch.ok());
  CHECK(mismatch.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(mismatch.status().message()),
             Catch::StartsWith(path + ":4:5: the private key " + two.key_path +
                               " does not match the certificate " + one.cert_path +
                               ": give the key the certificate was issued for"));
  // A key file its group or others may read: refused as the token file is.
  std::filesystem::permissions(one.key_path, perms::group_read | perms::others_read,
                               std::filesystem::perm_options::add);
  absl::StatusOr<v1::ServeConfig> open_key = load(one.cert_path, one.key_path);
  REQUIRE_FALSE(open_key.ok());
  CHECK(open_key.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(open_key.status().message()) ==
        path + ":4:5: " + one.key_path +
            " holds the TLS private key but its mode is 0644: its group or others may read or "
            "write it; run `chmod 600 " +
            one.key_path + "` (and keep it owned by the daemon's user)");
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> open_tls = daemon::LoadTls(good->http());
  CHECK(open_tls.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(open_tls.status().message()),
             Catch::StartsWith("http.tls.key: " + one.key_path + " holds the TLS private key"));
  // A SIGHUP re-reads the tokens without them: the certificate has its own reload.
  CHECK(daemon::LoadServeConfig(path, daemon::NamedFiles::kSkip).ok());
}

}  // namespace
}  // namespace cityops
