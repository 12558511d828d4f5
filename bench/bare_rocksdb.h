// Bare RocksDB opened with exactly the event log's options and column families (meta and
// events), for the benches' "no cityops code" side. Only configuration comes from
// kernel/log_format.h; reads and writes go straight to RocksDB.
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
        {rocksdb::kDefaultColumnFamilyName, kernel::format::IndexCfOptions()},
        {std::string(kernel::format::kEventsCf), kernel::format::EventsCfOptions()}};
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, path, families, &handles_, &db);
    if (!s.ok()) throw std::runtime_error("bare RocksDB at " + path + ": " + s.ToString());
    db_.reset(db);
    write_options_.sync = durability == kernel::Durability::kSyncEachAppend;
    write_options_.disableWAL = durability == kernel::Durability::kUnlogged;
  }
  ~BareRocksDb() {
    for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
  }
  BareRocksDb(const BareRocksDb&) = delete;
  BareRocksDb& operator=(const BareRocksDb&) = delete;

  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() const { return handles_[0]; }
  rocksdb::ColumnFamilyHandle* events() const { return handles_[1]; }

  // Writes the memtables out and waits, as EventLog::Flush does (an unlogged log's last step).
  void Flush() {
    rocksdb::FlushOptions flush;
    flush.wait = true;
    rocksdb::Status s = db_->Flush(flush, handles_);
    if (!s.ok()) throw std::runtime_error("bare RocksDB flush: " + s.ToString());
  }

  void Write(rocksdb::WriteBatch* batch) {
    rocksdb::Status s = db_->Write(write_options_, batch);
    if (!s.ok()) throw std::runtime_error("bare RocksDB write: " + s.ToString());
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::WriteOptions write_options_;
};

}  // namespace cityops::bench

#endif  // CITYOPS_BENCH_BARE_ROCKSDB_H_
