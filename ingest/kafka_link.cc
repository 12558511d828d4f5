#include "ingest/kafka_link.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

namespace cityops::ingest {
namespace {

std::string WholeSeconds(absl::Duration d) {
  return absl::StrFormat("%d s", absl::ToInt64Seconds(std::max(d, absl::ZeroDuration())));
}

std::string_view StringField(const google::protobuf::Struct& s, const char* name) {
  auto it = s.fields().find(name);
  if (it == s.fields().end() || !it->second.has_string_value()) return {};
  return it->second.string_value();
}

double NumberField(const google::protobuf::Struct& s, const char* name, double missing) {
  auto it = s.fields().find(name);
  if (it == s.fields().end() || !it->second.has_number_value()) return missing;
  return it->second.number_value();
}

}  // namespace

KafkaLink::KafkaLink(std::string client, std::string bootstrap, std::string impact,
                     absl::Time created, absl::Duration stall)
    : client_(std::move(client)),
      bootstrap_(std::move(bootstrap)),
      impact_(std::move(impact)),
      stall_(stall) {
  state_.since = created;
}

void KafkaLink::OnStatistics(std::string_view json, absl::Time now) {
  google::protobuf::Struct stats;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(std::string(json), &stats, options).ok()) {
    return;  // Not expected from librdkafka; the next statistics decide.
  }
  auto brokers = stats.fields().find("brokers");
  if (brokers == stats.fields().end() || !brokers->second.has_struct_value()) return;
  bool reachable = false;
  absl::Time last_receive = absl::InfinitePast();
  int up = 0;
  for (const auto& [name, value] : brokers->second.struct_value().fields()) {
    if (!value.has_struct_value()) continue;
    const google::protobuf::Struct& b = value.struct_value();
    if (StringField(b, "source") == "internal") continue;  // librdkafka's own, always "UP".
    if (StringField(b, "state") != "UP") continue;
    ++up;
    // Microseconds since this connection last received anything; -1 if it has not yet.
    const double rxidle = NumberField(b, "rxidle", -1);
    if (rxidle < 0) continue;
    const absl::Time received = now - absl::Microseconds(static_cast<int64_t>(rxidle));
    last_receive = std::max(last_receive, received);
    if (now - received < stall_) reachable = true;
  }
  absl::MutexLock lock(&mu_);
  state_.last_receive = std::max(state_.last_receive, last_receive);
  if (reachable) {
    SetConnected(true, now, "");
  } else if (state_.connected) {
    SetConnected(false, now,
                 up == 0 ? "no broker connection is up"
                         : absl::StrFormat("%d broker connections are up but none answered for %s",
                                           up, WholeSeconds(stall_)));
  } else if (!state_.ever_connected && !logged_never_connected_ && now - state_.since >= stall_) {
    logged_never_connected_ = true;
    spdlog::warn(
        "kafka: {} has reached no broker in the {} since it started (bootstrap {}); {}. Check "
        "kafka.bootstrap_servers, that the brokers run, and the network between",
        client_, WholeSeconds(now - state_.since), bootstrap_, impact_);
  }
}

void KafkaLink::OnError(int err, std::string_view reason, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    if (state_.connected) SetConnected(false, now, reason);
    return;
  }
  // Other errors (one broker's connection, authentication, ...) once each per outage; at
  // debug level while connected, where librdkafka retries them unnoticed.
  if (!logged_errors_.insert(err).second) return;
  if (state_.connected) {
    spdlog::debug("kafka: {}: {} (librdkafka retries)", client_, reason);
  } else {
    spdlog::warn("kafka: {}: {} (bootstrap {}; librdkafka retries)", client_, reason, bootstrap_);
  }
}

void KafkaLink::SetConnected(bool connected, absl::Time now, std::string_view why) {
  if (connected == state_.connected) return;
  const absl::Duration was = now - state_.since;
  if (connected) {
    if (state_.ever_connected) {
      spdlog::info("kafka: {} reaches the cluster again after {} (bootstrap {})", client_,
                   WholeSeconds(was), bootstrap_);
    } else {
      spdlog::info("kafka: {} reaches the cluster (bootstrap {})", client_, bootstrap_);
    }
    state_.ever_connected = true;
  } else {
    spdlog::warn(
        "kafka: {} lost the cluster: no broker reachable (bootstrap {}: {}); {} until it is "
        "back. librdkafka reconnects by itself; check the brokers and the network between",
        client_, bootstrap_, why, impact_);
  }
  state_.connected = connected;
  state_.since = now;
  logged_errors_.clear();
}

KafkaLinkState KafkaLink::State() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

std::string KafkaLink::Problem(absl::Time now) const {
  const KafkaLinkState s = State();
  if (s.connected) return {};
  return absl::StrFormat("kafka: %s for %s (bootstrap %s); %s",
                         s.ever_connected ? "no broker reachable" : "no broker reached yet",
                         WholeSeconds(now - s.since), bootstrap_, impact_);
}

}  // namespace cityops::ingest
