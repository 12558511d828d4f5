// Opening the log an analyst's tool reads: an existing log (never a new one), with its
// lock, and messages that say how to get a copy when a daemon holds it.
#ifndef CITYOPS_ANALYSIS_OPEN_LOG_H_
#define CITYOPS_ANALYSIS_OPEN_LOG_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernel/event_log.h"

namespace cityops::analysis {

// Opens the existing log at `data_dir` for `command` ("export", "lineage"). NOT_FOUND
// when there is none (naming the directory); FAILED_PRECONDITION when another process or
// handle holds it, with the kernel's message and how to work on a backup instead; the
// kernel's other refusals as they are.
// `flag` names the option that gave the directory, for the message.
absl::StatusOr<std::unique_ptr<kernel::EventLog>> OpenLogToRead(
    const std::string& data_dir, const std::string& command,
    const std::string& flag = "--data-dir");

// The kernel's refusal of a log that another process holds (FAILED_PRECONDITION, "... in
// use ..."), with how `command` can work on a copy instead; any other status as it is.
// OpenLogToRead words its refusals with it, and so do commands that take the log's lock
// without opening it (`cityops log verify`).
absl::Status ExplainLogInUse(const absl::Status& status, const std::string& data_dir,
                             const std::string& command, const std::string& flag = "--data-dir");

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_OPEN_LOG_H_
