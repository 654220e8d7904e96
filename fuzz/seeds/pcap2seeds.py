#!/usr/bin/env python3
"""Turn a pcap file into packet fuzz seeds: one file per packet, the first byte selecting the
link type as knock-fuzz/src/packet.rs does (0 Ethernet, 1 Linux cooked v1, 2 v2, 3 raw IP,
4 BSD null), then the captured bytes.

    pcap2seeds.py [--null] CAPTURE.pcap OUTDIR PREFIX

--vlan / --qinq insert an 802.1Q tag (VLAN 42) / an 802.1ad + 802.1Q pair into Ethernet
frames. --null re-frames raw-IP packets behind a 4-byte BSD loopback header (address family in host
byte order), a link type Linux cannot capture but knockd decodes.
"""
import hashlib
import os
import struct
import sys

SELECTOR = {1: 0, 113: 1, 276: 2, 101: 3, 12: 3, 228: 3, 229: 3, 0: 4, 108: 4}


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off : off + 16])
        yield linktype, data[off + 16 : off + 16 + incl]
        off += 16 + incl


def main():
    args = sys.argv[1:]
    mode = args[0] if args and args[0].startswith("--") else None
    if mode:
        args = args[1:]
    path, outdir, prefix = args
    seen = set()
    for linktype, frame in packets(path):
        if mode in ("--vlan", "--qinq"):
            tags = b"\x81\x00\x00\x2a" if mode == "--vlan" else b"\x88\xa8\x00\x07\x81\x00\x00\x2a"
            seed = bytes([0]) + frame[:12] + tags + frame[12:]
        elif mode == "--null":
            family = 2 if frame[0] >> 4 == 4 else 10
            seed = bytes([4]) + struct.pack("<I", family) + frame
        else:
            seed = bytes([SELECTOR[linktype]]) + frame
        digest = hashlib.sha1(seed).hexdigest()[:16]
        if digest in seen:
            continue
        seen.add(digest)
        with open(os.path.join(outdir, f"{prefix}-{digest}"), "wb") as f:
            f.write(seed)


main()
