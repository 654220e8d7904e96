#!/usr/bin/env bash
# Build every binary, then run every test of the workspace.
#
#   sudo -E bash scripts/test.sh [cargo test args...]
#
# The end-to-end tests (package knock-e2e) need root to create network namespaces and run
# the workspace's binaries, which `cargo test` does not build for them: hence the build step.
# Without root they print SKIPPED; with CI=true a skip is a failure. CI is passed through.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n==== %s ====\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "warning: not root: the end-to-end tests will be SKIPPED (CI=true makes them fail)" >&2
else
    # A fresh machine: install what the build and the tests need (idempotent, quick when done).
    section "setup: bash scripts/setup.sh"
    bash scripts/setup.sh
fi
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

section "build: cargo build --workspace --bins"
cargo build --workspace --bins

section "test: cargo test --workspace $*"
cargo test --workspace "$@"

# Only in CI: on a shared machine, other people's test runs may have labs open right now.
if [ "${CI:-}" = true ]; then
    section "test: no network namespace left behind"
    leftover=$(ip netns list 2>/dev/null | grep -E '^kt[0-9]+-' || true)
    if [ -n "$leftover" ]; then
        echo "error: end-to-end tests left network namespaces behind:" >&2
        echo "$leftover" >&2
        exit 1
    fi
    echo "ok"
fi
