#!/usr/bin/env bash
# Run the packaged knockd under the real, hardened knockd.service, in a throwaway container.
#
#   sudo bash tests/install/systemd-test.sh [path/to/knockd-rs.deb]
#
# Needs root, network access to the Debian archive (debootstrap), and installs
# systemd-container and debootstrap if missing. Takes about a minute and a half.
#
# A minimal Debian 12 root is bootstrapped in a temporary directory, the package is
# installed into it with dpkg (its postinst creates the group knockd), and the root is booted
# with systemd-nspawn --boot --private-network: systemd as PID 1 of the container, only a
# loopback interface, so neither knockd nor iptables can touch this host's network or
# firewall. knockd captures on lo, and the container's own `knock` knocks 127.0.0.1. Checked:
# the unit starts under ProtectSystem=strict and the rest of its sandbox; packet capture,
# iptables-nft and iptables-legacy (the /run/xtables.lock workaround); the control socket's
# owner and mode, for root, a member of group knockd and another user; the state file, the
# LogsDirectory, one-time sequences rewritten in /etc/knockd; `systemctl reload` with a good
# and a bad config; `systemctl stop` closing the grants. Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
die() { printf 'systemd-test: %s\n' "$*" >&2; printf '%s passed, %s failed\n' "$PASS" "$((FAIL + 1))"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, systemd-nspawn)"
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "systemd-test: apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        die "cannot install ${missing[*]}"
fi

WORK=$(mktemp -d /tmp/knockd-systemd-test.XXXXXX)
ROOT=$WORK/root
MACHINE=knockd-test-$$
NSPAWN_PID=""
HAD_NSPAWN_DIR=0
[ -e /run/systemd/nspawn ] && HAD_NSPAWN_DIR=1
cleanup() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        [ -n "${LEADER:-}" ] && nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 1 30); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 1; done
        kill "$NSPAWN_PID" 2>/dev/null
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
    # systemd-nspawn leaves an empty /run/systemd/nspawn behind.
    [ "$HAD_NSPAWN_DIR" -eq 1 ] || rm -rf /run/systemd/nspawn
}
trap cleanup EXIT

if [ $# -ge 1 ]; then DEB=$1; else DEB=$(bash scripts/build-deb.sh) || die "scripts/build-deb.sh failed"; fi
[ -f "$DEB" ] || die "no package at '$DEB'"

echo "== debootstrap bookworm (minbase + systemd, libpcap0.8, iptables, adduser)"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libpcap0.8,iptables,adduser \
    bookworm "$ROOT" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    { tail -5 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
cp "$DEB" "$ROOT/root/knockd-rs.deb"
if chroot "$ROOT" dpkg -i /root/knockd-rs.deb >"$WORK/dpkg.log" 2>&1; then
    ok "dpkg -i knockd-rs in the container root"
else
    sed 's/^/    /' "$WORK/dpkg.log"
    die "dpkg -i failed"
fi
chroot "$ROOT" getent group knockd >/dev/null && ok "postinst created group knockd" || bad "postinst created group knockd"

cat >"$ROOT/etc/knockd.conf" <<'EOF'
[options]
	Interface = lo
	LogFile   = /var/log/knockd/knockd.log

[ssh]
	Sequence    = 41234:udp, 17771, 30301:udp, 2999
	Seq_Timeout = 10
	TCPFlags    = syn
	Open        = 22/tcp
	Cmd_Timeout = 60

[cmd]
	Sequence        = 29871:udp, 44120, 31457
	TCPFlags        = syn
	Start_Command   = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 80 -j ACCEPT
	Start_Command_6 =
	Cmd_Timeout     = 60
	Stop_Command    = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 80 -j ACCEPT
	Stop_Command_6  =

[otp]
	One_Time_Sequences = /etc/knockd/otp.seq
	TCPFlags           = syn
	Open               = 443/tcp
	Cmd_Timeout        = 60
EOF
printf '31337:udp, 2718, 16180:udp\n44021, 8081:udp, 39999\n' >"$ROOT/etc/knockd/otp.seq"
chmod 600 "$ROOT/etc/knockd/otp.seq"
chroot "$ROOT" useradd -M -G knockd op
chroot "$ROOT" useradd -M other

echo "== boot the container (systemd-nspawn --boot --private-network)"
systemd-nspawn -D "$ROOT" --boot --private-network --register=no --keep-unit \
    --console=passive -M "$MACHINE" >"$WORK/nspawn.log" 2>&1 &
NSPAWN_PID=$!
LEADER=""
for _ in $(seq 1 60); do
    LEADER=$(pgrep -P "$NSPAWN_PID" | head -n 1)
    if [ -n "$LEADER" ]; then
        state=$(nsenter -t "$LEADER" -a systemctl is-system-running 2>/dev/null)
        case "$state" in running | degraded) break ;; esac
    fi
    sleep 1
done
[ -n "$LEADER" ] || { cat "$WORK/nspawn.log" >&2; die "the container did not boot"; }
ns() { nsenter -t "$LEADER" -a "$@"; }
echo "container booted: systemd is $(ns systemctl is-system-running 2>/dev/null)"

echo "== knockd.service"
ns systemctl start knockd.service && ok "systemctl start knockd" || bad "systemctl start knockd"
sleep 1
[ "$(ns systemctl is-active knockd)" = active ] && ok "knockd is active" ||
    { bad "knockd is active"; ns journalctl -u knockd --no-pager -n 20 | sed 's/^/    /'; }
perm=$(ns stat -c '%A %U %G' /run/knockd/knockd.sock 2>/dev/null)
[ "$perm" = "srw-rw---- root knockd" ] && ok "control socket is 0660 root:knockd" || bad "control socket: '$perm'"
ns knockctl status >/dev/null 2>&1 && ok "knockctl status as root" || bad "knockctl status as root"
ns runuser -u op -- knockctl status >/dev/null 2>&1 && ok "knockctl status as a member of group knockd" ||
    bad "knockctl status as a member of group knockd"
ns runuser -u other -- knockctl status >/dev/null 2>&1
[ $? -eq 1 ] && ok "knockctl status as another user is refused (exit 1)" || bad "knockctl as another user"

knock_all() {
    ns knock 127.0.0.1 41234:udp 17771 30301:udp 2999
    ns knock 127.0.0.1 29871:udp 44120 31457
}
knock_all
ns knock 127.0.0.1 31337:udp 2718 16180:udp
sleep 1.5
rules=$(ns iptables -S INPUT)
grep -q -- '--dport 22 .*knockd:ssh' <<<"$rules" && ok "Open door: iptables-nft rule for 22/tcp" || bad "Open door rule: $rules"
grep -q -- '--dport 80 -j ACCEPT' <<<"$rules" && ok "command door: Start_Command ran" || bad "command door rule: $rules"
grep -q -- '--dport 443 .*knockd:otp' <<<"$rules" && ok "one-time door opened" || bad "one-time door rule: $rules"
grep -qx '#31337:udp, 2718, 16180:udp' "$ROOT/etc/knockd/otp.seq" &&
    ok "one-time sequence marked used in /etc/knockd (ReadWritePaths)" || bad "one-time sequences file not rewritten"
[ "$(ns knockctl --json list | grep -o '"door"' | wc -l)" -eq 3 ] && ok "knockctl list shows 3 grants" || bad "knockctl list"
[ "$(ns stat -c %a /var/lib/knockd/state.json 2>/dev/null)" = 600 ] && ok "state file in StateDirectory, mode 600" ||
    bad "state file"
grep -q 'ssh: OPEN SESAME' "$ROOT/var/log/knockd/knockd.log" && ok "LogFile in LogsDirectory" || bad "LogFile"

ns systemctl reload knockd && ok "systemctl reload (knockctl reload)" || bad "systemctl reload"
cp "$ROOT/etc/knockd.conf" "$WORK/good.conf"
echo 'not a directive' >>"$ROOT/etc/knockd.conf"
ns systemctl reload knockd >/dev/null 2>&1 && bad "reload of a bad config fails" || ok "reload of a bad config fails"
[ "$(ns systemctl is-active knockd)" = active ] && ok "knockd keeps running after a bad reload" || bad "knockd died on a bad reload"
cp "$WORK/good.conf" "$ROOT/etc/knockd.conf"

echo "== iptables-legacy (needs /run/xtables.lock)"
ns knockctl revoke 127.0.0.1 >/dev/null
ns update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
knock_all
sleep 1.5
rules=$(ns iptables-legacy -S INPUT)
grep -q -- '--dport 22 .*knockd:ssh' <<<"$rules" && ok "Open door with iptables-legacy" || bad "iptables-legacy Open: $rules"
grep -q -- '--dport 80 -j ACCEPT' <<<"$rules" && ok "command door with iptables-legacy" || bad "iptables-legacy command: $rules"

echo "== stop"
ns systemctl stop knockd && ok "systemctl stop knockd" || bad "systemctl stop knockd"
rules=$(ns iptables-legacy -S INPUT)
grep -q -- "^-A " <<<"$rules" && bad "stop left rules: $rules" || ok "stop closed every grant (OnShutdown = close)"
[ "$(ns systemctl show knockd -p Result --value)" = success ] && ok "knockd exited cleanly" || bad "knockd stop result"
echo "systemd-analyze security: $(ns systemd-analyze security knockd --no-pager 2>/dev/null | tail -n 1)"

echo
printf '%s passed, %s failed\n' "$PASS" "$FAIL"
[ "$FAIL" -eq 0 ]
