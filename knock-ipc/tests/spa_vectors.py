#!/usr/bin/env python3
"""Independent implementation of knockd's SPA packet (knock-ipc/src/spa/packet.rs), for the
fixed vectors in knock-ipc/tests/spa_python.rs. Test-only: libsodium through PyNaCl for
X25519, Ed25519 and XChaCha20-Poly1305; Python's own hmac/hashlib for HKDF and HMAC.

Prints one line per vector: `name packet-hex`. Run by `cargo test -p knock-ipc`.
"""
import hashlib
import hmac
import ipaddress
import struct

from nacl import bindings as sodium


def hkdf_sha256(salt, ikm, info, length=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def door_id(name):
    if name is None:
        return bytes(8)
    d = hashlib.sha256(b"knockd-spa-v1 door" + name.encode()).digest()[:8]
    return d if d != bytes(8) else bytes(7) + b"\x01"


def body(ts_ms, addr, timeout, door):
    kind, raw = 0, bytes(16)
    if addr is not None:
        ip = ipaddress.ip_address(addr)
        kind = 4 if ip.version == 4 else 6
        raw = ip.packed.ljust(16, b"\x00")
    return struct.pack(">QBB", ts_ms, 1, kind) + raw + struct.pack(">I", timeout) + door_id(door) + bytes(8)


def packet(server_sk, client_x_sk, client_ed_seed, nonce, ts_ms, addr, timeout, door):
    server_pub = sodium.crypto_scalarmult_base(server_sk)
    client_pub = sodium.crypto_scalarmult_base(client_x_sk)
    shared = sodium.crypto_scalarmult(server_sk, client_pub)
    assert shared == sodium.crypto_scalarmult(client_x_sk, server_pub)
    ikm = shared + client_pub + server_pub
    k_hint = hkdf_sha256(b"knockd-spa-v1", ikm, b"knockd-spa-v1 hint")
    k_aead = hkdf_sha256(b"knockd-spa-v1", ikm, b"knockd-spa-v1 aead")
    epoch = ts_ms // 30000
    hint = hmac.new(k_hint, b"knockd-spa-v1 epoch" + struct.pack(">Q", epoch), hashlib.sha256).digest()[:16]
    b = body(ts_ms, addr, timeout, door)
    _pk, sk64 = sodium.crypto_sign_seed_keypair(client_ed_seed)
    sig = sodium.crypto_sign(b"knockd-spa-v1 sig" + server_pub + hint + nonce + b, sk64)[:64]
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(b + sig, hint, nonce, k_aead)
    return hint + nonce + ct


def seq(start, n):
    return bytes((start + i) & 0xFF for i in range(n))


SERVER = seq(0x00, 32)
CLIENT_X = seq(0x40, 32)
CLIENT_ED = seq(0x80, 32)
NONCE = seq(0xC0, 24)

VECTORS = [
    ("v4-ssh", 1_800_000_000_123, "203.0.113.7", 60, "ssh"),
    ("source-any", 1_800_000_029_999, None, 0, None),
    ("v6-web", 1_800_000_030_000, "2001:db8::1", 3600, "web"),
]

for name, ts, addr, timeout, door in VECTORS:
    print(name, packet(SERVER, CLIENT_X, CLIENT_ED, NONCE, ts, addr, timeout, door).hex())
