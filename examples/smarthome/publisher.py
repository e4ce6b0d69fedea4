#!/usr/bin/env python3
"""Seed 002's sensor publisher, as its authors wrote it: readings as JSON, encrypted with
cryptography's Fernet, published over MQTT with paho-mqtt. Debian's python3-paho-mqtt and
python3-cryptography are all it needs.

    publisher.py --broker 127.0.0.1:1883 --topic strata/<house>/<device> --key <fernet key>
                 --sensor-id <id> [--username U --password P] [--count 10] [--metric temperature]

Each message is {"sensor_id", "timestamp", "values": {metric: value}}; the values are
start, start+1, … so a test can find each one. Publishes at QoS 1 and waits for every
acknowledgement, then prints how many were acknowledged.
"""
import argparse
import json
import sys
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
from cryptography.fernet import Fernet


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--sensor-id", required=True)
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--start", type=float, default=20.0)
    ap.add_argument("--metric", default="temperature")
    ap.add_argument("--client-id", default="seed-002-publisher")
    args = ap.parse_args()

    fernet = Fernet(args.key.encode())
    host, port = args.broker.rsplit(":", 1)
    client = mqtt.Client(client_id=args.client_id, protocol=mqtt.MQTTv5)
    if args.username:
        client.username_pw_set(args.username, args.password)
    connected = {}

    def on_connect(c, userdata, flags, rc, properties=None):
        connected["rc"] = rc

    client.on_connect = on_connect
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    deadline = time.time() + 10
    while "rc" not in connected and time.time() < deadline:
        time.sleep(0.01)
    if connected.get("rc") != 0:
        print(f"connection refused: {connected.get('rc')}", file=sys.stderr)
        sys.exit(2)

    infos = []
    for i in range(args.count):
        reading = {
            "sensor_id": args.sensor_id,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "values": {args.metric: args.start + i},
        }
        token = fernet.encrypt(json.dumps(reading).encode())
        infos.append(client.publish(args.topic, token, qos=1))
    acked = 0
    for info in infos:
        info.wait_for_publish(timeout=10)
        if info.is_published():
            acked += 1
    client.loop_stop()
    client.disconnect()
    print(acked)
    sys.exit(0 if acked == args.count else 1)


if __name__ == "__main__":
    main()
