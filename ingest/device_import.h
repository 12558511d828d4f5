// Importing the device registry from a file: JSON lines (one `cityops.v1.DeviceRegistered`
// per line by the protobuf JSON mapping, archive data included) or CSV with a header row
// naming the columns
//
//   device_id,kind,grid_code,latitude_deg,longitude_deg,name,reporting_interval_s
//
// (only device_id, kind and grid_code are required; kind is MANHOLE_COVER, ELEVATOR,
// CURTAIN_WALL or FLOOD_GAUGE, with or without the DEVICE_KIND_ prefix, or the id of any
// kind of the built-in catalogue, e.g. gas_detector, which sets kind_id; district and
// street codes are the grid code's 6- and 9-digit prefixes). Each registration is
// validated like a record of the `cityops.devices` topic.
#ifndef CITYOPS_INGEST_DEVICE_IMPORT_H_
#define CITYOPS_INGEST_DEVICE_IMPORT_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cityops/v1/events.pb.h"
#include "kernel/event_log.h"

namespace cityops::ingest {

// A line that could not be imported.
struct ImportError {
  size_t line = 0;  // 1-based.
  std::string message;
};

struct ParsedDevices {
  std::vector<v1::DeviceRegistered> devices;
  std::vector<ImportError> errors;  // Valid lines are kept even when others fail.
};

enum class DeviceFileFormat { kJsonLines, kCsv };

// Parses the text of a device file.
ParsedDevices ParseDeviceText(std::string_view text, DeviceFileFormat format);

// Reads `path` (".csv" is CSV, anything else JSON lines). NOT_FOUND if it cannot be read.
absl::StatusOr<ParsedDevices> ParseDeviceFile(const std::string& path);

struct ImportResult {
  size_t appended = 0;
  size_t unchanged = 0;  // Identical to the stored registration: skipped.
};

// Appends each registration to stream `registry/<device_id>` in the log partition
// `KafkaPartitionFor(device_id, partitions)`, the partition of the device's readings.
// Re-importing an identical registration is skipped (its idempotency key is the
// device id plus a hash of its content). One atomic write for the whole file.
absl::StatusOr<ImportResult> ImportDevices(kernel::EventLog& log,
                                           const std::vector<v1::DeviceRegistered>& devices,
                                           int partitions, absl::Time now);

// The idempotency key of a registration: the same for identical content.
std::string RegistrationKey(const v1::DeviceRegistered& device);

}  // namespace cityops::ingest

#endif  // CITYOPS_INGEST_DEVICE_IMPORT_H_
