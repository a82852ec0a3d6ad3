#!/usr/bin/env bash
# Runs every test of the project: formatting, clippy, the Rust test suites, the lab report in
# headless Chromium, and the notebooks executed by a real Jupyter kernel.
#
# It first runs scripts/setup.sh, which installs what the tests need and returns quickly when
# everything is already there. Set INFPHYS_SKIP_NOTEBOOKS=1 to skip set-up and the notebooks.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export INFPHYS_CACHE="${INFPHYS_CACHE:-$HOME/.cache/infphys}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$INFPHYS_CACHE/target}"

step() { printf '\n==== %s ====\n' "$*"; }

if [[ "${INFPHYS_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  step "set-up (scripts/setup.sh)"
  bash scripts/setup.sh
elif ! command -v chromium >/dev/null 2>&1; then
  echo "chromium is missing; run scripts/setup.sh, or apt-get install chromium" >&2
  exit 1
fi

step "prune superseded binaries from the build cache"
python3 scripts/prune-cache.py "$CARGO_TARGET_DIR"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "lab report renders offline"
report_dir="$(mktemp -d)"
trap 'rm -rf "$report_dir"' EXIT
cargo build --locked -p infphys-cli
NIM_BASE_URL=sim timeout 600 "$CARGO_TARGET_DIR/debug/infphys" --time-scale 50 lab --quick --out "$report_dir" >/dev/null
for file in baseline.csv sweep.csv tokens.csv overload.csv requests.parquet report.html; do
  [[ -s "$report_dir/$file" ]] || { echo "the lab did not write $file" >&2; exit 1; }
done
python3 scripts/check_report.py "$report_dir/report.html"

if [[ "${INFPHYS_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  step "notebooks (scripts/test-notebooks.sh)"
  bash scripts/test-notebooks.sh
fi
