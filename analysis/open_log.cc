#include "analysis/open_log.h"

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace cityops::analysis {

absl::StatusOr<std::unique_ptr<kernel::EventLog>> OpenLogToRead(const std::string& data_dir,
                                                                const std::string& command,
                                                                const std::string& flag) {
  kernel::EventLogOptions options;
  options.path = data_dir;
  options.create_if_missing = false;
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log = kernel::EventLog::Open(options);
  if (absl::IsNotFound(log.status())) {
    std::error_code ec;
    const bool exists = std::filesystem::exists(data_dir, ec);
    return absl::NotFoundError(absl::StrFormat(
        "no event log at %s: the directory %s; check %s (cityops %s reads an existing log, or "
        "a copy made by 'cityops log backup')",
        data_dir, exists ? "is empty" : "does not exist", flag, command));
  }
  if (!log.ok()) return ExplainLogInUse(log.status(), data_dir, command, flag);
  return log;
}

absl::Status ExplainLogInUse(const absl::Status& status, const std::string& data_dir,
                             const std::string& command, const std::string& flag) {
  if (absl::IsFailedPrecondition(status) && absl::StrContains(status.message(), "in use")) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s; cityops %s works on a copy of a running daemon's log: make one with 'cityops log "
        "backup --data-dir %s --to COPY' (or POST /api/v1/backups) and give %s COPY",
        status.message(), command, data_dir, flag));
  }
  return status;
}

}  // namespace cityops::analysis
