// The API's tokens on the real daemon process (`cityops serve`, tests/testing/
// daemon_process.h), issue 17: rotation on SIGHUP without a restart, a configuration file
// that its group or others may read refused, failed authentication rate-limited per client
// and counted in /metrics, and every refused write logged with who tried and why.
//
// The parts that need no daemon (the limiter on a manual clock, the refusal reasons, the
// permission check) are in api_unit_test.cc and config_test.cc.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/testing/change_stream.h"
#include "tests/testing/child_process.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/metric_sample.h"
#include "tests/testing/report_request.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/text_file.h"
#include "tests/testing/wait.h"

namespace cityops {
namespace {

using testing::Count;
using testing::ReadFile;
using testing::ReportJson;

using Catch::Matchers::Contains;
using testing::DaemonProcess;
using testing::Get;
using testing::HttpReply;
using testing::Post;

constexpr char kRotatedViewerToken[] = "rotated-viewer-token-0123456789";
constexpr char kUnknownToken[] = "not-a-configured-token-0123456789";
constexpr char kOtherGrid[] = "310104002001001";  // Street 310104002, not stan.street's.

// `yaml` with `from` replaced by `to`, which must occur exactly once.
std::string Edit(std::string yaml, const std::string& from, const std::string& to) {
  INFO("no single '" << from << "' in:\n" << yaml);
  REQUIRE(absl::StrReplaceAll({{from, to}}, &yaml) == 1);
  return yaml;
}

// The user the API sees behind `token`, or "" when it refuses it.
std::string WhoAmI(int port, const std::string& token) {
  const HttpReply r = Get(port, "/api/v1/whoami", token);
  if (r.status != 200) return "";
  v1::WhoAmIResponse who;
  if (!google::protobuf::util::JsonStringToMessage(r.body, &who).ok()) return "";
  return who.actor().user();
}

// SIGHUP to `d`, then waits until the daemon has logged one more line with `outcome`.
void Reload(DaemonProcess& d, const std::string& outcome) {
  const size_t before = Count(d.log(), outcome);
  d.Signal(SIGHUP);
  INFO(d.log());
  REQUIRE(testing::WaitUntil([&] { return Count(d.log(), outcome) > before; }, absl::Seconds(20),
                             absl::Milliseconds(50)));
}

TEST_CASE(
    "SIGHUP rotates the API tokens without a restart: the old token is refused, the new one "
    "taken, an open stream goes on, and a file that does not check keeps the tokens in use",
    "[tokens][daemon][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string config = DaemonProcess::Config(data);
  DaemonProcess d(data, config);
  REQUIRE(d.WaitReady());
  const int port = d.port();
  REQUIRE(WhoAmI(port, testing::kViewerToken) == "vera.viewer");

  // A big screen's stream, open across the reloads, with a token that stays.
  testing::ChangeStream stream(port, testing::kOperatorToken);
  REQUIRE(stream.WaitFor("retry: 2000"));
  REQUIRE(stream.status() == 200);

  // --- Vera's token is replaced by a new one.
  const std::string rotated = Edit(config, testing::kViewerToken, kRotatedViewerToken);
  testing::WritePrivateFile(d.config_path(), rotated);
  Reload(d, "tokens reloaded:");
  {
    INFO(d.log());
    CHECK_THAT(d.log(), Contains("daemon: tokens reloaded: 8 tokens (added 1, removed 1) from " +
                                 d.config_path() +
                                 "; added for vera.viewer; removed from "
                                 "vera.viewer"));
    CHECK(WhoAmI(port, testing::kViewerToken).empty());
    CHECK(Get(port, "/api/v1/whoami", testing::kViewerToken).status == 401);
    CHECK(WhoAmI(port, kRotatedViewerToken) == "vera.viewer");
    CHECK(WhoAmI(port, testing::kAdminToken) == "ada.admin");
  }
  // The stream goes on: statistics arrive every 2 s after the reload as before.
  const size_t seen = stream.size();
  CHECK(testing::WaitUntil([&] { return stream.size() > seen; }, absl::Seconds(15),
                           absl::Milliseconds(50)));
  CHECK_FALSE(stream.ended());

  // --- A file its group and others may read: refused, the rotated tokens stay.
  const std::string next = Edit(rotated, kRotatedViewerToken, "next-viewer-token-0123456789");
  testing::WritePrivateFile(d.config_path(), next);
  std::filesystem::permissions(
      d.config_path(), std::filesystem::perms::group_read | std::filesystem::perms::others_read,
      std::filesystem::perm_options::add);
  Reload(d, "the tokens were not reloaded, the ones in use stay");
  {
    INFO(d.log());
    CHECK_THAT(d.log(), Contains(d.config_path() + " holds API tokens but its mode is 0644"));
    CHECK_THAT(d.log(), Contains("run `chmod 600 " + d.config_path() + "`"));
    CHECK(WhoAmI(port, kRotatedViewerToken) == "vera.viewer");
    CHECK(WhoAmI(port, "next-viewer-token-0123456789").empty());
  }

  // --- A file that does not check: refused with file:line, the rotated tokens stay.
  testing::WritePrivateFile(d.config_path(), Edit(rotated, kRotatedViewerToken, "too-short"));
  Reload(d, "the tokens were not reloaded, the ones in use stay");
  {
    INFO(d.log());
    // "<file>:<line>:<column>: a token must be at least 16 characters; ..."
    const std::string log = d.log();
    const size_t at = log.find(d.config_path() + ":");
    REQUIRE(at != std::string::npos);
    const std::string line = log.substr(at, log.find('\n', at) - at);
    CHECK(std::regex_search(line, std::regex(R"(\.yaml:\d+:\d+: a token must be at least 16 )"
                                             R"(characters)")));
    CHECK(WhoAmI(port, kRotatedViewerToken) == "vera.viewer");
  }

  // --- A setting that takes a restart is named as such; the tokens are reloaded all the same.
  testing::WritePrivateFile(d.config_path(), rotated + "durability: buffered\n");
  Reload(d, "tokens reloaded:");
  {
    INFO(d.log());
    CHECK_THAT(d.log(),
               Contains(d.config_path() + " changed durability, which needs a restart: until "
                                          "then the daemon keeps what it started with"));
  }

  // All of it in one process: one start, one "ready", the stream still open, and no
  // secret in the log.
  CHECK(Count(d.stdout_text(), "\nready\n") + (d.stdout_text().starts_with("ready\n") ? 1 : 0) ==
        1);
  CHECK(WhoAmI(port, kRotatedViewerToken) == "vera.viewer");
  CHECK_FALSE(stream.ended());
  const std::string log = d.log();
  for (const char* secret : {testing::kViewerToken, kRotatedViewerToken,
                             "next-viewer-token-0123456789", testing::kOperatorToken}) {
    INFO(secret);
    CHECK_FALSE(absl::StrContains(log, secret));
  }
  const int status = d.Stop(SIGTERM);
  INFO(d.log());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE(
    "serve refuses a configuration file holding tokens that its group or others may read, "
    "and --validate says so too",
    "[tokens][daemon]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string path = dir.Sub("cityops.yaml");
  testing::WritePrivateFile(path, DaemonProcess::Config(data));
  std::filesystem::permissions(path, std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  const std::string expected = "cityops: " + path +
                               " holds API tokens but its mode is 0640: its group or others may "
                               "read or write it; run `chmod 600 " +
                               path + "` (and keep it owned by the daemon's user)\n";
  for (const bool validate : {false, true}) {
    INFO((validate ? "--validate" : "serve"));
    std::vector<std::string> argv = {CITYOPS_BINARY, "serve", "--config", path};
    if (validate) argv.push_back("--validate");
    const std::string err = dir.Sub(validate ? "validate.err" : "serve.err");
    testing::ChildProcess p(argv, err);
    p.ReadToEnd();
    const int status = p.Wait();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK(ReadFile(err) == expected);
    CHECK_FALSE(absl::StrContains(p.output(), "ready"));
  }
  CHECK_FALSE(std::filesystem::exists(data));  // Nothing was started.

  // chmod 600, as it says: it starts.
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
      std::filesystem::perm_options::replace);
  testing::ChildProcess p({CITYOPS_BINARY, "serve", "--config", path, "--validate"},
                          dir.Sub("fixed.err"));
  p.ReadToEnd();
  CHECK(WEXITSTATUS(p.Wait()) == 0);
  CHECK_THAT(p.output(), Contains(path + ": valid"));
}

TEST_CASE(
    "failed authentication is rate-limited per client and counted in /metrics, and every "
    "refused write is logged with who tried and why",
    "[tokens][daemon][slow]") {
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  // 5 failures within 5 s block the client; the default is 10 within 1 m.
  DaemonProcess d(data, Edit(DaemonProcess::Config(data), "http: {port: 0}",
                             "http: {port: 0, auth_failure_limit: {failures: 5, window: 5s}}"));
  REQUIRE(d.WaitReady());
  const int port = d.port();
  const auto metrics = [&] { return Get(port, "/metrics").body; };
  {
    const std::string m = metrics();
    INFO(m);
    CHECK_THAT(m, Contains("# TYPE cityops_api_auth_failures_total counter\n"));
    CHECK(testing::MetricSample(m, "cityops_api_auth_failures_total{reason=\"no_token\"}") == 0);
    CHECK(testing::MetricSample(
              m, "cityops_api_auth_failures_total{reason=\"malformed_header\"}") == 0);
    CHECK(testing::MetricSample(m, "cityops_api_auth_failures_total{reason=\"unknown_token\"}") ==
          0);
    CHECK(testing::MetricSample(m, "cityops_api_auth_rate_limited_total") == 0);
  }

  // --- Refused writes, each for its own reason. Two of them fail authentication.
  const std::string report = ReportJson("T-1", kOtherGrid);
  CHECK(Post(port, "/api/v1/reports", "", report).status == 401);
  CHECK(Post(port, "/api/v1/reports", kUnknownToken, report).status == 401);
  CHECK(Post(port, "/api/v1/reports", testing::kViewerToken, report).status == 403);
  CHECK(Post(port, "/api/v1/reports", testing::kStreetOperatorToken, report).status == 403);
  CHECK(Post(port, "/api/v1/rules/reload", testing::kSupervisorToken, "").status == 403);
  // Reads refused are counted, not logged one by one.
  {
    httplib::Client client("127.0.0.1", port);
    httplib::Result r =
        client.Get("/api/v1/cases", httplib::Headers{{"Authorization", "Basic dXNlcjpwYXNz"}});
    REQUIRE(r);
    CHECK(r->status == 401);
  }
  CHECK(Get(port, "/api/v1/cases", kUnknownToken).status == 401);  // The 4th failure.
  CHECK(Get(port, "/api/v1/cases", testing::kViewerToken).status == 200);
  {
    const std::string m = metrics();
    INFO(m);
    CHECK(testing::MetricSample(m, "cityops_api_auth_failures_total{reason=\"no_token\"}") == 1);
    CHECK(testing::MetricSample(
              m, "cityops_api_auth_failures_total{reason=\"malformed_header\"}") == 1);
    CHECK(testing::MetricSample(m, "cityops_api_auth_failures_total{reason=\"unknown_token\"}") ==
          2);
    CHECK(testing::MetricSample(m, "cityops_api_auth_rate_limited_total") == 0);
  }

  // --- The 5th failure within 5 s blocks the client: 429 with Retry-After, even for a
  // valid token (it is not even looked at), until the window has passed.
  CHECK(Get(port, "/api/v1/cases", kUnknownToken).status == 401);
  const HttpReply blocked = Get(port, "/api/v1/cases", testing::kViewerToken);
  {
    INFO(blocked.status << " " << blocked.body);
    CHECK(blocked.status == 429);
    CHECK_THAT(blocked.body, Contains("RESOURCE_EXHAUSTED"));
    CHECK_THAT(blocked.body, Contains("too many failed authentications from 127.0.0.1"));
    auto retry = blocked.headers.find("Retry-After");
    REQUIRE(retry != blocked.headers.end());
    const int seconds = std::stoi(retry->second);
    CHECK(seconds >= 1);
    CHECK(seconds <= 5);
  }
  CHECK(Post(port, "/api/v1/reports", testing::kOperatorToken, report).status == 429);
  // What needs no token still answers.
  CHECK(Get(port, "/healthz").status == 200);
  {
    const std::string m = metrics();
    INFO(m);
    CHECK(testing::MetricSample(m, "cityops_api_auth_failures_total{reason=\"unknown_token\"}") ==
          3);
    CHECK(testing::MetricSample(m, "cityops_api_auth_rate_limited_total") == 2);
  }
  // Once the oldest failure is 5 s old, the client may try again.
  CHECK(testing::WaitUntil(
      [&] { return Get(port, "/api/v1/cases", testing::kViewerToken).status == 200; },
      absl::Seconds(10), absl::Milliseconds(200)));

  // --- The log: one line per refused write, with the client, the actor, the method and
  // path, and why; the block once; never a token.
  const std::string log = d.log();
  INFO(log);
  const std::string refused = "http: refused POST ";
  CHECK_THAT(log,
             Contains(refused + "/api/v1/reports from 127.0.0.1: actor anonymous: no token: "));
  CHECK_THAT(
      log, Contains(refused + "/api/v1/reports from 127.0.0.1: actor anonymous: unknown token: "));
  CHECK_THAT(log, Contains(refused +
                           "/api/v1/reports from 127.0.0.1: actor vera.viewer (viewer, city "
                           "center): role too low: POST /api/v1/reports needs the operator role"));
  CHECK_THAT(log, Contains(refused +
                           "/api/v1/reports from 127.0.0.1: actor stan.street (operator, street "
                           "center 310104001): outside the unit: report case T-1: grid " +
                           kOtherGrid));
  CHECK_THAT(log, Contains(refused + "/api/v1/rules/reload from 127.0.0.1: actor sue.supervisor "
                                     "(supervisor, city center): role too low: "));
  CHECK_THAT(log,
             Contains(refused + "/api/v1/reports from 127.0.0.1: actor anonymous: rate limited: "));
  CHECK(Count(log, refused) == 6);
  CHECK(Count(log, "http: client 127.0.0.1 failed authentication 5 times within 5s") == 1);
  for (const char* secret : {kUnknownToken, testing::kViewerToken, testing::kOperatorToken,
                             testing::kStreetOperatorToken, testing::kSupervisorToken}) {
    INFO(secret);
    CHECK_FALSE(absl::StrContains(log, secret));
  }
  CHECK(WEXITSTATUS(d.Stop(SIGTERM)) == 0);
}

}  // namespace
}  // namespace cityops
