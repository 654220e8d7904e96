#!/usr/bin/env bash
# A safe demo of knockd in two throwaway network namespaces:
#
#   sudo bash scripts/demo.sh
#
# It installs what it needs (scripts/setup.sh), builds the workspace, creates a "server" and a
# "client" namespace joined by a veth pair, runs knockd with the stock knockd 0.8 example
# config in the server namespace, and knocks from the client. You see the iptables rule
# appear at the top of INPUT, then disappear with the close sequence, then a native door
# (`Open = 22/tcp`) that closes itself after its timeout. The host's own firewall and
# interfaces are never touched; everything is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo: must run as root (network namespaces): sudo bash scripts/demo.sh" >&2; exit 1; }
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bash scripts/setup.sh >/dev/null
echo "== building (cargo build --workspace --bins)"
cargo build --quiet --workspace --bins
BIN="$PWD/target/debug"

SRV="kdemo$$-srv"; CLI="kdemo$$-cli"
WORK="$(mktemp -d /tmp/knockd-demo.XXXXXX)"
KNOCKD_PID=""
FAILED=0
# Stops knockd by its own PID and waits for it (it closes its grants and writes its state file
# into $WORK on the way out), and only then removes the namespaces and $WORK.
stop_knockd() {
    [ -n "$KNOCKD_PID" ] || return 0
    kill -TERM "$KNOCKD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$KNOCKD_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$KNOCKD_PID" 2>/dev/null; then
        echo "demo: knockd (pid $KNOCKD_PID) still running 10 s after SIGTERM: SIGKILL" >&2
        kill -KILL "$KNOCKD_PID" 2>/dev/null || true
        FAILED=1
    fi
    wait "$KNOCKD_PID" 2>/dev/null || true
    KNOCKD_PID=""
}
cleanup() {
    local rc=$?
    set +e
    stop_knockd
    ip netns del "$SRV" 2>/dev/null
    ip netns del "$CLI" 2>/dev/null
    rm -rf "$WORK"
    [ "$FAILED" -eq 0 ] || rc=1
    exit "$rc"
}
trap cleanup EXIT

ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link add kv0 type veth peer name kv1 netns "$CLI"
ip -n "$SRV" addr add 10.99.77.1/24 dev kv0; ip -n "$CLI" addr add 10.99.77.2/24 dev kv1
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set kv0 up; ip -n "$CLI" link set kv1 up
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }

cat > "$WORK/knockd.conf" <<EOF
[options]
	LogFile = $WORK/knockd.log

[openSSH]
	sequence    = 7000,8000,9000
	seq_timeout = 5
	command     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
	tcpflags    = syn

[closeSSH]
	sequence    = 9000,8000,7000
	seq_timeout = 5
	command     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
	tcpflags    = syn

[web]
	sequence    = 2222:udp,3333,4444
	open        = 443/tcp
	cmd_timeout = 3
	tcpflags    = syn
EOF

echo "== config (the knockd 0.8 example, plus a native door):"; sed 's/^/   /' "$WORK/knockd.conf"
echo "== knockd -t (check the config):"
"$BIN/knockd" -t -c "$WORK/knockd.conf" | sed 's/^/   /' || true

# `ip netns exec` execs knockd in place (no function, no subshell): $! is knockd's own PID.
ip netns exec "$SRV" "$BIN/knockd" -i kv0 -c "$WORK/knockd.conf" --socket "$WORK/knockd.sock" \
    --state-file "$WORK/state.json" 2>"$WORK/stderr" &
KNOCKD_PID=$!
for _ in $(seq 100); do grep -q "starting up" "$WORK/knockd.log" 2>/dev/null && break; sleep 0.1; done
if [ "$(cat "/proc/$KNOCKD_PID/comm" 2>/dev/null)" != knockd ]; then
    echo "demo: knockd is not running:" >&2; cat "$WORK/stderr" "$WORK/knockd.log" >&2 2>/dev/null
    exit 1
fi
fail() { echo "   ($*!)"; FAILED=1; }

rules() { echo "   server# iptables -S INPUT"; in_srv iptables -S INPUT | sed 's/^/     /'; }
wait_rule() { for _ in $(seq 50); do in_srv iptables -S INPUT | grep -q -- "$1" && return 0; sleep 0.1; done; return 1; }
wait_gone() { for _ in $(seq 60); do in_srv iptables -S INPUT | grep -q -- "$1" || return 0; sleep 0.1; done; return 1; }

echo; echo "== before knocking"; rules
echo; echo "== client# knock -v 10.99.77.1 7000 8000 9000"
in_cli "$BIN/knock" -v 10.99.77.1 7000 8000 9000 | sed 's/^/     /'
wait_rule "--dport 22" || fail "rule did not appear"
rules
echo; echo "== knockctl list"
"$BIN/knockctl" --socket "$WORK/knockd.sock" list | sed 's/^/     /' || true
echo; echo "== client# knock -v 10.99.77.1 9000 8000 7000   (the close sequence)"
in_cli "$BIN/knock" -v 10.99.77.1 9000 8000 7000 | sed 's/^/     /'
wait_gone "--dport 22" || fail "rule still there"
rules
echo; echo "== client# knock 10.99.77.1 2222:udp 3333 4444   (native door, closes after 3 s)"
in_cli "$BIN/knock" 10.99.77.1 2222:udp 3333 4444
wait_rule "--dport 443" || fail "rule did not appear"
rules
echo "   ... waiting for cmd_timeout"
wait_gone "--dport 443" || fail "rule still there"
rules
echo; echo "== stopping knockd (SIGTERM to pid $KNOCKD_PID; it closes what is open and exits)"
stop_knockd
echo; echo "== knockd's log ($WORK/knockd.log)"; sed 's/^/     /' "$WORK/knockd.log"
echo
if [ "$FAILED" -eq 0 ]; then
    echo "Demo done; namespaces and files are removed now."
else
    echo "Demo done, but a step above did not show what it should (see the lines marked with !)."
fi
