// A device kind that no code mentions, for the tests that add one to the catalogue: a
// rooftop water tank (level in percent, an overflow flag, a 15-minute heartbeat).
#ifndef CITYOPS_TESTS_TESTING_WATER_TANKS_H_
#define CITYOPS_TESTS_TESTING_WATER_TANKS_H_

#include <stdexcept>
#include <string>

#include "catalogue/catalogue.h"

namespace cityops::testing {

// The shipped catalogue's text with the `water_tank` kind added to its kinds.
inline std::string CatalogueYamlWithWaterTanks() {
  std::string yaml(catalogue::DefaultCatalogueYaml());
  const size_t at = yaml.find("\ncategories:");
  if (at == std::string::npos) throw std::runtime_error("the catalogue has no 'categories:'");
  yaml.insert(at + 1,
              "  - id: water_tank\n"
              "    name: {zh: 二次供水水箱, en: Rooftop water tank}\n"
              "    department: water-authority\n"
              "    reporting_interval: 15m\n"
              "    metrics:\n"
              "      - {name: level_pct, label: {zh: 水位, en: Level}, type: number, unit: \"%\", "
              "min: 0, max: 100}\n"
              "      - {name: overflow, label: {zh: 溢流, en: Overflowing}, type: flag}\n"
              "\n");
  return yaml;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_WATER_TANKS_H_
