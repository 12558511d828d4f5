// The log directory's advisory lock (`cityops.lock`, see LOG_FORMAT.md). Private to
// kernel/: `EventLog::Open` holds it for the life of the log, and `VerifyLog` and
// `UpgradeLog` hold it while they run, so that neither works on a log another process has open.
#ifndef CITYOPS_KERNEL_LOG_LOCK_H_
#define CITYOPS_KERNEL_LOG_LOCK_H_

#include <unistd.h>

#include <filesystem>

#include "absl/status/statusor.h"

namespace cityops::kernel {

// Takes the lock of `dir` (creating the lock file, writing this process's pid into it)
// and returns its file descriptor; closing the descriptor releases the lock.
// FAILED_PRECONDITION, naming the holder's pid ("... is in use by process N ..."), when
// another process or handle holds it.
absl::StatusOr<int> LockLogDirectory(const std::filesystem::path& dir);

// Holds a lock taken with LockLogDirectory for the life of a scope: `VerifyLog` and
// `UpgradeLog` hold it while they run.
class ScopedLogLock {
 public:
  explicit ScopedLogLock(int fd) : fd_(fd) {}
  ~ScopedLogLock() { ::close(fd_); }
  ScopedLogLock(const ScopedLogLock&) = delete;
  ScopedLogLock& operator=(const ScopedLogLock&) = delete;

 private:
  int fd_;
};

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_LOG_LOCK_H_
