#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for SECONDS each (default 60) with cargo-fuzz on stable
# Rust, and reports the inputs executed per target.
#
# Usage: scripts/fuzz.sh [SECONDS]
#
# The committed seeds in fuzz/corpus/<target>/ are read but never written: inputs libFuzzer
# finds go to fuzz/work/<target>/ (ignored by git), and crashes to fuzz/artifacts/<target>/.
# `--sanitizer none` keeps cargo-fuzz off nightly-only flags. A sanitizer would add little,
# because the targets check their own invariants and the code under test has no unsafe blocks.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: invalid SECONDS '$seconds'; expected a whole number of seconds, such as 60" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is not installed; install it with: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
targets=(sse_decoder chat_response stream_events sim_request)

cargo fuzz build --sanitizer none -O

failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/work/$target"
    log="fuzz/work/$target.log"
    status=0
    cargo fuzz run --sanitizer none -O "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    executed=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n 1)
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    printf '%-14s %10s inputs in %s s, coverage %s edges\n' \
        "$target" "${executed:-?}" "$seconds" "${coverage:-?}"
    if [[ $status -ne 0 ]]; then
        echo "error: $target failed with exit status $status; see $log and fuzz/artifacts/$target/" >&2
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "error: failing targets: ${failed[*]}" >&2
    exit 1
fi
