#include "app/cli.h"

#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "analysis/export.h"
#include "analysis/lineage.h"
#include "analysis/state_at.h"
#include "analysis/stats.h"
#include "api/openapi.h"
#include "app/catalogue_commands.h"
#include "app/client_commands.h"
#include "app/ingest_commands.h"
#include "app/log_commands.h"
#include "app/rules_commands.h"
#include "app/serve_commands.h"
#include "app/sim_commands.h"
#include "projections/evaluation.h"

namespace cityops::app {
namespace {

constexpr char kDataDirHelp[] = "Directory of the event log";

// --server, --token and --json of the commands that call a daemon's HTTP API. The token
// has no default shown, so that --help never prints one taken from the environment.
void AddApiOptions(CLI::App* command, ApiClientOptions* api) {
  command->add_option("--server", api->server, "The daemon's HTTP address, http(s)://HOST[:PORT]")
      ->envname("CITYOPS_SERVER")
      ->capture_default_str();
  command
      ->add_option("--ca", api->ca,
                   "https:// only: the PEM certificate of the authority that signed the "
                   "daemon's certificate (a self-signed one: the certificate itself); default: "
                   "the system's authorities")
      ->envname("CITYOPS_CA")
      ->check(CLI::ExistingFile);
  command
      ->add_option("--token", api->token,
                   "API token from the daemon's configuration; its role and unit decide what "
                   "you may do. Never printed")
      ->envname("CITYOPS_TOKEN")
      ->required();
  command->add_flag("--json", api->json,
                    "Print the API's JSON as it came (protobuf JSON mapping) instead of a summary");
}

// The case commands of `cityops cases`, in workflow order, with what each one does.
struct CaseCommandHelp {
  const char* name;
  const char* help;
};
constexpr CaseCommandHelp kCaseCommands[] = {
    {"register",
     "Register (立案) a discovered case. Needs an operator whose unit serves its grid."},
    {"dispatch",
     "Dispatch (派遣) a registered case to a department. Needs an operator at the level that "
     "dispatches the case (or above) whose unit serves its grid; dispatch runs downward."},
    {"handle",
     "Record that a dispatched case was handled (处置), and what was done. Needs an operator "
     "of a crew of the department the case is dispatched to (a unit with that department) "
     "whose area covers its grid; the crew is recorded as the handler."},
    {"verify",
     "Verify (核查) a handled case: --pass, or --fail with a --note (back to dispatched with "
     "a re-work ticket). Only the originator's unit verifies, never a unit that handled the "
     "case (if the originator did, the grid unit above it does); IoT cases verify themselves."},
    {"close",
     "Close (结案) a verified case. Only the unit that verifies it closes it; IoT cases close "
     "themselves."},
    {"urge", "Urge (催办) an open case. Needs a supervisor."},
    {"escalate",
     "Escalate a registered or dispatched case to the level above, which then dispatches it. "
     "Only the level that dispatches the case escalates it."},
};

// "cityops log generate": the chain of subcommands the user selected, for messages.
std::string CommandPath(const CLI::App& app) {
  std::string path = app.get_name();
  const CLI::App* current = &app;
  while (!current->get_subcommands().empty()) {
    current = current->get_subcommands().front();
    path += " " + current->get_name();
  }
  return path;
}

int Run(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app("cityops: an event-sourced kernel for city operations.", "cityops");
  app.set_version_flag("--version", std::string("cityops ") + CITYOPS_VERSION);
  app.require_subcommand(1);

  CLI::App* log = app.add_subcommand(
      "log", "Work with an event log directory: generate, inspect, dump, back up.");
  log->require_subcommand(1);

  GenerateOptions generate_options;
  CLI::App* generate = log->add_subcommand(
      "generate",
      "Append simulated sensor readings to a log (created if missing), as if ingested from "
      "Kafka topic cityops.readings: each reading goes to its device's partition, and each "
      "batch stores the Kafka offset it came from. Running it again continues the simulated "
      "stream and its offsets (keep --seed, --devices and --partitions).");
  generate->add_option("--data-dir", generate_options.data_dir, kDataDirHelp)->required();
  generate->add_option("--readings", generate_options.readings, "Readings to append")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  generate
      ->add_option("--partitions", generate_options.partitions,
                   "Log partitions (= Kafka partitions of cityops.readings); must match the "
                   "log's existing partition count")
      ->check(CLI::Range(uint32_t{1}, uint32_t{1024}))
      ->capture_default_str();
  generate->add_option("--devices", generate_options.devices, "Simulated devices")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  generate->add_option("--seed", generate_options.seed, "Seed of the simulation")
      ->capture_default_str();
  generate->add_option("--batch", generate_options.batch, "Events per append, per partition")
      ->check(CLI::Range(uint32_t{1}, uint32_t{100000}))
      ->capture_default_str();

  InspectOptions inspect_options;
  CLI::App* inspect = log->add_subcommand(
      "inspect",
      "Summarize a log: per partition the events, their event-time range and types; stored "
      "Kafka source positions; indexed streams; size on disk. Needs the log's lock: it "
      "fails while another process holds the log.");
  inspect->add_option("--data-dir", inspect_options.data_dir, kDataDirHelp)->required();

  DumpOptions dump_options;
  CLI::App* dump = log->add_subcommand(
      "dump",
      "Print events of one partition as JSON lines (the protobuf JSON mapping of "
      "cityops.v1.Event), for analysts and scripts.");
  dump->add_option("--data-dir", dump_options.data_dir, kDataDirHelp)->required();
  dump->add_option("--partition", dump_options.partition, "Log partition")->capture_default_str();
  dump->add_option("--from", dump_options.from, "First sequence number")->capture_default_str();
  dump->add_option("--limit", dump_options.limit, "At most this many events")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  BackupOptions backup_options;
  CLI::App* backup = log->add_subcommand(
      "backup",
      "Write a consistent, openable copy of a log (a RocksDB checkpoint; hard links where "
      "possible) to a new directory.");
  backup->add_option("--data-dir", backup_options.data_dir, kDataDirHelp)->required();
  backup->add_option("--to", backup_options.to, "Target directory; must not exist yet")->required();

  VerifyCommandOptions verify_options;
  CLI::App* verify = log->add_subcommand(
      "verify",
      "Check a log for damage without changing it: RocksDB's open checks as at start, every "
      "block of every SST file against its checksum, every WAL record, and every partition's "
      "sequences dense from 0. Names each damaged file with the partitions and sequences (or "
      "streams) it holds, and what to do. Exit 0 when whole, 1 when damage is found, 2 when "
      "the log could not be checked (usage, no log there, in use by a daemon: verify a backup "
      "of a running one).");
  verify->add_option("--data-dir", verify_options.data_dir, kDataDirHelp)->required();
  verify->add_flag("--json", verify_options.json, "Print one JSON document instead of the table");
  verify->add_flag("--deep", verify_options.deep,
                   "Also parse every event (slower; see OPERATIONS.md for figures)");

  UpgradeCommandOptions upgrade_options;
  CLI::App* upgrade = log->add_subcommand(
      "upgrade",
      "Rewrite a log written by an older cityops into this version's format, in place, "
      "keeping every event's bytes (format 1 -> 2: a column family per partition). Safe to "
      "stop and run again; needs room for a second copy of the events while it runs. The "
      "daemon must be stopped. A log already in this format is left as it is.");
  upgrade->add_option("--data-dir", upgrade_options.data_dir, kDataDirHelp)->required();
  upgrade->add_flag("--json", upgrade_options.json, "Print one JSON document instead of text");

  SetPositionOptions position_options;
  CLI::App* set_position = log->add_subcommand(
      "set-position",
      "Store a new Kafka position for one topic partition, as an operator's decision after "
      "ingest stopped on lost records (DATA_LOSS) or a recreated topic (see OPERATIONS.md). "
      "Appends an empty batch carrying the position to the log partition of the same "
      "number and prints the old and new offsets. The daemon must be stopped.");
  set_position->add_option("--data-dir", position_options.data_dir, kDataDirHelp)->required();
  set_position->add_option("--topic", position_options.topic, "Kafka topic, e.g. cityops.readings")
      ->required();
  set_position->add_option("--partition", position_options.partition, "Kafka partition")
      ->required()
      ->check(CLI::NonNegativeNumber);
  set_position
      ->add_option("--offset", position_options.offset,
                   "The next offset to ingest: records before it are not ingested")
      ->required()
      ->check(CLI::NonNegativeNumber);

  CompareOptions compare_options;
  CLI::App* compare = log->add_subcommand(
      "compare",
      "Compare what the rules stage derived in two logs built from the same input (two "
      "daemons, a restarted one, a replay): derived events partition by partition, with "
      "references by the identity of what they name rather than by position. Exit 0 when "
      "equal, 1 with the first difference. The logs must not be open in a daemon: compare "
      "backups of running ones.");
  compare->add_option("--data-dir", compare_options.data_dir, "Log A")->required();
  compare->add_option("--other", compare_options.other, "Log B")->required();
  compare->add_option("--until", compare_options.until,
                      "Only derived events up to this event time (RFC 3339), e.g. the last "
                      "input's: after it only clock ticks move time");

  PublishCommandOptions publish_options;
  CLI::App* publish = app.add_subcommand(
      "publish",
      "Publish sensor readings from JSON lines (the protobuf JSON mapping of "
      "cityops.v1.SensorReading) to Kafka, keyed by device id (murmur2, like Java clients). "
      "Each line is validated as ingest will; bad lines are reported by number and not sent.");
  publish->add_option("--bootstrap", publish_options.bootstrap, "Kafka bootstrap servers")
      ->required();
  publish->add_option("--topic", publish_options.topic, "Topic")->capture_default_str();
  publish->add_option("--encoding", publish_options.encoding, "Wire encoding")
      ->check(CLI::IsMember({"protobuf", "json"}))
      ->capture_default_str();
  publish->add_option("input", publish_options.input, "JSON-lines file, or - for stdin")
      ->capture_default_str();

  CLI::App* devices = app.add_subcommand("devices", "The device registry.");
  devices->require_subcommand(1);
  ImportCommandOptions import_options;
  CLI::App* import = devices->add_subcommand(
      "import",
      "Append device registrations from a CSV (device_id,kind,grid_code,latitude_deg,"
      "longitude_deg,name,reporting_interval_s) or JSON-lines file to a log, each in the "
      "partition of its device's readings. Unchanged registrations are skipped.");
  import->add_option("--data-dir", import_options.data_dir, kDataDirHelp)->required();
  import->add_option("--partitions", import_options.partitions, "Partitions of cityops.readings")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  import->add_option("file", import_options.file, "Registry file (.csv or JSON lines)")
      ->required()
      ->check(CLI::ExistingFile);

  IngestCommandOptions ingest_options;
  CLI::App* ingest = app.add_subcommand(
      "ingest",
      "Consume cityops.readings, cityops.reports and cityops.devices into a log, exactly "
      "once, dead-lettering bad records to cityops.deadletter. With --embedded it hosts a "
      "development Kafka cluster in-process and prints its address (for kcat or publish).");
  ingest->add_option("--data-dir", ingest_options.data_dir, kDataDirHelp)->required();
  auto* bootstrap =
      ingest->add_option("--bootstrap", ingest_options.bootstrap, "Kafka bootstrap servers");
  ingest
      ->add_flag("--embedded", ingest_options.embedded,
                 "Host librdkafka's built-in cluster on 127.0.0.1 (topics in memory)")
      ->excludes(bootstrap);
  ingest
      ->add_option("--partitions", ingest_options.partitions,
                   "Partitions of the embedded cluster's topics")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  ingest->add_option("--group-id", ingest_options.group_id, "Consumer group")
      ->capture_default_str();
  ingest
      ->add_option("--simulate", ingest_options.simulate,
                   "With --embedded: also play this scenario (normal, typhoon, elevator-wave) "
                   "into the cluster (--sim-minutes at 120x), and stop once it is all "
                   "ingested")
      ->check(CLI::IsMember({"normal", "typhoon", "elevator-wave"}))
      ->needs("--embedded");
  ingest->add_option("--sim-devices", ingest_options.sim_devices, "With --simulate: devices")
      ->check(CLI::Range(uint32_t{1}, uint32_t{999'999}))
      ->capture_default_str();
  ingest
      ->add_option("--sim-minutes", ingest_options.sim_minutes,
                   "With --simulate: simulated minutes to play")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  ingest
      ->add_option("--seconds", ingest_options.seconds,
                   "Stop after this many seconds (default: run until SIGINT/SIGTERM)")
      ->check(CLI::NonNegativeNumber);

  SimCommandOptions sim_options;
  CLI::App* sim = app.add_subcommand(
      "sim",
      "Simulate a city and publish its readings: devices on cityops.devices first, then "
      "readings on cityops.readings (or JSON lines with --out). Simulated time ends now, "
      "so ingest accepts every reading however fast time runs.");
  sim->add_option("--scenario", sim_options.scenario, "normal, typhoon or elevator-wave")
      ->check(CLI::IsMember({"normal", "typhoon", "elevator-wave"}))
      ->capture_default_str();
  sim->add_option("--devices", sim_options.devices, "Devices in the city")
      ->check(CLI::Range(uint32_t{1}, uint32_t{999'999}))
      ->capture_default_str();
  sim->add_option("--seed", sim_options.seed, "Seed of the city and the scenario")
      ->capture_default_str();
  sim->add_option("--minutes", sim_options.minutes, "Simulated minutes to play")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sim->add_option("--acceleration", sim_options.acceleration,
                  "Simulated seconds per wall second (0 = as fast as possible)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sim->add_option("--rate", sim_options.rate,
                  "At most this many readings per second (0 = no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  auto* sim_bootstrap =
      sim->add_option("--bootstrap", sim_options.bootstrap, "Kafka bootstrap servers");
  sim->add_option("--out", sim_options.out, "Write readings as JSON lines to this file instead")
      ->excludes(sim_bootstrap);
  sim->add_option("--devices-out", sim_options.devices_out,
                  "With --out: write the registrations as JSON lines to this file");
  sim->add_flag("--catalogue-kinds,!--typed-only", sim_options.catalogue_kinds,
                "Add devices of the catalogue-only kinds (fire hydrants, gas detectors, ...) "
                "in the built-in catalogue's shares, on top of --devices (the default; "
                "--typed-only leaves them out)");

  CLI::App* rules = app.add_subcommand("rules", "Rule sets: check and activate.");
  rules->require_subcommand(1);
  RulesCheckOptions check_options;
  CLI::App* check = rules->add_subcommand(
      "check",
      "Load and check a rule set (YAML onto cityops.v1.RuleSet) without running anything. "
      "Errors name the file, line and column. Without FILE, checks the built-in default. The "
      "rules must fit the catalogue (--catalogue, default the built-in one).");
  check->add_option("file", check_options.file, "Rule set file (YAML)");
  check->add_option("--catalogue", check_options.catalogue,
                    "The catalogue the rules must fit (default: the built-in one): every device "
                    "kind, metric and fault code a rule tests must be in it");
  CLI::App* catalogue = app.add_subcommand(
      "catalogue", "The catalogue of device kinds and case categories: check it.");
  catalogue->require_subcommand(1);
  CatalogueCheckOptions catalogue_check_options;
  CLI::App* catalogue_check = catalogue->add_subcommand(
      "check",
      "Load and check a catalogue (YAML onto cityops.v1.Catalogue) without running anything. "
      "Errors name the file, line and column. Without FILE, checks the built-in catalogue "
      "(catalogue/city.yaml). With --rules (or --default-rules), also checks that the rule "
      "set fits it: every kind, metric, fault code and category it names is in the catalogue.");
  catalogue_check->add_option("file", catalogue_check_options.file, "Catalogue file (YAML)");
  auto* catalogue_rules = catalogue_check->add_option("--rules", catalogue_check_options.rules,
                                                      "A rule set file (YAML) to check against it");
  catalogue_check
      ->add_flag("--default-rules", catalogue_check_options.with_default_rules,
                 "Check the built-in rule set against it")
      ->excludes(catalogue_rules);
  RulesActivateOptions activate_options;
  CLI::App* activate = rules->add_subcommand(
      "activate",
      "Make a rule set the active one: appends a RulesetActivated event to the log (created "
      "if missing), so that replays evaluate exactly these rules from here on. Does nothing "
      "if the same rule set is already active. Without FILE, activates the built-in default.");
  activate->add_option("file", activate_options.file, "Rule set file (YAML)");
  activate->add_option("--catalogue", activate_options.catalogue,
                       "The catalogue the rules must fit (default: the built-in one)");
  activate->add_option("--data-dir", activate_options.data_dir, kDataDirHelp)->required();

  ReplayOptions replay_options;
  CLI::App* replay = app.add_subcommand(
      "replay",
      "Derive everything again. With --from LOG --into DIR: copy only what LOG recorded from "
      "outside (readings, reports, registrations, clock ticks, rule-set activations, people's "
      "commands) into a fresh log at DIR and run the rules stage over it; --compare then "
      "checks that the derived events equal LOG's byte for byte (references by what they "
      "name) and shows the first difference: a determinism check on production data. With "
      "--data-dir D: continue the rules stage and the read models over D to its end, from "
      "their checkpoints, and print the big screen's statistics.");
  CLI::Option* replay_dir =
      replay->add_option("--data-dir", replay_options.data_dir,
                         "Continue the stages over this log (a copy of a live one)");
  CLI::Option* replay_from = replay->add_option(
      "--from", replay_options.from, "The recorded log to replay (a copy: `cityops log backup`)");
  replay->add_option("--into", replay_options.into,
                     "Directory of the fresh log (must not exist); with --from");
  replay->add_option("--to", replay_options.to,
                     "Replay only up to this time (RFC 3339; each partition up to its first "
                     "input later than it) or, for a one-partition log, this sequence");
  replay->add_flag("--compare", replay_options.compare,
                   "Compare what was derived with the recorded log; exit 1 on a difference");
  replay->add_flag("--rebuild-views", replay_options.rebuild_views,
                   "With --data-dir: rebuild the read models from sequence 0 (beside the live "
                   "ones, then swap)");
  replay_dir->excludes(replay_from);

  BacktestOptions backtest_options;
  CLI::App* backtest = app.add_subcommand(
      "backtest",
      "Run the rules stage with another rule set over a log's recorded inputs and report "
      "against what happened: alerts and cases added, removed and changed (by rule, category "
      "and district), when each device's first alert of a rule came, tickets per department. "
      "Deterministic: the same log and rules give the same report; the active rule set gives "
      "no difference.");
  backtest
      ->add_option("--data-dir", backtest_options.data_dir,
                   "The recorded log (a copy: `cityops log backup`)")
      ->required();
  backtest->add_option("--rules", backtest_options.rules, "The rule set to try (YAML)")->required();
  backtest->add_option("--catalogue", backtest_options.catalogue,
                       "The catalogue to compile the rules against (YAML; default: the built-in "
                       "one). Use the daemon's, so that its own rule set reports no difference");
  backtest->add_option("--from", backtest_options.from,
                       "Report on what happened from this time on (RFC 3339; the rules still "
                       "run from the log's start, so that their state is right)");
  backtest->add_option("--to", backtest_options.to, "Run and report up to this time (RFC 3339)");
  backtest->add_option("--keep", backtest_options.keep,
                       "Keep the backtest's log in this new directory (default: a temporary "
                       "one, removed)");
  backtest
      ->add_option("--examples", backtest_options.examples,
                   "Alerts and cases listed per kind of difference")
      ->capture_default_str();
  backtest->add_flag("--json", backtest_options.json, "The report as JSON");

  analysis::StateAtOptions state_options;
  CLI::App* state = app.add_subcommand(
      "state",
      "The whole city as it was at a moment of a log: open cases by stage with their lights, "
      "active alerts by rule and severity, devices online and offline by kind, and the big "
      "screen's counters; with --case, that case's history up to the moment (who acted, each "
      "stage's time and deadline, urges, escalations). As of TIME means the read models "
      "folded over every event dated at most TIME, with devices silent for three reporting "
      "intervals at TIME offline (docs/analysis.md). Works on a copy of a log ('cityops log "
      "backup'); the read models are folded into a temporary directory, removed afterwards.");
  state->add_option("--data-dir", state_options.data_dir, kDataDirHelp)->required();
  state->add_option("--at", state_options.at, "The moment, RFC 3339: 2026-09-21T19:40:00+08:00")
      ->required();
  state->add_option("--scope", state_options.scope,
                    "Only cases, alerts and devices whose grid code starts with this (a district, "
                    "street or grid code)");
  state->add_option("--case", state_options.case_id,
                    "Print this case's history up to --at instead of the city");
  state->add_flag("--json", state_options.json, "One JSON object with the same figures");
  state->add_option("--keep", state_options.keep,
                    "Keep the read models as of --at in this new directory instead of removing "
                    "them");
  state->add_option("--rows", state_options.rows, "Open cases listed in the table")
      ->capture_default_str();

  // cityops export (analysis/export.h).
  analysis::ExportOptions export_options;
  std::string export_types;
  std::string export_format = "jsonl";
  uint32_t export_partition = 0;
  CLI::App* export_command = app.add_subcommand(
      "export",
      "Export events of a time range (event time), partition, stream-id prefix and/or payload "
      "type as JSON lines (the protobuf JSON mapping of cityops.v1.Event, as 'log dump') or "
      "CSV (one row per event, payload fields flattened; the columns come from the schema, "
      "see docs/analysis.md). Streams the log with bounded memory; progress, the count and "
      "the rate go to stderr; Ctrl-C leaves no half-written file. Run it on a copy of a "
      "running daemon's log ('cityops log backup').");
  export_command->add_option("--data-dir", export_options.data_dir, kDataDirHelp)->required();
  export_command->add_option("--from", export_options.from,
                             "First event time, inclusive (RFC 3339, e.g. 2026-09-21T19:40:00Z)");
  export_command->add_option("--to", export_options.to,
                             "Event time to stop at, exclusive (RFC 3339)");
  CLI::Option* export_partition_option = export_command->add_option(
      "--partition", export_partition, "Only this log partition (default: all)");
  export_command->add_option("--stream-prefix", export_options.stream_prefix,
                             "Only streams whose id starts with this, e.g. case/ or device/");
  export_command->add_option(
      "--type", export_types,
      "Only these payload types, comma-separated, by their names in events.proto "
      "(reading, case_opened, ticket_issued, ...); with CSV, only their columns");
  export_command->add_option("--format", export_format, "jsonl or csv")
      ->check(CLI::IsMember({"jsonl", "csv"}))
      ->capture_default_str();
  export_command
      ->add_option("--output", export_options.output,
                   "File to write (appears only once complete), or - for standard output")
      ->capture_default_str();

  // cityops lineage (analysis/lineage.h).
  analysis::LineageOptions lineage_options;
  CLI::App* lineage = app.add_subcommand(
      "lineage",
      "Why a ticket was issued: ticket -> case -> alerts -> the rule and the rule-set version "
      "(name and sha256) in force when each alert was raised -> the readings that raised it "
      "-> their Kafka topic, partition and offset, with their values. Starts at a ticket, a "
      "case or an alert; reads the log's stream index, not the whole log. The API serves the "
      "same at GET /api/v1/cases/{id}/lineage.");
  lineage->add_option("--data-dir", lineage_options.data_dir, kDataDirHelp)->required();
  CLI::Option_group* lineage_start = lineage->add_option_group("start", "Exactly one of");
  lineage_start->add_option("--ticket", lineage_options.query.ticket_id, "A ticket id");
  lineage_start->add_option("--case", lineage_options.query.case_id, "A case id");
  lineage_start->add_option("--alert", lineage_options.query.alert_id, "An alert id");
  lineage_start->require_option(1);
  lineage->add_flag("--json", lineage_options.json,
                    "Print cityops.v1.Lineage by the protobuf JSON mapping (as the API does)");

  analysis::StatsOptions stats_options;
  CLI::App* stats = app.add_subcommand(
      "stats",
      "The evaluation figures of grid management for a period and a scope of a log (a copy: "
      "'cityops log backup'): cases found, filed, due and closed, close and on-time close "
      "rates, yellow and red lights, urges, escalations, time in each stage (mean, p50, p90), "
      "quick handling at street level, dispatches by a district, open cases at the end; and the "
      "12345 hotline's categories per day (per hour for periods under two days). --by breaks "
      "them down, worst on-time close rate first: '--by department' answers which department "
      "is dragging. Each figure is defined in docs/analysis.md. A running daemon answers the "
      "same at GET /api/v1/statistics?from=&to=&by=&scope=.");
  stats->add_option("--data-dir", stats_options.data_dir, kDataDirHelp)->required();
  stats->add_option("--from", stats_options.from, "Start of the period (RFC 3339), inclusive")
      ->required();
  stats->add_option("--to", stats_options.to, "End of the period (RFC 3339), exclusive")
      ->required();
  stats->add_option(
      "--by", stats_options.by,
      "Break the figures down by " + absl::StrJoin(projections::EvaluationBreakdowns(), ", "));
  stats->add_option("--scope", stats_options.scope,
                    "Only cases in this district, street, community or grid (a code prefix of "
                    "6, 9, 12 or 15 digits)");
  stats->add_option("--department", stats_options.department,
                    "Only cases dispatched to this department");
  stats->add_flag("--json", stats_options.json,
                  "Print the figures as JSON (cityops.v1.Evaluation, protobuf JSON mapping)");

  ServeOptions serve_options;
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Run the operations-center daemon: ingest, the rules stage, the read models, the "
      "ticket outbox and the HTTP API with the dashboard, over one data directory. Without "
      "kafka.bootstrap_servers it hosts the embedded development cluster. SIGTERM or SIGINT "
      "stops it cleanly (the batch in hand is stored); SIGHUP re-reads the tokens and reloads "
      "the rule set. Prints 'kafka: ...', 'http: ...' and 'ready' as they come up.");
  serve
      ->add_option("--config", serve_options.config,
                   "Configuration (YAML onto cityops.v1.ServeConfig, see "
                   "daemon/cityops.example.yaml); default: every default")
      ->check(CLI::ExistingFile);
  serve->add_flag("--validate", serve_options.validate,
                  "Check the configuration and its rule set, print the configuration in effect, "
                  "and exit without starting anything");

  DemoCommandOptions demo_options;
  CLI::App* demo = app.add_subcommand(
      "demo",
      "The whole system on this machine: the daemon with the embedded Kafka cluster, a "
      "simulated city playing a scenario into it in accelerated time, and a simulated crew "
      "working the cases. Prints the dashboard's address (with a viewer token), the API "
      "tokens and the Kafka address. Runs until Ctrl-C; running it again continues from the "
      "data directory.");
  demo->add_option("--data-dir", demo_options.demo.data_dir, "Data directory")
      ->capture_default_str();
  demo->add_option("--port", demo_options.demo.port, "HTTP port (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  demo->add_option("--listen", demo_options.demo.listen_address,
                   "HTTP address. The demo serves plain HTTP: beyond loopback it refuses to "
                   "start without --allow-plaintext")
      ->capture_default_str();
  demo->add_flag("--allow-plaintext", demo_options.demo.allow_plaintext,
                 "Listen beyond loopback (--listen 0.0.0.0) in plain HTTP all the same: the "
                 "demo's tokens then cross the network unencrypted (a warning is logged)");
  demo->add_option("--devices", demo_options.demo.devices,
                   "Devices of the four typed kinds in the city (the catalogue-only kinds "
                   "come on top, in the catalogue's shares)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{999'999}))
      ->capture_default_str();
  demo->add_option("--scenario", demo_options.demo.scenario, "normal, typhoon or elevator-wave")
      ->check(CLI::IsMember({"normal", "typhoon", "elevator-wave"}))
      ->capture_default_str();
  demo->add_option("--acceleration", demo_options.demo.acceleration,
                   "Simulated seconds per wall second")
      ->check(CLI::Range(1.0, 3600.0))
      ->capture_default_str();
  demo->add_option("--seed", demo_options.demo.seed, "Seed of the city, scenario and crew")
      ->capture_default_str();
  demo->add_option("--partitions", demo_options.demo.partitions, "Partitions of the topics")
      ->check(CLI::Range(uint32_t{1}, uint32_t{64}))
      ->capture_default_str();
  demo->add_flag("!--no-crew", demo_options.demo.crew, "Leave the cases to you: no simulated crew");
  demo->add_option("--log-level", demo_options.log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();

  CLI::App* cases = app.add_subcommand(
      "cases",
      "Work the cases of a running daemon through its HTTP API (--server, --token): list, "
      "show, and the workflow's commands. The daemon checks your role and unit.");
  cases->require_subcommand(1);
  CasesListOptions list_options;
  CLI::App* cases_list = cases->add_subcommand(
      "list", "List cases as a table (id, stage, light, source, category, grid, department, age).");
  AddApiOptions(cases_list, &list_options.api);
  cases_list->add_option("--stage", list_options.stage, "Only cases in this stage")
      ->check(CLI::IsMember(
          {"discovered", "registered", "dispatched", "handled", "verified", "closed"}));
  cases_list->add_option("--source", list_options.source, "Only cases from this source")
      ->check(CLI::IsMember({"iot_rule", "hotline_12345", "street_patrol", "residential_station"}));
  cases_list->add_option("--overdue", list_options.overdue, "Only cases at least this overdue now")
      ->check(CLI::IsMember({"yellow", "red"}));
  cases_list->add_option("--grid", list_options.grid,
                         "Only cases in this district, street or grid (a code prefix)");
  cases_list->add_option("--reported-after", list_options.reported_after,
                         "Only cases discovered at or after this time (RFC 3339)");
  cases_list->add_option("--reported-before", list_options.reported_before,
                         "Only cases discovered before this time (RFC 3339)");
  cases_list->add_option("--page-size", list_options.page_size, "Cases per page (1 to 1000)")
      ->check(CLI::Range(1, 1000));
  cases_list->add_option("--page-token", list_options.page_token,
                         "Start at this page (the token a previous list printed)");
  cases_list->add_flag("--all", list_options.all, "Follow the pages to the last one");

  CasesShowOptions show_options;
  CLI::App* cases_show = cases->add_subcommand(
      "show", "Show one case: its state, its timeline (who did what, when) and time in stage.");
  AddApiOptions(cases_show, &show_options.api);
  cases_show->add_option("case_id", show_options.case_id, "Case id")->required();

  CaseCommandOptions command_options;
  std::vector<std::pair<std::string, CLI::App*>> case_commands;
  for (const CaseCommandHelp& c : kCaseCommands) {
    CLI::App* sub = cases->add_subcommand(c.name, c.help);
    AddApiOptions(sub, &command_options.api);
    sub->add_option("case_id", command_options.case_id, "Case id")->required();
    sub->add_option("--request-id", command_options.request_id,
                    "Idempotency key: a retry with the same id is carried out once (default: "
                    "a fresh random id)");
    const std::string name = c.name;
    if (name == "dispatch") {
      sub->add_option("--department", command_options.department,
                      "The department to dispatch it to")
          ->required();
      sub->add_option("--level", command_options.level,
                      "The receiving level (default: the case's level)")
          ->check(CLI::IsMember(
              {"residential_station", "street_center", "district_center", "city_center"}));
    } else if (name == "handle") {
      sub->add_option("--result", command_options.result, "What was done")->required();
    } else if (name == "verify") {
      CLI::Option_group* outcome = sub->add_option_group("outcome", "Exactly one of");
      outcome->add_flag("--pass", command_options.pass, "The problem is solved");
      outcome->add_flag("--fail", command_options.fail,
                        "It is not: back to dispatched (needs --note)");
      outcome->require_option(1);
      sub->add_option("--note", command_options.note, "What was found");
    } else if (name == "urge") {
      sub->add_option("--note", command_options.note, "Why, or what is expected");
    } else if (name == "escalate") {
      sub->add_option("--reason", command_options.reason, "Why this level cannot solve it");
    }
    case_commands.emplace_back(name, sub);
  }

  ReportOptions report_options;
  CLI::App* report = app.add_subcommand(
      "report",
      "Report a case (12345 hotline, street patrol, residential station) through a running "
      "daemon's HTTP API. Your unit becomes its originator, which verifies and closes it; the "
      "grid must be inside your unit.");
  AddApiOptions(report, &report_options.api);
  report->add_option("--case-id", report_options.case_id, "New case id (letters, digits, . _ -)")
      ->required();
  report->add_option("--source", report_options.source, "Where it came from")
      ->check(CLI::IsMember({"hotline_12345", "street_patrol", "residential_station"}))
      ->required();
  report->add_option("--grid", report_options.grid, "The 15-digit residential grid code")
      ->required();
  report->add_option("--category", report_options.category, "Category code, e.g. E0111")
      ->required();
  report->add_option("--category-name", report_options.category_name, "Category label");
  report->add_option("--description", report_options.description, "What was reported");
  report->add_option("--reporter", report_options.reporter,
                     "Caller reference or patrol member (no personal data needed)");
  double latitude_deg = 0;
  double longitude_deg = 0;
  CLI::Option* latitude = report->add_option("--latitude", latitude_deg, "WGS-84 latitude, degrees")
                              ->check(CLI::Range(-90.0, 90.0));
  CLI::Option* longitude =
      report->add_option("--longitude", longitude_deg, "WGS-84 longitude, degrees")
          ->check(CLI::Range(-180.0, 180.0));
  report->add_option("--request-id", report_options.request_id,
                     "Idempotency key (default: a fresh random id)");

  CLI::App* openapi = app.add_subcommand(
      "openapi", "Print the HTTP API's OpenAPI document (the one served at /api/v1/openapi.yaml).");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0; CLI11 prints them.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e, out);
    err << "cityops: " << e.what() << "\n"
        << "cityops: run '" << CommandPath(app) << " --help' for usage\n";
    return kExitUsage;
  }

  absl::Status status;
  if (*generate) {
    status = GenerateLog(generate_options, out);
  } else if (*inspect) {
    status = InspectLog(inspect_options, out);
  } else if (*dump) {
    status = DumpLog(dump_options, out, err);
  } else if (*backup) {
    status = BackupLog(backup_options, out);
  } else if (*verify) {
    absl::StatusOr<bool> whole = VerifyLogCommand(verify_options, out, err);
    out.flush();
    if (!whole.ok()) {
      err << "cityops: " << whole.status().message() << "\n";
      return kExitUsage;
    }
    return *whole ? kExitOk : kExitFailure;
  } else if (*upgrade) {
    status = UpgradeLogCommand(upgrade_options, out, err);
  } else if (*set_position) {
    status = SetPosition(position_options, out);
  } else if (*compare) {
    status = CompareLogs(compare_options, out);
  } else if (*publish) {
    status = PublishCommand(publish_options, out, err);
  } else if (*import) {
    status = ImportDevicesCommand(import_options, out, err);
  } else if (*ingest) {
    status = IngestCommand(ingest_options, out);
  } else if (*sim) {
    status = SimCommand(sim_options, out);
  } else if (*check) {
    status = RulesCheckCommand(check_options, out);
  } else if (*catalogue_check) {
    status = CatalogueCheckCommand(catalogue_check_options, out);
  } else if (*activate) {
    status = RulesActivateCommand(activate_options, out);
  } else if (*replay) {
    status = ReplayCommand(replay_options, out, err);
  } else if (*backtest) {
    status = BacktestCommand(backtest_options, out, err);
  } else if (*state) {
    status = analysis::StateAtCommand(state_options, out, err);
  } else if (*export_command) {
    if (export_partition_option->count() > 0) export_options.partition = export_partition;
    if (!export_types.empty()) export_options.types = absl::StrSplit(export_types, ',');
    export_options.format =
        export_format == "csv" ? analysis::ExportFormat::kCsv : analysis::ExportFormat::kJsonLines;
    status = analysis::ExportEvents(export_options, out, err).status();
  } else if (*lineage) {
    status = analysis::LineageCommand(lineage_options, out);
  } else if (*stats) {
    status = analysis::RunStats(stats_options, out, err);
  } else if (*serve) {
    status = ServeCommand(serve_options, out);
  } else if (*demo) {
    status = DemoCommand(demo_options, out);
  } else if (*cases_list) {
    status = CasesListCommand(list_options, out);
  } else if (*cases_show) {
    status = CasesShowCommand(show_options, out);
  } else if (*report) {
    if (latitude->count() > 0) report_options.latitude_deg = latitude_deg;
    if (longitude->count() > 0) report_options.longitude_deg = longitude_deg;
    status = ReportCommand(report_options, out);
  } else if (*cases) {
    for (const auto& [name, sub] : case_commands) {
      if (!*sub) continue;
      command_options.command = name;
      status = CaseCommandCommand(command_options, out);
    }
  } else if (*openapi) {
    out << api::OpenApiYaml();
  }
  out.flush();
  if (!status.ok()) {
    err << "cityops: " << status.message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

int RunCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  try {
    return Run(argc, argv, out, err);
  } catch (const std::exception& e) {
    // Not expected: the commands report failures as absl::Status. Say so plainly.
    err << "cityops: internal error: " << e.what() << "; please report it\n";
    return kExitFailure;
  }
}

}  // namespace cityops::app
