#!/usr/bin/env python3
"""An EnigmaIoT gateway with one node behind it, as far as the MQTT broker can tell.

Gateway part (EnigmaIOTGatewayMQTT): subscribes to `<net>/+/set/#` at QoS 0, answers
`set/sleeptime` on `result/sleeptime` with `{"sleeptime":N}`, refuses OTA to a node it
believes sleepy (logs only, nothing on MQTT), parses OTA lines (index up to the first comma,
header `0,size,chunks,md5` with lower-case MD5, chunk data base64, at most 212 bytes) and
relays node answers on `result/ota` as JSON with an unquoted integer `status`.

Node part (`processOTACommand`):
* message 0: store size, chunk count, MD5; running; reset the MD5; status 0. `oldIdx` is a
  static that message 0 does not reset (only a reboot does).
* message i while running: `i != oldIdx + 1` -> status 4 with `last_chunk = oldIdx` once per
  gap, message ignored, timeout not refreshed; else accept, `oldIdx = i`.
* message i while not running: status 1 once.
* `i == chunks`: MD5 compare -> status 2 / 3; `Update.end()` (size and MD5) -> status 6 and
  reboot, or status 3 and reboot.
* 10 s without an accepted OTA message while running: status 5, reboot.
* message 0 while running: the updater refuses `begin` -> reboot (reported as a violation:
  a sender must not do that).

Fault injection: `--drop 5,17` loses the first delivery of those chunk indices (ESP-NOW loss);
`--deaf-after K --deaf-for S` loses every OTA message for S seconds after chunk K was accepted
(link outage: the node times out, reports 5 and reboots); `--corrupt K` flips a bit of chunk K
as written to flash (the MD5 check then fails); `--forget-after K` crashes and reboots the node
silently after chunk K (no status 5); `--initial-index N` starts with `oldIdx = N`, as left by
an earlier transfer that no reboot ended; `--lose-finals` loses the gateway's status 2 and 6
reports (its MQTT queue holds three messages); `--noise` publishes unreadable results next to
every real one.

Prints `READY` once subscribed, then one JSON line with what it saw when the image is
installed or `--max-runtime` has passed, and exits 0.
"""

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

CHUNK = 212
OTA_TIMEOUT = 10.0  # OTA_TIMEOUT_TIME, ms 10000
MD5_RE = re.compile(rb"^[0-9a-f]{32}$")
STATUS_TEXT = {
    0: "OTA Started",
    1: "OTA Start error",
    2: "OTA check OK",
    3: "OTA check failed",
    4: "OTA out of sequence error",
    5: "OTA timeout",
    6: "OTA finished OK",
}


class Node:
    def __init__(self, args, publish):
        self.args = args
        self.publish = publish
        self.lock = threading.Lock()
        self.sleepy = True
        self.reboot()
        self.old_idx = args.initial_index  # static: survives message 0, not a reboot
        self.statuses = []
        self.violations = []
        self.headers = 0
        self.reboots = 0
        self.accepted = 0
        self.dropped = []
        self.to_drop = set(args.drop)
        self.deaf_until = None
        self.deaf_done = False
        self.forgot = False
        self.installed = None
        self.done = threading.Event()

    def reboot(self):
        self.running = False
        self.old_idx = 0
        self.gap_reported = False
        self.start_error_reported = False
        self.size = 0
        self.chunks = 0
        self.md5 = b""
        self.data = bytearray()
        self.last_ota = time.monotonic()

    def status(self, code, last_chunk=None):
        self.statuses.append(code)
        if self.args.noise:
            self.publish("result/ota", "not json")
            self.publish("result/ota", '{"status":9,"result":"?"}')
            self.publish("result/ota", '{"status":4}')
        if self.args.lose_finals and code in (2, 6):
            return
        body = {}
        if last_chunk is not None:
            body["last_chunk"] = last_chunk
        body["result"] = STATUS_TEXT[code]
        body["status"] = code
        self.publish("result/ota", json.dumps(body, separators=(",", ":")))

    def on_sleeptime(self, payload):
        with self.lock:
            try:
                value = int(payload.decode())
            except ValueError:
                self.violations.append(f"sleeptime payload {payload!r}")
                return
            self.sleepy = value != 0
            self.publish("result/sleeptime", json.dumps({"sleeptime": value}))

    def on_ota(self, payload):
        with self.lock:
            self._on_ota(payload)

    def _on_ota(self, payload):
        if self.sleepy:
            return  # the gateway refuses OTA to a sleepy node; nothing on MQTT
        idx_text, sep, rest = payload.partition(b",")
        if not sep or not idx_text.isdigit() or len(idx_text) > 9:
            self.violations.append(f"malformed line {payload[:40]!r}")
            return
        idx = int(idx_text)
        now = time.monotonic()
        if self.deaf_until is not None:
            if now < self.deaf_until:
                self.dropped.append(idx)
                return
            self.deaf_until = None
        if idx != 0 and idx in self.to_drop:
            self.to_drop.discard(idx)
            self.dropped.append(idx)
            return
        if idx == 0:
            self.header(rest)
        else:
            self.chunk(idx, rest)

    def header(self, rest):
        self.headers += 1
        fields = rest.split(b",")
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            self.violations.append(f"malformed header {rest!r}")
            return
        if not MD5_RE.match(fields[2]):
            self.violations.append(f"MD5 not 32 lower-case hex digits: {fields[2]!r}")
            return
        size, chunks = int(fields[0]), int(fields[1])
        if chunks > 0xFFFF or chunks != -(-size // CHUNK):
            self.violations.append(f"header {size} bytes / {chunks} chunks")
            return
        if self.running:
            self.violations.append("message 0 while an update is running")
            self.reboots += 1
            self.reboot()
            return
        self.size, self.chunks, self.md5 = size, chunks, fields[2]
        self.running = True
        self.gap_reported = False
        self.start_error_reported = False
        self.data = bytearray()
        self.last_ota = time.monotonic()
        self.status(0)

    def chunk(self, idx, text):
        try:
            data = base64.b64decode(text, validate=True)
        except binascii.Error:
            self.violations.append(f"chunk {idx}: bad base64")
            return
        if len(data) > CHUNK or not data:
            self.violations.append(f"chunk {idx}: {len(data)} bytes")
            return
        if not self.running:
            if not self.start_error_reported:
                self.start_error_reported = True
                self.status(1)
            return
        if idx != self.old_idx + 1:
            if not self.gap_reported:
                self.gap_reported = True
                self.status(4, self.old_idx)
            return
        self.gap_reported = False
        self.old_idx = idx
        self.accepted += 1
        if idx == self.args.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        self.data += data
        self.last_ota = time.monotonic()
        if (
            self.args.deaf_after is not None
            and not self.deaf_done
            and idx == self.args.deaf_after
        ):
            self.deaf_done = True
            self.deaf_until = time.monotonic() + self.args.deaf_for
        if idx == self.args.forget_after and not self.forgot:
            self.forgot = True
            self.reboots += 1
            self.reboot()
            return
        if idx == self.chunks:
            digest = hashlib.md5(self.data).hexdigest().encode()
            self.status(2 if digest == self.md5 else 3)
            if digest == self.md5 and len(self.data) == self.size:
                self.status(6)
                self.installed = bytes(self.data)
                self.done.set()
            else:
                self.status(3)
            self.reboots += 1
            self.reboot()

    def tick(self):
        with self.lock:
            if self.running and time.monotonic() - self.last_ota > OTA_TIMEOUT:
                self.status(5)
                self.reboots += 1
                self.reboot()


def parse_list(text):
    return [int(x) for x in text.split(",") if x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--net", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--drop", type=parse_list, default=[])
    ap.add_argument("--deaf-after", type=int)
    ap.add_argument("--deaf-for", type=float, default=0.0)
    ap.add_argument("--corrupt", type=int)
    ap.add_argument("--forget-after", type=int)
    ap.add_argument("--initial-index", type=int, default=0)
    ap.add_argument("--lose-finals", action="store_true")
    ap.add_argument("--noise", action="store_true")
    ap.add_argument("--max-runtime", type=float, default=50.0)
    args = ap.parse_args()

    prefix = f"{args.net}/{args.node}/"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"enigmaiot-gw-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )

    def publish(sub, text):
        client.publish(prefix + sub, text.encode(), qos=0, retain=False)

    node = Node(args, publish)

    def on_connect(c, _userdata, _flags, reason, _props):
        if reason.is_failure:
            node.violations.append(f"connect failed: {reason}")
            node.done.set()
            return
        c.subscribe(f"{args.net}/+/set/#", qos=0)

    def on_subscribe(_c, _userdata, _mid, _reasons, _props):
        print("READY", flush=True)

    def on_message(_c, _userdata, msg):
        if not msg.topic.startswith(prefix):
            return
        sub = msg.topic[len(prefix) :]
        if msg.retain:
            node.violations.append(f"retained message on {msg.topic}")
        if sub == "set/sleeptime":
            node.on_sleeptime(bytes(msg.payload))
        elif sub == "set/ota":
            node.on_ota(bytes(msg.payload))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + args.max_runtime
    while not node.done.is_set() and time.monotonic() < deadline:
        node.tick()
        time.sleep(0.05)
    time.sleep(0.3)  # let the last result leave
    client.loop_stop()
    client.disconnect()
    with node.lock:
        out = {
            "outcome": "installed" if node.installed is not None else "not-installed",
            "installed_len": len(node.installed or b""),
            "installed_sha256": hashlib.sha256(node.installed or b"").hexdigest(),
            "statuses": node.statuses,
            "headers": node.headers,
            "reboots": node.reboots,
            "dropped": node.dropped,
            "accepted": node.accepted,
            "violations": node.violations,
        }
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
