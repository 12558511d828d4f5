// libFuzzer target for the daemon's configuration (daemon/config.h): the input is the text
// of a `cityops serve --config` file. Every input must give a configuration or an
// INVALID_ARGUMENT error that starts with the file name; a configuration that parses must
// hold every default, read back equal from its own YAML (kernel::ProtoToYaml), and print
// (DescribeServeConfig).
//
// Build and run: fuzz/run_fuzz.sh --target serve_config SECONDS.
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/config.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/yaml_proto.h"

namespace {

constexpr char kFile[] = "fuzz.yaml";

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using cityops::fuzz::Require;
  using cityops::fuzz::RequireFileRefusal;
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<cityops::v1::ServeConfig> config = cityops::daemon::ParseServeConfig(yaml, kFile);
  if (!config.ok()) {
    RequireFileRefusal(config.status(), kFile);
    return 0;
  }
  Require(!config->data_dir().empty(), "a configuration without data_dir");
  Require(config->http().port() >= 0 && config->http().port() <= 65535, "a port out of range");
  Require(config->http().max_body_bytes() > 0, "a body limit that is not positive");
  const std::string again_yaml = cityops::kernel::ProtoToYaml(*config);
  absl::StatusOr<cityops::v1::ServeConfig> again =
      cityops::daemon::ParseServeConfig(again_yaml, "again.yaml");
  Require(again.ok(), "a parsed configuration does not read back:",
          again.ok() ? again_yaml : again.status().ToString());
  Require(google::protobuf::util::MessageDifferencer::Equals(*again, *config),
          "a configuration changed through its YAML:", again_yaml);
  Require(!cityops::daemon::DescribeServeConfig(*config).empty(), "an empty description");
  return 0;
}
