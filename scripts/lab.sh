#!/usr/bin/env bash
# Open the lab's notebooks in JupyterLab, on 127.0.0.1 and without opening a browser.
#
# Runs scripts/setup.sh first when set-up has not been done or its inputs changed. When
# NIM_BASE_URL is unset and no server answers at http://localhost:8000, it starts the built-in
# simulator in the background and points NIM_BASE_URL at it; the simulator stops with the lab.
# An explicitly set NIM_BASE_URL is used as it is, so a server that is down shows up as a failed
# preflight in the notebook instead of silently becoming the simulator.
#
# Environment: NIM_BASE_URL, NIM_CHAT_PATH, NIM_GEN_MODEL, NIM_API_KEY as in the notebooks;
# INFPHYS_TIME_SCALE and INFPHYS_SIM_PRESET for the simulator; INFPHYS_LAB_PORT (default 8888)
# for JupyterLab.
#
# Usage: scripts/lab.sh
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/notebook/env.sh"

DEFAULT_BASE_URL=http://localhost:8000
LAB_PORT="${INFPHYS_LAB_PORT:-8888}"
# How long to wait for the simulator to print its address.
SIM_START_TIMEOUT_S=120

if [[ ! -x "$PYTHON" || "$(cat "$SETUP_STAMP" 2>/dev/null)" != "$(setup_fingerprint)" ]]; then
    log "set-up is missing or out of date; running scripts/setup.sh"
    "$REPO_ROOT/scripts/setup.sh" --skip-chromium
fi

# Succeeds when any HTTP response comes back from GET $1/v1/models within 3 s.
server_responds() {
    curl --silent --output /dev/null --max-time 3 "$1/v1/models"
}

sim_pid=""
lab_pid=""
# Stops JupyterLab (which shuts down its kernels) and the simulator, whichever were started.
stop_all() {
    local pid
    for pid in "$lab_pid" "$sim_pid"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Builds the CLI and starts `infphys sim --port 0` in the background; sets NIM_BASE_URL to the
# address it prints.
start_simulator() {
    log "no server answers at $DEFAULT_BASE_URL; building and starting the built-in simulator"
    log "(the first build compiles the CLI into $CARGO_TARGET_DIR and can take several minutes)"
    cargo build --quiet --manifest-path "$REPO_ROOT/Cargo.toml" -p infphys-cli
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$REPO_ROOT/Cargo.toml" |
        "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

    local sim_log
    sim_log=$(mktemp "$INFPHYS_CACHE/lab-simulator.XXXXXX.log")
    "$target_dir/debug/infphys" sim --port 0 2>"$sim_log" &
    sim_pid=$!

    local url=""
    for _ in $(seq "$SIM_START_TIMEOUT_S"); do
        url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$sim_log" | head -n 1 || true)
        [[ -n "$url" ]] && break
        kill -0 "$sim_pid" 2>/dev/null || die "the simulator exited; its log: $sim_log"
        sleep 1
    done
    [[ -n "$url" ]] || die "the simulator printed no address within $SIM_START_TIMEOUT_S s; its log: $sim_log"
    export NIM_BASE_URL="$url"
    log "built-in simulator serving at $NIM_BASE_URL (log: $sim_log)"
}

if [[ -z "${NIM_BASE_URL:-}" ]]; then
    if server_responds "$DEFAULT_BASE_URL"; then
        export NIM_BASE_URL="$DEFAULT_BASE_URL"
        log "using the server at $NIM_BASE_URL"
    else
        start_simulator
    fi
elif [[ "$NIM_BASE_URL" == sim ]]; then
    log "NIM_BASE_URL=sim: each notebook starts the built-in simulator in its own kernel"
elif server_responds "$NIM_BASE_URL"; then
    log "using the server at $NIM_BASE_URL"
else
    log "WARNING: nothing answers at NIM_BASE_URL=$NIM_BASE_URL, so the notebooks' preflight will fail."
    log "Start that server, or run with NIM_BASE_URL=sim (or unset) to use the built-in simulator."
fi

# JupyterLab does not run as root without --allow-root, and containers often run as root.
root_args=()
[[ $(id -u) == 0 ]] && root_args=(--allow-root)

token=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')
log "JupyterLab: http://127.0.0.1:$LAB_PORT/lab?token=$token"
log "press Ctrl-C to stop JupyterLab$([[ -n "$sim_pid" ]] && echo ' and the simulator')"
# JupyterLab runs in the background because bash runs a trap only after its foreground child
# exits. So a signal to this script reaches the EXIT trap at once, which stops both servers.
"$PYTHON" -m jupyter lab "${root_args[@]}" \
    --no-browser \
    --ip=127.0.0.1 \
    --port="$LAB_PORT" \
    --port-retries=0 \
    --ServerApp.root_dir="$NOTEBOOK_DIR" \
    --IdentityProvider.token="$token" &
lab_pid=$!
wait "$lab_pid"
