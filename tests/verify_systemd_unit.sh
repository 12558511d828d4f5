#!/usr/bin/env bash
# Checks daemon/cityops.service with systemd-analyze verify, pointing it at the built
# binary instead of /usr/local/bin/cityops. Usage: verify_systemd_unit.sh UNIT CITYOPS
set -euo pipefail
unit="$1"
binary="$2"
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze is not installed (Debian package systemd); cannot check $unit" >&2
  exit 1
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/cityops|$binary|g" "$unit" >"$dir/cityops.service"
out="$(systemd-analyze verify "$dir/cityops.service" 2>&1 || true)"
# Complaints about this machine (no such user, no network target) are not the unit's.
problems="$(grep -F 'cityops.service' <<<"$out" | grep -v -e 'Failed to resolve user' || true)"
if [[ -n "$problems" ]]; then
  echo "$unit does not verify:" >&2
  echo "$problems" >&2
  exit 1
fi
echo "$unit verifies"
