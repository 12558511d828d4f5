// The ticket outbox (projections/ticket_outbox.h) against the embedded Kafka cluster and a
// real event log: every ticket published once (after dropping repeats by event id), in
// order per case, across restarts at the worst moment and a broker outage.
#include "projections/ticket_outbox.h"

#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "ingest/embedded_kafka.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "tests/testing/kafka_client.h"
#include "tests/testing/temp_dir.h"

namespace cityops::projections {
namespace {

using kernel::EventLog;
using kernel::Partition;
constexpr int kTopicPartitions = 3;

class Fixture {
 public:
  Fixture() {
    absl::StatusOr<std::unique_ptr<ingest::EmbeddedKafka>> kafka = ingest::EmbeddedKafka::Start(
        {.brokers = 1, .topics = {{"cityops.tickets", kTopicPartitions}}});
    REQUIRE(kafka.ok());
    kafka_ = *std::move(kafka);
    absl::StatusOr<std::unique_ptr<EventLog>> log =
        EventLog::Open({.path = dir_.Sub("log"), .durability = kernel::Durability::kBuffered});
    REQUIRE(log.ok());
    log_ = *std::move(log);
  }

  // Appends a ticket of `case_id` (its n-th) and some other events around it, in the
  // case's partition (a case's events all live in one partition).
  void AppendTicket(const std::string& case_id, int n) {
    const uint32_t partition = static_cast<uint32_t>(std::hash<std::string>()(case_id) % 4);
    kernel::AppendBatch batch{Partition(partition)};
    v1::Event reading;
    reading.set_stream_id("device/d" + case_id);
    reading.mutable_reading()->set_device_id("d" + case_id);
    reading.mutable_reading()->set_reading_id(absl::StrFormat("%d", ++other_));
    batch.Add(std::move(reading));
    v1::Event e;
    const std::string id = absl::StrFormat("%s-T%d", case_id, n);
    e.set_stream_id("ticket/" + id);
    e.mutable_provenance()->set_stage("rules");
    e.mutable_provenance()->set_idempotency_key("rules/ticket/" + id);
    v1::TicketIssued* t = e.mutable_ticket_issued();
    t->set_ticket_id(id);
    t->set_case_id(case_id);
    t->set_department("water-authority");
    batch.Add(std::move(e));
    v1::Event tick;
    tick.set_stream_id("clock");
    tick.mutable_clock_tick();
    batch.Add(std::move(tick));
    REQUIRE(log_->Append(std::move(batch)).ok());
    appended_[case_id].push_back(id);
  }

  std::unique_ptr<TicketOutbox> Outbox(bool skip_checkpoint = false) {
    OutboxOptions o;
    o.log = log_.get();
    o.bootstrap_servers = kafka_->bootstrap_servers();
    o.flush_timeout = absl::Seconds(3);
    o.skip_checkpoint = skip_checkpoint;
    o.kafka_properties = {{"message.timeout.ms", "2500"}};
    absl::StatusOr<std::unique_ptr<TicketOutbox>> outbox = TicketOutbox::Create(o);
    REQUIRE(outbox.ok());
    return *std::move(outbox);
  }

  // What consumers see after dropping repeats by event id: ticket ids per case, in
  // topic order; and how many records there were.
  std::pair<std::map<std::string, std::vector<std::string>>, size_t> Consumed() {
    std::vector<testing::ConsumedRecord> records =
        testing::ReadTopic(kafka_->bootstrap_servers(), "cityops.tickets", kTopicPartitions);
    std::set<std::string> seen;
    std::map<std::string, std::vector<std::string>> by_case;
    for (const testing::ConsumedRecord& r : records) {
      if (!seen.insert(r.headers.at("cityops-event-id")).second) continue;
      v1::TicketIssued t;
      REQUIRE(t.ParseFromString(r.value));
      CHECK(r.key == t.case_id());
      CHECK(r.headers.at("cityops-ticket-id") == t.ticket_id());
      CHECK(r.headers.at("cityops-case-id") == t.case_id());
      CHECK(r.headers.at("content-type") == "application/x-protobuf");
      by_case[t.case_id()].push_back(t.ticket_id());
    }
    return {by_case, records.size()};
  }

  ingest::EmbeddedKafka& kafka() { return *kafka_; }
  EventLog& log() { return *log_; }
  const std::map<std::string, std::vector<std::string>>& appended() const { return appended_; }

 private:
  testing::TempDir dir_;
  std::unique_ptr<ingest::EmbeddedKafka> kafka_;
  std::unique_ptr<EventLog> log_;
  std::map<std::string, std::vector<std::string>> appended_;
  int other_ = 0;
};

TEST_CASE("the outbox reads only tickets by their stored stream id", "[outbox]") {
  v1::Event e;
  e.set_stream_id("ticket/c-T1");
  e.mutable_ticket_issued()->set_ticket_id("c-T1");
  CHECK(StoredStreamStartsWith(e.SerializeAsString(), "ticket/"));
  e.set_stream_id("device/ticket/");
  CHECK_FALSE(StoredStreamStartsWith(e.SerializeAsString(), "ticket/"));
  e.set_stream_id(std::string(300, 't'));  // A two-byte length.
  CHECK_FALSE(StoredStreamStartsWith(e.SerializeAsString(), "ticket/"));
  e.set_stream_id("ticket/" + std::string(300, 'x'));
  CHECK(StoredStreamStartsWith(e.SerializeAsString(), "ticket/"));
  CHECK_FALSE(StoredStreamStartsWith("", "ticket/"));
}

TEST_CASE("every ticket is published with its key and headers, the checkpoint is in the log",
          "[outbox]") {
  Fixture f;
  for (int i = 0; i < 30; ++i) f.AppendTicket(absl::StrFormat("case-%d", i % 7), i / 7 + 1);
  std::unique_ptr<TicketOutbox> outbox = f.Outbox();
  absl::StatusOr<size_t> n = outbox->PollOnce();
  REQUIRE(n.ok());
  CHECK(*n == 30);
  auto [by_case, records] = f.Consumed();
  CHECK(records == 30);
  CHECK(by_case == f.appended());
  for (Partition p : f.log().Partitions()) {
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        f.log().StoredCheckpoint(p, kOutboxCheckpoint);
    REQUIRE(cp.ok());
    REQUIRE(cp->has_value());
    CHECK((*cp)->next == f.log().NextSequence(p));
  }
  // A new outbox on the same log publishes nothing again.
  std::unique_ptr<TicketOutbox> again = f.Outbox();
  n = again->PollOnce();
  REQUIRE(n.ok());
  CHECK(*n == 0);
  CHECK(f.Consumed().second == 30);
}

TEST_CASE("restarts at the worst moments lose and reorder nothing", "[outbox][slow]") {
  Fixture f;
  std::mt19937_64 rng(99);
  std::map<std::string, int> next_ticket;
  size_t tickets = 0;
  size_t published = 0;          // Records produced, repeats included.
  size_t published_crashed = 0;  // By outboxes that crashed before their checkpoint.
  size_t found = 0;              // Found on the topic by the outbox after a crash.
  for (int round = 0; round < 12; ++round) {
    for (uint64_t k = rng() % 20; k > 0; --k) {
      const std::string c = absl::StrFormat("case-%d", rng() % 9);
      f.AppendTicket(c, ++next_ticket[c]);
      ++tickets;
    }
    // Crash after publishing but before storing the checkpoint, every other round.
    const bool crash = rng() % 2 == 0;
    std::unique_ptr<TicketOutbox> outbox = f.Outbox(crash);
    absl::StatusOr<size_t> n = outbox->PollOnce();
    REQUIRE(n.ok());
    published += *n;
    found += outbox->Stats().found_published;
    if (crash) published_crashed += *n;
  }
  std::unique_ptr<TicketOutbox> last = f.Outbox();
  absl::StatusOr<size_t> n = last->PollOnce();
  REQUIRE(n.ok());
  published += *n;
  found += last->Stats().found_published;
  // Every ticket a crashed outbox sent was found on the topic by the next one (and again
  // by each after it, as long as none stored a checkpoint past it).
  CHECK(found >= published_crashed);
  auto [by_case, records] = f.Consumed();
  // The crashes came at the worst moment (tickets sent, checkpoint not stored) ...
  REQUIRE(published_crashed > 0);
  CHECK(records == published);
  // ... and the next outbox found those tickets on the topic instead of sending them
  // again: each ticket once, per case in log order.
  CHECK(records == tickets);
  CHECK(by_case == f.appended());
}

TEST_CASE("a broker outage holds the checkpoint until the tickets are delivered",
          "[outbox][slow]") {
  Fixture f;
  for (int i = 0; i < 10; ++i) f.AppendTicket("case-a", i + 1);
  REQUIRE(f.kafka().SetBrokerDown(1).ok());
  std::unique_ptr<TicketOutbox> outbox = f.Outbox();
  absl::StatusOr<size_t> n = outbox->PollOnce();
  REQUIRE_FALSE(n.ok());
  CHECK(n.status().code() == absl::StatusCode::kUnavailable);
  for (Partition p : f.log().Partitions()) {
    absl::StatusOr<std::optional<kernel::StageCheckpoint>> cp =
        f.log().StoredCheckpoint(p, kOutboxCheckpoint);
    REQUIRE(cp.ok());
    CHECK_FALSE(cp->has_value());
  }
  REQUIRE(f.kafka().SetBrokerUp(1).ok());
  std::unique_ptr<TicketOutbox> after = f.Outbox();
  n = after->PollOnce();
  REQUIRE(n.ok());
  CHECK(*n == 10);
  CHECK(f.Consumed().first == f.appended());
}

}  // namespace
}  // namespace cityops::projections
