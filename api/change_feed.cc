#include "api/change_feed.h"

#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "projections/ticket_outbox.h"

namespace cityops::api {

namespace {

// Streams whose events are changes; readings, registrations and clock ticks are not.
constexpr std::string_view kChangeStreams[] = {"alert/", "case/", "ticket/"};

bool IsChange(std::string_view stored) {
  for (std::string_view prefix : kChangeStreams) {
    if (projections::StoredStreamStartsWith(stored, prefix)) return true;
  }
  return false;
}

}  // namespace

std::vector<Change> ChangeFeed::Subscription::Next(absl::Duration timeout, bool* overflowed) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !queue_.empty() || closed_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  std::vector<Change> out(std::make_move_iterator(queue_.begin()),
                          std::make_move_iterator(queue_.end()));
  queue_.clear();
  *overflowed = overflowed_;
  overflowed_ = false;
  return out;
}

bool ChangeFeed::Subscription::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

ChangeFeed::ChangeFeed(kernel::EventLog* log, const views::Projections* views)
    : log_(log), views_(views) {}

std::shared_ptr<ChangeFeed::Subscription> ChangeFeed::Subscribe() {
  auto s = std::make_shared<Subscription>();
  absl::MutexLock lock(&mu_);
  if (stop_.load()) {
    absl::MutexLock sub(&s->mu_);
    s->closed_ = true;
  }
  subscribers_.push_back(s);
  return s;
}

size_t ChangeFeed::subscribers() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& w : subscribers_) n += w.expired() ? 0 : 1;
  return n;
}

void ChangeFeed::Broadcast(std::vector<Change>& changes) {
  if (changes.empty()) return;
  delivered_.fetch_add(changes.size());
  absl::MutexLock lock(&mu_);
  std::erase_if(subscribers_, [](const std::weak_ptr<Subscription>& w) { return w.expired(); });
  for (const auto& w : subscribers_) {
    std::shared_ptr<Subscription> s = w.lock();
    if (s == nullptr) continue;
    absl::MutexLock sub(&s->mu_);
    for (const Change& c : changes) s->queue_.push_back(c);
    while (s->queue_.size() > kMaxQueued) {
      s->queue_.pop_front();
      s->overflowed_ = true;
    }
  }
  changes.clear();
}

absl::Status ChangeFeed::Run() {
  // Where the feed stands in each partition: it starts where the read models are.
  std::map<uint32_t, kernel::Sequence> next;
  for (const views::PartitionLag& l : views_->Lag()) next[l.partition.value()] = l.next;
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = false;
  std::vector<Change> changes;
  v1::Event event;
  absl::Status result;
  while (!stop_.load()) {
    bool any = false;
    for (const views::PartitionLag& l : views_->Lag()) {
      kernel::Sequence& from = next[l.partition.value()];
      if (from >= l.next) continue;
      absl::Status failed;
      absl::Status scanned =
          log_->Scan(l.partition, from, [&](kernel::Sequence seq, std::string_view stored) {
            if (seq >= l.next) return false;
            from = seq.next();
            if (!IsChange(stored)) return true;
            failed = kernel::EventLog::ParseEvent({l.partition, seq}, stored, &event);
            if (!failed.ok()) return false;
            Change c;
            c.id = absl::StrFormat("%d/%d", l.partition.value(), seq.value());
            const google::protobuf::FieldDescriptor* payload =
                event.GetReflection()->GetOneofFieldDescriptor(
                    event, event.GetDescriptor()->FindOneofByName("payload"));
            c.type = payload != nullptr ? payload->name() : "event";
            if (!google::protobuf::util::MessageToJsonString(event, &c.json, json_options).ok()) {
              failed = absl::InternalError("cannot write event " + c.id + " as JSON");
              return false;
            }
            changes.push_back(std::move(c));
            return changes.size() < 1000;
          });
      if (!scanned.ok()) result = scanned;
      if (!failed.ok()) result = failed;
      if (!result.ok()) break;
      any = true;
      Broadcast(changes);
    }
    if (!result.ok()) break;
    if (!any) absl::SleepFor(absl::Milliseconds(100));
  }
  Stop();
  return result;
}

void ChangeFeed::Stop() {
  stop_.store(true);
  absl::MutexLock lock(&mu_);
  for (const auto& w : subscribers_) {
    if (std::shared_ptr<Subscription> s = w.lock()) {
      absl::MutexLock sub(&s->mu_);
      s->closed_ = true;
    }
  }
}

}  // namespace cityops::api
