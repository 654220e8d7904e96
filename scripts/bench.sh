#!/usr/bin/env bash
# Our knockd against Debian's knockd 0.8, side by side, in throwaway network namespaces:
#
#   sudo bash scripts/bench.sh [--smoke] [--out FILE] [knock-bench options...]
#
# Builds the release binaries, then runs target/release/knock-bench (package knock-bench in
# bench/) as root. It prints a table and writes a JSON report (default target/knock-bench.json; the path is printed). --smoke
# takes a few seconds and only checks that everything runs and reports (for CI); the full run
# takes about six minutes and wants an otherwise idle machine. `knock-bench --help` lists the
# other options (daemons, rates, duration, trials); --spa runs only the single-packet knock
# scenarios (quiet latency, a 30k/s forged flood; our knockd with nftables and iptables, and
# Debian's fwknopd 2.6 beside it). The matcher and
# SPA micro-benchmarks are separate: `cargo bench -p knockd --bench matcher` (or `--bench spa`). Results and how to read them: BENCHMARKS.md.
#
# All traffic stays inside the namespaces each run creates (spoofed sources from
# 10.192.0.0/12 only); the host's firewall and interfaces are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "bench: must run as root (network namespaces, raw sockets): sudo bash scripts/bench.sh" >&2; exit 1; }
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
for tool in ip iptables; do
    command -v "$tool" >/dev/null || { echo "bench: $tool missing: run sudo bash scripts/setup.sh" >&2; exit 1; }
done
[ -x /usr/sbin/knockd ] || { echo "bench: Debian's knockd missing: run sudo bash scripts/setup.sh" >&2; exit 1; }

echo "== building (cargo build --release --workspace --bins)" >&2
cargo build --quiet --release --workspace --bins
exec target/release/knock-bench "$@"
