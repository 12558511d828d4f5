// libFuzzer target for the JSON bodies of the HTTP API (api/requests.h), without a server.
// Input: a first line "<command> [<content type>]", where <command> is a case command
// ("dispatch", ...) or "report", then the body. Every body must be accepted or refused
// with INVALID_ARGUMENT and a message; an accepted body must read back equal from its own
// JSON, and a case command must have set only the fields it takes.
//
// Build and run: fuzz/run_fuzz.sh --target api_body SECONDS.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api/requests.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace {

namespace pb = google::protobuf;
using cityops::fuzz::Require;

// `accepted` printed as JSON (as the API prints) parses back, by `parse`, to an equal message.
template <typename M, typename Parse>
void RequireRoundTrip(const M& accepted, Parse parse) {
  std::string json;
  pb::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  Require(pb::util::MessageToJsonString(accepted, &json, options).ok(),
          "cannot print an accepted body:", accepted.ShortDebugString());
  M again;
  const absl::Status s = parse(json, &again);
  Require(s.ok(), "an accepted body is refused after a round trip:", s.ToString() + " " + json);
  Require(pb::util::MessageDifferencer::Equals(again, accepted),
          "a round trip changed an accepted body:", json);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pb::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace api = cityops::api;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  if (newline == std::string_view::npos) return 0;
  const std::string_view head = input.substr(0, newline);
  const std::string_view body = input.substr(newline + 1);
  const size_t space = head.find(' ');
  const std::string_view name = head.substr(0, space);
  const std::string_view content_type =
      space == std::string_view::npos ? std::string_view() : head.substr(space + 1);

  if (name == "report") {
    cityops::v1::ReportRequest out;
    const absl::Status s = api::ParseReportBody(content_type, body, &out);
    if (!s.ok()) {
      cityops::fuzz::RequireRefusal(s, absl::StatusCode::kInvalidArgument);
      return 0;
    }
    Require(out.grid().grid_code().size() == 15, "accepted a report without a 15-digit grid");
    RequireRoundTrip(out, [](std::string_view json, cityops::v1::ReportRequest* m) {
      return api::ParseReportBody("application/json", json, m);
    });
    return 0;
  }
  absl::StatusOr<const api::CaseCommandSpec*> spec = api::FindCaseCommand(name);
  if (!spec.ok()) {
    cityops::fuzz::RequireRefusal(spec.status(), absl::StatusCode::kNotFound);
    return 0;
  }
  cityops::v1::CaseCommandRequest out;
  const absl::Status s = api::ParseCaseCommandBody(name, **spec, content_type, body, &out);
  if (!s.ok()) {
    cityops::fuzz::RequireRefusal(s, absl::StatusCode::kInvalidArgument);
    return 0;
  }
  std::vector<const pb::FieldDescriptor*> set;
  out.GetReflection()->ListFields(out, &set);
  for (const pb::FieldDescriptor* f : set) {
    Require(f->name() == "request_id" || (*spec)->fields.contains(f->name()),
            "accepted a field the command does not take:", f->name());
  }
  RequireRoundTrip(out, [&](std::string_view json, cityops::v1::CaseCommandRequest* m) {
    return api::ParseCaseCommandBody(name, **spec, "", json, m);
  });
  return 0;
}
