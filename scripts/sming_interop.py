#!/usr/bin/env python3
"""Independent libsodium (PyNaCl) implementation of Sming's advanced `.ota` format.

Used by `crates/ota-crypto/tests/sming_interop.rs` to check our reader and writer against
libsodium in both directions. Needs PyNaCl (tested with 1.6.2: `pip install pynacl==1.6.2`),
which exposes libsodium's `crypto_sign_ed25519ph_*` and `crypto_secretstream_*` bindings.

  sming_interop.py version
  sming_interop.py make   --key ota.key --out F [--sign] [--encrypt] --timestamp MS --rom FILE@ADDR ...
  sming_interop.py verify --key ota.key --in F [--in F2 ...]    -> one JSON line per file

`make --out` with `{mode}` in the name writes all four modes at once (md5-plain, md5-enc,
signed-plain, signed-enc), ignoring --sign/--encrypt.

`verify` detects plain files by their magic and decrypts anything else. `make` follows
`otatool.py mkfile`: header `<IQBxxx`, ROM records, Ed25519ph (or MD5)
over everything before the trailer; `--encrypt` wraps it in a secretstream with 2031-byte
plaintext pieces, the last tagged FINAL. `verify` prints `{"file": F, "ok": false, "error": …}`
for a rejected file and exits 1 if any file was rejected.
"""
import argparse
import hashlib
import json
import struct
import sys

try:
    import nacl
    import nacl.bindings as sodium
except ImportError:  # pragma: no cover - reported to the Rust test
    sys.stderr.write("PyNaCl is missing: install it with `pip install pynacl==1.6.2`\n")
    sys.exit(3)

MAGIC_SIGNED = 0xF01AF02A
MAGIC_MD5 = 0xF01AF020
CHUNK = 2048 - sodium.crypto_secretstream_xchacha20poly1305_ABYTES


def load_key(path):
    with open(path, "rb") as f:
        raw = bytes.fromhex(f.read().decode("ascii").strip())
    if len(raw) < 64:
        raise SystemExit(f"key file {path} holds {len(raw)} bytes, need 64")
    seed, stream_key = raw[:32], raw[32:64]
    pk, sk = sodium.crypto_sign_seed_keypair(seed)
    return pk, sk, stream_key


def make(args):
    if "{mode}" in args.out:
        for sign in (False, True):
            for encrypt in (False, True):
                mode = ("signed" if sign else "md5") + ("-enc" if encrypt else "-plain")
                make_one(args, args.out.replace("{mode}", mode), sign, encrypt)
    else:
        make_one(args, args.out, args.sign, args.encrypt)


def make_one(args, out_path, sign, encrypt):
    pk, sk, stream_key = load_key(args.key)
    roms = []
    for spec in args.rom:
        path, addr = spec.rsplit("@", 1)
        with open(path, "rb") as f:
            roms.append((int(addr, 0), f.read()))
    magic = MAGIC_SIGNED if sign else MAGIC_MD5
    plain = bytearray(struct.pack("<IQBxxx", magic, args.timestamp, len(roms)))
    for addr, data in roms:
        plain += struct.pack("<II", addr, len(data)) + data
    if sign:
        state = sodium.crypto_sign_ed25519ph_state()
        sodium.crypto_sign_ed25519ph_update(state, bytes(plain))
        plain += sodium.crypto_sign_ed25519ph_final_create(state, sk)
    else:
        plain += hashlib.md5(plain).digest()
    out = bytes(plain)
    if encrypt:
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, stream_key)
        enc = bytearray(header)
        pieces = [out[i:i + CHUNK] for i in range(0, len(out), CHUNK)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            tag = (sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL if last
                   else sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
            c = sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, None, tag)
            enc += struct.pack("<H", len(c) - 1) + c
        out = bytes(enc)
    with open(out_path, "wb") as f:
        f.write(out)


class Rejected(Exception):
    """The file is not a valid package."""


def fail(msg):
    raise Rejected(msg)


def decrypt(data, stream_key):
    hb = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
    if len(data) < hb:
        fail("encrypted file shorter than the secretstream header")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, data[:hb], stream_key)
    pos, plain, chunks = hb, bytearray(), 0
    while True:
        if pos + 2 > len(data):
            fail(f"stream ends before FINAL (chunk {chunks})")
        (l,) = struct.unpack_from("<H", data, pos)
        pos += 2
        c = data[pos:pos + l + 1]
        if len(c) != l + 1:
            fail(f"chunk {chunks} truncated")
        pos += l + 1
        try:
            m, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, c, None)
        except Exception as e:  # libsodium raises CryptoError
            fail(f"chunk {chunks} failed authentication: {e}")
        plain += m
        chunks += 1
        if tag == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL:
            break
    if pos != len(data):
        fail(f"{len(data) - pos} byte(s) after the FINAL chunk")
    return bytes(plain), chunks


def verify(args):
    pk, _, stream_key = load_key(args.key)
    failed = False
    for path in args.inp:
        try:
            report = verify_one(path, pk, stream_key)
        except Rejected as e:
            failed = True
            report = {"file": path, "ok": False, "error": str(e)}
        sys.stdout.write(json.dumps(report) + "\n")
    sys.exit(1 if failed else 0)


def verify_one(path, pk, stream_key):
    with open(path, "rb") as f:
        data = f.read()
    chunks = 0
    if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] not in (MAGIC_SIGNED, MAGIC_MD5):
        data, chunks = decrypt(data, stream_key)
    if len(data) < 16:
        fail("file shorter than its header")
    magic, timestamp, count = struct.unpack_from("<IQB", data, 0)
    if magic == MAGIC_SIGNED:
        trailer = 64
    elif magic == MAGIC_MD5:
        trailer = 16
    else:
        fail(f"bad magic {magic:#010x}")
    pos, roms = 16, []
    for _ in range(count):
        if pos + 8 > len(data):
            fail("ROM header truncated")
        addr, size = struct.unpack_from("<II", data, pos)
        pos += 8
        image = data[pos:pos + size]
        if len(image) != size:
            fail("ROM image truncated")
        roms.append({"address": addr, "size": size, "sha256": hashlib.sha256(image).hexdigest()})
        pos += size
    if len(data) != pos + trailer:
        fail(f"trailer expected at {pos}, file has {len(data)} bytes")
    body, tail = data[:pos], data[pos:]
    if magic == MAGIC_SIGNED:
        state = sodium.crypto_sign_ed25519ph_state()
        sodium.crypto_sign_ed25519ph_update(state, body)
        try:
            sodium.crypto_sign_ed25519ph_final_verify(state, tail, pk)
        except Exception as e:
            fail(f"Ed25519ph signature invalid: {e}")
    elif hashlib.md5(body).digest() != tail:
        fail("MD5 mismatch")
    return {"file": path, "ok": True, "pynacl": nacl.__version__, "signed": magic == MAGIC_SIGNED,
            "timestamp": timestamp, "chunks": chunks, "roms": roms}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version")
    m = sub.add_parser("make")
    m.add_argument("--key", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--sign", action="store_true")
    m.add_argument("--encrypt", action="store_true")
    m.add_argument("--timestamp", type=int, required=True)
    m.add_argument("--rom", action="append", default=[])
    v = sub.add_parser("verify")
    v.add_argument("--key", required=True)
    v.add_argument("--in", dest="inp", action="append", required=True)
    args = p.parse_args()
    if args.cmd == "version":
        print(nacl.__version__)
    elif args.cmd == "make":
        make(args)
    else:
        verify(args)


if __name__ == "__main__":
    main()
