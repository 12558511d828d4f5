// The log directory's advisory lock (`cityops.lock`, see LOG_FORMAT.md). Private to
// kernel/: `EventLog::Open` holds it for the life of the log, and `VerifyLog` holds it
// while it reads, so that neither works on a log another process has open.
#ifndef CITYOPS_KERNEL_LOG_LOCK_H_
#define CITYOPS_KERNEL_LOG_LOCK_H_

#include <filesystem>

#include "absl/status/statusor.h"

namespace cityops::kernel {

// Takes the lock of `dir` (creating the lock file, writing this process's pid into it)
// and returns its file descriptor; closing the descriptor releases the lock.
// FAILED_PRECONDITION, naming the holder's pid ("... is in use by process N ..."), when
// another process or handle holds it.
absl::StatusOr<int> LockLogDirectory(const std::filesystem::path& dir);

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_LOG_LOCK_H_
