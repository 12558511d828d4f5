// A RocksDB file system for tests that can run out of space and lose power.
//
//   auto fs = std::make_shared<testing::FaultFileSystem>();
//   kernel::EventLogOptions options{.path = dir};
//   kernel::testing::UseFileSystem(options, fs);     // kernel/event_log_testing.h
//
// It wraps the default (POSIX) file system and passes everything through, except:
//
//   * Disk full. `FillAfter(n)` lets `n` more bytes be written into files, then every
//     write fails with NoSpace: the write that crosses the limit stores the part that
//     fits and fails, as write(2) does on a full disk. `GetFreeSpace` reports what is
//     left. `FreeSpace()` lifts the limit ("space returns").
//
//   * Power loss. The file system tracks, for every file written through it, how much of
//     it was synced (`Sync`/`Fsync`; `RangeSync` is sync_file_range and does not count),
//     and which names were created or renamed since their directory was last synced.
//     `CutPower()` makes every later write, sync, create, rename and delete fail (the
//     process is "dead": the test then closes the log, as the kernel would vanish), and
//     `RestorePower()` leaves the files as a power loss would: each written file cut back
//     to its synced size, each name created since its directory's last sync removed, and
//     each rename since then undone (the old target's content comes back). `CutPowerAfter(n)`
//     cuts it in the middle of the write that takes the n-th byte from now.
//
// Simplifications, all on the side of losing more: unsynced data is dropped whole (a real
// disk may keep some of it, or keep later pages and not earlier ones; the log's WAL
// recovery mode decides what it accepts then), and a file's size counts as synced only
// with its data. Deleted names do not come back. Files the test did not write through
// this file system (e.g. cityops' own lock and marker files, written with POSIX calls)
// are left alone.
//
// The model is that of leveldb's and RocksDB's fault-injection file systems; this one is
// written from their behaviour, not their code. Thread-safe.
#ifndef CITYOPS_TESTS_TESTING_FAULT_FS_H_
#define CITYOPS_TESTS_TESTING_FAULT_FS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"

namespace cityops::testing {

class FaultFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FaultFileSystem();
  static const char* kClassName() { return "CityopsFaultFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // --- Disk full.
  // From now on, `bytes` more bytes fit; then writes fail with NoSpace.
  void FillAfter(uint64_t bytes);
  // Space returns: no limit.
  void FreeSpace();
  // Whether a write failed for lack of space since the last FillAfter.
  bool HitFull() const;
  // Bytes written into files through this file system, in all.
  uint64_t BytesWritten() const;

  // --- Power loss.
  // The power goes off now: every later mutation fails with an IOError.
  void CutPower();
  // The power goes off in the write that takes the `bytes`-th byte from now (that write
  // stores what precedes the cut and fails).
  void CutPowerAfter(uint64_t bytes);
  bool PowerIsOff() const;
  // Leaves the files as a power loss does (see above) and turns the power back on. Call
  // only after everything that had files open (the log) is closed.
  rocksdb::IOStatus RestorePower();

  // --- Wrapped calls.
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& target,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus GetFreeSpace(const std::string& path, const rocksdb::IOOptions& options,
                                 uint64_t* free, rocksdb::IODebugContext* dbg) override;

  // Called by the wrapped files and directories.
  // Admits a write of `size` bytes to `fname`: how many of them may be written (all,
  // some, none) and the error to return after writing them (OK if all).
  rocksdb::IOStatus AdmitWrite(const std::string& fname, uint64_t size, uint64_t* allowed);
  void Written(const std::string& fname, uint64_t new_size);
  rocksdb::IOStatus AdmitSync();
  void Synced(const std::string& fname, uint64_t size);
  void DirectorySynced(const std::string& dir);
  rocksdb::IOStatus PowerCheck(const char* what) const;

 private:
  struct FileState {
    uint64_t size = 0;    // Written through this file system.
    uint64_t synced = 0;  // Of it, synced.
  };
  // A name made since its directory's last sync; `previous` is the content a rename
  // replaced, restored on power loss (nullopt: the name did not exist before).
  struct PendingName {
    std::optional<std::string> previous;
  };
  void TrackCreated(const std::string& fname) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::optional<uint64_t> space_left_ ABSL_GUARDED_BY(mu_);
  bool hit_full_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t bytes_written_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<uint64_t> power_left_ ABSL_GUARDED_BY(mu_);
  bool power_off_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, PendingName> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_FAULT_FS_H_
