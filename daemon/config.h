// The daemon's configuration (`cityops serve --config FILE`): YAML onto
// `cityops.v1.ServeConfig` (proto/cityops/v1/config.proto, where every setting, its
// default and its bounds are documented), parsed strictly and checked once, here, at the
// edge. Everything inward gets a complete, checked `ServeConfig` with every default
// filled in.
//
// Errors read "<file>:<line>:<column>: <what is wrong>; <what to do>".
//
// HTTP beyond this machine. `http.listen_address` other than loopback is refused unless
// `http.tls` names a certificate and key (both or neither) or `http.allow_plaintext` is
// true. LoadServeConfig also loads that certificate and key (LoadTls), and refuses a key
// file its group or others may read; ParseServeConfig, which has no file, reads none.
#ifndef CITYOPS_DAEMON_CONFIG_H_
#define CITYOPS_DAEMON_CONFIG_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/tls_context.h"
#include "cityops/v1/config.pb.h"

namespace cityops::daemon {

// Every default of config.proto, filled in.
v1::ServeConfig DefaultServeConfig();

// Parses `yaml` (`file` names it in errors), checks it and fills in the defaults.
// INVALID_ARGUMENT with file, line and column for anything wrong.
absl::StatusOr<v1::ServeConfig> ParseServeConfig(std::string_view yaml, std::string_view file);

// What LoadServeConfig reads besides the configuration file.
enum class NamedFiles {
  kCheck,  // The files it names: http.tls's certificate and key must load (LoadTls).
  kSkip,   // None (a SIGHUP re-reads the tokens so: a certificate has its own reload).
};

// Reads and parses `path`. NOT_FOUND names the path when it cannot be read. With
// NamedFiles::kCheck, a certificate or key that does not load is an error at its line
// (FAILED_PRECONDITION for a key file open to others, INVALID_ARGUMENT for the rest).
absl::StatusOr<v1::ServeConfig> LoadServeConfig(const std::string& path,
                                                NamedFiles files = NamedFiles::kCheck);

// The configuration as YAML, token secrets replaced by "<hidden>": what
// `cityops serve --validate` prints. Parsing the output (with real tokens put back)
// gives the same configuration.
std::string DescribeServeConfig(const v1::ServeConfig& config);

// FAILED_PRECONDITION, naming the file, what it `holds` ("API tokens"), its mode and the
// fix (`chmod 600 FILE`), when `path` may be read or written by its group or by others
// (mode & 077). NOT_FOUND if `path` is gone.
absl::Status CheckPrivateFile(const std::string& path, std::string_view holds);

// CheckPrivateFile of `path` when `config` (read from it) holds API tokens. `cityops
// serve` refuses to start on such a file, `--validate` reports it, and a SIGHUP keeps the
// tokens it has.
absl::Status CheckTokenFilePermissions(const std::string& path, const v1::ServeConfig& config);

// True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: addresses no other machine reaches.
bool IsLoopbackAddress(std::string_view address);

// FAILED_PRECONDITION, saying what to do, when `http` listens beyond loopback in plain
// HTTP (no tls) without allow_plaintext. The configuration's check reports it at the
// line of listen_address; the daemon checks it again at start, for configurations made
// in code (`cityops demo --listen`).
absl::Status CheckPlaintextExposure(const v1::HttpConfig& http);

// The certificate and key of `http.tls`, loaded for the HTTP server (api/tls_context.h)
// once the key file is found to be its owner's only (CheckPrivateFile); null without
// TLS. Errors name the setting, the file and what is wrong with it. At start, and again
// on SIGHUP for the paths the daemon started with.
absl::StatusOr<std::shared_ptr<const api::TlsContext>> LoadTls(const v1::HttpConfig& http);

// The settings (dotted names, e.g. "http.port", "kafka.properties") that differ between
// the configuration a daemon runs with and one read again, tokens left out: what a SIGHUP
// cannot apply, which needs a restart. Names only, never values (they may be secrets).
std::vector<std::string> SettingsNeedingRestart(const v1::ServeConfig& running,
                                                const v1::ServeConfig& reread);

// True when no brokers are configured: the daemon hosts the embedded cluster.
inline bool UsesEmbeddedKafka(const v1::ServeConfig& config) {
  return config.kafka().bootstrap_servers().empty();
}

absl::Duration ClockTickInterval(const v1::ServeConfig& config);
// ingest.clock_tick_delay, after defaults.
absl::Duration ClockTickDelay(const v1::ServeConfig& config);

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_CONFIG_H_
