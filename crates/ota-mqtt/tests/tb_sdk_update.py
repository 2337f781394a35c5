"""Runs the unmodified ThingsBoard Python SDK (`tb-mqtt-client`) firmware update against an
MQTT endpoint and checks the downloaded bytes.

usage: tb_sdk_update.py HOST PORT TOKEN EXPECTED_IMAGE CHUNK_SIZE

Run it in an empty directory: the SDK's default firmware callback writes the image to a file
named after `fw_title` in the working directory. Prints one line `OK <bytes> <version>` and
exits 0 on success; exits 1 with a reason otherwise.
"""
import sys
import time
from importlib.metadata import version

from tb_device_mqtt import TBDeviceMqttClient

DEADLINE_S = 60


def wait_for(what, predicate):
    end = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > end:
            print(f"timed out waiting for {what}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.05)


def main():
    host, port, token, expected_path, chunk_size = sys.argv[1:6]
    with open(expected_path, "rb") as f:
        expected = f.read()
    client = TBDeviceMqttClient(host, port=int(port), username=token, chunk_size=int(chunk_size))
    client.connect()
    wait_for("CONNACK", client.is_connected)
    client.get_firmware_update()
    info = client.current_firmware_info
    wait_for("fw_state UPDATED", lambda: info.get("fw_state") in ("UPDATED", "FAILED"))
    if info.get("fw_state") != "UPDATED":
        print(f"update failed: {info}", file=sys.stderr)
        sys.exit(1)
    title = info["current_fw_title"]
    with open(title, "rb") as f:
        got = f.read()
    client.disconnect()
    if got != expected:
        print(f"downloaded {len(got)} bytes differ from the {len(expected)}-byte package", file=sys.stderr)
        sys.exit(1)
    print(f"OK {len(got)} {info['current_fw_version']} tb-mqtt-client {version('tb-mqtt-client')}")


if __name__ == "__main__":
    main()
