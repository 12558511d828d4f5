// GET /api/v1/changes of a running daemon, held open on a thread of its own, collecting
// the server-sent events that arrive, for tests of the change stream.
//
//   ChangeStream changes(d.port(), kViewerToken);
//   REQUIRE(changes.WaitFor("retry: 2000"));
//
// With `ca` (a PEM file), over HTTPS, the daemon's certificate checked against it.
//
// Header-only and free of Catch2.
#ifndef CITYOPS_TESTS_TESTING_CHANGE_STREAM_H_
#define CITYOPS_TESTS_TESTING_CHANGE_STREAM_H_

#include <httplib.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/testing/wait.h"

namespace cityops::testing {

class ChangeStream {
 public:
  ChangeStream(int port, const std::string& token, const std::string& ca = "") {
    thread_ = std::thread([this, port, token, ca] {
      httplib::Client client(absl::StrCat(ca.empty() ? "http" : "https", "://127.0.0.1:", port));
      if (!ca.empty()) {
        client.enable_server_certificate_verification(true);
        client.set_ca_cert_path(ca);
      }
      client.set_read_timeout(30, 0);
      const httplib::Headers headers = {{"Authorization", "Bearer " + token}};
      client.Get(
          "/api/v1/changes", headers,
          [this](const httplib::Response& r) {
            absl::MutexLock lock(&mu_);
            status_ = r.status;
            content_type_ = r.get_header_value("Content-Type");
            return true;
          },
          [this](const char* data, size_t n) {
            absl::MutexLock lock(&mu_);
            text_.append(data, n);
            return !stop_.load();
          });
      ended_.store(true);
    });
  }
  // Waits for the next chunk (statistics arrive every 2 s) to end the stream.
  ~ChangeStream() {
    stop_.store(true);
    thread_.join();
  }
  ChangeStream(const ChangeStream&) = delete;
  ChangeStream& operator=(const ChangeStream&) = delete;

  // True once `needle` has arrived (polled every 50 ms, testing/wait.h).
  bool WaitFor(const std::string& needle, absl::Duration timeout = absl::Seconds(30)) {
    return WaitUntil([&] { return absl::StrContains(text(), needle); }, timeout,
                     absl::Milliseconds(50));
  }
  std::string text() const {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  // How much has arrived so far: a later size() that is larger shows the stream lives.
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return text_.size();
  }
  int status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  std::string content_type() const {
    absl::MutexLock lock(&mu_);
    return content_type_;
  }
  // True once the request has ended (the server closed the stream, or it failed).
  bool ended() const { return ended_.load(); }

 private:
  mutable absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  std::string content_type_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::atomic<bool> ended_{false};
  std::thread thread_;
};

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_CHANGE_STREAM_H_
