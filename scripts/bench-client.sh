#!/usr/bin/env bash
# Measure how much the infphys client inflates the latency and throughput it
# reports, next to a Python thread-pool load generator, against a loopback
# server that responds to every request after a fixed delay.
#
# For each concurrency level, each tool gets a freshly started server
# (crates/infphys/examples/fixed_delay_server.rs), so no run inherits another's
# connections or sockets. infphys runs as the release example
# bench_closed_loop; the peer is scripts/bench/threadpool_loadgen.py in a venv
# with a pinned `requests`. The table goes to stdout, and docs/benchmarks.md is
# rewritten with it, keeping the notes below its marker line.
#
# Before each timed run, each tool sends one untimed round of `concurrency`
# requests, so infphys starts with open pooled connections and the peer with
# its threads started. Without that round, the first round's connection set-up
# makes up the whole p99 of an 8-round run. --no-warmup times it too.
#
# Everything binds and connects to 127.0.0.1 only. The first run creates the
# venv with pip and builds the examples with cargo.
#
# Usage: scripts/bench-client.sh [--delay-ms MS] [--levels "1 64 256 1024"]
#                                [--python-max-requests N] [--no-warmup] [--no-doc]
set -euo pipefail

# `requests` and its dependencies, pinned so the peer is the same on every run.
PYTHON_PACKAGES=(requests==2.32.5 urllib3==2.5.0 idna==3.10 charset-normalizer==3.4.3 certifi==2025.8.3)

DELAY_MS=100
LEVELS="1 64 256 1024"
# Requests per run: max(MIN_REQUESTS, ROUNDS_PER_RUN x concurrency), so each
# run is about ROUNDS_PER_RUN delays long at the ideal rate.
MIN_REQUESTS=100
ROUNDS_PER_RUN=8
# The Python peer sends at most this many requests per run. The default of
# 8192 caps nothing at the default levels, because at 1024 the peer takes about
# 15 s on 2 cores.
PYTHON_MAX_REQUESTS=8192
RUN_TIMEOUT_S=300
REQUEST_TIMEOUT_S=30
SERVER_START_TIMEOUT_S=10
# 1024 connections take about 2 descriptors each across client and server.
WANTED_FD_LIMIT=65536
MIN_FD_LIMIT=2200
WRITE_DOC=1
WARMUP=1

usage() {
    cat <<EOF
Usage: $0 [--delay-ms MS] [--levels "1 64 256 1024"] [--python-max-requests N]
          [--no-warmup] [--no-doc]

  --delay-ms MS             server delay per request, in milliseconds (default $DELAY_MS)
  --levels "C ..."          concurrency levels, in order (default "$LEVELS")
  --python-max-requests N   cap on the Python peer's requests per run (default $PYTHON_MAX_REQUESTS)
  --no-warmup               time the first round too, with its connection set-up
  --no-doc                  print the table without rewriting docs/benchmarks.md
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --delay-ms) DELAY_MS="${2:?--delay-ms requires a value}"; shift 2 ;;
        --levels) LEVELS="${2:?--levels requires a value}"; shift 2 ;;
        --python-max-requests) PYTHON_MAX_REQUESTS="${2:?--python-max-requests requires a value}"; shift 2 ;;
        --no-doc) WRITE_DOC=0; shift ;;
        --no-warmup) WARMUP=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for value in "$DELAY_MS" "$PYTHON_MAX_REQUESTS" $LEVELS; do
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: invalid number '$value': expected a whole number of at least 1" >&2
        exit 2
    fi
done

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${INFPHYS_CACHE:-$HOME/.cache/infphys}"
VENV_DIR="$CACHE_DIR/bench-venv"
WORK_DIR="$(mktemp -d)"
RESULTS="$WORK_DIR/results.jsonl"
SERVER_PID=""

cleanup() {
    stop_server
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT

raise_fd_limit() {
    local hard wanted
    hard="$(ulimit -Hn)"
    wanted="$WANTED_FD_LIMIT"
    if [[ "$hard" != unlimited && "$hard" -lt "$wanted" ]]; then
        wanted="$hard"
    fi
    ulimit -n "$wanted"
    if [[ "$(ulimit -n)" -lt "$MIN_FD_LIMIT" ]]; then
        echo "error: the open-file limit is $(ulimit -n) and its hard limit $hard;" \
            "1024 connections need at least $MIN_FD_LIMIT. Raise the hard limit (ulimit -Hn) as root." >&2
        exit 1
    fi
}

ensure_venv() {
    local stamp="$VENV_DIR/.installed"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "${PYTHON_PACKAGES[*]}" ]]; then
        return
    fi
    echo "Installing ${PYTHON_PACKAGES[*]} into $VENV_DIR" >&2
    python3 -m venv "$VENV_DIR"
    "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
    echo "${PYTHON_PACKAGES[*]}" >"$stamp"
}

build_examples() {
    echo "Building the release examples" >&2
    (cd "$REPO_DIR" && cargo build --release --quiet --examples -p infphys)
    local target_dir
    target_dir="$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    SERVER_BIN="$target_dir/release/examples/fixed_delay_server"
    CLIENT_BIN="$target_dir/release/examples/bench_closed_loop"
}

# Starts a fresh server and sets SERVER_URL from the first line it prints.
start_server() {
    local out="$WORK_DIR/server.out"
    : >"$out"
    # The server exits on its own after the run timeout, should this script die.
    "$SERVER_BIN" --delay-ms "$DELAY_MS" --exit-after-s $((RUN_TIMEOUT_S + 60)) \
        >"$out" 2>"$WORK_DIR/server.err" &
    SERVER_PID=$!
    local tries=$((SERVER_START_TIMEOUT_S * 20))
    SERVER_URL=""
    while [[ -z "$SERVER_URL" && $tries -gt 0 ]]; do
        SERVER_URL="$(head -n 1 "$out")"
        if [[ -z "$SERVER_URL" ]]; then
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                echo "error: the server exited at start: $(cat "$WORK_DIR/server.err")" >&2
                exit 1
            fi
            sleep 0.05
            tries=$((tries - 1))
        fi
    done
    if [[ -z "$SERVER_URL" ]]; then
        echo "error: the server printed no URL within ${SERVER_START_TIMEOUT_S} s" >&2
        exit 1
    fi
}

# CPU seconds (user plus system) the server has used, from /proc/PID/stat.
server_cpu_s() {
    local fields
    fields="$(sed 's/.*) //' "/proc/$SERVER_PID/stat")"
    # After the command name, utime and stime are the 12th and 13th fields.
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($12 + $13) / hz }' <<<"$fields"
}

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

# Runs one tool at one level and appends its JSON line, with the script's
# fields, to RESULTS.
run_one() {
    local tool="$1" concurrency="$2" requests="$3" capped="$4"
    local line server_cpu status=0 warmup=0
    if [[ $WARMUP -eq 1 ]]; then
        warmup="$concurrency"
    fi
    local client=("$CLIENT_BIN" --clock-ticks "$(getconf CLK_TCK)")
    if [[ "$tool" == python ]]; then
        client=("$VENV_DIR/bin/python" "$REPO_DIR/scripts/bench/threadpool_loadgen.py")
    fi
    start_server
    line="$(timeout "$RUN_TIMEOUT_S" "${client[@]}" --url "$SERVER_URL" \
        --concurrency "$concurrency" --requests "$requests" \
        --timeout-s "$REQUEST_TIMEOUT_S" --warmup "$warmup")" || status=$?
    if [[ $status -ne 0 ]]; then
        if [[ $status -eq 124 ]]; then
            echo "error: $tool at concurrency $concurrency timed out after $RUN_TIMEOUT_S s" >&2
        else
            echo "error: $tool at concurrency $concurrency failed with exit status $status" >&2
        fi
        exit 1
    fi
    server_cpu="$(server_cpu_s)"
    stop_server
    python3 -c 'import json, sys
run = json.loads(sys.argv[1])
run.update(delay_ms=int(sys.argv[2]), capped=sys.argv[3] == "1", server_cpu_s=float(sys.argv[4]),
           warmup=int(sys.argv[5]))
print(json.dumps(run))' "$line" "$DELAY_MS" "$capped" "$server_cpu" "$warmup" >>"$RESULTS"
    echo "  $tool c=$concurrency: $line" >&2
}

raise_fd_limit
ensure_venv
build_examples
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

for concurrency in $LEVELS; do
    requests=$((ROUNDS_PER_RUN * concurrency))
    if [[ $requests -lt $MIN_REQUESTS ]]; then
        requests=$MIN_REQUESTS
    fi
    python_requests=$requests
    python_capped=0
    if [[ $python_requests -gt $PYTHON_MAX_REQUESTS ]]; then
        python_requests=$PYTHON_MAX_REQUESTS
        python_capped=1
    fi
    echo "Concurrency $concurrency" >&2
    run_one infphys "$concurrency" "$requests" 0
    run_one python "$concurrency" "$python_requests" "$python_capped"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

COMMAND="scripts/bench-client.sh --delay-ms $DELAY_MS --levels \"$LEVELS\" --python-max-requests $PYTHON_MAX_REQUESTS"
if [[ $WARMUP -eq 0 ]]; then
    COMMAND+=" --no-warmup"
fi
if [[ $WRITE_DOC -eq 1 ]]; then
    MACHINE="$(python3 -c 'import json, sys
keys = ["date", "CPUs (nproc)", "CPU model", "kernel", "rustc", "Python of the peer",
        "requests", "open-file limit", "load average (1, 5, 15 min) before / after"]
print(json.dumps(dict(zip(keys, sys.argv[1:]))))' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$(nproc)" \
        "$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
        "$(uname -sr)" \
        "$(rustc --version)" \
        "$("$VENV_DIR/bin/python" --version 2>&1)" \
        "$("$VENV_DIR/bin/python" -c 'import requests; print(requests.__version__)')" \
        "$(ulimit -n) (raised by the script with ulimit -n)" \
        "$LOAD_BEFORE / $LOAD_AFTER")"
    python3 "$REPO_DIR/scripts/bench/summarize.py" "$RESULTS" \
        --markdown "$REPO_DIR/docs/benchmarks.md" --machine "$MACHINE" --command "$COMMAND"
else
    python3 "$REPO_DIR/scripts/bench/summarize.py" "$RESULTS"
fi
