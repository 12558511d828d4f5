// The real daemon (`cityops serve`) as a child process, and a small HTTP client, for
// tests of the daemon, its API and its dashboard.
//
//   DaemonProcess d(dir.Sub("data"), DaemonProcess::Config(dir.Sub("data")) + tokens_yaml);
//   REQUIRE(d.WaitReady());
//   HttpReply r = Get(d.port(), "/api/v1/statistics", kViewerToken);
//
// A daemon serving HTTPS (http.tls) announces "http: https://..."; `https()` says so, and
// HttpsGet / HttpsPost / HttpsRequest talk to it, checking its certificate against a CA
// file (tests/testing/tls_files.h makes certificates).
//
// The daemon gets its own configuration file (embedded Kafka, HTTP on a free loopback
// port, 200 ms clock ticks; mode 0600, as a file holding tokens must be), logs to `<data
// dir>/../daemon-<n>.log` (shown by log()), and is killed if the test leaves it running.
// Header-only; errors throw std::runtime_error.
#ifndef CITYOPS_TESTS_TESTING_DAEMON_PROCESS_H_
#define CITYOPS_TESTS_TESTING_DAEMON_PROCESS_H_

#include <httplib.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/testing/child_process.h"

#ifndef CITYOPS_BINARY
#error "CITYOPS_BINARY must name the built cityops binary"
#endif

namespace cityops::testing {

// Tokens every test configuration can use: one per role, at the city center and at one
// street (310104001, Xuhui district 310104), and two department crews, who handle
// (处置) the cases dispatched to their department: the water authority's crew for
// district 310104 and the elevator maintenance crew for the whole city.
inline constexpr char kViewerToken[] = "viewer-token-0123456789";
inline constexpr char kOperatorToken[] = "operator-token-0123456789";
inline constexpr char kSupervisorToken[] = "supervisor-token-0123456789";
inline constexpr char kAdminToken[] = "admin-token-0123456789";
inline constexpr char kStreetOperatorToken[] = "street-operator-token-0123456789";
inline constexpr char kOtherStreetOperatorToken[] = "other-street-token-0123456789";
inline constexpr char kWaterCrewToken[] = "water-crew-token-0123456789";
inline constexpr char kElevatorCrewToken[] = "elevator-crew-token-0123456789";
inline constexpr char kStreetCode[] = "310104001";
inline constexpr char kOtherStreetCode[] = "310104002";

// The tokens above as a `tokens:` YAML block.
inline std::string TestTokensYaml() {
  return absl::StrCat(
      "tokens:\n"
      "  - {token: ",
      kViewerToken,
      ", user: vera.viewer, role: viewer, unit: {level: city_center, code: city}}\n"
      "  - {token: ",
      kOperatorToken,
      ", user: otto.operator, role: operator, unit: {level: city_center, code: city}}\n"
      "  - {token: ",
      kSupervisorToken,
      ", user: sue.supervisor, role: supervisor, unit: {level: city_center, code: city}}\n"
      "  - {token: ",
      kAdminToken,
      ", user: ada.admin, role: admin, unit: {level: city_center, code: city}}\n"
      "  - {token: ",
      kStreetOperatorToken,
      ", user: stan.street, role: operator, unit: {level: street_center, code: \"", kStreetCode,
      "\"}}\n"
      "  - {token: ",
      kOtherStreetOperatorToken,
      ", user: olga.other, role: operator, unit: {level: street_center, code: \"", kOtherStreetCode,
      "\"}}\n"
      "  - {token: ",
      kWaterCrewToken,
      ", user: wen.water, role: operator, unit: {level: district_center, code: \"310104\", "
      "department: water-authority}}\n"
      "  - {token: ",
      kElevatorCrewToken,
      ", user: eli.elevator, role: operator, unit: {level: city_center, code: city, department: "
      "elevator-maintenance}}\n");
}

// Writes `text` to `path` (replacing it) readable and writable by its owner only: a
// configuration holding tokens that its group or others may read is refused.
inline void WritePrivateFile(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  {
    std::ofstream(path, std::ios::trunc) << text;
  }
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
}

class DaemonProcess {
 public:
  // A configuration for a test daemon on `data_dir`: embedded Kafka with 2 partitions,
  // HTTP on a free loopback port, quick clock ticks, the default rules, and the test
  // tokens. Append YAML to add to it.
  static std::string Config(const std::string& data_dir) {
    return absl::StrCat("data_dir: ", data_dir,
                        "\n"
                        "kafka: {embedded_partitions: 2}\n"
                        "http: {port: 0}\n"
                        "ingest: {clock_tick_interval: 200ms}\n"
                        "logging: {level: debug}\n",
                        TestTokensYaml());
  }

  // Writes `config_yaml` next to `data_dir` and starts `cityops serve` on it.
  DaemonProcess(const std::string& data_dir, const std::string& config_yaml,
                std::vector<std::string> extra_args = {})
      : data_dir_(data_dir) {
    static int counter = 0;
    const std::filesystem::path base = std::filesystem::path(data_dir).parent_path();
    const int n = ++counter;
    config_path_ = (base / absl::StrCat("daemon-", n, ".yaml")).string();
    log_path_ = (base / absl::StrCat("daemon-", n, ".log")).string();
    WritePrivateFile(config_path_, config_yaml);
    std::filesystem::remove(std::filesystem::path(data_dir) / "http.port");
    std::vector<std::string> argv = {CITYOPS_BINARY, "serve", "--config", config_path_};
    for (std::string& a : extra_args) argv.push_back(std::move(a));
    child_ = std::make_unique<ChildProcess>(argv, log_path_);
  }

  // Waits for the daemon's "ready" line; false if it exits or `timeout` passes first.
  bool WaitReady(absl::Duration timeout = absl::Seconds(60)) {
    if (!child_->WaitForLine("ready", timeout)) return false;
    for (const std::string& line :
         std::vector<std::string>(absl::StrSplit(child_->output(), '\n'))) {
      if (line.rfind("http: http://", 0) == 0 || line.rfind("http: https://", 0) == 0) {
        const std::string rest = line.substr(line.rfind(':') + 1);
        port_ = std::stoi(rest);
        https_ = line.rfind("http: https://", 0) == 0;
      } else if (line.rfind("kafka: ", 0) == 0) {
        kafka_ = line.substr(7, line.find(' ', 7) - 7);
      }
    }
    return port_ > 0;
  }

  // Sends `signal` and waits for the daemon to exit; returns its wait status.
  int Stop(int signal = SIGTERM) {
    child_->Kill(signal);
    const int status = child_->Wait();
    child_->ReadToEnd();
    return status;
  }

  void Signal(int signal) { child_->Kill(signal); }

  // Waits for the daemon to exit by itself (e.g. after refusing to start).
  int WaitExit() {
    const int status = child_->Wait();
    child_->ReadToEnd();
    return status;
  }

  int port() const { return port_; }
  // True when it announced an https:// address (http.tls).
  bool https() const { return https_; }
  const std::string& kafka() const { return kafka_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& config_path() const { return config_path_; }
  const std::string& stdout_text() const { return child_->output(); }
  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string data_dir_;
  std::string config_path_;
  std::string log_path_;
  std::unique_ptr<ChildProcess> child_;
  int port_ = -1;
  bool https_ = false;
  std::string kafka_;
};

struct HttpReply {
  int status = 0;  // 0 when the request failed at the transport.
  std::string body;
  std::string content_type;
  httplib::Headers headers;  // Names compare case-insensitively.
};

namespace daemon_process_internal {

inline HttpReply Send(httplib::Client& client, const std::string& method, const std::string& path,
                      const std::string& token, const std::string& body,
                      const std::string& content_type) {
  client.set_read_timeout(30, 0);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", absl::StrCat("Bearer ", token));
  httplib::Result r = method == "GET"
                          ? client.Get(path.c_str(), headers)
                          : client.Post(path.c_str(), headers, body, content_type.c_str());
  HttpReply out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.content_type = r->get_header_value("Content-Type");
  out.headers = r->headers;
  return out;
}

}  // namespace daemon_process_internal

inline HttpReply Request(int port, const std::string& method, const std::string& path,
                         const std::string& token = "", const std::string& body = "",
                         const std::string& content_type = "application/json") {
  httplib::Client client("127.0.0.1", port);
  return daemon_process_internal::Send(client, method, path, token, body, content_type);
}

// Over HTTPS to https://127.0.0.1:`port`, its certificate checked against the PEM file
// `ca` (and for naming 127.0.0.1). A new connection, and so a new handshake, each time.
inline HttpReply HttpsRequest(int port, const std::string& ca, const std::string& method,
                              const std::string& path, const std::string& token = "",
                              const std::string& body = "",
                              const std::string& content_type = "application/json") {
  httplib::Client client(absl::StrCat("https://127.0.0.1:", port));
  client.enable_server_certificate_verification(true);
  client.set_ca_cert_path(ca);
  return daemon_process_internal::Send(client, method, path, token, body, content_type);
}

inline HttpReply HttpsGet(int port, const std::string& ca, const std::string& path,
                          const std::string& token = "") {
  return HttpsRequest(port, ca, "GET", path, token);
}

inline HttpReply HttpsPost(int port, const std::string& ca, const std::string& path,
                           const std::string& token, const std::string& body) {
  return HttpsRequest(port, ca, "POST", path, token, body);
}

inline HttpReply Get(int port, const std::string& path, const std::string& token = "") {
  return Request(port, "GET", path, token);
}

inline HttpReply Post(int port, const std::string& path, const std::string& token,
                      const std::string& body) {
  return Request(port, "POST", path, token, body);
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_DAEMON_PROCESS_H_
