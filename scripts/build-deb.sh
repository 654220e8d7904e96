#!/usr/bin/env bash
# Build the Debian package knockd-rs (knockd, knock, knockctl, man pages, completions,
# systemd unit, default config) into target/debian/.
#
#   bash scripts/build-deb.sh            # prints the path of the .deb on the last line
#
# Installs cargo-deb with `cargo install cargo-deb --locked` when it is missing. The
# package metadata is [package.metadata.deb] in knockd/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[build-deb] %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    say "cargo-deb not found: cargo install cargo-deb --locked"
    cargo install cargo-deb --locked >&2
fi

# The man pages and completions in the package are the committed ones; make sure they match
# the code (the same check as the xtask stale test, but fix them instead of failing).
say "cargo run -p xtask -- all"
cargo run --quiet -p xtask -- all >/dev/null
if command -v git >/dev/null && [ -d .git ] &&
    ! git diff --quiet -- man completions 2>/dev/null; then
    say "warning: man/ or completions/ were stale and have been regenerated: commit them"
fi

say "cargo build --release -p knockd -p knockctl --bins"
cargo build --release --quiet -p knockd -p knockctl --bins >&2

say "cargo deb -p knockd --no-build"
out=$(cargo deb -p knockd --no-build 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
deb=$(printf '%s\n' "$out" | tail -n 1)
[ -f "$deb" ] || { printf '%s\n' "$out" >&2; say "error: no .deb produced"; exit 1; }
say "built $deb"
printf '%s\n' "$deb"
