// A raw TCP connection to a server on 127.0.0.1 from a loopback address of the test's
// choosing (all of 127.0.0.0/8 is loopback on Linux: distinct addresses look like distinct
// clients), for tests that hold connections open, send bytes by hand or send nothing.
//
//   LoopbackSocket s("127.0.0.20", port);
//   REQUIRE(s.Send("GET /healthz HTTP/1.1\r\nHost: cityops\r\n\r\n"));
//   std::string response = s.ReadResponse();
//
// Header-only and free of Catch2; a malformed response throws std::runtime_error.
#ifndef CITYOPS_TESTS_TESTING_LOOPBACK_SOCKET_H_
#define CITYOPS_TESTS_TESTING_LOOPBACK_SOCKET_H_

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cityops::testing {

// A raw TCP connection to the daemon from a loopback address of its own choosing.
class LoopbackSocket {
 public:
  LoopbackSocket(const std::string& source, int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in from{};
    from.sin_family = AF_INET;
    inet_pton(AF_INET, source.c_str(), &from.sin_addr);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    connected_ = bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof(from)) == 0 &&
                 connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0;
  }
  ~LoopbackSocket() {
    if (fd_ >= 0) close(fd_);
  }
  LoopbackSocket(const LoopbackSocket&) = delete;
  LoopbackSocket& operator=(const LoopbackSocket&) = delete;

  bool connected() const { return connected_; }

  bool Send(const std::string& data) {
    return send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }

  // The next whole response (header and Content-Length body), or what had arrived when
  // the connection closed or `timeout` passed. Bytes after it stay for the next call.
  std::string ReadResponse(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t length = 0;
        for (absl::string_view line : absl::StrSplit(buffer_.substr(0, end), "\r\n")) {
          if (absl::StartsWithIgnoreCase(line, "content-length:")) {
            if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(15)), &length)) {
              throw std::runtime_error("a response with a bad Content-Length: " + buffer_);
            }
          }
        }
        if (buffer_.size() >= end + 4 + length) {
          std::string response = buffer_.substr(0, end + 4 + length);
          buffer_.erase(0, end + 4 + length);
          return response;
        }
      }
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      pollfd p{fd_, POLLIN, 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) break;
      char chunk[4096];
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) break;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
    return std::exchange(buffer_, "");
  }

  // True once the daemon has closed the connection (end of stream or reset), having sent
  // nothing first.
  bool ClosedByServer() const {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    char byte;
    const ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_LOOPBACK_SOCKET_H_
