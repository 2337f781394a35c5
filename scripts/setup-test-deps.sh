#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, idempotently:
# Python reference implementations (mmh3, PyNaCl), the S3-compatible test server (moto) and
# the PostgreSQL server binaries, the MQTT 3.1.1 client the Sming and EnigmaIoT emulators use
# (paho), and aiocoap as a second CoAP client. Quick when everything is already present.
set -euo pipefail

PY_PKGS=("mmh3==5.3.1" "pynacl==1.6.2" "moto[server]==5.2.5" "tb-mqtt-client==1.13.14"
         "tb-paho-mqtt-client==2.1.2" "aiocoap==0.4.17")

need_pip=()
python3 -c 'import mmh3' 2>/dev/null || need_pip+=("${PY_PKGS[0]}")
python3 -c 'import nacl.bindings' 2>/dev/null || need_pip+=("${PY_PKGS[1]}")
command -v moto_server >/dev/null 2>&1 || need_pip+=("${PY_PKGS[2]}")
python3 -c 'import tb_device_mqtt' 2>/dev/null || need_pip+=("${PY_PKGS[3]}")
# `paho.mqtt.client` with the 2.x callback API. ThingsBoard's SDK depends on its paho fork
# `tb-paho-mqtt-client` (paho-mqtt 2.1.0 plus one loop fix), which installs the same `paho`
# package; pinning the fork rather than upstream `paho-mqtt` keeps a single owner of those files.
python3 -c 'import paho.mqtt.client as m; m.CallbackAPIVersion' 2>/dev/null || need_pip+=("${PY_PKGS[4]}")
python3 -c 'import aiocoap' 2>/dev/null || need_pip+=("${PY_PKGS[5]}")
if [ ${#need_pip[@]} -gt 0 ]; then
    echo "setup: pip install ${need_pip[*]}"
    python3 -m pip install --quiet "${need_pip[@]}"
fi

apt_pkgs=()
# The tests run the server binaries from /usr/lib/postgresql/*/bin (Debian's layout).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    apt_pkgs+=(postgresql)
fi
command -v mosquitto >/dev/null 2>&1 || apt_pkgs+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || apt_pkgs+=(mosquitto-clients)
command -v coap-client-notls >/dev/null 2>&1 || apt_pkgs+=(libcoap3-bin)
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
# Certificates for the MQTT-over-TLS tests are made with the openssl CLI.
command -v openssl >/dev/null 2>&1 || apt_pkgs+=(openssl)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    echo "setup: apt-get install ${apt_pkgs[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi
echo "setup: test dependencies present"
