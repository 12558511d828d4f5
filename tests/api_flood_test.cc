// Connection floods against the real daemon (`cityops serve`, tests/testing/
// daemon_process.h), issue 17: idle keep-alive connections, clients sending their header or
// body a byte at a time, silent connections and open event streams, several hundred at
// once on loopback, must leave /healthz, /readyz, /metrics and people's commands answered
// at once; the limits of api/front_door.h (per client, in all, the request and idle
// timeouts, the header's size) close or refuse what they should and count it in /metrics;
// keep-alive and pipelined requests still work.
//
// Each flooding client connects from an address of its own in 127.0.0.0/8 (all of it is
// loopback on Linux), as distinct clients would; the test's own requests come from
// 127.0.0.1.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cityops/v1/api.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/testing/change_stream.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/loopback_socket.h"
#include "tests/testing/metric_sample.h"
#include "tests/testing/report_request.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/wait.h"

namespace cityops {
namespace {

using testing::ReportJson;

namespace pb = google::protobuf;
using Catch::Matchers::Contains;
using testing::ChangeStream;
using testing::DaemonProcess;
using testing::Get;
using testing::HttpReply;
using testing::kOperatorToken;
using testing::kStreetOperatorToken;
using testing::kViewerToken;
using testing::LoopbackSocket;
using testing::Post;

constexpr char kGrid[] = "310104001001001";  // In stan.street's street.

// Room for several hundred sockets in this process, whatever `ulimit -n` says.
void RaiseOpenFileLimit() {
  rlimit files{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &files) == 0);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);
}

int StatusOf(const std::string& response) {
  int status = 0;
  if (response.size() < 12 || !absl::SimpleAtoi(response.substr(9, 3), &status)) return 0;
  return status;
}

double Metric(int port, const std::string& series) {
  const HttpReply r = Get(port, "/metrics");
  REQUIRE(r.status == 200);
  return testing::MetricSample(r.body, series);
}

// Reports `case_id` and waits until the rules stage has opened it.
void ReportAndWaitOpened(int port, const std::string& case_id) {
  REQUIRE(Post(port, "/api/v1/reports", kStreetOperatorToken, ReportJson(case_id, kGrid)).status ==
          201);
  REQUIRE(testing::WaitUntil(
      [&] {
        const HttpReply r = Get(port, "/api/v1/cases/" + case_id, kViewerToken);
        v1::CaseDetail d;
        return r.status == 200 && pb::util::JsonStringToMessage(r.body, &d).ok() &&
               d.case_().opened();
      },
      absl::Seconds(30), absl::Milliseconds(50)));
}

std::string Config(const std::string& data, const std::string& http) {
  std::string config = DaemonProcess::Config(data);
  REQUIRE(absl::StrReplaceAll({{"http: {port: 0}", absl::StrCat("http: {port: 0, ", http, "}")}},
                              &config) == 1);
  return config;
}

// Sends one more byte to each open socket every `interval` until stopped: a header (or
// body) that never ends. Its sleep is the slow client's pace, the load under test, not a
// wait for a condition (those go through testing::WaitUntil).
class Trickler {
 public:
  Trickler(std::vector<std::unique_ptr<LoopbackSocket>>* sockets, absl::Duration interval)
      : thread_([this, sockets, interval] {
          while (!stop_.load()) {
            for (auto& s : *sockets) s->Send("a");
            absl::SleepFor(interval);
          }
        }) {}
  ~Trickler() {
    stop_.store(true);
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Each of `n` sockets from the `hosts` addresses 127.0.0.<first>.. in turn.
std::vector<std::unique_ptr<LoopbackSocket>> Open(int n, int first, int hosts, int port) {
  std::vector<std::unique_ptr<LoopbackSocket>> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(
        std::make_unique<LoopbackSocket>(absl::StrCat("127.0.0.", first + i % hosts), port));
    REQUIRE(out.back()->connected());
  }
  return out;
}

TEST_CASE(
    "several hundred idle, silent, slow and streaming connections leave health, metrics and "
    "a person's case commands answered within a second, and the slow ones are closed by "
    "the request timeout",
    "[api][slow]") {
  RaiseOpenFileLimit();
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, Config(data, "request_timeout: 5s, max_connections_per_client: 64"));
  REQUIRE(d.WaitReady());
  const int port = d.port();
  ReportAndWaitOpened(port, "F-1");

  // 200 idle keep-alive connections (one request answered, then nothing), from 5 clients.
  std::vector<std::unique_ptr<LoopbackSocket>> idle = Open(200, 10, 5, port);
  for (auto& s : idle) {
    REQUIRE(s->Send("GET /healthz HTTP/1.1\r\nHost: cityops\r\n\r\n"));
    REQUIRE(StatusOf(s->ReadResponse()) == 200);
  }
  // 3 dashboards on the change stream.
  std::vector<std::unique_ptr<ChangeStream>> streams;
  for (int i = 0; i < 3; ++i) {
    streams.push_back(std::make_unique<ChangeStream>(port, kViewerToken));
    REQUIRE(streams.back()->WaitFor("retry: 2000"));
  }
  // 200 silent connections, 100 sending a header a byte every 100 ms, 20 sending a body
  // so, each from 5 clients.
  std::vector<std::unique_ptr<LoopbackSocket>> silent = Open(200, 20, 5, port);
  std::vector<std::unique_ptr<LoopbackSocket>> slow = Open(100, 30, 5, port);
  std::vector<std::unique_ptr<LoopbackSocket>> slow_body = Open(20, 40, 5, port);
  for (auto& s : slow_body) {
    REQUIRE(s->Send(absl::StrCat("POST /api/v1/reports HTTP/1.1\r\nHost: cityops\r\n",
                                 "Authorization: Bearer ", kOperatorToken,
                                 "\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 500\r\n\r\n{")));
  }
  for (auto& s : slow) REQUIRE(s->Send("GET /healthz HTTP/1.1\r\nX-Slow: "));
  auto trickling = std::make_unique<Trickler>(&slow, absl::Milliseconds(100));
  auto trickling_bodies = std::make_unique<Trickler>(&slow_body, absl::Milliseconds(100));
  REQUIRE(testing::WaitUntil(
      [&] {
        const HttpReply r = Get(port, "/metrics");
        return testing::MetricSample(r.body, "cityops_http_connections{state=\"receiving\"}") >=
                   320 &&
               testing::MetricSample(r.body, "cityops_http_connections{state=\"idle\"}") >= 200;
      },
      absl::Seconds(4), absl::Milliseconds(50)));

  // Under the flood: the probes, then the case worked from registration to closing.
  struct Step {
    std::string what;
    HttpReply reply;
    absl::Duration took;
  };
  std::vector<Step> steps;
  auto timed = [&](const std::string& what, const std::function<HttpReply()>& request) {
    const absl::Time start = absl::Now();
    HttpReply r = request();
    steps.push_back({what, std::move(r), absl::Now() - start});
    return steps.back().reply;
  };
  // The street's operator works the case; the water authority's crew handles it.
  auto command = [&](const std::string& name, const std::string& body,
                     const char* token = kStreetOperatorToken) {
    return timed("POST /api/v1/cases/F-1/" + name,
                 [&] { return Post(port, "/api/v1/cases/F-1/" + name, token, body); });
  };
  CHECK(timed("GET /healthz", [&] { return Get(port, "/healthz"); }).status == 200);
  CHECK(timed("GET /readyz", [&] { return Get(port, "/readyz"); }).status == 200);
  CHECK(timed("GET /metrics", [&] { return Get(port, "/metrics"); }).status == 200);
  CHECK(command("register", "{}").status == 200);
  CHECK(command("dispatch", R"({"department":"water-authority"})").status == 200);
  CHECK(command("handle", R"({"result":"pumped out"})", testing::kWaterCrewToken).status == 200);
  CHECK(command("verify", R"({"passed":true,"note":"dry"})").status == 200);
  const HttpReply closed = command("close", "{}");
  CHECK(closed.status == 200);
  CHECK_THAT(closed.body, Contains("CASE_STAGE_CLOSED"));
  // The flood was still there throughout.
  const std::string during = timed("GET /metrics", [&] { return Get(port, "/metrics"); }).body;
  CHECK(testing::MetricSample(during, "cityops_http_connections{state=\"receiving\"}") >= 320);
  CHECK(testing::MetricSample(during, "cityops_http_connections{state=\"idle\"}") >= 200);
  CHECK(testing::MetricSample(during, "cityops_http_event_streams") == 3);
  for (const Step& s : steps) {
    std::printf("under a flood of %zu connections: %-34s %3d in %7.1f ms\n",
                idle.size() + silent.size() + slow.size() + slow_body.size() + streams.size(),
                s.what.c_str(), s.reply.status, absl::ToDoubleMilliseconds(s.took));
    INFO(s.what << " took " << s.took);
    CHECK(s.took < absl::Seconds(1));  // The issue's requirement.
  }

  // The request timeout (5 s here) closes the silent and the slow ones, bodies included.
  auto all_closed = [](const std::vector<std::unique_ptr<LoopbackSocket>>& sockets) {
    return std::all_of(sockets.begin(), sockets.end(),
                       [](const auto& s) { return s->ClosedByServer(); });
  };
  CHECK(testing::WaitUntil(
      [&] { return all_closed(silent) && all_closed(slow) && all_closed(slow_body); },
      absl::Seconds(30), absl::Milliseconds(100)));
  trickling.reset();
  trickling_bodies.reset();
  const std::string after = Get(port, "/metrics").body;
  CHECK(testing::MetricSample(
            after, "cityops_http_connections_closed_total{reason=\"request_timeout\"}") == 320);
  CHECK(testing::MetricSample(after, "cityops_http_connections{state=\"receiving\"}") == 0);
  // Idle keep-alive connections wait on (http.idle_timeout, 30 s); the streams stream on.
  CHECK(testing::MetricSample(after, "cityops_http_connections{state=\"idle\"}") >= 200);
  CHECK(std::none_of(idle.begin(), idle.end(), [](const auto& s) { return s->ClosedByServer(); }));
  CHECK(testing::MetricSample(after, "cityops_http_event_streams") == 3);
  // No slowly sent report was taken.
  const HttpReply cases = Get(port, "/api/v1/cases?page_size=1000", kViewerToken);
  CHECK(absl::StrContains(cases.body, "F-1"));
  CHECK(testing::MetricSample(
            after, "cityops_http_requests_total{route=\"/api/v1/reports\",code=\"201\"}") == 1);
}

TEST_CASE(
    "connection limits: a client past its cap is refused and counted, at the total cap the "
    "longest waiting is closed, a header too large gets 431, keep-alive and pipelined "
    "requests share a connection, and an idle one is closed by the idle timeout",
    "[api][slow]") {
  RaiseOpenFileLimit();
  testing::TempDir dir;
  const std::string data = dir.Sub("data");
  DaemonProcess d(data, Config(data,
                               "max_connections: 40, max_connections_per_client: 10, "
                               "request_timeout: 1m, idle_timeout: 2s"));
  REQUIRE(d.WaitReady());
  const int port = d.port();

  // --- Per client: the 11th connection from 127.0.0.50 is refused; others are served.
  std::vector<std::unique_ptr<LoopbackSocket>> first = Open(10, 50, 1, port);
  REQUIRE(testing::WaitUntil(
      [&] { return Metric(port, "cityops_http_connections{state=\"receiving\"}") >= 10; },
      absl::Seconds(10)));
  {
    LoopbackSocket eleventh("127.0.0.50", port);
    REQUIRE(eleventh.connected());
    const std::string refused = eleventh.ReadResponse();
    CHECK(StatusOf(refused) == 503);
    CHECK_THAT(refused, Contains("127.0.0.50 has 10 connections open"));
    CHECK_THAT(refused, Contains("http.max_connections_per_client"));
    CHECK_THAT(refused, Contains("Content-Security-Policy"));
    CHECK(eleventh.ReadResponse(absl::Seconds(5)).empty());  // And closed.
  }
  // The server stops counting a connection served with "Connection: close" only after the
  // client has read the answer. A probe that returns before then would still be open, and
  // being served rather than waiting, when the 40 below arrive, and one of those would be
  // evicted in its place. So this probe reads /metrics itself, waits for the close, and
  // is repeated until it was the only connection besides the first ten.
  std::string settled;
  REQUIRE(testing::WaitUntil(
      [&] {
        LoopbackSocket probe("127.0.0.49", port);
        if (!probe.connected() ||
            !probe.Send("GET /metrics HTTP/1.1\r\nHost: cityops\r\nConnection: close\r\n\r\n")) {
          return false;
        }
        settled = probe.ReadResponse();
        if (StatusOf(settled) != 200 ||
            !testing::WaitUntil([&] { return probe.ClosedByServer(); }, absl::Seconds(10))) {
          return false;
        }
        return testing::MetricSample(settled, "cityops_http_connections{state=\"receiving\"}") ==
                   10 &&
               testing::MetricSample(settled, "cityops_http_connections{state=\"idle\"}") == 0 &&
               testing::MetricSample(settled, "cityops_http_connections{state=\"serving\"}") == 1;
      },
      absl::Seconds(10)));
  CHECK(testing::MetricSample(
            settled, "cityops_http_connections_refused_total{reason=\"per_client\"}") == 1);

  // --- In all: 40 more from 4 other clients. Past 40 open, each new one closes the one that
  // has waited longest: the first ten.
  std::vector<std::unique_ptr<LoopbackSocket>> more = Open(40, 51, 4, port);
  CHECK(testing::WaitUntil(
      [&] {
        return std::all_of(first.begin(), first.end(),
                           [](const auto& s) { return s->ClosedByServer(); });
      },
      absl::Seconds(10)));
  CHECK(std::none_of(more.begin(), more.end(), [](const auto& s) { return s->ClosedByServer(); }));
  CHECK(Get(port, "/healthz").status == 200);  // At the cap, and answered.
  const std::string at_cap = Get(port, "/metrics").body;
  CHECK(testing::MetricSample(at_cap,
                              "cityops_http_connections_closed_total{reason=\"evicted\"}") >= 10);
  CHECK(testing::MetricSample(at_cap, "cityops_http_connections_refused_total{reason=\"total\"}") ==
        0);
  more.clear();
  first.clear();

  // --- A header that exceeds the limit without ending.
  {
    LoopbackSocket big("127.0.0.60", port);
    REQUIRE(big.connected());
    // 33 KiB in one write: the room reads it all before answering, so closing resets
    // nothing that the answer needs.
    REQUIRE(big.Send("GET /healthz HTTP/1.1\r\nX-Big: " + std::string(33 * 1024, 'a')));
    const std::string answer = big.ReadResponse();
    CHECK(StatusOf(answer) == 431);
    CHECK_THAT(answer, Contains("RESOURCE_EXHAUSTED"));
    CHECK(Metric(port, "cityops_http_connections_closed_total{reason=\"header_too_large\"}") == 1);
  }

  // --- Keep-alive and pipelining: three requests in one write, a body among them, and a
  // fourth later, all on one connection; then the idle timeout (2 s) closes it.
  const double accepted = Metric(port, "cityops_http_connections_accepted_total");
  LoopbackSocket keep("127.0.0.70", port);
  REQUIRE(keep.connected());
  const std::string report = ReportJson("K-1", kGrid);
  REQUIRE(keep.Send(absl::StrCat(
      "GET /healthz HTTP/1.1\r\nHost: cityops\r\n\r\n",
      "POST /api/v1/reports HTTP/1.1\r\nHost: cityops\r\n", "Authorization: Bearer ",
      kStreetOperatorToken, "\r\nContent-Type: application/json\r\nContent-Length: ", report.size(),
      "\r\n\r\n", report, "GET /api/v1/whoami HTTP/1.1\r\nHost: cityops\r\n",
      "Authorization: Bearer ", kViewerToken, "\r\n\r\n")));
  const std::string health = keep.ReadResponse();
  CHECK(StatusOf(health) == 200);
  CHECK_THAT(health, Contains("Keep-Alive: timeout=2"));
  const std::string reported = keep.ReadResponse();
  CHECK(StatusOf(reported) == 201);
  CHECK_THAT(reported, Contains("\"K-1\""));
  const std::string whoami = keep.ReadResponse();
  CHECK(StatusOf(whoami) == 200);
  CHECK_THAT(whoami, Contains("vera.viewer"));
  REQUIRE(keep.Send("GET /readyz HTTP/1.1\r\nHost: cityops\r\n\r\n"));
  CHECK(StatusOf(keep.ReadResponse()) == 200);
  // This connection and the scrape's own.
  CHECK(Metric(port, "cityops_http_connections_accepted_total") == accepted + 2);
  CHECK(testing::WaitUntil([&] { return keep.ClosedByServer(); }, absl::Seconds(10)));
  CHECK(Metric(port, "cityops_http_connections_closed_total{reason=\"idle_timeout\"}") >= 1);
}

}  // namespace
}  // namespace cityops
