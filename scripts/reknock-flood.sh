#!/usr/bin/env bash
# What a flood of re-knocks costs: open GRANTS grants of a native door (`open = 22/tcp`), then
# re-knock them round robin, RATE sequences a second for SECS seconds, with forged sources, and
# report the daemon's CPU (its own and its children's: the `iptables` it runs) and how many
# `iptables` processes it started (counted through a wrapper first in its PATH, which adds a
# shell per process to the children's CPU: compare CPU between runs without --count).
#
#   sudo bash scripts/reknock-flood.sh [--count] KNOCKD GRANTS SECS RATE
#   sudo bash scripts/reknock-flood.sh --count target/release/knockd 20 20 1000
#
# Each grant's own budget allows 3 checks at once, then 1 a second; the quick lane 8 + 8 a
# second more for all grants (at most 4 + 4 a second for one): see knockd/src/grants/checks.rs
# and BENCHMARKS.md ("The quick lane"). Needs root and python3. Everything runs in two network
# namespaces made for the run and deleted at exit (10.99.88.0/24 inside them only); the host's
# firewall and interfaces are never touched.
set -euo pipefail

COUNT=0
if [ "${1:-}" = --count ]; then COUNT=1; shift; fi
[ $# -eq 4 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
KNOCKD=$(realpath "$1"); GRANTS=$2; SECS=$3; RATE=$4
[ "$(id -u)" -eq 0 ] || { echo "reknock-flood: must run as root" >&2; exit 1; }
[ "$GRANTS" -ge 1 ] && [ "$GRANTS" -le 150 ] || { echo "reknock-flood: GRANTS is 1 to 150" >&2; exit 2; }

SRV=rkf-s-$$; CLI=rkf-c-$$; DIR=$(mktemp -d /tmp/reknock-flood.XXXXXX); KPID=
cleanup() {
    [ -n "$KPID" ] && kill "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
    ip netns del "$CLI" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$SRV"; ip netns add "$CLI"
ip netns exec "$SRV" ip link add kv0 type veth peer name kc0 netns "$CLI"
ip netns exec "$SRV" ip addr add 10.99.88.1/24 dev kv0
ip netns exec "$CLI" ip addr add 10.99.88.2/24 dev kc0
for ns in "$SRV" "$CLI"; do ip netns exec "$ns" ip link set lo up; done
ip netns exec "$SRV" ip link set kv0 up; ip netns exec "$CLI" ip link set kc0 up

# Raw TCP SYNs with forged sources: `open` knocks each source once, 0.25 s apart (the door's
# fair start queue takes them all); `flood SECS RATE` re-knocks them round robin.
cat > "$DIR/send.py" <<'EOF'
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def syn(src, dst, sport, dport):
    tcp = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, 0, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack('!H', csum(ip)) + ip[12:] + tcp
dst, srcs, mode = sys.argv[1], sys.argv[2].split(','), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
n = 0
def knock(src):
    global n
    for port in (2222, 1111, 3333):
        s.sendto(syn(src, dst, 40000 + n % 20000, port), (dst, 0))
    n += 1
if mode == 'open':
    for src in srcs:
        knock(src)
        time.sleep(0.25)
else:
    secs, rate = float(sys.argv[4]), float(sys.argv[5])
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        while n < int((time.monotonic() - t0) * rate):
            knock(srcs[n % len(srcs)])
        time.sleep(0.001)
    print(f'sent {n} sequences in {time.monotonic() - t0:.1f} s', file=sys.stderr)
EOF

PATHS=/usr/sbin:/usr/bin:/sbin:/bin
if [ "$COUNT" = 1 ]; then
    mkdir "$DIR/wrap"
    for prog in iptables iptables-restore; do
        printf '#!/bin/sh\necho "%s $*" >> %s/execs\nexec /usr/sbin/%s "$@"\n' \
            "$prog" "$DIR" "$prog" > "$DIR/wrap/$prog"
        chmod +x "$DIR/wrap/$prog"
    done
    PATHS=$DIR/wrap:$PATHS
fi
printf '[ssh]\n sequence = 2222,1111,3333\n tcpflags = syn\n open = 22/tcp\n cmd_timeout = 600\n' \
    > "$DIR/knockd.conf"
ip netns exec "$SRV" env PATH="$PATHS" "$KNOCKD" -i kv0 -c "$DIR/knockd.conf" \
    --socket "$DIR/sock" --state-file "$DIR/state.json" -p "$DIR/pid" 2> "$DIR/log" &
KPID=$!
for _ in $(seq 100); do grep -q "listening on kv0" "$DIR/log" && break; sleep 0.1; done
SRCS=$(seq -s, -f "10.99.88.%g" 100 $((99 + GRANTS)))
ip netns exec "$CLI" python3 "$DIR/send.py" 10.99.88.1 "$SRCS" open
sleep 1
OPENED=$(ip netns exec "$SRV" iptables -S INPUT | grep -c -- "--dport 22" || true)

: > "$DIR/execs"
STAT0=$(cut -d' ' -f14-17 "/proc/$KPID/stat"); LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
ip netns exec "$CLI" python3 "$DIR/send.py" 10.99.88.1 "$SRCS" flood "$SECS" "$RATE"
sleep 1.5
STAT1=$(cut -d' ' -f14-17 "/proc/$KPID/stat"); LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
TICK=$(getconf CLK_TCK)
read -r U0 S0 CU0 CS0 <<< "$STAT0"; read -r U1 S1 CU1 CS1 <<< "$STAT1"
OWN=$(( (U1 - U0) + (S1 - S0) )); KIDS=$(( (CU1 - CU0) + (CS1 - CS0) ))
echo "knockd $KNOCKD: $OPENED of $GRANTS grants open, re-knocked $RATE/s for $SECS s"
awk -v o="$OWN" -v k="$KIDS" -v t="$TICK" -v l0="$LOAD0" -v l1="$LOAD1" 'BEGIN {
    printf "CPU-s: daemon %.2f, children %.2f, total %.2f (load %s -> %s)\n", o / t, k / t, (o + k) / t, l0, l1 }'
echo "re-knocks logged: $(grep -c 'grant refreshed' "$DIR/log" || true)"
if [ "$COUNT" = 1 ]; then
    echo "processes started: $(wc -l < "$DIR/execs") (iptables -C: $(grep -c -- ' -C ' "$DIR/execs" || true), iptables -S: $(grep -c -- ' -S ' "$DIR/execs" || true))"
fi
