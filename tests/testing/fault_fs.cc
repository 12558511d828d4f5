#include "tests/testing/fault_fs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>
#include <vector>

namespace cityops::testing {
namespace {

namespace fs = std::filesystem;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;

std::string Normal(const std::string& path) {
  std::string p = fs::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string DirOf(const std::string& file) { return Normal(fs::path(file).parent_path()); }

std::optional<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file written through the fault file system: every write and sync is admitted and
// recorded by it.
class FaultWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(FaultFileSystem* fs, std::string fname, uint64_t size,
                    std::unique_ptr<rocksdb::FSWritableFile> target)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        fname_(std::move(fname)),
        size_(size) {}

  IOStatus Append(const rocksdb::Slice& data, const IOOptions& options,
                  IODebugContext* dbg) override {
    uint64_t allowed = 0;
    IOStatus admitted = fs_->AdmitWrite(fname_, data.size(), &allowed);
    if (allowed > 0) {
      IOStatus s = target()->Append(rocksdb::Slice(data.data(), allowed), options, dbg);
      if (!s.ok()) return s;
      size_ += allowed;
      fs_->Written(fname_, size_);
    }
    return admitted;
  }
  IOStatus Append(const rocksdb::Slice& data, const IOOptions& options,
                  const rocksdb::DataVerificationInfo&, IODebugContext* dbg) override {
    return Append(data, options, dbg);
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const IOOptions& options,
                            IODebugContext* dbg) override {
    uint64_t allowed = 0;
    IOStatus admitted = fs_->AdmitWrite(fname_, data.size(), &allowed);
    if (allowed > 0) {
      IOStatus s =
          target()->PositionedAppend(rocksdb::Slice(data.data(), allowed), offset, options, dbg);
      if (!s.ok()) return s;
      size_ = std::max(size_, offset + allowed);
      fs_->Written(fname_, size_);
    }
    return admitted;
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const IOOptions& options,
                            const rocksdb::DataVerificationInfo&, IODebugContext* dbg) override {
    return PositionedAppend(data, offset, options, dbg);
  }
  IOStatus Truncate(uint64_t size, const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->PowerCheck("truncate"); !s.ok()) return s;
    IOStatus s = target()->Truncate(size, options, dbg);
    if (s.ok()) {
      size_ = size;
      fs_->Written(fname_, size_);
    }
    return s;
  }
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->AdmitSync(); !s.ok()) return s;
    IOStatus s = target()->Sync(options, dbg);
    if (s.ok()) fs_->Synced(fname_, size_);
    return s;
  }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->AdmitSync(); !s.ok()) return s;
    IOStatus s = target()->Fsync(options, dbg);
    if (s.ok()) fs_->Synced(fname_, size_);
    return s;
  }
  IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& options,
                     IODebugContext* dbg) override {
    // sync_file_range: starts writeback, promises nothing about a power loss.
    if (IOStatus s = fs_->PowerCheck("range sync"); !s.ok()) return s;
    return target()->RangeSync(offset, nbytes, options, dbg);
  }

 private:
  FaultFileSystem* const fs_;
  const std::string fname_;
  uint64_t size_;
};

class FaultDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  FaultDirectory(FaultFileSystem* fs, std::string name,
                 std::unique_ptr<rocksdb::FSDirectory> target)
      : FSDirectoryWrapper(std::move(target)), fs_(fs), name_(std::move(name)) {}

  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    if (IOStatus s = fs_->AdmitSync(); !s.ok()) return s;
    IOStatus s = FSDirectoryWrapper::Fsync(options, dbg);
    if (s.ok()) fs_->DirectorySynced(name_);
    return s;
  }
  IOStatus FsyncWithDirOptions(const IOOptions& options, IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& dir_options) override {
    if (IOStatus s = fs_->AdmitSync(); !s.ok()) return s;
    IOStatus s = FSDirectoryWrapper::FsyncWithDirOptions(options, dbg, dir_options);
    if (s.ok()) fs_->DirectorySynced(name_);
    return s;
  }

 private:
  FaultFileSystem* const fs_;
  const std::string name_;
};

}  // namespace

FaultFileSystem::FaultFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

void FaultFileSystem::FillAfter(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  space_left_ = bytes;
  hit_full_ = false;
}

void FaultFileSystem::FreeSpace() {
  absl::MutexLock lock(&mu_);
  space_left_.reset();
}

bool FaultFileSystem::HitFull() const {
  absl::MutexLock lock(&mu_);
  return hit_full_;
}

uint64_t FaultFileSystem::BytesWritten() const {
  absl::MutexLock lock(&mu_);
  return bytes_written_;
}

void FaultFileSystem::CutPower() {
  absl::MutexLock lock(&mu_);
  power_off_ = true;
  power_left_.reset();
}

void FaultFileSystem::CutPowerAfter(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  power_left_ = bytes;
}

bool FaultFileSystem::PowerIsOff() const {
  absl::MutexLock lock(&mu_);
  return power_off_;
}

IOStatus FaultFileSystem::PowerCheck(const char* what) const {
  absl::MutexLock lock(&mu_);
  if (power_off_) return IOStatus::IOError("fault file system: the power is off, no ", what);
  return IOStatus::OK();
}

IOStatus FaultFileSystem::AdmitWrite(const std::string& fname, uint64_t size, uint64_t* allowed) {
  absl::MutexLock lock(&mu_);
  *allowed = 0;
  if (power_off_)
    return IOStatus::IOError("fault file system: the power is off, no write to ", fname);
  uint64_t n = size;
  IOStatus s;
  if (power_left_.has_value()) {
    if (size > *power_left_) {
      n = *power_left_;
      power_off_ = true;
      power_left_.reset();
      s = IOStatus::IOError("fault file system: the power went off while writing ", fname);
    } else {
      *power_left_ -= size;
    }
  }
  if (space_left_.has_value()) {
    if (n > *space_left_) {
      n = *space_left_;
      hit_full_ = true;
      if (s.ok()) s = IOStatus::NoSpace("fault file system: no space left for ", fname);
    }
    *space_left_ -= n;
  }
  *allowed = n;
  bytes_written_ += n;
  return s;
}

void FaultFileSystem::Written(const std::string& fname, uint64_t new_size) {
  absl::MutexLock lock(&mu_);
  FileState& f = files_[Normal(fname)];
  f.size = new_size;
  f.synced = std::min(f.synced, new_size);
}

IOStatus FaultFileSystem::AdmitSync() { return PowerCheck("sync"); }

void FaultFileSystem::Synced(const std::string& fname, uint64_t size) {
  absl::MutexLock lock(&mu_);
  FileState& f = files_[Normal(fname)];
  f.synced = std::max(f.synced, std::min(size, f.size));
}

void FaultFileSystem::DirectorySynced(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  const std::string d = Normal(dir);
  for (auto it = pending_.begin(); it != pending_.end();) {
    it = DirOf(it->first) == d ? pending_.erase(it) : std::next(it);
  }
}

void FaultFileSystem::TrackCreated(const std::string& fname) {
  const std::string name = Normal(fname);
  files_[name] = FileState{};
  if (!pending_.contains(name)) {
    // A file made anew under a name that existed: the old content is what a power loss
    // leaves (until the directory is synced).
    pending_[name] = PendingName{fs::exists(name) ? ReadWhole(name) : std::nullopt};
  }
}

IOStatus FaultFileSystem::NewWritableFile(const std::string& fname,
                                          const rocksdb::FileOptions& options,
                                          std::unique_ptr<rocksdb::FSWritableFile>* result,
                                          IODebugContext* dbg) {
  absl::MutexLock lock(&mu_);
  if (power_off_)
    return IOStatus::IOError("fault file system: the power is off, no create of ", fname);
  TrackCreated(fname);
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->NewWritableFile(fname, options, &file, dbg);
  if (!s.ok()) return s;
  *result = std::make_unique<FaultWritableFile>(this, fname, 0, std::move(file));
  return s;
}

IOStatus FaultFileSystem::ReopenWritableFile(const std::string& fname,
                                             const rocksdb::FileOptions& options,
                                             std::unique_ptr<rocksdb::FSWritableFile>* result,
                                             IODebugContext* dbg) {
  uint64_t size = 0;
  {
    absl::MutexLock lock(&mu_);
    if (power_off_)
      return IOStatus::IOError("fault file system: the power is off, no open of ", fname);
    std::error_code ec;
    const uint64_t on_disk = fs::exists(fname, ec) ? fs::file_size(fname, ec) : 0;
    auto [it, added] = files_.try_emplace(Normal(fname));
    if (added) it->second = FileState{on_disk, on_disk};  // Was there before: durable.
    size = on_disk;
  }
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->ReopenWritableFile(fname, options, &file, dbg);
  if (!s.ok()) return s;
  *result = std::make_unique<FaultWritableFile>(this, fname, size, std::move(file));
  return s;
}

IOStatus FaultFileSystem::ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                            const rocksdb::FileOptions& options,
                                            std::unique_ptr<rocksdb::FSWritableFile>* result,
                                            IODebugContext* dbg) {
  {
    absl::MutexLock lock(&mu_);
    if (power_off_)
      return IOStatus::IOError("fault file system: the power is off, no reuse of ", old_fname);
    files_.erase(Normal(old_fname));
    pending_.erase(Normal(old_fname));
    TrackCreated(fname);
  }
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->ReuseWritableFile(fname, old_fname, options, &file, dbg);
  if (!s.ok()) return s;
  *result = std::make_unique<FaultWritableFile>(this, fname, 0, std::move(file));
  return s;
}

IOStatus FaultFileSystem::NewDirectory(const std::string& name, const IOOptions& options,
                                       std::unique_ptr<rocksdb::FSDirectory>* result,
                                       IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> dir;
  IOStatus s = target()->NewDirectory(name, options, &dir, dbg);
  if (!s.ok()) return s;
  *result = std::make_unique<FaultDirectory>(this, name, std::move(dir));
  return s;
}

IOStatus FaultFileSystem::DeleteFile(const std::string& fname, const IOOptions& options,
                                     IODebugContext* dbg) {
  if (IOStatus s = PowerCheck("delete"); !s.ok()) return s;
  IOStatus s = target()->DeleteFile(fname, options, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    files_.erase(Normal(fname));
    pending_.erase(Normal(fname));
  }
  return s;
}

IOStatus FaultFileSystem::RenameFile(const std::string& src, const std::string& target_name,
                                     const IOOptions& options, IODebugContext* dbg) {
  absl::MutexLock lock(&mu_);
  if (power_off_)
    return IOStatus::IOError("fault file system: the power is off, no rename of ", src);
  const std::string from = Normal(src);
  const std::string to = Normal(target_name);
  // What a power loss before the next directory sync brings back under `to`.
  PendingName undo;
  if (auto it = pending_.find(to); it != pending_.end()) {
    undo = it->second;
  } else if (fs::exists(to)) {
    undo.previous = ReadWhole(to);
  }
  IOStatus s = target()->RenameFile(src, target_name, options, dbg);
  if (!s.ok()) return s;
  pending_.erase(from);
  pending_[to] = std::move(undo);
  if (auto it = files_.find(from); it != files_.end()) {
    files_[to] = it->second;
    files_.erase(from);
  } else {
    files_.erase(to);  // Untracked content: durable as far as this file system knows.
  }
  return s;
}

IOStatus FaultFileSystem::LinkFile(const std::string& src, const std::string& target_name,
                                   const IOOptions& options, IODebugContext* dbg) {
  if (IOStatus s = PowerCheck("link"); !s.ok()) return s;
  return target()->LinkFile(src, target_name, options, dbg);
}

IOStatus FaultFileSystem::GetFreeSpace(const std::string& path, const IOOptions& options,
                                       uint64_t* free, IODebugContext* dbg) {
  {
    absl::MutexLock lock(&mu_);
    if (space_left_.has_value()) {
      *free = *space_left_;
      return IOStatus::OK();
    }
  }
  return target()->GetFreeSpace(path, options, free, dbg);
}

IOStatus FaultFileSystem::RestorePower() {
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  for (const auto& [name, state] : files_) {
    if (!fs::exists(name, ec)) continue;
    if (fs::file_size(name, ec) > state.synced) fs::resize_file(name, state.synced, ec);
    if (ec) return IOStatus::IOError("fault file system: cannot cut back ", name);
  }
  for (const auto& [name, pending] : pending_) {
    if (pending.previous.has_value()) {
      std::ofstream out(name, std::ios::binary | std::ios::trunc);
      out << *pending.previous;
      if (!out) return IOStatus::IOError("fault file system: cannot restore ", name);
    } else {
      fs::remove(name, ec);
    }
  }
  files_.clear();
  pending_.clear();
  power_off_ = false;
  power_left_.reset();
  return IOStatus::OK();
}

}  // namespace cityops::testing
