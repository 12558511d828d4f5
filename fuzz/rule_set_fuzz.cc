// libFuzzer target for rule sets (projections/rules/compile.h): the input is the text of a
// rule set file. Every input must give a checked rule set or an INVALID_ARGUMENT error that
// starts with the file name; a rule set that loads must compile, and read back, equal and
// compiling, from its own YAML (kernel::ProtoToYaml).
//
// Build and run: fuzz/run_fuzz.sh --target rule_set SECONDS.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "kernel/yaml_proto.h"
#include "projections/rules/compile.h"

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
  namespace rules = cityops::rules;
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<rules::LoadedRuleSet> loaded = rules::LoadRuleSetText(yaml, kFile);
  if (!loaded.ok()) {
    RequireFileRefusal(loaded.status(), kFile);
    return 0;
  }
  Require(loaded->sha256.size() == 64, "a digest that is not SHA-256 hex");
  absl::StatusOr<std::unique_ptr<rules::CompiledRuleSet>> compiled =
      rules::CompiledRuleSet::Compile(loaded->rule_set, cityops::catalogue::KindTable::BuiltIn());
  Require(compiled.ok(), "a checked rule set does not compile:",
          compiled.ok() ? "" : compiled.status().ToString());
  const std::string again_yaml = cityops::kernel::ProtoToYaml(loaded->rule_set);
  absl::StatusOr<rules::LoadedRuleSet> again = rules::LoadRuleSetText(again_yaml, "again.yaml");
  Require(again.ok(), "a loaded rule set does not read back:",
          again.ok() ? again_yaml : again.status().ToString() + "\n" + again_yaml);
  Require(google::protobuf::util::MessageDifferencer::Equals(again->rule_set, loaded->rule_set),
          "a rule set changed through its YAML:", again_yaml);
  return 0;
}
