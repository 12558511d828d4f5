// libFuzzer target for catalogues (catalogue/catalogue.h): the input is the text of a
// catalogue file. Every input must give a checked catalogue or an INVALID_ARGUMENT error
// that starts with the file name; a catalogue that loads must read back, equal and
// checked, from its own YAML (kernel::ProtoToYaml), and a rule set naming every kind,
// metric and category in it must fit it.
//
// Build and run: fuzz/run_fuzz.sh --target catalogue SECONDS.
#include <cstdint>
#include <string>
#include <string_view>

#include "catalogue/catalogue.h"
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
  namespace catalogue = cityops::catalogue;
  namespace v1 = cityops::v1;
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<catalogue::LoadedCatalogue> loaded = catalogue::LoadCatalogueText(yaml, kFile);
  if (!loaded.ok()) {
    RequireFileRefusal(loaded.status(), kFile);
    return 0;
  }
  const std::string again_yaml = cityops::kernel::ProtoToYaml(loaded->catalogue);
  absl::StatusOr<catalogue::LoadedCatalogue> again =
      catalogue::LoadCatalogueText(again_yaml, "again.yaml");
  Require(again.ok(), "a loaded catalogue does not read back:",
          again.ok() ? again_yaml : again.status().ToString() + "\n" + again_yaml);
  Require(google::protobuf::util::MessageDifferencer::Equals(again->catalogue, loaded->catalogue),
          "a catalogue changed through its YAML:", again_yaml);

  // A rule per typed kind testing each of its metrics, opening cases of a listed category.
  v1::RuleSet rules;
  rules.set_name("fuzz");
  const std::string category =
      loaded->catalogue.categories().empty() ? "" : loaded->catalogue.categories(0).code();
  for (const v1::DeviceKindSpec& kind : loaded->catalogue.kinds()) {
    if (kind.typed() == v1::DEVICE_KIND_UNSPECIFIED) continue;
    v1::Rule* rule = rules.add_rules();
    rule->set_id(kind.id());
    rule->set_device_kind(kind.id());
    for (const v1::MetricSpec& m : kind.metrics()) {
      rule->mutable_threshold()->mutable_raise()->add_any()->set_metric(m.name());
    }
    if (!category.empty()) {
      rule->mutable_case_()->set_open_case(true);
      rule->mutable_case_()->mutable_category()->set_code(category);
    }
  }
  const absl::Status fits = catalogue::CheckRulesAgainstCatalogue(
      loaded->catalogue, rules, catalogue::RuleCheck::kDevicesAndCategories);
  Require(fits.ok(), "a rule set of the catalogue's own kinds does not fit it:", fits.ToString());
  return 0;
}
