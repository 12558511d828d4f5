#include "kernel/rocks_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cityops::kernel {

absl::Status FromRocks(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrFormat("%s: %s", context, s.ToString());
  if (s.IsCorruption()) {
    return absl::DataLossError(
        absl::StrCat(message, " (the log is damaged; restore it from a backup)"));
  }
  if (s.IsNoSpace()) {
    // UNAVAILABLE, not RESOURCE_EXHAUSTED: nothing the caller sent is too much, the disk
    // is, and the write succeeds as it is once there is room (the API answers 503).
    return absl::UnavailableError(
        absl::StrCat("disk full: ", message,
                     "; free space on the disk that holds the event log (or give it a larger one): "
                     "writes resume by themselves once there is room"));
  }
  if (s.IsIOError()) return absl::UnavailableError(message);
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

}  // namespace cityops::kernel
