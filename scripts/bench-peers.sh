#!/usr/bin/env bash
# Measure how much the infphys client inflates the latency and throughput it
# reports, side by side with three peers, against a loopback server that
# responds to every request after a fixed delay:
#
#   infphys   the release example bench_closed_loop (`--stream` for streaming)
#   oha       the Rust HTTP load generator, installed from crates.io with
#             `cargo install --locked` into the cache on first use
#   aiohttp   scripts/bench/aiohttp_loadgen.py: asyncio tasks bounded by a
#             semaphore, one pooled aiohttp session
#   python    scripts/bench/threadpool_loadgen.py: requests.post per request in
#             a ThreadPoolExecutor, written the way the original lab's was
#
# Each tool runs at each concurrency level, non-streaming and streaming, and
# each run gets a freshly started server
# (crates/infphys/examples/fixed_delay_server.rs), so no run inherits another's
# connections or sockets. Two more measurements follow: infphys and oha at
# their maximum rate against a zero-delay server, and the peak RSS of a long
# infphys run. The tables go to stdout, and docs/benchmarks.md is rewritten
# with them, keeping the notes below its marker line.
#
# Before each timed run, infphys, aiohttp and the thread pool each send one
# untimed round of `concurrency` requests, so infphys and aiohttp start with
# open pooled connections and the thread pool with its threads started. oha
# cannot, so its timed run includes opening its connections. --no-warmup
# times the first round for every tool.
#
# Everything binds and connects to 127.0.0.1 only. Every run is bounded in
# requests and by `timeout`. The first run creates the venv with pip, builds
# the examples with cargo and installs oha, which takes several minutes.
#
# Usage: scripts/bench-peers.sh [--delay-ms MS] [--levels "1 64 256 1024"]
#          [--tools "infphys oha aiohttp python"] [--modes "plain stream"]
#          [--python-max-requests N] [--max-rate-requests N] [--rss-requests N]
#          [--no-warmup] [--no-max-rate] [--no-rss-run] [--no-doc]
set -euo pipefail

# The Python peers' packages, pinned so they are the same on every run.
PYTHON_PACKAGES=(
    requests==2.32.5 urllib3==2.5.0 idna==3.10 charset-normalizer==3.4.3 certifi==2025.8.3
    aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0 attrs==26.1.0 frozenlist==1.8.0
    multidict==7.2.1 propcache==0.5.4 yarl==1.25.1 typing_extensions==4.16.0
)
OHA_VERSION=1.16.0
# cargo install of oha took 5 to 10 minutes on 2 shared cores.
OHA_INSTALL_TIMEOUT_S=2400

DELAY_MS=100
LEVELS="1 64 256 1024"
TOOLS="infphys oha aiohttp python"
MODES="plain stream"
# Requests per run: max(MIN_REQUESTS, ROUNDS_PER_RUN x concurrency), so each
# run is about ROUNDS_PER_RUN delays long at the ideal rate.
MIN_REQUESTS=100
ROUNDS_PER_RUN=8
# The thread-pool peer sends at most this many requests per run. The default
# of 8192 caps nothing at the default levels, because at 1024 the peer takes
# about 15 s on 2 cores.
PYTHON_MAX_REQUESTS=8192
# Zero-delay run of infphys and oha at MAX_RATE_CONCURRENCY.
MAX_RATE=1
MAX_RATE_CONCURRENCY=64
MAX_RATE_REQUESTS=50000
# Long infphys run at RSS_CONCURRENCY with the delay, for its peak RSS.
RSS_RUN=1
RSS_CONCURRENCY=1024
RSS_REQUESTS=100000
RUN_TIMEOUT_S=300
REQUEST_TIMEOUT_S=30
SERVER_START_TIMEOUT_S=10
# Content chunks of each streamed response, spread over the delay.
STREAM_CHUNKS=4
# 1024 connections take about 2 descriptors each across client and server.
WANTED_FD_LIMIT=65536
MIN_FD_LIMIT=2200
WRITE_DOC=1
WARMUP=1

usage() {
    cat <<EOF
Usage: $0 [options]

  --delay-ms MS             server delay per request, in milliseconds (default $DELAY_MS)
  --levels "C ..."          concurrency levels, in order (default "$LEVELS")
  --tools "T ..."           tools to run, from infphys, oha, aiohttp and python (default "$TOOLS")
  --modes "M ..."           plain, stream or both (default "$MODES")
  --python-max-requests N   cap on the thread-pool peer's requests per run (default $PYTHON_MAX_REQUESTS)
  --max-rate-requests N     requests of each zero-delay maximum-rate run (default $MAX_RATE_REQUESTS)
  --rss-requests N          requests of the long infphys run for peak RSS (default $RSS_REQUESTS)
  --no-warmup               time the first round too, with its connection set-up
  --no-max-rate             skip the zero-delay maximum-rate runs
  --no-rss-run              skip the long infphys run
  --no-doc                  print the tables without rewriting docs/benchmarks.md
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --delay-ms) DELAY_MS="${2:?--delay-ms requires a value}"; shift 2 ;;
        --levels) LEVELS="${2:?--levels requires a value}"; shift 2 ;;
        --tools) TOOLS="${2:?--tools requires a value}"; shift 2 ;;
        --modes) MODES="${2:?--modes requires a value}"; shift 2 ;;
        --python-max-requests) PYTHON_MAX_REQUESTS="${2:?--python-max-requests requires a value}"; shift 2 ;;
        --max-rate-requests) MAX_RATE_REQUESTS="${2:?--max-rate-requests requires a value}"; shift 2 ;;
        --rss-requests) RSS_REQUESTS="${2:?--rss-requests requires a value}"; shift 2 ;;
        --no-doc) WRITE_DOC=0; shift ;;
        --no-warmup) WARMUP=0; shift ;;
        --no-max-rate) MAX_RATE=0; shift ;;
        --no-rss-run) RSS_RUN=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for value in "$DELAY_MS" "$PYTHON_MAX_REQUESTS" "$MAX_RATE_REQUESTS" "$RSS_REQUESTS" $LEVELS; do
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: invalid number '$value': expected a whole number of at least 1" >&2
        exit 2
    fi
done
for tool in $TOOLS; do
    case "$tool" in
        infphys | oha | aiohttp | python) ;;
        *) echo "error: unknown tool '$tool': expected infphys, oha, aiohttp or python" >&2; exit 2 ;;
    esac
done
for mode in $MODES; do
    case "$mode" in
        plain | stream) ;;
        *) echo "error: unknown mode '$mode': expected plain or stream" >&2; exit 2 ;;
    esac
done

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${INFPHYS_CACHE:-$HOME/.cache/infphys}"
VENV_DIR="$CACHE_DIR/bench-venv"
OHA_ROOT="$CACHE_DIR/oha-$OHA_VERSION"
OHA_BIN="$OHA_ROOT/bin/oha"
WORK_DIR="$(mktemp -d)"
RESULTS="$WORK_DIR/results.jsonl"
SERVER_PID=""
# Set when oha was requested but could not be installed, for the page.
OHA_MISSING=""

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

# Installs oha with native-tls (the system OpenSSL) in place of its default
# rustls, whose aws-lc-rs takes longer to build, because the runs use plain
# HTTP. oha 1.16.0 does not compile with no TLS feature at all. When the install
# fails, oha is dropped from TOOLS and the page says so.
ensure_oha() {
    if [[ " $TOOLS " != *" oha "* || -x "$OHA_BIN" ]]; then
        return
    fi
    echo "Installing oha $OHA_VERSION into $OHA_ROOT (several minutes)" >&2
    if ! timeout "$OHA_INSTALL_TIMEOUT_S" cargo install oha --version "$OHA_VERSION" --locked \
        --no-default-features --features native-tls --root "$OHA_ROOT" --target-dir "$CACHE_DIR/oha-build" >&2; then
        echo "warning: installing oha $OHA_VERSION failed or timed out; running without oha" >&2
        OHA_MISSING="oha $OHA_VERSION could not be installed, so it has no rows"
        TOOLS="$(tr ' ' '\n' <<<"$TOOLS" | grep -vx oha | tr '\n' ' ')"
    fi
}

build_examples() {
    echo "Building the release examples" >&2
    (cd "$REPO_DIR" && cargo build --release --quiet -p infphys \
        --example fixed_delay_server --example bench_closed_loop)
    local target_dir
    target_dir="$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    SERVER_BIN="$target_dir/release/examples/fixed_delay_server"
    CLIENT_BIN="$target_dir/release/examples/bench_closed_loop"
}

# Starts a fresh server with the delay in $1 and sets SERVER_URL from the first
# line it prints.
start_server() {
    local delay_ms="$1" out="$WORK_DIR/server.out"
    : >"$out"
    # The server exits on its own after the run timeout, should this script die.
    "$SERVER_BIN" --delay-ms "$delay_ms" --stream-chunks "$STREAM_CHUNKS" \
        --exit-after-s $((RUN_TIMEOUT_S + 60)) >"$out" 2>"$WORK_DIR/server.err" &
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

# Runs one tool once and appends its JSON line, with the script's fields, to
# RESULTS. Arguments: section (levels, max-rate or rss), tool, mode,
# concurrency, requests, capped (1 when the request count was capped), delay
# in milliseconds.
run_one() {
    local section="$1" tool="$2" mode="$3" concurrency="$4" requests="$5" capped="$6" delay_ms="$7"
    local line server_cpu status=0 warmup=0
    if [[ $WARMUP -eq 1 && "$tool" != oha ]]; then
        warmup="$concurrency"
    fi
    local client
    case "$tool" in
        infphys) client=("$CLIENT_BIN" --clock-ticks "$(getconf CLK_TCK)") ;;
        python) client=("$VENV_DIR/bin/python" "$REPO_DIR/scripts/bench/threadpool_loadgen.py") ;;
        aiohttp) client=("$VENV_DIR/bin/python" "$REPO_DIR/scripts/bench/aiohttp_loadgen.py") ;;
        oha) client=("$VENV_DIR/bin/python" "$REPO_DIR/scripts/bench/oha_loadgen.py" --oha "$OHA_BIN"
            --run-timeout-s "$RUN_TIMEOUT_S") ;;
    esac
    if [[ "$tool" != oha ]]; then
        client+=(--warmup "$warmup")
    fi
    if [[ "$mode" == stream ]]; then
        client+=(--stream)
    fi
    start_server "$delay_ms"
    line="$(timeout "$RUN_TIMEOUT_S" "${client[@]}" --url "$SERVER_URL" \
        --concurrency "$concurrency" --requests "$requests" \
        --timeout-s "$REQUEST_TIMEOUT_S")" || status=$?
    if [[ $status -ne 0 ]]; then
        if [[ $status -eq 124 ]]; then
            echo "error: $tool ($mode) at concurrency $concurrency timed out after $RUN_TIMEOUT_S s" >&2
        else
            echo "error: $tool ($mode) at concurrency $concurrency failed with exit status $status" >&2
        fi
        exit 1
    fi
    server_cpu="$(server_cpu_s)"
    stop_server
    python3 -c 'import json, sys
run = json.loads(sys.argv[1])
run.update(section=sys.argv[2], delay_ms=int(sys.argv[3]), capped=sys.argv[4] == "1",
           server_cpu_s=float(sys.argv[5]), warmup=int(sys.argv[6]),
           load1=float(open("/proc/loadavg").read().split()[0]))
print(json.dumps(run))' "$line" "$section" "$delay_ms" "$capped" "$server_cpu" "$warmup" >>"$RESULTS"
    echo "  $section $tool $mode c=$concurrency: $line" >&2
}

requests_for() {
    local requests=$((ROUNDS_PER_RUN * $1))
    if [[ $requests -lt $MIN_REQUESTS ]]; then
        requests=$MIN_REQUESTS
    fi
    echo "$requests"
}

raise_fd_limit
ensure_venv
ensure_oha
build_examples
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

for mode in $MODES; do
    for concurrency in $LEVELS; do
        echo "Concurrency $concurrency, $mode" >&2
        requests="$(requests_for "$concurrency")"
        for tool in $TOOLS; do
            if [[ "$tool" == python && $requests -gt $PYTHON_MAX_REQUESTS ]]; then
                run_one levels "$tool" "$mode" "$concurrency" "$PYTHON_MAX_REQUESTS" 1 "$DELAY_MS"
            else
                run_one levels "$tool" "$mode" "$concurrency" "$requests" 0 "$DELAY_MS"
            fi
        done
    done
done

if [[ $MAX_RATE -eq 1 ]]; then
    echo "Maximum rate against a zero-delay server" >&2
    for tool in infphys oha; do
        if [[ " $TOOLS " == *" $tool "* ]]; then
            run_one max-rate "$tool" plain "$MAX_RATE_CONCURRENCY" "$MAX_RATE_REQUESTS" 0 0
        fi
    done
fi
if [[ $RSS_RUN -eq 1 && " $TOOLS " == *" infphys "* ]]; then
    echo "Peak RSS of $RSS_REQUESTS infphys requests" >&2
    run_one rss infphys plain "$RSS_CONCURRENCY" "$RSS_REQUESTS" 0 "$DELAY_MS"
fi
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

COMMAND="scripts/bench-peers.sh --delay-ms $DELAY_MS --levels \"$LEVELS\" --tools \"$TOOLS\""
COMMAND+=" --modes \"$MODES\" --python-max-requests $PYTHON_MAX_REQUESTS"
if [[ $MAX_RATE -eq 1 ]]; then
    COMMAND+=" --max-rate-requests $MAX_RATE_REQUESTS"
else
    COMMAND+=" --no-max-rate"
fi
if [[ $RSS_RUN -eq 1 ]]; then
    COMMAND+=" --rss-requests $RSS_REQUESTS"
else
    COMMAND+=" --no-rss-run"
fi
if [[ $WARMUP -eq 0 ]]; then
    COMMAND+=" --no-warmup"
fi

SUMMARIZE=(python3 "$REPO_DIR/scripts/bench/summarize.py" "$RESULTS")
if [[ $WRITE_DOC -eq 1 ]]; then
    OHA_FACT="not run"
    if [[ -x "$OHA_BIN" ]]; then
        OHA_FACT="$("$OHA_BIN" --version) (cargo install --locked --no-default-features --features native-tls)"
    fi
    MACHINE="$(python3 -c 'import json, sys
keys = ["date", "CPUs (nproc)", "CPU model", "kernel", "rustc", "Python of the peers",
        "requests / aiohttp", "oha", "open-file limit", "load average (1, 5, 15 min) before / after"]
facts = dict(zip(keys, sys.argv[1:len(keys) + 1]))
if sys.argv[-1]:
    facts["missing"] = sys.argv[-1]
print(json.dumps(facts))' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$(nproc)" \
        "$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
        "$(uname -sr)" \
        "$(rustc --version)" \
        "$("$VENV_DIR/bin/python" --version 2>&1)" \
        "$("$VENV_DIR/bin/python" -c 'import requests, aiohttp; print(requests.__version__, "/", aiohttp.__version__)')" \
        "$OHA_FACT" \
        "$(ulimit -n) (raised by the script with ulimit -n)" \
        "$LOAD_BEFORE / $LOAD_AFTER" \
        "$OHA_MISSING")"
    "${SUMMARIZE[@]}" --markdown "$REPO_DIR/docs/benchmarks.md" --machine "$MACHINE" \
        --command "$COMMAND" --stream-chunks "$STREAM_CHUNKS"
else
    "${SUMMARIZE[@]}" --stream-chunks "$STREAM_CHUNKS"
fi
