#include "api/front_door.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <list>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"

namespace cityops::api {

namespace {

using SteadyClock = std::chrono::steady_clock;

thread_local bool t_on_stream_lane = false;

enum class Lane { kRequests, kProbes, kStreams };

// Threads of the probes' lane (/healthz, /readyz, /metrics): answers that take
// milliseconds, asked by a scraper and a supervisor.
constexpr size_t kProbeThreads = 2;
// Bytes the room reads from one connection before turning to the others.
constexpr size_t kReadSlice = 256 * 1024;

// Runs httplib's accept-loop tasks on the accepting thread: each only hands a socket to
// the room.
class InlineTaskQueue final : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

std::chrono::milliseconds Millis(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Waits up to `timeout` for `events` on `fd`; true when they (or an error) came.
bool WaitFor(int fd, short events, std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) return false;
  pollfd p{fd, events, 0};
  for (;;) {
    const int r = poll(&p, 1, static_cast<int>(timeout.count()));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

std::string AddressText(const sockaddr_storage& a, int* port) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    *port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    *port = ntohs(in6->sin6_port);
  }
  return text;
}

// One connection, owned by the room; while it is being served, by the serving thread.
struct Connection {
  enum class State { kReceiving, kIdle, kServing };

  int fd = -1;
  // TLS: the connection's session (null in plain HTTP); whether its handshake has
  // completed; and whether it failed fatally (then no close_notify may follow).
  SSL* ssl = nullptr;
  bool handshaken = false;
  bool tls_broken = false;
  // The epoll events the room watches it for; 0 while it is not in the epoll set.
  uint32_t watching = 0;
  std::string client;  // The remote IP address.
  int port = 0;
  // Received and not yet read by a request: the one arriving, and any pipelined after it.
  std::string buffer;
  // Of the request at the head of `buffer`: bytes searched for the header's end, the
  // header's length once found (0 before), the body's length to wait for, and the lane.
  size_t scanned = 0;
  size_t header_end = 0;
  size_t body = 0;
  Lane lane = Lane::kRequests;

  State state = State::kReceiving;
  SteadyClock::time_point since;         // When it entered `state`.
  SteadyClock::time_point deadline;      // Closed then, in the room.
  std::list<Connection*>::iterator pos;  // In the room's list of its state.
  bool in_room = false;
  size_t served = 0;

  void ResetRequest() {
    scanned = 0;
    header_end = 0;
    body = 0;
    lane = Lane::kRequests;
  }
};

// The request at the head of `c.buffer`, once its header has arrived: the lane it goes
// to and the body to wait for (none when it is chunked, announced with Expect, larger than
// `max_body`, or its length is not one clear number: httplib reads or refuses those).
void ParseHead(Connection& c, size_t max_body) {
  absl::string_view head(c.buffer.data(), c.header_end);
  const size_t line_end = head.find("\r\n");
  const absl::string_view request_line = head.substr(0, line_end);
  const size_t sp1 = request_line.find(' ');
  const size_t sp2 = sp1 == absl::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
  if (sp1 != absl::string_view::npos) {
    const absl::string_view method = request_line.substr(0, sp1);
    absl::string_view path = request_line.substr(
        sp1 + 1, sp2 == absl::string_view::npos ? absl::string_view::npos : sp2 - sp1 - 1);
    path = path.substr(0, path.find('?'));
    if (method == "GET") {
      if (path == "/healthz" || path == "/readyz" || path == "/metrics") {
        c.lane = Lane::kProbes;
      } else if (path == "/api/v1/changes") {
        c.lane = Lane::kStreams;
      }
    }
  }
  int lengths = 0;
  uint64_t length = 0;
  bool read_by_server = false;
  size_t at = line_end == absl::string_view::npos ? head.size() : line_end + 2;
  while (at < head.size()) {
    size_t end = head.find("\r\n", at);
    if (end == absl::string_view::npos) end = head.size();
    const absl::string_view line = head.substr(at, end - at);
    at = end + 2;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view name = line.substr(0, colon);
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (absl::EqualsIgnoreCase(name, "content-length")) {
      ++lengths;
      if (!absl::SimpleAtoi(value, &length)) read_by_server = true;
    } else if (absl::EqualsIgnoreCase(name, "transfer-encoding") ||
               absl::EqualsIgnoreCase(name, "expect")) {
      read_by_server = true;
    }
  }
  if (lengths == 1 && !read_by_server && length <= max_body) c.body = static_cast<size_t>(length);
}

// The outcome of a read or write that does not block: bytes moved (> 0), or one of these.
constexpr ssize_t kEnded = 0;    // The client closed the connection.
constexpr ssize_t kLater = -1;   // Nothing now: wait for `*wait_for` on the socket.
constexpr ssize_t kFailed = -2;  // The connection failed (reset, a TLS error).

// TLS: what became of an SSL_read or SSL_write on c's session that returned `r` <= 0.
ssize_t TlsOutcome(Connection& c, int r, short* wait_for) {
  switch (SSL_get_error(c.ssl, r)) {
    case SSL_ERROR_WANT_READ:
      *wait_for = POLLIN;
      return kLater;
    case SSL_ERROR_WANT_WRITE:
      *wait_for = POLLOUT;
      return kLater;
    case SSL_ERROR_ZERO_RETURN:  // The client's close_notify.
      return kEnded;
    default:
      c.tls_broken = true;
      ERR_clear_error();
      return kFailed;
  }
}

// Reads what has arrived, without blocking: from the socket, or through c's TLS session.
ssize_t ReadNow(Connection& c, char* out, size_t size, short* wait_for) {
  *wait_for = POLLIN;
  if (c.ssl == nullptr) {
    for (;;) {
      const ssize_t n = recv(c.fd, out, size, MSG_DONTWAIT);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? kLater : kFailed;
    }
  }
  ERR_clear_error();
  const int n = SSL_read(c.ssl, out, static_cast<int>(std::min<size_t>(size, INT_MAX)));
  return n > 0 ? n : TlsOutcome(c, n, wait_for);
}

// Writes what the socket takes now, without blocking: to it, or through c's TLS session.
// (OpenSSL writes with write(2), which would raise SIGPIPE on a connection the client has
// closed; httplib::Server's constructor ignores SIGPIPE for the whole process.)
ssize_t WriteNow(Connection& c, const char* data, size_t size, short* wait_for) {
  *wait_for = POLLOUT;
  if (c.ssl == nullptr) {
    for (;;) {
      const ssize_t n = send(c.fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) return n;
      if (n == 0) return kFailed;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? kLater : kFailed;
    }
  }
  ERR_clear_error();
  const int n = SSL_write(c.ssl, data, static_cast<int>(std::min<size_t>(size, INT_MAX)));
  return n > 0 ? n : TlsOutcome(c, n, wait_for);
}

// httplib reads and writes a request through this: first what the room received, then
// the socket (through the connection's TLS session, if it has one), with poll() bounding
// every wait.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(Connection& c, absl::Duration read_timeout, absl::Duration write_timeout)
      : c_(c),
        read_deadline_(SteadyClock::now() + Millis(read_timeout)),
        write_timeout_(Millis(write_timeout)) {}
  // Drops what the request read; what follows it (a pipelined request) stays. An idle
  // connection keeps no large buffer.
  ~ConnectionStream() override {
    c_.buffer.erase(0, offset_);
    if (c_.buffer.empty() && c_.buffer.capacity() > 16 * 1024) std::string().swap(c_.buffer);
  }

  bool is_readable() const override {
    return offset_ < c_.buffer.size() || (c_.ssl != nullptr && SSL_pending(c_.ssl) > 0) ||
           WaitFor(c_.fd, POLLIN, ReadTimeLeft());
  }

  bool is_writable() const override { return WaitFor(c_.fd, POLLOUT, write_timeout_) && Alive(); }

  ssize_t read(char* ptr, size_t size) override {
    if (offset_ == c_.buffer.size()) {
      c_.buffer.clear();
      offset_ = 0;
      // As large as a TLS record's payload: SSL_read never keeps part of one.
      char chunk[16 * 1024];
      for (;;) {
        short wait_for;
        const ssize_t n = ReadNow(c_, chunk, sizeof(chunk), &wait_for);
        if (n > 0) {
          c_.buffer.append(chunk, static_cast<size_t>(n));
          break;
        }
        if (n == kEnded) return 0;
        if (n == kFailed || !WaitFor(c_.fd, wait_for, ReadTimeLeft())) return -1;
      }
    }
    const size_t n = std::min(size, c_.buffer.size() - offset_);
    memcpy(ptr, c_.buffer.data() + offset_, n);
    offset_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (size == 0) return 0;
    for (;;) {
      short wait_for;
      const ssize_t n = WriteNow(c_, ptr, size, &wait_for);
      if (n > 0) return n;
      if (n != kLater || !WaitFor(c_.fd, wait_for, write_timeout_)) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.client;
    port = c_.port;
  }

  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t len = sizeof(a);
    port = 0;
    ip.clear();
    if (getsockname(c_.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) ip = AddressText(a, &port);
  }

  socket_t socket() const override { return c_.fd; }

 private:
  std::chrono::milliseconds ReadTimeLeft() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(read_deadline_ -
                                                                 SteadyClock::now());
  }

  // False once the client has closed its end (readable, with nothing to read).
  bool Alive() const {
    pollfd p{c_.fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return true;
    char byte;
    const ssize_t n = recv(c_.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
  }

  Connection& c_;
  size_t offset_ = 0;
  SteadyClock::time_point read_deadline_;
  std::chrono::milliseconds write_timeout_;
};

}  // namespace

class FrontDoor::Room {
 public:
  Room(FrontDoor& door, const ConnectionLimits& limits, httplib::Headers headers,
       std::function<std::string(int, std::string_view, std::string_view)> error_json)
      : door_(door),
        limits_(limits),
        headers_(std::move(headers)),
        error_json_(std::move(error_json)) {}

  ~Room() { Stop(); }

  absl::Status Start() {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_ < 0 || wake_ < 0) {
      return absl::InternalError(absl::StrFormat(
          "the HTTP server cannot create its epoll instance or event fd: %s", strerror(errno)));
    }
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.ptr = nullptr;  // The wake-up fd; every other entry is a Connection.
    epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &e);
    probes_ = std::make_unique<httplib::ThreadPool>(kProbeThreads);
    streams_ = std::make_unique<httplib::ThreadPool>(
        static_cast<size_t>(std::max(1, limits_.max_event_streams)));
    requests_ =
        std::make_unique<httplib::ThreadPool>(static_cast<size_t>(std::max(1, limits_.workers)));
    {
      absl::MutexLock lock(&tls_mu_);
      started_ = true;
    }
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  absl::Status SetTls(std::shared_ptr<const TlsContext> context) {
    absl::MutexLock lock(&tls_mu_);
    if (started_ && (tls_ == nullptr) != (context == nullptr)) {
      return absl::FailedPreconditionError(
          tls_ == nullptr ? "this HTTP server serves plain HTTP: TLS takes a restart"
                          : "this HTTP server serves TLS: plain HTTP takes a restart");
    }
    tls_ = std::move(context);
    return absl::OkStatus();
  }

  std::shared_ptr<const TlsContext> tls() const {
    absl::MutexLock lock(&tls_mu_);
    return tls_;
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    stopping_flag_.store(true);
    Wake();
    if (thread_.joinable()) thread_.join();
    // The lanes finish what they hold; their connections are closed after the answer.
    for (auto* pool : {&probes_, &streams_, &requests_}) {
      if (*pool != nullptr) (*pool)->shutdown();
      pool->reset();
    }
    if (epoll_ >= 0) close(epoll_);
    if (wake_ >= 0) close(wake_);
    epoll_ = wake_ = -1;
  }

  // From the accepting thread.
  void Admit(int fd) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopped_) {
        admitted_.push_back(fd);
        Wake();
        return;
      }
    }
    CloseSocket(fd);
  }

  ConnectionStats stats() const {
    ConnectionStats s;
    s.open = open_.load();
    s.idle = idle_.load();
    s.receiving = receiving_.load();
    s.serving = serving_.load();
    s.accepted = accepted_.load();
    s.refused_per_client = refused_per_client_.load();
    s.refused_total = refused_total_.load();
    s.evicted = evicted_.load();
    s.request_timeouts = request_timeouts_.load();
    s.idle_timeouts = idle_timeouts_.load();
    s.headers_too_large = headers_too_large_.load();
    s.tls_handshakes = tls_handshakes_.load();
    s.tls_handshake_failures = tls_handshake_failures_.load();
    return s;
  }

 private:
  void Wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_, &one, sizeof(one));
  }

  static void CloseSocket(int fd) {
    shutdown(fd, SHUT_WR);
    close(fd);
  }

  // ---------------------------------------------------------------- the room's thread

  void Run() {
    std::vector<epoll_event> events(256);
    for (;;) {
      const int n =
          epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), TimeoutMillis());
      if (n < 0 && errno != EINTR) {
        spdlog::error("http: the waiting room's epoll_wait failed: {}", strerror(errno));
      }
      for (int i = 0; i < n; ++i) {
        if (events[i].data.ptr == nullptr) {
          uint64_t count;
          [[maybe_unused]] const ssize_t r = ::read(wake_, &count, sizeof(count));
        } else {
          OnEvent(static_cast<Connection*>(events[i].data.ptr));
        }
      }
      const bool stop = TakeInbox();
      Expire(SteadyClock::now());
      if (stop) break;
    }
    // Stopping: every connection in the room is closed; those being served are closed by
    // their threads once answered (Return, after stopped_).
    std::vector<int> admitted;
    std::vector<std::pair<Connection*, bool>> returned;
    {
      absl::MutexLock lock(&mu_);
      stopped_ = true;
      admitted.swap(admitted_);
      returned.swap(returned_);
    }
    for (int fd : admitted) CloseSocket(fd);
    for (auto& [c, keep] : returned) Close(c);
    for (auto* list : {&receiving_list_, &idle_list_}) {
      while (!list->empty()) Close(list->front());
    }
  }

  int TimeoutMillis() const {
    SteadyClock::time_point next = SteadyClock::time_point::max();
    if (!receiving_list_.empty()) next = std::min(next, receiving_list_.front()->deadline);
    if (!idle_list_.empty()) next = std::min(next, idle_list_.front()->deadline);
    if (next == SteadyClock::time_point::max()) return -1;
    const auto wait =
        std::chrono::ceil<std::chrono::milliseconds>(next - SteadyClock::now()).count();
    return static_cast<int>(std::clamp<int64_t>(wait, 0, 60'000));
  }

  // New sockets and connections back from their threads; true when stopping.
  bool TakeInbox() {
    std::vector<int> admitted;
    std::vector<std::pair<Connection*, bool>> returned;
    bool stop;
    {
      absl::MutexLock lock(&mu_);
      admitted.swap(admitted_);
      returned.swap(returned_);
      stop = stopping_;
    }
    for (auto& [c, keep] : returned) {
      if (!keep) {
        Close(c);
        continue;
      }
      c->ResetRequest();
      if (c->buffer.empty()) {
        Enter(c, Connection::State::kIdle);
      } else {  // A pipelined request has begun, or arrived whole.
        Enter(c, Connection::State::kReceiving);
        if (Complete(*c)) {
          Dispatch(c);
          continue;
        }
      }
      Watch(c, EPOLLIN);
      // Bytes the serving thread's reads left in the TLS session are no news to epoll.
      if (c->ssl != nullptr && SSL_has_pending(c->ssl) == 1) OnEvent(c);
    }
    for (int fd : admitted) Accept(fd);
    return stop;
  }

  void Accept(int fd) {
    accepted_.fetch_add(1);
    sockaddr_storage a{};
    socklen_t len = sizeof(a);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      CloseSocket(fd);
      return;
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->client = AddressText(a, &c->port);
    const std::shared_ptr<const TlsContext> tls = this->tls();
    const bool use_tls = tls != nullptr;
    const auto from_client = clients_.find(c->client);
    if (from_client != clients_.end() &&
        from_client->second >= limits_.max_connections_per_client) {
      refused_per_client_.fetch_add(1);
      Refuse(fd, use_tls,
             absl::StrFormat("%s has %d connections open, the limit of "
                             "http.max_connections_per_client; close one or raise the limit",
                             c->client, limits_.max_connections_per_client));
      return;
    }
    if (open_.load() >= limits_.max_connections) {
      Connection* oldest = OldestWaiting();
      if (oldest == nullptr) {
        refused_total_.fetch_add(1);
        Refuse(fd, use_tls,
               absl::StrFormat("%d connections are open and being served, the limit of "
                               "http.max_connections; try again shortly",
                               limits_.max_connections));
        return;
      }
      evicted_.fetch_add(1);
      Close(oldest);
    }
    if (use_tls) {
      // The session holds its own reference to the context: a SIGHUP that replaces the
      // context leaves this connection's in place until it closes.
      c->ssl = SSL_new(tls->ssl_ctx());
      if (c->ssl == nullptr || SSL_set_fd(c->ssl, fd) != 1) {
        spdlog::error("http: cannot make a TLS session for a connection from {}: {}", c->client,
                      OpenSslReason());
        if (c->ssl != nullptr) SSL_free(c->ssl);
        CloseSocket(fd);
        return;
      }
      SSL_set_accept_state(c->ssl);
    }
    // An answer goes out in several writes (httplib writes the header, then the body; TLS
    // a record each): with Nagle's algorithm, each after the first waited for the client's
    // delayed ACK, 40 ms per request on a kept-alive connection.
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ++clients_[c->client];
    open_.fetch_add(1);
    Connection* raw = c.release();
    // Enter moves it from the state it has (kServing, counted here) to kReceiving.
    raw->state = Connection::State::kServing;
    serving_.fetch_add(1);
    Enter(raw, Connection::State::kReceiving);
    Watch(raw, EPOLLIN);
  }

  // The connection that has waited longest in the room (a request arriving, or idle).
  Connection* OldestWaiting() const {
    Connection* a = receiving_list_.empty() ? nullptr : receiving_list_.front();
    Connection* b = idle_list_.empty() ? nullptr : idle_list_.front();
    if (a == nullptr) return b;
    if (b == nullptr) return a;
    return a->since <= b->since ? a : b;
  }

  // Plain HTTP answers 503; a TLS connection is closed before its handshake, unanswered.
  void Refuse(int fd, bool tls, const std::string& message) {
    spdlog::debug("http: connection refused: {}", message);
    if (!tls) {
      const std::string out = AnswerText(503, "Service Unavailable", "UNAVAILABLE", message);
      [[maybe_unused]] const ssize_t n =
          send(fd, out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    CloseSocket(fd);
  }

  // Writes a whole answer if the connection takes it at once; it closes after it.
  void Answer(Connection* c, int status, const std::string& reason, const std::string& code,
              const std::string& message) {
    const std::string out = AnswerText(status, reason, code, message);
    short wait_for;
    [[maybe_unused]] const ssize_t n = WriteNow(*c, out.data(), out.size(), &wait_for);
  }

  std::string AnswerText(int status, const std::string& reason, const std::string& code,
                         const std::string& message) const {
    const std::string body = error_json_(status, code, message);
    std::string out = absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\n");
    for (const auto& [name, value] : headers_) absl::StrAppend(&out, name, ": ", value, "\r\n");
    absl::StrAppend(&out,
                    "Cache-Control: no-store\r\nConnection: close\r\nContent-Type: "
                    "application/json\r\nContent-Length: ",
                    body.size(), "\r\n\r\n", body);
    return out;
  }

  // The socket is readable (or writable, where TLS wanted that).
  void OnEvent(Connection* c) {
    if (c->ssl != nullptr && !c->handshaken && !Handshake(c)) return;
    Receive(c);
  }

  // TLS: takes the handshake as far as it goes without blocking. True once it has
  // completed; false while it waits for the client (watched for what OpenSSL wants) or
  // after it failed (and `c` was closed).
  bool Handshake(Connection* c) {
    ERR_clear_error();
    const int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      c->handshaken = true;
      tls_handshakes_.fetch_add(1);
      return true;
    }
    const int error = SSL_get_error(c->ssl, r);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      Watch(c, error == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
      return false;
    }
    c->tls_broken = true;
    // A client gone before sending a byte (a port probe) failed no handshake.
    if (BIO_number_read(SSL_get_rbio(c->ssl)) > 0) {
      tls_handshake_failures_.fetch_add(1);
      spdlog::debug("http: TLS handshake with {} failed: {}", c->client,
                    error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                        ? std::string("the client closed the connection")
                        : OpenSslReason());
    }
    ERR_clear_error();
    Close(c);
    return false;
  }

  void Receive(Connection* c) {
    char chunk[16 * 1024];
    size_t taken = 0;
    // Bytes already in a TLS session are read on: epoll would not report them again.
    while (taken < kReadSlice || (c->ssl != nullptr && SSL_has_pending(c->ssl) == 1)) {
      short wait_for;
      const ssize_t n = ReadNow(*c, chunk, sizeof(chunk), &wait_for);
      if (n == kLater) {
        Watch(c, wait_for == POLLIN ? EPOLLIN : EPOLLOUT);
        return;
      }
      if (n <= 0) {  // The client closed it, or it failed.
        Close(c);
        return;
      }
      taken += static_cast<size_t>(n);
      c->buffer.append(chunk, static_cast<size_t>(n));
      if (c->state == Connection::State::kIdle) {
        Enter(c, Connection::State::kReceiving);  // Its request's deadline starts now.
      }
      if (Complete(*c)) {
        Unwatch(c);
        Dispatch(c);
        return;
      }
      if (c->header_end == 0 && c->buffer.size() > kMaxHeaderBytes) {
        headers_too_large_.fetch_add(1);
        Answer(c, 431, "Request Header Fields Too Large", "RESOURCE_EXHAUSTED",
               absl::StrFormat("the request header is larger than %d bytes", kMaxHeaderBytes));
        Close(c);
        return;
      }
    }
  }

  // Whether the request at the head of the buffer has arrived whole.
  bool Complete(Connection& c) const {
    if (c.header_end == 0) {
      const size_t from = c.scanned >= 3 ? c.scanned - 3 : 0;
      const size_t end = c.buffer.find("\r\n\r\n", from);
      if (end == std::string::npos) {
        c.scanned = c.buffer.size();
        return false;
      }
      c.header_end = end + 4;
      ParseHead(c, limits_.max_body_bytes);
    }
    return c.buffer.size() >= c.header_end + c.body;
  }

  void Dispatch(Connection* c) {
    Leave(c);
    SetState(c, Connection::State::kServing);
    Lane lane = c->lane;
    if (lane == Lane::kStreams) {
      if (streams_busy_.load() >= limits_.max_event_streams) {
        lane = Lane::kRequests;  // Refused there (OnStreamLane), quickly.
      } else {
        streams_busy_.fetch_add(1);
      }
    }
    httplib::ThreadPool& pool = lane == Lane::kProbes    ? *probes_
                                : lane == Lane::kStreams ? *streams_
                                                         : *requests_;
    pool.enqueue([this, c, lane] { Serve(c, lane); });
  }

  // Closes connections whose request or idle time ran out.
  void Expire(SteadyClock::time_point now) {
    while (!receiving_list_.empty() && receiving_list_.front()->deadline <= now) {
      request_timeouts_.fetch_add(1);
      Close(receiving_list_.front());
    }
    while (!idle_list_.empty() && idle_list_.front()->deadline <= now) {
      idle_timeouts_.fetch_add(1);
      Close(idle_list_.front());
    }
  }

  // Puts `c` in the room's list of `state`, its deadline starting now.
  void Enter(Connection* c, Connection::State state) {
    Leave(c);
    SetState(c, state);
    const SteadyClock::time_point now = SteadyClock::now();
    c->since = now;
    std::list<Connection*>* list;
    if (state == Connection::State::kIdle) {
      c->deadline = now + Millis(limits_.idle_timeout);
      list = &idle_list_;
    } else {
      c->deadline = now + Millis(limits_.request_timeout);
      list = &receiving_list_;
    }
    c->pos = list->insert(list->end(), c);
    c->in_room = true;
  }

  void Leave(Connection* c) {
    if (!c->in_room) return;
    (c->state == Connection::State::kIdle ? idle_list_ : receiving_list_).erase(c->pos);
    c->in_room = false;
  }

  void SetState(Connection* c, Connection::State state) {
    Gauge(c->state).fetch_sub(1);
    c->state = state;
    Gauge(state).fetch_add(1);
  }

  std::atomic<int64_t>& Gauge(Connection::State state) {
    switch (state) {
      case Connection::State::kIdle:
        return idle_;
      case Connection::State::kReceiving:
        return receiving_;
      case Connection::State::kServing:
        break;
    }
    return serving_;
  }

  // Watches `c` for `events` (EPOLLIN or EPOLLOUT) only.
  void Watch(Connection* c, uint32_t events) {
    if (c->watching == events) return;
    epoll_event e{};
    e.events = events;
    e.data.ptr = c;
    epoll_ctl(epoll_, c->watching == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &e);
    c->watching = events;
  }

  void Unwatch(Connection* c) {
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c->fd, nullptr);
    c->watching = 0;
  }

  // Closes `c` (in the room, or back from its thread) and forgets it.
  void Close(Connection* c) {
    Leave(c);
    Gauge(c->state).fetch_sub(1);
    auto it = clients_.find(c->client);
    if (it != clients_.end() && --it->second <= 0) clients_.erase(it);
    open_.fetch_sub(1);
    Discard(c);
  }

  // Ends the connection's TLS session (a close_notify, if the socket takes it at once),
  // closes its socket (which also takes it out of the epoll set) and deletes it.
  static void Discard(Connection* c) {
    if (c->ssl != nullptr) {
      if (c->handshaken && !c->tls_broken) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        ERR_clear_error();
      }
      SSL_free(c->ssl);
    }
    CloseSocket(c->fd);
    delete c;
  }

  // ---------------------------------------------------------------- serving threads

  void Serve(Connection* c, Lane lane) {
    t_on_stream_lane = lane == Lane::kStreams;
    const bool last =
        stopping_flag_.load() || c->served + 1 >= FrontDoor::kMaxRequestsPerConnection;
    bool keep;
    {
      ConnectionStream stream(*c, limits_.read_timeout, limits_.write_timeout);
      keep = door_.ServeOne(stream, last) && !last;
    }
    ++c->served;
    t_on_stream_lane = false;
    if (lane == Lane::kStreams) streams_busy_.fetch_sub(1);
    Return(c, keep);
  }

  void Return(Connection* c, bool keep) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopped_) {
        returned_.emplace_back(c, keep);
        Wake();
        return;
      }
    }
    // The room has closed: so does this connection.
    serving_.fetch_sub(1);
    open_.fetch_sub(1);
    Discard(c);
  }

  FrontDoor& door_;
  const ConnectionLimits limits_;
  const httplib::Headers headers_;
  const std::function<std::string(int, std::string_view, std::string_view)> error_json_;

  int epoll_ = -1;
  int wake_ = -1;
  std::thread thread_;
  std::unique_ptr<httplib::ThreadPool> probes_;
  std::unique_ptr<httplib::ThreadPool> streams_;
  std::unique_ptr<httplib::ThreadPool> requests_;
  std::atomic<int> streams_busy_{0};
  std::atomic<bool> stopping_flag_{false};

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // The room's thread has ended.
  std::vector<int> admitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<Connection*, bool>> returned_ ABSL_GUARDED_BY(mu_);

  // The room's thread only.
  std::list<Connection*> receiving_list_;         // In order of deadline.
  std::list<Connection*> idle_list_;              // In order of deadline.
  std::unordered_map<std::string, int> clients_;  // Open connections by client address.

  std::atomic<int64_t> open_{0};
  std::atomic<int64_t> idle_{0};
  std::atomic<int64_t> receiving_{0};
  std::atomic<int64_t> serving_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_per_client_{0};
  std::atomic<uint64_t> refused_total_{0};
  std::atomic<uint64_t> evicted_{0};
  std::atomic<uint64_t> request_timeouts_{0};
  std::atomic<uint64_t> idle_timeouts_{0};
  std::atomic<uint64_t> headers_too_large_{0};
  std::atomic<uint64_t> tls_handshakes_{0};
  std::atomic<uint64_t> tls_handshake_failures_{0};

  // The context of new TLS connections (null: plain HTTP), and whether the room runs.
  mutable absl::Mutex tls_mu_;
  std::shared_ptr<const TlsContext> tls_ ABSL_GUARDED_BY(tls_mu_);
  bool started_ ABSL_GUARDED_BY(tls_mu_) = false;
};

FrontDoor::FrontDoor(const ConnectionLimits& limits, httplib::Headers headers,
                     std::function<std::string(int, std::string_view, std::string_view)> error_json)
    : room_(std::make_unique<Room>(*this, limits, std::move(headers), std::move(error_json))) {
  new_task_queue = [] { return new InlineTaskQueue; };
  set_read_timeout(std::chrono::milliseconds(Millis(limits.read_timeout)));
  set_write_timeout(std::chrono::milliseconds(Millis(limits.write_timeout)));
  set_keep_alive_timeout(std::max<time_t>(1, static_cast<time_t>(absl::ToInt64Seconds(absl::Ceil(
                                                 limits.idle_timeout, absl::Seconds(1))))));
  set_keep_alive_max_count(kMaxRequestsPerConnection);
  // Each connection holds a file descriptor: make room for them and the rest (the log's
  // files, Kafka's sockets) as far as the hard limit allows.
  const rlim_t wanted = static_cast<rlim_t>(limits.max_connections) + 1024;
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < wanted) {
    const rlim_t before = files.rlim_cur;
    files.rlim_cur = std::min(wanted, files.rlim_max);
    if (files.rlim_cur > before && setrlimit(RLIMIT_NOFILE, &files) == 0) {
      spdlog::info("http: raised the limit of open files from {} to {} for {} connections", before,
                   files.rlim_cur, limits.max_connections);
    }
    if (files.rlim_cur < wanted) {
      spdlog::warn(
          "http: the limit of open files ({}, hard limit {}) leaves little room beside "
          "http.max_connections ({}): raise LimitNOFILE (ulimit -n) or lower "
          "http.max_connections",
          files.rlim_cur, files.rlim_max, limits.max_connections);
    }
  }
}

FrontDoor::~FrontDoor() { StopRoom(); }

absl::Status FrontDoor::StartRoom() {
  // httplib listens with a backlog of 5: a burst of connections would be dropped and
  // retried by the clients a second later. The room accepts them as fast as they come.
  if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, SOMAXCONN);
  return room_->Start();
}

void FrontDoor::StopRoom() { room_->Stop(); }

absl::Status FrontDoor::SetTls(std::shared_ptr<const TlsContext> context) {
  return room_->SetTls(std::move(context));
}

std::shared_ptr<const TlsContext> FrontDoor::tls() const { return room_->tls(); }

ConnectionStats FrontDoor::stats() const { return room_->stats(); }

bool FrontDoor::OnStreamLane() { return t_on_stream_lane; }

bool FrontDoor::process_and_close_socket(socket_t sock) {
  room_->Admit(sock);
  return true;
}

bool FrontDoor::ServeOne(httplib::Stream& stream, bool close_connection) {
  bool closed = false;
  const bool ok = process_request(stream, close_connection, closed, nullptr);
  return ok && !closed;
}

}  // namespace cityops::api
