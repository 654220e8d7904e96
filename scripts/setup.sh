#!/usr/bin/env bash
# Prepare a Debian 12 machine to build knockd-rs and run its end-to-end tests.
#
#   sudo bash scripts/setup.sh
#
# Idempotent: installs only the packages that are missing. Debian's knockd is installed
# as a reference implementation for the tests, which run it inside throwaway network
# namespaces; this script makes sure it is never started or enabled on the host.
set -euo pipefail

PACKAGES=(
    libpcap-dev     # pcap crate (packet capture)
    iptables        # firewall backend, and iptables inside test namespaces
    iproute2        # ip netns / veth for the end-to-end tests
    knockd          # Debian's knockd + knock: the reference implementation
    tcpdump         # debugging the tests
    nftables
    tmux
    openssh-server  # sshd inside test namespaces (knockctl -H ssh://); never started on the host
    openssh-client  # the ssh knockctl runs for ssh:// hosts
    groff-base      # man page checks
    pkg-config
    build-essential
    python3-nacl    # test-only: the SPA packet vectors cross-checked against libsodium
    fwknop-server   # fwknopd 2.6: the SPA peer knock-bench --spa measures; never started on the host
    fwknop-client   # fwknop: the client the bench knocks fwknopd with
)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root: sudo bash scripts/setup.sh"
fi
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if installed "$pkg"; then
        say "already installed: $pkg"
    else
        missing+=("$pkg")
    fi
done

# While apt runs, a policy-rc.d that exits 101 forbids maintainer scripts from starting
# services (knockd's and fwknop-server's postinsts would otherwise try; fwknop-server's
# systemd unit ignores START_DAEMON in /etc/default/fwknop-server and would listen on the
# host's eth0 with the stock /etc/fwknop config). Any existing file is put back after.
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP="$POLICY.knockd-rs-setup"
restore_policy() {
    if [ -e "$POLICY_BACKUP" ]; then
        mv -f "$POLICY_BACKUP" "$POLICY"
    else
        rm -f "$POLICY"
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    if [ -e "$POLICY" ]; then
        cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# scripts/setup.sh: no service starts during apt-get install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    restore_policy
    trap - EXIT
else
    say "all packages present; nothing to install"
fi

# Debian's knockd must never run on the host: tests start it inside network namespaces.
if command -v systemctl >/dev/null; then
    say "making sure the host's knockd service is stopped and disabled"
    systemctl disable --now knockd.service >/dev/null 2>&1 || true
    say "knockd.service: $(systemctl is-enabled knockd.service 2>/dev/null || true)"
fi
# Same for Debian's fwknopd (its postinst does not enable the unit on a fresh install, and its
# init script starts only with START_DAEMON="yes"; checked anyway, as for knockd).
if command -v systemctl >/dev/null; then
    say "making sure the host's fwknop-server service is stopped and disabled"
    systemctl disable --now fwknop-server.service >/dev/null 2>&1 || true
    say "fwknop-server.service: $(systemctl is-enabled fwknop-server.service 2>/dev/null || true)"
fi
if [ -f /etc/default/fwknop-server ] && grep -q '^START_DAEMON="\?yes' /etc/default/fwknop-server; then
    say "setting START_DAEMON=\"no\" in /etc/default/fwknop-server"
    sed -i 's/^START_DAEMON=.*/START_DAEMON="no"/' /etc/default/fwknop-server
fi
if [ -f /etc/default/knockd ] && grep -q '^START_KNOCKD=1' /etc/default/knockd; then
    say "setting START_KNOCKD=0 in /etc/default/knockd"
    sed -i 's/^START_KNOCKD=1/START_KNOCKD=0/' /etc/default/knockd
fi

# sshd runs only inside test namespaces, each with its own config, key and pid file. When this
# script installed openssh-server, the host did not run an sshd before: keep it that way.
if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null; then
    say "openssh-server was just installed: making sure the host's ssh service stays off"
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
# sshd refuses to start without its privilege separation directory (normally made by systemd).
install -d -m 0755 /run/sshd

# Rust comes from rustup, which is preinstalled; under sudo it may not be on PATH.
if ! command -v cargo >/dev/null; then
    for dir in "$HOME/.cargo/bin" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/bin"; do
        if [ -x "$dir/cargo" ]; then
            export PATH="$dir:$PATH"
            break
        fi
    done
fi
command -v cargo >/dev/null ||
    die "cargo not found; install Rust with rustup (https://rustup.rs) and put ~/.cargo/bin on PATH"
say "cargo: $(cargo --version)"
for component in rustfmt clippy; do
    sub=${component/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null; then
            say "rustup component add $component"
            rustup component add "$component"
        else
            die "cargo $sub missing and rustup not found; install the $component component"
        fi
    fi
done
say "done"
