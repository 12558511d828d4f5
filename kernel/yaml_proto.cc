#include "kernel/yaml_proto.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/timestamp.pb.h"
#include "kernel/proto_time.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace cityops::kernel {

namespace pb = google::protobuf;

std::optional<SourceLocation> YamlSourceMap::Find(const pb::Message& message,
                                                  std::string_view field, int index) const {
  auto it = fields_.find({&message, std::string(field), index});
  if (it == fields_.end()) return std::nullopt;
  return it->second;
}

std::optional<SourceLocation> YamlSourceMap::FindMessage(const pb::Message& message) const {
  auto it = messages_.find(&message);
  if (it == messages_.end()) return std::nullopt;
  return it->second;
}

std::string YamlSourceMap::Where(const pb::Message& message, std::string_view field,
                                 int index) const {
  std::optional<SourceLocation> at;
  if (!field.empty()) at = Find(message, field, index);
  if (!at) at = FindMessage(message);
  if (!at) return file_;
  return absl::StrFormat("%s:%d:%d", file_, at->line, at->column);
}

namespace {

SourceLocation At(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  return {m.line + 1, m.column + 1};
}

// "DeviceKind" -> "DEVICE_KIND_".
std::string EnumPrefix(const pb::EnumDescriptor* e) {
  std::string out;
  for (char c : e->name()) {
    if (absl::ascii_isupper(c) && !out.empty()) out += '_';
    out += absl::ascii_toupper(c);
  }
  return out + "_";
}

std::string Names(const pb::Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

const char* KindOf(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return "a scalar";
    default:
      return "nothing";
  }
}

}  // namespace

// Walks the YAML tree and the message together.
class YamlProtoParser {
 public:
  YamlProtoParser(std::string file, YamlSourceMap* map) : file_(std::move(file)), map_(map) {
    if (map_ != nullptr) {
      *map_ = YamlSourceMap();
      map_->file_ = file_;
    }
  }

  absl::Status Message(const YAML::Node& node, pb::Message* msg) {
    if (!node.IsMap()) {
      return Error(node, absl::StrFormat("expected a mapping of %s fields, got %s",
                                         msg->GetDescriptor()->full_name(), KindOf(node)));
    }
    if (map_ != nullptr) map_->messages_[msg] = At(node);
    const pb::Descriptor* d = msg->GetDescriptor();
    const pb::Reflection* r = msg->GetReflection();
    std::set<std::string> seen;
    std::map<const pb::OneofDescriptor*, std::pair<std::string, SourceLocation>> oneofs;
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      const YAML::Node& value = kv.second;
      if (!key.IsScalar()) return Error(key, "a key must be a plain name");
      const std::string name = key.Scalar();
      const pb::FieldDescriptor* f = d->FindFieldByName(name);
      if (f == nullptr) {
        return Error(key, absl::StrFormat("unknown key '%s' in %s; expected one of: %s", name,
                                          d->full_name(), Names(d)));
      }
      if (!seen.insert(name).second) {
        return Error(key, absl::StrFormat("key '%s' is given twice; keep one", name));
      }
      if (!value.IsDefined() || value.IsNull()) {
        return Error(key, absl::StrFormat("key '%s' has no value; give one or drop the key", name));
      }
      if (const pb::OneofDescriptor* o = f->containing_oneof();
          o != nullptr && !o->is_synthetic()) {
        auto [it, fresh] = oneofs.emplace(o, std::make_pair(name, At(key)));
        if (!fresh) {
          return Error(key, absl::StrFormat(
                                "'%s' and '%s' (line %d) are alternatives ('%s'); keep one of them",
                                name, it->second.first, it->second.second.line, o->name()));
        }
      }
      if (map_ != nullptr) map_->fields_[{msg, name, -1}] = At(key);
      if (f->is_map()) {
        return Error(key, absl::StrFormat("'%s' is a map field, which YAML configuration does "
                                          "not support",
                                          name));
      }
      if (f->is_repeated()) {
        if (!value.IsSequence()) {
          return Error(value, absl::StrFormat("'%s' must be a sequence ([a, b] or '- ' items), "
                                              "got %s",
                                              name, KindOf(value)));
        }
        for (size_t i = 0; i < value.size(); ++i) {
          const YAML::Node& item = value[i];
          if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
            pb::Message* sub = r->AddMessage(msg, f);
            if (map_ != nullptr) map_->fields_[{msg, name, static_cast<int>(i)}] = At(item);
            if (absl::Status s = Value(item, f, sub); !s.ok()) return s;
          } else {
            if (map_ != nullptr) map_->fields_[{msg, name, static_cast<int>(i)}] = At(item);
            if (absl::Status s = Scalar(item, f, msg, /*repeated=*/true); !s.ok()) return s;
          }
        }
        continue;
      }
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        if (absl::Status s = Value(value, f, r->MutableMessage(msg, f)); !s.ok()) return s;
      } else {
        if (absl::Status s = Scalar(value, f, msg, /*repeated=*/false); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  // A message-typed value: well-known types from scalars, others from mappings.
  absl::Status Value(const YAML::Node& node, const pb::FieldDescriptor* f, pb::Message* sub) {
    const std::string& type = f->message_type()->full_name();
    if (type == "google.protobuf.Duration") {
      if (!node.IsScalar())
        return Error(node, absl::StrFormat("'%s' must be a duration such as 30s", f->name()));
      absl::Duration d;
      if (absl::Status s = ParseDuration(node, f, &d); !s.ok()) return s;
      ToDurationProto(d, static_cast<pb::Duration*>(sub));
      return absl::OkStatus();
    }
    if (type == "google.protobuf.Timestamp") {
      absl::Time t;
      std::string err;
      // absl::ParseTime also takes "infinite-future" and "infinite-past": no Timestamp.
      if (!node.IsScalar() || !absl::ParseTime(absl::RFC3339_full, node.Scalar(), &t, &err) ||
          t == absl::InfiniteFuture() || t == absl::InfinitePast()) {
        return Error(node, absl::StrFormat("'%s' must be an RFC 3339 time such as "
                                           "2026-09-21T08:00:00Z",
                                           f->name()));
      }
      SetTimestamp(t, static_cast<pb::Timestamp*>(sub));
      return absl::OkStatus();
    }
    return Message(node, sub);
  }

  absl::Status ParseDuration(const YAML::Node& node, const pb::FieldDescriptor* f,
                             absl::Duration* out) {
    std::string text = node.Scalar();
    absl::Duration total = absl::ZeroDuration();
    bool negative = false;
    std::string rest = text;
    if (!rest.empty() && rest[0] == '-') {
      negative = true;
      rest = rest.substr(1);
    }
    double number = 0;
    if (absl::SimpleAtod(rest, &number)) {
      return Error(node, absl::StrFormat("'%s' needs a unit: write e.g. %ss or %sm, not a bare "
                                         "number",
                                         f->name(), text, text));
    }
    if (size_t d = rest.find('d'); d != std::string::npos) {
      int64_t days = 0;
      if (!absl::SimpleAtoi(rest.substr(0, d), &days) || days < 0) {
        return Error(node, absl::StrFormat("'%s': '%s' is not a duration; use e.g. 1d, 2d12h",
                                           f->name(), text));
      }
      total += absl::Hours(24) * days;  // Saturates (to infinity), where 24 * days would overflow.
      rest = rest.substr(d + 1);
    }
    if (!rest.empty()) {
      absl::Duration part;
      if (!absl::ParseDuration(rest, &part) || part < absl::ZeroDuration()) {
        return Error(node, absl::StrFormat("'%s': '%s' is not a duration; use e.g. 500ms, 30s, "
                                           "10m, 4h, 1d, 1h30m",
                                           f->name(), text));
      }
      total += part;
    }
    // "" and "-" hold no duration.
    if (rest.empty() && text.find('d') == std::string::npos) {
      return Error(node, absl::StrFormat("'%s': '%s' is not a duration; use e.g. 500ms, 30s, "
                                         "10m, 4h, 1d, 1h30m",
                                         f->name(), text));
    }
    // Days add up past what google.protobuf.Duration holds (+-10000 years).
    if (total > absl::Seconds(315'576'000'000)) {
      return Error(node, absl::StrFormat("'%s': '%s' is longer than 10000 years, the most a "
                                         "duration holds",
                                         f->name(), text));
    }
    *out = negative ? -total : total;
    return absl::OkStatus();
  }

  absl::Status Scalar(const YAML::Node& node, const pb::FieldDescriptor* f, pb::Message* msg,
                      bool repeated) {
    if (!node.IsScalar()) {
      return Error(node,
                   absl::StrFormat("'%s' must be a single value, got %s", f->name(), KindOf(node)));
    }
    const pb::Reflection* r = msg->GetReflection();
    const std::string& text = node.Scalar();
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        repeated ? r->AddString(msg, f, text) : r->SetString(msg, f, text);
        return absl::OkStatus();
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        if (text != "true" && text != "false") {
          return Error(node,
                       absl::StrFormat("'%s' must be true or false, got '%s'", f->name(), text));
        }
        repeated ? r->AddBool(msg, f, text == "true") : r->SetBool(msg, f, text == "true");
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        double v = 0;
        if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
          return Error(node, absl::StrFormat("'%s' must be a number, got '%s'", f->name(), text));
        }
        if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
          repeated ? r->AddDouble(msg, f, v) : r->SetDouble(msg, f, v);
        } else {
          repeated ? r->AddFloat(msg, f, static_cast<float>(v))
                   : r->SetFloat(msg, f, static_cast<float>(v));
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        int64_t v = 0;
        const bool is32 = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32;
        if (!absl::SimpleAtoi(text, &v) || (is32 && (v < std::numeric_limits<int32_t>::min() ||
                                                     v > std::numeric_limits<int32_t>::max()))) {
          return Error(node, absl::StrFormat("'%s' must be a whole number%s, got '%s'", f->name(),
                                             is32 ? " (32 bits)" : "", text));
        }
        if (is32) {
          repeated ? r->AddInt32(msg, f, static_cast<int32_t>(v))
                   : r->SetInt32(msg, f, static_cast<int32_t>(v));
        } else {
          repeated ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v = 0;
        const bool is32 = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32;
        if (text.empty() || text[0] == '-' || !absl::SimpleAtoi(text, &v) ||
            (is32 && v > std::numeric_limits<uint32_t>::max())) {
          return Error(node, absl::StrFormat("'%s' must be a whole number, 0 or more%s, got '%s'",
                                             f->name(), is32 ? " (32 bits)" : "", text));
        }
        if (is32) {
          repeated ? r->AddUInt32(msg, f, static_cast<uint32_t>(v))
                   : r->SetUInt32(msg, f, static_cast<uint32_t>(v));
        } else {
          repeated ? r->AddUInt64(msg, f, v) : r->SetUInt64(msg, f, v);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const pb::EnumDescriptor* e = f->enum_type();
        const pb::EnumValueDescriptor* v = e->FindValueByName(text);
        if (v == nullptr) {
          std::string upper = EnumPrefix(e);
          for (char c : text) upper += c == '-' ? '_' : absl::ascii_toupper(c);
          v = e->FindValueByName(upper);
        }
        if (v == nullptr || v->number() == 0) {
          std::vector<std::string> names;
          const std::string prefix = EnumPrefix(e);
          for (int i = 0; i < e->value_count(); ++i) {
            if (e->value(i)->number() == 0) continue;
            std::string n = e->value(i)->name();
            if (n.rfind(prefix, 0) == 0) n = absl::AsciiStrToLower(n.substr(prefix.size()));
            names.push_back(n);
          }
          return Error(node, absl::StrFormat("'%s' is not a %s for '%s'; use one of: %s", text,
                                             e->name(), f->name(), absl::StrJoin(names, ", ")));
        }
        repeated ? r->AddEnumValue(msg, f, v->number()) : r->SetEnumValue(msg, f, v->number());
        return absl::OkStatus();
      }
      default:
        return Error(node, absl::StrFormat("'%s' has a type YAML cannot set", f->name()));
    }
  }

  absl::Status Error(const YAML::Node& node, std::string_view what) const {
    const SourceLocation at = At(node);
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d:%d: %s", file_, at.line, at.column, what));
  }

  std::string file_;
  YamlSourceMap* map_;
};

namespace {

// Where a second YAML document starts, if `text` has one. Not YAML::LoadAll: in yaml-cpp
// 0.7 it loops for ever on some malformed text, allocating a document each time until the
// machine runs out of memory (",}" is enough; jbeder/yaml-cpp#1040, fixed upstream by
// #1319). Here the parser is asked for two documents at most.
std::optional<YAML::Mark> SecondDocument(std::string_view text) {
  class DocumentStarts : public YAML::EventHandler {
   public:
    void OnDocumentStart(const YAML::Mark& mark) override { last = mark; }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
    YAML::Mark last;
  };
  std::istringstream in{std::string(text)};
  YAML::Parser parser(in);
  DocumentStarts starts;
  if (!parser.HandleNextDocument(starts) || !parser.HandleNextDocument(starts)) {
    return std::nullopt;
  }
  return starts.last;
}

}  // namespace

absl::Status ParseYamlToProto(std::string_view yaml, std::string_view file, pb::Message* out,
                              YamlSourceMap* map) {
  out->Clear();
  // Protobuf strings hold UTF-8 only: a message with other bytes in a string does not
  // survive serialization (a rule set is stored in the log, its text included). Checked on
  // the whole text, with protobuf's own test, before YAML sees it.
  const int valid =
      pb::internal::UTF8SpnStructurallyValid(pb::StringPiece(yaml.data(), yaml.size()));
  if (static_cast<size_t>(valid) != yaml.size()) {
    const std::string_view before = yaml.substr(0, static_cast<size_t>(valid));
    const size_t line_start = before.rfind('\n');
    const int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    const size_t column =
        1 + (line_start == std::string_view::npos ? before.size() : before.size() - line_start - 1);
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d:%d: byte 0x%02x is not valid UTF-8; save the file as UTF-8", file,
                        line, column, static_cast<unsigned char>(yaml[valid])));
  }
  YamlProtoParser parser{std::string(file), map};
  YAML::Node root;
  std::optional<YAML::Mark> second;
  try {
    root = YAML::Load(std::string(yaml));
    if (root.IsDefined() && !root.IsNull()) second = SecondDocument(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("%s:%d:%d: not valid YAML: %s", file,
                                                      e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: is empty; it must hold a mapping of %s fields", file,
                        out->GetDescriptor()->full_name()));
  }
  if (second.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s:%d: holds more than one YAML document; put everything in one", file, second->line + 1));
  }
  try {
    return parser.Message(root, out);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d:%d: %s", file, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
}

namespace {

std::string ShortEnumName(const pb::EnumValueDescriptor* v) {
  const std::string prefix = EnumPrefix(v->type());
  std::string name = v->name();
  if (name.rfind(prefix, 0) == 0) name = absl::AsciiStrToLower(name.substr(prefix.size()));
  return name;
}

void EmitMessage(const pb::Message& m, YAML::Emitter& out);

// The shortest text that reads back as the same double.
std::string ShortestDouble(double v) {
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

void EmitScalar(const pb::Message& m, const pb::FieldDescriptor* f, int index, YAML::Emitter& out) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING:
      out << YAML::DoubleQuoted << (rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      out << ((rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false");
      return;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      out << ShortestDouble(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      out << ShortestDouble(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_INT32:
      out << (rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_INT64:
      out << (rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      out << (rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      out << (rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      out << ShortEnumName(rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f));
      return;
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      const pb::Message& sub = rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f);
      const std::string& type = f->message_type()->full_name();
      if (type == "google.protobuf.Duration") {
        // FormatDuration writes zero as "0", a bare number the parser refuses.
        const absl::Duration d = FromDurationProto(static_cast<const pb::Duration&>(sub));
        out << (d == absl::ZeroDuration() ? std::string("0s") : absl::FormatDuration(d));
      } else if (type == "google.protobuf.Timestamp") {
        out << absl::FormatTime(absl::RFC3339_full,
                                FromTimestamp(static_cast<const pb::Timestamp&>(sub)),
                                absl::UTCTimeZone());
      } else {
        EmitMessage(sub, out);
      }
      return;
    }
  }
}

void EmitMessage(const pb::Message& m, YAML::Emitter& out) {
  std::vector<const pb::FieldDescriptor*> fields;
  m.GetReflection()->ListFields(m, &fields);
  out << YAML::BeginMap;
  for (const pb::FieldDescriptor* f : fields) {
    out << YAML::Key << f->name() << YAML::Value;
    if (f->is_repeated()) {
      out << YAML::BeginSeq;
      for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) EmitScalar(m, f, i, out);
      out << YAML::EndSeq;
    } else {
      EmitScalar(m, f, -1, out);
    }
  }
  out << YAML::EndMap;
}

}  // namespace

std::string ProtoToYaml(const pb::Message& message) {
  YAML::Emitter out;
  EmitMessage(message, out);
  return std::string(out.c_str()) + "\n";
}

absl::Status ParseYamlFileToProto(const std::string& path, pb::Message* out, YamlSourceMap* map) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrFormat("cannot read %s: no such file or not readable", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseYamlToProto(text.str(), path, out, map);
}

}  // namespace cityops::kernel
