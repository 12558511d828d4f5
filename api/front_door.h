// The HTTP server's front door: connections wait in one epoll thread (the waiting room)
// until a whole request has arrived, and only then take a thread to be served.
//
// cpp-httplib serves a connection on one thread from accept to close: an idle keep-alive
// connection, or a client sending its header a byte at a time, holds a thread for as long
// as it likes, and a few hundred of them left /healthz unanswered (issue 17). Here
// httplib still accepts and answers (routing, handlers, the response), but every accepted
// socket goes to the waiting room, which
//
//   - reads what arrives (non-blocking) into the connection's buffer until it holds a whole
//     request: the header, and the body when the header declares its Content-Length (a
//     chunked body, or one announced with `Expect: 100-continue`, is read by the serving
//     thread, within `read_timeout` in all);
//   - closes a connection whose request has not arrived `request_timeout` after its first
//     byte (after the connection opened, for its first request), one whose header is
//     larger than kMaxHeaderBytes (431), and a keep-alive connection that has waited
//     `idle_timeout` for its next request;
//   - refuses a connection (503) from a client address that has `max_connections_per_client`
//     open; at `max_connections` it closes the connection that has waited longest in the
//     room to let the new one in (and refuses the new one only if none is waiting);
//   - hands a whole request to a lane: /healthz, /readyz and /metrics to 2 threads of their
//     own; GET /api/v1/changes (a long-lived event stream) to `max_event_streams` threads
//     of its own, past which it goes to the requests' lane and is refused there (see
//     OnStreamLane); everything else to `workers` threads. The serving thread answers that
//     one request and gives the connection back to the room, which keeps it for the next
//     one (keep-alive, pipelined requests included) or closes it.
//
// So a thread is only ever busy with a request that has arrived whole, and the three lanes
// cannot starve one another. Event streams, the only long requests, never take a worker.
//
// TLS (SetTls before StartRoom; api/tls_context.h). The room makes each accepted socket a
// TLS connection of the context in place and runs its handshake without blocking, in the
// same epoll loop (waiting for whichever of reading or writing OpenSSL wants), then reads
// the request through the connection's TLS session (SSL_read) into the same buffer as a
// plain one; the serving thread's stream reads the rest and writes the answer through it.
// A handshake that has not completed `request_timeout` after the connection opened is
// closed like a request that has not arrived, so a connection that never says hello holds
// no thread either. A connection refused by a limit is closed without an answer (the 503
// of plain HTTP would need a handshake first). One connection, and so its TLS session, is
// only ever in the hands of one thread at a time: the room's, or, from the hand-over of a
// whole request until it is given back, its serving thread's. SetTls later replaces the
// context for the connections accepted from then on (SIGHUP); open ones keep theirs.
//
// Thread-safe where said; the serving threads call httplib's handlers concurrently.
#ifndef CITYOPS_API_FRONT_DOOR_H_
#define CITYOPS_API_FRONT_DOOR_H_

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "api/tls_context.h"

namespace cityops::api {

struct ConnectionLimits {
  int max_connections = 4096;
  int max_connections_per_client = 256;
  // A request (its header, and a body of declared length) arrives within this.
  absl::Duration request_timeout = absl::Seconds(10);
  // A keep-alive connection waits this long for its next request.
  absl::Duration idle_timeout = absl::Seconds(30);
  // Threads serving requests other than event streams and /healthz, /readyz, /metrics.
  int workers = 8;
  // Threads serving event streams (GET /api/v1/changes), one each.
  int max_event_streams = 64;
  // A body the room waits for; a larger declared one goes to httplib, which answers 413.
  size_t max_body_bytes = 64 * 1024;
  // A serving thread's reads of one request (the rest of a chunked body), in all.
  absl::Duration read_timeout = absl::Seconds(10);
  // A serving thread's wait to write any part of a response.
  absl::Duration write_timeout = absl::Seconds(10);
};

// Counts for /metrics. Gauges are the state of the moment; counters count since start.
struct ConnectionStats {
  int64_t open = 0;       // Gauge: connections open.
  int64_t idle = 0;       // Gauge: keep-alive connections waiting for their next request.
  int64_t receiving = 0;  // Gauge: connections whose request is arriving (or not yet begun).
  int64_t serving = 0;    // Gauge: connections with a whole request, queued or being served.
  uint64_t accepted = 0;
  uint64_t refused_per_client = 0;  // Past max_connections_per_client.
  uint64_t refused_total = 0;       // At max_connections, none waiting to close instead.
  uint64_t evicted = 0;             // Closed at max_connections to let a new one in.
  uint64_t request_timeouts = 0;    // Closed: the request did not arrive in time.
  uint64_t idle_timeouts = 0;       // Closed: idle keep-alive past idle_timeout.
  uint64_t headers_too_large = 0;   // Closed with 431.
  // TLS only. Handshakes completed; handshakes that failed: the client spoke no TLS (plain
  // HTTP, say), refused the certificate, or closed mid-handshake. A connection closed by
  // request_timeout before its handshake completed counts as a request timeout, one closed
  // before sending a byte (a port probe) as neither.
  uint64_t tls_handshakes = 0;
  uint64_t tls_handshake_failures = 0;
};

class FrontDoor : public httplib::Server {
 public:
  // The header the room waits for, at most (httplib's own limit is 8 KiB per line).
  static constexpr size_t kMaxHeaderBytes = 32 * 1024;
  // Requests served on one connection before it is closed (advertised in Keep-Alive).
  static constexpr size_t kMaxRequestsPerConnection = 1000;

  // `error_json(http_status, code, message)` is the body of the answers the room writes
  // itself (503 for a refused connection, 431), sent with `headers`.
  FrontDoor(
      const ConnectionLimits& limits, httplib::Headers headers,
      std::function<std::string(int http_status, std::string_view code, std::string_view message)>
          error_json);
  ~FrontDoor() override;

  // Before StartRoom: serve TLS with `context` (null, the default: plain HTTP). Once the
  // room runs, a door that serves TLS takes another context for the connections it
  // accepts from then on; open connections keep the one they began with.
  // FAILED_PRECONDITION for switching a running door between plain HTTP and TLS.
  // Thread-safe.
  absl::Status SetTls(std::shared_ptr<const TlsContext> context);
  // The context new connections get; null for plain HTTP. Thread-safe.
  std::shared_ptr<const TlsContext> tls() const;

  // Starts the room and the lanes. Call after binding, before listen_after_bind().
  absl::Status StartRoom();
  // After httplib's stop() and the return of listen_after_bind(): closes the connections
  // in the room, lets the lanes finish the requests they hold (closing their connections
  // after the answer), and joins every thread. Idempotent.
  void StopRoom();

  ConnectionStats stats() const;
  // True on a thread of the event streams' lane. A GET /api/v1/changes served anywhere
  // else came past max_event_streams and must be refused rather than held open.
  static bool OnStreamLane();

 private:
  class Room;
  // Called by httplib's accept loop with each accepted socket (here on the accepting
  // thread itself: new_task_queue runs tasks inline). Hands it to the room and returns.
  bool process_and_close_socket(socket_t sock) override;
  friend class Room;
  // Serves the one request at the head of the connection's buffer; false when the
  // connection must be closed afterwards.
  bool ServeOne(httplib::Stream& stream, bool close_connection);

  std::unique_ptr<Room> room_;
};

}  // namespace cityops::api

#endif  // CITYOPS_API_FRONT_DOOR_H_
