// Bare RocksDB opened with exactly the event log's options and layout (a meta family and
// an events family per partition, sharing one block cache), for the benches' "no cityops
// code" side. Only configuration and names come from kernel/log_format.h; reads and writes
// go straight to RocksDB.
#ifndef CITYOPS_BENCH_BARE_ROCKSDB_H_
#define CITYOPS_BENCH_BARE_ROCKSDB_H_

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel/event_log.h"
#include "kernel/log_format.h"
#include "rocksdb/db.h"

namespace cityops::bench {

class BareRocksDb {
 public:
  // Creates the database at `path`, writing with the event log's settings for
  // `durability`: fsync every write, WAL unsynced, or no WAL at all.
  BareRocksDb(const std::string& path, kernel::Durability durability) {
    rocksdb::DBOptions options = kernel::format::LogDbOptions();
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    const std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, kernel::format::IndexCfOptions()}};
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, path, families, &handles_, &db);
    if (!s.ok()) throw std::runtime_error("bare RocksDB at " + path + ": " + s.ToString());
    db_.reset(db);
    write_options_.sync = durability == kernel::Durability::kSyncEachAppend;
    write_options_.disableWAL = durability == kernel::Durability::kUnlogged;
  }
  ~BareRocksDb() {
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h);
    }
  }
  BareRocksDb(const BareRocksDb&) = delete;
  BareRocksDb& operator=(const BareRocksDb&) = delete;

  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() const { return handles_[0]; }
  // The events family of `partition`, created at its first use, as the log does. Not
  // thread-safe.
  rocksdb::ColumnFamilyHandle* events(kernel::Partition partition) {
    const size_t i = partition.value() + 1;
    if (i >= handles_.size()) handles_.resize(i + 1, nullptr);
    if (handles_[i] == nullptr) {
      rocksdb::Status s = db_->CreateColumnFamily(
          events_options_, kernel::format::EventsCfName(partition), &handles_[i]);
      if (!s.ok()) throw std::runtime_error("bare RocksDB family: " + s.ToString());
    }
    return handles_[i];
  }
  // Every events family created so far, in partition order.
  std::vector<rocksdb::ColumnFamilyHandle*> events_families() const {
    std::vector<rocksdb::ColumnFamilyHandle*> out;
    for (size_t i = 1; i < handles_.size(); ++i) {
      if (handles_[i] != nullptr) out.push_back(handles_[i]);
    }
    return out;
  }

  // Writes the memtables out and waits, as EventLog::Flush does (an unlogged log's last step).
  void Flush() {
    rocksdb::FlushOptions flush;
    flush.wait = true;
    std::vector<rocksdb::ColumnFamilyHandle*> all = events_families();
    all.push_back(meta());
    rocksdb::Status s = db_->Flush(flush, all);
    if (!s.ok()) throw std::runtime_error("bare RocksDB flush: " + s.ToString());
  }

  void Write(rocksdb::WriteBatch* batch) {
    rocksdb::Status s = db_->Write(write_options_, batch);
    if (!s.ok()) throw std::runtime_error("bare RocksDB write: " + s.ToString());
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  // The meta family, then the events family of partition p at p + 1 (null until used).
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyOptions events_options_ = kernel::format::EventsCfOptions();
  rocksdb::WriteOptions write_options_;
};

}  // namespace cityops::bench

#endif  // CITYOPS_BENCH_BARE_ROCKSDB_H_
