#!/usr/bin/env bash
# Install test of the Debian package knockd-rs, without touching this host's /.
#
#   bash tests/install/install-test.sh [path/to/knockd-rs.deb]
#
# Builds the package with scripts/build-deb.sh (unless given one), then:
#  - checks its control data: name, Conflicts/Replaces/Provides knockd, dependencies,
#    conffiles, maintainer scripts;
#  - installs it with dpkg into a temporary root (`dpkg --root --force-script-chrootless`,
#    a fresh dpkg database; the maintainer scripts run with stub addgroup/getent/systemctl
#    that only record their arguments), over a stand-in for Debian's knockd 0.8 package
#    with the same paths and a locally modified /etc/knockd.conf, which must be kept;
#  - checks that every path in the FILES sections of the installed man pages exists in that
#    root (or is created at run time by knockd and the systemd unit), file modes, that the
#    packaged man pages are the repository's and render without groff warnings, that the
#    completions load, that the binaries run from the tree (knockd --version, knock --help,
#    knockctl --version, knockd -t on the shipped config and on its examples uncommented);
#  - runs `systemd-analyze verify` on the unit against the installed tree;
#  - purges the package and checks that nothing is left behind.
# Prints "N passed, N failed" and exits 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check "description" command...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
die() { printf 'install-test: %s\n' "$*" >&2; printf '%s passed, %s failed\n' "$PASS" "$((FAIL + 1))"; exit 1; }

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# Tools: dpkg is there on Debian; systemd-analyze comes with the systemd package.
need_pkg() { # need_pkg command package
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "install-test: installing $2 (for $1)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 ||
            { DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1; }
    fi
    command -v "$1" >/dev/null
}
for tool in dpkg dpkg-deb; do command -v "$tool" >/dev/null || die "$tool not found (Debian only)"; done
need_pkg systemd-analyze systemd || die "systemd-analyze not found: apt-get install systemd"
need_pkg groff groff-base || die "groff not found: apt-get install groff-base"

WORK=$(mktemp -d /tmp/knockd-install-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------
echo "== the package"
if [ $# -ge 1 ]; then
    DEB=$1
else
    DEB=$(bash scripts/build-deb.sh) || die "scripts/build-deb.sh failed"
fi
[ -f "$DEB" ] || die "no package at '$DEB'"
echo "package: $DEB"

field() { dpkg-deb -f "$DEB" "$1"; }
check "Package: knockd-rs" test "$(field Package)" = knockd-rs
check "Conflicts: knockd" grep -qw knockd <<<"$(field Conflicts)"
check "Replaces: knockd" grep -qw knockd <<<"$(field Replaces)"
check "Provides: knockd" grep -qw knockd <<<"$(field Provides)"
check "Depends on libpcap0.8" grep -q 'libpcap0.8' <<<"$(field Depends)"
check "Depends on adduser (postinst runs addgroup)" grep -qw adduser <<<"$(field Depends)"

CTRL=$WORK/control
dpkg-deb -e "$DEB" "$CTRL"
check "conffile /etc/knockd.conf" grep -qx /etc/knockd.conf "$CTRL/conffiles"
check "conffile /etc/default/knockd" grep -qx /etc/default/knockd "$CTRL/conffiles"
for s in postinst prerm postrm; do
    check "maintainer script $s is executable" test -x "$CTRL/$s"
    check "maintainer script $s parses (sh -n)" sh -n "$CTRL/$s"
done
check "postinst creates the system group knockd" grep -q 'addgroup --system knockd' "$CTRL/postinst"

# ---------------------------------------------------------------------------------------
echo "== install into a temporary root over a stand-in for Debian's knockd"
ROOT=$WORK/root
STUBS=$WORK/stubs
STUB_LOG=$WORK/stub.log
mkdir -p "$ROOT/var/lib/dpkg/info" "$ROOT/var/lib/dpkg/updates" "$ROOT/var/lib/dpkg/triggers" "$STUBS"
: >"$ROOT/var/lib/dpkg/status"
: >"$ROOT/var/lib/dpkg/available"
: >"$STUB_LOG"
# Maintainer scripts run outside a chroot: every command that would change the host is a
# stub that records its arguments. getent finds no group, so postinst must call addgroup.
for s in addgroup adduser groupadd getent systemctl deb-systemd-helper deb-systemd-invoke \
    update-rc.d invoke-rc.d; do
    cat >"$STUBS/$s" <<EOF
#!/bin/sh
echo "$s \$*" >>"$STUB_LOG"
[ "$s" = getent ] && exit 2
exit 0
EOF
    chmod 755 "$STUBS/$s"
done
DPKG=(dpkg "--root=$ROOT" --force-not-root --force-script-chrootless --force-depends --log=/dev/null)
run_dpkg() { PATH="$STUBS:$PATH" "${DPKG[@]}" "$@" </dev/null >>"$WORK/dpkg.log" 2>&1; }

# The paths of Debian's knockd 0.8-2 that knockd-rs takes over.
OLD=$WORK/old
mkdir -p "$OLD/DEBIAN" "$OLD/usr/sbin" "$OLD/usr/bin" "$OLD/etc/default" "$OLD/lib/systemd/system" \
    "$OLD/usr/share/man/man1"
printf '#!/bin/sh\necho old knockd\n' >"$OLD/usr/sbin/knockd"
printf '#!/bin/sh\necho old knock\n' >"$OLD/usr/bin/knock"
chmod 755 "$OLD/usr/sbin/knockd" "$OLD/usr/bin/knock"
printf '[options]\n\tUseSyslog\n' >"$OLD/etc/knockd.conf"
printf 'START_KNOCKD=0\n#KNOCKD_OPTS="-i eth1"\n' >"$OLD/etc/default/knockd"
printf '[Service]\nExecStart=/usr/sbin/knockd $KNOCKD_OPTS\n' >"$OLD/lib/systemd/system/knockd.service"
printf '.TH KNOCKD 1\n' | gzip -9n >"$OLD/usr/share/man/man1/knockd.1.gz"
cat >"$OLD/DEBIAN/control" <<EOF
Package: knockd
Version: 0.8-2+b4
Architecture: $(dpkg --print-architecture)
Maintainer: stand-in <nobody@example.invalid>
Description: stand-in for Debian's knockd 0.8 (install test only)
EOF
printf '/etc/default/knockd\n/etc/knockd.conf\n' >"$OLD/DEBIAN/conffiles"
dpkg-deb --root-owner-group -b "$OLD" "$WORK/knockd-old.deb" >/dev/null || die "cannot build the stand-in package"
run_dpkg -i "$WORK/knockd-old.deb" || die "cannot install the stand-in knockd (see $WORK/dpkg.log)"
# A local change to the old config: it must survive the switch.
LOCAL_CONF='[options]
	UseSyslog

[local]
	Sequence = 31337:udp, 2718, 16180:udp
	Open     = 22/tcp'
printf '%s\n' "$LOCAL_CONF" >"$ROOT/etc/knockd.conf"

if run_dpkg --force-confold -i "$DEB"; then
    ok "dpkg -i knockd-rs over knockd (Conflicts + Replaces take its files)"
else
    bad "dpkg -i knockd-rs over knockd"
    sed 's/^/    /' "$WORK/dpkg.log"
fi
status() { "${DPKG[@]}" -s "$1" 2>/dev/null | sed -n 's/^Status: //p'; }
check "knockd-rs is installed" test "$(status knockd-rs)" = "install ok installed"
check "the old knockd is gone" test "$(status knockd)" != "install ok installed"
check "postinst ran addgroup --system knockd" grep -qx 'addgroup --system knockd' "$STUB_LOG"
check "the local /etc/knockd.conf was kept" test "$(cat "$ROOT/etc/knockd.conf")" = "$LOCAL_CONF"
check "knockd-rs owns /usr/sbin/knockd" grep -qx /usr/sbin/knockd <<<"$("${DPKG[@]}" -L knockd-rs)"
if "${DPKG[@]}" -S /usr/bin/knock 2>/dev/null | grep -q '^knockd-rs:'; then
    ok "knockd-rs owns /usr/bin/knock"
else
    bad "knockd-rs owns /usr/bin/knock"
fi

# ---------------------------------------------------------------------------------------
echo "== files"
mode() { stat -c %a "$1" 2>/dev/null; }
check "/usr/sbin/knockd is mode 755" test "$(mode "$ROOT/usr/sbin/knockd")" = 755
check "/usr/bin/knock is mode 755" test "$(mode "$ROOT/usr/bin/knock")" = 755
check "/usr/bin/knockctl is mode 755" test "$(mode "$ROOT/usr/bin/knockctl")" = 755
check "/var/lib/knockd is mode 700" test "$(mode "$ROOT/var/lib/knockd")" = 700
# The pristine config of the package (the installed one is the kept local file).
PKG=$WORK/extracted
dpkg-deb -x "$DEB" "$PKG"
check "/etc/knockd.conf is mode 600 in the package" test "$(mode "$PKG/etc/knockd.conf")" = 600
check "dpkg installed the package's /etc/default/knockd" cmp -s "$PKG/etc/default/knockd" "$ROOT/etc/default/knockd"

for page in man8/knockd.8 man8/knockctl.8 man1/knock.1 man5/knockd.conf.5; do
    gz=$ROOT/usr/share/man/$page.gz
    if [ -f "$gz" ] && cmp -s <(zcat "$gz") "$REPO/man/${page#*/}"; then
        ok "/usr/share/man/$page.gz is man/${page#*/}"
    else
        bad "/usr/share/man/$page.gz is man/${page#*/}"
    fi
    warnings=$(zcat "$gz" 2>/dev/null | groff -man -ww -z 2>&1)
    if [ -f "$gz" ] && [ -z "$warnings" ]; then ok "$page renders without groff warnings"; else bad "$page renders: $warnings"; fi
done

# Every path in a FILES section must be in the installed tree, or be made at run time:
# the unit's RuntimeDirectory=knockd (/run/knockd), StateDirectory=knockd (/var/lib/knockd,
# also made by postinst), or knockd itself (the pidfile).
UNIT=$ROOT/lib/systemd/system/knockd.service
runtime_ok() {
    case "$1" in
    /run/knockd/*) grep -qx 'RuntimeDirectory=knockd' "$UNIT" ;;
    /var/lib/knockd/*) grep -qx 'StateDirectory=knockd' "$UNIT" && [ -d "$ROOT/var/lib/knockd" ] ;;
    /var/run/knockd.pid) "$ROOT/usr/sbin/knockd" --help | grep -q -- '--pidfile' ;;
    *) return 1 ;;
    esac
}
files_paths() { # the paths named in the FILES section of a man page
    zcat "$1" | awk '/^\.SH/ { infiles = ($2 == "FILES") ; next } infiles && /^\.I \// { print $2 }'
}
n_paths=0
for gz in "$ROOT"/usr/share/man/man*/*.gz; do
    page=$(basename "$gz" .gz)
    for p in $(files_paths "$gz"); do
        n_paths=$((n_paths + 1))
        if [ -e "$ROOT$p" ]; then
            ok "$page FILES: $p is installed"
        elif runtime_ok "$p"; then
            ok "$page FILES: $p is created at run time"
        else
            bad "$page FILES: $p is neither installed nor created at run time"
        fi
    done
done
check "the FILES sections name at least 6 paths" test "$n_paths" -ge 6

for c in knockd knock knockctl; do
    check "bash completion for $c is installed" test -f "$ROOT/usr/share/bash-completion/completions/$c"
    check "zsh completion for $c is installed" test -f "$ROOT/usr/share/zsh/vendor-completions/_$c"
    check "fish completion for $c is installed" test -f "$ROOT/usr/share/fish/vendor_completions.d/$c.fish"
    check "bash completion for $c loads" bash -c "source '$ROOT/usr/share/bash-completion/completions/$c' && complete -p $c"
done

# ---------------------------------------------------------------------------------------
echo "== the binaries, run from the installed tree"
if out=$("$ROOT/usr/sbin/knockd" --version 2>&1) && grep -q '^knockd [0-9]' <<<"$out"; then
    ok "knockd --version: $out"
else
    bad "knockd --version: $out"
fi
check "knock --help exits 0" "$ROOT/usr/bin/knock" --help
check "knockctl --version exits 0" "$ROOT/usr/bin/knockctl" --version
check "knockctl --help names the socket" grep -q /run/knockd/knockd.sock <<<"$("$ROOT/usr/bin/knockctl" --help)"
if out=$("$ROOT/usr/sbin/knockd" -t -c "$PKG/etc/knockd.conf" 2>&1) && grep -q 'OK, 0 door' <<<"$out"; then
    ok "knockd -t accepts the shipped /etc/knockd.conf (no door enabled)"
else
    bad "knockd -t on the shipped /etc/knockd.conf: $out"
fi
# Its commented examples, uncommented, must be valid; the only warning they may draw is
# the advice to use a rotating (TOTP) door instead of a static sequence (one line for both).
sed -e 's/^#\t/\t/' -e 's/^#\[/[/' "$PKG/etc/knockd.conf" >"$WORK/examples.conf"
if out=$("$ROOT/usr/sbin/knockd" -t -c "$WORK/examples.conf" 2>&1) &&
    grep -q 'OK, 2 door(s), 1 warning(s)' <<<"$out" &&
    [ "$(grep -c 'warning: ' <<<"$out")" -eq 1 ] &&
    [ "$(grep -c 'warning: static sequences on 2 doors that may face the internet' <<<"$out")" -eq 1 ]; then
    ok "the examples in /etc/knockd.conf are valid doors (warnings: only the TOTP advice)"
else
    bad "the examples in /etc/knockd.conf: $out"
fi
if grep -Eq '^[[:space:]]*[Ss]equence[[:space:]]*=[[:space:]]*7000,[[:space:]]*8000,[[:space:]]*9000' "$PKG/etc/knockd.conf"; then
    bad "/etc/knockd.conf enables the stock 7000,8000,9000 sequence"
else
    ok "/etc/knockd.conf does not enable the stock 7000,8000,9000 sequence"
fi
check "knockd -t accepts the kept local config" "$ROOT/usr/sbin/knockd" -t -c "$ROOT/etc/knockd.conf"

# ---------------------------------------------------------------------------------------
echo "== systemd unit"
exec_path() { sed -n "s/^$1=[-+!@:]*\([^ ]*\).*/\1/p" "$UNIT" | head -n 1; }
check "ExecStart runs /usr/sbin/knockd" test "$(exec_path ExecStart)" = /usr/sbin/knockd
check "ExecReload runs /usr/bin/knockctl (installed)" test -x "$ROOT$(exec_path ExecReload)"
check "the unit reads /etc/default/knockd" grep -qx 'EnvironmentFile=-/etc/default/knockd' "$UNIT"
check "the unit runs with group knockd, the group postinst creates" grep -qx 'SupplementaryGroups=knockd' "$UNIT"
check "the unit does not daemonise knockd (no -d)" bash -c "! grep -E '^ExecStart=.* -d( |$)' '$UNIT'"
# systemd-analyze verify against the installed tree: the unit, its executables (in the
# tree) and its man pages (MANPATH) must all check out. The host's own units stand in for
# the targets the unit orders itself after.
VROOT=$WORK/vroot
cp -a "$ROOT" "$VROOT"
mkdir -p "$VROOT/usr/lib/systemd/system"
cp -an /usr/lib/systemd/system/. "$VROOT/usr/lib/systemd/system/" 2>/dev/null
[ -e "$VROOT/lib" ] || ln -s usr/lib "$VROOT/lib"
for tool in $(sed -n 's/^Exec[A-Za-z]*=[-+!@:]*\(\/[^ ]*\).*/\1/p' "$UNIT" | sort -u); do
    [ -e "$VROOT$tool" ] || { [ -x "$tool" ] && install -D "$tool" "$VROOT$tool"; }
done
if out=$(cd "$WORK" && MANPATH="$ROOT/usr/share/man" SYSTEMD_LOG_COLOR=0 \
    systemd-analyze verify --root="$VROOT" /lib/systemd/system/knockd.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify knockd.service: clean"
else
    bad "systemd-analyze verify knockd.service:"
    printf '%s\n' "$out" | sed 's/^/    /'
fi

# ---------------------------------------------------------------------------------------
echo "== remove and purge"
: >"$STUB_LOG"
run_dpkg --purge knockd-rs && ok "dpkg --purge knockd-rs" || bad "dpkg --purge knockd-rs"
left=$(cd "$ROOT" && find . -path ./var/lib/dpkg -prune -o \( -type f -o -type l \) -print | grep -v '^./var/lib/dpkg' || true)
if [ -z "$left" ]; then ok "purge left no file behind"; else bad "purge left: $left"; fi
check "purge removed /var/lib/knockd" test ! -e "$ROOT/var/lib/knockd"

echo
printf '%s passed, %s failed\n' "$PASS" "$FAIL"
[ "$FAIL" -eq 0 ]
