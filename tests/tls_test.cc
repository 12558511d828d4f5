// TLS for the HTTP API and the dashboard (issue 17): the waiting room's handshakes
// (api/front_door.h), the certificate and key (api/tls_context.h, http.tls), their reload
// on SIGHUP, and plain HTTP beyond loopback refused or warned about, against the real
// daemon (`cityops serve`, tests/testing/daemon_process.h) with throwaway self-signed
// certificates (tests/testing/tls_files.h). The configuration's errors are in
// config_test.cc.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/tls_context.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/testing/change_stream.h"
#include "tests/testing/child_process.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/loopback_socket.h"
#include "tests/testing/metric_sample.h"
#include "tests/testing/report_request.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/text_file.h"
#include "tests/testing/tls_files.h"
#include "tests/testing/wait.h"

namespace cityops {
namespace {

using testing::Count;
using testing::ReadFile;
using testing::ReportJson;

namespace pb = google::protobuf;
using Catch::Matchers::Contains;
using testing::ChangeStream;
using testing::DaemonProcess;
using testing::HttpReply;
using testing::HttpsGet;
using testing::HttpsPost;
using testing::kStreetOperatorToken;
using testing::kViewerToken;
using testing::LoopbackSocket;

constexpr char kGrid[] = "310104001001001";  // In stan.street's street.

// The test daemon's configuration with `http` added to its http: settings.
std::string Config(const std::string& data, const std::string& http) {
  std::string config = DaemonProcess::Config(data);
  REQUIRE(absl::StrReplaceAll({{"http: {port: 0}", absl::StrCat("http: {port: 0, ", http, "}")}},
                              &config) == 1);
  return config;
}

std::string TlsSettings(const testing::TestCertificate& c) {
  return absl::StrCat("tls: {cert: ", c.cert_path, ", key: ", c.key_path, "}");
}

double Metric(int port, const std::string& ca, const std::string& series) {
  const HttpReply r = HttpsGet(port, ca, "/metrics");
  REQUIRE(r.status == 200);
  return testing::MetricSample(r.body, series);
}

void Report(int port, const std::string& ca, const std::string& case_id) {
  REQUIRE(HttpsPost(port, ca, "/api/v1/reports", kStreetOperatorToken, ReportJson(case_id, kGrid))
              .status == 201);
}

// Reports `case_id` over HTTPS and waits until the rules stage has opened it.
void ReportAndWaitOpened(int port, const std::string& ca, const std::string& case_id) {
  REQUIRE(HttpsPost(port, ca, "/api/v1/reports", kStreetOperatorToken, ReportJson(case_id, kGrid))
              .status == 201);
  REQUIRE(testing::WaitUntil(
      [&] {
        const HttpReply r = HttpsGet(port, ca, "/api/v1/cases/" + case_id, kViewerToken);
        v1::CaseDetail d;
        return r.status == 200 && pb::util::JsonStringToMessage(r.body, &d).ok() &&
               d.case_().opened();
      },
      absl::Seconds(30), absl::Milliseconds(50)));
}

// SIGHUP to `d`, then waits until the daemon has logged one more line with `outcome`.
void Reload(DaemonProcess& d, const std::string& outcome) {
  const size_t before = Count(d.log(), outcome);
  d.Signal(SIGHUP);
  INFO(d.log());
  REQUIRE(testing::WaitUntil([&] { return Count(d.log(), outcome) > before; }, absl::Seconds(20),
                             absl::Milliseconds(50)));
}

// Runs `argv` to its end; its exit status and what it printed.
std::pair<int, std::string> Run(const std::vector<std::string>& argv, const std::string& log) {
  testing::ChildProcess child(argv, log);
  const int status = child.Wait();
  child.ReadToEnd();
  return {status, child.output()};
}

TEST_CASE("a certificate and key load into a TLS context that says what they are", "[tls][api]") {
  testing::TempDir dir;
  const testing::TestCertificate c = testing::WriteSelfSignedCertificate(
      dir.Sub("c.pem"), dir.Sub("k.pem"), 0xC17, "ops.example", absl::Hours(48));
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> tls =
      api::TlsContext::Load(c.cert_path, c.key_path);
  INFO(tls.status().ToString());
  REQUIRE(tls.ok());
  CHECK((*tls)->serial() == "0C17");
  CHECK((*tls)->serial() == c.serial);
  CHECK((*tls)->subject() == "CN=ops.example");
  CHECK((*tls)->not_after() == c.not_after);
  CHECK_THAT((*tls)->Describe(), Contains("subject CN=ops.example, serial 0C17, valid until "));
  // A chain: the server's certificate first, then another; the key is the first one's.
  const testing::TestCertificate other =
      testing::WriteSelfSignedCertificate(dir.Sub("o.pem"), dir.Sub("o.key"), 2);
  { std::ofstream(dir.Sub("chain.pem")) << ReadFile(c.cert_path) << ReadFile(other.cert_path); }
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> chained =
      api::TlsContext::Load(dir.Sub("chain.pem"), c.key_path);
  INFO(chained.status().ToString());
  CHECK(chained.ok());
  // Which file is at fault.
  api::TlsContext::Culprit culprit = api::TlsContext::Culprit::kCertificate;
  CHECK(api::TlsContext::Load(c.cert_path, other.key_path, &culprit).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(culprit == api::TlsContext::Culprit::kKey);
  {
    std::ofstream(dir.Sub("damaged.pem"))
        << ReadFile(c.cert_path)
        << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  }
  absl::StatusOr<std::shared_ptr<const api::TlsContext>> damaged =
      api::TlsContext::Load(dir.Sub("damaged.pem"), c.key_path, &culprit);
  CHECK(culprit == api::TlsContext::Culprit::kCertificate);
  CHECK_THAT(std::string(damaged.status().message()),
             Contains("certificate 2 of its chain does not parse"));
}

TEST_CASE(
    "over HTTPS the API answers /healthz, a report and a case command, the change stream, "
    "the cityops client with --ca and the Python helper, and plain HTTP to the HTTPS port gets no "
    "HTTP answer and the server carries on",
    "[tls][slow]") {
  testing::TempDir dir;
  const testing::TestCertificate cert =
      testing::WriteSelfSignedCertificate(dir.Sub("cert.pem"), dir.Sub("key.pem"), 1001);
  const std::string ca = cert.cert_path;  // Self-signed: its own authority.
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, Config(data, TlsSettings(cert)));
  REQUIRE(d.WaitReady());
  const int port = d.port();
  CHECK(d.https());
  CHECK_THAT(d.stdout_text(), Contains(absl::StrCat("http: https://127.0.0.1:", port, "/\n")));
  CHECK_THAT(d.log(), Contains("daemon: HTTPS with the certificate " + cert.cert_path +
                               " (subject CN=cityops-test, serial 03E9, valid until "));

  const HttpReply health = HttpsGet(port, ca, "/healthz");
  CHECK(health.status == 200);
  CHECK_THAT(health.body, Contains("\"status\":\"ok\""));
  CHECK(health.headers.find("Content-Security-Policy") != health.headers.end());
  CHECK(testing::PeerCertificate(port).serial == cert.serial);

  // The change stream over TLS, open while a case is reported and worked.
  ChangeStream stream(port, kViewerToken, ca);
  REQUIRE(stream.WaitFor("retry: 2000"));
  CHECK(stream.status() == 200);
  ReportAndWaitOpened(port, ca, "S-1");
  const HttpReply registered =
      HttpsPost(port, ca, "/api/v1/cases/S-1/register", kStreetOperatorToken, "{}");
  CHECK(registered.status == 200);
  CHECK_THAT(registered.body, Contains("CASE_STAGE_REGISTERED"));
  CHECK(stream.WaitFor("S-1"));
  CHECK(HttpsGet(port, ca, "/api/v1/whoami").status == 401);  // Tokens are still needed.

  // The cityops client: https:// with --ca; without it the certificate does not check.
  const auto [listed, table] =
      Run({CITYOPS_BINARY, "cases", "list", "--server", absl::StrCat("https://127.0.0.1:", port),
           "--ca", ca, "--token", kViewerToken},
          dir.Sub("client.log"));
  CHECK(WIFEXITED(listed));
  CHECK(WEXITSTATUS(listed) == 0);
  CHECK_THAT(table, Contains("S-1"));
  const auto [refused, nothing] =
      Run({CITYOPS_BINARY, "cases", "list", "--server", absl::StrCat("https://127.0.0.1:", port),
           "--token", kViewerToken},
          dir.Sub("client-unverified.log"));
  CHECK(WEXITSTATUS(refused) == 1);
  CHECK_THAT(ReadFile(dir.Sub("client-unverified.log")),
             Contains("did not check (SSLServerVerification)"));
  // The Python tests' helper.
  const auto [python, whoami] = Run(
      {"/usr/bin/python3", std::string(CITYOPS_SOURCE_DIR) + "/tests/testing/api_client.py", "--ca",
       ca, "--token", kViewerToken, absl::StrCat("https://127.0.0.1:", port, "/api/v1/whoami")},
      dir.Sub("python.log"));
  INFO(ReadFile(dir.Sub("python.log")));
  CHECK(WEXITSTATUS(python) == 0);
  CHECK_THAT(whoami, Contains("200\n"));
  CHECK_THAT(whoami, Contains("vera.viewer"));

  // Plain HTTP to the HTTPS port: the handshake fails, nothing like HTTP comes back, the
  // connection is closed, and it is counted.
  const double failures_before = Metric(port, ca, "cityops_http_tls_handshake_failures_total");
  {
    LoopbackSocket plain("127.0.0.1", port);
    REQUIRE(plain.connected());
    REQUIRE(plain.Send("GET /healthz HTTP/1.1\r\nHost: cityops\r\n\r\n"));
    const std::string answer = plain.ReadResponse(absl::Seconds(5));
    CHECK_FALSE(absl::StrContains(answer, "HTTP/"));
    CHECK(testing::WaitUntil([&] { return plain.ClosedByServer(); }, absl::Seconds(5)));
  }
  CHECK(Metric(port, ca, "cityops_http_tls_handshake_failures_total") == failures_before + 1);
  CHECK_THAT(d.log(), Contains("TLS handshake with 127.0.0.1 failed: "));
  CHECK(HttpsGet(port, ca, "/healthz").status == 200);
  CHECK_FALSE(stream.ended());

  // What a handshake costs: fresh connections against one kept alive.
  constexpr int kRequests = 20;
  std::vector<double> fresh;
  std::vector<double> kept;
  for (int i = 0; i < kRequests; ++i) {
    const absl::Time start = absl::Now();
    REQUIRE(HttpsGet(port, ca, "/healthz").status == 200);
    fresh.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  {
    httplib::Client client(absl::StrCat("https://127.0.0.1:", port));
    client.enable_server_certificate_verification(true);
    client.set_ca_cert_path(ca);
    client.set_keep_alive(true);
    for (int i = 0; i < kRequests; ++i) {
      const absl::Time start = absl::Now();
      httplib::Result r = client.Get("/healthz");
      REQUIRE(r);
      REQUIRE(r->status == 200);
      kept.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    }
  }
  std::sort(fresh.begin(), fresh.end());
  std::sort(kept.begin(), kept.end());
  std::printf(
      "GET /healthz over TLS (P-256 certificate), %d each: a new connection with its handshake "
      "median %.2f ms (max %.2f); on one kept-alive connection median %.2f ms (max %.2f)\n",
      kRequests, fresh[kRequests / 2], fresh.back(), kept[kRequests / 2], kept.back());
  CHECK(Metric(port, ca, "cityops_http_tls_handshakes_total") >= kRequests + 1);
  CHECK(Metric(port, ca, "cityops_http_tls_certificate_expiry_seconds") ==
        static_cast<double>(absl::ToUnixSeconds(cert.not_after)));

  const int status = d.Stop(SIGTERM);
  INFO(d.log());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE(
    "200 connections that never send a ClientHello leave /healthz over TLS answered within a "
    "second, hold no thread, and are closed by the request timeout",
    "[tls][slow]") {
  rlimit files{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &files) == 0);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);
  testing::TempDir dir;
  const testing::TestCertificate cert =
      testing::WriteSelfSignedCertificate(dir.Sub("cert.pem"), dir.Sub("key.pem"), 7);
  const std::string ca = cert.cert_path;
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, Config(data, absl::StrCat(TlsSettings(cert), ", request_timeout: 6s")));
  REQUIRE(d.WaitReady());
  const int port = d.port();
  ReportAndWaitOpened(port, ca, "H-1");

  // 200 silent connections from 5 clients: accepted, never a byte of a handshake.
  std::vector<std::unique_ptr<LoopbackSocket>> silent;
  for (int i = 0; i < 200; ++i) {
    silent.push_back(std::make_unique<LoopbackSocket>(absl::StrCat("127.0.0.", 20 + i % 5), port));
    REQUIRE(silent.back()->connected());
  }
  REQUIRE(testing::WaitUntil(
      [&] { return Metric(port, ca, "cityops_http_connections{state=\"receiving\"}") >= 200; },
      absl::Seconds(4), absl::Milliseconds(50)));

  // Under them: probes and a command, each on a new connection with its own handshake.
  struct Step {
    std::string what;
    int status;
    absl::Duration took;
  };
  std::vector<Step> steps;
  auto timed = [&](const std::string& what, const std::function<HttpReply()>& request) {
    const absl::Time start = absl::Now();
    const HttpReply r = request();
    steps.push_back({what, r.status, absl::Now() - start});
    return r;
  };
  for (int i = 0; i < 5; ++i) {
    CHECK(timed("GET /healthz", [&] { return HttpsGet(port, ca, "/healthz"); }).status == 200);
  }
  CHECK(timed("GET /readyz", [&] { return HttpsGet(port, ca, "/readyz"); }).status == 200);
  CHECK(timed("POST /api/v1/cases/H-1/register", [&] {
          return HttpsPost(port, ca, "/api/v1/cases/H-1/register", kStreetOperatorToken, "{}");
        }).status == 200);
  const std::string during = HttpsGet(port, ca, "/metrics").body;
  CHECK(testing::MetricSample(during, "cityops_http_connections{state=\"receiving\"}") >= 200);
  for (const Step& s : steps) {
    std::printf("under 200 connections without a ClientHello: %-32s %3d in %7.1f ms (TLS)\n",
                s.what.c_str(), s.status, absl::ToDoubleMilliseconds(s.took));
    INFO(s.what << " took " << s.took);
    CHECK(s.took < absl::Seconds(1));
  }

  // The request timeout (6 s from their opening) closes them all; none was a handshake
  // that failed, for none began.
  CHECK(testing::WaitUntil(
      [&] {
        return std::all_of(silent.begin(), silent.end(),
                           [](const auto& s) { return s->ClosedByServer(); });
      },
      absl::Seconds(30), absl::Milliseconds(100)));
  const std::string after = HttpsGet(port, ca, "/metrics").body;
  CHECK(testing::MetricSample(
            after, "cityops_http_connections_closed_total{reason=\"request_timeout\"}") == 200);
  CHECK(testing::MetricSample(after, "cityops_http_connections{state=\"receiving\"}") == 0);
  CHECK(testing::MetricSample(after, "cityops_http_tls_handshake_failures_total") == 0);
  CHECK(HttpsGet(port, ca, "/healthz").status == 200);
  const int status = d.Stop(SIGTERM);
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE(
    "SIGHUP reloads the certificate: an open event stream keeps its connection and its events, "
    "new connections get the new certificate, and a broken key keeps the one in use",
    "[tls][slow]") {
  testing::TempDir dir;
  const std::string cert_path = dir.Sub("cert.pem");
  const std::string key_path = dir.Sub("key.pem");
  const testing::TestCertificate first =
      testing::WriteSelfSignedCertificate(cert_path, key_path, 1001, "cityops-first");
  // The renewal and a stray key, made beside the files in use and moved in place as a
  // renewal tool would.
  const testing::TestCertificate second = testing::WriteSelfSignedCertificate(
      dir.Sub("next.pem"), dir.Sub("next.key"), 1002, "cityops-second", absl::Hours(24 * 60));
  const testing::TestCertificate stray =
      testing::WriteSelfSignedCertificate(dir.Sub("stray.pem"), dir.Sub("stray.key"), 1003);
  // The clients trust both self-signed certificates.
  const std::string ca = dir.Sub("trusted.pem");
  { std::ofstream(ca) << ReadFile(first.cert_path) << ReadFile(second.cert_path); }
  const std::string data = dir.Sub("data");
  DaemonProcess d(data,
                  Config(data, absl::StrCat("tls: {cert: ", cert_path, ", key: ", key_path, "}")));
  REQUIRE(d.WaitReady());
  const int port = d.port();
  CHECK(testing::PeerCertificate(port).serial == first.serial);

  ChangeStream stream(port, kViewerToken, ca);
  REQUIRE(stream.WaitFor("retry: 2000"));
  ReportAndWaitOpened(port, ca, "R-1");
  REQUIRE(stream.WaitFor("R-1"));

  // --- The renewal: both files replaced, then SIGHUP.
  std::filesystem::rename(second.key_path, key_path);
  std::filesystem::rename(second.cert_path, cert_path);
  Reload(d, "TLS certificate reloaded");
  {
    INFO(d.log());
    CHECK_THAT(d.log(), Contains("daemon: TLS certificate reloaded from " + cert_path +
                                 ": subject CN=cityops-second, serial 03EA, valid until "));
  }
  const testing::PeerCertificateInfo renewed = testing::PeerCertificate(port);
  CHECK(renewed.serial == second.serial);
  CHECK(renewed.subject == "CN=cityops-second");
  CHECK(Metric(port, ca, "cityops_http_tls_reloads_total{result=\"ok\"}") == 1);
  CHECK(Metric(port, ca, "cityops_http_tls_certificate_expiry_seconds") ==
        static_cast<double>(absl::ToUnixSeconds(second.not_after)));
  // The stream began under the first certificate and goes on: a case reported now reaches it.
  CHECK_FALSE(stream.ended());
  // Reported, not waited on until opened: the stream carries the report itself. (A second
  // report into the same log partition stays unseen by the rules stage, cityops_rules_lag 1,
  // until something later passes it; that is so on main without TLS too, and no part of
  // this test.)
  Report(port, ca, "R-2");
  CHECK(stream.WaitFor("R-2"));

  // --- A key that is not the certificate's: refused, the renewed certificate stays.
  std::filesystem::rename(key_path, dir.Sub("renewed.key"));
  std::filesystem::rename(stray.key_path, key_path);
  Reload(d, "the TLS certificate was not reloaded, the one in use stays");
  {
    INFO(d.log());
    CHECK_THAT(d.log(), Contains("http.tls.key: the private key " + key_path +
                                 " does not match the certificate " + cert_path));
  }
  CHECK(testing::PeerCertificate(port).serial == second.serial);
  CHECK(Metric(port, ca, "cityops_http_tls_reloads_total{result=\"failed\"}") == 1);

  // --- The right key, but its group and others may read it: refused too.
  std::filesystem::rename(dir.Sub("renewed.key"), key_path);
  std::filesystem::permissions(
      key_path, std::filesystem::perms::group_read | std::filesystem::perms::others_read,
      std::filesystem::perm_options::add);
  Reload(d, "the TLS certificate was not reloaded, the one in use stays");
  {
    INFO(d.log());
    CHECK_THAT(d.log(), Contains(key_path + " holds the TLS private key but its mode is 0644"));
  }
  CHECK(Metric(port, ca, "cityops_http_tls_reloads_total{result=\"failed\"}") == 2);
  CHECK(Metric(port, ca, "cityops_http_tls_reloads_total{result=\"ok\"}") == 1);
  CHECK(testing::PeerCertificate(port).serial == second.serial);

  // Through all of it: one start, the stream open, and it still receives.
  CHECK_FALSE(stream.ended());
  Report(port, ca, "R-3");
  CHECK(stream.WaitFor("R-3"));
  CHECK(Count(d.stdout_text(), "ready\n") == 1);
  const int status = d.Stop(SIGTERM);
  INFO(d.log());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE(
    "plain HTTP beyond loopback: refused at start with what to do, unless allow_plaintext, "
    "which is warned about, and a key that is not the certificate's is refused at its line",
    "[tls][slow]") {
  testing::TempDir dir;
  // Refused: the configuration's check names the line; nothing starts.
  {
    const std::string data = dir.Sub("refused");
    DaemonProcess d(data, Config(data, "listen_address: 0.0.0.0"));
    const int status = d.WaitExit();
    INFO(d.log());
    CHECK(WEXITSTATUS(status) == 1);
    CHECK_THAT(d.log(), Contains(".yaml:3:17: listen_address 0.0.0.0 is not a loopback address "
                                 "and http.tls is not set"));
    CHECK_THAT(d.log(), Contains("set http.allow_plaintext: true"));
    CHECK_FALSE(std::filesystem::exists(data + "/http.port"));
  }
  // The demo, which serves plain HTTP only.
  {
    const auto [status, out] = Run({CITYOPS_BINARY, "demo", "--listen", "0.0.0.0", "--port", "0",
                                    "--data-dir", dir.Sub("demo")},
                                   dir.Sub("demo.log"));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK_THAT(ReadFile(dir.Sub("demo.log")),
               Contains("refusing to start: the demo serves plain HTTP, and --listen 0.0.0.0 is "
                        "not a loopback address"));
  }
  // A key that is not the certificate's: `serve --validate` says so at its line.
  {
    const testing::TestCertificate one =
        testing::WriteSelfSignedCertificate(dir.Sub("one.pem"), dir.Sub("one.key"), 1);
    const testing::TestCertificate two =
        testing::WriteSelfSignedCertificate(dir.Sub("two.pem"), dir.Sub("two.key"), 2);
    const std::string config = dir.Sub("mismatch.yaml");
    testing::WritePrivateFile(config,
                              absl::StrCat("http:\n  listen_address: 0.0.0.0\n  tls:\n"
                                           "    cert: ",
                                           one.cert_path, "\n    key: ", two.key_path, "\n"));
    const auto [status, out] =
        Run({CITYOPS_BINARY, "serve", "--config", config, "--validate"}, dir.Sub("validate.log"));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK_THAT(ReadFile(dir.Sub("validate.log")),
               Contains(config + ":5:5: the private key " + two.key_path +
                        " does not match the certificate " + one.cert_path));
  }
  // Allowed, and warned about at start.
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, Config(data, "listen_address: 0.0.0.0, allow_plaintext: true"));
  REQUIRE(d.WaitReady());
  CHECK_FALSE(d.https());
  CHECK_THAT(d.log(), Contains("daemon: http.allow_plaintext: the API and the dashboard listen on "
                               "0.0.0.0:" +
                               std::to_string(d.port()) +
                               " beyond this machine in plain HTTP: API tokens and the city's "
                               "data cross the network unencrypted"));
  CHECK(testing::Get(d.port(), "/healthz").status == 200);
  const std::string metrics = testing::Get(d.port(), "/metrics").body;
  CHECK_FALSE(absl::StrContains(metrics, "cityops_http_tls_"));
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

}  // namespace
}  // namespace cityops
