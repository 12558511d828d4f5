// Whether a Kafka client can reach its cluster, as librdkafka itself sees it, with one log
// line when the link is lost and one when it is back (not one per retry).
//
// How it is decided (and why). librdkafka reconnects by itself and hides an outage from
// the application: a consumer simply gets no records, and its cached high watermarks (and
// so the lag computed from them) keep their values from before. Two of its signals are
// reliable:
//   * its statistics (`statistics.interval.ms`, see kStatisticsIntervalMs), which name
//     each broker's connection state and the time since its socket last received
//     anything (`rxidle`). A consumer that can reach its cluster receives a fetch
//     response every fetch.wait.max.ms (and a heartbeat answer every
//     heartbeat.interval.ms), so "some broker is UP and answered within `stall`" holds
//     exactly while it is connected. The receive time also catches a link that went
//     silent without a reset (a network partition), where the state stays UP until
//     requests time out (socket.timeout.ms, 60 s);
//   * the error RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, which librdkafka raises the moment
//     its last broker connection drops: the loss is seen at once, without waiting for the
//     next statistics.
// Recovery has no error of its own: it is the first statistics that show a broker UP that
// answered. Errors of single brokers (__TRANSPORT, ...) are not an outage by themselves
// (another broker may serve); they are logged once per outage at most.
//
// Suited to a consumer, which is connected all the time. A producer connects only when it
// has something to send (sparse connections) and its idle connections may be closed by
// the broker, so its link state means nothing while idle: producers log their delivery
// errors instead (ingest/record_producer.h).
//
// Thread safety: all methods from any thread.
#ifndef CITYOPS_INGEST_KAFKA_LINK_H_
#define CITYOPS_INGEST_KAFKA_LINK_H_

#include <string>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cityops::ingest {

struct KafkaLinkState {
  // True while some broker is connected and answered within the stall time.
  bool connected = false;
  // False until the first broker answered (the state is "not yet connected" then).
  bool ever_connected = false;
  // When `connected` took its value (for a client that never connected, its creation).
  absl::Time since = absl::InfinitePast();
  // When a broker last sent this client anything; InfinitePast if none ever did.
  absl::Time last_receive = absl::InfinitePast();
};

class KafkaLink {
 public:
  // librdkafka's statistics.interval.ms for a client watched by a KafkaLink: how often the
  // link state is refreshed (a loss is seen at once through the error callback).
  static constexpr char kStatisticsIntervalMs[] = "1000";

  // `client` names the client in log lines ("ingest"); `bootstrap` is its
  // bootstrap.servers, named in log lines and reasons; `impact` says what an outage means
  // for the operator ("ingest paused, readings wait in Kafka"). A broker that sent nothing
  // for `stall` does not count as reachable: it must exceed the longest quiet of a connected
  // consumer, its heartbeat.interval.ms (3 s by default) while it owns no partitions.
  KafkaLink(std::string client, std::string bootstrap, std::string impact, absl::Time created,
            absl::Duration stall = absl::Seconds(10));

  // From the client's statistics callback (the JSON librdkafka passes), at `now`.
  void OnStatistics(std::string_view json, absl::Time now);
  // From the client's error callback (`err` an rd_kafka_resp_err_t; librdkafka stays out
  // of this header, ingest/README.md).
  void OnError(int err, std::string_view reason, absl::Time now);

  KafkaLinkState State() const;
  // For people, while not connected: "kafka: no broker reachable for 12 s (bootstrap
  // localhost:9092); ingest paused, readings wait in Kafka"; empty while connected.
  std::string Problem(absl::Time now) const;
  const std::string& bootstrap() const { return bootstrap_; }

 private:
  void SetConnected(bool connected, absl::Time now, std::string_view why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string client_;
  const std::string bootstrap_;
  const std::string impact_;
  const absl::Duration stall_;
  mutable absl::Mutex mu_;
  KafkaLinkState state_ ABSL_GUARDED_BY(mu_);
  // Errors already logged during this outage (so each is logged once).
  absl::flat_hash_set<int> logged_errors_ ABSL_GUARDED_BY(mu_);
  bool logged_never_connected_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_KAFKA_LINK_H_
