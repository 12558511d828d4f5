#!/usr/bin/python3
"""Publish sensor readings to cityops with python3-confluent-kafka (Debian package).

An integrator's minimal producer: idempotent, keyed by device id, partitioned with
murmur2 like Kafka's Java clients (cityops routes a device's registrations the same
way). Readings go out as JSON by the protobuf JSON mapping with the header
`content-type: application/json`, or with --encoding protobuf as binary protobuf
(needs python3-protobuf and protoc; the classes are generated into a temp dir).

    /usr/bin/python3 proto/examples/publish_readings.py --bootstrap 127.0.0.1:9092 --count 10

Exit status 0 only if every record was acknowledged by the brokers.
"""
import argparse
import atexit
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

from confluent_kafka import Producer

HERE = os.path.dirname(os.path.abspath(__file__))


def reading(device_id, n, now):
    """A flood gauge reading in the protobuf JSON mapping (lowerCamelCase names)."""
    return {
        "deviceId": device_id,
        "kind": "DEVICE_KIND_FLOOD_GAUGE",
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "readingId": f"{device_id}:{n}",
        "floodGauge": {"waterDepthCm": 3.5 + n, "rainfallMmPerH": 12.0, "batteryPct": 91.0},
    }


def protobuf_encoder():
    """Generates the cityops.v1 Python classes and returns a dict -> bytes encoder."""
    out = tempfile.mkdtemp(prefix="cityops-pb-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)  # Imported by then; not needed.
    protos = [os.path.join("cityops", "v1", f) for f in
              ("common.proto", "reading.proto", "case.proto", "events.proto", "ingest.proto")]
    subprocess.run(["protoc", f"--proto_path={os.path.dirname(HERE)}", f"--python_out={out}",
                    *protos], check=True)
    sys.path.insert(0, out)
    from google.protobuf import json_format  # noqa: E402 (after codegen)
    from cityops.v1 import reading_pb2  # noqa: E402

    return lambda r: json_format.ParseDict(r, reading_pb2.SensorReading()).SerializeToString()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="cityops.readings")
    parser.add_argument("--count", type=int, default=10, help="readings per device")
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--encoding", choices=["json", "protobuf"], default="json")
    args = parser.parse_args()

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,  # No duplicates from retries.
        "partitioner": "murmur2_random",  # Same partition as Java clients and cityops.
        "linger.ms": 5,
    })
    encode = protobuf_encoder() if args.encoding == "protobuf" else None
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(f"{msg.key()}: {err}")

    now = datetime.datetime.now(datetime.timezone.utc)
    for d in range(args.devices):
        device_id = f"gauge-{d:04d}"
        for n in range(args.count):
            r = reading(device_id, n, now)
            if encode:
                producer.produce(args.topic, key=device_id, value=encode(r), on_delivery=delivered)
            else:
                producer.produce(args.topic, key=device_id, value=json.dumps(r),
                                 headers={"content-type": "application/json"},
                                 on_delivery=delivered)
            producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failures:
        print(f"not acknowledged: {remaining} in flight, failures: {failures}", file=sys.stderr)
        return 1
    print(f"published {args.devices * args.count} readings to {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
