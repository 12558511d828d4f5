#!/usr/bin/env bash
# End-to-end smoke test of the `cityops` command: generate a log, inspect it, dump it as
# JSON, back it up, extend it (Kafka offsets must continue), and check that it refuses a
# locked log, a directory that is not a log, and bad usage, each with a clear message.
#
# Usage: app/cli_smoke_test.sh path/to/cityops   (CTest runs it as `cli_smoke`)
set -euo pipefail

readonly CITYOPS="${1:?usage: $0 path/to/cityops}"
[[ -x "$CITYOPS" ]] || { echo "FAIL: $CITYOPS is not an executable" >&2; exit 1; }
work="$(mktemp -d -t cityops-cli-smoke.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "--- $*"; }

# Runs cityops, expecting exit code $1; stdout in $work/out, stderr in $work/err.
expect_exit() {
  local want="$1" got=0
  shift
  "$CITYOPS" "$@" >"$work/out" 2>"$work/err" || got=$?
  if [[ "$got" != "$want" ]]; then
    echo "stdout:" >&2
    cat "$work/out" >&2
    echo "stderr:" >&2
    cat "$work/err" >&2
    fail "cityops $* exited with $got, expected $want"
  fi
}

# From inspect output: the event count of partition $1.
partition_events() {
  sed -n "s/^partition $1: \([0-9]*\) events.*/\1/p" "$work/out"
}
# From inspect output: the stored next offset of cityops.readings[$1].
stored_offset() {
  sed -n "s/^  cityops\.readings\[$1\]: \([0-9]*\)$/\1/p" "$work/out"
}
# Checks inspect output ($work/out) for a log of $1 readings in 4 partitions whose stored
# offsets equal each partition's event count (every reading came from its offset).
check_inspect() {
  local total="$1" sum=0 p n off
  grep -q "^  events: $total in 4 partitions$" "$work/out" ||
    { cat "$work/out" >&2; fail "inspect does not report $total events in 4 partitions"; }
  for p in 0 1 2 3; do
    n="$(partition_events "$p")"
    off="$(stored_offset "$p")"
    [[ -n "$n" && -n "$off" ]] || { cat "$work/out" >&2; fail "inspect misses partition $p"; }
    grep -q "^  by type: reading $n$" "$work/out" ||
      { cat "$work/out" >&2; fail "partition $p: expected $n events of type reading"; }
    [[ "$off" == "$n" ]] || fail "partition $p: stored offset $off, expected $n (= its events)"
    sum=$((sum + n))
  done
  [[ "$sum" == "$total" ]] || fail "partitions hold $sum events in all, expected $total"
  grep -q "^size on disk: " "$work/out" || fail "inspect does not report the size on disk"
}

step "generate 20000 readings"
expect_exit 0 log generate --data-dir data --readings 20000 --partitions 4 --devices 500 --seed 7
grep -q "20000" "$work/out" || { cat "$work/out" >&2; fail "generate's summary does not say 20000"; }
grep -q "events/s" "$work/out" || fail "generate's summary has no events/s"

step "inspect"
expect_exit 0 log inspect --data-dir data
check_inspect 20000
for p in 0 1 2 3; do first_offsets[p]="$(stored_offset "$p")"; done

step "dump 3 events as JSON lines"
expect_exit 0 log dump --data-dir data --partition 1 --from 5 --limit 3
[[ "$(wc -l <"$work/out")" == 3 ]] || { cat "$work/out" >&2; fail "dump did not print 3 lines"; }
python3 -c '
import json, sys
events = [json.loads(line) for line in sys.stdin]
for i, e in enumerate(events):
    assert e.get("partition") == 1, e
    assert e.get("sequence") == str(5 + i), e  # uint64 is a JSON string in the mapping.
    assert "reading" in e, e
    assert e["streamId"].startswith("device/"), e
    assert e["provenance"]["kafka"]["topic"] == "cityops.readings", e
' <"$work/out" || fail "dump's lines are not the expected JSON events"

step "backup, then inspect the backup"
expect_exit 0 log backup --data-dir data --to backups/first
[[ -f backups/first/CURRENT ]] || fail "the backup has no RocksDB CURRENT file"
expect_exit 0 log inspect --data-dir backups/first
check_inspect 20000
expect_exit 1 log backup --data-dir data --to backups/first
grep -q "already exists" "$work/err" || fail "backup onto an existing directory: unclear message"

step "set-position moves a stored Kafka position, saying what it skips"
expect_exit 0 log inspect --data-dir data
before="$(stored_offset 2)"
expect_exit 0 log set-position --data-dir data --topic cityops.readings --partition 2 --offset $((before + 5))
grep -q "cityops.readings/2: stored position $before -> $((before + 5))" "$work/out" ||
  fail "set-position does not report the old and new offsets"
grep -q "records $before..$((before + 4)) will not be ingested" "$work/out" ||
  fail "set-position does not say which records it skips"
expect_exit 0 log inspect --data-dir data
[[ "$(stored_offset 2)" == "$((before + 5))" ]] || fail "set-position did not store the offset"
expect_exit 0 log set-position --data-dir data --topic cityops.readings --partition 2 --offset "$before"
expect_exit 2 log set-position --data-dir data --topic cityops.readings --partition 2

step "generate again: offsets continue"
expect_exit 0 log generate --data-dir data --readings 10000 --partitions 4 --devices 500 --seed 7
expect_exit 0 log inspect --data-dir data
check_inspect 30000
for p in 0 1 2 3; do
  (($(stored_offset "$p") > first_offsets[p])) || fail "partition $p: offset did not move on"
done
# The first event of the second run in partition 0 came from the offset stored by the first.
expect_exit 0 log dump --data-dir data --partition 0 --from "${first_offsets[0]}" --limit 1
python3 -c '
import json, sys
e = json.loads(sys.stdin.readline())
assert e["provenance"]["kafka"]["offset"] == sys.argv[1], e
assert e.get("sequence") == sys.argv[1], e
' "${first_offsets[0]}" <"$work/out" || fail "the second run did not continue the offsets"

step "two runs equal one run of the sum (same seed and devices)"
expect_exit 0 log generate --data-dir once --readings 30000 --partitions 4 --devices 500 --seed 7
for p in 0 1 2 3; do
  expect_exit 0 log dump --data-dir data --partition "$p" --limit 100000
  mv "$work/out" "$work/twice.jsonl"
  expect_exit 0 log dump --data-dir once --partition "$p" --limit 100000
  python3 -c '
import json, sys
def load(path):
    events = [json.loads(line) for line in open(path)]
    for e in events:
        del e["recordedTime"]  # Stamped by the log at append: differs between runs.
    return events
twice, once = load(sys.argv[1]), load(sys.argv[2])
assert len(twice) == len(once), (len(twice), len(once))
for a, b in zip(twice, once):
    assert a == b, (a, b)
' "$work/twice.jsonl" "$work/out" || fail "partition $p: 20000 + 10000 readings differ from 30000"
done

step "generate with another partition count is refused"
expect_exit 1 log generate --data-dir data --readings 10 --partitions 8
grep -q "^cityops: .*4 partitions" "$work/err" ||
  { cat "$work/err" >&2; fail "no clear message for a partition count mismatch"; }

step "a locked log is refused"
exec 9>data/cityops.lock
flock -n 9 || fail "could not take the log's lock for the test"
expect_exit 1 log inspect --data-dir data
grep -q "^cityops: event log data is in use" "$work/err" ||
  { cat "$work/err" >&2; fail "no clear message for a locked log"; }
exec 9>&-

step "a directory that is not a log is refused"
mkdir notalog
echo "not an event log" >notalog/notes.txt
expect_exit 1 log inspect --data-dir notalog
grep -q "^cityops: notalog is not a cityops event log" "$work/err" ||
  { cat "$work/err" >&2; fail "no clear message for a foreign directory"; }
[[ ! -e notalog/CURRENT ]] || fail "inspect wrote into a foreign directory"
expect_exit 1 log inspect --data-dir missing
grep -q "^cityops: no event log at missing" "$work/err" ||
  { cat "$work/err" >&2; fail "no clear message for a missing directory"; }
[[ ! -e missing ]] || fail "inspect created a log"

step "usage errors exit 2 and point to --help"
expect_exit 2 log inspect
grep -q "^cityops: --data-dir is required" "$work/err" || fail "unclear usage error"
grep -q "cityops log inspect --help" "$work/err" || fail "usage error does not point to --help"
expect_exit 0 log generate --help
grep -q -- "--readings" "$work/out" || fail "generate --help does not list --readings"

step "ingest --embedded --simulate plays a scenario into a log"
expect_exit 0 ingest --embedded --simulate typhoon --sim-devices 300 --sim-minutes 20 \
  --data-dir live
grep -q "^kafka: 127.0.0.1:" "$work/out" || fail "ingest --embedded did not print its address"
grep -q "0 dead-lettered" "$work/out" || { cat "$work/out" >&2; fail "simulated readings rejected"; }
expect_exit 0 log inspect --data-dir live
grep -q "registry/" "$work/out" || grep -q "device_registered" "$work/out" ||
  { cat "$work/out" >&2; fail "no registrations ingested"; }
grep -q "reading" "$work/out" || fail "no readings ingested"

step "compare: two replays of one input derive the same; a log and one that derived nothing differ"
expect_exit 0 rules activate --data-dir derive
expect_exit 0 ingest --embedded --simulate typhoon --sim-devices 300 --sim-minutes 20 \
  --data-dir derive
expect_exit 0 log backup --data-dir derive --to backups/derive
expect_exit 0 replay --data-dir derive
expect_exit 1 log compare --data-dir derive --other backups/derive
grep -q "derived events differ in partition" "$work/out" ||
  { cat "$work/out" "$work/err" >&2; fail "compare did not show where the logs part"; }
grep -q "^cityops: the logs differ" "$work/err" || { cat "$work/err" >&2; fail "unclear compare error"; }
expect_exit 0 replay --data-dir backups/derive
expect_exit 0 log compare --data-dir derive --other backups/derive
grep -Eq "^equal: [1-9][0-9]* derived events" "$work/out" ||
  { cat "$work/out" >&2; fail "two replays of one input differ (or derived nothing)"; }
expect_exit 1 log compare --data-dir derive --other backups/derive --until yesterday
grep -q "RFC 3339" "$work/err" || { cat "$work/err" >&2; fail "unclear message for a bad --until"; }

step "export writes the replayed log as CSV and JSON lines; lineage follows an alert to its readings"
expect_exit 0 export --data-dir derive --format csv --output derive.csv
head -1 derive.csv | grep -q "^partition,sequence,stream_id,stream_version,event_time," ||
  fail "export CSV header"
grep -q "wrote [1-9][0-9,]* of them (CSV) to derive.csv" "$work/err" ||
  { cat "$work/err" >&2; fail "export did not report its count"; }
expect_exit 0 export --data-dir derive --type alert_raised
first_alert="$(head -1 "$work/out" | sed -n 's/.*"alertId":"\([^"]*\)".*/\1/p')"
[[ -n "$first_alert" ]] || fail "the replayed typhoon raised no alert"
# An alert that cites its readings (not one of a device gone silent), if there is one.
alert="$(grep -m1 '"readings":\[{' "$work/out" | sed -n 's/.*"alertId":"\([^"]*\)".*/\1/p' || true)"
expect_exit 0 lineage --data-dir derive --alert "$first_alert"
grep -q "rule set default sha256 [0-9a-f]\{64\}" "$work/out" ||
  { cat "$work/out" >&2; fail "lineage did not name the rule set"; }
if [[ -n "$alert" ]]; then
  echo "lineage of $alert"
  expect_exit 0 lineage --data-dir derive --alert "$alert"
  grep -q "kafka cityops.readings partition [0-9]* offset [0-9]*" "$work/out" ||
    { cat "$work/out" >&2; fail "lineage did not reach the Kafka records"; }
else
  echo "no alert citing readings in this short run: lineage to the Kafka records not tried"
fi
expect_exit 1 lineage --data-dir derive --case no-such-case
grep -q "no case 'no-such-case'" "$work/err" || { cat "$work/err" >&2; fail "lineage unknown case"; }
expect_exit 1 export --data-dir derive --type bogus
grep -q "unknown event type 'bogus' in --type; the types are: reading," "$work/err" ||
  { cat "$work/err" >&2; fail "export unknown type"; }
expect_exit 1 export --data-dir derive --from 2001-01-01T00:00:00Z --to 2001-01-02T00:00:00Z \
  --output early.jsonl
grep -q "choose --from/--to within that range" "$work/err" || fail "export window before the log"
[[ ! -e early.jsonl ]] || fail "export left a file after an error"
step "stats: the evaluation figures of a replayed log, as a table and JSON; bad periods refused"
from=$(date -u -d '2 days ago' +%Y-%m-%dT00:00:00Z)
to=$(date -u -d 'tomorrow' +%Y-%m-%dT00:00:00Z)
expect_exit 0 stats --data-dir backups/derive --from "$from" --to "$to" --by department
grep -q "^  found " "$work/out" && grep -q "By department, worst on-time close rate first" "$work/out" ||
  { cat "$work/out" >&2; fail "stats printed no table"; }
grep -Eq "^stats: [0-9,]+ cases in" "$work/err" || { cat "$work/err" >&2; fail "stats printed no rate"; }
expect_exit 0 stats --data-dir backups/derive --from "$from" --to "$to" --by district --json
python3 -c 'import json,sys; e=json.load(sys.stdin); assert "total" in e and e["by"] == "district"' \
  <"$work/out" || { cat "$work/out" >&2; fail "stats --json is not the evaluation"; }
expect_exit 1 stats --data-dir backups/derive --from "$to" --to "$from"
grep -q "is not after --from" "$work/err" || { cat "$work/err" >&2; fail "unclear message for --to before --from"; }
expect_exit 1 stats --data-dir backups/derive --from 2001-01-01T00:00:00Z --to 2001-01-02T00:00:00Z
grep -q "lies before the log" "$work/err" || { cat "$work/err" >&2; fail "unclear message for a period before the log"; }
expect_exit 1 stats --data-dir backups/derive --from "$from" --to "$to" --by weather
grep -q "cannot break the figures down by 'weather'" "$work/err" || { cat "$work/err" >&2; fail "unclear --by error"; }
expect_exit 2 stats --data-dir backups/derive --from "$from"

step "sim writes JSON lines that publish validates; devices import takes its registrations"
# 50 typed devices and, on top, 6 of the catalogue-only kinds in their shares.
expect_exit 0 sim --scenario normal --devices 50 --minutes 10 --acceleration 0 \
  --out sim.jsonl --devices-out devices.jsonl
[[ -s sim.jsonl && -s devices.jsonl ]] || fail "sim wrote no files"
expect_exit 0 devices import --data-dir registry devices.jsonl
grep -q "imported 56 registrations" "$work/out" || { cat "$work/out" >&2; fail "import"; }
expect_exit 0 devices import --data-dir registry devices.jsonl
grep -q "imported 0 registrations (56 unchanged)" "$work/out" || fail "re-import not skipped"
echo '{"deviceId":"x","kind":"DEVICE_KIND_ELEVATOR"}' >bad.jsonl
expect_exit 1 publish --bootstrap 127.0.0.1:1 bad.jsonl
grep -q "^bad.jsonl:1: MISSING_FIELD" "$work/err" || { cat "$work/err" >&2; fail "publish error line"; }

step "state --at: the city at a moment of a replayed log; a time before the log is refused"
expect_exit 0 state --data-dir derive --at "$(date -u -d '-5 min' +%Y-%m-%dT%H:%M:%SZ)"
grep -q "^open cases: " "$work/out" && grep -q "online, " "$work/out" ||
  { cat "$work/out" "$work/err" >&2; fail "state --at printed no city"; }
expect_exit 0 state --data-dir derive --at "$(date -u -d '-5 min' +%Y-%m-%dT%H:%M:%SZ)" --json
grep -q '"open_cases":{"total":' "$work/out" || { cat "$work/out" >&2; fail "state --at --json"; }
expect_exit 1 state --data-dir derive --at 2000-01-01T00:00:00Z
grep -q "before the log's first event" "$work/err" || { cat "$work/err" >&2; fail "unclear --at error"; }
expect_exit 1 state --data-dir derive --at "$(date -u -d '-5 min' +%Y-%m-%dT%H:%M:%SZ)" --case nope
grep -q "holds no case 'nope'" "$work/err" || { cat "$work/err" >&2; fail "unclear --case error"; }

step "catalogue check: the built-in catalogue and rule set fit; a broken copy names its line"
expect_exit 0 catalogue check --default-rules
grep -q "catalogue 'city' is valid: 10 device kinds" "$work/out" &&
  grep -q "rule set 'default' fits the catalogue" "$work/out" ||
  { cat "$work/out" "$work/err" >&2; fail "catalogue check printed no verdict"; }
printf 'name: broken\nkinds:\n  - id: gas_detector\n    colour: red\n' >broken.yaml
expect_exit 1 catalogue check broken.yaml
grep -q "^cityops: broken.yaml:4:5: unknown key 'colour'" "$work/err" ||
  { cat "$work/err" >&2; fail "catalogue check error without its line"; }

echo "PASS: cli_smoke"
