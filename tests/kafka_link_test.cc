// Kafka going away, as the clients see it: KafkaLink's verdict from librdkafka's statistics
// and errors (ingest/kafka_link.h), and RecordProducer's log lines as deliveries fail and
// succeed again (ingest/record_producer.h).
#include "ingest/kafka_link.h"

#include <librdkafka/rdkafka.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ingest/embedded_kafka.h"
#include "ingest/record_producer.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/testing/wait.h"

namespace cityops::ingest {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'790'000'000);

// librdkafka's statistics with one broker besides the internal one, in `state`, that last
// received `rxidle_us` ago.
std::string Statistics(const std::string& state, int64_t rxidle_us) {
  return absl::StrFormat(
      R"({"name":"rdkafka#consumer-1","brokers":{)"
      R"("GroupCoordinator":{"source":"logical","state":"UP","rxidle":-1},)"
      R"(":0/internal":{"source":"internal","state":"UP","rxidle":-1},)"
      R"("kafka-1:9092/1":{"source":"learned","state":"%s","rxidle":%d}},"topics":{}})",
      state, rxidle_us);
}

// Log lines of the default logger while it lives, for checks on what was logged.
class CapturedLog {
 public:
  CapturedLog()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)),
        previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("captured", sink_);
    logger->set_level(spdlog::level::info);
    logger->set_pattern("%l %v");
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() const { return absl::StrJoin(sink_->last_formatted(), ""); }
  size_t Count(const std::string& what) const {
    const std::string t = text();
    size_t n = 0;
    for (size_t at = t.find(what); at != std::string::npos; at = t.find(what, at + 1)) ++n;
    return n;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_CASE("KafkaLink: connected while a broker answers, lost at once, back at the next statistics",
          "[kafka_link]") {
  CapturedLog log;
  KafkaLink link("ingest", "kafka-1:9092", "ingest paused, readings wait in Kafka", kStart);
  CHECK_FALSE(link.State().connected);
  CHECK(link.Problem(kStart + absl::Seconds(2)) ==
        "kafka: no broker reached yet for 2 s (bootstrap kafka-1:9092); ingest paused, readings "
        "wait in Kafka");

  link.OnStatistics(Statistics("UP", 20'000), kStart + absl::Seconds(1));
  CHECK(link.State().connected);
  CHECK(link.State().last_receive == kStart + absl::Seconds(1) - absl::Milliseconds(20));
  CHECK(link.Problem(kStart + absl::Seconds(1)).empty());
  CHECK(log.Count("info kafka: ingest reaches the cluster (bootstrap kafka-1:9092)") == 1);

  // The last connection drops: lost at once, logged once however often it is said.
  link.OnError(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, "1/1 brokers are down",
               kStart + absl::Seconds(5));
  link.OnError(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, "1/1 brokers are down",
               kStart + absl::Seconds(6));
  link.OnStatistics(Statistics("TRY_CONNECT", -1), kStart + absl::Seconds(6));
  link.OnError(RD_KAFKA_RESP_ERR__TRANSPORT, "Connect to kafka-1:9092 failed",
               kStart + absl::Seconds(6));
  link.OnError(RD_KAFKA_RESP_ERR__TRANSPORT, "Connect to kafka-1:9092 failed",
               kStart + absl::Seconds(7));
  CHECK_FALSE(link.State().connected);
  CHECK(link.State().since == kStart + absl::Seconds(5));
  CHECK(link.Problem(kStart + absl::Seconds(17)) ==
        "kafka: no broker reachable for 12 s (bootstrap kafka-1:9092); ingest paused, readings "
        "wait in Kafka");
  CHECK(log.Count("ingest lost the cluster") == 1);
  CHECK(log.Count("Connect to kafka-1:9092 failed") == 1);

  // Back: one line, with how long it was away.
  link.OnStatistics(Statistics("UP", 3'000), kStart + absl::Seconds(36));
  CHECK(link.State().connected);
  CHECK(log.Count("info kafka: ingest reaches the cluster again after 31 s") == 1);
  INFO(log.text());
  CHECK(log.Count("kafka: ingest") == 4);
}

TEST_CASE("KafkaLink: a connection that stays UP but receives nothing for the stall time is lost",
          "[kafka_link]") {
  CapturedLog log;
  KafkaLink link("ingest", "kafka-1:9092", "ingest paused", kStart, absl::Seconds(10));
  link.OnStatistics(Statistics("UP", 1'000), kStart + absl::Seconds(1));
  REQUIRE(link.State().connected);
  link.OnStatistics(Statistics("UP", 9'000'000), kStart + absl::Seconds(10));
  CHECK(link.State().connected);  // 9 s of quiet: within the stall time.
  link.OnStatistics(Statistics("UP", 11'000'000), kStart + absl::Seconds(12));
  CHECK_FALSE(link.State().connected);
  CHECK(log.Count("broker connections are up but none answered for 10 s") == 1);
  // Broken statistics change nothing.
  link.OnStatistics("{not json", kStart + absl::Seconds(13));
  CHECK_FALSE(link.State().connected);
}

TEST_CASE("KafkaLink: a client that never reaches a broker says so once after the stall time",
          "[kafka_link]") {
  CapturedLog log;
  KafkaLink link("ingest", "nowhere:9092", "ingest paused", kStart, absl::Seconds(10));
  for (int s = 1; s <= 30; ++s) {
    link.OnStatistics(Statistics("CONNECT", -1), kStart + absl::Seconds(s));
  }
  CHECK_FALSE(link.State().connected);
  CHECK_FALSE(link.State().ever_connected);
  CHECK(log.Count("has reached no broker in the 10 s since it started (bootstrap nowhere:9092)") ==
        1);
}

TEST_CASE(
    "RecordProducer logs a record Kafka did not acknowledge when it happens, and the first "
    "acknowledgement after",
    "[kafka_link][kafka]") {
  absl::StatusOr<std::unique_ptr<EmbeddedKafka>> kafka =
      EmbeddedKafka::Start({.brokers = 1, .topics = {{"t", 1}}});
  REQUIRE(kafka.ok());
  CapturedLog log;
  absl::StatusOr<std::unique_ptr<RecordProducer>> producer = RecordProducer::Create(
      (*kafka)->bootstrap_servers(),
      {{"message.timeout.ms", "1500"}, {"reconnect.backoff.max.ms", "200"}}, "test producer");
  REQUIRE(producer.ok());
  REQUIRE((*producer)->Produce("t", "k", "before").ok());
  REQUIRE((*producer)->Flush(absl::Seconds(10)).ok());
  // Idle and cut off: nothing worth a warning (checked below: only one warning before the
  // record that fails).
  REQUIRE((*kafka)->SetBrokerDown(1).ok());

  // A record while the broker is down: logged as it times out, without a Flush.
  REQUIRE((*producer)->Produce("t", "k", "during").ok());
  CHECK(testing::WaitUntil(
      [&] { return log.Count("test producer: a record for t was not acknowledged by Kafka") == 1; },
      absl::Seconds(15), absl::Milliseconds(50)));
  CHECK((*producer)->failed() == 1);

  REQUIRE((*kafka)->SetBrokerUp(1).ok());
  REQUIRE((*producer)->Produce("t", "k", "after").ok());
  CHECK(testing::WaitUntil(
      [&] { return log.Count("test producer: Kafka acknowledges records again") == 1; },
      absl::Seconds(15), absl::Milliseconds(50)));
  INFO(log.text());
  CHECK(log.Count("records were not") == 1);
  const std::string text = log.text();
  const size_t failed_at = text.find("a record for t was not acknowledged");
  // Before the failure, at most the errors of the reconnects while the record waited.
  CHECK(text.substr(0, failed_at).find("(nothing waits to be sent)") == std::string::npos);
  CHECK(text.substr(0, failed_at).find("records wait in its queue") != std::string::npos);
  CHECK(!(*producer)->Flush(absl::Seconds(10)).ok());  // The failure since the last Flush.
  CHECK((*producer)->Flush(absl::Seconds(10)).ok());
}

}  // namespace
}  // namespace cityops::ingest
