#include "analysis/export.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "analysis/open_log.h"
#include "cityops/v1/api.pb.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/type.pb.h"
#include "google/protobuf/util/time_util.h"
#include "google/protobuf/util/type_resolver.h"
#include "google/protobuf/util/type_resolver_util.h"
#include "kernel/proto_time.h"
#include "projections/stored_event.h"

namespace cityops::analysis {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::util::TimeUtil;
using kernel::EventLog;
using kernel::Partition;
using kernel::Sequence;

const google::protobuf::OneofDescriptor& PayloadOneof() {
  return *v1::Event::descriptor()->FindOneofByName("payload");
}

// One CSV column: the path of fields from the Event to the value.
struct Column {
  std::string name;
  std::vector<const FieldDescriptor*> path;
  // The whole value as JSON (repeated fields; a message that contains itself).
  bool json = false;
  int type = 0;  // The payload field number of its type's block; 0: the envelope.
};

bool IsWellKnownTime(const Descriptor* d) {
  return d == google::protobuf::Timestamp::descriptor() ||
         d == google::protobuf::Duration::descriptor();
}

// The columns of message `d` under `prefix`, in field declaration order: singular
// messages flattened (Timestamp and Duration are one column each), repeated fields and
// messages already on the path (a recursive type) one JSON column each.
void AddColumns(const Descriptor* d, const std::string& prefix, int type,
                std::vector<const FieldDescriptor*>& path, std::vector<const Descriptor*>& open,
                std::vector<Column>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (d == v1::Event::descriptor() && f->containing_oneof() == &PayloadOneof()) continue;
    path.push_back(f);
    const std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    if (f->is_repeated()) {
      out->push_back({name, path, /*json=*/true, type});
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
               !IsWellKnownTime(f->message_type())) {
      const Descriptor* m = f->message_type();
      if (std::find(open.begin(), open.end(), m) != open.end()) {
        out->push_back({name, path, /*json=*/true, type});
      } else {
        open.push_back(m);
        AddColumns(m, name, type, path, open, out);
        open.pop_back();
      }
    } else {
      out->push_back({name, path, /*json=*/false, type});
    }
    path.pop_back();
  }
}

// Payload field numbers for the type names; every type when `types` is empty.
absl::StatusOr<std::vector<int>> SelectTypes(const std::vector<std::string>& types) {
  const google::protobuf::OneofDescriptor& payload = PayloadOneof();
  std::vector<int> selected;
  for (const std::string& given : types) {
    const std::string type(absl::StripAsciiWhitespace(given));  // "reading, case_opened"
    const FieldDescriptor* f = v1::Event::descriptor()->FindFieldByName(type);
    if (f == nullptr || f->containing_oneof() != &payload) {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown event type '%s' in --type; the types are: %s", type,
                          absl::StrJoin(EventTypeNames(), ", ")));
    }
    selected.push_back(f->number());
  }
  std::vector<int> ordered;  // In events.proto order, whatever the order of the flags.
  for (int i = 0; i < payload.field_count(); ++i) {
    const int number = payload.field(i)->number();
    if (selected.empty() || std::find(selected.begin(), selected.end(), number) != selected.end()) {
      ordered.push_back(number);
    }
  }
  return ordered;
}

std::vector<Column> MakeColumns(const std::vector<int>& types) {
  std::vector<Column> columns;
  std::vector<const FieldDescriptor*> path;
  std::vector<const Descriptor*> open = {v1::Event::descriptor()};
  AddColumns(v1::Event::descriptor(), "", 0, path, open, &columns);
  columns.push_back({"type", {}, false, 0});
  for (int number : types) {
    const FieldDescriptor* f = v1::Event::descriptor()->FindFieldByNumber(number);
    path.push_back(f);
    open.push_back(f->message_type());
    AddColumns(f->message_type(), absl::StrCat("payload.", f->name()), number, path, open,
               &columns);
    open.pop_back();
    path.pop_back();
  }
  return columns;
}

std::string Double(double v) {
  // As the JSON mapping writes them: the shortest text that reads back as the same value.
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, end);
}

// A JSON string literal: quotes, backslashes and control characters escaped, UTF-8 kept.
std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

// One value of a scalar field (or a repeated field's element at `index` >= 0).
std::string ScalarText(const Message& m, const FieldDescriptor* f, int index, bool as_json) {
  const Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case FieldDescriptor::CPPTYPE_INT64: {
      const std::string v =
          absl::StrCat(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      return as_json ? absl::StrCat("\"", v, "\"") : v;  // 64-bit integers are strings in JSON.
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const std::string v =
          absl::StrCat(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      return as_json ? absl::StrCat("\"", v, "\"") : v;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return Double(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return Double(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_ENUM: {
      const int v = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      const google::protobuf::EnumValueDescriptor* e = f->enum_type()->FindValueByNumber(v);
      const std::string name = e != nullptr ? e->name() : absl::StrCat(v);
      return as_json ? JsonString(name) : name;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      if (f->type() == FieldDescriptor::TYPE_BYTES) v = absl::Base64Escape(v);
      return as_json ? JsonString(v) : v;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return "";
}

std::string TimeText(const Message& m) {
  // Timestamp and Duration both hold `seconds` and `nanos`.
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  const int64_t seconds = r->GetInt64(m, d->FindFieldByName("seconds"));
  const int32_t nanos = r->GetInt32(m, d->FindFieldByName("nanos"));
  if (d == google::protobuf::Timestamp::descriptor()) {
    google::protobuf::Timestamp t;
    t.set_seconds(seconds);
    t.set_nanos(nanos);
    return TimeUtil::ToString(t);
  }
  google::protobuf::Duration t;
  t.set_seconds(seconds);
  t.set_nanos(nanos);
  return TimeUtil::ToString(t);
}

std::string MessageJson(const Message& m) {
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(m, &json, EventJsonOptions()).ok()) return "";
  return json;
}

// The cell of `column` for `event`: empty when a message on the path, or a field with
// presence, is not set; a proto3 scalar without presence shows its value, default or not.
std::string Cell(const v1::Event& event, const Column& column) {
  const Message* m = &event;
  for (size_t i = 0; i + 1 < column.path.size(); ++i) {
    const FieldDescriptor* f = column.path[i];
    if (!m->GetReflection()->HasField(*m, f)) return "";
    m = &m->GetReflection()->GetMessage(*m, f);
  }
  const FieldDescriptor* f = column.path.back();
  const Reflection* r = m->GetReflection();
  if (f->is_repeated()) {
    std::string out = "[";
    const int n = r->FieldSize(*m, f);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out += ",";
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const Message& element = r->GetRepeatedMessage(*m, f, i);
        out += IsWellKnownTime(f->message_type()) ? JsonString(TimeText(element))
                                                  : MessageJson(element);
      } else {
        out += ScalarText(*m, f, i, /*as_json=*/true);
      }
    }
    return out + "]";
  }
  if (f->has_presence() && !r->HasField(*m, f)) return "";
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    const Message& value = r->GetMessage(*m, f);
    return column.json ? MessageJson(value) : TimeText(value);
  }
  return ScalarText(*m, f, -1, /*as_json=*/false);
}

// RFC 4180: quoted when it holds a comma, a quote, CR or LF; quotes doubled.
void AppendCsvField(std::string_view value, std::string* line) {
  if (value.find_first_of(",\"\r\n") == std::string_view::npos) {
    line->append(value);
    return;
  }
  line->push_back('"');
  for (char c : value) {
    if (c == '"') line->push_back('"');
    line->push_back(c);
  }
  line->push_back('"');
}

std::string TypeName(int number) {
  const FieldDescriptor* f = v1::Event::descriptor()->FindFieldByNumber(number);
  return f != nullptr ? f->name() : "";
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

// Caches what the JSON printer asks about types. protobuf's MessageToJsonString (3.21)
// describes every type again for each message it prints, which makes printing a log
// event by event several times slower than the rest of the export together.
class CachingTypeResolver : public google::protobuf::util::TypeResolver {
 public:
  CachingTypeResolver()
      : base_(google::protobuf::util::NewTypeResolverForDescriptorPool(
            kTypeUrlPrefix, google::protobuf::DescriptorPool::generated_pool())) {}

  google::protobuf::util::Status ResolveMessageType(const std::string& type_url,
                                                    google::protobuf::Type* type) override {
    auto it = types_.find(type_url);
    if (it == types_.end()) {
      google::protobuf::Type resolved;
      if (auto s = base_->ResolveMessageType(type_url, &resolved); !s.ok()) return s;
      it = types_.emplace(type_url, std::move(resolved)).first;
    }
    *type = it->second;
    return google::protobuf::util::Status();
  }

  google::protobuf::util::Status ResolveEnumType(const std::string& type_url,
                                                 google::protobuf::Enum* enum_type) override {
    auto it = enums_.find(type_url);
    if (it == enums_.end()) {
      google::protobuf::Enum resolved;
      if (auto s = base_->ResolveEnumType(type_url, &resolved); !s.ok()) return s;
      it = enums_.emplace(type_url, std::move(resolved)).first;
    }
    *enum_type = it->second;
    return google::protobuf::util::Status();
  }

  static constexpr char kTypeUrlPrefix[] = "type.googleapis.com";

 private:
  std::unique_ptr<google::protobuf::util::TypeResolver> base_;
  std::map<std::string, google::protobuf::Type> types_;
  std::map<std::string, google::protobuf::Enum> enums_;
};

// Writes events as JSON lines by the protobuf JSON mapping, in batches. protobuf (3.21)
// describes the types again for every message it prints; printing a batch of events as
// one ListEventsResponse and cutting its `events` array into lines gives the same text as
// printing them one by one, several times faster.
class JsonLinesWriter {
 public:
  explicit JsonLinesWriter(std::ostream& out)
      : out_(out),
        options_(EventJsonOptions()),
        type_url_(absl::StrCat(CachingTypeResolver::kTypeUrlPrefix, "/",
                               v1::ListEventsResponse::descriptor()->full_name())) {}

  absl::Status Add(const v1::Event& event) {
    event.SerializeToString(&bytes_);
    // ListEventsResponse.events (field 1, length-delimited) holding the event.
    batch_.push_back(static_cast<char>((1 << 3) | 2));
    for (uint64_t n = bytes_.size();; n >>= 7) {
      if (n < 0x80) {
        batch_.push_back(static_cast<char>(n));
        break;
      }
      batch_.push_back(static_cast<char>((n & 0x7f) | 0x80));
    }
    batch_ += bytes_;
    if (++count_ == kBatch) return Flush();
    return absl::OkStatus();
  }

  absl::Status Flush() {
    if (count_ == 0) return absl::OkStatus();
    json_.clear();
    auto printed =
        google::protobuf::util::BinaryToJsonString(&resolver_, type_url_, batch_, &json_, options_);
    if (!printed.ok()) {
      return absl::InternalError(
          absl::StrCat("cannot print events as JSON: ", std::string(printed.message())));
    }
    // {"events":[{...},{...}],"nextFrom":"0"}: each object of the array is one line.
    size_t i = json_.find("\"events\":[");
    size_t lines = 0;
    if (i != std::string::npos) {
      i += 10;
      while (i < json_.size() && json_[i] == '{') {
        const size_t start = i;
        int depth = 0;
        bool in_string = false;
        for (; i < json_.size(); ++i) {
          const char c = json_[i];
          if (in_string) {
            if (c == '\\') {
              ++i;
            } else if (c == '"') {
              in_string = false;
            }
          } else if (c == '"') {
            in_string = true;
          } else if (c == '{' || c == '[') {
            ++depth;
          } else if (c == '}' || c == ']') {
            if (--depth == 0) break;
          }
        }
        out_.write(json_.data() + start, static_cast<std::streamsize>(i + 1 - start));
        out_.put('\n');
        ++lines;
        ++i;
        if (i < json_.size() && json_[i] == ',') ++i;
      }
    }
    if (lines != count_) {
      return absl::InternalError(absl::StrFormat(
          "printing %u events as JSON gave %u lines; please report this", count_, lines));
    }
    batch_.clear();
    count_ = 0;
    return absl::OkStatus();
  }

 private:
  static constexpr size_t kBatch = 256;
  std::ostream& out_;
  const google::protobuf::util::JsonPrintOptions options_;
  const std::string type_url_;
  CachingTypeResolver resolver_;
  std::string bytes_;
  std::string batch_;
  std::string json_;
  size_t count_ = 0;
};

}  // namespace

google::protobuf::util::JsonPrintOptions EventJsonOptions() {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  return options;
}

std::vector<std::string> EventTypeNames() {
  std::vector<std::string> names;
  const google::protobuf::OneofDescriptor& payload = PayloadOneof();
  for (int i = 0; i < payload.field_count(); ++i) names.push_back(payload.field(i)->name());
  return names;
}

absl::StatusOr<std::vector<std::string>> CsvColumns(const std::vector<std::string>& types) {
  absl::StatusOr<std::vector<int>> selected = SelectTypes(types);
  if (!selected.ok()) return selected.status();
  std::vector<std::string> names;
  for (const Column& c : MakeColumns(*selected)) names.push_back(c.name);
  return names;
}

absl::StatusOr<ExportResult> ExportEvents(const ExportOptions& options, std::ostream& out,
                                          std::ostream& err) {
  // Check the flags before taking the log: a typo should not wait for a lock.
  if (absl::StatusOr<std::vector<int>> types = SelectTypes(options.types); !types.ok()) {
    return types.status();
  }
  absl::StatusOr<std::unique_ptr<EventLog>> log = OpenLogToRead(options.data_dir, "export");
  if (!log.ok()) return log.status();
  return ExportEvents(**log, options, out, err);
}

absl::StatusOr<ExportResult> ExportEvents(const EventLog& log, const ExportOptions& options,
                                          std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::vector<int>> types = SelectTypes(options.types);
  if (!types.ok()) return types.status();
  const bool all_types = options.types.empty();
  std::vector<bool> wanted_type;  // By payload field number.
  for (int number : *types) {
    if (static_cast<size_t>(number) >= wanted_type.size()) wanted_type.resize(number + 1, false);
    wanted_type[number] = true;
  }

  absl::Time from = absl::InfinitePast();
  absl::Time to = absl::InfiniteFuture();
  if (!options.from.empty()) {
    absl::StatusOr<absl::Time> t = ParseTimeFlag("--from", options.from);
    if (!t.ok()) return t.status();
    from = *t;
  }
  if (!options.to.empty()) {
    absl::StatusOr<absl::Time> t = ParseTimeFlag("--to", options.to);
    if (!t.ok()) return t.status();
    to = *t;
  }
  if (from >= to) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--from %s is not before --to %s; the window is [from, to): give a later --to",
        options.from, options.to));
  }

  const std::vector<Partition> present = log.Partitions();
  std::vector<Partition> partitions;
  if (options.partition.has_value()) {
    const Partition wanted(*options.partition);
    if (std::find(present.begin(), present.end(), wanted) == present.end()) {
      std::vector<uint32_t> numbers;
      for (Partition p : present) numbers.push_back(p.value());
      return absl::InvalidArgumentError(
          absl::StrFormat("event log %s has no partition %u; its partitions are: %s",
                          options.data_dir, *options.partition,
                          numbers.empty() ? "none (it is empty)" : absl::StrJoin(numbers, ", ")));
    }
    partitions.push_back(wanted);
  } else {
    partitions = present;
  }

  const std::vector<Column> columns =
      options.format == ExportFormat::kCsv ? MakeColumns(*types) : std::vector<Column>();

  absl::StatusOr<std::unique_ptr<OutputFile>> file = OutputFile::Create(options.output, out);
  if (!file.ok()) return file.status();
  std::ostream& sink = (*file)->stream();
  std::string line;
  if (options.format == ExportFormat::kCsv) {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (i > 0) line.push_back(',');
      AppendCsvField(columns[i].name, &line);
    }
    line += "\r\n";
    sink << line;
  }

  uint64_t total = 0;
  for (Partition p : partitions) total += log.NextSequence(p).value();
  StopScope stop;
  ProgressOptions progress_options;
  progress_options.what = "export";
  progress_options.total = total;
  progress_options.unit = "events scanned";
  progress_options.style = options.progress_style;
  progress_options.clock = options.clock;
  Progress progress(err, progress_options);

  ExportResult result;
  absl::Time min_time = absl::InfiniteFuture();
  absl::Time max_time = absl::InfinitePast();
  v1::Event event;
  JsonLinesWriter json_lines(sink);
  absl::Status failure;
  bool stopped = false;
  for (Partition partition : partitions) {
    absl::Status scanned =
        log.Scan(partition, Sequence(0), [&](Sequence sequence, std::string_view value) {
          if (stop.requested()) {
            stopped = true;
            return false;
          }
          ++result.scanned;
          progress.Advance(1);
          projections::StoredEnvelope envelope;
          if (!projections::DecodeEnvelope(value, &envelope)) {
            // Not well-formed: ParseEvent says what is wrong, with the position.
            failure = EventLog::ParseEvent({partition, sequence}, value, &event);
            if (failure.ok()) {
              failure = absl::DataLossError(
                  absl::StrFormat("event %u/%u of %s parses but its envelope does not decode",
                                  partition.value(), sequence.value(), options.data_dir));
            }
            return false;
          }
          min_time = std::min(min_time, envelope.event_time);
          max_time = std::max(max_time, envelope.event_time);
          if (envelope.event_time < from || envelope.event_time >= to) return true;
          if (!envelope.stream_id.starts_with(options.stream_prefix)) return true;
          if (!all_types) {
            const int type = static_cast<int>(envelope.payload);
            if (type <= 0 || static_cast<size_t>(type) >= wanted_type.size() ||
                !wanted_type[type]) {
              return true;
            }
          }
          failure = EventLog::ParseEvent({partition, sequence}, value, &event);
          if (!failure.ok()) return false;
          if (options.format == ExportFormat::kJsonLines) {
            failure = json_lines.Add(event);
            if (!failure.ok()) return false;
          } else {
            const int type = static_cast<int>(event.payload_case());
            line.clear();
            for (size_t i = 0; i < columns.size(); ++i) {
              if (i > 0) line.push_back(',');
              const Column& c = columns[i];
              if (c.type != 0 && c.type != type) continue;  // Another type's block: empty.
              if (c.path.empty()) {
                line += TypeName(type);  // The `type` column.
                continue;
              }
              AppendCsvField(Cell(event, c), &line);
            }
            line += "\r\n";
            sink << line;
          }
          ++result.exported;
          return true;
        });
    if (!scanned.ok()) return scanned;
    if (!failure.ok()) return failure;
    if (stopped) break;
  }
  if (!stopped && options.format == ExportFormat::kJsonLines) {
    if (absl::Status s = json_lines.Flush(); !s.ok()) return s;
  }
  if (stopped) {
    return StopScope::Stopped(
        options.output == "-"
            ? absl::StrFormat("standard output got the first %u matching events", result.exported)
            : absl::StrFormat("nothing was written to %s", options.output));
  }
  if (result.exported == 0 && (!options.from.empty() || !options.to.empty()) &&
      min_time <= max_time && (to <= min_time || from > max_time)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "no events in [%s, %s): the events of %s%s span %s .. %s; choose --from/--to within "
        "that range",
        options.from.empty() ? "the beginning" : options.from,
        options.to.empty() ? "the end" : options.to, options.data_dir,
        options.partition.has_value() ? absl::StrFormat(" (partition %u)", *options.partition) : "",
        Rfc3339(min_time), Rfc3339(max_time)));
  }
  if (absl::Status s = (*file)->Commit(); !s.ok()) return s;
  result.summary = progress.Finish();
  err << absl::StrFormat("export: wrote %s of them (%s) to %s\n", WithThousands(result.exported),
                         options.format == ExportFormat::kCsv ? "CSV" : "JSON lines",
                         options.output == "-" ? "standard output" : options.output);
  return result;
}

}  // namespace cityops::analysis
