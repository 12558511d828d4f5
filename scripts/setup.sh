#!/usr/bin/env bash
# Sets up cityops on Debian 12: installs the Debian packages that are missing,
# configures the build and builds everything. Idempotent: when all is there it only
# checks and rebuilds what changed, printing one line per phase.
#
# Environment:
#   CITYOPS_BUILD_DIR   build directory, relative to the repository root (default: build)
#   CMAKE_BUILD_TYPE    Debug, Release, RelWithDebInfo (default), MinSizeRel
#   CITYOPS_WERROR=1    treat compiler warnings as errors (-DCITYOPS_WERROR=ON), as CI
#                       and development do; default 0: warnings stay warnings. Passed to
#                       CMake on every run, so an existing build directory follows it
#   CITYOPS_VERBOSE=1   show the full output of apt-get, CMake and the compiler
set -euo pipefail

# Every dependency, by purpose. This is the only list; CMakeLists.txt finds them with
# find_package/pkg-config.
PACKAGES=(
  # Toolchain and build.
  build-essential cmake ninja-build pkg-config
  # Schemas: protoc and the protobuf runtime.
  protobuf-compiler libprotobuf-dev
  # The event log's storage engine.
  librocksdb-dev
  # Kafka client and its built-in (embedded) cluster.
  librdkafka-dev
  # Status, time, strings, containers.
  libabsl-dev
  # Tests (Catch2 v2).
  catch2
  # Command line, configuration (YAML), logging.
  libcli11-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
  # The HTTP API and its clients (cityops cases, the tests).
  libcpp-httplib-dev
  # JSON reports of the analysts' tools (ordered keys, so that a report is reproducible).
  nlohmann-json3-dev
  # SHA-256 of rule sets (the digest RulesetActivated records); TLS for the HTTP API.
  libssl-dev
  # Integrator examples (proto/README.md), run by the ingest tests; python3 also checks
  # JSON in app/cli_smoke_test.sh.
  kcat python3 python3-confluent-kafka python3-protobuf
  # The dashboard's test: headless Chromium driven by Selenium (tests/dashboard_test.py).
  chromium chromium-driver python3-selenium
  # systemd-analyze checks the unit file daemon/cityops.service.
  systemd
  # The parsers' libFuzzer runs (fuzz/run_fuzz.sh): clang with its sanitizer runtime.
  clang libclang-rt-14-dev
  # House style (.clang-format).
  clang-format
)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly BUILD_DIR="${CITYOPS_BUILD_DIR:-build}"
readonly BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}"
readonly VERBOSE="${CITYOPS_VERBOSE:-0}"

say() { echo "setup: $*"; }
die() {
  echo "setup: error: $*" >&2
  exit 1
}

case "${CITYOPS_WERROR:-0}" in
  1) readonly WERROR=ON ;;
  0) readonly WERROR=OFF ;;
  *) die "CITYOPS_WERROR must be 0 or 1, not '${CITYOPS_WERROR}'" ;;
esac

# Runs "$@" with its output in "$log"; on failure shows the part of it that matters.
# $1 = log file, $2 = sed expression selecting what to show on failure, rest = command.
run_logged() {
  local log="$1" show="$2"
  shift 2
  if [[ "$VERBOSE" == 1 ]]; then
    "$@" 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
  fi
  if ! "$@" >"$log" 2>&1; then
    local shown
    shown="$(sed -n "$show" "$log")"
    [[ -n "$shown" ]] || shown="$(tail -n 40 "$log")"
    echo "$shown" >&2
    echo "setup: the full output is in $log" >&2
    return 1
  fi
}

# --- Phase 1: Debian packages --------------------------------------------------------
command -v dpkg-query >/dev/null || die "dpkg-query not found: cityops is set up on Debian 12"
missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  say "packages: all ${#PACKAGES[@]} present"
else
  as_root=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null ||
      die "packages missing (${missing[*]}), and installing them needs root but sudo is not installed: run this script as root"
    as_root=(sudo)
  fi
  say "packages: installing ${missing[*]}"
  apt_log="$(mktemp -t cityops-apt.XXXXXX.log)"
  run_logged "$apt_log" '/^E:/p' \
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    die "apt-get update failed (see above); check the network and /etc/apt/sources.list"
  run_logged "$apt_log" '/^E:/p' \
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    die "apt-get install failed (see above)"
  rm -f "$apt_log"
fi

# --- Phase 2: configure --------------------------------------------------------------
mkdir -p "$BUILD_DIR"
run_logged "$BUILD_DIR/setup-configure.log" '/CMake Error/,$p' \
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
  -DCITYOPS_WERROR="$WERROR" ||
  die "configuring failed (see above); if $BUILD_DIR was made by another generator, remove it"
if [[ "$WERROR" == ON ]]; then
  say "configured: $BUILD_DIR ($BUILD_TYPE, warnings are errors)"
else
  say "configured: $BUILD_DIR ($BUILD_TYPE)"
fi

# --- Phase 3: build ------------------------------------------------------------------
start=$SECONDS
run_logged "$BUILD_DIR/setup-build.log" '/^FAILED:/,$p' \
  cmake --build "$BUILD_DIR" -j"$(nproc)" ||
  die "the build failed (see above)"
say "built: $BUILD_DIR in $((SECONDS - start)) s"
