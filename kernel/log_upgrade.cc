#include "kernel/log_upgrade.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernel/log_format.h"
#include "kernel/log_lock.h"
#include "kernel/rocks_status.h"
#include "kernel/types.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace cityops::kernel {
namespace {

namespace fs = std::filesystem;

// Entries per write while copying: large enough that a write costs little per event.
constexpr size_t kCopyBatch = 4096;

// The log's database with every family it has, closed (handles released) on destruction.
struct OpenDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;

  OpenDb() = default;
  OpenDb(const OpenDb&) = delete;
  OpenDb& operator=(const OpenDb&) = delete;
  ~OpenDb() {
    if (db == nullptr) return;
    for (rocksdb::ColumnFamilyHandle* h : handles) {
      if (h != nullptr) db->DestroyColumnFamilyHandle(h);
    }
    db->Close().PermitUncheckedError();
  }

  rocksdb::ColumnFamilyHandle* Find(std::string_view name) const {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return handles[i];
    }
    return nullptr;
  }

  // Drops a family and forgets its handle.
  rocksdb::Status Drop(std::string_view name) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] != name || handles[i] == nullptr) continue;
      rocksdb::Status s = db->DropColumnFamily(handles[i]);
      db->DestroyColumnFamilyHandle(handles[i]);
      handles[i] = nullptr;
      return s;
    }
    return rocksdb::Status::OK();
  }
};

class Upgrader {
 public:
  explicit Upgrader(const UpgradeOptions& options) : options_(options), dir_(options.path) {
    report_.path = options.path;
    report_.to_version = format::kFormatVersion;
  }

  absl::StatusOr<UpgradeReport> Run() {
    const absl::Time start = absl::Now();
    std::error_code ec;
    if (!fs::exists(dir_ / "CURRENT", ec)) {
      return absl::NotFoundError(absl::StrFormat(
          "no event log at %s to upgrade (no RocksDB database there); check the data directory",
          path()));
    }
    absl::StatusOr<int> lock = LockLogDirectory(dir_);
    if (!lock.ok()) return lock.status();
    const ScopedLogLock unlock(*lock);

    if (absl::Status s = Open(); !s.ok()) return s;
    absl::StatusOr<uint32_t> version = Version();
    if (!version.ok()) return version.status();
    report_.from_version = *version;
    if (*version == format::kFormatVersion) {
      // An earlier run may have stopped before dropping the old family.
      if (absl::Status s = FromRocks(db_.Drop(format::kVersion1EventsCf),
                                     absl::StrCat("dropping the version 1 events of ", path()));
          !s.ok()) {
        return s;
      }
      report_.already_current = true;
    } else if (*version == 1) {
      if (absl::Status s = UpgradeFromVersion1(); !s.ok()) return s;
    } else {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s is in format version %u, which this cityops (format version %u) %s", path(),
          *version, format::kFormatVersion,
          *version > format::kFormatVersion ? "does not know: upgrade cityops instead"
                                            : "has no upgrade for"));
    }
    report_.elapsed = absl::Now() - start;
    return report_;
  }

 private:
  const std::string& path() const { return options_.path; }

  absl::Status Open() {
    rocksdb::DBOptions options = format::LogDbOptions();
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(options, path(), &db_.names);
    if (!s.ok()) return FromRocks(s, absl::StrCat("reading the column families of ", path()));
    if (std::find(db_.names.begin(), db_.names.end(), format::kPositionsCf) == db_.names.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is a RocksDB database but not a cityops event log (it has no '%s' column family)",
          path(), format::kPositionsCf));
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const std::string& name : db_.names) {
      families.emplace_back(name,
                            format::IsEventsCf(name) ? events_options_ : format::IndexCfOptions());
    }
    rocksdb::DB* raw = nullptr;
    s = rocksdb::DB::Open(options, path(), families, &db_.handles, &raw);
    if (!s.ok()) return FromRocks(s, absl::StrCat("opening event log ", path(), " to upgrade it"));
    db_.db.reset(raw);
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> Version() {
    std::string magic;
    rocksdb::Status s = db_.db->Get(rocksdb::ReadOptions(), db_.db->DefaultColumnFamily(),
                                    format::kMagicKey, &magic);
    if (s.IsNotFound() || (s.ok() && magic != format::kMagicValue)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s is not a cityops event log (no cityops marker)", path()));
    }
    if (!s.ok()) return FromRocks(s, absl::StrCat("reading the marker of ", path()));
    std::string text;
    s = db_.db->Get(rocksdb::ReadOptions(), db_.db->DefaultColumnFamily(),
                    format::kFormatVersionKey, &text);
    uint32_t version = 0;
    if (!s.ok() || !absl::SimpleAtoi(text, &version)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s has no readable format version; it is damaged: restore it from a backup",
          path()));
    }
    return version;
  }

  absl::Status UpgradeFromVersion1() {
    rocksdb::ColumnFamilyHandle* old = db_.Find(format::kVersion1EventsCf);
    if (old == nullptr) {
      return absl::DataLossError(absl::StrFormat(
          "event log %s is in format version 1 but has no '%s' column family; it is damaged: "
          "restore it from a backup",
          path(), format::kVersion1EventsCf));
    }
    // 1. What an interrupted run left.
    for (const std::string& name : std::vector<std::string>(db_.names)) {
      if (!format::PartitionOfEventsCf(name).has_value()) continue;
      if (absl::Status s =
              FromRocks(db_.Drop(name), absl::StrCat("dropping ", name, " of ", path()));
          !s.ok()) {
        return s;
      }
    }
    // 2. The copy.
    uint64_t estimate = 0;
    if (db_.db->GetIntProperty(old, "rocksdb.estimate-num-keys", &estimate) && options_.begin) {
      options_.begin(estimate);
    }
    if (absl::Status s = Copy(old); !s.ok()) return s;
    rocksdb::FlushOptions flush;
    flush.wait = true;
    std::vector<rocksdb::ColumnFamilyHandle*> created;
    for (const auto& [p, h] : created_) created.push_back(h);
    if (absl::Status s = FromRocks(db_.db->Flush(flush, created),
                                   absl::StrCat("writing the upgraded events of ", path()));
        !s.ok()) {
      return s;
    }
    // 3. The switch.
    rocksdb::WriteOptions sync;
    sync.sync = true;
    if (absl::Status s =
            FromRocks(db_.db->Put(sync, db_.db->DefaultColumnFamily(), format::kFormatVersionKey,
                                  std::to_string(format::kFormatVersion)),
                      absl::StrCat("writing the new format version of ", path()));
        !s.ok()) {
      return s;
    }
    // 4. The old family.
    return FromRocks(db_.Drop(format::kVersion1EventsCf),
                     absl::StrCat("dropping the version 1 events of ", path(),
                                  " (the upgrade is done; the next start drops them)"));
  }

  absl::Status Copy(rocksdb::ColumnFamilyHandle* old) {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    ro.readahead_size = 4 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db_.db->NewIterator(ro, old));
    // Nothing of the copy needs the WAL: it counts only once flushed, before the switch.
    rocksdb::WriteOptions unlogged;
    unlogged.disableWAL = true;
    rocksdb::WriteBatch batch;
    std::optional<Partition> current;
    rocksdb::ColumnFamilyHandle* target = nullptr;
    uint64_t expected = 0;
    uint64_t pending = 0;
    char key[format::kEventKeySize];
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      Partition p;
      Sequence seq;
      if (!format::DecodeVersion1EventKey(it->key().ToStringView(), &p, &seq)) {
        return absl::DataLossError(absl::StrFormat(
            "event log %s holds a malformed event key%s; nothing was changed but a partial "
            "copy, which the next run drops: restore the log from a backup",
            path(),
            current
                ? absl::StrFormat(" after partition %u sequence %u", current->value(), expected - 1)
                : std::string()));
      }
      if (current != p) {
        absl::StatusOr<rocksdb::ColumnFamilyHandle*> h = Create(p);
        if (!h.ok()) return h.status();
        target = *h;
        current = p;
        expected = 0;
        ++report_.partitions;
      }
      if (seq.value() != expected) {
        return absl::DataLossError(absl::StrFormat(
            "event log %s: partition %u has no events %u to %u (a gap in its sequences); "
            "nothing was changed but a partial copy, which the next run drops: restore the log "
            "from a backup",
            path(), p.value(), expected, seq.value() - 1));
      }
      format::EncodeEventKey(seq, key);
      batch.Put(target, rocksdb::Slice(key, sizeof(key)), it->value());
      ++expected;
      ++report_.events;
      if (batch.Count() >= kCopyBatch) {
        if (absl::Status s = Write(unlogged, &batch); !s.ok()) return s;
      }
      if (++pending == 65536 && options_.advance) {
        options_.advance(pending);
        pending = 0;
      }
    }
    if (!it->status().ok()) {
      return FromRocks(it->status(), absl::StrCat("reading the version 1 events of ", path()));
    }
    if (absl::Status s = Write(unlogged, &batch); !s.ok()) return s;
    if (options_.advance) options_.advance(pending);
    return absl::OkStatus();
  }

  absl::Status Write(const rocksdb::WriteOptions& options, rocksdb::WriteBatch* batch) {
    if (batch->Count() == 0) return absl::OkStatus();
    absl::Status s = FromRocks(db_.db->Write(options, batch),
                               absl::StrCat("writing the upgraded events of ", path()));
    batch->Clear();
    return s;
  }

  absl::StatusOr<rocksdb::ColumnFamilyHandle*> Create(Partition p) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    const std::string name = format::EventsCfName(p);
    rocksdb::Status s = db_.db->CreateColumnFamily(events_options_, name, &h);
    if (!s.ok()) return FromRocks(s, absl::StrCat("creating ", name, " in ", path()));
    db_.names.push_back(name);
    db_.handles.push_back(h);
    created_[p.value()] = h;
    return h;
  }

  const UpgradeOptions& options_;
  const fs::path dir_;
  // One table factory, so one block cache, for every events family.
  const rocksdb::ColumnFamilyOptions events_options_ = format::EventsCfOptions();
  OpenDb db_;
  std::map<uint32_t, rocksdb::ColumnFamilyHandle*> created_;
  UpgradeReport report_;
};

}  // namespace

absl::StatusOr<UpgradeReport> UpgradeLog(const UpgradeOptions& options) {
  return Upgrader(options).Run();
}

}  // namespace cityops::kernel
