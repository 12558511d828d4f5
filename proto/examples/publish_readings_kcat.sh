#!/usr/bin/env bash
# Publish JSON readings with kcat (Debian package `kcat`), one record per line of
# "<device id>|<reading as JSON>", keyed by device id and partitioned with murmur2 like
# Kafka's Java clients.
#
#   proto/examples/publish_readings_kcat.sh 127.0.0.1:9092 readings.txt
set -euo pipefail
bootstrap=${1:?usage: $0 BOOTSTRAP FILE}
file=${2:?usage: $0 BOOTSTRAP FILE}
exec kcat -b "$bootstrap" -t cityops.readings -P -K '|' \
  -H content-type=application/json \
  -X partitioner=murmur2_random -X enable.idempotence=true \
  -l "$file"
