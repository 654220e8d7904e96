#!/usr/bin/env bash
# Fuzz every input decoder with libFuzzer on stable Rust.
#
#   bash scripts/fuzz.sh [--seconds N] [TARGET...]     (default: 60 s each, every target)
#
# Targets (invariants in knock-fuzz/src/<target>.rs): packet, config, frame, state, otp,
# knock_args. Each runs for N seconds starting from its committed seeds (fuzz/seeds/<target>)
# and past findings (fuzz/regressions/<target>); new corpus entries go to
# target/fuzz/corpus/<target> (not committed), a crashing input to target/fuzz/artifacts/
# (FUZZ_OUT=dir to put logs, corpus and artifacts elsewhere).
# Prints executions per target; exits 1 when any target found a crash, a memory-limit
# breach or a timeout. To keep a finding as a regression input once fixed:
#   cp target/fuzz/artifacts/<target>/crash-* fuzz/regressions/<target>/
#
# Why cargo-fuzz with `-s none`: libFuzzer's coverage guidance only needs rustc's stable
# -Cpasses=sancov-module flags; sanitizers need nightly but add little to code without
# `unsafe`. Memory limits are checked by knock-fuzz's counting allocator, not ASan.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=60
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_EACH=${2:?--seconds needs a number}; shift 2 ;;
        --seconds=*) SECONDS_EACH=${1#--seconds=}; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(packet config frame state otp knock_args spa)
fi
case "$SECONDS_EACH" in ''|*[!0-9]*) echo "fuzz.sh: --seconds takes a whole number" >&2; exit 2 ;; esac

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

echo "[fuzz] building targets (cargo fuzz build -s none, stable $(rustc --version | cut -d' ' -f2))"
cargo fuzz build -s none

OUT=${FUZZ_OUT:-target/fuzz}   # logs, corpus, artifacts
mkdir -p "$OUT"
found=()
summary=()
for t in "${TARGETS[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
    corpus="$OUT/corpus/$t"
    artifacts="$OUT/artifacts/$t/"
    log="$OUT/$t.log"
    mkdir -p "$corpus" "$artifacts"
    dirs=("$corpus" "fuzz/seeds/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
    echo "[fuzz] $t: ${SECONDS_EACH}s"
    status=0
    started=$(date +%s)
    cargo fuzz run -s none "$t" "${dirs[@]}" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -max_len=16384 \
        -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1 || status=$?
    took=$(( $(date +%s) - started ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    line=$(printf '%-11s %12s execs %9s execs/s  %ss' "$t" "${execs:-?}" "${rate:-?}" "$took")
    if [ "$status" -ne 0 ]; then
        found+=("$t")
        line="$line  FINDING (exit $status): see $log and $artifacts"
        grep -E 'panicked at|ERROR: libFuzzer|over its documented limit|SUMMARY' "$log" | head -5 >&2 || true
    fi
    summary+=("$line")
    echo "[fuzz] $line"
done

echo
echo "target          executions      execs/s  ran (incl. build check)"
printf '%s\n' "${summary[@]}"
if [ ${#found[@]} -gt 0 ]; then
    echo "fuzz.sh: findings in: ${found[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no findings"
