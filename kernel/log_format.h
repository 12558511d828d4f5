// The on-disk layout of the event log: column families, key encodings and the format
// version. Private to kernel/ (and to tests and benches that check the layout); the
// prose version is kernel/LOG_FORMAT.md. Changing anything here changes the format:
// bump kFormatVersion and document the migration.
#ifndef CITYOPS_KERNEL_LOG_FORMAT_H_
#define CITYOPS_KERNEL_LOG_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kernel/types.h"
#include "rocksdb/options.h"

namespace cityops::kernel::format {

// Version 2: the layout below, a column family per partition. Version 1 kept every
// partition's events in one family (`kVersion1EventsCf`, keys partition + sequence);
// `UpgradeLog` (kernel/log_upgrade.h) rewrites such a log into version 2.
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr std::string_view kVersion1EventsCf = "events";

// Column families. The default family holds the meta keys; each partition's events are
// in a family of their own, named by EventsCfName.
inline constexpr std::string_view kStreamsCf = "streams";
inline constexpr std::string_view kIdempotencyCf = "idempotency";
inline constexpr std::string_view kPositionsCf = "positions";

// Meta keys (default family).
inline constexpr std::string_view kMagicKey = "cityops/magic";
inline constexpr std::string_view kMagicValue = "cityops event log";
inline constexpr std::string_view kFormatVersionKey = "cityops/format_version";  // decimal

// Our advisory lock file in the log directory (RocksDB keeps its own LOCK beside it).
inline constexpr std::string_view kLockFileName = "cityops.lock";
// Present while a new log is being created; a log that has it was never finished and is
// created afresh by the next Open.
inline constexpr std::string_view kCreatingFileName = "cityops.creating";

// Prefixes of the positions family.
inline constexpr char kSourcePositionPrefix = 's';
inline constexpr char kCheckpointPrefix = 'c';
inline constexpr char kSnapshotPrefix = 'n';

// The family of one partition's events: "events/" + the partition in decimal.
inline constexpr std::string_view kEventsCfPrefix = "events/";
std::string EventsCfName(Partition partition);
// The partition whose events family `name` is, or nullopt if it is not one (the decimal
// must be canonical: "events/7", not "events/07").
std::optional<Partition> PartitionOfEventsCf(std::string_view name);
// True for a partition's events family and for version 1's one events family: the
// families opened with EventsCfOptions.
bool IsEventsCf(std::string_view name);

// A partition's events: sequence (8 bytes, big-endian) -> value.
inline constexpr size_t kEventKeySize = 8;
std::string EventKey(Sequence sequence);
void EncodeEventKey(Sequence sequence, char out[kEventKeySize]);
// False if `key` is not an event key.
bool DecodeEventKey(std::string_view key, Sequence* sequence);

// Version 1's event keys: partition (4 bytes, big-endian) + sequence (8) in one family.
// Read only by UpgradeLog.
inline constexpr size_t kVersion1EventKeySize = 12;
bool DecodeVersion1EventKey(std::string_view key, Partition* partition, Sequence* sequence);

// streams: stream id + '\0' + version (8 bytes, big-endian) -> position.
std::string StreamKey(std::string_view stream_id, StreamVersion version);
std::string StreamKeyPrefix(std::string_view stream_id);  // stream id + '\0'

// Position values (streams and idempotency families): partition (4) + sequence (8).
inline constexpr size_t kPositionSize = 12;
std::string EncodePosition(EventPosition position);
std::optional<EventPosition> DecodePosition(std::string_view value);

// positions: 's' + topic + '\0' + kafka partition (4, big-endian) -> next offset (8).
std::string SourcePositionKey(std::string_view topic, int32_t kafka_partition);
// positions: 'c' + partition (4, big-endian) + stage name -> next (8) + state bytes.
std::string CheckpointKey(Partition partition, std::string_view stage);
// positions: 'n' + stage name -> the stage's latest snapshot, opaque bytes.
std::string SnapshotKey(std::string_view stage);

void PutBigEndian32(uint32_t v, char* out);
void PutBigEndian64(uint64_t v, char* out);
uint32_t GetBigEndian32(const char* in);
uint64_t GetBigEndian64(const char* in);

// RocksDB options of the log. Benchmarks of bare RocksDB use the same ones so that
// the comparison measures cityops' code, not a tuning difference.
rocksdb::DBOptions LogDbOptions();
// Sequential keys, scanned in order. Each call makes its own block cache: use one
// result for every partition's family so that they share it.
rocksdb::ColumnFamilyOptions EventsCfOptions();
rocksdb::ColumnFamilyOptions IndexCfOptions();  // Streams, idempotency, positions, meta.

}  // namespace cityops::kernel::format

#endif  // CITYOPS_KERNEL_LOG_FORMAT_H_
