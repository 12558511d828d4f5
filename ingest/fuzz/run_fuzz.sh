#!/usr/bin/env bash
# Builds the record decoder's libFuzzer target with clang (ASan + UBSan) in its own build
# directory and runs it for SECONDS. Exit status 0 if nothing crashed; otherwise libFuzzer's
# status, with the crashing input under <build>/fuzz/artifacts/ (replay it by passing that
# file to the target).
#
#   ingest/fuzz/run_fuzz.sh 60
#   CITYOPS_FUZZ_BUILD_DIR=/tmp/fuzz ingest/fuzz/run_fuzz.sh 600
#
# The seeds are the small records in ingest/fuzz/corpus/ (JSON as is, text protos encoded
# with protoc), wrapped in the target's input layout: content-type selector byte, key
# length byte, key, value. The corpus the fuzzer grows lives in <build>/fuzz/corpus/ and
# is reused by later runs in the same build directory.
set -euo pipefail

seconds=${1:?usage: $0 SECONDS}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${CITYOPS_FUZZ_BUILD_DIR:-$root/build-fuzz}

# Everything the target links is instrumented (coverage, ASan, UBSan) through the global
# flags; the target itself adds -fsanitize=fuzzer, which brings libFuzzer's main().
instrument="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCITYOPS_FUZZ=ON -DBUILD_TESTING=OFF -DCMAKE_CXX_FLAGS="$instrument" >/dev/null
cmake --build "$build" --target record_decoder_fuzz
target="$build/ingest/fuzz/record_decoder_fuzz"

seeds="$build/fuzz/seeds"
corpus="$build/fuzz/corpus"
artifacts="$build/fuzz/artifacts"
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$artifacts"

# seed NAME SELECTOR KEY FILE [FRAMING]: one input of the target's layout. SELECTOR indexes
# kContentTypes in record_decoder_fuzz.cc (0 none, 1 x-protobuf, 2 json, 3 json+charset).
seed() {
  local name=$1 selector=$2 key=$3 file=$4 framing=${5:-}
  {
    printf "\\x$(printf %02x "$selector")\\x$(printf %02x "${#key}")%s" "$key"
    [[ -n $framing ]] && printf '%b' "$framing"
    cat "$file"
  } >"$seeds/$name"
}
encode() {  # encode MESSAGE TEXTPROTO OUT
  protoc --proto_path="$root/proto" --encode="cityops.v1.$1" \
    cityops/v1/reading.proto cityops/v1/events.proto cityops/v1/ingest.proto <"$2" >"$3"
}
src="$here/corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
encode SensorReading "$src/reading_elevator.txtpb" "$tmp/elevator.bin"
encode SensorReading "$src/reading_flood_gauge.txtpb" "$tmp/gauge.bin"
encode DeviceRegistered "$src/device.txtpb" "$tmp/device.bin"

seed reading_manhole_json 2 3101040103000001 "$src/reading_manhole.json"
seed reading_curtain_wall_framed_json 3 cw-7 "$src/reading_curtain_wall.json" '\x00\x00\x00\x00\x01'
seed reading_elevator_binary 0 el-0042 "$tmp/elevator.bin"
seed reading_elevator_framed_0 1 el-0042 "$tmp/elevator.bin" '\x00\x00\x00\x00\x01\x00'
seed reading_gauge_framed_list 0 gauge-1 "$tmp/gauge.bin" '\x00\x00\x00\x00\x01\x02\x00'
seed reading_gauge_no_key 0 "" "$tmp/gauge.bin"
seed report_json 2 12345-20260921-0042 "$src/report.json"
seed device_binary 0 el-0042 "$tmp/device.bin"
seed device_json 2 cw-7 "$src/device.json"

# Each seed must be a record that one of the decoders accepts: a refused seed (say, after
# a bound changed) would leave the fuzzer mutating garbage.
for f in "$seeds"/*; do
  trace=$(CITYOPS_FUZZ_TRACE=1 "$target" "$f" 2>&1) || { echo "$trace" >&2; exit 1; }
  if ! grep -q ': accepted$' <<<"$trace"; then
    echo "seed $(basename "$f") is refused by every decoder:" >&2
    grep -E '^(reading|report|device): ' <<<"$trace" >&2
    exit 1
  fi
done

echo "fuzzing the record decoder for ${seconds}s ($target)"
exec "$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
  -dict="$here/record_decoder.dict" -artifact_prefix="$artifacts/" "$corpus" "$seeds"
