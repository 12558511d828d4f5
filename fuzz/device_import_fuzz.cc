// libFuzzer target for device registry files (ingest/device_import.h): the first byte picks
// the format ('c' CSV, anything else JSON lines), the rest is the file. Every line must give
// a registration or an error naming a line of the file; every registration kept must pass
// the devices topic's validation (DecodeDevice) again.
//
// Build and run: fuzz/run_fuzz.sh --target device_import SECONDS.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "ingest/device_import.h"
#include "ingest/record_decoder.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using cityops::fuzz::Require;
  namespace ingest = cityops::ingest;
  if (size < 1) return 0;
  const auto format =
      data[0] == 'c' ? ingest::DeviceFileFormat::kCsv : ingest::DeviceFileFormat::kJsonLines;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
  const ingest::ParsedDevices parsed = ingest::ParseDeviceText(text, format);
  for (const ingest::ImportError& e : parsed.errors) {
    Require(e.line <= lines, "an error names a line after the end:", e.message);
    Require(!e.message.empty(), "an error without a message");
  }
  for (const cityops::v1::DeviceRegistered& d : parsed.devices) {
    const std::string bytes = d.SerializeAsString();
    ingest::KafkaRecord record;
    record.value = bytes;
    cityops::v1::DeviceRegistered again;
    const std::optional<ingest::Rejection> why =
        ingest::DecodeDevice(record, ingest::ValidationPolicy(), &again);
    Require(!why.has_value(), "an imported registration is refused by the devices topic:",
            why.has_value() ? why->message : "");
  }
  return 0;
}
