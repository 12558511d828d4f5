// `cityops export` (analysis/export.h) over a log built in process: a small city's typhoon
// stored as ingest stores it, with the rules stage's alerts, cases and tickets. Exports
// are read back and compared with a direct scan of the log: every JSON line is exactly
// the stored event; the CSV has a row per event under the schema's header; filters
// select exactly what the test selects itself; bad arguments get errors that say what to
// do, and leave no output file behind.
#include "analysis/export.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cityops/v1/events.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "kernel/clock.h"
#include "kernel/event_log.h"
#include "kernel/proto_time.h"
#include "projections/rules/compile.h"
#include "projections/rules/default_rules.h"
#include "tests/testing/derived_events.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/text_file.h"
#include "tests/testing/typhoon_log.h"

namespace cityops::analysis {
namespace {

using testing::ReadFile;

namespace fs = std::filesystem;
using google::protobuf::util::TimeUtil;
using kernel::EventLog;

std::unique_ptr<EventLog> OpenLog(const std::string& path) {
  absl::StatusOr<std::unique_ptr<EventLog>> log =
      EventLog::Open({.path = path, .durability = kernel::Durability::kBuffered});
  if (!log.ok()) FAIL(log.status().ToString());
  return *std::move(log);
}

// One typhoon log for every test case here, built once and only read.
struct World {
  testing::TempDir dir;
  std::string path;
  absl::Time start;
  std::vector<v1::Event> events;  // Every event, partition by partition, as stored.
};

const World& TheWorld() {
  // Destroyed at exit, which removes its directory.
  static const std::unique_ptr<World> world = [] {
    auto w = std::make_unique<World>();
    w->path = w->dir.Sub("log");
    std::unique_ptr<EventLog> log = OpenLog(w->path);
    testing::TyphoonLog typhoon(log.get(), /*partitions=*/3, /*devices=*/400, /*seed=*/11);
    absl::StatusOr<rules::LoadedRuleSet> rules =
        rules::LoadRuleSetText(rules::DefaultRuleSetYaml(), rules::kDefaultRuleSetFile);
    REQUIRE(rules.ok());
    typhoon.Activate(*rules, typhoon.start());
    typhoon.Register();
    typhoon.Readings(typhoon.start() + absl::Hours(2));
    typhoon.DeriveAll();
    w->start = typhoon.start();
    for (const auto& partition : testing::AllEvents(*log)) {
      w->events.insert(w->events.end(), partition.begin(), partition.end());
    }
    return w;
  }();
  return *world;
}

ExportOptions Options(const std::string& output) {
  ExportOptions options;
  options.data_dir = TheWorld().path;
  options.output = output;
  options.progress_style = ProgressOptions::Style::kPlain;
  return options;
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string TypeOf(const v1::Event& e) {
  return v1::Event::descriptor()->FindFieldByNumber(e.payload_case())->name();
}

// RFC 4180 records: fields split at commas outside quotes, "" inside quotes is a quote,
// records end in CRLF outside quotes.
std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field.push_back(c);
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      row.push_back(std::move(field));
      field.clear();
      rows.push_back(std::move(row));
      row.clear();
      ++i;
    } else {
      field.push_back(c);
    }
  }
  REQUIRE(field.empty());
  REQUIRE(row.empty());
  return rows;
}

TEST_CASE("a JSON-lines export holds every event, each line exactly the event stored", "[export]") {
  const World& w = TheWorld();
  const std::string out = w.dir.Sub("all.jsonl");
  std::ostringstream stdout_text;
  std::ostringstream err;
  absl::StatusOr<ExportResult> result = ExportEvents(Options(out), stdout_text, err);
  REQUIRE(result.ok());
  CHECK(stdout_text.str().empty());
  CHECK(result->exported == w.events.size());
  CHECK(result->scanned == w.events.size());
  CHECK_THAT(err.str(), Catch::Contains(absl::StrCat("wrote ", WithThousands(w.events.size()))) &&
                            Catch::Contains("/s)"));
  const std::vector<std::string> lines = Lines(out);
  REQUIRE(lines.size() == w.events.size());
  std::set<std::string> types;
  for (size_t i = 0; i < lines.size(); ++i) {
    v1::Event parsed;
    REQUIRE(google::protobuf::util::JsonStringToMessage(lines[i], &parsed).ok());
    INFO("line " << i + 1 << ": " << lines[i]);
    CHECK(parsed.SerializeAsString() == w.events[i].SerializeAsString());
    types.insert(TypeOf(w.events[i]));
  }
  // The log has what the export must handle: readings, registrations, derived events.
  for (const char* type : {"reading", "device_registered", "ruleset_activated", "alert_raised",
                           "case_opened", "ticket_issued"}) {
    CHECK(types.contains(type));
  }
}

TEST_CASE("a CSV export has the schema's header and a row per event with its values", "[export]") {
  const World& w = TheWorld();
  ExportOptions options = Options(w.dir.Sub("all.csv"));
  options.format = ExportFormat::kCsv;
  std::ostringstream out;
  std::ostringstream err;
  REQUIRE(ExportEvents(options, out, err).ok());
  const std::vector<std::vector<std::string>> rows = ParseCsv(ReadFile(options.output));
  absl::StatusOr<std::vector<std::string>> header = CsvColumns({});
  REQUIRE(header.ok());
  REQUIRE(rows.size() == w.events.size() + 1);
  CHECK(rows[0] == *header);
  std::map<std::string, size_t> column;
  for (size_t i = 0; i < header->size(); ++i) column[(*header)[i]] = i;
  for (const char* name :
       {"partition", "sequence", "stream_id", "event_time", "provenance.kafka.offset", "type",
        "payload.reading.device_id", "payload.reading.flood_gauge.water_depth_cm",
        "payload.alert_raised.value", "payload.alert_raised.readings",
        "payload.ticket_issued.due_time", "payload.ruleset_activated.rule_set.rules"}) {
    INFO(name);
    REQUIRE(column.contains(name));
  }
  int readings = 0;
  int alerts = 0;
  int rulesets = 0;
  for (size_t i = 0; i < w.events.size(); ++i) {
    const v1::Event& e = w.events[i];
    const std::vector<std::string>& row = rows[i + 1];
    INFO("event " << e.partition() << "/" << e.sequence());
    REQUIRE(row.size() == header->size());
    CHECK(row[column["partition"]] == absl::StrCat(e.partition()));
    CHECK(row[column["sequence"]] == absl::StrCat(e.sequence()));
    CHECK(row[column["stream_id"]] == e.stream_id());
    CHECK(row[column["type"]] == TypeOf(e));
    CHECK(row[column["event_time"]] == TimeUtil::ToString(e.event_time()));
    if (e.has_reading()) {
      ++readings;
      CHECK(row[column["payload.reading.device_id"]] == e.reading().device_id());
      CHECK(row[column["provenance.kafka.offset"]] ==
            absl::StrCat(e.provenance().kafka().offset()));
      const std::string& depth = row[column["payload.reading.flood_gauge.water_depth_cm"]];
      if (e.reading().flood_gauge().has_water_depth_cm()) {
        CHECK(std::stod(depth) == e.reading().flood_gauge().water_depth_cm());
      } else {
        CHECK(depth.empty());  // Not measured (or not a flood gauge): empty, not 0.
      }
      CHECK(row[column["payload.alert_raised.value"]].empty());  // Another type's column.
    }
    if (e.has_ruleset_activated()) {
      // Multi-line YAML with quotes and commas: quoted by RFC 4180, read back whole.
      const std::string& yaml = row[column["payload.ruleset_activated.source_yaml"]];
      CHECK(yaml == e.ruleset_activated().source_yaml());
      CHECK(yaml.find('\n') != std::string::npos);
      CHECK(yaml.find(',') != std::string::npos);
      ++rulesets;
    }
    if (e.has_alert_raised()) {
      ++alerts;
      CHECK(std::stod(row[column["payload.alert_raised.value"]]) == e.alert_raised().value());
      // Repeated fields are one JSON array of their elements by the JSON mapping.
      const std::string& refs = row[column["payload.alert_raised.readings"]];
      CHECK(refs.front() == '[');
      CHECK(refs.back() == ']');
      CHECK_THAT(refs, Catch::Contains(absl::StrCat(
                           "\"sequence\":\"", e.alert_raised().readings(0).sequence(), "\"")));
      CHECK(row[column["payload.reading.device_id"]].empty());
    }
  }
  CHECK(readings > 0);
  CHECK(alerts > 0);
  CHECK(rulesets == 1);
}

TEST_CASE("the CSV header depends on the flags, never on the log", "[export]") {
  const World& w = TheWorld();
  // Another log, with nothing but one reading.
  const std::string other = w.dir.Sub("tiny");
  {
    std::unique_ptr<EventLog> log = OpenLog(other);
    kernel::AppendBatch batch{kernel::Partition(0)};
    v1::Event e;
    e.set_stream_id("device/x");
    e.mutable_reading()->set_device_id("x");
    batch.Add(std::move(e));
    REQUIRE(log->Append(std::move(batch)).ok());
  }
  for (const std::vector<std::string>& types :
       {std::vector<std::string>{}, std::vector<std::string>{"reading"},
        std::vector<std::string>{"ticket_issued", "alert_raised"}}) {
    std::vector<std::string> headers;
    for (const std::string& dir : {w.path, other}) {
      ExportOptions options = Options(absl::StrCat(w.dir.Sub("header-"), headers.size(), ".csv"));
      options.data_dir = dir;
      options.format = ExportFormat::kCsv;
      options.types = types;
      std::ostringstream out;
      std::ostringstream err;
      REQUIRE(ExportEvents(options, out, err).ok());
      headers.push_back(ReadFile(options.output).substr(0, ReadFile(options.output).find("\r\n")));
    }
    CHECK(headers[0] == headers[1]);
    absl::StatusOr<std::vector<std::string>> columns = CsvColumns(types);
    REQUIRE(columns.ok());
    CHECK(headers[0] == absl::StrJoin(*columns, ","));
  }
  // The selected types' blocks come in events.proto order, whatever the flag's order.
  absl::StatusOr<std::vector<std::string>> a = CsvColumns({"ticket_issued", "alert_raised"});
  absl::StatusOr<std::vector<std::string>> b = CsvColumns({"alert_raised", "ticket_issued"});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == *b);
  CHECK(std::find(a->begin(), a->end(), "payload.reading.device_id") == a->end());
}

// The (partition, sequence) of each JSON line.
std::vector<std::pair<uint32_t, uint64_t>> Positions(const std::string& jsonl) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n', absl::SkipEmpty())) {
    v1::Event e;
    REQUIRE(google::protobuf::util::JsonStringToMessage(std::string(line), &e).ok());
    out.emplace_back(e.partition(), e.sequence());
  }
  return out;
}

TEST_CASE("filters select exactly the events of the time range, partition, prefix and types",
          "[export]") {
  const World& w = TheWorld();
  const absl::Time from = w.start + absl::Minutes(30);
  const absl::Time to = w.start + absl::Minutes(75);
  struct Filter {
    std::string name;
    std::function<void(ExportOptions&)> set;
    std::function<bool(const v1::Event&)> wants;
  };
  const std::vector<Filter> filters = {
      {"time range",
       [&](ExportOptions& o) {
         o.from = absl::FormatTime(absl::RFC3339_full, from, absl::UTCTimeZone());
         o.to = absl::FormatTime(absl::RFC3339_full, to, absl::UTCTimeZone());
       },
       [&](const v1::Event& e) {
         const absl::Time t = kernel::FromTimestamp(e.event_time());
         return t >= from && t < to;
       }},
      {"partition", [](ExportOptions& o) { o.partition = 1; },
       [](const v1::Event& e) { return e.partition() == 1; }},
      {"stream prefix", [](ExportOptions& o) { o.stream_prefix = "case/"; },
       [](const v1::Event& e) { return e.stream_id().starts_with("case/"); }},
      {"types",
       [](ExportOptions& o) {
         o.types = {"ticket_issued", " alert_cleared"};
       },
       [](const v1::Event& e) { return e.has_ticket_issued() || e.has_alert_cleared(); }},
      {"all at once",
       [&](ExportOptions& o) {
         o.from = absl::FormatTime(absl::RFC3339_full, from, absl::UTCTimeZone());
         o.partition = 0;
         o.stream_prefix = "alert/";
         o.types = {"alert_raised"};
       },
       [&](const v1::Event& e) {
         return kernel::FromTimestamp(e.event_time()) >= from && e.partition() == 0 &&
                e.stream_id().starts_with("alert/") && e.has_alert_raised();
       }},
  };
  for (const Filter& f : filters) {
    INFO(f.name);
    ExportOptions options = Options("-");
    f.set(options);
    std::ostringstream out;
    std::ostringstream err;
    absl::StatusOr<ExportResult> result = ExportEvents(options, out, err);
    REQUIRE(result.ok());
    std::vector<std::pair<uint32_t, uint64_t>> expected;
    for (const v1::Event& e : w.events) {
      if (f.wants(e)) expected.emplace_back(e.partition(), e.sequence());
    }
    CHECK(!expected.empty());
    CHECK(expected.size() < w.events.size());
    CHECK(Positions(out.str()) == expected);
    CHECK(result->exported == expected.size());
    // With the data on standard output, the count and rate go to stderr.
    CHECK_THAT(err.str(), Catch::Contains("export: ") && Catch::Contains("to standard output"));
  }
}

bool Exists(const std::string& path) { return fs::exists(path); }

// No file at `path`, nor a temporary one beside it.
bool NothingLeft(const std::string& path) {
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path())) {
    if (entry.path().filename().string().starts_with(fs::path(path).filename().string())) {
      return false;
    }
  }
  return true;
}

TEST_CASE("bad arguments are refused with what to do, and no output file is left", "[export]") {
  const World& w = TheWorld();
  const std::string output = w.dir.Sub("refused.csv");
  std::ostringstream out;
  std::ostringstream err;

  SECTION("a time window before the log's first event names the log's range") {
    ExportOptions options = Options(output);
    options.from = "2020-01-01T00:00:00Z";
    options.to = "2020-01-02T00:00:00Z";
    absl::StatusOr<ExportResult> r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(
        std::string(r.status().message()),
        Catch::Contains("no events in [2020-01-01T00:00:00Z, 2020-01-02T00:00:00Z)") &&
            Catch::Contains(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", w.start, absl::UTCTimeZone())) &&
            Catch::Contains("choose --from/--to within that range"));
  }
  SECTION("an unknown type lists the valid ones") {
    ExportOptions options = Options(output);
    options.types = {"reading", "readings"};
    absl::StatusOr<ExportResult> r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(r.status().message()),
               Catch::Contains("unknown event type 'readings'") &&
                   Catch::Contains("reading, clock_tick, device_registered") &&
                   Catch::Contains("ruleset_activated"));
    CHECK(CsvColumns({"nope"}).status().code() == absl::StatusCode::kInvalidArgument);
  }
  SECTION("a log held by another handle (a running daemon) is refused with how to copy it") {
    std::unique_ptr<EventLog> held = OpenLog(w.path);
    absl::StatusOr<ExportResult> r = ExportEvents(Options(output), out, err);
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("is in use") &&
                                                      Catch::Contains(w.path) &&
                                                      Catch::Contains("cityops log backup"));
  }
  SECTION("malformed or inverted times, a missing partition, no log at all") {
    ExportOptions options = Options(output);
    options.from = "yesterday";
    absl::StatusOr<ExportResult> r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(r.status().message()),
               Catch::Contains("--from 'yesterday' is not an RFC 3339 time"));
    options.from = "2026-09-21T16:00:00Z";
    options.to = "2026-09-21T15:00:00Z";
    r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("is not before --to"));
    options = Options(output);
    options.partition = 9;
    r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(r.status().message()),
               Catch::Contains("has no partition 9; its partitions are: 0, 1, 2"));
    options = Options(output);
    options.data_dir = w.dir.Sub("missing");
    r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("no event log at"));
    CHECK_FALSE(Exists(w.dir.Sub("missing")));  // Not created by looking.
  }
  SECTION("Ctrl-C stops the run: CANCELLED, and no file") {
    // A clock that asks for a stop the first time the run reads it, as a Ctrl-C at the
    // start of the scan would.
    struct StoppingClock : kernel::Clock {
      absl::Time Now() const override {
        RequestStop();
        return absl::UnixEpoch();
      }
    } clock;
    ExportOptions options = Options(output);
    options.clock = &clock;
    absl::StatusOr<ExportResult> r = ExportEvents(options, out, err);
    CHECK(r.status().code() == absl::StatusCode::kCancelled);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("nothing was written to"));
    ClearStopRequest();
  }
  CHECK(NothingLeft(output));
  CHECK(out.str().empty());
}

}  // namespace
}  // namespace cityops::analysis
