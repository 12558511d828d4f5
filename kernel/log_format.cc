#include "kernel/log_format.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"

namespace cityops::kernel::format {

void PutBigEndian32(uint32_t v, char* out) {
  for (int i = 3; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

void PutBigEndian64(uint64_t v, char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

uint32_t GetBigEndian32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

uint64_t GetBigEndian64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

std::string EventsCfName(Partition partition) {
  return std::string(kEventsCfPrefix) + std::to_string(partition.value());
}

std::optional<Partition> PartitionOfEventsCf(std::string_view name) {
  if (!name.starts_with(kEventsCfPrefix)) return std::nullopt;
  const std::string_view digits = name.substr(kEventsCfPrefix.size());
  uint32_t p = 0;
  if (digits.empty() || (digits.size() > 1 && digits[0] == '0') ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &p)) {
    return std::nullopt;
  }
  return Partition(p);
}

bool IsEventsCf(std::string_view name) {
  return name == kVersion1EventsCf || PartitionOfEventsCf(name).has_value();
}

void EncodeEventKey(Sequence sequence, char out[kEventKeySize]) {
  PutBigEndian64(sequence.value(), out);
}

std::string EventKey(Sequence sequence) {
  std::string key(kEventKeySize, '\0');
  EncodeEventKey(sequence, key.data());
  return key;
}

bool DecodeEventKey(std::string_view key, Sequence* sequence) {
  if (key.size() != kEventKeySize) return false;
  *sequence = Sequence(GetBigEndian64(key.data()));
  return true;
}

bool DecodeVersion1EventKey(std::string_view key, Partition* partition, Sequence* sequence) {
  if (key.size() != kVersion1EventKeySize) return false;
  *partition = Partition(GetBigEndian32(key.data()));
  *sequence = Sequence(GetBigEndian64(key.data() + 4));
  return true;
}

std::string StreamKeyPrefix(std::string_view stream_id) {
  std::string key(stream_id);
  key.push_back('\0');
  return key;
}

std::string StreamKey(std::string_view stream_id, StreamVersion version) {
  std::string key = StreamKeyPrefix(stream_id);
  char buf[8];
  PutBigEndian64(version.value(), buf);
  key.append(buf, sizeof(buf));
  return key;
}

std::string EncodePosition(EventPosition position) {
  std::string value(kPositionSize, '\0');
  PutBigEndian32(position.partition.value(), value.data());
  PutBigEndian64(position.sequence.value(), value.data() + 4);
  return value;
}

std::optional<EventPosition> DecodePosition(std::string_view value) {
  if (value.size() != kPositionSize) return std::nullopt;
  return EventPosition{Partition(GetBigEndian32(value.data())),
                       Sequence(GetBigEndian64(value.data() + 4))};
}

std::string SourcePositionKey(std::string_view topic, int32_t kafka_partition) {
  std::string key(1, kSourcePositionPrefix);
  key.append(topic);
  key.push_back('\0');
  char buf[4];
  PutBigEndian32(static_cast<uint32_t>(kafka_partition), buf);
  key.append(buf, sizeof(buf));
  return key;
}

std::string CheckpointKey(Partition partition, std::string_view stage) {
  std::string key(1, kCheckpointPrefix);
  char buf[4];
  PutBigEndian32(partition.value(), buf);
  key.append(buf, sizeof(buf));
  key.append(stage);
  return key;
}

std::string SnapshotKey(std::string_view stage) {
  std::string key(1, kSnapshotPrefix);
  key.append(stage);
  return key;
}

rocksdb::DBOptions LogDbOptions() {
  rocksdb::DBOptions options;
  options.create_if_missing = false;  // The log decides when to create (EventLog::Open).
  options.create_missing_column_families = false;
  // Two background threads: one flush, one compaction (the design machine has 2 cores).
  options.max_background_jobs = 2;
  options.bytes_per_sync = 1 << 20;
  options.keep_log_file_num = 5;
  // One WAL for all families keeps a cross-family WriteBatch atomic; cap it so a crash
  // never replays more than this.
  options.max_total_wal_size = 256ull << 20;
  // Every partition's family has its own memtables; together they hold at most this
  // (RocksDB flushes one when the total would pass it), however many partitions there are.
  // The default of EventLogOptions::memtable_budget_bytes, which sets it.
  options.db_write_buffer_size = 256ull << 20;
  // What every Open checks (LOG_FORMAT.md, "Damage"): the manifest, the size of every
  // live SST file and the footer and index of each (all are opened: max_open_files is
  // -1), and every WAL record replayed. A record whose checksum fails in the middle of
  // the WAL fails the Open with Corruption instead of silently cutting the log short
  // there (RocksDB's default, kPointInTimeRecovery, drops it and everything after);
  // an incomplete record at the very end, what a crash mid-write leaves of an append
  // that was never acknowledged, is still dropped quietly.
  options.paranoid_checks = true;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  return options;
}

rocksdb::ColumnFamilyOptions EventsCfOptions() {
  rocksdb::ColumnFamilyOptions options;
  // One family per partition, whose keys arrive in order: memtables flush into
  // non-overlapping files, so compaction is mostly trivial moves.
  options.write_buffer_size = 64ull << 20;
  options.max_write_buffer_number = 3;
  options.target_file_size_base = 64ull << 20;
  options.max_bytes_for_level_base = 512ull << 20;
  options.compression = rocksdb::kLZ4Compression;
  options.bottommost_compression = rocksdb::kZSTD;
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 16 << 10;  // Scans dominate; fewer, larger blocks.
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

rocksdb::ColumnFamilyOptions IndexCfOptions() {
  rocksdb::ColumnFamilyOptions options;
  options.write_buffer_size = 16ull << 20;
  options.compression = rocksdb::kLZ4Compression;
  rocksdb::BlockBasedTableOptions table;
  // Point lookups (idempotency keys, stream heads): a bloom filter saves a read per miss.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

}  // namespace cityops::kernel::format
