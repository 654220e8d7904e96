#!/usr/bin/env bash
# Regenerates the packet seed corpus (fuzz/seeds/packet/) from real captures, as root:
#
#   sudo bash fuzz/seeds/capture.sh
#
# Two throwaway network namespaces joined by a veth pair carry TCP and UDP knocks over IPv4
# and IPv6, also through a tun device, and IPv6 with hop-by-hop and destination-options
# headers; tcpdump records them as Ethernet, Linux cooked v1 and v2 and raw IP. VLAN tags
# are inserted into the Ethernet captures afterwards. Nothing touches the host's interfaces; the namespaces are deleted on exit.
# fuzz/seeds/pcap2seeds.py turns each capture into one seed file per packet.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "must run as root (network namespaces)" >&2; exit 1; }

A="kf$$-a"
B="kf$$-b"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip link add va netns "$A" type veth peer name vb netns "$B"
inA() { ip netns exec "$A" "$@"; }
inB() { ip netns exec "$B" "$@"; }
for ns in "$A" "$B"; do
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
inA ip addr add 10.99.0.1/24 dev va
inB ip addr add 10.99.0.2/24 dev vb
inA ip addr add fd99:f::1/64 dev va nodad
inB ip addr add fd99:f::2/64 dev vb nodad
inA ip link set va up
inB ip link set vb up
# A tun device (raw IP link, no link header), held open by a small python process so it has
# carrier; what is routed to it is captured and dropped.
inA python3 -c '
import fcntl, os, struct, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"ta", 0x0001 | 0x1000))  # TUNSETIFF, IFF_TUN|IFF_NO_PI
time.sleep(60)
' &
PIDS+=($!)
for _ in $(seq 50); do inA ip link show ta >/dev/null 2>&1 && break; sleep 0.1; done
inA ip addr add 10.99.7.1/24 dev ta
inA ip addr add fd99:7::1/64 dev ta nodad
inA ip link set ta up
capture() { # namespace, name, tcpdump args...
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" tcpdump -U -q -n -s 256 -w "$WORK/$name.pcap" "$@" 'ip or ip6' 2>/dev/null &
    PIDS+=($!)
}
capture "$B" ether -i vb
capture "$B" sll1 -i any -y LINUX_SLL
capture "$B" sll2 -i any -y LINUX_SLL2
capture "$A" raw -i ta
sleep 2

knock() { # address port proto
    if [ "$3" = tcp ]; then
        inA timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null || true
    else
        inA bash -c "echo knock >/dev/udp/$1/$2" 2>/dev/null || true
    fi
}
for addr in 10.99.0.2 fd99:f::2 10.99.7.2 fd99:7::2; do
    knock "$addr" 7000 tcp
    knock "$addr" 8000 udp
done
# IPv6 with extension headers: hop-by-hop and destination options (PadN) on UDP and TCP.
inA python3 - <<'PY'
import socket
IPV6_HOPOPTS, IPV6_DSTOPTS = 54, 59
padn = bytes([0, 0, 1, 4, 0, 0, 0, 0])
for opt in (IPV6_HOPOPTS, IPV6_DSTOPTS):
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, opt, padn)
    u.sendto(b"knock", ("fd99:f::2", 9000))
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.IPPROTO_IPV6, opt, padn)
    t.settimeout(0.5)
    try:
        t.connect(("fd99:f::2", 9001))
    except OSError:
        pass
PY
sleep 2
for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

rm -rf packet
mkdir -p packet
for name in ether sll1 sll2 raw; do
    python3 pcap2seeds.py "$WORK/$name.pcap" packet "$name"
done
python3 pcap2seeds.py --null "$WORK/raw.pcap" packet null
# 802.1Q and 802.1ad+802.1Q (QinQ) tags, inserted into the Ethernet captures (this kernel has
# no VLAN devices to produce them).
python3 pcap2seeds.py --vlan "$WORK/ether.pcap" packet vlan
python3 pcap2seeds.py --qinq "$WORK/ether.pcap" packet qinq
echo "packet seeds: $(ls packet | wc -l) files in fuzz/seeds/packet"
