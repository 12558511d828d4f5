#include "ingest/device_import.h"

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "catalogue/kinds.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "ingest/partitioner.h"
#include "ingest/record_decoder.h"

namespace cityops::ingest {
namespace {

// FNV-1a, 64 bits: stable across builds and processes, unlike absl::Hash.
uint64_t Fnv1a(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Validates `device` exactly as the devices topic does.
std::optional<std::string> Validate(const v1::DeviceRegistered& device) {
  const std::string bytes = device.SerializeAsString();
  KafkaRecord record;
  record.value = bytes;
  v1::DeviceRegistered decoded;
  if (std::optional<Rejection> why = DecodeDevice(record, ValidationPolicy(), &decoded)) {
    return absl::StrFormat("%s: %s", RejectCodeName(why->code), why->message);
  }
  return std::nullopt;
}

std::optional<v1::DeviceKind> ParseKind(const std::string& text) {
  std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  if (!absl::StartsWith(name, "DEVICE_KIND_")) name = "DEVICE_KIND_" + name;
  v1::DeviceKind kind;
  if (!v1::DeviceKind_Parse(name, &kind) || kind == v1::DEVICE_KIND_UNSPECIFIED) {
    return std::nullopt;
  }
  return kind;
}

void ParseCsv(std::istream& in, ParsedDevices& out) {
  std::string line;
  size_t number = 0;
  std::map<std::string, size_t> columns;
  const std::vector<std::string> known = {"device_id",           "kind",          "grid_code",
                                          "latitude_deg",        "longitude_deg", "name",
                                          "reporting_interval_s"};
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<std::string> cells = absl::StrSplit(line, ',');
    for (std::string& c : cells) c = std::string(absl::StripAsciiWhitespace(c));
    if (columns.empty()) {
      for (size_t i = 0; i < cells.size(); ++i) {
        if (std::find(known.begin(), known.end(), cells[i]) == known.end()) {
          out.errors.push_back({number, absl::StrFormat("unknown column '%s'; known columns: %s",
                                                        cells[i], absl::StrJoin(known, ","))});
          return;
        }
        // A column named twice would leave a row of as many cells as there are distinct
        // names one short of the last column's index.
        if (!columns.emplace(cells[i], i).second) {
          out.errors.push_back(
              {number, absl::StrFormat("column '%s' is named twice; keep one", cells[i])});
          return;
        }
      }
      for (const char* required : {"device_id", "kind", "grid_code"}) {
        if (!columns.contains(required)) {
          out.errors.push_back(
              {number, absl::StrFormat("the header has no '%s' column", required)});
          return;
        }
      }
      continue;
    }
    if (cells.size() != columns.size()) {
      out.errors.push_back({number, absl::StrFormat("%d cells, but the header has %d columns",
                                                    cells.size(), columns.size())});
      continue;
    }
    auto cell = [&](const char* name) -> std::string {
      auto it = columns.find(name);
      return it == columns.end() ? std::string() : cells[it->second];
    };
    v1::DeviceRegistered d;
    d.set_device_id(cell("device_id"));
    // A typed kind by its enum name, or any kind of the built-in catalogue by its id.
    const std::string kind_text = cell("kind");
    if (std::optional<v1::DeviceKind> kind = ParseKind(kind_text)) {
      d.set_kind(*kind);
    } else if (const std::string id(absl::StripAsciiWhitespace(kind_text));
               catalogue::KindTable::BuiltIn()->Find(id) != nullptr) {
      d.set_kind_id(id);
    } else {
      out.errors.push_back(
          {number, absl::StrFormat("kind '%s' is not a kind of the catalogue; use one of: %s",
                                   kind_text, catalogue::KindTable::BuiltIn()->KindIds())});
      continue;
    }
    const std::string grid = cell("grid_code");
    d.mutable_grid()->set_grid_code(grid);
    if (grid.size() >= 9) {
      d.mutable_grid()->set_district_code(grid.substr(0, 6));
      d.mutable_grid()->set_street_code(grid.substr(0, 9));
    }
    d.set_name(cell("name"));
    std::string error;
    auto number_cell = [&](const char* name, double* value) {
      const std::string text = cell(name);
      if (text.empty()) return false;
      if (!absl::SimpleAtod(text, value) || !std::isfinite(*value)) {
        error = absl::StrFormat("column %s: '%s' is not a number", name, text);
      }
      return error.empty();
    };
    double lat = 0;
    double lon = 0;
    double interval = 0;
    if (number_cell("latitude_deg", &lat)) d.mutable_location()->set_latitude_deg(lat);
    if (number_cell("longitude_deg", &lon)) d.mutable_location()->set_longitude_deg(lon);
    if (number_cell("reporting_interval_s", &interval)) {
      // Bounded before the conversion, which is undefined for a double out of int64's range;
      // the devices topic's own bound (a year, record_decoder.cc) applies after.
      if (interval < 0 || interval > 1e9) {
        error = absl::StrFormat("column reporting_interval_s: %s seconds is out of range",
                                cell("reporting_interval_s"));
      } else {
        d.mutable_reporting_interval()->set_seconds(static_cast<int64_t>(interval));
      }
    }
    if (!error.empty()) {
      out.errors.push_back({number, error});
      continue;
    }
    if (std::optional<std::string> why = Validate(d)) {
      out.errors.push_back({number, *why});
      continue;
    }
    out.devices.push_back(std::move(d));
  }
  if (columns.empty() && out.errors.empty()) {
    out.errors.push_back({0, "the file has no header row (device_id,kind,grid_code,...)"});
  }
}

void ParseJsonLines(std::istream& in, ParsedDevices& out) {
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    KafkaRecord record;
    record.value = line;
    record.content_type = "application/json";
    v1::DeviceRegistered d;
    if (std::optional<Rejection> why = DecodeDevice(record, ValidationPolicy(), &d)) {
      out.errors.push_back(
          {number, absl::StrFormat("%s: %s", RejectCodeName(why->code), why->message)});
      continue;
    }
    out.devices.push_back(std::move(d));
  }
}

}  // namespace

std::string RegistrationKey(const v1::DeviceRegistered& device) {
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  {
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    device.SerializeToCodedStream(&coded);
  }
  return absl::StrFormat("registry/%s/%016x", device.device_id(), Fnv1a(bytes));
}

ParsedDevices ParseDeviceText(std::string_view text, DeviceFileFormat format) {
  std::istringstream in{std::string(text)};
  ParsedDevices out;
  if (format == DeviceFileFormat::kCsv) {
    ParseCsv(in, out);
  } else {
    ParseJsonLines(in, out);
  }
  return out;
}

absl::StatusOr<ParsedDevices> ParseDeviceFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrFormat("cannot read device file %s", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseDeviceText(text.str(), absl::EndsWith(path, ".csv") ? DeviceFileFormat::kCsv
                                                                  : DeviceFileFormat::kJsonLines);
}

absl::StatusOr<ImportResult> ImportDevices(kernel::EventLog& log,
                                           const std::vector<v1::DeviceRegistered>& devices,
                                           int partitions, absl::Time now) {
  if (partitions < 1) {
    return absl::InvalidArgumentError("device import needs at least one partition");
  }
  std::map<int32_t, kernel::AppendBatch> batches;
  google::protobuf::Timestamp at;
  at.set_seconds(absl::ToUnixSeconds(now));
  for (const v1::DeviceRegistered& d : devices) {
    const int32_t p = KafkaPartitionFor(d.device_id(), partitions);
    v1::Event e;
    e.set_stream_id(absl::StrFormat("registry/%s", d.device_id()));
    *e.mutable_event_time() = at;
    e.mutable_provenance()->set_stage("import");
    e.mutable_provenance()->set_idempotency_key(RegistrationKey(d));
    *e.mutable_device_registered() = d;
    batches.try_emplace(p, kernel::Partition(static_cast<uint32_t>(p)))
        .first->second.Add(std::move(e));
  }
  std::vector<kernel::AppendBatch> all;
  for (auto& [p, batch] : batches) all.push_back(std::move(batch));
  absl::StatusOr<std::vector<kernel::AppendResult>> results = log.AppendAll(std::move(all));
  if (!results.ok()) return results.status();
  ImportResult result;
  for (const kernel::AppendResult& r : *results) {
    result.appended += r.appended;
    result.unchanged += r.duplicates;
  }
  return result;
}

}  // namespace cityops::ingest
