#include "projections/views/views.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <queue>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "catalogue/catalogue.h"
#include "catalogue/kinds.h"
#include "google/protobuf/arena.h"
#include "kernel/proto_time.h"
#include "projections/case_state.h"
#include "projections/device_key.h"
#include "projections/stored_event.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"

namespace cityops::views {

namespace fs = std::filesystem;

namespace {

// The keys of a generation's database. Listings are key order: devices and alerts by id;
// cases and tickets newest first (<order> is NewestFirst of their reported or issued time).
constexpr char kDevice[] = "d/";      // d/<device id>: DeviceView
constexpr char kAlert[] = "a/";       // a/<alert id>: AlertView
constexpr char kCase[] = "c/";        // c/<order>: CaseView
constexpr char kCaseOrder[] = "o/";   // o/<case id>: the case's <order>
constexpr char kTicket[] = "t/";      // t/<order>: TicketView
constexpr char kStats[] = "s/";       // s/<partition>: Statistics
constexpr char kCheckpoint[] = "p/";  // p/<partition>: "<next sequence> <time ns>"
constexpr char kActiveRules[] = "r/active";
constexpr char kLayout[] = "v/layout";
// Bumped when the keys or values change meaning; a read model of another layout is
// rebuilt from the log. 1 (no v/layout key): cases and tickets keyed by id. 2: devices
// without kind_id.
constexpr int kLayoutVersion = 3;

// A key suffix that sorts newest first: `time` inverted (microseconds, fixed width),
// then `id`, which makes it unique.
std::string NewestFirst(const google::protobuf::Timestamp& time, std::string_view id) {
  const int64_t micros = std::max<int64_t>(0, absl::ToUnixMicros(kernel::FromTimestamp(time)));
  return absl::StrFormat("%016x/%s", std::numeric_limits<int64_t>::max() - micros, id);
}

// Appends a length-delimited field (tag, length, bytes) to a serialized message.
void AppendBytesField(int field, std::string_view bytes, std::string* out) {
  auto varint = [out](uint64_t v) {
    while (v >= 0x80) {
      out->push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out->push_back(static_cast<char>(v));
  };
  varint(static_cast<uint64_t>(field) << 3 | 2);
  varint(bytes.size());
  out->append(bytes);
}

std::string PartitionKey(const char* prefix, uint32_t p) {
  return absl::StrFormat("%s%08d", prefix, p);
}

// The read-model directory (ProjectionOptions::dir) of generation directory `gen_dir`.
std::string RootOf(std::string_view gen_dir) {
  return fs::path(std::string(gen_dir)).parent_path().string();
}

// A RocksDB error of the generation database in `gen_dir`, while doing `what`.
absl::Status FromRocks(const rocksdb::Status& s, std::string_view gen_dir, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrFormat(
      "read models in %s: cannot %s: %s; check the disk (space, permissions) and retry; if "
      "the database itself is broken, stop cityops and delete %s: the read models are "
      "rebuilt from the log",
      gen_dir, what, s.ToString(), RootOf(gen_dir)));
}

// A record of the generation database in `gen_dir` that does not parse.
absl::Status Damaged(std::string_view gen_dir, std::string_view what) {
  return absl::DataLossError(absl::StrFormat(
      "read models in %s: %s is damaged; stop cityops and delete %s to rebuild the read "
      "models from the log",
      gen_dir, what, RootOf(gen_dir)));
}

// The kind of a device in `kinds`, by its kind id, else by its typed kind; null when
// the table has neither.
const catalogue::Kind* KindOfDevice(const catalogue::KindTable& kinds, const v1::DeviceView& d) {
  if (!d.kind_id().empty()) return kinds.Find(d.kind_id());
  return kinds.FindTyped(d.kind());
}

// Offline after three reporting intervals: the registered one, else that of the device's
// kind in the catalogue in force, else in the built-in catalogue (a kind the catalogue in
// force no longer lists), else an hour.
absl::Duration OfflineAfter(const catalogue::KindTable& kinds, const v1::DeviceView& d) {
  absl::Duration interval = absl::Hours(1);
  const catalogue::Kind* kind = KindOfDevice(kinds, d);
  if (kind == nullptr) kind = KindOfDevice(*catalogue::KindTable::BuiltIn(), d);
  if (kind != nullptr) interval = kind->reporting_interval;
  if (d.registration().has_reporting_interval() &&
      kernel::FromDurationProto(d.registration().reporting_interval()) > absl::ZeroDuration()) {
    interval = kernel::FromDurationProto(d.registration().reporting_interval());
  }
  return 3 * interval;
}

// A partition's share of the statistics, with maps while folding.
struct StatsPartial {
  uint64_t cases_total = 0;
  std::map<std::string, int64_t> by_source, by_stage, by_district, by_street;
  int64_t handled_at_street_level = 0, dispatched_by_district = 0, urged = 0;
  int64_t overdue_yellow = 0, overdue_red = 0, closed = 0, closed_on_time = 0;
  std::map<int, absl::Duration> stage_time_sum;  // Over closed cases.
  int64_t devices_total = 0, devices_online = 0, devices_unregistered = 0;
  int64_t alerts_active = 0, tickets_total = 0;

  // A case counts once the rules stage opened it; a report linked into another case
  // counts there (linked_reports), not as a case of its own.
  void Contribute(const v1::CaseView& v, int sign) {
    if (!v.opened() || !v.linked_to().empty()) return;
    cases_total += sign;
    by_source[v1::CaseSource_Name(v.source())] += sign;
    by_stage[v1::CaseStage_Name(v.stage())] += sign;
    if (!v.grid().district_code().empty()) by_district[v.grid().district_code()] += sign;
    if (!v.grid().street_code().empty()) by_street[v.grid().street_code()] += sign;
    bool handled = false;
    for (const v1::StageEntry& e : v.history()) handled |= e.stage() == v1::CASE_STAGE_HANDLED;
    if (handled && v.level() <= v1::GRID_LEVEL_STREET_CENTER) handled_at_street_level += sign;
    if (v.dispatched_by_level() == v1::GRID_LEVEL_DISTRICT_CENTER) dispatched_by_district += sign;
    if (v.urges() > 0) urged += sign;
    const bool open = v.stage() != v1::CASE_STAGE_CLOSED;
    if (open && v.overdue() == v1::OVERDUE_LEVEL_YELLOW) overdue_yellow += sign;
    if (open && v.overdue() == v1::OVERDUE_LEVEL_RED) overdue_red += sign;
    if (!open) {
      closed += sign;
      if (v.worst_overdue() == v1::OVERDUE_LEVEL_UNSPECIFIED) closed_on_time += sign;
      for (const v1::StageDuration& d : v.stage_durations()) {
        stage_time_sum[d.stage()] += sign * kernel::FromDurationProto(d.duration());
      }
    }
  }

  v1::Statistics ToStatistics() const {
    v1::Statistics s;
    s.set_cases_total(cases_total);
    auto counts = [](const std::map<std::string, int64_t>& m,
                     google::protobuf::RepeatedPtrField<v1::Count>* out) {
      for (const auto& [k, n] : m) {
        if (n == 0) continue;
        v1::Count* c = out->Add();
        c->set_key(k);
        c->set_count(static_cast<uint64_t>(n));
      }
    };
    counts(by_source, s.mutable_by_source());
    counts(by_stage, s.mutable_by_stage());
    counts(by_district, s.mutable_by_district());
    counts(by_street, s.mutable_by_street());
    s.set_handled_at_street_level(handled_at_street_level);
    s.set_dispatched_by_district(dispatched_by_district);
    s.set_urged(urged);
    s.set_overdue_yellow(overdue_yellow);
    s.set_overdue_red(overdue_red);
    s.set_closed(closed);
    s.set_closed_on_time(closed_on_time);
    // In a partition's share, mean_time_in_stage holds sums; GetStatistics divides.
    for (const auto& [stage, sum] : stage_time_sum) {
      v1::StageDuration* d = s.add_mean_time_in_stage();
      d->set_stage(static_cast<v1::CaseStage>(stage));
      kernel::ToDurationProto(sum, d->mutable_duration());
    }
    s.set_devices_total(devices_total);
    s.set_devices_online(devices_online);
    s.set_devices_unregistered(devices_unregistered);
    s.set_alerts_active(alerts_active);
    s.set_tickets_total(tickets_total);
    return s;
  }

  void FromStatistics(const v1::Statistics& s) {
    *this = StatsPartial();
    cases_total = s.cases_total();
    for (const v1::Count& c : s.by_source()) by_source[c.key()] = c.count();
    for (const v1::Count& c : s.by_stage()) by_stage[c.key()] = c.count();
    for (const v1::Count& c : s.by_district()) by_district[c.key()] = c.count();
    for (const v1::Count& c : s.by_street()) by_street[c.key()] = c.count();
    handled_at_street_level = s.handled_at_street_level();
    dispatched_by_district = s.dispatched_by_district();
    urged = s.urged();
    overdue_yellow = s.overdue_yellow();
    overdue_red = s.overdue_red();
    closed = s.closed();
    closed_on_time = s.closed_on_time();
    for (const v1::StageDuration& d : s.mean_time_in_stage()) {
      stage_time_sum[d.stage()] = kernel::FromDurationProto(d.duration());
    }
    devices_total = s.devices_total();
    devices_online = s.devices_online();
    devices_unregistered = s.devices_unregistered();
    alerts_active = s.alerts_active();
    tickets_total = s.tickets_total();
  }
};

}  // namespace

// One generation: its database and the state of folding into it.
class Projections::Generation {
 public:
  static absl::StatusOr<std::shared_ptr<Generation>> Open(kernel::EventLog* log, uint64_t number,
                                                          const std::string& dir) {
    auto g = std::shared_ptr<Generation>(new Generation());
    g->log_ = log;
    g->number_ = number;
    g->dir_ = dir;
    rocksdb::Options options;
    options.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    if (absl::Status s = FromRocks(rocksdb::DB::Open(options, dir, &db), dir, "open the database");
        !s.ok()) {
      return s;
    }
    g->db_.reset(db);
    if (absl::Status s = g->Load(); !s.ok()) return s;
    return g;
  }

  // A generation that was swapped out deletes its directory when the last user (a
  // query in flight, a folder) lets go of it. If the process dies first, the next Open
  // deletes it as a leftover.
  ~Generation() {
    db_.reset();  // Closed before its files go.
    if (remove_on_release_.load()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  void RemoveOnRelease() { remove_on_release_.store(true); }

  uint64_t number() const { return number_; }
  int layout() const { return layout_; }
  const std::string& dir() const { return dir_; }
  rocksdb::DB* db() const { return db_.get(); }

  // Folds up to `budget` events of every partition; commits. Returns events folded
  // (events skipped for being later than `until` count as folded).
  absl::StatusOr<size_t> Step(size_t budget, absl::Time until) {
    size_t folded = 0;
    for (kernel::Partition p : log_->Partitions()) {
      Part& part = parts_[p.value()];
      part.partition = p;
      absl::Status parse_error;
      size_t n = 0;
      google::protobuf::Arena arena;
      projections::StoredEnvelope envelope;
      projections::ReadingHeader reading;
      absl::Status scanned =
          log_->Scan(p, part.next, [&](kernel::Sequence seq, std::string_view value) {
            if (n == budget) return false;
            // Readings, most of the log, are folded from their bytes: envelope and reading
            // header decoded, the reading itself kept as it is stored. Everything else
            // (and anything that does not decode) is parsed.
            const bool decoded = projections::DecodeEnvelope(value, &envelope);
            if (decoded && envelope.event_time > until) {  // Not yet, as of `until`.
              part.next = seq.next();
              ++n;
              return true;
            }
            if (decoded && envelope.payload == v1::Event::kReading &&
                projections::DecodeReadingHeader(envelope.payload_bytes, &reading)) {
              AdvanceTime(part, envelope.event_time);
              FoldReading(part, seq, envelope.event_time, reading, envelope.payload_bytes);
            } else {
              v1::Event* e = google::protobuf::Arena::CreateMessage<v1::Event>(&arena);
              parse_error = kernel::EventLog::ParseEvent({p, seq}, value, e);
              if (!parse_error.ok()) return false;
              if (kernel::FromTimestamp(e->event_time()) <= until) {
                if (absl::Status s = Fold(part, *e); !s.ok()) {
                  parse_error = s;
                  return false;
                }
              }
            }
            part.next = seq.next();
            ++n;
            if (n % 4096 == 0) arena.Reset();
            return true;
          });
      if (!scanned.ok()) return scanned;
      if (!parse_error.ok()) return parse_error;
      folded += n;
      // Folded to its end: as of `until`, the partition's time is `until`.
      if (n < budget && until != absl::InfiniteFuture() && part.time < until) {
        AdvanceTime(part, until);
        part.time_dirty = true;
      }
    }
    if (absl::Status s = Commit(); !s.ok()) return s;
    return folded;
  }

  std::vector<PartitionLag> Lag() const {
    absl::MutexLock lock(&lag_mu_);
    std::vector<PartitionLag> out;
    for (const auto& [p, next] : committed_) {
      const kernel::Sequence end = log_->NextSequence(kernel::Partition(p));
      out.push_back({kernel::Partition(p), next,
                     end.value() > next.value() ? end.value() - next.value() : 0});
    }
    return out;
  }

  bool CaughtUp() const {
    for (kernel::Partition p : log_->Partitions()) {
      auto it = parts_.find(p.value());
      if (it == parts_.end() || it->second.next < log_->NextSequence(p)) return false;
    }
    return true;
  }

 private:
  // A device's live state. `view` is its DeviceView without last_reading and
  // recent_readings: those are the readings in `recent`, kept as stored in the log
  // (newest first by event time) and written into the view at commit. A reading is
  // then one copy of its bytes into a reused buffer, not two protobuf copies.
  struct DeviceEntry {
    struct Recent {
      absl::Time time;    // The reading event's event time.
      std::string bytes;  // The serialized SensorReading.
    };
    v1::DeviceView view;
    std::array<Recent, kRecentReadings> recent;
    size_t recent_size = 0;
    absl::Duration offline_after = absl::ZeroDuration();
    bool dirty = false;    // Changed since the last commit.
    bool watched = false;  // Has an entry in its partition's offline_due.
  };

  struct Part {
    kernel::Partition partition;
    kernel::Sequence next{0};
    kernel::Sequence committed{0};  // The checkpoint stored.
    absl::Time time = absl::InfinitePast();
    StatsPartial stats;
    bool stats_dirty = true;
    bool time_dirty = false;  // Moved without an event (to `until`): store it.
    // (when to look again, device) for this partition's online devices, earliest on top:
    // at most one entry per device, checked lazily (a reading does not move its entry;
    // when the entry comes due the device is offline, or gets a new entry at its real
    // due time). Devices due at the same time are independent, so their order is free.
    struct Due {
      absl::Time time;
      DeviceEntry* device;
      bool operator>(const Due& o) const { return time > o.time; }
    };
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> offline_due;
  };

  Generation() = default;

  // Reads the layout, checkpoints, statistics and the devices back after a restart.
  absl::Status Load() {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (!it->Valid()) {  // New: written in the current layout.
      if (absl::Status s = FromRocks(it->status(), dir_, "read the database"); !s.ok()) return s;
      if (absl::Status s =
              FromRocks(db_->Put(rocksdb::WriteOptions(), kLayout, absl::StrCat(kLayoutVersion)),
                        dir_, "write the layout");
          !s.ok()) {
        return s;
      }
    }
    std::string layout;
    rocksdb::Status got = db_->Get(rocksdb::ReadOptions(), kLayout, &layout);
    if (got.IsNotFound()) {
      layout_ = 1;
    } else if (!got.ok()) {
      return FromRocks(got, dir_, "read the layout");
    } else if (!absl::SimpleAtoi(layout, &layout_)) {
      return Damaged(dir_, "the layout record");
    }
    if (layout_ != kLayoutVersion) return absl::OkStatus();  // Not read; to be rebuilt.
    // The catalogue in force, before the devices whose intervals it gives.
    std::string active;
    rocksdb::Status got_active = db_->Get(rocksdb::ReadOptions(), kActiveRules, &active);
    if (got_active.ok()) {
      v1::RulesetActivated activated;
      if (!activated.ParseFromString(active)) return Damaged(dir_, "the active rule set");
      UseCatalogueOf(activated);
    } else if (!got_active.IsNotFound()) {
      return FromRocks(got_active, dir_, "read the active rule set");
    }
    for (it->Seek(kCheckpoint); it->Valid() && it->key().starts_with(kCheckpoint); it->Next()) {
      uint32_t p = 0;
      if (!absl::SimpleAtoi(it->key().ToString().substr(2), &p)) continue;
      std::vector<std::string> fields = absl::StrSplit(it->value().ToString(), ' ');
      uint64_t next = 0;
      int64_t time = 0;
      if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &next) ||
          !absl::SimpleAtoi(fields[1], &time)) {
        return Damaged(dir_, absl::StrFormat("the checkpoint of partition %d", p));
      }
      Part& part = parts_[p];
      part.partition = kernel::Partition(p);
      part.next = kernel::Sequence(next);
      part.committed = part.next;
      part.time = time == INT64_MIN ? absl::InfinitePast() : absl::FromUnixNanos(time);
      committed_[p] = part.next;
    }
    for (it->Seek(kStats); it->Valid() && it->key().starts_with(kStats); it->Next()) {
      uint32_t p = 0;
      if (!absl::SimpleAtoi(it->key().ToString().substr(2), &p)) continue;
      v1::Statistics s;
      if (!s.ParseFromString(it->value().ToString())) {
        return Damaged(dir_, absl::StrFormat("the statistics of partition %d", p));
      }
      parts_[p].stats.FromStatistics(s);
      parts_[p].stats_dirty = false;
    }
    for (it->Seek(kDevice); it->Valid() && it->key().starts_with(kDevice); it->Next()) {
      v1::DeviceView d;
      if (!d.ParseFromString(it->value().ToString())) {
        return Damaged(dir_, absl::StrFormat("device record '%s'", it->key().ToString()));
      }
      DeviceEntry& entry =
          devices_.try_emplace(projections::DeviceKey(d.device_id())).first->second;
      for (const v1::SensorReading& r : d.recent_readings()) {
        DeviceEntry::Recent& slot = entry.recent[entry.recent_size++];
        slot.time = kernel::FromTimestamp(r.event_time());
        r.SerializeToString(&slot.bytes);
        if (entry.recent_size == entry.recent.size()) break;
      }
      if (entry.recent_size > 0) entry.recent[0].time = kernel::FromTimestamp(d.last_seen());
      d.clear_last_reading();
      d.clear_recent_readings();
      entry.offline_after = OfflineAfter(*kinds_, d);
      if (d.online()) {
        parts_[d.partition()].offline_due.push(
            {kernel::FromTimestamp(d.last_seen()) + entry.offline_after, &entry});
        entry.watched = true;
      }
      entry.view = std::move(d);
    }
    return FromRocks(it->status(), dir_, "load checkpoints, statistics and devices");
  }

  template <typename T>
  absl::StatusOr<T*> Touch(absl::flat_hash_map<std::string, T>& cache, const char* prefix,
                           const std::string& id, bool* existed = nullptr) {
    auto it = cache.find(id);
    if (it != cache.end()) {
      if (existed != nullptr) *existed = true;
      return &it->second;
    }
    T value;
    std::string bytes;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), std::string(prefix) + id, &bytes);
    if (s.ok()) {
      if (!value.ParseFromString(bytes)) {
        return Damaged(dir_, absl::StrFormat("record '%s%s'", prefix, id));
      }
    } else if (!s.IsNotFound()) {
      return FromRocks(s, dir_, absl::StrFormat("read '%s%s'", prefix, id));
    }
    if (existed != nullptr) *existed = s.ok();
    return &cache.emplace(id, std::move(value)).first->second;
  }

  // The device `id`, new if it is not known yet. `kind_id` is the catalogue's id of its
  // kind (empty: the typed kind's id), set on a new device or one without it.
  DeviceEntry& Device(Part& part, std::string_view id, v1::DeviceKind kind,
                      std::string_view kind_id) {
    auto it = devices_.find(id);
    const bool fresh = it == devices_.end();
    if (fresh) it = devices_.try_emplace(projections::DeviceKey(id)).first;
    DeviceEntry& entry = it->second;
    v1::DeviceView& d = entry.view;
    if (fresh) {
      d.set_device_id(std::string(id));
      d.set_kind(kind);
      d.set_partition(part.partition.value());
    }
    if (d.kind_id().empty()) {
      if (kind_id.empty()) {
        d.set_kind_id(catalogue::TypedKindId(kind));
      } else {
        d.set_kind_id(std::string(kind_id));
      }
      entry.offline_after = OfflineAfter(*kinds_, d);
    }
    if (fresh) {
      ++part.stats.devices_total;
      ++part.stats.devices_unregistered;
      part.stats_dirty = true;
    }
    MarkDirty(entry);
    return entry;
  }

  // The catalogue of a rule set's activation comes into force (none recorded: the one in
  // force stays). Devices' intervals follow it, and the offline watch is set up anew.
  void UseCatalogueOf(const v1::RulesetActivated& activated) {
    if (!activated.has_catalogue()) return;
    kinds_ = catalogue::KindTable::FromCatalogue(activated.catalogue().catalogue());
    for (auto& [p, part] : parts_) part.offline_due = {};
    for (auto& [key, entry] : devices_) {
      entry.offline_after = OfflineAfter(*kinds_, entry.view);
      entry.watched = false;
      if (entry.view.online()) Watch(parts_[entry.view.partition()], entry);
    }
  }

  void MarkDirty(DeviceEntry& entry) {
    if (entry.dirty) return;
    entry.dirty = true;
    dirty_devices_.push_back(&entry);
  }

  // Watches an online device for going offline (one entry per device).
  void Watch(Part& part, DeviceEntry& entry) {
    if (entry.watched) return;
    entry.watched = true;
    part.offline_due.push(
        {kernel::FromTimestamp(entry.view.last_seen()) + entry.offline_after, &entry});
  }

  void AdvanceTime(Part& part, absl::Time t) {
    if (t <= part.time) return;
    part.time = t;
    while (!part.offline_due.empty() && part.offline_due.top().time <= t) {
      DeviceEntry& entry = *part.offline_due.top().device;
      part.offline_due.pop();
      entry.watched = false;
      if (!entry.view.online()) continue;
      const absl::Time due = kernel::FromTimestamp(entry.view.last_seen()) + entry.offline_after;
      if (due > t) {  // Heard from since: look again then.
        entry.watched = true;
        part.offline_due.push({due, &entry});
        continue;
      }
      entry.view.set_online(false);
      --part.stats.devices_online;
      part.stats_dirty = true;
      MarkDirty(entry);
    }
  }

  // A reading event at `seq` with event time `t`: `header` decoded from `bytes`, the
  // SensorReading as stored. The caller has advanced the partition's time.
  void FoldReading(Part& part, kernel::Sequence seq, absl::Time t,
                   const projections::ReadingHeader& header, std::string_view bytes) {
    DeviceEntry& entry = Device(part, header.device_id, header.kind, header.kind_id);
    v1::DeviceView& d = entry.view;
    d.set_readings(d.readings() + 1);
    // Readings may arrive out of order (a device that buffered while offline): the window
    // keeps the newest by event time, newest first (of equal times, the later in the
    // log first), and only the newest moves last_seen, last_reading and the battery.
    size_t at = 0;
    while (at < entry.recent_size && entry.recent[at].time > t) ++at;
    if (at < entry.recent.size()) {
      if (entry.recent_size < entry.recent.size()) ++entry.recent_size;
      // Shift [at, size - 1) right by one; the slot that falls off is reused at `at`.
      for (size_t i = entry.recent_size - 1; i > at; --i) {
        std::swap(entry.recent[i], entry.recent[i - 1]);
      }
      entry.recent[at].time = t;
      entry.recent[at].bytes.assign(bytes.data(), bytes.size());
    }
    if (at > 0) return;  // A late reading: the device is no fresher for it.
    if (!d.online()) {
      d.set_online(true);
      ++part.stats.devices_online;
      part.stats_dirty = true;
    }
    v1::EventRef* ref = d.mutable_last_reading_event();
    ref->set_partition(part.partition.value());
    ref->set_sequence(seq.value());
    kernel::SetTimestamp(t, d.mutable_last_seen());
    double battery = 0;
    if (projections::DecodeBatteryPct(header, &battery)) d.set_battery_pct(battery);
    Watch(part, entry);
  }

  absl::Status Fold(Part& part, const v1::Event& e) {
    if (e.has_reading() || e.has_clock_tick() || e.has_case_reported()) {
      AdvanceTime(part, kernel::FromTimestamp(e.event_time()));
    }
    v1::EventRef ref;
    ref.set_partition(e.partition());
    ref.set_sequence(e.sequence());
    switch (e.payload_case()) {
      case v1::Event::kReading: {
        // Only when the fast path in Step could not decode it (it parsed nonetheless).
        const std::string bytes = e.reading().SerializeAsString();
        projections::ReadingHeader header;
        if (!projections::DecodeReadingHeader(bytes, &header)) {
          return absl::InternalError(
              absl::StrFormat("read models: reading %d/%d parses but does not decode",
                              e.partition(), e.sequence()));
        }
        FoldReading(part, kernel::Sequence(e.sequence()), kernel::FromTimestamp(e.event_time()),
                    header, bytes);
        return absl::OkStatus();
      }
      case v1::Event::kDeviceRegistered: {
        const v1::DeviceRegistered& reg = e.device_registered();
        DeviceEntry& entry = Device(part, reg.device_id(), reg.kind(), reg.kind_id());
        v1::DeviceView& d = entry.view;
        if (!d.registered()) {
          --part.stats.devices_unregistered;
          part.stats_dirty = true;
        }
        d.set_registered(true);
        d.set_kind(reg.kind());
        d.set_kind_id(reg.kind_id().empty() ? catalogue::TypedKindId(reg.kind()) : reg.kind_id());
        *d.mutable_registration() = reg;
        entry.offline_after = OfflineAfter(*kinds_, d);
        return absl::OkStatus();
      }
      case v1::Event::kAlertRaised: {
        const v1::AlertRaised& a = e.alert_raised();
        absl::StatusOr<v1::AlertView*> view = Touch(alerts_, kAlert, a.alert_id());
        if (!view.ok()) return view.status();
        *(*view)->mutable_raised() = a;
        *(*view)->mutable_raised_event() = ref;
        *(*view)->mutable_raised_time() = e.event_time();
        (*view)->set_active(true);
        ++part.stats.alerts_active;
        part.stats_dirty = true;
        auto dev = devices_.find(a.device_id());
        if (dev != devices_.end()) {
          v1::ActiveAlert* active = dev->second.view.add_active_alerts();
          active->set_alert_id(a.alert_id());
          active->set_rule_id(a.rule_id());
          active->set_severity(a.severity());
          dev->second.view.set_alert_severity(
              std::max(dev->second.view.alert_severity(), a.severity()));
          MarkDirty(dev->second);
        }
        return absl::OkStatus();
      }
      case v1::Event::kAlertCleared: {
        const v1::AlertCleared& c = e.alert_cleared();
        absl::StatusOr<v1::AlertView*> view = Touch(alerts_, kAlert, c.alert_id());
        if (!view.ok()) return view.status();
        if ((*view)->active()) {
          --part.stats.alerts_active;
          part.stats_dirty = true;
        }
        (*view)->set_active(false);
        *(*view)->mutable_cleared() = c;
        *(*view)->mutable_cleared_time() = e.event_time();
        auto dev = devices_.find(c.device_id());
        if (dev != devices_.end()) {
          v1::DeviceView& d = dev->second.view;
          auto* active = d.mutable_active_alerts();
          active->erase(std::remove_if(
                            active->begin(), active->end(),
                            [&](const v1::ActiveAlert& a) { return a.alert_id() == c.alert_id(); }),
                        active->end());
          v1::Severity highest = v1::SEVERITY_UNSPECIFIED;
          for (const v1::ActiveAlert& a : *active) highest = std::max(highest, a.severity());
          d.set_alert_severity(highest);
          MarkDirty(dev->second);
        }
        return absl::OkStatus();
      }
      case v1::Event::kTicketIssued: {
        const v1::TicketIssued& t = e.ticket_issued();
        v1::TicketView& view = tickets_[NewestFirst(e.event_time(), t.ticket_id())];
        *view.mutable_ticket() = t;
        *view.mutable_event() = ref;
        *view.mutable_issued_time() = e.event_time();
        ++part.stats.tickets_total;
        part.stats_dirty = true;
        return absl::OkStatus();
      }
      case v1::Event::kRulesetActivated:
        active_rules_ = e.ruleset_activated();
        UseCatalogueOf(*active_rules_);
        return absl::OkStatus();
      default:
        break;
    }
    if (e.stream_id().rfind(projections::kCaseStreamPrefix, 0) != 0) return absl::OkStatus();
    const std::string id(
        std::string_view(e.stream_id()).substr(projections::kCaseStreamPrefix.size()));
    absl::StatusOr<v1::CaseView*> view = TouchCase(id, e.event_time());
    if (!view.ok()) return view.status();
    part.stats.Contribute(**view, -1);
    if (absl::Status s = projections::ApplyCaseEvent(e, *view); !s.ok()) return s;
    part.stats.Contribute(**view, +1);
    part.stats_dirty = true;
    if (e.has_case_opened() && !e.case_opened().alert_id().empty()) {
      if (absl::Status s = LinkAlert(e.case_opened().alert_id(), id, *view); !s.ok()) return s;
    }
    // A report that joined another case says so on its own stream (CaseLinked with
    // into_case_id): the fold above set its linked_to.
    if (e.has_case_linked() && e.case_linked().has_alert_id()) {
      if (absl::Status s = LinkAlert(e.case_linked().alert_id(), id, *view); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // The case `id`, from the cache, else the database; a new one is ordered by `time`, the
  // time of its first event (its reported time).
  absl::StatusOr<v1::CaseView*> TouchCase(const std::string& id,
                                          const google::protobuf::Timestamp& time) {
    auto it = cases_.find(id);
    if (it != cases_.end()) return &it->second.view;
    CaseEntry entry;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kCaseOrder + id, &entry.order);
    if (s.IsNotFound()) {
      entry.order = NewestFirst(time, id);
      entry.fresh = true;
    } else if (!s.ok()) {
      return FromRocks(s, dir_, absl::StrFormat("read '%s%s'", kCaseOrder, id));
    } else {
      std::string bytes;
      s = db_->Get(rocksdb::ReadOptions(), kCase + entry.order, &bytes);
      if (!s.ok() && !s.IsNotFound()) {
        return FromRocks(s, dir_, absl::StrFormat("read '%s%s'", kCase, entry.order));
      }
      if (!s.ok() || !entry.view.ParseFromString(bytes)) {
        return Damaged(dir_, absl::StrFormat("record '%s%s' (case %s)", kCase, entry.order, id));
      }
    }
    return &cases_.emplace(id, std::move(entry)).first->second.view;
  }

  // The alert opened or joined case `case_id`: each points at the other, and the case
  // gets the readings that raised the alert.
  absl::Status LinkAlert(const std::string& alert_id, const std::string& case_id,
                         v1::CaseView* view) {
    absl::StatusOr<v1::AlertView*> alert = Touch(alerts_, kAlert, alert_id);
    if (!alert.ok()) return alert.status();
    (*alert)->set_case_id(case_id);
    for (const v1::EventRef& r : (*alert)->raised().readings()) *view->add_readings() = r;
    return absl::OkStatus();
  }

  // Writes what changed since the last commit, with the checkpoints of the partitions
  // that moved, in one batch. Nothing at all when nothing changed.
  absl::Status Commit() {
    bool changed = !dirty_devices_.empty() || !alerts_.empty() || !cases_.empty() ||
                   !tickets_.empty() || active_rules_.has_value();
    for (const auto& [p, part] : parts_) {
      changed |= part.stats_dirty || part.time_dirty || part.next != part.committed;
    }
    if (!changed) return absl::OkStatus();
    rocksdb::WriteBatch batch;
    std::string value;
    for (DeviceEntry* entry : dirty_devices_) {
      // The view, then last_reading and recent_readings from the kept bytes: fields may
      // come in any order on the wire, and this is exactly the message's encoding.
      value.clear();
      entry->view.AppendToString(&value);
      if (entry->recent_size > 0) {
        AppendBytesField(v1::DeviceView::kLastReadingFieldNumber, entry->recent[0].bytes, &value);
      }
      for (size_t i = 0; i < entry->recent_size; ++i) {
        AppendBytesField(v1::DeviceView::kRecentReadingsFieldNumber, entry->recent[i].bytes,
                         &value);
      }
      batch.Put(kDevice + entry->view.device_id(), value);
    }
    for (const auto& [id, v] : alerts_) batch.Put(kAlert + id, v.SerializeAsString());
    for (const auto& [id, c] : cases_) {
      batch.Put(kCase + c.order, c.view.SerializeAsString());
      if (c.fresh) batch.Put(kCaseOrder + id, c.order);
    }
    for (const auto& [id, v] : tickets_) batch.Put(kTicket + id, v.SerializeAsString());
    if (active_rules_) batch.Put(kActiveRules, active_rules_->SerializeAsString());
    std::map<uint32_t, kernel::Sequence> committed;
    for (auto& [p, part] : parts_) {
      if (part.stats_dirty)
        batch.Put(PartitionKey(kStats, p), part.stats.ToStatistics().SerializeAsString());
      committed[p] = part.next;
      if (part.next == part.committed && !part.time_dirty) continue;
      const int64_t time =
          part.time == absl::InfinitePast() ? INT64_MIN : absl::ToUnixNanos(part.time);
      batch.Put(PartitionKey(kCheckpoint, p), absl::StrFormat("%d %d", part.next.value(), time));
    }
    if (absl::Status s = FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), dir_,
                                   "commit folded state and checkpoints");
        !s.ok()) {
      return s;
    }
    for (DeviceEntry* entry : dirty_devices_) entry->dirty = false;
    dirty_devices_.clear();
    alerts_.clear();
    cases_.clear();
    tickets_.clear();
    active_rules_.reset();
    for (auto& [p, part] : parts_) {
      part.stats_dirty = false;
      part.time_dirty = false;
      part.committed = part.next;
    }
    absl::MutexLock lock(&lag_mu_);
    committed_ = std::move(committed);
    return absl::OkStatus();
  }

  kernel::EventLog* log_ = nullptr;
  uint64_t number_ = 0;
  int layout_ = 0;
  std::string dir_;
  std::atomic<bool> remove_on_release_{false};
  std::unique_ptr<rocksdb::DB> db_;
  std::map<uint32_t, Part> parts_;
  // Node-based: entries stay put, so dirty_devices_ and offline_due can point at them.
  projections::DeviceMap<DeviceEntry> devices_;
  std::vector<DeviceEntry*> dirty_devices_;
  absl::flat_hash_map<std::string, v1::AlertView> alerts_;
  struct CaseEntry {
    v1::CaseView view;
    std::string order;   // Its key is kCase + order.
    bool fresh = false;  // Its kCaseOrder entry is still to be written.
  };
  absl::flat_hash_map<std::string, CaseEntry> cases_;  // By case id.
  absl::flat_hash_map<std::string, v1::TicketView> tickets_;
  std::optional<v1::RulesetActivated> active_rules_;
  // The catalogue in force: the latest rule set activation's, else the built-in one.
  std::shared_ptr<const catalogue::KindTable> kinds_ = catalogue::KindTable::BuiltIn();
  mutable absl::Mutex lag_mu_;
  std::map<uint32_t, kernel::Sequence> committed_;
};

Projections::Projections(const ProjectionOptions& options) : options_(options) {}
Projections::~Projections() = default;

namespace {

std::string GenerationDir(const std::string& dir, uint64_t n) {
  return absl::StrFormat("%s/gen-%d", dir, n);
}

absl::Status WriteCurrent(const std::string& dir, uint64_t n) {
  const std::string tmp = dir + "/CURRENT.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << n << "\n";
    out.flush();
    if (!out) {
      return absl::UnavailableError(absl::StrFormat(
          "cannot write %s: check that %s is writable and the disk has room", tmp, dir));
    }
  }
  std::error_code ec;
  fs::rename(tmp, dir + "/CURRENT", ec);
  if (ec)
    return absl::UnavailableError(absl::StrFormat(
        "cannot replace %s/CURRENT: %s; check that %s is writable", dir, ec.message(), dir));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Projections>> Projections::Open(const ProjectionOptions& options) {
  if (options.log == nullptr || options.dir.empty()) {
    return absl::InvalidArgumentError("read models need a log and a directory");
  }
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrFormat("cannot create the read-model directory %s: %s",
                                                  options.dir, ec.message()));
  }
  uint64_t n = 1;
  std::ifstream current(options.dir + "/CURRENT");
  if (current && !(current >> n)) {
    return absl::DataLossError(
        absl::StrFormat("%s/CURRENT is damaged; delete %s to rebuild the read models from the log",
                        options.dir, options.dir));
  }
  if (!current) {
    if (absl::Status s = WriteCurrent(options.dir, n); !s.ok()) return s;
  }
  // Generations left over by an interrupted rebuild.
  for (const fs::directory_entry& entry : fs::directory_iterator(options.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("gen-", 0) == 0 && name != absl::StrFormat("gen-%d", n)) {
      fs::remove_all(entry.path(), ec);
    }
  }
  std::unique_ptr<Projections> p(new Projections(options));
  absl::StatusOr<std::shared_ptr<Generation>> g =
      Generation::Open(options.log, n, GenerationDir(options.dir, n));
  if (!g.ok()) return g.status();
  if ((*g)->layout() != kLayoutVersion) {
    // Written by another version of cityops: start a new generation, folded from the log
    // by the runner. Until it catches up, queries answer from what it has folded.
    spdlog::warn(
        "read models in {} have layout {}, this cityops writes layout {}: rebuilding them "
        "from the log (queries answer from what is folded so far; /readyz reports the lag)",
        (*g)->dir(), (*g)->layout(), kLayoutVersion);
    absl::StatusOr<std::shared_ptr<Generation>> next =
        Generation::Open(options.log, n + 1, GenerationDir(options.dir, n + 1));
    if (!next.ok()) return next.status();
    if (absl::Status s = WriteCurrent(options.dir, n + 1); !s.ok()) return s;
    (*g)->RemoveOnRelease();
    g = *std::move(next);
  }
  absl::MutexLock lock(&p->mu_);
  p->live_ = *std::move(g);
  return p;
}

std::shared_ptr<Projections::Generation> Projections::Live() const {
  absl::MutexLock lock(&mu_);
  return live_;
}

absl::Status Projections::CatchUp() {
  absl::MutexLock fold(&fold_mu_);
  std::shared_ptr<Generation> g = Live();
  for (;;) {
    absl::StatusOr<size_t> n = g->Step(options_.commit_every, options_.until);
    if (!n.ok()) return n.status();
    if (*n == 0) return absl::OkStatus();
  }
}

absl::Status Projections::Run() {
  while (!stop_.load()) {
    size_t n = 0;
    {
      absl::MutexLock fold(&fold_mu_);
      absl::StatusOr<size_t> folded = Live()->Step(options_.commit_every, options_.until);
      if (!folded.ok()) return folded.status();
      n = *folded;
    }
    if (n == 0) {
      std::vector<kernel::Partition> partitions = options_.log->Partitions();
      if (partitions.empty()) {
        absl::SleepFor(options_.idle_wait);
      } else {
        options_.log->WaitForEvents(partitions[0], options_.log->NextSequence(partitions[0]),
                                    options_.idle_wait);
      }
    }
  }
  return absl::OkStatus();
}

void Projections::Stop() { stop_.store(true); }

absl::Status Projections::Rebuild() {
  const uint64_t n = Live()->number() + 1;
  const std::string dir = GenerationDir(options_.dir, n);
  std::error_code ec;
  fs::remove_all(dir, ec);
  absl::StatusOr<std::shared_ptr<Generation>> next = Generation::Open(options_.log, n, dir);
  if (!next.ok()) return next.status();
  // Fold beside the live generation, which keeps serving and following.
  for (;;) {
    absl::StatusOr<size_t> folded = (*next)->Step(options_.commit_every, options_.until);
    if (!folded.ok()) return folded.status();
    if (*folded == 0) break;
  }
  // Swap, with the live folder held off for the last few events.
  absl::MutexLock fold(&fold_mu_);
  while (!(*next)->CaughtUp()) {
    absl::StatusOr<size_t> folded = (*next)->Step(options_.commit_every, options_.until);
    if (!folded.ok()) return folded.status();
  }
  if (absl::Status s = WriteCurrent(options_.dir, n); !s.ok()) return s;
  std::shared_ptr<Generation> old;
  {
    absl::MutexLock lock(&mu_);
    old = std::move(live_);
    live_ = *std::move(next);
  }
  // Queries in flight keep the old generation (database and directory) until they
  // finish; the last one to let go deletes it.
  old->RemoveOnRelease();
  old.reset();
  return absl::OkStatus();
}

uint64_t Projections::generation() const { return Live()->number(); }

std::vector<PartitionLag> Projections::Lag() const { return Live()->Lag(); }

namespace {

template <typename T>
absl::StatusOr<std::optional<T>> GetRecord(rocksdb::DB* db, const std::string& dir,
                                           const std::string& key) {
  std::string bytes;
  rocksdb::Status s = db->Get(rocksdb::ReadOptions(), key, &bytes);
  if (s.IsNotFound()) return std::optional<T>();
  if (!s.ok()) return FromRocks(s, dir, absl::StrFormat("read '%s'", key));
  T value;
  if (!value.ParseFromString(bytes)) return Damaged(dir, absl::StrFormat("record '%s'", key));
  return std::optional<T>(std::move(value));
}

// Records under `prefix` after `page_token` that pass `keep`, at most `limit`.
template <typename T, typename Keep>
absl::StatusOr<Page<T>> List(rocksdb::DB* db, const std::string& dir, const std::string& prefix,
                             size_t limit, std::string_view page_token, Keep keep) {
  Page<T> page;
  limit = std::max<size_t>(1, limit);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  const std::string start = page_token.empty() ? prefix : prefix + std::string(page_token);
  for (it->Seek(start); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    const std::string id = it->key().ToString().substr(prefix.size());
    if (!page_token.empty() && id == page_token) continue;
    T value;
    if (!value.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Damaged(dir, absl::StrFormat("record '%s'", it->key().ToString()));
    }
    if (!keep(value)) continue;
    if (page.items.size() == limit) {
      page.next_page_token = page.items.empty() ? id : page.next_page_token;
      break;
    }
    page.items.push_back(std::move(value));
    page.next_page_token = id;
  }
  if (!it->status().ok()) return FromRocks(it->status(), dir, "list " + prefix);
  if (page.items.size() < limit) page.next_page_token.clear();
  return page;
}

}  // namespace

absl::StatusOr<std::optional<v1::DeviceView>> Projections::GetDevice(std::string_view id) const {
  const std::shared_ptr<Generation> g = Live();
  if (options_.while_querying_for_testing) options_.while_querying_for_testing();
  return GetRecord<v1::DeviceView>(g->db(), g->dir(), kDevice + std::string(id));
}

absl::StatusOr<Page<v1::DeviceView>> Projections::ListDevices(const DeviceFilter& f, size_t limit,
                                                              std::string_view token) const {
  const std::shared_ptr<Generation> g = Live();
  return List<v1::DeviceView>(
      g->db(), g->dir(), kDevice, limit, token, [&](const v1::DeviceView& d) {
        if (!f.kind_id.empty() && d.kind_id() != f.kind_id) return false;
        if (!f.grid_prefix.empty() &&
            d.registration().grid().grid_code().rfind(f.grid_prefix, 0) != 0) {
          return false;
        }
        if (f.online && d.online() != *f.online) return false;
        if (f.unregistered_only && d.registered()) return false;
        return true;
      });
}

absl::StatusOr<std::optional<v1::AlertView>> Projections::GetAlert(std::string_view id) const {
  const std::shared_ptr<Generation> g = Live();
  return GetRecord<v1::AlertView>(g->db(), g->dir(), kAlert + std::string(id));
}

absl::StatusOr<Page<v1::AlertView>> Projections::ListAlerts(const AlertFilter& f, size_t limit,
                                                            std::string_view token) const {
  const std::shared_ptr<Generation> g = Live();
  return List<v1::AlertView>(g->db(), g->dir(), kAlert, limit, token, [&](const v1::AlertView& a) {
    if (f.active_only && !a.active()) return false;
    if (!f.device_id.empty() && a.raised().device_id() != f.device_id) return false;
    if (!f.rule_id.empty() && a.raised().rule_id() != f.rule_id) return false;
    return true;
  });
}

absl::StatusOr<std::optional<v1::CaseView>> Projections::GetCase(std::string_view id) const {
  const std::shared_ptr<Generation> g = Live();
  std::string order;
  rocksdb::Status s = g->db()->Get(rocksdb::ReadOptions(), kCaseOrder + std::string(id), &order);
  if (s.IsNotFound()) return std::optional<v1::CaseView>();
  if (!s.ok()) return FromRocks(s, g->dir(), absl::StrFormat("read '%s%s'", kCaseOrder, id));
  return GetRecord<v1::CaseView>(g->db(), g->dir(), kCase + order);
}

absl::StatusOr<Page<v1::CaseView>> Projections::ListCases(const CaseFilter& f, size_t limit,
                                                          std::string_view token) const {
  const std::shared_ptr<Generation> g = Live();
  return List<v1::CaseView>(g->db(), g->dir(), kCase, limit, token, [&](const v1::CaseView& c) {
    if (f.stage != v1::CASE_STAGE_UNSPECIFIED && c.stage() != f.stage) return false;
    if (f.source != v1::CASE_SOURCE_UNSPECIFIED && c.source() != f.source) return false;
    if (f.overdue != v1::OVERDUE_LEVEL_UNSPECIFIED && c.overdue() < f.overdue) return false;
    if (!f.grid_prefix.empty() && c.grid().grid_code().rfind(f.grid_prefix, 0) != 0) return false;
    const absl::Time reported = kernel::FromTimestamp(c.reported_time());
    return reported >= f.reported_from && reported < f.reported_to;
  });
}

absl::StatusOr<Page<v1::TicketView>> Projections::ListTickets(size_t limit,
                                                              std::string_view token) const {
  const std::shared_ptr<Generation> g = Live();
  return List<v1::TicketView>(g->db(), g->dir(), kTicket, limit, token,
                              [](const v1::TicketView&) { return true; });
}

absl::StatusOr<v1::Statistics> Projections::GetStatistics() const {
  StatsPartial sum;
  std::shared_ptr<Generation> g = Live();
  std::unique_ptr<rocksdb::Iterator> it(g->db()->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(kStats); it->Valid() && it->key().starts_with(kStats); it->Next()) {
    v1::Statistics s;
    if (!s.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Damaged(g->dir(), absl::StrFormat("statistics record '%s'", it->key().ToString()));
    }
    StatsPartial p;
    p.FromStatistics(s);
    sum.cases_total += p.cases_total;
    for (const auto& [k, n] : p.by_source) sum.by_source[k] += n;
    for (const auto& [k, n] : p.by_stage) sum.by_stage[k] += n;
    for (const auto& [k, n] : p.by_district) sum.by_district[k] += n;
    for (const auto& [k, n] : p.by_street) sum.by_street[k] += n;
    sum.handled_at_street_level += p.handled_at_street_level;
    sum.dispatched_by_district += p.dispatched_by_district;
    sum.urged += p.urged;
    sum.overdue_yellow += p.overdue_yellow;
    sum.overdue_red += p.overdue_red;
    sum.closed += p.closed;
    sum.closed_on_time += p.closed_on_time;
    for (const auto& [stage, d] : p.stage_time_sum) sum.stage_time_sum[stage] += d;
    sum.devices_total += p.devices_total;
    sum.devices_online += p.devices_online;
    sum.devices_unregistered += p.devices_unregistered;
    sum.alerts_active += p.alerts_active;
    sum.tickets_total += p.tickets_total;
  }
  if (!it->status().ok()) return FromRocks(it->status(), g->dir(), "read the statistics");
  v1::Statistics s = sum.ToStatistics();
  s.clear_mean_time_in_stage();
  for (const auto& [stage, total] : sum.stage_time_sum) {
    if (sum.closed <= 0) break;
    v1::StageDuration* d = s.add_mean_time_in_stage();
    d->set_stage(static_cast<v1::CaseStage>(stage));
    kernel::ToDurationProto(total / sum.closed, d->mutable_duration());
  }
  if (sum.cases_total > 0) s.set_close_rate(static_cast<double>(sum.closed) / sum.cases_total);
  if (sum.closed > 0) {
    s.set_on_time_close_rate(static_cast<double>(sum.closed_on_time) / sum.closed);
  }
  return s;
}

absl::StatusOr<std::optional<v1::RulesetActivated>> Projections::ActiveRuleSet() const {
  const std::shared_ptr<Generation> g = Live();
  return GetRecord<v1::RulesetActivated>(g->db(), g->dir(), kActiveRules);
}

absl::StatusOr<v1::ActivatedCatalogue> Projections::CatalogueInForce() const {
  absl::StatusOr<std::optional<v1::RulesetActivated>> active = ActiveRuleSet();
  if (!active.ok()) return active.status();
  if (active->has_value() && (*active)->has_catalogue()) return (*active)->catalogue();
  v1::ActivatedCatalogue built_in;
  *built_in.mutable_catalogue() = catalogue::KindTable::BuiltIn()->catalogue();
  built_in.set_source_path(catalogue::kDefaultCatalogueFile);
  return built_in;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Projections::Dump() const {
  std::vector<std::pair<std::string, std::string>> out;
  std::shared_ptr<Generation> g = Live();
  std::unique_ptr<rocksdb::Iterator> it(g->db()->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    out.emplace_back(it->key().ToString(), it->value().ToString());
  }
  if (!it->status().ok()) return FromRocks(it->status(), g->dir(), "dump");
  return out;
}

}  // namespace cityops::views
