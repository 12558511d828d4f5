// Strict YAML onto protobuf messages, with errors that name the file, line and column.
//
// Configuration (rule sets, the daemon's settings) is written in YAML whose keys are the
// field names of a protobuf message. The mapping is strict:
//   * the text is UTF-8 (protobuf strings hold nothing else; a rule set is stored whole);
//   * keys are the proto field names (snake_case); an unknown key, a key given twice and a
//     key without a value are errors;
//   * a message is a mapping, a repeated field a sequence; scalars must parse as their
//     field's type: booleans only `true`/`false`, integers range-checked, numbers finite;
//   * enums take the full value name (`SEVERITY_MAJOR`) or the short lowercase form
//     without the enum's prefix (`major`); the UNSPECIFIED value (0) is refused;
//   * google.protobuf.Duration takes a string with units (`500ms`, `30s`, `10m`, `4h`,
//     `1d`, `1h30m`, `-5m`); a bare number is an error; google.protobuf.Timestamp takes
//     RFC 3339;
//   * two members of one oneof are an error naming both;
//   * map fields are not supported (no cityops message has one) and are refused.
// The first error stops the parse. Every message reads
// "<file>:<line>:<column>: <what is wrong>; <what to do>".
//
// A YamlSourceMap remembers where each field was written, so that checks after parsing
// (ranges, references between fields) can report lines too. It refers to the parsed
// messages by address: it stays valid as long as the parsed message is not modified.
#ifndef CITYOPS_KERNEL_YAML_PROTO_H_
#define CITYOPS_KERNEL_YAML_PROTO_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace cityops::kernel {

struct SourceLocation {
  int line = 0;  // 1-based.
  int column = 0;
};

class YamlSourceMap {
 public:
  // Where the key `field` of `message` (a message inside the parsed tree) was written;
  // for repeated fields, `index` >= 0 picks the element. nullopt if it was not written.
  std::optional<SourceLocation> Find(const google::protobuf::Message& message,
                                     std::string_view field, int index = -1) const;
  // Where the mapping of `message` starts.
  std::optional<SourceLocation> FindMessage(const google::protobuf::Message& message) const;
  // "<file>:<line>:<column>" of Find(...), else of FindMessage(...), else "<file>".
  std::string Where(const google::protobuf::Message& message, std::string_view field = {},
                    int index = -1) const;
  const std::string& file() const { return file_; }

 private:
  friend class YamlProtoParser;
  std::string file_;
  std::map<std::tuple<const google::protobuf::Message*, std::string, int>, SourceLocation> fields_;
  std::map<const google::protobuf::Message*, SourceLocation> messages_;
};

// Parses `yaml` onto `out` (cleared first). `file` names the source in errors.
absl::Status ParseYamlToProto(std::string_view yaml, std::string_view file,
                              google::protobuf::Message* out, YamlSourceMap* map = nullptr);

// Reads `path` and parses it. NOT_FOUND names the path when it cannot be read.
absl::Status ParseYamlFileToProto(const std::string& path, google::protobuf::Message* out,
                                  YamlSourceMap* map = nullptr);

// The inverse of ParseYamlToProto: the fields that are set, in field-number order, as
// YAML the parser reads back into an equal message. Enums are written in the short
// lowercase form, Durations with units (`1h30m`), Timestamps in RFC 3339.
std::string ProtoToYaml(const google::protobuf::Message& message);

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_YAML_PROTO_H_
