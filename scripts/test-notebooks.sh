#!/usr/bin/env bash
# Test the notebooks: execute every notebook under notebooks/ headless against the built-in
# simulator, check what it produced, export it to HTML, and check in headless Chromium, with
# every host name unresolvable, that each chart was drawn.
#
# Runs scripts/setup.sh first when set-up is missing or out of date, since without its warm build
# the first cell compiles for 6 to 14 minutes. The executed notebooks, their HTML and the DOM
# that Chromium rendered stay in $INFPHYS_CACHE/test-notebooks for inspection.
#
# Environment: INFPHYS_TIME_SCALE (default 50), the simulator's speed-up; timeouts and reported
# durations stay in server time, so the lesson is unchanged. INFPHYS_QUICK=1 runs the lab's
# quick parameters.
#
# Prints one line per check and closes with "N passed, N failed"; exits 1 on any failure.
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/notebook/env.sh"

# Bounds, in seconds: executing one notebook (measured at 70 to 95 s on 2 cores once set-up has
# run), one of its cells, the HTML export, and Chromium's rendering of it.
NOTEBOOK_TIMEOUT_S=900
CELL_TIMEOUT_S=600
EXPORT_TIMEOUT_S=180
BROWSER_TIMEOUT_S=120
# Virtual time Chromium gives the page's scripts before it dumps the DOM, in milliseconds.
BROWSER_BUDGET_MS=15000

OUT_DIR="$INFPHYS_CACHE/test-notebooks"

passed=0
failed=0

pass() {
    passed=$((passed + 1))
    echo "PASS $1"
}

fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
}

# Runs a checker that prints PASS and FAIL lines, and counts them. A checker that fails without
# printing a FAIL line counts as one failure named $1.
run_checks() {
    local name=$1
    shift
    local output status
    output=$("$@" 2>&1)
    status=$?
    echo "$output"
    local pass_lines fail_lines
    pass_lines=$(grep -c '^PASS ' <<<"$output")
    fail_lines=$(grep -c '^FAIL ' <<<"$output")
    passed=$((passed + pass_lines))
    failed=$((failed + fail_lines))
    if ((status != 0 && fail_lines == 0)); then
        fail "$name: exited with status $status"
    fi
}

finish() {
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit $?
}

# Prerequisites: without them nothing else can run.
if [[ ! -x "$PYTHON" || "$(cat "$SETUP_STAMP" 2>/dev/null)" != "$(setup_fingerprint)" ]]; then
    echo "set-up is missing or out of date; running scripts/setup.sh"
    "$REPO_ROOT/scripts/setup.sh" >&2 || { fail "scripts/setup.sh"; finish; }
fi
[[ -x "$PYTHON" ]] || { fail "Python venv at $VENV (run scripts/setup.sh)"; finish; }
[[ -f "$KERNEL_SPEC_DIR/kernel.json" ]] || { fail "Rust kernel spec at $KERNEL_SPEC_DIR (run scripts/setup.sh)"; finish; }
[[ -x "$CHROMIUM" ]] || { fail "chromium at $CHROMIUM (run scripts/setup.sh as root, or apt-get install chromium)"; finish; }

notebooks=("$NOTEBOOK_DIR"/*.ipynb)
[[ -e "${notebooks[0]}" ]] || { fail "no notebooks under $NOTEBOOK_DIR"; finish; }

run_checks "committed notebooks are clean" "$PYTHON" "$HELPER_DIR/check_notebook.py" clean "${notebooks[@]}"

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
export NIM_BASE_URL=sim
export INFPHYS_TIME_SCALE="${INFPHYS_TIME_SCALE:-50}"

for notebook in "${notebooks[@]}"; do
    name=$(basename "$notebook" .ipynb)
    executed="$OUT_DIR/$name.ipynb"
    echo "executing $name against the simulator at time scale $INFPHYS_TIME_SCALE"

    # The kernel's stderr carries cargo's build lines; keep them out of the test output.
    if timeout "$NOTEBOOK_TIMEOUT_S" "$PYTHON" "$HELPER_DIR/execute.py" \
        --cell-timeout "$CELL_TIMEOUT_S" "$notebook" "$executed" 2>"$OUT_DIR/$name.kernel.log"; then
        pass "$name executes headless"
    else
        fail "$name executes headless (kernel log: $OUT_DIR/$name.kernel.log)"
        grep -v '^ *Compiling ' "$OUT_DIR/$name.kernel.log" | tail -n 20
    fi
    [[ -f "$executed" ]] || continue

    run_checks "$name output checks" "$PYTHON" "$HELPER_DIR/check_notebook.py" executed "$executed"

    if timeout "$EXPORT_TIMEOUT_S" "$PYTHON" -m jupyter nbconvert --to html --log-level WARN \
        --output-dir "$OUT_DIR" "$executed"; then
        pass "$name exports to HTML"
    else
        fail "$name exports to HTML"
        continue
    fi

    # Every host name fails to resolve, so a chart that needed the network would stay blank.
    profile=$(mktemp -d)
    timeout "$BROWSER_TIMEOUT_S" "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --disable-quic \
        --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$profile" \
        --virtual-time-budget="$BROWSER_BUDGET_MS" --dump-dom "file://$OUT_DIR/$name.html" \
        >"$OUT_DIR/$name.dom.html" 2>"$OUT_DIR/$name.chromium.log"
    status=$?
    rm -rf "$profile"
    if ((status == 0)) && [[ -s "$OUT_DIR/$name.dom.html" ]]; then
        run_checks "$name HTML export draws its charts" \
            "$PYTHON" "$HELPER_DIR/check_notebook.py" dom "$OUT_DIR/$name.dom.html" "$executed"
    else
        fail "$name renders in headless Chromium (status $status, log: $OUT_DIR/$name.chromium.log)"
    fi
done

# An interrupted measuring cell keeps its rows: a real kernel is interrupted mid-sweep, and the
# next cell recovers them with the interrupted run marked partial.
run_checks "interrupt and recover" timeout "$NOTEBOOK_TIMEOUT_S" \
    "$PYTHON" "$HELPER_DIR/interrupt.py" "$NOTEBOOK_DIR" "$OUT_DIR/interrupt-journal"

finish
