#include "kernel/event_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "kernel/event_log_testing.h"
#include "kernel/log_format.h"
#include "kernel/log_lock.h"
#include "kernel/log_verify.h"
#include "kernel/proto_time.h"
#include "kernel/rocks_status.h"
#include "kernel/wire_reader.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/listener.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"

namespace cityops::kernel {
namespace {

namespace fs = std::filesystem;

// The families every log has, in the order they are opened; each partition's events
// family comes after them (format::EventsCfName).
enum CfIndex : size_t { kMetaCf = 0, kStreamsCf, kIdempotencyCf, kPositionsCf, kCfCount };

// "default" is rocksdb::kDefaultColumnFamilyName, which is not constexpr.
constexpr std::string_view kCfNames[kCfCount] = {"default", format::kStreamsCf,
                                                 format::kIdempotencyCf, format::kPositionsCf};

bool HasNul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

absl::Status InvalidStored(Partition partition) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "a stored event added to the batch for partition %u is not well-formed protobuf wire "
      "format; pass a value read from a log (EventLog::Scan) unchanged",
      partition.value()));
}

}  // namespace

bool IsIndexedStream(std::string_view stream_id) {
  return !stream_id.empty() && !stream_id.starts_with("device/") && stream_id != "clock";
}

void AppendBatch::Add(v1::Event event, std::optional<StreamVersion> expected_version) {
  if (used_ < entries_.size()) {
    entries_[used_].event.Swap(&event);  // Both on the heap: a pointer swap.
    entries_[used_].expected_version = expected_version;
    entries_[used_].is_stored = false;
  } else {
    entries_.emplace_back();
    entries_.back().event = std::move(event);
    entries_.back().expected_version = expected_version;
  }
  ++used_;
}

v1::Event* AppendBatch::AddNew(std::optional<StreamVersion> expected_version) {
  if (used_ < entries_.size()) {
    entries_[used_].event.Clear();
    entries_[used_].expected_version = expected_version;
    entries_[used_].is_stored = false;
  } else {
    entries_.emplace_back();
    entries_.back().expected_version = expected_version;
  }
  return &entries_[used_++].event;
}

absl::Status AppendBatch::AddStored(std::string_view value) {
  if (used_ == entries_.size()) entries_.emplace_back();
  Entry& entry = entries_[used_];
  entry.stored.clear();
  entry.recorded_at = std::string::npos;
  std::string_view stream_id;
  bool has_payload = false;
  WireReader w(value);
  while (!w.done()) {
    const char* start = w.position();
    uint32_t field = 0;
    uint32_t type = 0;
    if (!w.Tag(&field, &type) || !w.Skip(type)) break;
    const std::string_view bytes(start, static_cast<size_t>(w.position() - start));
    if (field > v1::Event::kRecordedTimeFieldNumber && entry.recorded_at == std::string::npos) {
      entry.recorded_at = entry.stored.size();
    }
    switch (field) {
      case v1::Event::kPartitionFieldNumber:
      case v1::Event::kSequenceFieldNumber:
      case v1::Event::kStreamVersionFieldNumber:
      case v1::Event::kRecordedTimeFieldNumber:
        continue;  // The log's own; assigned again on append.
      case v1::Event::kStreamIdFieldNumber: {
        WireReader id(bytes);
        uint32_t f = 0;
        uint32_t t = 0;
        if (!id.Tag(&f, &t) || t != 2 || !id.Bytes(&stream_id)) return InvalidStored(partition_);
        break;
      }
      default:
        has_payload |= field >= v1::Event::kReadingFieldNumber;
    }
    entry.stored.append(bytes);
  }
  if (!w.ok()) return InvalidStored(partition_);
  if (HasNul(stream_id)) return InvalidStored(partition_);  // No log stores such an id.
  if (stream_id.empty() || !has_payload) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a stored event added to the batch for partition %u has no %s; pass a value read "
        "from a log (EventLog::Scan)",
        partition_.value(), stream_id.empty() ? "stream id" : "payload"));
  }
  if (IsIndexedStream(stream_id)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "stream '%s' is indexed: its events need versions and idempotency keys, so a stored "
        "copy cannot be appended as is; parse it (EventLog::ParseEvent) and use Add",
        stream_id));
  }
  if (entry.recorded_at == std::string::npos) entry.recorded_at = entry.stored.size();
  entry.expected_version.reset();
  entry.is_stored = true;
  ++used_;
  return absl::OkStatus();
}

void AppendBatch::Clear() {
  used_ = 0;
  source_positions_.clear();
  checkpoint_.reset();
}

void AppendBatch::SetSourcePosition(std::string topic, int32_t kafka_partition,
                                    KafkaOffset next_offset) {
  for (SourcePosition& p : source_positions_) {
    if (p.topic == topic && p.kafka_partition == kafka_partition) {
      p.next_offset = next_offset;
      return;
    }
  }
  source_positions_.push_back(SourcePosition{std::move(topic), kafka_partition, next_offset});
}

void AppendBatch::SetCheckpoint(StageCheckpoint checkpoint) { checkpoint_ = std::move(checkpoint); }

class EventLog::Impl {
 public:
  struct PartitionState {
    absl::Mutex append_mu;          // Serializes appends to this partition.
    std::atomic<uint64_t> next{0};  // Next sequence; written under append_mu + wait_mu.
    // The partition's events family: created by its first append (under append_mu), set
    // once, destroyed with the log.
    std::atomic<rocksdb::ColumnFamilyHandle*> cf{nullptr};
  };

  Impl(EventLogOptions opts, int fd) : options(std::move(opts)), lock_fd(fd) {}

  // Sees RocksDB stop writes for lack of space, and resume.
  class DiskListener : public rocksdb::EventListener {
   public:
    explicit DiskListener(Impl* impl) : impl_(impl) {}
    void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* error) override {
      if (error->IsNoSpace() && error->severity() >= rocksdb::Status::Severity::kHardError) {
        impl_->MarkFull(error->ToString());
      }
    }
    void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status error,
                              bool* auto_recovery) override {
      // Writes stopped for lack of space: the log resumes them itself (Resume, from the
      // next append or the owner), as often as `disk_full_retry` says, rather than
      // RocksDB's SstFileManager every 5 s; RocksDB refuses a manual Resume while its own
      // recovery is pending. Space run out in a compaction (a soft error: writes go on)
      // is left to RocksDB.
      if (error.IsNoSpace() && error.severity() >= rocksdb::Status::Severity::kHardError) {
        *auto_recovery = false;
      }
    }
    void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
      if (info.new_bg_error.ok()) impl_->MarkWritable();
    }

   private:
    Impl* const impl_;
  };

  void MarkFull(std::string error) {
    absl::MutexLock lock(&disk_mu);
    disk.error = std::move(error);
    if (disk.full) return;
    disk.full = true;
    disk.since = absl::Now();
    ++disk.outages;
    last_resume = disk.since;
  }

  void MarkWritable() {
    absl::MutexLock lock(&disk_mu);
    if (!disk.full) return;
    disk.full = false;
    disk.total += absl::Now() - disk.since;
    disk.since = absl::InfinitePast();
    disk.error.clear();
  }

  DiskFullState Disk() const {
    absl::MutexLock lock(&disk_mu);
    DiskFullState out = disk;
    if (out.full) out.total += absl::Now() - out.since;
    return out;
  }

  absl::Status DiskFullError(std::string_view error) const {
    return absl::UnavailableError(absl::StrFormat(
        "disk full: the event log %s cannot write (%s); free space on the disk that holds it "
        "(or give it a larger one): appends resume by themselves once there is room",
        options.path, error));
  }

  ~Impl() {
    {
      // Wake every reader blocked in WaitForEvents and let it leave before the state it
      // waits on goes away.
      absl::MutexLock lock(&wait_mu);
      closing = true;
      appended.SignalAll();
      wait_mu.Await(absl::Condition(
          +[](int* readers) { return *readers == 0; }, &waiting_readers));
    }
    if (db != nullptr) {
      if (write_options.disableWAL) {
        // Unlogged: what is only in the memtables exists nowhere else. The owner has
        // flushed and checked (EventLog::Flush); this is the last chance otherwise.
        (void)FlushAll();
      }
      for (rocksdb::ColumnFamilyHandle* h : AllHandles()) db->DestroyColumnFamilyHandle(h);
      if (version1_events != nullptr) db->DestroyColumnFamilyHandle(version1_events);
      db->Close().PermitUncheckedError();
      db.reset();
    }
    if (lock_fd >= 0) ::close(lock_fd);  // Releases the flock.
  }

  rocksdb::Status FlushAll() {
    rocksdb::FlushOptions flush;
    flush.wait = true;
    rocksdb::Status s = db->Flush(flush, AllHandles());
    if (s.ok()) s = KeepMemtableBusy();
    return s;
  }

  // The families every log has, then every partition's.
  std::vector<rocksdb::ColumnFamilyHandle*> AllHandles() const {
    std::vector<rocksdb::ColumnFamilyHandle*> all = handles;
    absl::ReaderMutexLock lock(&partitions_mu);
    for (const auto& [id, state] : partitions) {
      if (rocksdb::ColumnFamilyHandle* h = state->cf.load(); h != nullptr) all.push_back(h);
    }
    return all;
  }

  // The events family of a partition, created if it has none yet. The caller holds the
  // partition's append lock.
  absl::StatusOr<rocksdb::ColumnFamilyHandle*> EventsFamily(Partition p, PartitionState* state) {
    if (rocksdb::ColumnFamilyHandle* h = state->cf.load(std::memory_order_acquire); h != nullptr) {
      return h;
    }
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s = db->CreateColumnFamily(events_options, format::EventsCfName(p), &h);
    if (!s.ok()) {
      if (s.IsNoSpace()) return DiskFullError(s.ToString());
      return FromRocks(s, absl::StrFormat("creating partition %u of %s", p.value(), options.path));
    }
    state->cf.store(h, std::memory_order_release);
    return h;
  }

  // The events family of a partition, or null if it has none (no event was ever appended).
  rocksdb::ColumnFamilyHandle* FindEventsFamily(Partition p) const {
    const PartitionState* state = Find(p);
    return state == nullptr ? nullptr : state->cf.load(std::memory_order_acquire);
  }

  // RocksDB 7.8 resumes writes after a full disk (DB::Resume) by flushing the memtables,
  // which also starts a new WAL file; with every memtable empty it starts none, and the
  // next write goes to the WAL file whose write failed, which fails for good (or aborts,
  // in a RocksDB built with assertions). So after every flush of all of them (Open,
  // Flush, Backup) one memtable gets an entry again: a deletion of a key that never holds
  // a value, written without the WAL (nothing to recover after a crash).
  rocksdb::Status KeepMemtableBusy() {
    rocksdb::WriteOptions no_wal;
    no_wal.disableWAL = true;
    return db->Delete(no_wal, cf(kMetaCf), kMemtableKey);
  }

  // True if some memtable holds entries: DB::Resume then starts a new WAL file.
  bool MemtablesHoldEntries() const {
    for (rocksdb::ColumnFamilyHandle* h : AllHandles()) {
      uint64_t active = 0;
      uint64_t immutable = 0;
      if (!db->GetIntProperty(h, "rocksdb.num-entries-active-mem-table", &active) ||
          !db->GetIntProperty(h, "rocksdb.num-entries-imm-mem-tables", &immutable)) {
        return false;
      }
      if (active + immutable > 0) return true;
    }
    return false;
  }

  static constexpr std::string_view kMemtableKey = "cityops/memtable";

  PartitionState* GetOrCreate(Partition p) {
    absl::MutexLock lock(&partitions_mu);
    auto& slot = partitions[p.value()];
    if (slot == nullptr) slot = std::make_unique<PartitionState>();
    return slot.get();
  }

  const PartitionState* Find(Partition p) const {
    absl::ReaderMutexLock lock(&partitions_mu);
    auto it = partitions.find(p.value());
    return it == partitions.end() ? nullptr : it->second.get();
  }

  rocksdb::ColumnFamilyHandle* cf(CfIndex i) const { return handles[i]; }

  // The version of an indexed stream as stored (callers hold index_mu for a consistent
  // read-then-write).
  absl::StatusOr<uint64_t> StoredVersion(std::string_view stream_id) const {
    const std::string prefix = format::StreamKeyPrefix(stream_id);
    const std::string last = format::StreamKey(stream_id, StreamVersion(UINT64_MAX));
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cf(kStreamsCf)));
    it->SeekForPrev(last);
    if (!it->status().ok()) {
      return FromRocks(it->status(), absl::StrFormat("reading the index of stream %s", stream_id));
    }
    if (!it->Valid() || !it->key().starts_with(prefix) || it->key().size() != prefix.size() + 8) {
      return 0;
    }
    return format::GetBigEndian64(it->key().data() + prefix.size());
  }

  // Takes over the events family of partition `p`, opened with the log, and finds where
  // the partition ends: its first sequence must be 0, its last is the one before `next`.
  absl::Status LoadPartition(Partition p, rocksdb::ColumnFamilyHandle* h) {
    PartitionState* state = GetOrCreate(p);
    state->cf.store(h);
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), h));
    it->SeekToFirst();
    if (it->Valid()) {
      Sequence first;
      Sequence last;
      if (!format::DecodeEventKey(it->key().ToStringView(), &first)) {
        return absl::DataLossError(absl::StrFormat(
            "event log %s holds a malformed event key in partition %u; restore it from a backup",
            options.path, p.value()));
      }
      if (first.value() != 0) {
        return absl::DataLossError(absl::StrFormat(
            "event log %s: partition %u starts at sequence %u instead of 0; restore it from a "
            "backup",
            options.path, p.value(), first.value()));
      }
      it->SeekToLast();
      if (it->Valid()) {
        if (!format::DecodeEventKey(it->key().ToStringView(), &last)) {
          return absl::DataLossError(absl::StrFormat(
              "event log %s holds a malformed event key in partition %u; restore it from a "
              "backup",
              options.path, p.value()));
        }
        state->next.store(last.value() + 1);
      }
    }
    if (!it->status().ok()) {
      return FromRocks(it->status(), absl::StrFormat("loading partition %u of the log", p.value()));
    }
    return absl::OkStatus();
  }

  EventLogOptions options;
  int lock_fd = -1;
  LatencyHistogram append_latency;
  // The test file system's Env (EventLogTestHooks), if any: outlives `db`.
  std::unique_ptr<rocksdb::Env> env;
  std::shared_ptr<DiskListener> listener;
  std::unique_ptr<rocksdb::DB> db;
  // The families every log has (CfIndex); partitions hold their own (PartitionState::cf).
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  // Options of every events family: one table factory, so one block cache for all.
  rocksdb::ColumnFamilyOptions events_options = format::EventsCfOptions();
  // Version 1's events family, while Open looks at a log that still has it.
  rocksdb::ColumnFamilyHandle* version1_events = nullptr;
  rocksdb::WriteOptions write_options;

  mutable absl::Mutex disk_mu;
  DiskFullState disk ABSL_GUARDED_BY(disk_mu);
  absl::Time last_resume ABSL_GUARDED_BY(disk_mu) = absl::InfinitePast();

  mutable absl::Mutex partitions_mu;
  absl::flat_hash_map<uint32_t, std::unique_ptr<PartitionState>> partitions
      ABSL_GUARDED_BY(partitions_mu);

  // Held across the read-check-write of indexed entries (stream versions, idempotency).
  absl::Mutex index_mu;

  // Waiters for new events. Appenders publish `next` under this mutex, then signal.
  mutable absl::Mutex wait_mu;
  mutable absl::CondVar appended;
  bool closing ABSL_GUARDED_BY(wait_mu) = false;
  mutable int waiting_readers ABSL_GUARDED_BY(wait_mu) = 0;
};

namespace {

enum class DirectoryState {
  kNew,          // Absent or empty: create a log.
  kExisting,     // Holds a database: open it (and check it is ours).
  kInterrupted,  // A creation was interrupted: wipe it and create again.
};

// Classifies `dir` before touching it. Anything that is neither a log nor empty nor an
// interrupted creation is not ours and is refused.
absl::StatusOr<DirectoryState> InspectDirectory(const fs::path& dir, bool create_if_missing) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) {
    if (!create_if_missing) {
      return absl::NotFoundError(absl::StrFormat(
          "no event log at %s; create one by opening it with creation allowed, or fix the path",
          dir.string()));
    }
    return DirectoryState::kNew;
  }
  if (!fs::is_directory(st)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is not a directory, so it cannot hold an event log; choose a directory path",
        dir.string()));
  }
  if (fs::exists(dir / format::kCreatingFileName)) {
    if (!create_if_missing) {
      return absl::NotFoundError(absl::StrFormat(
          "%s holds an event log whose creation was interrupted, so no log; open it with "
          "creation allowed to start it afresh",
          dir.string()));
    }
    return DirectoryState::kInterrupted;
  }
  if (fs::exists(dir / "CURRENT")) return DirectoryState::kExisting;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename() == format::kLockFileName) continue;
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is not a cityops event log: it holds other files (such as %s); point cityops at "
        "an empty or new directory",
        dir.string(), entry.path().filename().string()));
  }
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot list %s: %s", dir.string(), ec.message()));
  }
  if (!create_if_missing) {
    return absl::NotFoundError(absl::StrFormat(
        "%s is empty: no event log there; open it with creation allowed, or fix the path",
        dir.string()));
  }
  return DirectoryState::kNew;
}

// Makes the directory's entries (files created or removed in it) durable.
absl::Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(
        absl::StrFormat("cannot sync directory %s: %s", dir.string(), std::strerror(err)));
  }
  ::close(fd);
  return absl::OkStatus();
}

// Marks `dir` as being created, durably, after removing what an interrupted creation
// left (everything but our lock file, which the caller holds).
absl::Status BeginCreation(const fs::path& dir) {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename() == format::kLockFileName) continue;
    fs::remove_all(entry.path(), ec);
    if (ec) break;
  }
  const fs::path marker = dir / format::kCreatingFileName;
  const int fd = ec ? -1 : ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(
        absl::StrFormat("cannot prepare %s for a new event log: %s", dir.string(),
                        ec ? ec.message() : std::string(std::strerror(errno))));
  }
  ::close(fd);
  return SyncDirectory(dir);
}

// The log is complete (database, column families, meta synced): drop the marker.
absl::Status EndCreation(const fs::path& dir) {
  std::error_code ec;
  fs::remove(dir / format::kCreatingFileName, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrFormat("cannot finish creating event log %s: %s", dir.string(), ec.message()));
  }
  return SyncDirectory(dir);
}

// The families of an existing log: every family a log has, then each partition's
// events family (with its partition), then version 1's events family if it is there (a
// log to upgrade, or one whose upgrade stopped before dropping it). Anything else is not
// ours, and refused.
struct ExistingFamilies {
  std::vector<std::pair<Partition, std::string>> partitions;
  bool version1_events = false;
};

absl::StatusOr<ExistingFamilies> ListExistingFamilies(const fs::path& dir) {
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.string(), &names);
  if (!s.ok()) return FromRocks(s, absl::StrCat("reading the column families of ", dir.string()));
  for (size_t i = 1; i < kCfCount; ++i) {
    if (std::find(names.begin(), names.end(), kCfNames[i]) == names.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is a RocksDB database but not a cityops event log (it has no '%s' column "
          "family); point cityops at its own data directory",
          dir.string(), kCfNames[i]));
    }
  }
  ExistingFamilies out;
  for (const std::string& name : names) {
    if (std::find(std::begin(kCfNames), std::end(kCfNames), name) != std::end(kCfNames)) continue;
    if (name == format::kVersion1EventsCf) {
      out.version1_events = true;
    } else if (std::optional<Partition> p = format::PartitionOfEventsCf(name); p.has_value()) {
      out.partitions.emplace_back(*p, name);
    } else {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is not a cityops event log, or not one this cityops knows: it has a column "
          "family '%s'; point cityops at its own data directory, or upgrade cityops",
          dir.string(), name));
    }
  }
  return out;
}

}  // namespace

// Takes the directory's advisory lock, or says who holds it.
absl::StatusOr<int> LockLogDirectory(const fs::path& dir) {
  const fs::path lock_path = dir / format::kLockFileName;
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot open lock file %s: %s; check the directory's permissions",
                        lock_path.string(), std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    std::string holder = n > 0 ? absl::StrCat("process ", std::string(buf, n)) : "another process";
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s is in use by %s; only one cityops may own a log at a time: stop the "
          "other one or choose another data directory",
          dir.string(), holder));
    }
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot lock %s: %s", lock_path.string(), std::strerror(err)));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds regardless; the pid is only for the message above.
  }
  return fd;
}

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(const EventLogOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("event log path is empty; set the data directory");
  }
  if (options.clock == nullptr) {
    return absl::InvalidArgumentError("event log clock is null; leave it at Clock::Real()");
  }
  if (options.memtable_budget_bytes < (size_t{16} << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "event log memtable budget %u bytes is below the least, 16 MiB; leave it at 256 MiB",
        options.memtable_budget_bytes));
  }
  if (options.disk_full_retry < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("event log disk_full_retry is negative; leave it at 1 s");
  }
  const fs::path dir(options.path);
  absl::StatusOr<DirectoryState> state = InspectDirectory(dir, options.create_if_missing);
  if (!state.ok()) return state.status();
  const bool exists = *state == DirectoryState::kExisting;
  ExistingFamilies existing;
  if (exists) {
    absl::StatusOr<ExistingFamilies> listed = ListExistingFamilies(dir);
    if (!listed.ok()) return listed.status();
    existing = std::move(*listed);
  } else {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrFormat("cannot create event log directory %s: %s", dir.string(), ec.message()));
    }
  }
  absl::StatusOr<int> fd = LockLogDirectory(dir);
  if (!fd.ok()) return fd.status();
  auto impl = std::make_unique<Impl>(options, *fd);
  // Creation takes several writes (database, column families, meta). A marker file,
  // present until the last of them is durable, lets the next Open start over after a
  // crash instead of refusing a half-made log.
  if (!exists) {
    if (absl::Status s = BeginCreation(dir); !s.ok()) return s;
  }

  rocksdb::DBOptions db_options = format::LogDbOptions();
  if (options.durability == Durability::kBuffered) {
    // Without a sync per append, a power loss may leave unsynced WAL pages unwritten or
    // zeroed anywhere after the last sync, not only in the last record. The log then
    // reopens at its last consistent point (RocksDB's point-in-time recovery), losing only
    // appends that were never synced; ingest consumes them again from the source positions
    // stored with what remains. Under the default, every append synced, such damage is in
    // acknowledged events, and Open refuses (LogDbOptions, LOG_FORMAT.md "Damage").
    db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  }
  db_options.db_write_buffer_size = options.memtable_budget_bytes;
  impl->events_options.write_buffer_size =
      std::min(options.memtable_budget_bytes / 4, impl->events_options.write_buffer_size);
  db_options.create_if_missing = !exists;
  db_options.create_missing_column_families = !exists;
  if (options.testing != nullptr && options.testing->file_system != nullptr) {
    impl->env = rocksdb::NewCompositeEnv(options.testing->file_system);
    db_options.env = impl->env.get();
  }
  // The WAL-less deletion of KeepMemtableBusy would otherwise make RocksDB flush every
  // memtable at close; an unlogged log flushes itself before it closes (~Impl).
  db_options.avoid_flush_during_shutdown = true;
  impl->listener = std::make_shared<Impl::DiskListener>(impl.get());
  db_options.listeners.push_back(impl->listener);
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (size_t i = 0; i < kCfCount; ++i) {
    families.emplace_back(std::string(kCfNames[i]), format::IndexCfOptions());
  }
  for (const auto& [partition, name] : existing.partitions) {
    families.emplace_back(name, impl->events_options);
  }
  if (existing.version1_events) {
    families.emplace_back(std::string(format::kVersion1EventsCf), impl->events_options);
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir.string(), families, &impl->handles, &raw);
  if (!s.ok()) {
    std::string context = absl::StrCat("opening event log ", dir.string());
    if (s.IsCorruption()) {
      // RocksDB's status does not say which WAL file holds a damaged record; its replay,
      // read-only, does (we hold the lock, and nothing has the database open).
      const std::vector<std::string> wal = DescribeWalDamage(dir.string());
      if (!wal.empty()) absl::StrAppend(&context, " (damaged WAL: ", absl::StrJoin(wal, "; "), ")");
    }
    return FromRocks(s, context);
  }
  impl->db.reset(raw);
  // The families every log has stay in `handles`; each partition's goes to its state.
  std::vector<rocksdb::ColumnFamilyHandle*> opened = std::move(impl->handles);
  impl->handles.assign(opened.begin(), opened.begin() + kCfCount);
  for (size_t i = 0; i < existing.partitions.size(); ++i) {
    impl->GetOrCreate(existing.partitions[i].first)->cf.store(opened[kCfCount + i]);
  }
  impl->version1_events = existing.version1_events ? opened.back() : nullptr;
  impl->write_options.sync = options.durability == Durability::kSyncEachAppend;
  impl->write_options.disableWAL = options.durability == Durability::kUnlogged;

  if (!exists) {
    rocksdb::WriteBatch meta;
    meta.Put(impl->cf(kMetaCf), format::kMagicKey, format::kMagicValue);
    meta.Put(impl->cf(kMetaCf), format::kFormatVersionKey, std::to_string(format::kFormatVersion));
    rocksdb::WriteOptions sync;
    sync.sync = true;
    s = impl->db->Write(sync, &meta);
    if (!s.ok()) return FromRocks(s, absl::StrCat("initializing event log ", dir.string()));
    if (absl::Status st = EndCreation(dir); !st.ok()) return st;
  } else {
    std::string magic;
    std::string version_text;
    s = impl->db->Get(rocksdb::ReadOptions(), impl->cf(kMetaCf), format::kMagicKey, &magic);
    if (s.IsNotFound() || (s.ok() && magic != format::kMagicValue)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is not a cityops event log (no cityops marker); point cityops at its own data "
          "directory",
          dir.string()));
    }
    if (!s.ok()) return FromRocks(s, absl::StrCat("reading the marker of ", dir.string()));
    s = impl->db->Get(rocksdb::ReadOptions(), impl->cf(kMetaCf), format::kFormatVersionKey,
                      &version_text);
    uint32_t version = 0;
    if (!s.ok() || !absl::SimpleAtoi(version_text, &version)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s has no readable format version; it is damaged: restore it from a "
          "backup",
          dir.string()));
    }
    if (impl->version1_events != nullptr && version == format::kFormatVersion) {
      // An upgrade from version 1 stopped after it had switched the version but before
      // it dropped the old family: finish it.
      s = impl->db->DropColumnFamily(impl->version1_events);
      impl->db->DestroyColumnFamilyHandle(impl->version1_events);
      impl->version1_events = nullptr;
      if (!s.ok()) {
        return FromRocks(s, absl::StrCat("dropping the version 1 events of ", dir.string()));
      }
    }
    if (version == 1) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s was written in format version 1 (all partitions in one column "
          "family), and this cityops reads format version %u; upgrade it with `cityops log "
          "upgrade --data-dir %s` (it rewrites the events into a family per partition, keeping "
          "every "
          "byte of them; it needs room for a second copy of the events while it runs)",
          dir.string(), format::kFormatVersion, dir.string()));
    }
    if (version != format::kFormatVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s was written in format version %u, but this cityops reads format "
          "version %u; %s",
          dir.string(), version, format::kFormatVersion,
          version > format::kFormatVersion ? "upgrade cityops to open it"
                                           : "no migration from that version exists"));
    }
  }
  for (const auto& [partition, name] : existing.partitions) {
    if (absl::Status st = impl->LoadPartition(partition, impl->FindEventsFamily(partition));
        !st.ok()) {
      return st;
    }
  }
  // Open flushed what it recovered from the WAL: the memtables are empty.
  s = impl->KeepMemtableBusy();
  if (!s.ok()) return FromRocks(s, absl::StrCat("opening event log ", dir.string()));
  return std::unique_ptr<EventLog>(new EventLog(std::move(impl)));
}

EventLog::EventLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventLog::~EventLog() = default;

const std::string& EventLog::path() const { return impl_->options.path; }

absl::Status EventLog::Flush() {
  const rocksdb::Status s = impl_->FlushAll();
  if (s.ok()) return absl::OkStatus();
  return FromRocks(s, absl::StrCat("flushing event log ", impl_->options.path));
}
const LatencyHistogram& EventLog::append_latency() const { return impl_->append_latency; }

DiskFullState EventLog::disk_full() const { return impl_->Disk(); }

LogMemory EventLog::Memory() const {
  const Impl& d = *impl_;
  LogMemory out;
  const auto add = [&](rocksdb::ColumnFamilyHandle* h, const char* property, uint64_t* sum) {
    uint64_t v = 0;
    if (d.db->GetIntProperty(h, property, &v)) *sum += v;
  };
  const std::vector<rocksdb::ColumnFamilyHandle*> handles = d.AllHandles();
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    add(h, "rocksdb.cur-size-all-mem-tables", &out.memtables);
    add(h, "rocksdb.estimate-table-readers-mem", &out.table_readers);
  }
  // One cache for every family: read it once.
  if (!handles.empty()) {
    add(handles.front(), "rocksdb.block-cache-usage", &out.block_cache);
    add(handles.front(), "rocksdb.block-cache-pinned-usage", &out.block_cache_pinned);
  }
  return out;
}

absl::Status EventLog::Resume() {
  Impl& d = *impl_;
  if (!d.Disk().full) return absl::OkStatus();
  {
    absl::MutexLock lock(&d.disk_mu);
    d.last_resume = absl::Now();
  }
  if (!d.MemtablesHoldEntries()) {
    // Cannot happen after KeepMemtableBusy, except when the write that failed came right
    // after RocksDB flushed every memtable for the WAL's size (max_total_wal_size).
    return absl::UnavailableError(absl::StrFormat(
        "disk full: the event log %s cannot write (%s), and cannot resume in place (no "
        "memtable holds entries, so RocksDB would write on in the WAL file that failed); "
        "free space on its disk and restart cityops",
        d.options.path, d.Disk().error));
  }
  rocksdb::Status s = d.db->Resume();
  if (s.ok()) {
    d.MarkWritable();
    return absl::OkStatus();
  }
  if (s.IsBusy()) {
    return d.DiskFullError(
        absl::StrCat(d.Disk().error, "; RocksDB's own recovery is under way, every 5 s"));
  }
  if (s.IsNoSpace()) {
    d.MarkFull(s.ToString());
    return d.DiskFullError(s.ToString());
  }
  return FromRocks(s, absl::StrCat("resuming writes to event log ", d.options.path));
}

namespace {

std::string EntryName(const v1::Event& event, size_t i, Partition partition) {
  return absl::StrFormat("entry %u of the batch for partition %u (stream '%s')", i,
                         partition.value(), event.stream_id());
}

}  // namespace

// Checks a batch before any lock is taken: a malformed batch writes nothing. Sets
// `*indexed` if the batch holds events of indexed streams.
absl::Status EventLog::Validate(const AppendBatch& batch, bool* indexed) {
  const Partition partition = batch.partition();
  if (!batch.source_positions_.empty() && batch.checkpoint_.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch for partition %u carries both source positions and a stage checkpoint; an "
        "append comes from ingest or from a stage, not both",
        partition.value()));
  }
  for (size_t i = 0; i < batch.used_; ++i) {
    const AppendBatch::Entry& entry = batch.entries_[i];
    if (entry.is_stored) continue;  // Checked by AddStored; never indexed.
    const v1::Event& e = entry.event;
    if (e.payload_case() == v1::Event::PAYLOAD_NOT_SET) {
      return absl::InvalidArgumentError(absl::StrCat(
          EntryName(entry.event, i, partition), " has no payload; set one of the event types"));
    }
    if (e.stream_id().empty() || HasNul(e.stream_id())) {
      return absl::InvalidArgumentError(
          absl::StrCat(EntryName(entry.event, i, partition),
                       " has an empty stream id or one containing NUL; use e.g. device/<id>"));
    }
    const bool is_indexed = IsIndexedStream(e.stream_id());
    if (!is_indexed && entry.expected_version.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(EntryName(entry.event, i, partition),
                       " carries an expected version, but only indexed streams (case/, ticket/, "
                       "...) have versions; device and clock streams are unversioned"));
    }
    *indexed |= is_indexed;
  }
  for (const SourcePosition& p : batch.source_positions_) {
    if (p.topic.empty() || HasNul(p.topic) || p.kafka_partition < 0 || p.next_offset.value() < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch for partition %u has an invalid source position (topic '%s', partition %d, "
          "offset %d)",
          partition.value(), p.topic, p.kafka_partition, p.next_offset.value()));
    }
  }
  if (batch.checkpoint_.has_value() && batch.checkpoint_->stage.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch for partition %u has a checkpoint without a stage name", partition.value()));
  }
  return absl::OkStatus();
}

// What one AppendAll call has staged so far, shared by its batches.
struct EventLog::Staging {
  rocksdb::WriteBatch write_batch;
  absl::flat_hash_map<std::string, EventPosition> keys;  // Idempotency keys of this call.
  absl::flat_hash_map<std::string, uint64_t> versions;   // Stream heads as of this call.
  std::string value;                                     // Reused serialization buffer.
  google::protobuf::Timestamp recorded;
  std::string recorded_field;  // `recorded` as a serialized Event field, for stored entries.
  rocksdb::ColumnFamilyHandle* events = nullptr;  // The events family of the batch staged.
};

// Adds `batch` to `staging`, numbering its events from `*next`. The caller holds the
// partition's append lock and, for indexed events, the index lock.
absl::Status EventLog::Stage(AppendBatch& batch, uint64_t* next, Staging& staging,
                             AppendResult* result) const {
  const Impl& d = *impl_;
  const Partition partition = batch.partition();
  result->outcomes.reserve(batch.used_);
  char key[format::kEventKeySize];
  for (size_t i = 0; i < batch.used_; ++i) {
    AppendBatch::Entry& entry = batch.entries_[i];
    v1::Event& e = entry.event;
    const EventPosition position{partition, Sequence(*next)};
    format::EncodeEventKey(Sequence(*next), key);
    if (entry.is_stored) {
      if (staging.recorded_field.empty()) {
        // Event.recorded_time (field 6, length-delimited), as SerializeToString writes it.
        const std::string ts = staging.recorded.SerializeAsString();
        staging.recorded_field.push_back(
            static_cast<char>((v1::Event::kRecordedTimeFieldNumber << 3) | 2));
        staging.recorded_field.push_back(static_cast<char>(ts.size()));  // < 128 bytes.
        staging.recorded_field += ts;
      }
      const std::string_view stored = entry.stored;
      staging.value.assign(stored.substr(0, entry.recorded_at));
      staging.value += staging.recorded_field;
      staging.value.append(stored.substr(entry.recorded_at));
      staging.write_batch.Put(staging.events, rocksdb::Slice(key, sizeof(key)), staging.value);
      result->outcomes.push_back({position, false});
      ++result->appended;
      ++*next;
      continue;
    }
    if (IsIndexedStream(e.stream_id())) {
      const std::string& idempotency_key = e.provenance().idempotency_key();
      if (!idempotency_key.empty()) {
        if (auto it = staging.keys.find(idempotency_key); it != staging.keys.end()) {
          result->outcomes.push_back({it->second, true});
          ++result->duplicates;
          continue;
        }
        std::string stored;
        rocksdb::Status s =
            d.db->Get(rocksdb::ReadOptions(), d.cf(kIdempotencyCf), idempotency_key, &stored);
        if (s.ok()) {
          std::optional<EventPosition> original = format::DecodePosition(stored);
          if (!original.has_value()) {
            return absl::DataLossError(
                absl::StrCat("idempotency entry '", idempotency_key, "' in ", d.options.path,
                             " is malformed; restore the log from a backup"));
          }
          result->outcomes.push_back({*original, true});
          ++result->duplicates;
          continue;
        }
        if (!s.IsNotFound()) {
          return FromRocks(s, absl::StrCat("looking up idempotency key '", idempotency_key, "'"));
        }
      }
      auto [head, inserted] = staging.versions.try_emplace(e.stream_id(), 0);
      if (inserted) {
        absl::StatusOr<uint64_t> stored = d.StoredVersion(e.stream_id());
        if (!stored.ok()) return stored.status();
        head->second = *stored;
      }
      if (entry.expected_version.has_value() && entry.expected_version->value() != head->second) {
        return absl::AbortedError(absl::StrFormat(
            "stream %s is at version %u, but %s expected version %u; nothing was appended: "
            "reload the stream and retry the command",
            e.stream_id(), head->second, EntryName(entry.event, i, partition),
            entry.expected_version->value()));
      }
      ++head->second;
      e.set_stream_version(head->second);
      staging.write_batch.Put(d.cf(kStreamsCf),
                              format::StreamKey(e.stream_id(), StreamVersion(head->second)),
                              format::EncodePosition(position));
      if (!idempotency_key.empty()) {
        staging.write_batch.Put(d.cf(kIdempotencyCf), idempotency_key,
                                format::EncodePosition(position));
        staging.keys.emplace(idempotency_key, position);
      }
    } else {
      e.clear_stream_version();
    }
    // Partition and sequence are the key; the value does not repeat them.
    e.clear_partition();
    e.clear_sequence();
    *e.mutable_recorded_time() = staging.recorded;
    e.SerializeToString(&staging.value);
    staging.write_batch.Put(staging.events, rocksdb::Slice(key, sizeof(key)), staging.value);
    result->outcomes.push_back({position, false});
    ++result->appended;
    ++*next;
  }

  char offset[8];
  for (const SourcePosition& p : batch.source_positions_) {
    format::PutBigEndian64(static_cast<uint64_t>(p.next_offset.value()), offset);
    staging.write_batch.Put(d.cf(kPositionsCf),
                            format::SourcePositionKey(p.topic, p.kafka_partition),
                            rocksdb::Slice(offset, sizeof(offset)));
  }
  if (batch.checkpoint_.has_value()) {
    std::string checkpoint(8, '\0');
    format::PutBigEndian64(batch.checkpoint_->next.value(), checkpoint.data());
    checkpoint += batch.checkpoint_->state;
    staging.write_batch.Put(d.cf(kPositionsCf),
                            format::CheckpointKey(partition, batch.checkpoint_->stage), checkpoint);
  }
  result->next = Sequence(*next);
  return absl::OkStatus();
}

absl::StatusOr<AppendResult> EventLog::Append(AppendBatch&& batch) { return Append(batch); }

absl::StatusOr<AppendResult> EventLog::Append(AppendBatch& batch) {
  absl::StatusOr<std::vector<AppendResult>> results =
      AppendAll(std::span<AppendBatch>(&batch, 1), nullptr);
  if (!results.ok()) return results.status();
  return std::move(results->front());
}

absl::StatusOr<std::vector<AppendResult>> EventLog::AppendAll(std::vector<AppendBatch>&& batches) {
  return AppendAll(std::span<AppendBatch>(batches), nullptr);
}

absl::StatusOr<std::vector<AppendResult>> EventLog::AppendAll(std::vector<AppendBatch>& batches) {
  return AppendAll(std::span<AppendBatch>(batches), nullptr);
}

absl::StatusOr<std::vector<AppendResult>> EventLog::AppendAll(std::vector<AppendBatch>& batches,
                                                              const StageSnapshot& snapshot) {
  return AppendAll(std::span<AppendBatch>(batches), &snapshot);
}

absl::StatusOr<std::vector<AppendResult>> EventLog::AppendAll(std::span<AppendBatch> batches,
                                                              const StageSnapshot* snapshot) {
  Impl& d = *impl_;
  if (snapshot != nullptr && snapshot->stage.empty()) {
    return absl::InvalidArgumentError(
        "AppendAll got a stage snapshot without a stage name; name the stage that wrote it");
  }
  bool any_indexed = false;
  for (const AppendBatch& batch : batches) {
    if (absl::Status s = Validate(batch, &any_indexed); !s.ok()) return s;
  }
  // The disk ran full: RocksDB takes no writes until resumed. Try that now and then;
  // otherwise fail at once, writing nothing.
  if (DiskFullState disk = d.Disk(); disk.full) {
    bool due = false;
    {
      absl::MutexLock lock(&d.disk_mu);
      due = absl::Now() - d.last_resume >= d.options.disk_full_retry;
    }
    if (!due) return d.DiskFullError(disk.error);
    if (absl::Status s = Resume(); !s.ok()) return s;
  }
  // Lock partitions in ascending order, so that concurrent calls cannot deadlock.
  std::vector<size_t> order(batches.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return batches[a].partition() < batches[b].partition(); });
  for (size_t i = 1; i < order.size(); ++i) {
    if (batches[order[i]].partition() == batches[order[i - 1]].partition()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("AppendAll got two batches for partition %u; merge them into one",
                          batches[order[i]].partition().value()));
    }
  }
  std::vector<Impl::PartitionState*> states(batches.size());
  std::vector<std::unique_ptr<absl::MutexLock>> locks;
  locks.reserve(batches.size() + 1);
  for (size_t i : order) {
    states[i] = d.GetOrCreate(batches[i].partition());
    locks.push_back(std::make_unique<absl::MutexLock>(&states[i]->append_mu));
  }
  if (any_indexed) locks.push_back(std::make_unique<absl::MutexLock>(&d.index_mu));

  Staging staging;
  staging.recorded = ToTimestamp(d.options.clock->Now());
  std::vector<AppendResult> results(batches.size());
  std::vector<uint64_t> nexts(batches.size());
  for (size_t i = 0; i < batches.size(); ++i) {
    nexts[i] = states[i]->next.load(std::memory_order_relaxed);
    staging.events = nullptr;
    if (!batches[i].empty()) {
      absl::StatusOr<rocksdb::ColumnFamilyHandle*> events =
          d.EventsFamily(batches[i].partition(), states[i]);
      if (!events.ok()) return events.status();
      staging.events = *events;
    }
    if (absl::Status s = Stage(batches[i], &nexts[i], staging, &results[i]); !s.ok()) return s;
  }
  if (snapshot != nullptr) {
    staging.write_batch.Put(d.cf(kPositionsCf), format::SnapshotKey(snapshot->stage),
                            snapshot->state);
  }
  if (staging.write_batch.Count() == 0) return results;
  const auto write_start = std::chrono::steady_clock::now();
  rocksdb::Status s = d.db->Write(d.write_options, &staging.write_batch);
  d.append_latency.Record(std::chrono::steady_clock::now() - write_start);
  if (!s.ok()) {
    if (s.IsNoSpace()) {
      d.MarkFull(s.ToString());  // Usually done already, by the listener.
      return d.DiskFullError(s.ToString());
    }
    return FromRocks(s,
                     absl::StrFormat("appending %u batches to %s", batches.size(), d.options.path));
  }
  {
    absl::MutexLock lock(&d.wait_mu);
    for (size_t i = 0; i < batches.size(); ++i) {
      states[i]->next.store(nexts[i], std::memory_order_release);
    }
  }
  d.appended.SignalAll();
  return results;
}

absl::Status EventLog::Scan(Partition partition, Sequence from,
                            absl::FunctionRef<bool(Sequence, std::string_view)> visit) const {
  const Impl& d = *impl_;
  const uint64_t end = NextSequence(partition).value();
  if (from.value() >= end) return absl::OkStatus();
  rocksdb::ColumnFamilyHandle* events = d.FindEventsFamily(partition);
  if (events == nullptr) {
    return absl::InternalError(absl::StrFormat("partition %u of %s has events but no family",
                                               partition.value(), d.options.path));
  }
  char lower[format::kEventKeySize];
  char upper[format::kEventKeySize];
  format::EncodeEventKey(from, lower);
  format::EncodeEventKey(Sequence(end), upper);
  const rocksdb::Slice upper_bound(upper, sizeof(upper));
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_bound;
  ro.fill_cache = false;  // A scan reads once; keep the cache for point lookups.
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(ro, events));
  uint64_t expected = from.value();
  for (it->Seek(rocksdb::Slice(lower, sizeof(lower))); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    if (k.size() != format::kEventKeySize || format::GetBigEndian64(k.data()) != expected) {
      return absl::DataLossError(absl::StrFormat(
          "partition %u of %s has a gap or a malformed key at sequence %u; restore the log "
          "from a backup",
          partition.value(), d.options.path, expected));
    }
    if (!visit(Sequence(expected), it->value().ToStringView())) return absl::OkStatus();
    ++expected;
  }
  if (!it->status().ok()) {
    return FromRocks(it->status(), absl::StrFormat("scanning partition %u of %s", partition.value(),
                                                   d.options.path));
  }
  if (expected != end) {
    return absl::DataLossError(absl::StrFormat(
        "partition %u of %s ends at sequence %u, but %u events were appended; restore the log "
        "from a backup",
        partition.value(), d.options.path, expected, end));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Event>> EventLog::Read(Partition partition, Sequence from,
                                                      size_t max_events) const {
  std::vector<v1::Event> events;
  absl::Status parse_status;
  if (max_events == 0) return events;
  absl::Status s = Scan(partition, from, [&](Sequence seq, std::string_view value) {
    v1::Event& e = events.emplace_back();
    parse_status = ParseEvent({partition, seq}, value, &e);
    return parse_status.ok() && events.size() < max_events;
  });
  if (!s.ok()) return s;
  if (!parse_status.ok()) return parse_status;
  return events;
}

absl::StatusOr<std::vector<v1::Event>> EventLog::ReadStream(std::string_view stream_id,
                                                            StreamVersion from,
                                                            size_t max_events) const {
  if (!IsIndexedStream(stream_id)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("stream '%s' is not indexed (device and clock streams are read by "
                        "partition scan or from the "
                        "device projection)",
                        stream_id));
  }
  const Impl& d = *impl_;
  const std::string prefix = format::StreamKeyPrefix(stream_id);
  std::vector<EventPosition> positions;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        d.db->NewIterator(rocksdb::ReadOptions(), d.cf(kStreamsCf)));
    for (it->Seek(format::StreamKey(stream_id, std::max(from, StreamVersion(1))));
         it->Valid() && it->key().starts_with(prefix) && positions.size() < max_events;
         it->Next()) {
      std::optional<EventPosition> p = format::DecodePosition(it->value().ToStringView());
      if (!p.has_value()) {
        return absl::DataLossError(absl::StrFormat("index entry of stream %s in %s is malformed",
                                                   stream_id, d.options.path));
      }
      positions.push_back(*p);
    }
    if (!it->status().ok()) {
      return FromRocks(it->status(), absl::StrFormat("reading the index of stream %s", stream_id));
    }
  }
  std::vector<std::string> keys;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  keys.reserve(positions.size());
  cfs.reserve(positions.size());
  for (const EventPosition& p : positions) {
    rocksdb::ColumnFamilyHandle* events = d.FindEventsFamily(p.partition);
    if (events == nullptr) {
      return absl::DataLossError(absl::StrFormat(
          "stream %s in %s is indexed at event %u/%u, which the log does not hold; restore the "
          "log from a backup",
          stream_id, d.options.path, p.partition.value(), p.sequence.value()));
    }
    keys.push_back(format::EventKey(p.sequence));
    cfs.push_back(events);
  }
  std::vector<rocksdb::Slice> key_slices(keys.begin(), keys.end());
  std::vector<std::string> values;
  std::vector<rocksdb::Status> statuses =
      d.db->MultiGet(rocksdb::ReadOptions(), cfs, key_slices, &values);
  std::vector<v1::Event> events(positions.size());
  for (size_t i = 0; i < positions.size(); ++i) {
    if (!statuses[i].ok()) {
      return FromRocks(statuses[i], absl::StrFormat("reading event %u/%u of stream %s",
                                                    positions[i].partition.value(),
                                                    positions[i].sequence.value(), stream_id));
    }
    if (absl::Status s = ParseEvent(positions[i], values[i], &events[i]); !s.ok()) return s;
  }
  return events;
}

absl::Status EventLog::ListStreams(
    std::string_view prefix, absl::FunctionRef<bool(std::string_view, StreamVersion)> visit) const {
  const Impl& d = *impl_;
  std::unique_ptr<rocksdb::Iterator> it(
      d.db->NewIterator(rocksdb::ReadOptions(), d.cf(kStreamsCf)));
  it->Seek(rocksdb::Slice(prefix.data(), prefix.size()));
  while (it->Valid() && it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) {
    const std::string_view key = it->key().ToStringView();
    const size_t nul = key.find('\0');
    if (nul == std::string_view::npos) {
      return absl::DataLossError(
          absl::StrFormat("malformed stream index key in %s", d.options.path));
    }
    const std::string stream_id(key.substr(0, nul));
    // Jump to the stream's last version, report it, then past the whole stream.
    it->SeekForPrev(format::StreamKey(stream_id, StreamVersion(UINT64_MAX)));
    if (!it->Valid()) break;
    const rocksdb::Slice last = it->key();
    if (last.size() != stream_id.size() + 9) {
      return absl::DataLossError(
          absl::StrFormat("malformed stream index key in %s", d.options.path));
    }
    if (!visit(stream_id,
               StreamVersion(format::GetBigEndian64(last.data() + stream_id.size() + 1)))) {
      return absl::OkStatus();
    }
    std::string after = stream_id;
    after.push_back('\x01');  // Sorts after every "<stream_id>\0<version>" key.
    it->Seek(after);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing streams");
  return absl::OkStatus();
}

absl::StatusOr<StreamVersion> EventLog::CurrentVersion(std::string_view stream_id) const {
  if (!IsIndexedStream(stream_id)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("stream '%s' is not indexed and has no version", stream_id));
  }
  absl::StatusOr<uint64_t> v = impl_->StoredVersion(stream_id);
  if (!v.ok()) return v.status();
  return StreamVersion(*v);
}

Sequence EventLog::NextSequence(Partition partition) const {
  const Impl::PartitionState* ps = impl_->Find(partition);
  return Sequence(ps == nullptr ? 0 : ps->next.load(std::memory_order_acquire));
}

std::optional<Sequence> EventLog::LastSequence(Partition partition) const {
  const uint64_t next = NextSequence(partition).value();
  if (next == 0) return std::nullopt;
  return Sequence(next - 1);
}

std::vector<Partition> EventLog::Partitions() const {
  std::vector<Partition> out;
  {
    absl::ReaderMutexLock lock(&impl_->partitions_mu);
    for (const auto& [id, state] : impl_->partitions) {
      if (state->next.load(std::memory_order_acquire) > 0) out.emplace_back(id);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::optional<KafkaOffset>> EventLog::StoredSourcePosition(
    std::string_view topic, int32_t kafka_partition) const {
  std::string value;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(kPositionsCf),
                                     format::SourcePositionKey(topic, kafka_partition), &value);
  if (s.IsNotFound()) return std::optional<KafkaOffset>();
  if (!s.ok()) return FromRocks(s, absl::StrFormat("reading the stored position of %s", topic));
  if (value.size() != 8) {
    return absl::DataLossError(
        absl::StrFormat("stored position of %s/%d is malformed", topic, kafka_partition));
  }
  return std::optional<KafkaOffset>(
      KafkaOffset(static_cast<int64_t>(format::GetBigEndian64(value.data()))));
}

absl::StatusOr<std::vector<SourcePosition>> EventLog::StoredSourcePositions() const {
  std::vector<SourcePosition> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kPositionsCf)));
  const std::string prefix(1, format::kSourcePositionPrefix);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    const std::string_view k = it->key().ToStringView();
    const size_t nul = k.find('\0', 1);
    if (nul == std::string_view::npos || k.size() != nul + 5 || it->value().size() != 8) {
      return absl::DataLossError(
          absl::StrCat("a stored source position in ", impl_->options.path, " is malformed"));
    }
    SourcePosition p;
    p.topic = std::string(k.substr(1, nul - 1));
    p.kafka_partition = static_cast<int32_t>(format::GetBigEndian32(k.data() + nul + 1));
    p.next_offset = KafkaOffset(static_cast<int64_t>(format::GetBigEndian64(it->value().data())));
    out.push_back(std::move(p));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading stored source positions");
  return out;
}

absl::StatusOr<std::optional<StageCheckpoint>> EventLog::StoredCheckpoint(
    Partition partition, std::string_view stage) const {
  std::string value;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(kPositionsCf),
                                     format::CheckpointKey(partition, stage), &value);
  if (s.IsNotFound()) return std::optional<StageCheckpoint>();
  if (!s.ok()) return FromRocks(s, absl::StrFormat("reading the checkpoint of stage %s", stage));
  if (value.size() < 8) {
    return absl::DataLossError(absl::StrFormat(
        "checkpoint of stage %s in partition %u is malformed", stage, partition.value()));
  }
  return std::optional<StageCheckpoint>(StageCheckpoint{
      std::string(stage), Sequence(format::GetBigEndian64(value.data())), value.substr(8)});
}

absl::StatusOr<std::optional<std::string>> EventLog::StoredSnapshot(std::string_view stage) const {
  std::string value;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(kPositionsCf),
                                     format::SnapshotKey(stage), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, absl::StrFormat("reading the snapshot of stage %s", stage));
  return std::optional<std::string>(std::move(value));
}

Sequence EventLog::WaitForEvents(Partition partition, Sequence after_next,
                                 absl::Duration timeout) const {
  const Impl& d = *impl_;
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&d.wait_mu);
  ++d.waiting_readers;
  while (!d.closing && NextSequence(partition) <= after_next) {
    if (d.appended.WaitWithDeadline(&d.wait_mu, deadline)) break;
  }
  --d.waiting_readers;
  return NextSequence(partition);
}

absl::Status EventLog::Backup(const std::string& target_dir) const {
  if (std::filesystem::exists(target_dir)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("backup target %s already exists; choose a new directory", target_dir));
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  if (s.ok()) s = checkpoint->CreateCheckpoint(target_dir);
  if (s.ok()) s = impl_->KeepMemtableBusy();  // The checkpoint flushed the memtables.
  if (!s.ok()) {
    return FromRocks(s, absl::StrFormat("backing up %s to %s", impl_->options.path, target_dir));
  }
  return absl::OkStatus();
}

absl::Status EventLog::ParseEvent(EventPosition position, std::string_view value, v1::Event* out) {
  if (!out->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return absl::DataLossError(absl::StrFormat(
        "event %u/%u (%u bytes) is not a valid cityops.v1.Event; the log is damaged or was "
        "written by an incompatible build",
        position.partition.value(), position.sequence.value(), value.size()));
  }
  out->set_partition(position.partition.value());
  out->set_sequence(position.sequence.value());
  return absl::OkStatus();
}

}  // namespace cityops::kernel
