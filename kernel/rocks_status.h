// RocksDB statuses as absl ones. Private to kernel/.
#ifndef CITYOPS_KERNEL_ROCKS_STATUS_H_
#define CITYOPS_KERNEL_ROCKS_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/status.h"

namespace cityops::kernel {

// Maps a RocksDB failure onto a canonical code, naming what was being done (`context`):
// corruption is DATA_LOSS (restore from a backup), no space is UNAVAILABLE "disk full:
// ...", other I/O errors UNAVAILABLE. OK for an OK status.
absl::Status FromRocks(const rocksdb::Status& s, std::string_view context);

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_ROCKS_STATUS_H_
