#!/usr/bin/env python3
"""A Sming device with OtaUpgradeMqtt, as far as the broker can tell.

It does what Sming's `samples/Upgrade` does on network-up: connect, subscribe to
`a/<app>/u/<major>.<minor>` at QoS 0, and hand the PUBLISH it gets to the payload parser.
The parser decodes the patch prefix the way `PayloadParser::getPatchVersion` does -- the sum of
the 7-bit groups, without shifting, at most 24 prefix bytes -- and installs the rest when the
decoded patch is not below the running one (`patch < current` is the only refusal).

With `--advanced` the rest is an OtaUpgrade `.ota` file (unsigned, MD5 trailer): the emulator
walks the ROM records like `BasicStream`, takes the record whose address matches the target
slot modulo 1 MiB and checks the MD5 over everything before the trailer.

Whether a retained message exists is decided without timing: after the SUBACK the emulator
publishes a probe to a second topic it is also subscribed to. A broker sends the retained
message of a subscription before it handles the client's next PUBLISH, so a probe that arrives
first means there is no retained firmware.

Prints `READY` once connected, then one JSON line with what it saw, and exits 0.
"""

import argparse
import hashlib
import json
import struct
import sys
import threading
import uuid

import paho.mqtt.client as mqtt

ALLOWED_VERSION_BYTES = 24  # PayloadParser's default `allowedVersionBytes`
MAGIC_SIGNED = 0xF01AF02A
MAGIC_MD5 = 0xF01AF020


def device_patch(payload):
    """Sming's getPatchVersion: sum of groups; returns (patch, prefix_len) or an error code."""
    value = 0
    for i, b in enumerate(payload):
        if i >= ALLOWED_VERSION_BYTES:
            return None, "ERROR_INVALID_PATCH_VERSION"
        value += b & 0x7F
        if b & 0x80 == 0:
            return (value, i + 1), None
    return None, "ERROR_INVALID_PATCH_VERSION"


def walk_ota(data, slot):
    """BasicStream over a plain unsigned .ota file: returns (rom bytes, error)."""
    if len(data) < 16:
        return None, "InvalidFormat"
    magic, _timestamp, count = struct.unpack_from("<IQB", data, 0)
    if magic == MAGIC_SIGNED:
        return None, "InvalidFormat (signed package, this device checks MD5)"
    if magic != MAGIC_MD5:
        return None, "InvalidFormat"
    pos = 16
    rom = None
    for _ in range(count):
        if pos + 8 > len(data):
            return None, "InvalidFormat"
        address, size = struct.unpack_from("<II", data, pos)
        pos += 8
        if pos + size > len(data):
            return None, "InvalidFormat"
        if rom is None and (address & 0xFFFFF) == (slot & 0xFFFFF):
            rom = data[pos : pos + size]
        pos += size
    if len(data) - pos != 16:
        return None, "UnsupportedData" if len(data) - pos > 16 else "InvalidFormat"
    if hashlib.md5(data[:pos]).digest() != data[pos:]:
        return None, "VerificationFailed"
    if rom is None:
        return None, "NoRomFound"
    return rom, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--app", required=True)
    ap.add_argument("--version", required=True, help="running major.minor.patch")
    ap.add_argument("--advanced", action="store_true")
    ap.add_argument("--slot", type=lambda s: int(s, 0), default=0x2000)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()

    major, minor, current = (int(x) for x in args.version.split("."))
    topic = f"a/{args.app}/u/{major}.{minor}"
    probe = f"probe/{uuid.uuid4().hex}"
    done = threading.Event()
    result = {"topic": topic, "current_patch": current}

    def on_connect(client, _userdata, _flags, reason, _props):
        if reason.is_failure:
            result.update(outcome="connect-failed", reason=str(reason))
            done.set()
            return
        client.subscribe(topic, qos=0)
        print("READY", flush=True)

    def on_subscribe(client, _userdata, mid, _reasons, _props):
        if mid == state["sub_mid"]:
            client.subscribe(probe, qos=1)
        else:
            client.publish(probe, b"probe", qos=1)

    def on_message(_client, _userdata, msg):
        if done.is_set():
            return
        if msg.topic == probe:
            result.setdefault("outcome", "none")
            done.set()
            return
        payload = bytes(msg.payload)
        result.update(retain=bool(msg.retain), qos=msg.qos, payload_len=len(payload))
        if not payload:
            result["outcome"] = "none"
            done.set()
            return
        decoded, error = device_patch(payload)
        if error:
            result.update(outcome="error", error=error)
            done.set()
            return
        patch, prefix_len = decoded
        body = payload[prefix_len:]
        result.update(patch=patch, prefix_len=prefix_len)
        if patch < current:
            result["outcome"] = "refused"
            done.set()
            return
        result.update(body_len=len(body), body_sha256=hashlib.sha256(body).hexdigest())
        if args.advanced:
            rom, err = walk_ota(body, args.slot)
            if err:
                result.update(outcome="error", error=err)
                done.set()
                return
            result.update(rom_len=len(rom), rom_sha256=hashlib.sha256(rom).hexdigest())
        result["outcome"] = "installed"
        done.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"sming-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    state = {}
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    # The subscribe mid is needed in on_subscribe; subscribe from on_connect records it.
    original_subscribe = client.subscribe

    def subscribe(t, qos=0):
        rc, mid = original_subscribe(t, qos=qos)
        if t == topic:
            state["sub_mid"] = mid
        return rc, mid

    client.subscribe = subscribe
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not done.wait(args.timeout):
        result["outcome"] = "timeout"
    client.loop_stop()
    client.disconnect()
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
