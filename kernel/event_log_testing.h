// Test hooks of the event log: what a test may inject that production never does. Only
// tests include this header (it brings in RocksDB's types, which event_log.h keeps out).
//
//   kernel::EventLogOptions options{.path = dir};
//   kernel::testing::UseFileSystem(options, fault_fs);  // A rocksdb::FileSystemWrapper.
#ifndef CITYOPS_KERNEL_EVENT_LOG_TESTING_H_
#define CITYOPS_KERNEL_EVENT_LOG_TESTING_H_

#include <memory>
#include <utility>

#include "kernel/event_log.h"
#include "rocksdb/file_system.h"

namespace cityops::kernel {

struct EventLogTestHooks {
  // The file system RocksDB writes and reads the log's files with (through an Env made
  // with rocksdb::NewCompositeEnv). Null: the default one. cityops' own lock and creation
  // marker files are written with POSIX calls all the same.
  std::shared_ptr<rocksdb::FileSystem> file_system;
};

namespace testing {

// Makes the log opened with `options` use `fs` for all of RocksDB's files.
inline void UseFileSystem(EventLogOptions& options, std::shared_ptr<rocksdb::FileSystem> fs) {
  if (options.testing == nullptr) options.testing = std::make_shared<EventLogTestHooks>();
  options.testing->file_system = std::move(fs);
}

}  // namespace testing
}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_EVENT_LOG_TESTING_H_
