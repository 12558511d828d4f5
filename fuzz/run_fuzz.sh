#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan) in their own build
# directory, replays each target's regression inputs and fuzzes it for SECONDS; then prints,
# per target, the executions, executions per second and coverage of libFuzzer's last line.
#
#   fuzz/run_fuzz.sh [--target NAME|all] [--no-build] [--seed N] SECONDS
#   fuzz/run_fuzz.sh --target all --build-only
#
#   fuzz/run_fuzz.sh --target rule_set 60          # one target for a minute
#   fuzz/run_fuzz.sh 3600                          # every target, an hour each (a campaign)
#   CITYOPS_FUZZ_BUILD_DIR=/tmp/fuzz fuzz/run_fuzz.sh --target api_body 600
#
# NAME is a target without its _fuzz suffix: record_decoder, serve_config, rule_set, catalogue,
# device_import, api_body, api_query (or all, the default). --no-build skips the build (the
# suite builds once, in its `fuzz_build` test). --seed N gives libFuzzer its random seed
# (-seed=N; the suite's runs use one, so that they mutate the same way each time); without
# it each run draws its own, as a campaign should. Exit status 0 if nothing crashed; otherwise
# 1 after every target ran, with the crashing input under
# <build>/fuzz/<name>/artifacts/ (replay it by passing that file to the target).
#
# Per target, in <build>/fuzz/<name>/: seeds/ (made afresh from the repository's examples
# and fuzz/corpus/<name>/), corpus/ (what the fuzzer grows; reused by later runs in the same
# build directory), artifacts/ (crash-*, leak-*, timeout-*, slow-unit-*), fuzz.log.
# Inputs in fuzz/regressions/<name>/ are replayed before fuzzing and also seed it.
set -euo pipefail

all_targets=(record_decoder serve_config rule_set catalogue device_import api_body api_query)
usage() {
  echo "usage: $0 [--target NAME|all] [--no-build] [--seed N] SECONDS | --target NAME|all --build-only" >&2
  echo "  NAME: ${all_targets[*]}" >&2
  exit 2
}
which=all
build_step=1
build_only=0
seconds=
seed=()
while (($#)); do
  case $1 in
    --target) which=${2:-}; shift 2 || usage ;;
    --no-build) build_step=0; shift ;;
    --build-only) build_only=1; shift ;;
    --seed) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; seed=(-seed="$2"); shift 2 ;;
    -h | --help) usage ;;
    *) [[ -z $seconds && $1 =~ ^[0-9]+$ ]] || usage; seconds=$1; shift ;;
  esac
done
((build_only)) || [[ -n $seconds ]] || usage
if [[ $which == all ]]; then
  targets=("${all_targets[@]}")
elif [[ " ${all_targets[*]} " == *" $which "* ]]; then
  targets=("$which")
else
  echo "unknown target '$which'" >&2
  usage
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${CITYOPS_FUZZ_BUILD_DIR:-$root/build-fuzz}

if ((build_step)); then
  # Everything the targets link is instrumented (coverage, ASan, UBSan) through the global
  # flags; each target adds -fsanitize=fuzzer, which brings libFuzzer's main().
  instrument="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCITYOPS_FUZZ=ON -DBUILD_TESTING=OFF -DCMAKE_CXX_FLAGS="$instrument" >/dev/null
  cmake --build "$build" -j "${CITYOPS_FUZZ_JOBS:-2}" --target "${targets[@]/%/_fuzz}"
fi
((build_only)) && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# seeds_record_decoder DIR: small records in fuzz/corpus/record_decoder/ (JSON as is, text
# protos encoded with protoc), wrapped in the target's input layout: content-type selector
# byte, key length byte, key, value.
seeds_record_decoder() {
  local out=$1 src="$here/corpus/record_decoder"
  # seed NAME SELECTOR KEY FILE [FRAMING]: SELECTOR indexes kContentTypes in
  # record_decoder_fuzz.cc (0 none, 1 x-protobuf, 2 json, 3 json+charset).
  seed() {
    local name=$1 selector=$2 key=$3 file=$4 framing=${5:-}
    {
      printf "\\x$(printf %02x "$selector")\\x$(printf %02x "${#key}")%s" "$key"
      [[ -n $framing ]] && printf '%b' "$framing"
      cat "$file"
    } >"$out/$name"
  }
  encode() { # encode MESSAGE TEXTPROTO OUT
    protoc --proto_path="$root/proto" --encode="cityops.v1.$1" \
      cityops/v1/reading.proto cityops/v1/events.proto cityops/v1/ingest.proto <"$2" >"$3"
  }
  encode SensorReading "$src/reading_elevator.txtpb" "$tmp/elevator.bin"
  encode SensorReading "$src/reading_flood_gauge.txtpb" "$tmp/gauge.bin"
  encode DeviceRegistered "$src/device.txtpb" "$tmp/device.bin"
  encode SensorReading "$src/reading_elevator_values.txtpb" "$tmp/elevator_values.bin"
  seed reading_manhole_json 2 3101040103000001 "$src/reading_manhole.json"
  seed reading_curtain_wall_framed_json 3 cw-7 "$src/reading_curtain_wall.json" '\x00\x00\x00\x00\x01'
  seed reading_elevator_binary 0 el-0042 "$tmp/elevator.bin"
  seed reading_elevator_framed_0 1 el-0042 "$tmp/elevator.bin" '\x00\x00\x00\x00\x01\x00'
  seed reading_gauge_framed_list 0 gauge-1 "$tmp/gauge.bin" '\x00\x00\x00\x00\x01\x02\x00'
  seed reading_gauge_no_key 0 "" "$tmp/gauge.bin"
  seed report_json 2 12345-20260921-0042 "$src/report.json"
  seed device_binary 0 el-0042 "$tmp/device.bin"
  seed device_json 2 cw-7 "$src/device.json"
  seed reading_gas_detector_values_json 2 gd-1 "$src/reading_gas_detector_values.json"
  seed reading_elevator_values_binary 0 el-0042 "$tmp/elevator_values.bin"
  seed device_gas_detector_json 2 gd-1 "$src/device_gas_detector.json"
}
# Each decoder seed must be a record that one of the decoders accepts: a refused seed
# (say, after a bound changed) would leave the fuzzer mutating garbage.
check_record_decoder() {
  local binary=$1 dir=$2 f trace
  for f in "$dir"/*; do
    trace=$(CITYOPS_FUZZ_TRACE=1 "$binary" "$f" 2>&1) || { echo "$trace" >&2; return 1; }
    if ! grep -q ': accepted$' <<<"$trace"; then
      echo "seed $(basename "$f") is refused by every decoder:" >&2
      grep -E '^(reading|report|device): ' <<<"$trace" >&2
      return 1
    fi
  done
}
# The other targets' seeds: the repository's real files, and fuzz/corpus/<name>/ as is.
seeds_serve_config() { cp "$root/daemon/cityops.example.yaml" "$1/cityops.example.yaml"; }
seeds_rule_set() { cp "$root/rules/default.yaml" "$1/default.yaml"; }
seeds_catalogue() { cp "$root/catalogue/city.yaml" "$1/city.yaml"; }
seeds_device_import() { :; }
seeds_api_body() { :; }
seeds_api_query() { :; }

# summarise NAME LOG STATUS: one line from libFuzzer's final stats and last status line.
summaries=()
summarise() {
  local name=$1 log=$2 status=$3 execs rate cov ft last
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  summaries+=("$(printf '%-16s %-8s %12s %9s %7s %7s' "$name" "$status" "${execs:--}" \
    "${rate:--}" "${cov:--}" "${ft:--}")")
}

failed=0
for name in "${targets[@]}"; do
  binary="$build/fuzz/${name}_fuzz"
  work="$build/fuzz/$name"
  seeds="$work/seeds" corpus="$work/corpus" artifacts="$work/artifacts" log="$work/fuzz.log"
  regressions="$here/regressions/$name"
  rm -rf "$seeds"
  mkdir -p "$seeds" "$corpus" "$artifacts"
  "seeds_$name" "$seeds"
  if [[ $name != record_decoder ]]; then
    find "$here/corpus/$name" -type f -exec cp {} "$seeds/" \; 2>/dev/null || true
  fi
  if [[ $name == record_decoder ]]; then
    check_record_decoder "$binary" "$seeds" || { failed=1; summaries+=("$name: refused seed"); continue; }
  fi
  # Regression inputs: each once (libFuzzer runs the files it is given), then as seeds.
  inputs=()
  if [[ -d $regressions ]]; then
    mapfile -t inputs < <(find "$regressions" -type f | sort)
  fi
  if ((${#inputs[@]})); then
    echo "$name: replaying ${#inputs[@]} regression input(s) from ${regressions#"$root"/}"
    if ! "$binary" -timeout=10 "${inputs[@]}" >"$work/regressions.log" 2>&1; then
      cat "$work/regressions.log" >&2
      echo "$name: a regression input fails again (log above)" >&2
      failed=1
      summaries+=("$(printf '%-16s %-8s' "$name" "REGRESS")")
      continue
    fi
    cp "${inputs[@]}" "$seeds/"
  fi
  dict=()
  [[ -f $here/$name.dict ]] && dict=(-dict="$here/$name.dict")
  echo "fuzzing $name for ${seconds}s ($binary, log in $log)"
  status=ok
  if ! "$binary" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${seed[@]}" "${dict[@]}" -artifact_prefix="$artifacts/" "$corpus" "$seeds" \
    >"$log" 2>&1; then
    status=CRASH
    failed=1
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz: invariant|record_decoder_fuzz: invariant|.*runtime error)' \
      "$log" >&2 || tail -30 "$log" >&2
    grep -E '^artifact_prefix|Test unit written to' "$log" >&2 || true
  fi
  summarise "$name" "$log" "$status"
done

echo
printf '%-16s %-8s %12s %9s %7s %7s\n' target status executions exec/s cov ft
printf '%s\n' "${summaries[@]}"
exit "$failed"
