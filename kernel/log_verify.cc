#include "kernel/log_verify.h"

#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cityops/v1/events.pb.h"
#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "kernel/log_lock.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/sst_file_reader.h"

namespace cityops::kernel {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kDropping = ": dropping ";

// RocksDB's info log, kept in memory instead of the directory's LOG file (a check must
// not write into the log it checks). Keeps the lines in which the WAL replay reports a
// damaged record: "<wal file>: dropping <n> bytes; <status>".
class WalDamageLogger : public rocksdb::Logger {
 public:
  WalDamageLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    char buf[4096];
    va_list copy;
    va_copy(copy, ap);
    const int n = std::vsnprintf(buf, sizeof(buf), format, copy);
    va_end(copy);
    if (n <= 0) return;
    std::string_view line(buf, std::min(static_cast<size_t>(n), sizeof(buf) - 1));
    if (line.find(kDropping) == std::string_view::npos) return;
    absl::MutexLock lock(&mu_);
    lines_.emplace_back(line);
  }

  std::vector<std::string> lines() const {
    absl::MutexLock lock(&mu_);
    return lines_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

// A WAL damage line of RocksDB's, taken apart.
struct WalDrop {
  std::string file;
  std::string bytes;
  std::string reason;
};

WalDrop ParseWalDrop(std::string_view line, std::string_view dir) {
  const size_t at = line.find(kDropping);
  const std::string_view head = line.substr(0, at);
  size_t start = head.rfind(dir);
  if (start == std::string_view::npos) {
    start = head.rfind(' ');
    start = start == std::string_view::npos ? 0 : start + 1;
  }
  WalDrop drop;
  drop.file = std::string(head.substr(start));
  std::string_view rest = line.substr(at + kDropping.size());
  const size_t space = rest.find(' ');
  drop.bytes = std::string(rest.substr(0, space));
  const size_t semicolon = rest.find("; ");
  std::string_view reason = semicolon == std::string_view::npos ? rest : rest.substr(semicolon + 2);
  while (!reason.empty() && absl::ascii_isspace(static_cast<unsigned char>(reason.back()))) {
    reason.remove_suffix(1);
  }
  drop.reason = std::string(reason);
  return drop;
}

// RocksDB's damage lines grouped by WAL file: one damaged record makes the replay drop
// the rest of its block and report the fragments after it too.
struct WalFileDamage {
  std::string file;
  std::string first_reason;
  uint64_t bytes = 0;
  int stretches = 0;
};

std::vector<WalFileDamage> GroupWalDrops(const std::vector<std::string>& lines,
                                         std::string_view dir) {
  std::vector<WalFileDamage> files;
  for (const std::string& line : lines) {
    const WalDrop drop = ParseWalDrop(line, dir);
    auto it = std::find_if(files.begin(), files.end(),
                           [&](const WalFileDamage& f) { return f.file == drop.file; });
    if (it == files.end()) {
      files.push_back({drop.file, drop.reason, 0, 0});
      it = files.end() - 1;
    }
    uint64_t bytes = 0;
    if (absl::SimpleAtoi(drop.bytes, &bytes)) it->bytes += bytes;
    ++it->stretches;
  }
  return files;
}

std::string DescribeWalFileDamage(const WalFileDamage& f) {
  return absl::StrFormat("%s (%u bytes in %d stretch%s cannot be replayed)", f.first_reason,
                         f.bytes, f.stretches, f.stretches == 1 ? "" : "es");
}

// The path of a file of `dir` that a RocksDB message names ("... in /dir/000009.sst offset
// 1234 ..."), or "".
std::string FileNamedIn(std::string_view message, std::string_view dir) {
  const size_t at = message.find(dir);
  if (at == std::string_view::npos) return "";
  size_t end = at;
  while (end < message.size() && message[end] != ' ' && message[end] != ',' &&
         message[end] != ';') {
    ++end;
  }
  std::string file(message.substr(at, end - at));
  while (!file.empty() && (file.back() == '.' || file.back() == ':')) file.pop_back();
  return file.size() > dir.size() ? file : "";
}

// A RocksDB database opened read-only, with every column family.
struct ReadOnlyDb {
  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::unique_ptr<rocksdb::DB> db;

  ReadOnlyDb() = default;
  ReadOnlyDb(const ReadOnlyDb&) = delete;
  ReadOnlyDb& operator=(const ReadOnlyDb&) = delete;
  ~ReadOnlyDb() {
    if (db == nullptr) return;
    for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
    db->Close().PermitUncheckedError();
  }

  rocksdb::ColumnFamilyHandle* Find(std::string_view name) const {
    for (size_t i = 0; i < names.size() && i < handles.size(); ++i) {
      if (names[i] == name) return handles[i];
    }
    return nullptr;
  }
};

rocksdb::ColumnFamilyOptions CfOptionsFor(std::string_view name) {
  return format::IsEventsCf(name) ? format::EventsCfOptions() : format::IndexCfOptions();
}

enum class OpenMode {
  // As EventLog::Open checks at start: paranoid, damaged WAL records fail the open.
  kAsAtStart,
  // To look at everything that can still be read: damaged WAL records are dropped (and
  // reported to the logger), SST files that do not load are left to the file checks.
  kInventory,
  // The same, but the WAL is replayed only up to its first damaged record.
  kInventoryUpToWalDamage,
};

rocksdb::Status OpenReadOnly(const std::string& path, OpenMode mode,
                             std::shared_ptr<rocksdb::Logger> logger, ReadOnlyDb* out) {
  rocksdb::DBOptions options = format::LogDbOptions();
  options.info_log = std::move(logger);
  if (mode != OpenMode::kAsAtStart) {
    // Without paranoid checks the WAL replay reports damage but does not stop at it; the
    // point-in-time replay needs them to stop at the first damaged record.
    options.paranoid_checks = mode == OpenMode::kInventoryUpToWalDamage;
    options.skip_checking_sst_file_sizes_on_db_open = true;
    options.wal_recovery_mode = mode == OpenMode::kInventory
                                    ? rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords
                                    : rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  }
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(options, path, &out->names);
  if (!s.ok()) return s;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  const rocksdb::ColumnFamilyOptions events = format::EventsCfOptions();  // One block cache.
  for (const std::string& name : out->names) {
    families.emplace_back(name, format::IsEventsCf(name) ? events : format::IndexCfOptions());
  }
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::OpenForReadOnly(options, path, families, &out->handles, &raw);
  if (s.ok()) out->db.reset(raw);
  return s;
}

std::string Printable(std::string_view bytes) {
  const bool text = std::all_of(bytes.begin(), bytes.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
  });
  return text ? absl::StrCat("'", std::string(bytes), "'")
              : absl::StrCat("0x", absl::BytesToHexString(std::string(bytes)));
}

std::string DescribeEventKey(Partition p, std::string_view key) {
  Sequence s;
  if (!format::DecodeEventKey(key, &s)) {
    return absl::StrFormat("partition %u, malformed key %s", p.value(), Printable(key));
  }
  return absl::StrFormat("partition %u sequence %u", p.value(), s.value());
}

// "case/c1 version 3" for a key of the streams family.
std::string DescribeStreamKey(std::string_view key) {
  const size_t nul = key.find('\0');
  if (nul == std::string_view::npos || key.size() != nul + 9) return Printable(key);
  return absl::StrFormat("%s version %u", key.substr(0, nul),
                         format::GetBigEndian64(key.data() + nul + 1));
}

// "source position cityops.readings[3]", "checkpoint of rules in partition 2", ...
std::string DescribePositionKey(std::string_view key) {
  if (key.empty()) return Printable(key);
  const std::string_view rest = key.substr(1);
  switch (key[0]) {
    case format::kSourcePositionPrefix: {
      const size_t nul = rest.find('\0');
      if (nul == std::string_view::npos || rest.size() != nul + 5) break;
      return absl::StrFormat("source position %s[%d]", std::string(rest.substr(0, nul)),
                             static_cast<int32_t>(format::GetBigEndian32(rest.data() + nul + 1)));
    }
    case format::kCheckpointPrefix:
      if (rest.size() < 4) break;
      return absl::StrFormat("checkpoint of %s in partition %u", Printable(rest.substr(4)),
                             format::GetBigEndian32(rest.data()));
    case format::kSnapshotPrefix:
      return absl::StrCat("snapshot of ", Printable(rest));
    default:
      break;
  }
  return Printable(key);
}

std::string DescribeKey(std::string_view cf, std::string_view key) {
  if (std::optional<Partition> p = format::PartitionOfEventsCf(cf))
    return DescribeEventKey(*p, key);
  if (cf == format::kStreamsCf) return absl::StrCat("stream ", DescribeStreamKey(key));
  if (cf == format::kPositionsCf) return DescribePositionKey(key);
  return absl::StrCat("key ", Printable(key));
}

std::string DescribeRange(std::string_view cf, std::string_view smallest,
                          std::string_view largest) {
  if (smallest.empty() && largest.empty()) return "key range unknown";
  if (std::optional<Partition> p = format::PartitionOfEventsCf(cf)) {
    Sequence s1;
    Sequence s2;
    if (format::DecodeEventKey(smallest, &s1) && format::DecodeEventKey(largest, &s2)) {
      return absl::StrFormat("events of partition %u, sequences %u to %u", p->value(), s1.value(),
                             s2.value());
    }
  }
  if (cf == format::kStreamsCf) {
    return absl::StrCat("stream index from ", DescribeStreamKey(smallest), " to ",
                        DescribeStreamKey(largest));
  }
  if (cf == format::kPositionsCf) {
    return absl::StrCat("positions from ", DescribePositionKey(smallest), " to ",
                        DescribePositionKey(largest));
  }
  return absl::StrCat(std::string(cf), " keys ", Printable(smallest), " to ", Printable(largest));
}

// How far a damaged SST file can still be read, in cityops terms.
std::string ReadableExtent(rocksdb::SstFileReader& reader, std::string_view cf) {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(ro));
  uint64_t keys = 0;
  std::string last;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ++keys;
    last = it->key().ToString();
  }
  if (it->status().ok()) return "every key reads back, but the file fails its checksums";
  if (keys == 0) return "nothing in it can be read";
  return absl::StrFormat("%u keys read back, up to %s; the rest cannot be read", keys,
                         DescribeKey(cf, last));
}

class Verifier {
 public:
  explicit Verifier(const VerifyOptions& options) : options_(options) {
    report_.path = options.path;
    report_.deep = options.deep;
  }

  absl::StatusOr<VerifyReport> Run() {
    const absl::Time start = absl::Now();
    if (absl::Status s = CheckDirectory(); !s.ok()) return s;
    absl::StatusOr<int> lock = LockLogDirectory(dir_);
    if (!lock.ok()) return lock.status();
    const ScopedLogLock unlock(*lock);

    ListWalFiles();
    CheckOpenAsAtStart();
    auto logger = std::make_shared<WalDamageLogger>();
    ReadOnlyDb db;
    rocksdb::Status s = OpenReadOnly(path(), OpenMode::kInventory, logger, &db);
    for (const WalFileDamage& f : GroupWalDrops(logger->lines(), path())) AddWalDamage(f);
    if (!s.ok() && !report_.damage.empty()) {
      // Skipping every damaged WAL record left a write batch that does not decode; what
      // comes before the first damaged record still opens.
      ReadOnlyDb prefix;
      const rocksdb::Status p = OpenReadOnly(path(), OpenMode::kInventoryUpToWalDamage,
                                             std::make_shared<WalDamageLogger>(), &prefix);
      if (p.ok()) {
        std::swap(db.names, prefix.names);
        std::swap(db.handles, prefix.handles);
        std::swap(db.db, prefix.db);
        report_.note = "events after the first damaged WAL record were not read";
        s = p;
      }
    }
    if (!s.ok()) {
      // Not even what is readable can be looked at: the manifest or CURRENT is damaged.
      // The files can still be checked one by one.
      report_.note =
          absl::StrCat("events not read: the log cannot be opened for reading: ", s.ToString());
      if (report_.damage.empty()) {
        AddDamage(FileNamedIn(s.ToString(), path()),
                  absl::StrCat("the log cannot be opened for reading: ", s.ToString()),
                  "the whole log");
      }
      CheckFilesInDirectory();
    } else {
      if (absl::Status st = CheckMarker(db); !st.ok()) return st;
      CheckLiveFiles(db);
      CheckEvents(db);
      DescribeWhatTheWalLeaves();
    }
    if (!report_.opens && report_.damage.empty()) {
      AddDamage(FileNamedIn(report_.open_error, path()),
                absl::StrCat("RocksDB refuses to open the log: ", report_.open_error),
                "the whole log");
    }
    report_.elapsed = absl::Now() - start;
    return std::move(report_);
  }

 private:
  const std::string& path() const { return options_.path; }

  absl::Status CheckDirectory() {
    std::error_code ec;
    if (!fs::is_directory(dir_, ec)) {
      return absl::NotFoundError(
          absl::StrFormat("no event log at %s: %s", path(),
                          fs::exists(dir_, ec) ? "it is not a directory" : "it does not exist"));
    }
    if (fs::exists(dir_ / format::kCreatingFileName, ec)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s holds an event log whose creation was interrupted, so no log to verify (the next "
          "start of cityops creates it afresh)",
          path()));
    }
    if (!fs::exists(dir_ / "CURRENT", ec)) {
      return absl::NotFoundError(absl::StrFormat(
          "no event log at %s: it holds no RocksDB database (no CURRENT file)", path()));
    }
    std::vector<std::string> names;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path(), &names);
    if (!s.ok()) return absl::OkStatus();  // A damaged manifest: the checks below say so.
    if (std::find(names.begin(), names.end(), format::kPositionsCf) == names.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is a RocksDB database but not a cityops event log (it has no '%s' column family)",
          path(), format::kPositionsCf));
    }
    if (std::find(names.begin(), names.end(), format::kVersion1EventsCf) != names.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "event log %s is in format version 1 (all partitions in one column family), which "
          "this cityops does not verify; upgrade it with `cityops log upgrade --data-dir %s`, "
          "which reads "
          "and checks every event as it rewrites them",
          path(), path()));
    }
    return absl::OkStatus();
  }

  absl::Status CheckMarker(const ReadOnlyDb& db) {
    std::string magic;
    rocksdb::Status s =
        db.db->Get(rocksdb::ReadOptions(), db.db->DefaultColumnFamily(), format::kMagicKey, &magic);
    if (s.IsNotFound() || (s.ok() && magic != format::kMagicValue)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s is not a cityops event log (no cityops marker)", path()));
    }
    if (!s.ok()) {
      AddDamage(FileNamedIn(s.ToString(), path()),
                absl::StrCat("the log's marker cannot be read: ", s.ToString()), "meta keys");
    }
    return absl::OkStatus();
  }

  void ListWalFiles() {
    std::error_code ec;
    std::vector<std::string> wal;
    for (const fs::directory_entry& entry : fs::directory_iterator(dir_, ec)) {
      if (entry.path().extension() != ".log" || !entry.is_regular_file(ec)) continue;
      wal.push_back(entry.path().string());
      report_.wal_bytes += entry.file_size(ec);
    }
    std::sort(wal.begin(), wal.end());
    report_.wal_files = std::move(wal);
  }

  // RocksDB's open checks, as the daemon's start runs them.
  void CheckOpenAsAtStart() {
    ReadOnlyDb db;
    rocksdb::Status s =
        OpenReadOnly(path(), OpenMode::kAsAtStart, std::make_shared<WalDamageLogger>(), &db);
    if (!s.ok()) {
      report_.opens = false;
      report_.open_error = s.ToString();
    }
  }

  void AddWalDamage(const WalFileDamage& f) {
    AddDamage(f.file, absl::StrCat("a damaged WAL record: ", DescribeWalFileDamage(f)),
              "appends written since the last flush to SST files: the events in the dropped "
              "bytes are lost, and the daemon refuses to start");
  }

  void AddDamage(std::string file, std::string what, std::string range) {
    report_.damage.push_back(
        {std::move(file), std::move(what), std::move(range), std::string(kRestoreAction)});
  }

  void CheckLiveFiles(const ReadOnlyDb& db) {
    std::vector<rocksdb::LiveFileMetaData> files;
    db.db->GetLiveFilesMetaData(&files);
    std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) {
      return std::tie(a.column_family_name, a.level, a.smallestkey) <
             std::tie(b.column_family_name, b.level, b.smallestkey);
    });
    uint64_t total = 0;
    for (const rocksdb::LiveFileMetaData& f : files) total += f.size;
    if (options_.phase) options_.phase("SST files", "bytes", total);
    for (const rocksdb::LiveFileMetaData& f : files) {
      CheckedFile checked;
      checked.path = (fs::path(f.directory) / f.relative_filename).string();
      checked.column_family = f.column_family_name;
      checked.level = f.level;
      checked.bytes = f.size;
      checked.entries = f.num_entries;
      checked.range = DescribeRange(f.column_family_name, f.smallestkey, f.largestkey);
      CheckFile(checked);
      if (options_.advance) options_.advance(f.size);
    }
  }

  // Without the manifest: every SST file in the directory, its family unknown.
  void CheckFilesInDirectory() {
    std::error_code ec;
    std::vector<CheckedFile> files;
    uint64_t total = 0;
    for (const fs::directory_entry& entry : fs::directory_iterator(dir_, ec)) {
      if (entry.path().extension() != ".sst") continue;
      CheckedFile f;
      f.path = entry.path().string();
      f.bytes = entry.file_size(ec);
      f.column_family = "unknown";
      f.level = -1;
      f.range = "key range unknown (the manifest cannot be read)";
      total += f.bytes;
      files.push_back(std::move(f));
    }
    std::sort(files.begin(), files.end(),
              [](const CheckedFile& a, const CheckedFile& b) { return a.path < b.path; });
    if (options_.phase) options_.phase("SST files", "bytes", total);
    for (CheckedFile& f : files) {
      CheckFile(f);
      if (options_.advance) options_.advance(f.bytes);
    }
  }

  void CheckFile(CheckedFile& f) {
    rocksdb::Options options(format::LogDbOptions(), CfOptionsFor(f.column_family));
    options.info_log = std::make_shared<WalDamageLogger>();  // Nothing written to LOG.
    rocksdb::SstFileReader reader(options);
    std::error_code ec;
    const uint64_t actual = fs::file_size(f.path, ec);
    std::string size_note;
    if (ec) {
      size_note = absl::StrCat(" (the file is missing: ", ec.message(), ")");
    } else if (f.level >= 0 && actual != f.bytes) {
      size_note = absl::StrFormat(" (the file has %u bytes, the manifest records %u%s)", actual,
                                  f.bytes, actual < f.bytes ? ": it was cut short" : "");
    }
    rocksdb::Status s = reader.Open(f.path);
    const bool opened = s.ok();
    if (s.ok()) s = reader.VerifyChecksum();
    if (s.ok() && size_note.empty()) {
      report_.sst_files.push_back(f);
      return;
    }
    f.whole = false;
    std::string what =
        absl::StrFormat("SST file of the '%s' family%s fails its check: %s%s", f.column_family,
                        f.level >= 0 ? absl::StrFormat(" (level %d)", f.level) : std::string(),
                        s.ok() ? std::string("its size does not match") : s.ToString(), size_note);
    std::string range = absl::StrCat(f.range, "; ",
                                     opened ? ReadableExtent(reader, f.column_family)
                                            : std::string("the file cannot be opened"));
    report_.sst_files.push_back(f);
    AddDamage(f.path, std::move(what), std::move(range));
  }

  // The log's own invariants: every partition's sequences dense from 0 and, deep, every
  // event parses.
  void CheckEvents(const ReadOnlyDb& db) {
    std::vector<std::pair<Partition, rocksdb::ColumnFamilyHandle*>> families;
    for (size_t i = 0; i < db.names.size() && i < db.handles.size(); ++i) {
      if (std::optional<Partition> p = format::PartitionOfEventsCf(db.names[i])) {
        families.emplace_back(*p, db.handles[i]);
      }
    }
    std::sort(families.begin(), families.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    if (options_.phase) options_.phase("events", "events", 0);
    int errors = 0;
    for (const auto& [p, handle] : families) {
      if (!CheckPartition(db, p, handle, &errors)) {
        AddDamage("", "the events scan stopped: too many unreadable stretches",
                  "the rest of the events");
        break;
      }
    }
    if (pending_ > 0 && options_.advance) options_.advance(pending_);
    pending_ = 0;
  }

  // One partition's events family. False once `*errors` reaches the limit.
  bool CheckPartition(const ReadOnlyDb& db, Partition p, rocksdb::ColumnFamilyHandle* handle,
                      int* errors) {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    ro.fill_cache = false;
    ro.readahead_size = 4 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator(ro, handle));
    bool have = false;  // Some event of the partition was read.
    uint64_t expected = 0;
    v1::Event event;
    it->SeekToFirst();
    if (!it->Valid() && it->status().ok()) return true;  // Created, but no event stored.
    ++report_.partitions;
    for (; it->Valid(); it->Next()) {
      Sequence seq;
      const std::string_view key = it->key().ToStringView();
      const std::string where =
          have ? absl::StrFormat("after partition %u sequence %u", p.value(), expected - 1)
               : absl::StrFormat("before any event of partition %u", p.value());
      if (!format::DecodeEventKey(key, &seq)) {
        AddDamage("", absl::StrCat("a malformed event key: ", Printable(key)), where);
        continue;
      }
      if (seq.value() != expected) {
        AddDamage("", "a gap in the sequences: events are missing",
                  absl::StrFormat("partition %u, sequences %u to %u", p.value(), expected,
                                  seq.value() - 1));
      }
      have = true;
      expected = seq.value() + 1;
      if (ends_.empty() || ends_.back().first != p.value()) ends_.emplace_back(p.value(), 0);
      ends_.back().second = seq.value();
      ++report_.events;
      if (options_.deep) {
        const std::string_view value = it->value().ToStringView();
        if (absl::Status st = EventLog::ParseEvent({p, seq}, value, &event); !st.ok()) {
          AddDamage("", std::string(st.message()),
                    absl::StrFormat("partition %u sequence %u", p.value(), seq.value()));
        } else {
          ++report_.parsed;
        }
      }
      if (++pending_ == 65536 && options_.advance) {
        options_.advance(pending_);
        pending_ = 0;
      }
    }
    if (!it->status().ok()) {
      // What follows in this partition cannot be reached; the next one is read on.
      ReportUnreadable(
          have ? absl::StrFormat("after partition %u sequence %u", p.value(), expected - 1)
               : absl::StrFormat("before any event of partition %u", p.value()),
          it->status().ToString());
      return ++*errors < 16;
    }
    return true;
  }

  // Where each partition ends in what could be read: with damaged WAL records, what the
  // log would hold if it were cut at them.
  void DescribeWhatTheWalLeaves() {
    std::string ends;
    for (const auto& [p, last] : ends_) {
      absl::StrAppend(&ends, ends.empty() ? "" : ", ",
                      absl::StrFormat("partition %u up to sequence %u", p, last));
    }
    if (ends.empty()) ends = "no events";
    for (Damage& d : report_.damage) {
      if (!d.file.ends_with(".log")) continue;
      absl::StrAppend(&d.range, "; what reads back: ", ends);
    }
  }

  // An unreadable stretch of the events family. When RocksDB names an SST file already
  // reported damaged, this adds where reading stops to that file's line.
  void ReportUnreadable(const std::string& where, const std::string& message) {
    const std::string file = FileNamedIn(message, path());
    for (Damage& d : report_.damage) {
      if (!file.empty() && d.file == file) {
        absl::StrAppend(&d.range, "; reading the log's events stops ", where);
        return;
      }
    }
    AddDamage(file, absl::StrCat("events cannot be read: ", message),
              absl::StrCat("events ", where));
  }

  const VerifyOptions& options_;
  const fs::path dir_{options_.path};
  VerifyReport report_;
  std::vector<std::pair<uint32_t, uint64_t>> ends_;  // Partition, last sequence read.
  uint64_t pending_ = 0;  // Events read and not yet reported to options_.advance.
};

}  // namespace

absl::StatusOr<VerifyReport> VerifyLog(const VerifyOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("no data directory given to verify");
  }
  return Verifier(options).Run();
}

std::vector<std::string> DescribeWalDamage(const std::string& path) {
  auto logger = std::make_shared<WalDamageLogger>();
  {
    ReadOnlyDb db;
    OpenReadOnly(path, OpenMode::kInventory, logger, &db).PermitUncheckedError();
  }
  std::vector<std::string> out;
  for (const WalFileDamage& f : GroupWalDrops(logger->lines(), path)) {
    out.push_back(absl::StrCat(f.file, ": ", DescribeWalFileDamage(f)));
  }
  return out;
}

}  // namespace cityops::kernel
